//! Activity counters of this process, for the supervisor's `/status` and `/metrics`.
//!
//! A worker process serves exactly one session, so process-wide counters are that session's
//! counters. Keeping them global lets the places where things happen (the sync loop, the
//! uploader, the worker's event loop) count with one call instead of threading a handle through
//! every layer; the supervised worker reads a [`snapshot`] a moment after [`changes`] signals one
//! and sends it up its pipe (an idle worker keeps no timer for this). Counters only grow within a
//! process; the supervisor adds a dead worker's last values to the session's totals so they never
//! go backwards.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::Notify;

/// What [`snapshot`] returns: the cumulative counts since this process started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Activity {
    /// When the sync loop last heard a good answer (synccheck or webwxsync), ms since the epoch.
    pub last_sync_ms: Option<u64>,
    /// Failed synccheck / webwxsync calls by retcode; `network` when there was none (a
    /// timeout, a refused connection, an unreadable answer).
    pub sync_errors: BTreeMap<String, u64>,
    pub messages_in: u64,
    pub messages_out: u64,
    pub qr_refreshes: u64,
    /// Successful uploads to the control plane (QR codes and media).
    pub uploads: u64,
}

struct Counters {
    /// 0: never.
    last_sync_ms: AtomicU64,
    sync_errors: Mutex<BTreeMap<String, u64>>,
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    qr_refreshes: AtomicU64,
    uploads: AtomicU64,
}

static COUNTERS: Counters = Counters {
    last_sync_ms: AtomicU64::new(0),
    sync_errors: Mutex::new(BTreeMap::new()),
    messages_in: AtomicU64::new(0),
    messages_out: AtomicU64::new(0),
    qr_refreshes: AtomicU64::new(0),
    uploads: AtomicU64::new(0),
};

/// Signalled (to the waiters of the moment only) whenever a counter changes.
static CHANGES: Notify = Notify::const_new();

/// What a reader of the counters waits on: register a `notified()` before taking a snapshot,
/// and a change after the snapshot wakes it. Counters kept elsewhere (the report spool's)
/// signal it through [`changed`] too.
pub fn changes() -> &'static Notify {
    &CHANGES
}

/// Wakes whoever waits on [`changes`]. Without a waiter it costs a lock and nothing else:
/// the reader takes a fresh snapshot before it waits again.
pub fn changed() {
    CHANGES.notify_waiters();
}

/// The label of a sync error without a retcode.
pub const NETWORK_ERROR: &str = "network";

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The sync loop got a good answer.
pub fn sync_ok() {
    COUNTERS.last_sync_ms.store(now_ms(), Ordering::Relaxed);
    changed();
}

/// A synccheck or webwxsync failed, with the server's retcode when it gave one.
pub fn sync_error(retcode: Option<i64>) {
    let key = retcode.map_or_else(|| NETWORK_ERROR.to_owned(), |r| r.to_string());
    let mut errors = COUNTERS
        .sync_errors
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    *errors.entry(key).or_default() += 1;
    drop(errors);
    changed();
}

/// A message passed through the session; `outgoing` when this account sent it.
pub fn message(outgoing: bool) {
    let c = if outgoing {
        &COUNTERS.messages_out
    } else {
        &COUNTERS.messages_in
    };
    c.fetch_add(1, Ordering::Relaxed);
    changed();
}

pub fn qr_refresh() {
    COUNTERS.qr_refreshes.fetch_add(1, Ordering::Relaxed);
    changed();
}

pub fn upload() {
    COUNTERS.uploads.fetch_add(1, Ordering::Relaxed);
    changed();
}

pub fn snapshot() -> Activity {
    let last = COUNTERS.last_sync_ms.load(Ordering::Relaxed);
    Activity {
        last_sync_ms: (last != 0).then_some(last),
        sync_errors: COUNTERS
            .sync_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
        messages_in: COUNTERS.messages_in.load(Ordering::Relaxed),
        messages_out: COUNTERS.messages_out.load(Ordering::Relaxed),
        qr_refreshes: COUNTERS.qr_refreshes.load(Ordering::Relaxed),
        uploads: COUNTERS.uploads.load(Ordering::Relaxed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_only_grow() {
        // Other tests in this binary may count too: compare differences.
        let before = snapshot();
        message(false);
        message(false);
        message(true);
        qr_refresh();
        upload();
        sync_error(Some(1102));
        sync_error(None);
        sync_ok();
        let after = snapshot();
        assert!(after.messages_in >= before.messages_in + 2);
        assert!(after.messages_out > before.messages_out);
        assert!(after.qr_refreshes > before.qr_refreshes);
        assert!(after.uploads > before.uploads);
        let count = |a: &Activity, k: &str| a.sync_errors.get(k).copied().unwrap_or(0);
        assert!(count(&after, "1102") > count(&before, "1102"));
        assert!(count(&after, NETWORK_ERROR) > count(&before, NETWORK_ERROR));
        assert!(after.last_sync_ms.is_some_and(|t| t > 0));
    }
}
