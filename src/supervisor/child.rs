//! One task owns each worker process (DESIGN §3.4): it spawns it, relays its pipe messages and
//! logs, reaps it, restarts it with backoff after a crash, and stops it (TERM → grace → KILL)
//! when asked. Only this task ever touches the `Child`.

use super::process::{self, Stopped};
use super::pull::{FeedCommand, PullSettings};
use super::registry::Registry;
use crate::backoff::Backoff;
use crate::exit::WorkerExit;
use crate::worker::ipc::WorkerMessage;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Read buffer for each worker's stdout and stderr. A worker writes short lines (an IPC message
/// or a log line is a few hundred bytes; a longer one is read in several calls), and with two
/// pipes per worker tokio's 8 KiB default cost the supervisor 1.6 MiB at 100 sessions.
const PIPE_BUFFER: usize = 1024;

#[derive(Debug, Clone)]
pub struct ChildSpec {
    pub session_id: String,
    pub launcher: Arc<process::Launcher>,
    /// How long a worker gets between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// A run at least this long counts as healthy and resets the restart backoff.
    pub healthy_after: Duration,
    pub restart_min: Duration,
    pub restart_max: Duration,
    /// Polling `pull_task` for the worker's account when it asks (`super::pull`).
    pub pull: Option<PullSettings>,
}

/// What a child task tells the supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildEvent {
    /// A worker relayed task 200 from its control-plane acks.
    StartSession {
        qr_session_id: String,
        task_id: Option<String>,
    },
}

/// How a supervised session ended for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildEnd {
    /// The worker ended with a final exit (a logout, abandonment, refusal…).
    Finished(WorkerExit),
    /// The supervisor stopped it.
    Stopped,
}

/// Runs the session until it ends for good or `stop` fires.
pub async fn supervise(
    spec: ChildSpec,
    registry: Arc<Registry>,
    events: mpsc::Sender<ChildEvent>,
    stop: CancellationToken,
) -> ChildEnd {
    let span = tracing::info_span!("session", session = %spec.session_id);
    async move {
        let mut backoff = Backoff::new(spec.restart_min, spec.restart_max);
        let mut restarts = 0u32;
        loop {
            registry.update(&spec.session_id, |s| {
                s.state = "spawning".into();
                s.pid = None;
            });
            let started = Instant::now();
            let status = match run_once(&spec, &registry, &events, &stop).await {
                Ok(RunEnd::Exited(status)) => status,
                Ok(RunEnd::Stopped) => {
                    registry.worker_gone(&spec.session_id);
                    return ChildEnd::Stopped;
                }
                Err(e) => {
                    tracing::error!(error = %e, "could not start the worker");
                    None
                }
            };
            let exit = match status.and_then(|s| s.code()) {
                Some(code) => WorkerExit::from_code(code).unwrap_or(WorkerExit::Failure),
                // Killed by a signal (or never started): a crash.
                None => WorkerExit::Failure,
            };
            let described = describe(status, exit);
            registry.worker_gone(&spec.session_id);
            registry.update(&spec.session_id, |s| {
                s.pid = None;
                s.last_exit = Some(described.clone());
            });
            if !exit.is_restartable() {
                tracing::info!(exit = %exit, "session ended: {described}");
                return ChildEnd::Finished(exit);
            }
            if started.elapsed() >= spec.healthy_after {
                backoff.reset();
            }
            restarts += 1;
            let delay = backoff.next_delay();
            tracing::warn!(
                restarts,
                delay_ms = delay.as_millis() as u64,
                "worker {described}; restarting"
            );
            registry.update(&spec.session_id, |s| {
                s.state = "restarting".into();
                s.restarts = restarts;
            });
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = stop.cancelled() => return ChildEnd::Stopped,
            }
        }
    }
    .instrument(span)
    .await
}

fn describe(status: Option<ExitStatus>, exit: WorkerExit) -> String {
    match status {
        Some(s) if s.code().is_some() => format!("exited: {exit}"),
        Some(s) => format!("crashed: {s}"),
        None => "failed to start".to_owned(),
    }
}

enum RunEnd {
    Exited(Option<ExitStatus>),
    Stopped,
}

async fn run_once(
    spec: &ChildSpec,
    registry: &Arc<Registry>,
    events: &mpsc::Sender<ChildEvent>,
    stop: &CancellationToken,
) -> std::io::Result<RunEnd> {
    let mut child = spec.launcher.start(&spec.session_id).await?;
    let pid = child.id();
    tracing::info!(pid, forked = child.forked(), "worker started");
    registry.update(&spec.session_id, |s| {
        s.pid = pid;
        s.state = "starting".into();
    });
    // The feed keeps stdin open (its EOF is the worker's sign that we are gone) and polls
    // `pull_task` for the worker when it asks.
    let (feed_tx, feed_rx) = mpsc::channel(8);
    let close_input = CancellationToken::new();
    let feed = child.stdin.take().map(|input| {
        tokio::spawn(
            super::pull::feed(
                input,
                spec.pull.clone(),
                feed_rx,
                registry.clone(),
                spec.session_id.clone(),
                close_input.clone(),
            )
            .in_current_span(),
        )
    });
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let logs = tokio::spawn(
        async move {
            if let Some(err) = stderr {
                let mut lines = BufReader::with_capacity(PIPE_BUFFER, err).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    relog(&line);
                }
            }
        }
        .in_current_span(),
    );
    // The pipe is read to its end even while stopping, so the last messages are not lost and
    // the worker never writes into a closed pipe.
    let pipe = {
        let id = spec.session_id.clone();
        let registry = registry.clone();
        let events = events.clone();
        tokio::spawn(
            async move {
                if let Some(out) = stdout {
                    let mut lines = BufReader::with_capacity(PIPE_BUFFER, out).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        match WorkerMessage::from_line(&line) {
                            Some(m) => handle_message(&id, &registry, &events, &feed_tx, m).await,
                            None => tracing::debug!(line, "non-protocol line on worker stdout"),
                        }
                    }
                }
            }
            .in_current_span(),
        )
    };
    let status = tokio::select! {
        s = child.wait() => Some(s?),
        () = stop.cancelled() => None,
    };
    let end = match status {
        Some(st) => RunEnd::Exited(Some(st)),
        None => {
            registry.update(&spec.session_id, |s| s.state = "stopping".into());
            // Windows has no SIGTERM for a console-less child: the stdin EOF is the request.
            #[cfg(not(unix))]
            close_input.cancel();
            match process::stop(&mut child, spec.grace).await? {
                Stopped::Gracefully(st) => tracing::info!(status = %st, "worker stopped"),
                Stopped::Killed(st) => {
                    tracing::warn!(status = %st, "worker killed after the grace period")
                }
            }
            RunEnd::Stopped
        }
    };
    let _ = pipe.await;
    close_input.cancel();
    if let Some(feed) = feed {
        let _ = feed.await;
    }
    // The worker's stderr closes when it exits; the log task then ends by itself.
    let _ = logs.await;
    Ok(end)
}

async fn handle_message(
    id: &str,
    registry: &Registry,
    events: &mpsc::Sender<ChildEvent>,
    feed: &mpsc::Sender<FeedCommand>,
    m: WorkerMessage,
) {
    match m {
        WorkerMessage::State {
            state,
            wxid,
            nickname,
        } => registry.update(id, |s| {
            s.state = state;
            if wxid.is_some() {
                s.account = wxid;
            }
            if nickname.is_some() {
                s.nickname = nickname;
            }
        }),
        WorkerMessage::Qr { refresh } => {
            tracing::debug!(refresh, "worker showed a QR code");
            registry.record_qr(id, refresh);
        }
        WorkerMessage::Stats(stats) => registry.record_stats(id, stats),
        WorkerMessage::StartSession {
            qr_session_id,
            task_id,
        } => {
            let _ = events
                .send(ChildEvent::StartSession {
                    qr_session_id,
                    task_id,
                })
                .await;
        }
        WorkerMessage::Ended { exit_code, outcome } => {
            tracing::info!(exit_code, "worker reports: {outcome}");
        }
        WorkerMessage::TaskTaken { task_id } => {
            let _ = feed.send(FeedCommand::Taken(task_id)).await;
        }
        WorkerMessage::Pull { wxid } => {
            let _ = feed.send(FeedCommand::Pull(wxid)).await;
        }
        WorkerMessage::TaskNotRun {
            task_id,
            wxid,
            reason,
        } => {
            let not_run = super::pull::NotRun {
                task_id,
                wxid,
                reason,
            };
            let _ = feed.send(FeedCommand::NotRun(Box::new(not_run))).await;
        }
    }
}

/// Re-logs one line of a worker's log under the session's span, at the level the worker gave it
/// (`init_child` lines start with the level word).
fn relog(line: &str) {
    let trimmed = line.trim_start();
    let (level, rest) = trimmed.split_once(' ').unwrap_or(("", trimmed));
    match level {
        "ERROR" => tracing::error!(target: "wxagent::worker_output", "{rest}"),
        "WARN" => tracing::warn!(target: "wxagent::worker_output", "{rest}"),
        "INFO" => tracing::info!(target: "wxagent::worker_output", "{rest}"),
        "DEBUG" => tracing::debug!(target: "wxagent::worker_output", "{rest}"),
        "TRACE" => tracing::trace!(target: "wxagent::worker_output", "{rest}"),
        // Not a log line (a panic message, a backtrace): keep it visible.
        _ => tracing::warn!(target: "wxagent::worker_output", "{trimmed}"),
    }
}
