//! The one shutdown path (DESIGN §3.5): SIGINT and SIGTERM (Ctrl-C / Ctrl-Break on Windows)
//! cancel one root token; a second one of them escalates to an immediate exit.
//!
//! SIGHUP ("whoever controlled us is gone") also cancels the root token, but never escalates.
//! It is the parent-death signal of every process wxagent starts ([`PARENT_DEATH_SIGNAL`]), and
//! Linux may send that signal more than once: when a multi-threaded parent dies, the child is
//! handed from each dying thread to the next and signalled at every hand-over. A repeated
//! parent-death SIGTERM used to count as "signal again to force" and cut a worker's drain short
//! (no `logout`, reports left for the next start).

use tokio_util::sync::CancellationToken;

/// Exit code used when a second signal cuts a graceful shutdown short (128 + SIGINT).
pub const ESCALATED_EXIT: i32 = 130;

/// The signal a child of ours gets when its parent dies (`PR_SET_PDEATHSIG`): a hang-up,
/// handled as a graceful stop that repeats cannot escalate.
#[cfg(target_os = "linux")]
pub const PARENT_DEATH_SIGNAL: libc::c_int = libc::SIGHUP;

/// What a signal asks of us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    /// SIGINT / SIGTERM (Ctrl-C, a service stop, an operator): stop; a second one forces.
    Stop,
    /// SIGHUP: our parent or terminal is gone; stop, however often it comes.
    HangUp,
}

/// Spawns the signal watcher on the current runtime.
pub fn install(root: CancellationToken) {
    tokio::spawn(async move {
        // Listeners are made once, so no signal falls between two of them.
        let mut signals = match Signals::new() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "cannot listen for signals; only an explicit stop will end this process"
                );
                return;
            }
        };
        let mut stops = 0u32;
        loop {
            let asked = signals.next().await;
            if asked == Asked::Stop {
                stops += 1;
            }
            if root.is_cancelled() {
                if stops >= 2 {
                    tracing::warn!("second signal: exiting now");
                    std::process::exit(ESCALATED_EXIT);
                }
                tracing::debug!(?asked, "signal while already stopping");
                continue;
            }
            match asked {
                Asked::Stop => {
                    tracing::info!("shutdown requested; finishing (signal again to force)");
                }
                Asked::HangUp => {
                    tracing::info!("hang-up: the parent process or terminal is gone; finishing");
                }
            }
            root.cancel();
        }
    });
}

#[cfg(unix)]
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn next(&mut self) -> Asked {
        tokio::select! {
            _ = self.term.recv() => Asked::Stop,
            _ = self.int.recv() => Asked::Stop,
            _ = self.hup.recv() => Asked::HangUp,
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn new() -> std::io::Result<Signals> {
        Ok(Signals)
    }

    async fn next(&mut self) -> Asked {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(
                error = %e,
                "cannot listen for Ctrl-C; only an explicit stop will end this process"
            );
            std::future::pending::<()>().await;
        }
        Asked::Stop
    }
}
