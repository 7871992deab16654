//! Density: N logged-in idle sessions; memory of every worker and the supervisor from
//! `smaps_rollup`, and the CPU they use over an idle window.

use std::time::Duration;

use serde::Serialize;

use super::lab::Lab;
use super::procfs::{self, Memory};
use super::stats::{Summary, Table, mib};

#[derive(Debug, Clone, Serialize)]
pub struct DensityResult {
    pub sessions: usize,
    pub workers: usize,
    pub hold_ms: u64,
    pub poll_interval_ms: u64,
    pub worker_pss_kib: Summary,
    pub worker_rss_kib: Summary,
    pub worker_pss_anon_kib: Summary,
    pub worker_threads: Summary,
    pub supervisor: Memory,
    pub supervisor_threads: u64,
    /// The fork-server template workers are forked from (zero when workers are executed).
    pub fork_server: Memory,
    /// Supervisor, fork-server template and every worker.
    pub total_pss_kib: u64,
    /// How long the sessions had been held after the restart before the window opened.
    pub settle_seconds: f64,
    pub idle_seconds: f64,
    /// CPU of the supervisor and its workers over the idle window, in % of one core.
    pub idle_cpu_percent: f64,
    /// The simulator's own CPU over the same window (not the agent's cost; for reference).
    pub sim_cpu_percent: f64,
    /// The supervisor's (and fork-server template's) share of `idle_cpu_percent`.
    pub supervisor_cpu_percent: f64,
}

/// Measures the lab's current sessions (they must be logged in and the supervisor running).
pub async fn measure(lab: &Lab, idle: Duration, settle: Duration) -> anyhow::Result<DensityResult> {
    let sup = lab
        .agent_pid()
        .ok_or_else(|| anyhow::anyhow!("the supervisor is not running"))?;
    let workers = lab.worker_pids();
    let template = lab.fork_server_pid();
    let mut all = workers.clone();
    all.push(sup);
    all.extend(template);
    let sim = lab.sim_pid().unwrap_or(0);
    let ticks = procfs::ticks_per_second() as f64;
    let start = std::time::Instant::now();
    let mut managers = vec![sup];
    managers.extend(template);
    let (cpu0, sim0) = (procfs::cpu_ticks(&all), procfs::cpu_ticks(&[sim]));
    let sup0 = procfs::cpu_ticks(&managers);
    tokio::time::sleep(idle).await;
    let (cpu1, sim1) = (procfs::cpu_ticks(&all), procfs::cpu_ticks(&[sim]));
    let sup1 = procfs::cpu_ticks(&managers);
    let secs = start.elapsed().as_secs_f64();
    // Memory after the idle window: what a long-idle fleet holds, not the login peak.
    let mems: Vec<Memory> = workers.iter().filter_map(|p| procfs::memory(*p)).collect();
    let threads: Vec<f64> = workers
        .iter()
        .filter_map(|p| procfs::stat(*p))
        .map(|s| s.threads as f64)
        .collect();
    let supervisor = procfs::memory(sup).unwrap_or_default();
    let kib = |f: fn(&Memory) -> u64| -> Vec<f64> { mems.iter().map(|m| f(m) as f64).collect() };
    let fork_server = template.and_then(procfs::memory).unwrap_or_default();
    let total_pss_kib =
        mems.iter().map(|m| m.pss_kib).sum::<u64>() + supervisor.pss_kib + fork_server.pss_kib;
    Ok(DensityResult {
        sessions: lab.sessions.len(),
        workers: workers.len(),
        hold_ms: lab.common.hold.as_millis() as u64,
        poll_interval_ms: lab.common.poll_interval.as_millis() as u64,
        worker_pss_kib: Summary::of(&kib(|m| m.pss_kib)),
        worker_rss_kib: Summary::of(&kib(|m| m.rss_kib)),
        worker_pss_anon_kib: Summary::of(&kib(|m| m.pss_anon_kib)),
        worker_threads: Summary::of(&threads),
        supervisor,
        supervisor_threads: procfs::stat(sup).map_or(0, |s| s.threads),
        fork_server,
        total_pss_kib,
        settle_seconds: settle.as_secs_f64(),
        idle_seconds: secs,
        idle_cpu_percent: 100.0 * cpu1.saturating_sub(cpu0) as f64 / ticks / secs,
        sim_cpu_percent: 100.0 * sim1.saturating_sub(sim0) as f64 / ticks / secs,
        supervisor_cpu_percent: 100.0 * sup1.saturating_sub(sup0) as f64 / ticks / secs,
    })
}

impl DensityResult {
    pub fn table(&self, t: &mut Table) {
        let n = self.sessions;
        t.row(
            "density: sessions (workers)",
            format!("{n} ({})", self.workers),
            "",
        );
        t.row(
            "density: worker PSS mean / max",
            format!(
                "{} / {}",
                mib(self.worker_pss_kib.mean),
                mib(self.worker_pss_kib.max)
            ),
            "≈ 1 MiB",
        );
        t.row(
            "density: worker RSS mean / max",
            format!(
                "{} / {}",
                mib(self.worker_rss_kib.mean),
                mib(self.worker_rss_kib.max)
            ),
            "",
        );
        t.row(
            "density: supervisor RSS / PSS",
            format!(
                "{} / {}",
                mib(self.supervisor.rss_kib as f64),
                mib(self.supervisor.pss_kib as f64)
            ),
            "",
        );
        t.row(
            "density: fork-server template PSS",
            if self.fork_server.pss_kib == 0 {
                "none (workers executed)".to_owned()
            } else {
                mib(self.fork_server.pss_kib as f64)
            },
            "",
        );
        let target = if n == 100 { "≤ 115 MiB" } else { "" };
        t.row(
            format!("density: total PSS, {n} sessions"),
            mib(self.total_pss_kib as f64),
            target,
        );
        t.row(
            format!(
                "density: idle CPU over {:.0} s after {:.0} s (hold {} ms)",
                self.idle_seconds, self.settle_seconds, self.hold_ms
            ),
            format!(
                "{:.2} % of a core (supervisor {:.2} %)",
                self.idle_cpu_percent, self.supervisor_cpu_percent
            ),
            if n >= 1000 { "< 5 %" } else { "" },
        );
    }
}
