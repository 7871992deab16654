//! When the driver writes `session.json` (DESIGN §3.3): at once when anything but the sync keys
//! changed (credentials, cookies, hosts, the own account), a change of the sync keys alone at
//! most once per [`KEY_SAVE_INTERVAL`] — the driver writes the deferred one when the interval is
//! over, and always on the way out.

use super::persist::{self, SavedSession};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;

/// How long a SyncKey that moved may stay unsaved. The key only decides where a resume
/// continues: the events it moved past were spooled (fsynced) before it moved, so after a crash a
/// resume from a key up to this old fetches those events again and reports them a second time
/// (at-least-once; the server dedupes by `msg_id`, B.5) — nothing is lost. Saving after every
/// webwxsync cost a file sync and a directory sync per batch, as much again as spooling it, and
/// bounded a burst into one session.
pub const KEY_SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// What to do with a fresh snapshot of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    WriteNow,
    /// Only the sync keys moved since the last write: write it at this instant (or earlier,
    /// with a change that cannot wait).
    Defer(Instant),
}

/// The last write, to tell a sync-keys-only change from one that must be saved at once.
struct Written {
    at: Instant,
    saved: SavedSession,
}

pub struct Saver {
    /// `state_dir/sessions/<id>`.
    dir: PathBuf,
    last: Option<Written>,
    /// A deferred write is pending until then.
    due: Option<Instant>,
}

impl Saver {
    pub fn new(dir: PathBuf) -> Saver {
        Saver {
            dir,
            last: None,
            due: None,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// When the deferred write is due, if one is pending.
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    pub fn plan(&self, saved: &SavedSession, now: Instant) -> Plan {
        match &self.last {
            Some(w) if w.saved.same_but_sync_keys(saved) => {
                let at = w.at + KEY_SAVE_INTERVAL;
                if now < at {
                    Plan::Defer(at)
                } else {
                    Plan::WriteNow
                }
            }
            _ => Plan::WriteNow,
        }
    }

    /// After a sync round moved the keys: writes now or marks the write as due later.
    pub async fn after_sync(&mut self, saved: SavedSession) {
        match self.plan(&saved, Instant::now()) {
            Plan::WriteNow => self.write_off_thread(saved).await,
            Plan::Defer(at) => self.due = Some(at),
        }
    }

    /// Writes now, on this thread. Failures are logged: the session goes on, it just could not
    /// be resumed after a crash.
    pub fn write(&mut self, saved: SavedSession) {
        let at = Instant::now();
        let ok = write_saved(&self.dir, &saved);
        self.written(ok, at, saved);
    }

    /// [`write`](Self::write) on the blocking pool: its syncs then do not hold up the other
    /// tasks of this runtime (the reports just spooled are being posted meanwhile). Awaited, so
    /// writes stay in order.
    pub async fn write_off_thread(&mut self, saved: SavedSession) {
        let at = Instant::now();
        let dir = self.dir.clone();
        let span = tracing::Span::current();
        let done = tokio::task::spawn_blocking(move || {
            let ok = span.in_scope(|| write_saved(&dir, &saved));
            (ok, saved)
        })
        .await;
        match done {
            Ok((ok, saved)) => self.written(ok, at, saved),
            Err(e) => tracing::error!(error = %e, "could not save the session"),
        }
    }

    /// The saved session was deleted: nothing is pending, and the next write goes out at once.
    pub fn forget(&mut self) {
        self.last = None;
        self.due = None;
    }

    fn written(&mut self, ok: bool, at: Instant, saved: SavedSession) {
        // After a failure `last` still names what is on disk, so the next round tries again.
        self.due = None;
        if ok {
            self.last = Some(Written { at, saved });
        }
    }
}

fn write_saved(dir: &Path, saved: &SavedSession) -> bool {
    match persist::save(dir, saved) {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, "could not save the session");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wechat::session::{SyncKey, WebSession};

    fn snapshot(key: i64) -> SavedSession {
        let mut web = WebSession::default();
        web.credentials.uin = "42".into();
        web.credentials.skey = "K1".into();
        web.main_origin = "http://127.0.0.1:1/".into();
        web.sync_key = SyncKey(vec![(1, key)]);
        SavedSession {
            version: persist::FORMAT_VERSION,
            session_id: "q1".into(),
            saved_at_ms: key as u64,
            wxid: "42".into(),
            nickname: "A".into(),
            web,
        }
    }

    fn on_disk(dir: &Path) -> i64 {
        persist::load(dir).unwrap().expect("saved").web.sync_key.0[0].1
    }

    #[tokio::test(start_paused = true)]
    async fn sync_keys_alone_wait_other_changes_do_not() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("q1");
        let mut saver = Saver::new(dir.clone());
        let t0 = Instant::now();
        assert_eq!(saver.plan(&snapshot(1), t0), Plan::WriteNow, "first write");
        saver.after_sync(snapshot(1)).await;
        assert_eq!(on_disk(&dir), 1);
        assert_eq!(saver.due(), None);

        saver.after_sync(snapshot(2)).await;
        assert_eq!(on_disk(&dir), 1, "a moved key alone waits");
        let due = saver.due().expect("a write is due");
        assert!(due > Instant::now() && due <= Instant::now() + KEY_SAVE_INTERVAL);

        let mut rekeyed = snapshot(3);
        rekeyed.web.credentials.skey = "K2".into();
        saver.after_sync(rekeyed).await;
        assert_eq!(on_disk(&dir), 3, "a new skey is written at once");
        assert_eq!(saver.due(), None, "and carries the pending key with it");

        saver
            .after_sync({
                let mut s = snapshot(4);
                s.web.credentials.skey = "K2".into();
                s
            })
            .await;
        assert_eq!(on_disk(&dir), 3, "same skey, newer key: waits");
        let due = saver.due().expect("due");
        tokio::time::advance(KEY_SAVE_INTERVAL).await;
        assert!(Instant::now() >= due);
        let mut later = snapshot(5);
        later.web.credentials.skey = "K2".into();
        assert_eq!(saver.plan(&later, Instant::now()), Plan::WriteNow);
        saver.after_sync(later).await;
        assert_eq!(on_disk(&dir), 5, "written once the interval is over");
        assert_eq!(saver.due(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_deferred_write_is_flushed_by_write_and_forget_starts_over() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("q1");
        let mut saver = Saver::new(dir.clone());
        saver.write(snapshot(1));
        saver.after_sync(snapshot(2)).await;
        assert!(saver.due().is_some());
        saver.write(snapshot(2));
        assert_eq!(on_disk(&dir), 2, "the way-out write holds the newest key");
        assert_eq!(saver.due(), None);
        saver.forget();
        assert_eq!(saver.plan(&snapshot(3), Instant::now()), Plan::WriteNow);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_write_is_retried_by_the_next_round() {
        let tmp = tempfile::tempdir().unwrap();
        // A file where the session directory should be: every write fails.
        let dir = tmp.path().join("q1");
        std::fs::write(&dir, b"not a directory").unwrap();
        let mut saver = Saver::new(dir);
        saver.after_sync(snapshot(1)).await;
        assert_eq!(saver.plan(&snapshot(2), Instant::now()), Plan::WriteNow);
    }
}
