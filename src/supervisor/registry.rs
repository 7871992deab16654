//! What the supervisor knows about each session, shared between the child tasks that update it
//! and the admin API / `wxagent status` that read it.

use crate::worker::ipc::WorkerStats;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStatus {
    pub id: String,
    pub pid: Option<u32>,
    /// `starting`, `waiting_for_scan`, `online`, … (the worker's state), or the supervisor's
    /// own `spawning` / `restarting`.
    pub state: String,
    /// The account's wxid once logged in.
    pub account: Option<String>,
    pub nickname: Option<String>,
    /// When the current state began (ms since the epoch).
    pub since_ms: u64,
    pub restarts: u32,
    /// How the previous worker process ended, if one did.
    pub last_exit: Option<String>,
    /// When the session last synced (ms since the epoch), as its worker last reported.
    #[serde(default)]
    pub last_sync_ms: Option<u64>,
    /// Reports in the session's spool, not yet acknowledged by the control plane.
    #[serde(default)]
    pub spool_depth: u64,
    /// Where the admin API serves the QR code to scan, while the session waits for a scan.
    #[serde(default)]
    pub qr: Option<String>,
    /// The session's counters over all its worker processes.
    #[serde(default)]
    pub counters: WorkerStats,
    /// Whether the supervisor polls `pull_task` for the account (so its worker sleeps).
    #[serde(default)]
    pub agent_pulls: bool,
}

impl SessionStatus {
    fn new(id: &str) -> SessionStatus {
        SessionStatus {
            id: id.to_owned(),
            pid: None,
            state: "spawning".into(),
            account: None,
            nickname: None,
            since_ms: now_ms(),
            restarts: 0,
            last_exit: None,
            last_sync_ms: None,
            spool_depth: 0,
            qr: None,
            counters: WorkerStats::default(),
            agent_pulls: false,
        }
    }
}

/// One session's record: what is shown, and the counters behind it.
#[derive(Debug)]
struct Entry {
    status: SessionStatus,
    /// Counters of the session's earlier worker processes.
    base: WorkerStats,
    /// The running worker's counters, as last reported.
    current: WorkerStats,
    /// The running worker's QR code count (0: none shown yet).
    qr_refresh: u32,
}

impl Entry {
    /// Recomputes the shown fields that derive from the counters.
    fn refresh(&mut self) {
        let mut total = self.base.clone();
        if self.current != WorkerStats::default() {
            total.accumulate(&self.current);
        }
        self.status.last_sync_ms = total.last_sync_ms;
        self.status.spool_depth = total.reports_pending;
        self.status.counters = total;
        self.status.qr =
            (self.status.state == "waiting_for_scan" && self.qr_refresh > 0).then(|| {
                // Names this worker's code, so a page never mistakes another one for it.
                let pid = self.status.pid.unwrap_or(0);
                format!("/qr/{}.png?v={pid}.{}", self.status.id, self.qr_refresh)
            });
    }
}

/// What the metrics need besides the live sessions: what finished sessions counted, so totals
/// never go backwards when a session leaves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retired {
    pub counters: WorkerStats,
    pub restarts: u64,
}

#[derive(Debug, Default)]
struct Inner {
    sessions: BTreeMap<String, Entry>,
    retired: Retired,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Debug, Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new session; false if the id is taken.
    pub fn insert(&self, id: &str) -> bool {
        let mut s = self.lock();
        if s.sessions.contains_key(id) {
            return false;
        }
        s.sessions.insert(
            id.to_owned(),
            Entry {
                status: SessionStatus::new(id),
                base: WorkerStats::default(),
                current: WorkerStats::default(),
                qr_refresh: 0,
            },
        );
        true
    }

    pub fn update(&self, id: &str, f: impl FnOnce(&mut SessionStatus)) {
        if let Some(e) = self.lock().sessions.get_mut(id) {
            let before = e.status.state.clone();
            f(&mut e.status);
            if e.status.state != before {
                e.status.since_ms = now_ms();
            }
            e.refresh();
        }
    }

    /// The running worker's latest counters.
    pub fn record_stats(&self, id: &str, stats: WorkerStats) {
        if let Some(e) = self.lock().sessions.get_mut(id) {
            e.current = stats;
            e.refresh();
        }
    }

    /// The running worker showed QR code number `refresh`.
    pub fn record_qr(&self, id: &str, refresh: u32) {
        if let Some(e) = self.lock().sessions.get_mut(id) {
            e.qr_refresh = refresh;
            e.refresh();
        }
    }

    /// The session's worker process is gone: its counters become part of the session's base,
    /// so the next worker's (starting from zero) add to them.
    pub fn worker_gone(&self, id: &str) {
        if let Some(e) = self.lock().sessions.get_mut(id) {
            let current = std::mem::take(&mut e.current);
            if current != WorkerStats::default() {
                e.base.accumulate(&current);
            }
            e.qr_refresh = 0;
            e.refresh();
        }
    }

    pub fn remove(&self, id: &str) -> Option<SessionStatus> {
        let mut inner = self.lock();
        let e = inner.sessions.remove(id)?;
        let mut counters = e.status.counters.clone();
        // A finished session has nothing pending that anyone will deliver from here.
        counters.reports_pending = 0;
        inner.retired.counters.accumulate(&counters);
        inner.retired.restarts += u64::from(e.status.restarts);
        Some(e.status)
    }

    pub fn len(&self) -> usize {
        self.lock().sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().sessions.is_empty()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.lock().sessions.contains_key(id)
    }

    pub fn snapshot(&self) -> Vec<SessionStatus> {
        self.lock()
            .sessions
            .values()
            .map(|e| e.status.clone())
            .collect()
    }

    /// The live sessions and what finished ones counted, taken together.
    pub fn snapshot_with_retired(&self) -> (Vec<SessionStatus>, Retired) {
        let inner = self.lock();
        (
            inner.sessions.values().map(|e| e.status.clone()).collect(),
            inner.retired.clone(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_update_remove() {
        let r = Registry::default();
        assert!(r.insert("a"));
        assert!(!r.insert("a"), "ids are unique");
        r.update("a", |s| {
            s.state = "online".into();
            s.account = Some("42".into());
        });
        let snap = r.snapshot();
        assert_eq!(snap[0].state, "online");
        assert_eq!(snap[0].account.as_deref(), Some("42"));
        assert_eq!(r.len(), 1);
        assert!(r.remove("a").is_some());
        assert!(r.is_empty());
        r.update("missing", |s| s.state = "x".into());
    }

    #[test]
    fn counters_survive_worker_restarts_and_session_ends() {
        let r = Registry::default();
        r.insert("a");
        let stats = |n: u64, pending: u64| WorkerStats {
            messages_in: n,
            reports_pending: pending,
            last_sync_ms: Some(n),
            ..WorkerStats::default()
        };
        r.record_stats("a", stats(5, 2));
        r.record_stats("a", stats(7, 3));
        assert_eq!(r.snapshot()[0].counters.messages_in, 7);
        r.worker_gone("a");
        let s = &r.snapshot()[0];
        assert_eq!((s.counters.messages_in, s.spool_depth), (7, 3), "{s:?}");
        // The next worker counts from zero again.
        r.record_stats("a", stats(1, 1));
        let s = &r.snapshot()[0];
        assert_eq!(s.counters.messages_in, 8);
        assert_eq!(s.spool_depth, 1, "pending is a gauge, not a sum");
        assert_eq!(s.last_sync_ms, Some(7), "the newest sync time is kept");
        r.update("a", |s| s.restarts = 1);
        r.remove("a");
        let (live, retired) = r.snapshot_with_retired();
        assert!(live.is_empty());
        assert_eq!(retired.counters.messages_in, 8);
        assert_eq!(retired.counters.reports_pending, 0);
        assert_eq!(retired.restarts, 1);
    }

    #[test]
    fn qr_is_offered_only_while_waiting_for_a_scan() {
        let r = Registry::default();
        r.insert("q");
        r.update("q", |s| {
            s.state = "waiting_for_scan".into();
            s.pid = Some(77);
        });
        assert_eq!(r.snapshot()[0].qr, None, "no QR shown yet");
        r.record_qr("q", 2);
        assert_eq!(r.snapshot()[0].qr.as_deref(), Some("/qr/q.png?v=77.2"));
        r.update("q", |s| s.state = "online".into());
        assert_eq!(r.snapshot()[0].qr, None);
    }
}
