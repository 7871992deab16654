//! The pipes between a supervised worker and its supervisor: one JSON object per line, the
//! worker's [`WorkerMessage`]s on its stdout and the supervisor's [`SupervisorMessage`]s on its
//! stdin. (stderr carries the worker's logs; stdin's EOF tells the worker that the supervisor is
//! gone.) Unknown lines are ignored by either reader, so either side can be newer.

use crate::control::RawTask;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum WorkerMessage {
    /// The session changed state (`SessionState::name`).
    State {
        state: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wxid: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nickname: Option<String>,
    },
    /// A QR code was shown (count from 1).
    Qr { refresh: u32 },
    /// The control plane sent task 200 to this account; the supervisor starts the session
    /// (control-plane spec B.1).
    StartSession {
        qr_session_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task_id: Option<String>,
    },
    /// The session is over; the exit code follows.
    Ended { exit_code: u8, outcome: String },
    /// Asks the supervisor to poll `pull_task` for this account (`wxid`), or to stop (`None`),
    /// so that an idle worker is not woken every poll interval (`crate::supervisor::pull`).
    /// The worker polls itself until the supervisor answers [`SupervisorMessage::Pulling`].
    Pull {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wxid: Option<String>,
    },
    /// A task the supervisor pulled is in the executor's queue (tasks with an id only): the
    /// supervisor no longer answers for it if the worker dies.
    TaskTaken { task_id: String },
    /// A task the supervisor pulled for this account arrived after the session stopped running
    /// tasks: the supervisor reports it failed, so the control plane hears of it.
    TaskNotRun {
        task_id: String,
        wxid: String,
        reason: String,
    },
    /// The worker's counters, sent every few seconds when they changed.
    Stats(WorkerStats),
}

/// A worker's cumulative counters since it started (the supervisor keeps the totals across
/// restarts). Every field defaults, so an older or newer worker's line still parses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkerStats {
    /// When the session last synced successfully (synccheck or webwxsync), ms since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_sync_ms: Option<u64>,
    /// Failed syncs by retcode (`network` when there was none).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub sync_errors: BTreeMap<String, u64>,
    pub messages_in: u64,
    pub messages_out: u64,
    /// Reports in the spool, not yet acknowledged by the control plane (a gauge).
    pub reports_pending: u64,
    pub reports_delivered: u64,
    /// Reports refused because the spool was full.
    pub spool_full_rejections: u64,
    pub qr_refreshes: u64,
    /// Uploads to the control plane (QR codes and media).
    pub uploads: u64,
}

impl WorkerStats {
    /// Adds `other`'s counters to these (the gauges `last_sync_ms` and `reports_pending` take
    /// the newer / the other's value).
    pub fn accumulate(&mut self, other: &WorkerStats) {
        self.last_sync_ms = self.last_sync_ms.max(other.last_sync_ms);
        for (code, n) in &other.sync_errors {
            *self.sync_errors.entry(code.clone()).or_default() += n;
        }
        self.messages_in += other.messages_in;
        self.messages_out += other.messages_out;
        self.reports_pending = other.reports_pending;
        self.reports_delivered += other.reports_delivered;
        self.spool_full_rejections += other.spool_full_rejections;
        self.qr_refreshes += other.qr_refreshes;
        self.uploads += other.uploads;
    }
}

impl WorkerMessage {
    pub fn to_line(&self) -> String {
        // Serialising this enum of strings and integers cannot fail.
        serde_json::to_string(self).expect("worker message serialises")
    }

    /// Parses one stdout line; `None` for anything that is not a message (a stray print).
    pub fn from_line(line: &str) -> Option<WorkerMessage> {
        serde_json::from_str(line.trim()).ok()
    }
}

/// What the supervisor writes to a worker's stdin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum SupervisorMessage {
    /// The supervisor now polls `pull_task` for this account; the worker stops polling.
    Pulling { wxid: String },
    /// The supervisor stopped polling for the worker (the answer to `Pull { wxid: None }`).
    Released,
    /// A task the supervisor pulled for the account (`task_id` empty when the server gave none).
    Task { task_id: String, task: RawTask },
}

impl SupervisorMessage {
    pub fn to_line(&self) -> String {
        // Strings and JSON values only: serialising cannot fail.
        serde_json::to_string(self).expect("supervisor message serialises")
    }

    /// Parses one stdin line; `None` for anything that is not a message.
    pub fn from_line(line: &str) -> Option<SupervisorMessage> {
        serde_json::from_str(line.trim()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supervisor_lines_round_trip() {
        let task = SupervisorMessage::Task {
            task_id: "t1".into(),
            task: RawTask::new(serde_json::json!({"task_type": 1, "task_dict": {"wxid_to": "a"}})),
        };
        let line = task.to_line();
        assert_eq!(
            line,
            r#"{"cmd":"task","task_id":"t1","task":{"task_dict":{"wxid_to":"a"},"task_type":1}}"#
        );
        assert_eq!(SupervisorMessage::from_line(&line), Some(task));
        assert_eq!(
            SupervisorMessage::from_line(r#"{"cmd":"pulling","wxid":"42"}"#),
            Some(SupervisorMessage::Pulling { wxid: "42".into() })
        );
        assert_eq!(SupervisorMessage::from_line(r#"{"cmd":"later"}"#), None);
        let pull = WorkerMessage::Pull { wxid: None };
        assert_eq!(pull.to_line(), r#"{"event":"pull"}"#);
        assert_eq!(WorkerMessage::from_line(&pull.to_line()), Some(pull));
    }

    #[test]
    fn round_trip_and_tolerance() {
        let m = WorkerMessage::State {
            state: "online".into(),
            wxid: Some("42".into()),
            nickname: None,
        };
        let line = m.to_line();
        assert_eq!(line, r#"{"event":"state","state":"online","wxid":"42"}"#);
        assert_eq!(WorkerMessage::from_line(&line), Some(m));
        assert_eq!(WorkerMessage::from_line("hello"), None);
        assert_eq!(
            WorkerMessage::from_line(r#"{"event":"future_thing"}"#),
            None
        );
        let s = WorkerMessage::StartSession {
            qr_session_id: "q".into(),
            task_id: None,
        };
        assert_eq!(WorkerMessage::from_line(&s.to_line()), Some(s));
    }

    #[test]
    fn stats_lines_are_compact_and_tolerant() {
        let m = WorkerMessage::Stats(WorkerStats {
            last_sync_ms: Some(5),
            sync_errors: [("1102".to_owned(), 2)].into(),
            messages_in: 3,
            ..WorkerStats::default()
        });
        let line = m.to_line();
        assert!(
            line.starts_with(
                r#"{"event":"stats","last_sync_ms":5,"sync_errors":{"1102":2},"messages_in":3,"#
            ),
            "{line}"
        );
        assert_eq!(WorkerMessage::from_line(&line), Some(m));
        // Fields it does not know, or lacks, do not lose the line.
        assert_eq!(
            WorkerMessage::from_line(r#"{"event":"stats","messages_out":4,"new_counter":1}"#),
            Some(WorkerMessage::Stats(WorkerStats {
                messages_out: 4,
                ..WorkerStats::default()
            }))
        );
    }

    #[test]
    fn accumulate_adds_counters_and_keeps_the_newest_gauges() {
        let mut total = WorkerStats {
            last_sync_ms: Some(10),
            sync_errors: [("network".to_owned(), 1)].into(),
            messages_in: 2,
            reports_pending: 9,
            ..WorkerStats::default()
        };
        total.accumulate(&WorkerStats {
            last_sync_ms: Some(7),
            sync_errors: [("network".to_owned(), 2), ("1101".to_owned(), 1)].into(),
            messages_in: 3,
            reports_pending: 1,
            uploads: 4,
            ..WorkerStats::default()
        });
        assert_eq!(total.last_sync_ms, Some(10));
        assert_eq!(total.sync_errors.get("network"), Some(&3));
        assert_eq!(total.sync_errors.get("1101"), Some(&1));
        assert_eq!(
            (total.messages_in, total.reports_pending, total.uploads),
            (5, 1, 4)
        );
    }
}
