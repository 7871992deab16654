//! `/metrics`: the supervisor's sessions and their workers' counters in the Prometheus /
//! OpenMetrics text format (encoded by `prometheus-client`).
//!
//! The numbers live in the [`Registry`] (the workers report them over their pipes), so each
//! scrape builds a fresh metric set from a snapshot instead of mirroring every change into
//! long-lived metric objects. Totals include the earlier worker processes of each session and
//! the sessions that have ended, so counters never go backwards.

use super::registry::{Registry, SessionStatus};
use crate::worker::ipc::WorkerStats;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// States a session can be in, listed even when no session is in them so a dashboard sees 0.
const STATES: &[&str] = &[
    "spawning",
    "starting",
    "waiting_for_scan",
    "scanned",
    "logging_in",
    "online",
    "stopping",
    "restarting",
];

type Labels = Vec<(String, String)>;

fn label(name: &str, value: &str) -> Labels {
    vec![(name.to_owned(), value.to_owned())]
}

fn counter(value: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(value);
    c
}

fn gauge(value: u64) -> Gauge {
    let g = Gauge::default();
    g.set(i64::try_from(value).unwrap_or(i64::MAX));
    g
}

/// Encodes the current metrics.
pub fn render(registry: &Registry) -> Result<String, std::fmt::Error> {
    let (sessions, retired) = registry.snapshot_with_retired();
    let mut total = retired.counters.clone();
    let mut restarts = retired.restarts;
    let mut pending = 0u64;
    for s in &sessions {
        total.accumulate(&s.counters);
        restarts += u64::from(s.restarts);
        pending += s.spool_depth;
    }
    let WorkerStats {
        sync_errors,
        messages_in,
        messages_out,
        reports_delivered,
        spool_full_rejections,
        qr_refreshes,
        uploads,
        ..
    } = total;

    let mut reg = prometheus_client::registry::Registry::default();
    let by_state = Family::<Labels, Gauge>::default();
    for state in STATES {
        by_state.get_or_create(&label("state", state)).set(0);
    }
    for s in &sessions {
        by_state.get_or_create(&label("state", &s.state)).inc();
    }
    reg.register("wxagent_sessions", "Sessions by state", by_state);

    let errors = Family::<Labels, Counter>::default();
    for (code, n) in &sync_errors {
        errors.get_or_create(&label("retcode", code)).inc_by(*n);
    }
    reg.register(
        "wxagent_sync_errors",
        "Failed synccheck/webwxsync calls by retcode (network: none)",
        errors,
    );
    reg.register(
        "wxagent_messages_in",
        "Messages received by the accounts",
        counter(messages_in),
    );
    reg.register(
        "wxagent_messages_out",
        "Messages sent by the accounts",
        counter(messages_out),
    );
    reg.register(
        "wxagent_reports_pending",
        "Reports spooled and not yet acknowledged by the control plane",
        gauge(pending),
    );
    reg.register(
        "wxagent_reports_delivered",
        "Reports acknowledged by the control plane",
        counter(reports_delivered),
    );
    reg.register(
        "wxagent_spool_full_rejections",
        "Reports refused because a session's spool was full",
        counter(spool_full_rejections),
    );
    reg.register(
        "wxagent_qr_refreshes",
        "QR codes shown for login",
        counter(qr_refreshes),
    );
    reg.register(
        "wxagent_uploads",
        "Uploads to the control plane (QR codes and media)",
        counter(uploads),
    );
    reg.register(
        "wxagent_worker_restarts",
        "Worker processes restarted after a crash",
        counter(restarts),
    );
    register_rss(&mut reg, &sessions);

    let mut out = String::new();
    encode(&mut out, &reg)?;
    Ok(out)
}

#[cfg(target_os = "linux")]
fn register_rss(reg: &mut prometheus_client::registry::Registry, sessions: &[SessionStatus]) {
    let rss = Family::<Labels, Gauge>::default();
    for s in sessions {
        if let Some(bytes) = s.pid.and_then(rss_bytes) {
            rss.get_or_create(&label("session", &s.id))
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    }
    reg.register(
        "wxagent_worker_rss_bytes",
        "Resident memory of each worker process",
        rss,
    );
}

/// Only Linux has /proc to read it from cheaply; elsewhere the metric is left out.
#[cfg(not(target_os = "linux"))]
fn register_rss(_reg: &mut prometheus_client::registry::Registry, _sessions: &[SessionStatus]) {}

/// A process's resident set size, from the `VmRSS` line of /proc/<pid>/status (in kB).
#[cfg(target_os = "linux")]
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_include_earlier_workers_and_ended_sessions() {
        let r = Registry::default();
        r.insert("a");
        r.insert("b");
        r.update("a", |s| {
            s.state = "online".into();
            s.pid = Some(std::process::id());
        });
        r.record_stats(
            "a",
            WorkerStats {
                messages_in: 4,
                reports_pending: 2,
                sync_errors: [("1101".to_owned(), 1)].into(),
                ..WorkerStats::default()
            },
        );
        r.record_stats(
            "b",
            WorkerStats {
                messages_in: 3,
                ..WorkerStats::default()
            },
        );
        r.update("b", |s| s.restarts = 2);
        r.remove("b");
        let text = render(&r).expect("encodes");
        for line in [
            "wxagent_sessions{state=\"online\"} 1",
            "wxagent_sessions{state=\"waiting_for_scan\"} 0",
            "wxagent_messages_in_total 7",
            "wxagent_reports_pending 2",
            "wxagent_sync_errors_total{retcode=\"1101\"} 1",
            "wxagent_worker_restarts_total 2",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        #[cfg(target_os = "linux")]
        assert!(
            text.lines()
                .any(|l| l.starts_with("wxagent_worker_rss_bytes{session=\"a\"} ")),
            "{text}"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_our_own_rss() {
        let rss = rss_bytes(std::process::id()).expect("this process has an RSS");
        assert!(rss > 100 * 1024, "{rss}");
    }
}
