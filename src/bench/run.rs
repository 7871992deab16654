//! `wxagent bench <scenario>`: builds the lab each scenario needs, runs it, prints the table and
//! writes the JSON report.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;

use super::density::{self, DensityResult};
use super::lab::Lab;
use super::latency::{self, LatencyRun};
use super::spawn::{self, SpawnResult};
use super::stats::Table;
use super::throughput::{self, ThroughputRun};
use crate::cli::{BenchArgs, BenchCommon, BenchScenario};

/// Everything one `wxagent bench` invocation measured.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub scenario: String,
    /// How reports reached the control plane: "http", "http, report batches of up to N"
    /// (`--report-batch`), or "websocket" (`--websocket`).
    pub transport: String,
    pub hold_ms: u64,
    pub poll_interval_ms: u64,
    pub traffic_poll_interval_ms: u64,
    pub friends: usize,
    pub groups: usize,
    pub group_size: usize,
    pub density: Option<DensityResult>,
    pub latency: Vec<LatencyRun>,
    pub throughput: Vec<ThroughputRun>,
    pub spawn: Option<SpawnResult>,
}

/// The machine the numbers came from, and how busy it was when the run started.
#[derive(Debug, Default, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub mem_total_kib: u64,
    pub kernel: String,
    pub loadavg_at_start: String,
    pub wxagent_version: String,
    /// "release" or "debug": debug numbers are not performance figures.
    pub build: String,
}

impl Machine {
    fn read() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            cpus: std::thread::available_parallelism().map_or(0, usize::from),
            cpu_model: cpuinfo
                .lines()
                .find_map(|l| {
                    l.strip_prefix("model name")?
                        .split_once(':')
                        .map(|(_, v)| v.trim().to_owned())
                })
                .unwrap_or_default(),
            mem_total_kib: meminfo
                .lines()
                .find_map(|l| {
                    l.strip_prefix("MemTotal:")?
                        .split_whitespace()
                        .next()?
                        .parse()
                        .ok()
                })
                .unwrap_or(0),
            kernel: read_trim("/proc/sys/kernel/osrelease"),
            loadavg_at_start: read_trim("/proc/loadavg"),
            wxagent_version: env!("CARGO_PKG_VERSION").to_owned(),
            build: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
            .to_owned(),
        }
    }
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Runs the scenario on a current-thread runtime (the bench itself should stay light: it
/// shares the machine with what it measures).
pub fn run(args: BenchArgs, exe: PathBuf) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the bench runtime")?;
    let (report, json) = rt.block_on(drive(args.scenario, &exe))?;
    let mut table = Table::default();
    if let Some(d) = &report.density {
        d.table(&mut table);
    }
    for l in &report.latency {
        l.table(&mut table);
    }
    for t in &report.throughput {
        t.table(&mut table);
    }
    if let Some(s) = &report.spawn {
        s.table(&mut table);
    }
    println!(
        "wxagent bench {} over {} ({} build, {} CPUs, load at start {})\n",
        report.scenario,
        report.transport,
        report.machine.build,
        report.machine.cpus,
        report.machine.loadavg_at_start
    );
    print!("{}", table.render());
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&report).context("serialising the report")?;
        std::fs::write(&path, text + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("bench: wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn report(scenario: &str, c: &BenchCommon) -> Report {
    Report {
        machine: Machine::read(),
        scenario: scenario.to_owned(),
        transport: match (c.websocket, c.report_batch) {
            (true, _) => "websocket".to_owned(),
            (false, 0) => "http".to_owned(),
            (false, n) => format!("http, report batches of up to {n}"),
        },
        hold_ms: c.hold.as_millis() as u64,
        poll_interval_ms: c.poll_interval.as_millis() as u64,
        traffic_poll_interval_ms: c.traffic_poll_interval.as_millis() as u64,
        friends: c.friends,
        groups: c.groups,
        group_size: c.group_size,
        ..Report::default()
    }
}

fn say(text: impl std::fmt::Display) {
    eprintln!("bench: {text}");
}

/// A lab with the supervisor running and `n` sessions logged in.
async fn lab_with(exe: &Path, c: &BenchCommon, n: usize, room: usize) -> anyhow::Result<Lab> {
    let mut lab = Lab::start(exe, c, n + room + 5).await?;
    say(format_args!(
        "lab in {}; simulator at {}",
        lab.dir.display(),
        lab.api.base
    ));
    lab.start_agent().await?;
    let t = std::time::Instant::now();
    say(format_args!("logging in {n} sessions"));
    lab.log_in(n).await?;
    say(format_args!(
        "{n} sessions online after {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    Ok(lab)
}

/// Runs `f` on the lab, then tears the lab down whatever happened.
async fn with_lab<T>(
    lab: Lab,
    f: impl AsyncFnOnce(&mut Lab) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let mut lab = lab;
    let out = f(&mut lab).await;
    let finished = lab.finish().await;
    let out = out?;
    finished?;
    Ok(out)
}

/// Density with the supervisor restarted at the idle poll interval (the lab stays on it; what
/// is measured next restarts it if it needs another).
async fn density_on(
    lab: &mut Lab,
    idle: Duration,
    idle_poll: Duration,
    settle: Duration,
) -> anyhow::Result<DensityResult> {
    say(format_args!(
        "restarting the supervisor with poll_interval {}",
        humantime::format_duration(idle_poll)
    ));
    lab.restart_with_poll_interval(idle_poll).await?;
    // The restarted workers' login transient (contact reports, the first minute of allocator
    // trim checks) is over before the window opens: what is measured is sessions being held.
    say(format_args!("settling for {:.0} s", settle.as_secs_f64()));
    tokio::time::sleep(settle).await;
    say(format_args!("idle window of {:.0} s", idle.as_secs_f64()));
    density::measure(lab, idle, settle).await
}

/// Puts the supervisor on the traffic poll interval (`--traffic-poll-interval`) unless it
/// already is.
async fn traffic_poll(lab: &mut Lab) -> anyhow::Result<()> {
    let poll = lab.common.traffic_poll_interval;
    if lab.common.poll_interval != poll {
        say(format_args!(
            "restarting the supervisor with poll_interval {}",
            humantime::format_duration(poll)
        ));
        lab.restart_with_poll_interval(poll).await?;
    }
    lab.websockets_open().await
}

async fn latency_on(
    lab: &mut Lab,
    runs: &[(usize, f64)],
    messages: usize,
) -> anyhow::Result<Vec<LatencyRun>> {
    traffic_poll(lab).await?;
    let mut out = Vec::new();
    for &(sessions, rate) in runs {
        say(format_args!(
            "latency: {messages} messages at {rate} msg/s over {sessions} sessions"
        ));
        out.push(latency::measure(lab, sessions, rate, messages).await?);
    }
    Ok(out)
}

async fn throughput_on(
    lab: &mut Lab,
    sessions: &[usize],
    messages: usize,
) -> anyhow::Result<Vec<ThroughputRun>> {
    traffic_poll(lab).await?;
    let mut out = Vec::new();
    for &n in sessions {
        say(format_args!(
            "throughput: {messages} messages over {n} sessions"
        ));
        out.push(throughput::measure(lab, n, messages).await?);
    }
    Ok(out)
}

async fn spawn_lab(
    exe: &Path,
    c: &BenchCommon,
    spawns: usize,
    restarts: usize,
    resume_sessions: usize,
) -> anyhow::Result<SpawnResult> {
    let lab = lab_with(exe, c, resume_sessions, spawns).await?;
    with_lab(lab, async |lab: &mut Lab| {
        say(format_args!(
            "resume: {restarts} supervisor restarts with {resume_sessions} saved session(s)"
        ));
        let resume_ms = spawn::measure_resume(lab, restarts).await?;
        say(format_args!("spawn: {spawns} task 200s, one at a time"));
        let spawn_ms = spawn::measure_spawn(lab, spawns).await?;
        Ok(SpawnResult {
            spawns,
            spawn_ms,
            restarts,
            resume_sessions,
            resume_ms,
        })
    })
    .await
}

async fn drive(scenario: BenchScenario, exe: &Path) -> anyhow::Result<(Report, Option<PathBuf>)> {
    match scenario {
        BenchScenario::Density(a) => {
            let mut r = report("density", &a.common);
            let lab = lab_with(exe, &a.common, a.sessions, 0).await?;
            r.density = Some(
                with_lab(lab, async |lab: &mut Lab| {
                    density_on(lab, a.idle, a.idle_poll_interval, a.settle).await
                })
                .await?,
            );
            Ok((r, a.common.json))
        }
        BenchScenario::Latency(a) => {
            let mut r = report("latency", &a.common);
            let runs = a
                .runs
                .iter()
                .map(|s| latency::parse_run(s))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let n = runs.iter().map(|r| r.0).max().unwrap_or(1);
            let lab = lab_with(exe, &a.common, n, 0).await?;
            r.latency = with_lab(lab, async |lab: &mut Lab| {
                latency_on(lab, &runs, a.messages).await
            })
            .await?;
            Ok((r, a.common.json))
        }
        BenchScenario::Throughput(a) => {
            let mut r = report("throughput", &a.common);
            throughput::check_burst(&a.sessions, a.messages)?;
            let n = a.sessions.iter().copied().max().unwrap_or(1);
            let lab = lab_with(exe, &a.common, n, 0).await?;
            r.throughput = with_lab(lab, async |lab: &mut Lab| {
                throughput_on(lab, &a.sessions, a.messages).await
            })
            .await?;
            Ok((r, a.common.json))
        }
        BenchScenario::Spawn(a) => {
            let mut r = report("spawn", &a.common);
            r.spawn =
                Some(spawn_lab(exe, &a.common, a.sessions, a.restarts, a.resume_sessions).await?);
            Ok((r, a.common.json))
        }
        BenchScenario::All(a) => {
            let mut r = report("all", &a.common);
            throughput::check_burst(&a.burst_sessions, a.burst)?;
            let runs = a
                .runs
                .iter()
                .map(|s| latency::parse_run(s))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let n = runs
                .iter()
                .map(|r| r.0)
                .chain(a.burst_sessions.iter().copied())
                .chain([a.sessions])
                .max()
                .unwrap_or(1);
            let lab = lab_with(exe, &a.common, n, 0).await?;
            let (d, l, t) = with_lab(lab, async |lab: &mut Lab| {
                let d = density_on(lab, a.idle, a.idle_poll_interval, a.settle).await?;
                let l = latency_on(lab, &runs, a.messages).await?;
                let t = throughput_on(lab, &a.burst_sessions, a.burst).await?;
                Ok((d, l, t))
            })
            .await?;
            r.density = Some(d);
            r.latency = l;
            r.throughput = t;
            r.spawn = Some(spawn_lab(exe, &a.common, a.spawns, a.restarts, 1).await?);
            Ok((r, a.common.json))
        }
    }
}
