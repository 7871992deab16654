//! Throughput: a burst of texts queued at once (one simulator request per session), spread
//! evenly over sessions; messages per second from the first queued to the last report arrived.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Serialize;
use serde_json::json;
use tokio::task::JoinSet;

use super::lab::Lab;
use super::latency::Arrivals;
use super::procfs;
use super::stats::{Summary, Table, ms};

#[derive(Debug, Clone, Serialize)]
pub struct ThroughputRun {
    pub sessions: usize,
    pub messages: usize,
    pub reported: usize,
    pub missing: usize,
    /// How long queueing the burst took in the simulator, ms.
    pub queue_ms: f64,
    /// First queued → last report arrived, ms.
    pub elapsed_ms: f64,
    pub msgs_per_second: f64,
    /// Per-message queue → report, ms (shows how long the tail waited).
    pub latency_ms: Summary,
    /// With `--websocket`: report frames the control plane received during the run (about
    /// `messages` when they all went over the sockets). `None` over HTTP.
    pub websocket_frames: Option<u64>,
    /// With `--report-batch`: `report_batch` posts the control plane accepted during the run
    /// (each carried several reports; the rest went one per post). `None` without.
    pub batch_posts: Option<u64>,
    /// The share of the machine's CPU time the hypervisor took during the burst (`st` in
    /// `vmstat`), percent; None where it cannot be read.
    pub steal_percent: Option<f64>,
}

/// Refuses, before any session is logged in, a burst whose share for one session is larger than
/// the simulator's event log: the log would drop the burst's first messages before the worker
/// could fetch them, and the run would wait for reports that cannot come.
pub fn check_burst(sessions: &[usize], messages: usize) -> anyhow::Result<()> {
    let cap = crate::sim::EVENT_LOG_CAP;
    for &n in sessions {
        let per_session = messages.div_ceil(n.max(1));
        if per_session > cap {
            bail!(
                "a burst of {messages} messages over {n} session(s) is {per_session} per session; \
                 the simulator keeps {cap} events per session, so use at most {} messages or more sessions",
                cap * n.max(1)
            );
        }
    }
    Ok(())
}

pub async fn measure(lab: &Lab, sessions: usize, messages: usize) -> anyhow::Result<ThroughputRun> {
    if sessions == 0 || sessions > lab.sessions.len() {
        bail!(
            "throughput over {sessions} sessions but {} are logged in",
            lab.sessions.len()
        );
    }
    if lab.common.friends == 0 {
        bail!("throughput needs accounts with friends (--friends)");
    }
    let frames_before = lab.websocket_frames().await?;
    let batches_before = lab.batch_posts().await?;
    let mut arrivals = Arrivals::start(&lab.api).await?;
    let cpu_before = procfs::machine_cpu();
    let mut tasks: JoinSet<anyhow::Result<(u64, u64, Vec<String>)>> = JoinSet::new();
    for (k, s) in lab.sessions[..sessions].iter().enumerate() {
        let count = messages / sessions + usize::from(k < messages % sessions);
        if count == 0 {
            continue;
        }
        let api = lab.api.clone();
        let uin = s.uin;
        tasks.spawn(async move {
            let v = api
                .post(
                    &format!("/__sim/sessions/{uin}/burst"),
                    &json!({"count": count, "from": "Friend 1", "text": format!("burst {uin}")}),
                )
                .await?;
            let first = v["first_us"].as_u64().context("burst without first_us")?;
            let last = v["last_us"].as_u64().context("burst without last_us")?;
            let ids = v["msg_ids"]
                .as_array()
                .context("burst without msg_ids")?
                .iter()
                .filter_map(|id| id.as_str().map(str::to_owned))
                .collect();
            Ok((first, last, ids))
        });
    }
    // Each burst's messages count from its own first queueing (they are queued under one lock,
    // microseconds apart); the run starts at the earliest.
    let mut injected: HashMap<String, u64> = HashMap::with_capacity(messages);
    let (mut start, mut queued_end) = (u64::MAX, 0u64);
    while let Some(r) = tasks.join_next().await {
        let (first, last, ids) = r??;
        start = start.min(first);
        queued_end = queued_end.max(last);
        for id in ids {
            injected.insert(id, first);
        }
    }
    let arrived = arrivals
        .wait_for(&lab.api, &injected, Duration::from_secs(60))
        .await?;
    let steal_percent = procfs::steal_percent(cpu_before, procfs::machine_cpu());
    let end = arrived.values().copied().max().unwrap_or(start);
    let elapsed_ms = end.saturating_sub(start) as f64 / 1000.0;
    let latencies: Vec<f64> = arrived
        .iter()
        .filter_map(|(id, us)| Some(us.saturating_sub(*injected.get(id)?) as f64 / 1000.0))
        .collect();
    let websocket_frames = if lab.common.websocket {
        Some(lab.websocket_frames().await?.saturating_sub(frames_before))
    } else {
        None
    };
    let batch_posts = if lab.common.report_batch > 0 {
        Some(lab.batch_posts().await?.saturating_sub(batches_before))
    } else {
        None
    };
    Ok(ThroughputRun {
        websocket_frames,
        batch_posts,
        sessions,
        messages: injected.len(),
        reported: arrived.len(),
        missing: injected.len() - arrived.len(),
        queue_ms: queued_end.saturating_sub(start) as f64 / 1000.0,
        elapsed_ms,
        msgs_per_second: if elapsed_ms > 0.0 {
            arrived.len() as f64 / (elapsed_ms / 1000.0)
        } else {
            0.0
        },
        latency_ms: Summary::of(&latencies),
        steal_percent,
    })
}

impl ThroughputRun {
    pub fn table(&self, t: &mut Table) {
        t.row(
            format!(
                "throughput: {} msgs into {} session(s)",
                self.messages, self.sessions
            ),
            format!(
                "{:.0} msg/s ({} reported, {} missing, last after {}{}{})",
                self.msgs_per_second,
                self.reported,
                self.missing,
                ms(self.elapsed_ms),
                self.batch_posts
                    .map(|n| format!("; {n} batch posts"))
                    .unwrap_or_default(),
                self.steal_percent
                    .map(|s| format!("; steal {s:.1} %"))
                    .unwrap_or_default()
            ),
            "≥ 10,000 msg/s",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_larger_than_the_event_log_are_refused_up_front() {
        let cap = crate::sim::EVENT_LOG_CAP;
        assert!(check_burst(&[1, 50], cap).is_ok());
        assert!(check_burst(&[2], 2 * cap).is_ok());
        let e = check_burst(&[1, 50], cap + 1).unwrap_err().to_string();
        assert!(e.contains(&format!("{} per session", cap + 1)), "{e}");
        assert!(e.contains(&format!("at most {cap} messages")), "{e}");
        assert!(check_burst(&[3], 3 * cap + 1).is_err());
    }
}
