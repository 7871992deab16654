//! The one shutdown path (DESIGN §3.5): SIGINT and SIGTERM (Ctrl-C / Ctrl-Break on Windows)
//! cancel one root token; a second signal escalates to an immediate exit.

use tokio_util::sync::CancellationToken;

/// Exit code used when a second signal cuts a graceful shutdown short (128 + SIGINT).
pub const ESCALATED_EXIT: i32 = 130;

/// Spawns the signal watcher on the current runtime.
pub fn install(root: CancellationToken) {
    tokio::spawn(async move {
        if wait_for_signal().await.is_err() {
            tracing::warn!(
                "cannot listen for signals; only an explicit stop will end this process"
            );
            return;
        }
        tracing::info!("shutdown requested; finishing (signal again to force)");
        root.cancel();
        if wait_for_signal().await.is_ok() {
            tracing::warn!("second signal: exiting now");
            std::process::exit(ESCALATED_EXIT);
        }
    });
}

#[cfg(unix)]
async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

#[cfg(not(unix))]
async fn wait_for_signal() -> std::io::Result<()> {
    tokio::signal::ctrl_c().await
}
