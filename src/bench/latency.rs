//! Latency: texts injected at a steady rate, round-robin over sessions; for each, the time
//! from its queueing in the simulator to the arrival of its `report_new_msg` at the control
//! plane, both on the simulator's monotonic clock.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Serialize;
use serde_json::json;
use tokio::task::JoinSet;

use super::lab::{Api, Lab};
use super::procfs;
use super::stats::{Summary, Table, ms};

#[derive(Debug, Clone, Serialize)]
pub struct LatencyRun {
    pub sessions: usize,
    /// Messages per second asked for, over all sessions.
    pub rate: f64,
    pub messages: usize,
    /// The rate the injector achieved.
    pub achieved_rate: f64,
    pub reported: usize,
    pub missing: usize,
    /// Inject → report, milliseconds.
    pub latency_ms: Summary,
    /// The share of the machine's CPU time the hypervisor took while the messages were
    /// injected and reported (`st` in `vmstat`), percent; on a shared virtual machine the tail
    /// follows it. None where it cannot be read.
    pub steal_percent: Option<f64>,
}

/// Parses `SESSIONS@RATE`.
pub fn parse_run(spec: &str) -> anyhow::Result<(usize, f64)> {
    let (s, r) = spec
        .split_once('@')
        .with_context(|| format!("latency run {spec:?} is not SESSIONS@RATE"))?;
    let sessions: usize = s
        .trim()
        .parse()
        .with_context(|| format!("sessions in {spec:?}"))?;
    let rate: f64 = r
        .trim()
        .parse()
        .with_context(|| format!("rate in {spec:?}"))?;
    if sessions == 0 || !(rate > 0.0 && rate.is_finite()) {
        bail!("latency run {spec:?} needs at least one session and a positive rate");
    }
    Ok((sessions, rate))
}

pub async fn measure(
    lab: &Lab,
    sessions: usize,
    rate: f64,
    messages: usize,
) -> anyhow::Result<LatencyRun> {
    if sessions > lab.sessions.len() {
        bail!(
            "latency over {sessions} sessions but only {} are logged in",
            lab.sessions.len()
        );
    }
    let friends = lab.common.friends;
    if friends == 0 {
        bail!("latency needs accounts with friends (--friends)");
    }
    let mut arrivals = Arrivals::start(&lab.api).await?;
    let mut last_read = std::time::Instant::now();
    let uins: Vec<u64> = lab.sessions[..sessions].iter().map(|s| s.uin).collect();
    // Injections go out on schedule even when one answer is slow; a cap keeps a stalled
    // simulator from piling up thousands of requests.
    let permits = Arc::new(tokio::sync::Semaphore::new(256));
    let mut tasks: JoinSet<anyhow::Result<(String, u64)>> = JoinSet::new();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = std::time::Instant::now();
    let cpu_before = procfs::machine_cpu();
    for i in 0..messages {
        ticker.tick().await;
        if last_read.elapsed() > Duration::from_secs(1) {
            arrivals.poll(&lab.api).await?;
            last_read = std::time::Instant::now();
        }
        let permit = permits.clone().acquire_owned().await?;
        let api: Api = lab.api.clone();
        let uin = uins[i % uins.len()];
        let body = json!({"type": "text", "from": format!("Friend {}", i % friends + 1), "text": format!("latency {i}")});
        tasks.spawn(async move {
            let v = api
                .post(&format!("/__sim/sessions/{uin}/inject"), &body)
                .await?;
            drop(permit);
            let id = v["msg_id"]
                .as_str()
                .context("inject without msg_id")?
                .to_owned();
            let at = v["injected_us"]
                .as_u64()
                .context("inject without injected_us")?;
            Ok((id, at))
        });
    }
    let mut injected: HashMap<String, u64> = HashMap::with_capacity(messages);
    while let Some(r) = tasks.join_next().await {
        let (id, at) = r??;
        injected.insert(id, at);
    }
    let achieved_rate = messages as f64 / started.elapsed().as_secs_f64();
    let arrived = arrivals
        .wait_for(&lab.api, &injected, Duration::from_secs(60))
        .await?;
    let steal_percent = procfs::steal_percent(cpu_before, procfs::machine_cpu());
    let latencies: Vec<f64> = arrived
        .iter()
        .filter_map(|(id, us)| Some(us.saturating_sub(*injected.get(id)?) as f64 / 1000.0))
        .collect();
    Ok(LatencyRun {
        sessions,
        rate,
        messages,
        achieved_rate,
        reported: latencies.len(),
        missing: messages - latencies.len(),
        latency_ms: Summary::of(&latencies),
        steal_percent,
    })
}

/// Report arrivals, read as they come. The control plane keeps a bounded ring of callback
/// records (100,000); 100 workers polling every 100 ms fill it in under two minutes, so a long
/// run must read while it injects or lose its first records to eviction.
pub struct Arrivals {
    cursor: u64,
    seen: HashMap<String, u64>,
}

impl Arrivals {
    /// Starts reading from the next callback request on.
    pub async fn start(api: &Api) -> anyhow::Result<Arrivals> {
        let (_, cursor) = api.msg_times(u64::MAX).await?;
        Ok(Arrivals {
            cursor,
            seen: HashMap::new(),
        })
    }

    /// Reads what arrived since the last call; returns how many new message ids.
    pub async fn poll(&mut self, api: &Api) -> anyhow::Result<usize> {
        let (msgs, next) = api.msg_times(self.cursor).await?;
        self.cursor = next;
        let before = self.seen.len();
        for (id, us) in msgs {
            self.seen.entry(id).or_insert(us);
        }
        Ok(self.seen.len() - before)
    }

    /// Reads until every injected id has arrived or nothing new came for `quiet`; returns the
    /// arrival of each injected id that came.
    pub async fn wait_for(
        &mut self,
        api: &Api,
        injected: &HashMap<String, u64>,
        quiet: Duration,
    ) -> anyhow::Result<HashMap<String, u64>> {
        let mut last_progress = std::time::Instant::now();
        loop {
            if self.poll(api).await? > 0 {
                last_progress = std::time::Instant::now();
            }
            let done = injected.keys().all(|id| self.seen.contains_key(id));
            if done || last_progress.elapsed() > quiet {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(injected
            .keys()
            .filter_map(|id| Some((id.clone(), *self.seen.get(id)?)))
            .collect())
    }
}

impl LatencyRun {
    pub fn table(&self, t: &mut Table) {
        let what = format!(
            "latency: {} msg/s over {} session{}",
            self.rate,
            self.sessions,
            if self.sessions == 1 { "" } else { "s" }
        );
        let l = &self.latency_ms;
        let target = if self.sessions >= 100 && self.rate >= 200.0 {
            "p99 ≤ 5 ms"
        } else {
            ""
        };
        t.row(
            format!("{what}, p50 / p99 / max"),
            format!("{} / {} / {}", ms(l.p50), ms(l.p99), ms(l.max)),
            target,
        );
        if let Some(steal) = self.steal_percent {
            t.row(
                format!("{what}: CPU taken by the hypervisor"),
                format!("{steal:.1} % (steal)"),
                "",
            );
        }
        t.row(
            format!("{what}: reported / missing"),
            format!(
                "{} / {} (injected at {:.0} msg/s)",
                self.reported, self.missing, self.achieved_rate
            ),
            "",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_specs_parse() {
        assert_eq!(parse_run("100@200").unwrap(), (100, 200.0));
        assert_eq!(parse_run(" 1 @ 20.5").unwrap(), (1, 20.5));
        assert!(parse_run("100").is_err());
        assert!(parse_run("0@10").is_err());
        assert!(parse_run("1@0").is_err());
        assert!(parse_run("x@1").is_err());
    }
}
