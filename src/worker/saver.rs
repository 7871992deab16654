//! When the driver writes `session.json` (DESIGN §3.3): at once when anything but the sync keys
//! changed (credentials, cookies, hosts, the own account), a change of the sync keys alone at
//! most once per [`KEY_SAVE_INTERVAL`] — the driver writes the deferred one when the interval is
//! over, and always on the way out.
//!
//! Writes during the sync loop go to the blocking pool and are not waited for ([`Saver::write_behind`]):
//! a file sync and a directory sync on a busy disk would otherwise hold up the next long poll,
//! and a message that arrives meanwhile with it. Writes are numbered, and one that finds a newer
//! write (or a [`Saver::forget`]) done before it is skipped, so the file never goes back to an
//! older snapshot and a deleted session is not written again.

use super::persist::{self, SavedSession};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// How long a SyncKey that moved may stay unsaved. The key only decides where a resume
/// continues: the events it moved past were safe (synced in the spool, or acknowledged by the
/// control plane) before it moved, so after a crash a
/// resume from a key up to this old fetches those events again and reports them a second time
/// (at-least-once; the server dedupes by `msg_id`, B.5) — nothing is lost. Saving after every
/// webwxsync cost a file sync and a directory sync per batch, as much again as spooling it, and
/// bounded a burst into one session; once a second, 100 sessions at 2 messages a second each
/// still saved 100 times a second (two syncs each) on the disk that holds their spools.
pub const KEY_SAVE_INTERVAL: Duration = Duration::from_secs(5);

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
    /// The newest snapshot handed to a write (which may still be running).
    last: Option<Written>,
    /// A deferred write is pending until then.
    due: Option<Instant>,
    /// Numbers the writes and forgets handed out.
    handed: u64,
    /// Held while writing: the number of the newest write or forget done.
    done: Arc<Mutex<u64>>,
    /// The newest write that ran failed: the next round writes again.
    failed: Arc<AtomicBool>,
    /// The newest write behind, for tests to wait for ([`flush`](Self::flush)); the numbering
    /// keeps the order, so the worker never needs to.
    #[cfg(test)]
    behind: Option<tokio::task::JoinHandle<()>>,
}

impl Saver {
    pub fn new(dir: PathBuf) -> Saver {
        Saver {
            dir,
            last: None,
            due: None,
            handed: 0,
            done: Arc::new(Mutex::new(0)),
            failed: Arc::new(AtomicBool::new(false)),
            #[cfg(test)]
            behind: None,
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
            // After a failure the file still holds an older snapshot: write again.
            Some(w)
                if w.saved.same_but_sync_keys(saved) && !self.failed.load(Ordering::Acquire) =>
            {
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

    /// After a sync round moved the keys: writes behind now or marks the write as due later.
    pub fn after_sync(&mut self, saved: SavedSession) {
        match self.plan(&saved, Instant::now()) {
            Plan::WriteNow => self.write_behind(saved),
            Plan::Defer(at) => self.due = Some(at),
        }
    }

    /// Writes now, on this thread (after a write behind that is running). Failures are logged:
    /// the session goes on, it just could not be resumed after a crash.
    pub fn write(&mut self, saved: SavedSession) {
        let number = self.hand_out(&saved);
        write_numbered(&self.dir, &saved, number, &self.done, &self.failed);
    }

    /// [`write`](Self::write) on the blocking pool, not waited for: its syncs hold up neither
    /// the sync loop nor the other tasks of this runtime.
    pub fn write_behind(&mut self, saved: SavedSession) {
        let number = self.hand_out(&saved);
        let (dir, done, failed) = (self.dir.clone(), self.done.clone(), self.failed.clone());
        let span = tracing::Span::current();
        let task = tokio::task::spawn_blocking(move || {
            span.in_scope(|| write_numbered(&dir, &saved, number, &done, &failed));
        });
        #[cfg(test)]
        {
            self.behind = Some(task);
        }
        #[cfg(not(test))]
        drop(task);
    }

    /// Waits for the writes behind handed out so far.
    #[cfg(test)]
    pub async fn flush(&mut self) {
        if let Some(behind) = self.behind.take()
            && let Err(e) = behind.await
        {
            tracing::error!(error = %e, "could not save the session");
        }
    }

    /// The saved session is to be deleted: a write behind still to run is skipped, nothing is
    /// pending, and the next write goes out at once. Returns after a write that was running.
    pub fn forget(&mut self) {
        self.last = None;
        self.due = None;
        self.handed += 1;
        *lock(&self.done) = self.handed;
    }

    fn hand_out(&mut self, saved: &SavedSession) -> u64 {
        self.due = None;
        self.last = Some(Written {
            at: Instant::now(),
            saved: saved.clone(),
        });
        self.handed += 1;
        self.handed
    }
}

fn lock(done: &Mutex<u64>) -> std::sync::MutexGuard<'_, u64> {
    done.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Writes `saved` as write `number`, unless a newer write or a forget is done already.
fn write_numbered(
    dir: &Path,
    saved: &SavedSession,
    number: u64,
    done: &Mutex<u64>,
    failed: &AtomicBool,
) {
    let mut done = lock(done);
    if *done >= number {
        return;
    }
    *done = number;
    match persist::save(dir, saved) {
        Ok(()) => failed.store(false, Ordering::Release),
        Err(e) => {
            failed.store(true, Ordering::Release);
            tracing::error!(error = %e, "could not save the session");
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
        saver.after_sync(snapshot(1));
        saver.flush().await;
        assert_eq!(on_disk(&dir), 1);
        assert_eq!(saver.due(), None);

        saver.after_sync(snapshot(2));
        saver.flush().await;
        assert_eq!(on_disk(&dir), 1, "a moved key alone waits");
        let due = saver.due().expect("a write is due");
        assert!(due > Instant::now() && due <= Instant::now() + KEY_SAVE_INTERVAL);

        let mut rekeyed = snapshot(3);
        rekeyed.web.credentials.skey = "K2".into();
        saver.after_sync(rekeyed);
        saver.flush().await;
        assert_eq!(on_disk(&dir), 3, "a new skey is written at once");
        assert_eq!(saver.due(), None, "and carries the pending key with it");

        saver.after_sync({
            let mut s = snapshot(4);
            s.web.credentials.skey = "K2".into();
            s
        });
        saver.flush().await;
        assert_eq!(on_disk(&dir), 3, "same skey, newer key: waits");
        let due = saver.due().expect("due");
        tokio::time::advance(KEY_SAVE_INTERVAL).await;
        assert!(Instant::now() >= due);
        let mut later = snapshot(5);
        later.web.credentials.skey = "K2".into();
        assert_eq!(saver.plan(&later, Instant::now()), Plan::WriteNow);
        saver.after_sync(later);
        saver.flush().await;
        assert_eq!(on_disk(&dir), 5, "written once the interval is over");
        assert_eq!(saver.due(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_deferred_write_is_flushed_by_write_and_forget_starts_over() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("q1");
        let mut saver = Saver::new(dir.clone());
        saver.write(snapshot(1));
        saver.after_sync(snapshot(2));
        saver.flush().await;
        assert!(saver.due().is_some());
        saver.write(snapshot(2));
        assert_eq!(on_disk(&dir), 2, "the way-out write holds the newest key");
        assert_eq!(saver.due(), None);
        saver.forget();
        assert_eq!(saver.plan(&snapshot(3), Instant::now()), Plan::WriteNow);
    }

    /// A write behind that runs late never puts an older snapshot over a newer one, nor brings
    /// back a session that was forgotten and deleted.
    #[test]
    fn a_write_behind_that_runs_late_is_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("q1");
        let mut saver = Saver::new(dir.clone());
        let run_late = |saver: &Saver, saved: SavedSession, number| {
            write_numbered(&dir, &saved, number, &saver.done, &saver.failed);
        };
        // Handed out as a write behind, but the blocking pool runs it after a newer write.
        let number = saver.hand_out(&snapshot(1));
        saver.write(snapshot(2));
        run_late(&saver, snapshot(1), number);
        assert_eq!(on_disk(&dir), 2);

        let number = saver.hand_out(&snapshot(3));
        saver.forget();
        persist::delete(&dir).unwrap();
        run_late(&saver, snapshot(3), number);
        assert!(
            persist::load(&dir).unwrap().is_none(),
            "nothing written back"
        );
        assert_eq!(saver.plan(&snapshot(4), Instant::now()), Plan::WriteNow);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_write_is_retried_by_the_next_round() {
        let tmp = tempfile::tempdir().unwrap();
        // A file where the session directory should be: every write fails.
        let dir = tmp.path().join("q1");
        std::fs::write(&dir, b"not a directory").unwrap();
        let mut saver = Saver::new(dir);
        saver.after_sync(snapshot(1));
        saver.flush().await;
        assert_eq!(saver.plan(&snapshot(2), Instant::now()), Plan::WriteNow);
    }
}
