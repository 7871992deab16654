//! `wxagent worker --session ID`: one session as a child of the supervisor. Events go to the
//! control plane through the [`Bridge`]; what the supervisor needs goes to stdout as
//! [`WorkerMessage`] lines; stdin EOF (the supervisor is gone) or SIGTERM drains the session:
//! the control plane hears `logout` with reason `shutdown`, and the account is logged out of
//! WeChat only if it answers `exit_wechat`.

use super::bridge::{Bridge, BridgeSettings, Ipc, Outbox};
use super::driver::{self, SessionSpec};
use super::events::{WorkerCommand, WorkerEvent};
use super::ipc::WorkerMessage;
use super::pacing::Pacer;
use super::state::{LogoutReason, Outcome, SessionState};
use crate::config::Config;
use crate::control::ControlClient;
use crate::control::delivery;
use crate::control::envelope::Ack;
use crate::control::reports::LogoutData;
use crate::control::spool::Spool;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Writes one pipe message to stdout; a closed pipe is ignored (stdin EOF ends us anyway).
pub fn emit_line(m: WorkerMessage) {
    let mut out = std::io::stdout().lock();
    // The supervisor reads these lines; if it is gone, stdin EOF stops us anyway.
    let _ = writeln!(out, "{}", m.to_line());
    let _ = out.flush();
}

pub async fn run(config: Config, session_id: String, shutdown: CancellationToken) -> Outcome {
    let ipc: Ipc = Arc::new(emit_line);
    // Parent death: stdin closes.
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let mut stdin = tokio::io::stdin();
            while let Ok(n) = stdin.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
            tracing::info!("stdin closed: the supervisor is gone; draining");
            shutdown.cancel();
        });
    }
    // So a later supervisor can find (and stop) us if our own supervisor died unexpectedly.
    let dir = super::persist::session_dir(&config.agent.state_dir, &session_id);
    let pid_file = dir.join("worker.pid");
    if let Err(e) = super::persist::ensure_dir(&dir)
        .and_then(|()| std::fs::write(&pid_file, std::process::id().to_string()))
    {
        tracing::warn!(error = %e, "could not write the worker pid file");
    }
    let outcome = serve(&config, &session_id, &ipc, &shutdown).await;
    let _ = std::fs::remove_file(&pid_file);
    outcome
}

async fn serve(
    config: &Config,
    session_id: &str,
    ipc: &Ipc,
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
    let (delivery, acks) = delivery::start(
        spool.clone(),
        control.clone(),
        wake.clone(),
        delivery_stop.clone(),
    );
    let delivery = Arc::new(delivery);
    let acks = Arc::new(tokio::sync::Mutex::new(acks));
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
    outcome
}

#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
async fn one_login(
    config: &Config,
    session_id: &str,
    control: &ControlClient,
    machine_id: &str,
    ipc: &Ipc,
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
                    }
                    ipc(WorkerMessage::State { state: s.name().to_owned(), wxid, nickname });
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
