//! Smoke test of `wxagent bench`: each scenario at a tiny size against the debug binary, its
//! JSON checked for sane, non-zero figures. A correctness test of the measuring, not a timing
//! assertion: debug builds on a shared machine say nothing about performance.

use serde_json::Value;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_wxagent");

/// Runs `wxagent bench <args> --json F` and returns the parsed report.
fn bench(args: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let out = Command::new(BIN)
        .arg("bench")
        .args(args)
        .args(["--hold", "2s", "--poll-interval", "50ms", "--json"])
        .arg(&json)
        .output()
        .expect("run wxagent bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "wxagent bench {args:?} failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(stdout.contains("figure"), "no table printed:\n{stdout}");
    let report: Value = serde_json::from_slice(&std::fs::read(&json).expect("json written"))
        .expect("report is json");
    assert_eq!(report["machine"]["build"], "debug");
    assert!(report["machine"]["cpus"].as_u64() >= Some(1));
    assert_eq!(report["friends"], 300);
    report
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("{v} is not a number"))
}

/// A latency-like summary: every sample counted, ordered percentiles, positive.
fn assert_summary(s: &Value, count: u64) {
    assert_eq!(s["count"].as_u64(), Some(count), "{s}");
    let (p50, p99, max) = (f(&s["p50"]), f(&s["p99"]), f(&s["max"]));
    assert!(p50 > 0.0 && p50 <= p99 && p99 <= max, "{s}");
    assert!(
        max < 60_000.0,
        "a sample of a minute or more is a measuring bug: {s}"
    );
}

#[test]
fn density_measures_every_worker() {
    let r = bench(&[
        "density",
        "--sessions",
        "2",
        "--idle",
        "1s",
        "--settle",
        "0s",
    ]);
    let d = &r["density"];
    assert_eq!(d["sessions"], 2);
    assert_eq!(d["workers"], 2, "one worker process per session: {d}");
    let pss = &d["worker_pss_kib"];
    assert_eq!(pss["count"], 2);
    assert!(
        f(&pss["p50"]) > 100.0,
        "a worker is more than 100 KiB: {pss}"
    );
    assert!(
        f(&d["worker_rss_kib"]["p50"]) >= f(&pss["p50"]),
        "RSS ≥ PSS: {d}"
    );
    let sup = f(&d["supervisor"]["pss_kib"]);
    assert!(sup > 100.0, "{d}");
    let total = f(&d["total_pss_kib"]);
    // Workers are forked from a template by default; it is part of the agent's cost.
    let template = f(&d["fork_server"]["pss_kib"]);
    assert!(
        template > 100.0,
        "the fork-server template is measured: {d}"
    );
    assert!(
        (total - (sup + template + f(&pss["mean"]) * 2.0)).abs() < 2.0,
        "total = supervisor + template + workers: {d}"
    );
    assert!(f(&d["idle_seconds"]) >= 1.0, "{d}");
    assert!(f(&d["idle_cpu_percent"]) >= 0.0, "{d}");
}

#[test]
fn latency_matches_every_injected_message() {
    let r = bench(&["latency", "--runs", "1@50,2@50", "--messages", "50"]);
    let runs = r["latency"].as_array().expect("latency runs");
    assert_eq!(runs.len(), 2);
    for run in runs {
        assert_eq!(run["messages"], 50);
        assert_eq!(run["reported"], 50, "{run}");
        assert_eq!(run["missing"], 0, "{run}");
        assert_summary(&run["latency_ms"], 50);
        // Read from /proc/stat around the run: a share of the machine's CPU time.
        let steal = f(&run["steal_percent"]);
        assert!((0.0..=100.0).contains(&steal), "{run}");
    }
    assert_eq!(runs[1]["sessions"], 2);
}

#[test]
fn throughput_counts_every_report() {
    let r = bench(&["throughput", "--sessions", "1,2", "--messages", "200"]);
    let runs = r["throughput"].as_array().expect("throughput runs");
    assert_eq!(runs.len(), 2);
    for run in runs {
        assert_eq!(run["messages"], 200);
        assert_eq!(run["reported"], 200, "{run}");
        assert!(f(&run["elapsed_ms"]) > 0.0, "{run}");
        let rate = f(&run["msgs_per_second"]);
        // The rate is the count over the elapsed time, not a made-up figure.
        assert!(
            (rate - 200.0 / (f(&run["elapsed_ms"]) / 1000.0)).abs() < 1e-6 * rate.max(1.0),
            "{run}"
        );
        assert_summary(&run["latency_ms"], 200);
        assert!(run["websocket_frames"].is_null(), "{run}");
        let steal = f(&run["steal_percent"]);
        assert!((0.0..=100.0).contains(&steal), "{run}");
    }
    assert_eq!(r["transport"], "http");
}

/// `--websocket`: the same burst goes over the sessions' sockets (the control plane counted a
/// frame per report), and the JSON says so.
#[test]
fn throughput_over_websocket() {
    let r = bench(&[
        "throughput",
        "--sessions",
        "2",
        "--messages",
        "200",
        "--websocket",
    ]);
    assert_eq!(r["transport"], "websocket");
    let run = &r["throughput"][0];
    assert_eq!(run["reported"], 200, "{run}");
    assert!(
        run["websocket_frames"].as_u64() >= Some(200),
        "every report went over a socket: {run}"
    );
}

#[test]
fn spawn_and_resume_are_timed() {
    let r = bench(&["spawn", "--sessions", "3", "--restarts", "2"]);
    let s = &r["spawn"];
    assert_summary(&s["spawn_ms"], 3);
    assert_summary(&s["resume_ms"], 2);
}
