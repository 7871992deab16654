//! A supervised worker's side of polling `pull_task` through its supervisor. An idle worker that
//! polls for itself wakes every poll interval for one HTTP round trip; with a thousand sessions
//! those wake-ups were most of the machine's idle CPU. So once its account is logged in, the
//! worker asks the supervisor to poll for it ([`WorkerMessage::Pull`]); the supervisor, already
//! awake for its own polls, answers [`SupervisorMessage::Pulling`] and writes each task it pulls
//! to the worker's stdin, where it joins the executor's queue like a task the worker pulled.
//! Until the supervisor says it polls, the worker keeps polling itself, so a supervisor that
//! does not know the request costs nothing but the saving.

use super::bridge::Ipc;
use super::ipc::{SupervisorMessage, WorkerMessage};
use crate::control::RawTask;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// A task for the executor: its id (when it has one) and the task.
pub type QueuedTask = (Option<String>, RawTask);

pub struct PullDelegate {
    ipc: Ipc,
    /// The account the supervisor polls for, as it last said (`None`: it does not poll).
    pulling: watch::Sender<Option<String>>,
    asked: Mutex<Asked>,
}

#[derive(Default)]
struct Asked {
    /// Whether the supervisor was asked to poll (and not asked to stop since).
    now: bool,
    /// The account last asked for and its executor's queue; kept after a release, so a task
    /// already on its way still runs if the session does.
    route: Option<(String, mpsc::Sender<QueuedTask>)>,
}

impl PullDelegate {
    pub fn new(ipc: Ipc) -> Arc<PullDelegate> {
        Arc::new(PullDelegate {
            ipc,
            pulling: watch::Sender::new(None),
            asked: Mutex::new(Asked::default()),
        })
    }

    fn asked(&self) -> std::sync::MutexGuard<'_, Asked> {
        self.asked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks the supervisor to poll for `wxid`, its tasks going to `tasks` (once per account:
    /// asking again while asked does nothing).
    pub fn request(&self, wxid: &str, tasks: &mpsc::Sender<QueuedTask>) {
        {
            let mut asked = self.asked();
            if asked.now && asked.route.as_ref().is_some_and(|(w, _)| w == wxid) {
                return;
            }
            asked.now = true;
            asked.route = Some((wxid.to_owned(), tasks.clone()));
        }
        (self.ipc)(WorkerMessage::Pull {
            wxid: Some(wxid.to_owned()),
        });
    }

    /// Asks the supervisor to stop polling (the session stopped running tasks, or the
    /// WebSocket now carries them). Tasks already on their way still reach the executor if it
    /// runs, or are reported as not run.
    pub fn release(&self) {
        if std::mem::take(&mut self.asked().now) {
            (self.ipc)(WorkerMessage::Pull { wxid: None });
        }
    }

    /// Whether the supervisor said it polls for `wxid`.
    pub fn pulls_for(&self, wxid: &str) -> bool {
        self.pulling.borrow().as_deref() == Some(wxid)
    }

    pub fn subscribe(&self) -> watch::Receiver<Option<String>> {
        self.pulling.subscribe()
    }

    /// Waits until the supervisor confirmed it stopped polling, at most `limit` (so the
    /// `logout` report is not followed by a poll for the account).
    pub async fn released(&self, limit: Duration) -> bool {
        let mut rx = self.pulling.subscribe();
        tokio::time::timeout(limit, rx.wait_for(Option::is_none))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Handles one message from the supervisor.
    pub async fn handle(&self, m: SupervisorMessage) {
        match m {
            SupervisorMessage::Pulling { wxid } => {
                tracing::debug!(wxid, "the supervisor polls pull_task for this account");
                self.pulling.send_replace(Some(wxid));
            }
            SupervisorMessage::Released => {
                self.pulling.send_replace(None);
            }
            SupervisorMessage::Task { task_id, task } => self.deliver(task_id, task).await,
        }
    }

    async fn deliver(&self, task_id: String, task: RawTask) {
        let target = self.asked().route.clone();
        let wxid = match target {
            Some((wxid, tx)) => {
                let id = (!task_id.is_empty()).then(|| task_id.clone());
                if tx.send((id, task)).await.is_ok() {
                    if !task_id.is_empty() {
                        (self.ipc)(WorkerMessage::TaskTaken { task_id });
                    }
                    return;
                }
                wxid
            }
            None => self.pulling.borrow().clone().unwrap_or_default(),
        };
        let reason = "the session stopped running tasks before this one arrived";
        tracing::warn!(task_id, "{reason}");
        if !task_id.is_empty() {
            (self.ipc)(WorkerMessage::TaskNotRun {
                task_id,
                wxid,
                reason: reason.to_owned(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn recorder() -> (Ipc, Arc<Mutex<Vec<WorkerMessage>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let ipc: Ipc = Arc::new(move |m| s.lock().unwrap().push(m));
        (ipc, seen)
    }

    fn task(n: i64) -> RawTask {
        RawTask::new(json!({"task_type": n, "task_dict": {}}))
    }

    #[tokio::test]
    async fn asks_once_forwards_tasks_and_reports_those_it_cannot_run() {
        let (ipc, seen) = recorder();
        let d = PullDelegate::new(ipc);
        let (tx, mut rx) = mpsc::channel(4);
        d.request("42", &tx);
        d.request("42", &tx);
        assert!(!d.pulls_for("42"), "not before the supervisor says so");
        d.handle(SupervisorMessage::Pulling { wxid: "42".into() })
            .await;
        assert!(d.pulls_for("42"));
        d.handle(SupervisorMessage::Task {
            task_id: "t1".into(),
            task: task(1),
        })
        .await;
        d.handle(SupervisorMessage::Task {
            task_id: String::new(),
            task: task(2),
        })
        .await;
        assert_eq!(rx.recv().await, Some((Some("t1".into()), task(1))));
        assert_eq!(rx.recv().await, Some((None, task(2))));
        // The executor is gone: the task is reported, not dropped in silence.
        drop(rx);
        d.handle(SupervisorMessage::Task {
            task_id: "t2".into(),
            task: task(1),
        })
        .await;
        d.release();
        d.release();
        assert!(!d.released(Duration::from_millis(10)).await);
        d.handle(SupervisorMessage::Released).await;
        assert!(d.released(Duration::from_secs(5)).await);
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            vec![
                WorkerMessage::Pull {
                    wxid: Some("42".into())
                },
                WorkerMessage::TaskTaken {
                    task_id: "t1".into()
                },
                WorkerMessage::TaskNotRun {
                    task_id: "t2".into(),
                    wxid: "42".into(),
                    reason: "the session stopped running tasks before this one arrived".into(),
                },
                WorkerMessage::Pull { wxid: None },
            ]
        );
    }
}
