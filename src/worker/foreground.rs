//! `wxagent --qr_session ID`: one session in the foreground. Shows the QR code (in the terminal
//! when stdout is one, and as a PNG under the state directory), then prints every message as one
//! line. Reads simple commands from stdin (`send <to> <text>`, `logout`, `help`). Ctrl-C logs
//! the account out cleanly.

use super::driver::{self, SessionSpec};
use super::events::{WorkerCommand, WorkerEvent};
use super::pacing::Pacer;
use super::qr;
use super::state::{LogoutReason, Outcome};
use crate::config::Config;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncBufReadExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub async fn run(config: Config, session_id: String, shutdown: CancellationToken) -> Outcome {
    let (ev_tx, mut ev_rx) = mpsc::channel(1024);
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let pacer = Arc::new(Pacer::new(&config.pacing));
    let spec = SessionSpec {
        session_id: session_id.clone(),
        logout_on_shutdown: true,
        pacer: pacer.clone(),
    };
    let session_dir = config.agent.state_dir.join("sessions").join(&session_id);
    let driver = {
        let config = config.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move { driver::run(&config, spec, ev_tx, cmd_rx, shutdown).await })
    };
    // stdin commands; when stdin closes we just stop reading (the session goes on).
    let out = Printer::new();
    let stdin_task = tokio::spawn(read_commands(cmd_tx, out.clone(), pacer));
    let interactive = std::io::stdout().is_terminal();
    while let Some(ev) = ev_rx.recv().await {
        // Printed lines are all a foreground session keeps: safe once shown.
        if let WorkerEvent::Barrier(b) = ev {
            b.release();
            continue;
        }
        show(&out, &ev, interactive, &session_dir);
    }
    stdin_task.abort();
    match driver.await {
        Ok(outcome) => outcome,
        Err(e) => Outcome::LoginFailed {
            detail: format!("session task failed: {e}"),
        },
    }
}

/// Serialised line output to stdout (events and command answers come from two tasks).
#[derive(Clone)]
struct Printer(std::sync::Arc<std::sync::Mutex<()>>);

impl Printer {
    fn new() -> Printer {
        Printer(Default::default())
    }
    fn line(&self, s: &str) {
        let _g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = std::io::stdout().lock();
        // A closed stdout (e.g. piped into `head`) must not kill the session.
        let _ = writeln!(out, "{s}");
        let _ = out.flush();
    }
}

fn show(out: &Printer, ev: &WorkerEvent, interactive: bool, session_dir: &Path) {
    match ev {
        WorkerEvent::State(_) => {}
        WorkerEvent::Barrier(_) => {}
        WorkerEvent::Qr {
            content,
            png,
            refresh,
            ..
        } => {
            if interactive {
                match qr::render_terminal(content) {
                    Ok(t) => out.line(&t),
                    Err(e) => tracing::warn!(error = %e, "could not draw the QR code"),
                }
            }
            let saved = save_png(session_dir, png);
            let where_ = saved
                .map(|p| format!(", png: {}", p.display()))
                .unwrap_or_default();
            out.line(&format!(
                "qr: {content} (code {refresh}{where_}) — scan it with WeChat on the phone"
            ));
        }
        WorkerEvent::QrExpired { refresh } => out.line(&format!("qr expired: code {refresh}")),
        WorkerEvent::ResumeStep { step, ok, detail } => out.line(&format!(
            "resume: {step} {}: {detail}",
            if *ok { "ok" } else { "failed" }
        )),
        WorkerEvent::PushLogin { .. } => out.line("push login: confirm the login on the phone"),
        WorkerEvent::Scanned => out.line("scanned: confirm the login on the phone"),
        WorkerEvent::ScanCancelled => {
            out.line("scan cancelled on the phone; the code can be scanned again")
        }
        WorkerEvent::Online { account, contacts } => out.line(&format!(
            "online: {} (wxid {}), {} friends, {} groups, {} official accounts",
            account.nickname,
            account.wxid,
            contacts.friends().count(),
            contacts.groups().count(),
            contacts.officials().count()
        )),
        WorkerEvent::Message { line, .. } => out.line(&format!("msg: {line}")),
        WorkerEvent::ContactAdded(c) => out.line(&format!(
            "contact added: {} ({})",
            c.display_name(),
            c.user_name
        )),
        WorkerEvent::ContactChanged(c) => out.line(&format!(
            "contact changed: {} ({})",
            c.display_name(),
            c.user_name
        )),
        WorkerEvent::MembersChanged {
            room,
            added,
            removed,
            ..
        } => out.line(&format!(
            "members changed: {room}: +{} -{}",
            added.len(),
            removed.len()
        )),
        WorkerEvent::ContactRemoved { user_name } => {
            out.line(&format!("contact removed: {user_name}"))
        }
        WorkerEvent::ContactsReloaded(book) => {
            out.line(&format!("contacts reloaded: {} entries", book.len()))
        }
        WorkerEvent::Ended(outcome) => out.line(&format!(
            "ended: {outcome} [exit {}]",
            outcome.exit().code()
        )),
    }
}

/// Writes the QR PNG as `<state_dir>/sessions/<id>/qr.png` (directory 0700). A failure only
/// costs the file; the QR text is printed anyway.
fn save_png(dir: &Path, png: &[u8]) -> Option<PathBuf> {
    if png.is_empty() {
        return None;
    }
    let path = dir.join("qr.png");
    let r = (|| -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let tmp = dir.join("qr.png.tmp");
        std::fs::write(&tmp, png)?;
        std::fs::rename(&tmp, &path)
    })();
    match r {
        Ok(()) => Some(path),
        Err(e) => {
            tracing::warn!(error = %e, dir = %dir.display(), "could not save the QR image");
            None
        }
    }
}

const HELP: &str = "commands: send <to> <text> | logout | help   (<to>: UserName, remark, nickname or alias; quote names with spaces)";

async fn read_commands(commands: mpsc::Sender<WorkerCommand>, out: Printer, pacer: Arc<Pacer>) {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match parse_command(line) {
            Ok(Parsed::Help) => out.line(HELP),
            Ok(Parsed::Logout) => {
                let _ = commands
                    .send(WorkerCommand::Logout {
                        reason: LogoutReason::Shutdown,
                    })
                    .await;
            }
            Ok(Parsed::Send { to, text }) => {
                if let Err(e) = pacer.acquire().await {
                    out.line(&format!("error: send to {to}: {e}"));
                    continue;
                }
                let (tx, rx) = oneshot::channel();
                if commands
                    .send(WorkerCommand::SendText {
                        to: to.clone(),
                        text,
                        mentions: Vec::new(),
                        style: Default::default(),
                        reply: tx,
                    })
                    .await
                    .is_err()
                {
                    out.line("error: the session has ended");
                    return;
                }
                match rx.await {
                    Ok(Ok(r)) => out.line(&format!("sent: {} to {}", r.msg_id, r.to)),
                    Ok(Err(e)) => out.line(&format!("error: send to {to}: {e}")),
                    Err(_) => out.line("error: the session ended before the send"),
                }
            }
            Err(e) => out.line(&format!("error: {e}; {HELP}")),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    Send { to: String, text: String },
    Logout,
    Help,
}

fn parse_command(line: &str) -> Result<Parsed, String> {
    let (verb, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    match verb {
        "help" => Ok(Parsed::Help),
        "logout" => Ok(Parsed::Logout),
        "send" => {
            let rest = rest.trim_start();
            let (to, text) = if let Some(q) = rest.strip_prefix('"') {
                let (to, text) = q.split_once('"').ok_or("unclosed quote in the target")?;
                (to.to_owned(), text.trim_start().to_owned())
            } else {
                let (to, text) = rest
                    .split_once(char::is_whitespace)
                    .ok_or("send needs a target and a text")?;
                (to.to_owned(), text.trim_start().to_owned())
            };
            if to.is_empty() || text.is_empty() {
                return Err("send needs a target and a text".into());
            }
            Ok(Parsed::Send {
                to,
                text: text.replace("\\n", "\n"),
            })
        }
        other => Err(format!("unknown command {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        assert_eq!(
            parse_command("send Bob hi there").unwrap(),
            Parsed::Send {
                to: "Bob".into(),
                text: "hi there".into()
            }
        );
        assert_eq!(
            parse_command("send \"Big Team\" a\\nb").unwrap(),
            Parsed::Send {
                to: "Big Team".into(),
                text: "a\nb".into()
            }
        );
        assert_eq!(parse_command("logout").unwrap(), Parsed::Logout);
        assert!(parse_command("send Bob").is_err());
        assert!(parse_command("send \"Bob hi").is_err());
        assert!(parse_command("dance").unwrap_err().contains("dance"));
    }
}
