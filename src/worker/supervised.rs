//! `wxagent worker --session ID`: one session as a child of the supervisor. Events go to the
//! control plane through the [`Bridge`]; what the supervisor needs goes to stdout as
//! [`WorkerMessage`] lines; stdin EOF (the supervisor is gone) or SIGTERM drains the session:
//! the control plane hears `logout` with reason `shutdown`, and the account is logged out of
//! WeChat only if it answers `exit_wechat`.
//!
//! For the supervisor's status page and metrics the worker also sends a compact
//! [`WorkerMessage::Stats`] line when a counter changed, at most one per [`STATS_EVERY`] (an
//! idle session sends nothing new and keeps no timer for it), and keeps the QR code being shown in `sessions/<id>/qr.png` (written
//! atomically: temp file + rename; removed once online), which the admin API serves.

use super::bridge::{Bridge, BridgeSettings, Ipc, Outbox};
use super::driver::{self, SessionSpec};
use super::events::{WorkerCommand, WorkerEvent};
use super::ipc::{SupervisorMessage, WorkerMessage, WorkerStats};
use super::pacing::Pacer;
use super::pull::PullDelegate;
use super::state::{LogoutReason, Outcome, SessionState};
use crate::config::Config;
use crate::control::ControlClient;
use crate::control::delivery;
use crate::control::envelope::Ack;
use crate::control::reports::LogoutData;
use crate::control::spool::Spool;
use crate::wechat::message::MessageKind;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The least time between two stats lines (changes meanwhile ride along in the next).
pub const STATS_EVERY: Duration = Duration::from_secs(2);

/// Read buffer for the supervisor's lines on stdin (a task line is usually a few hundred bytes;
/// a longer one is read in several calls).
const STDIN_BUFFER: usize = 1024;

/// Where a waiting session's current QR code is kept for the admin API.
pub fn qr_file(state_dir: &std::path::Path, session_id: &str) -> std::path::PathBuf {
    super::persist::session_dir(state_dir, session_id).join("qr.png")
}

/// Replaces the session's QR file atomically, so a reader never sees half an image.
fn write_qr(path: &std::path::Path, png: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("png.tmp");
    std::fs::write(&tmp, png)?;
    std::fs::rename(&tmp, path)
}

/// Writes one pipe message to stdout; a closed pipe is ignored (stdin EOF ends us anyway).
pub fn emit_line(m: WorkerMessage) {
    let mut out = std::io::stdout().lock();
    // The supervisor reads these lines; if it is gone, stdin EOF stops us anyway.
    let _ = writeln!(out, "{}", m.to_line());
    let _ = out.flush();
}

pub async fn run(config: Config, session_id: String, shutdown: CancellationToken) -> Outcome {
    let ipc: Ipc = Arc::new(emit_line);
    let pull = PullDelegate::new(ipc.clone());
    // The supervisor's messages come on stdin; its EOF means the supervisor is gone.
    {
        let shutdown = shutdown.clone();
        let pull = pull.clone();
        tokio::spawn(async move {
            let mut input = BufReader::with_capacity(STDIN_BUFFER, tokio::io::stdin());
            let mut line = Vec::new();
            // Bytes, not `lines()`: a line that is not UTF-8 must not read as the EOF.
            while let Ok(n) = input.read_until(b'\n', &mut line).await {
                if n == 0 {
                    break;
                }
                match SupervisorMessage::from_line(&String::from_utf8_lossy(&line)) {
                    Some(m) => pull.handle(m).await,
                    None => tracing::debug!(len = line.len(), "unknown line on stdin"),
                }
                line.clear();
            }
            tracing::info!("stdin closed: the supervisor is gone; draining");
            // Nobody polls for us any more (and nobody will confirm it).
            pull.handle(SupervisorMessage::Released).await;
            shutdown.cancel();
        });
    }
    // So a later supervisor can find (and stop) us if our own supervisor died unexpectedly.
    let dir = super::persist::session_dir(&config.agent.state_dir, &session_id);
    let pid_file = dir.join("worker.pid");
    // A QR code of an earlier run is no use to anyone.
    let _ = std::fs::remove_file(qr_file(&config.agent.state_dir, &session_id));
    if let Err(e) = super::persist::ensure_dir(&dir)
        .and_then(|()| std::fs::write(&pid_file, std::process::id().to_string()))
    {
        tracing::warn!(error = %e, "could not write the worker pid file");
    }
    let outcome = serve(&config, &session_id, &ipc, &pull, &shutdown).await;
    let _ = std::fs::remove_file(&pid_file);
    outcome
}

async fn serve(
    config: &Config,
    session_id: &str,
    ipc: &Ipc,
    pull: &Arc<PullDelegate>,
    shutdown: &CancellationToken,
) -> Outcome {
    let machine_id = crate::control::client::process_machine_id(&config.agent.machine_id);
    let control = match ControlClient::new(&config.control, machine_id.clone()) {
        Ok(c) => c,
        Err(e) => {
            return Outcome::LoginFailed {
                detail: format!("control plane: {e}"),
            };
        }
    };
    // The spool outlives a login: what was not delivered goes out on the next start.
    let spool_dir = super::persist::session_dir(&config.agent.state_dir, session_id).join("spool");
    let spool = match Spool::open(&spool_dir, session_id, (&config.spool).into()) {
        Ok(s) => Arc::new(std::sync::Mutex::new(s)),
        Err(e) => {
            return Outcome::LoginFailed {
                detail: format!("report spool: {e}"),
            };
        }
    };
    let wake = Arc::new(tokio::sync::Notify::new());
    let delivery_stop = CancellationToken::new();
    let (delivery, acks) = delivery::start_with(
        spool.clone(),
        control.clone(),
        wake.clone(),
        delivery_stop.clone(),
        delivery::DeliveryPolicy {
            ws_window: config.control.ws_window,
            http_batch: config.control.http_batch,
            ..delivery::DeliveryPolicy::default()
        },
    );
    let delivery = Arc::new(delivery);
    let acks = Arc::new(tokio::sync::Mutex::new(acks));
    let stats_stop = CancellationToken::new();
    let stats_task = tokio::spawn(send_stats(
        spool.clone(),
        delivery.clone(),
        ipc.clone(),
        stats_stop.clone(),
    ));
    let outcome = loop {
        let outbox = Outbox {
            spool: spool.clone(),
            wake: wake.clone(),
            delivery: delivery.clone(),
        };
        let outcome = one_login(
            config,
            session_id,
            &control,
            &machine_id,
            ipc,
            pull,
            shutdown,
            outbox,
            acks.clone(),
        )
        .await;
        let (outcome, flags) = outcome;
        // `exit_wehub: 0` keeps the worker for a new login of the same QR session (WeHub's
        // client stays up after a logout); anything that was not a logout ends it.
        let again = matches!(&outcome, Outcome::LoggedOut(r) if !matches!(r, LogoutReason::Shutdown))
            && flags.is_some_and(|f| !f.exit_wehub)
            && !shutdown.is_cancelled();
        if !again {
            break outcome;
        }
        tracing::info!("control plane asked to stay (exit_wehub = 0): starting a new login");
    };
    // Give the last reports a moment; whatever stays in the spool is sent by the next worker.
    if !delivery.drained(Duration::from_secs(10)).await {
        tracing::warn!(
            pending = spool.lock().map(|s| s.len()).unwrap_or(0),
            "reports left in the spool for the next start"
        );
    }
    delivery_stop.cancel();
    // The last counters go out before the `ended` line.
    stats_stop.cancel();
    let _ = stats_task.await;
    outcome
}

/// This worker's counters right now.
fn current_stats(
    spool: &std::sync::Mutex<Spool>,
    delivery: &delivery::DeliveryHandle,
) -> WorkerStats {
    let activity = crate::stats::snapshot();
    let spool = spool.lock().unwrap_or_else(|p| p.into_inner()).stats();
    WorkerStats {
        last_sync_ms: activity.last_sync_ms,
        sync_errors: activity.sync_errors,
        messages_in: activity.messages_in,
        messages_out: activity.messages_out,
        reports_pending: spool.pending,
        reports_delivered: delivery.stats().delivered,
        spool_full_rejections: spool.full_rejections,
        qr_refreshes: activity.qr_refreshes,
        uploads: activity.uploads,
    }
}

/// Sends the counters when they changed, and once more when stopped.
async fn send_stats(
    spool: Arc<std::sync::Mutex<Spool>>,
    delivery: Arc<delivery::DeliveryHandle>,
    ipc: Ipc,
    stop: CancellationToken,
) {
    coalesce_stats(
        crate::stats::changes(),
        || current_stats(&spool, &delivery),
        |s| ipc(WorkerMessage::Stats(s)),
        &stop,
    )
    .await;
}

/// Sends what `read` returns whenever it differs from what was sent last, at most one line
/// per [`STATS_EVERY`]: a signal on `changes` wakes the task, which sends at once when the last
/// line is older than that (an idle session's synccheck makes one line and no extra wake-up),
/// else waits out the rest of it so that a burst of changes makes one line. While nothing
/// changes no timer is armed: a thousand idle workers each waking every few seconds to compare
/// counters cost more CPU than the sessions themselves.
async fn coalesce_stats(
    changes: &tokio::sync::Notify,
    mut read: impl FnMut() -> WorkerStats,
    mut send: impl FnMut(WorkerStats),
    stop: &CancellationToken,
) {
    let mut sent = WorkerStats::default();
    let mut sent_at: Option<tokio::time::Instant> = None;
    loop {
        // Registered before the snapshot, so a change right after it still wakes us.
        let changed = changes.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let now = read();
        if now != sent {
            send(now.clone());
            sent = now;
            sent_at = Some(tokio::time::Instant::now());
        }
        if stop.is_cancelled() {
            return;
        }
        tokio::select! {
            () = changed => {}
            () = stop.cancelled() => continue,
        }
        if let Some(at) = sent_at.filter(|at| at.elapsed() < STATS_EVERY) {
            tokio::select! {
                () = tokio::time::sleep_until(at + STATS_EVERY) => {}
                () = stop.cancelled() => {}
            }
        }
    }
}

#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
async fn one_login(
    config: &Config,
    session_id: &str,
    control: &ControlClient,
    machine_id: &str,
    ipc: &Ipc,
    pull: &Arc<PullDelegate>,
    shutdown: &CancellationToken,
    outbox: Outbox,
    acks: Arc<tokio::sync::Mutex<mpsc::Receiver<Ack>>>,
) -> (Outcome, Option<crate::control::envelope::ExitFlags>) {
    let (ev_tx, mut ev_rx) = mpsc::channel(1024);
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let (bridge_tx, bridge_rx) = mpsc::channel(1024);
    // The driver stops on its own token: on shutdown we first ask the control plane.
    let driver_stop = CancellationToken::new();
    let pacer = Arc::new(Pacer::new(&config.pacing));
    let fetcher = match super::fetch::Fetcher::new(&config.media) {
        Ok(f) => Arc::new(f),
        Err(e) => {
            return (
                Outcome::LoginFailed {
                    detail: format!("media fetcher: {e}"),
                },
                None,
            );
        }
    };
    let spec = SessionSpec {
        session_id: session_id.to_owned(),
        logout_on_shutdown: false,
        pacer: pacer.clone(),
    };
    let driver = {
        let config = config.clone();
        let stop = driver_stop.clone();
        tokio::spawn(async move { driver::run(&config, spec, ev_tx, cmd_rx, stop).await })
    };
    let settings = BridgeSettings {
        qr_session_id: session_id.to_owned(),
        machine_id: machine_id.to_owned(),
        poll_interval: config.control.poll_interval,
        pull: Some(pull.clone()),
        contact_batch: Duration::from_secs(10),
        pacer,
        fetcher,
    };
    let bridge_cancel = CancellationToken::new();
    let bridge = Bridge::new(
        control.clone(),
        outbox,
        settings,
        cmd_tx.clone(),
        ipc.clone(),
        bridge_cancel.clone(),
    );
    let bridge_task = tokio::spawn(bridge.run(bridge_rx, acks));
    let mut online: Option<String> = None;
    let mut draining = false;
    let qr_path = qr_file(&config.agent.state_dir, session_id);
    loop {
        tokio::select! {
            ev = ev_rx.recv() => {
                let Some(ev) = ev else { break };
                if let WorkerEvent::State(s) = &ev {
                    let (wxid, nickname) = match s {
                        SessionState::Online { wxid, nickname } => (Some(wxid.clone()), Some(nickname.clone())),
                        _ => (None, None),
                    };
                    if wxid.is_some() {
                        online = wxid.clone();
                        let _ = std::fs::remove_file(&qr_path);
                    }
                    ipc(WorkerMessage::State { state: s.name().to_owned(), wxid, nickname });
                }
                match &ev {
                    // Chat messages only: a status notify is the phone's bookkeeping.
                    WorkerEvent::Message { message, .. }
                        if !matches!(message.kind, MessageKind::StatusNotify { .. }) =>
                    {
                        crate::stats::message(message.outgoing)
                    }
                    WorkerEvent::Qr { png, .. } => {
                        crate::stats::qr_refresh();
                        if let Err(e) = write_qr(&qr_path, png) {
                            tracing::warn!(error = %e, "could not keep the QR code for the admin page");
                        }
                    }
                    _ => {}
                }
                if bridge_tx.send(ev).await.is_err() {
                    tracing::error!("the control-plane bridge stopped early");
                }
            }
            () = shutdown.cancelled(), if !draining => {
                draining = true;
                let exit_wechat = match &online {
                    Some(wxid) => drain_logout(control, wxid, machine_id).await,
                    None => false,
                };
                if exit_wechat {
                    let _ = cmd_tx.send(WorkerCommand::Logout { reason: LogoutReason::Shutdown }).await;
                } else {
                    driver_stop.cancel();
                }
            }
        }
    }
    drop(bridge_tx);
    let outcome = match driver.await {
        Ok(o) => o,
        Err(e) => Outcome::LoginFailed {
            detail: format!("session task failed: {e}"),
        },
    };
    let end = tokio::select! {
        r = bridge_task => r.unwrap_or_default(),
        () = tokio::time::sleep(Duration::from_secs(60)) => {
            tracing::warn!("control plane did not take the last reports in time");
            bridge_cancel.cancel();
            Default::default()
        }
    };
    drop(cmd_tx);
    (outcome, end.exit_flags)
}

/// Tells the control plane the worker is stopping (`logout`, reason `shutdown`) while the
/// account is still logged in; returns whether it asked for the WeChat session to end too
/// (`exit_wechat`). Bounded: a drain must not hang on an unreachable server.
async fn drain_logout(control: &ControlClient, wxid: &str, machine_id: &str) -> bool {
    let data = LogoutData {
        client_version: env!("CARGO_PKG_VERSION").to_owned(),
        machine_id: machine_id.to_owned(),
        reason: LogoutReason::Shutdown.as_str().to_owned(),
        retcode: None,
    };
    match tokio::time::timeout(Duration::from_secs(10), control.logout(wxid, &data)).await {
        Ok(Ok(flags)) => flags.exit_wechat,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not tell the control plane about the shutdown");
            false
        }
        Err(_) => {
            tracing::warn!("the control plane did not answer the shutdown logout in time");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::sync::Notify;

    fn stats(messages_in: u64) -> WorkerStats {
        WorkerStats {
            messages_in,
            ..WorkerStats::default()
        }
    }

    /// Lets the spawned task run until it waits again (time is paused: nothing else moves).
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn stats_go_out_once_per_burst_and_never_while_idle() {
        let changes: &'static Notify = Box::leak(Box::new(Notify::new()));
        let value = Arc::new(Mutex::new(stats(1)));
        let reads = Arc::new(Mutex::new(0u32));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let task = {
            let (value, reads, lines, stop) =
                (value.clone(), reads.clone(), lines.clone(), stop.clone());
            tokio::spawn(async move {
                coalesce_stats(
                    changes,
                    || {
                        *reads.lock().unwrap() += 1;
                        value.lock().unwrap().clone()
                    },
                    |s| lines.lock().unwrap().push(s),
                    &stop,
                )
                .await
            })
        };
        settle().await;
        assert_eq!(*lines.lock().unwrap(), vec![stats(1)], "the first counters");

        // An hour of nothing: not one look at the counters (no timer).
        tokio::time::advance(Duration::from_secs(3600)).await;
        settle().await;
        assert_eq!(*reads.lock().unwrap(), 1);
        assert_eq!(lines.lock().unwrap().len(), 1);

        // A change after a quiet spell goes out at once.
        *value.lock().unwrap() = stats(2);
        changes.notify_waiters();
        settle().await;
        assert_eq!(lines.lock().unwrap().last(), Some(&stats(2)));
        assert_eq!(lines.lock().unwrap().len(), 2);

        // Changes right after it wait out STATS_EVERY since that line, and make one line.
        tokio::time::advance(STATS_EVERY / 4).await;
        *value.lock().unwrap() = stats(3);
        changes.notify_waiters();
        settle().await;
        tokio::time::advance(STATS_EVERY / 4).await;
        *value.lock().unwrap() = stats(4);
        changes.notify_waiters();
        settle().await;
        assert_eq!(lines.lock().unwrap().len(), 2, "coalescing: nothing yet");
        tokio::time::advance(STATS_EVERY / 2 - Duration::from_millis(1)).await;
        settle().await;
        assert_eq!(lines.lock().unwrap().len(), 2, "coalescing: nothing yet");
        tokio::time::advance(Duration::from_millis(1)).await;
        settle().await;
        assert_eq!(lines.lock().unwrap().last(), Some(&stats(4)));
        assert_eq!(lines.lock().unwrap().len(), 3);

        // A signal without a change sends nothing.
        tokio::time::advance(STATS_EVERY * 2).await;
        changes.notify_waiters();
        settle().await;
        assert_eq!(lines.lock().unwrap().len(), 3);

        // Stopping sends what changed since, at once.
        *value.lock().unwrap() = stats(5);
        stop.cancel();
        task.await.unwrap();
        assert_eq!(lines.lock().unwrap().last(), Some(&stats(5)));
        assert_eq!(lines.lock().unwrap().len(), 4);
    }
}
