//! What the supervisor knows about each session, shared between the child tasks that update it
//! and the admin API / `wxagent status` that read it.

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
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Debug, Default)]
pub struct Registry {
    sessions: Mutex<BTreeMap<String, SessionStatus>>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, SessionStatus>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new session; false if the id is taken.
    pub fn insert(&self, id: &str) -> bool {
        let mut s = self.lock();
        if s.contains_key(id) {
            return false;
        }
        s.insert(
            id.to_owned(),
            SessionStatus {
                id: id.to_owned(),
                pid: None,
                state: "spawning".into(),
                account: None,
                nickname: None,
                since_ms: now_ms(),
                restarts: 0,
                last_exit: None,
            },
        );
        true
    }

    pub fn update(&self, id: &str, f: impl FnOnce(&mut SessionStatus)) {
        if let Some(st) = self.lock().get_mut(id) {
            let before = st.state.clone();
            f(st);
            if st.state != before {
                st.since_ms = now_ms();
            }
        }
    }

    pub fn remove(&self, id: &str) -> Option<SessionStatus> {
        self.lock().remove(id)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.lock().contains_key(id)
    }

    pub fn snapshot(&self) -> Vec<SessionStatus> {
        self.lock().values().cloned().collect()
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
}
