//! Starting and stopping one worker process. Each worker runs in its own process group so a
//! stop reaches everything it started; on Linux it also gets PR_SET_PDEATHSIG so it dies with
//! the supervisor, and its stdin is a pipe whose EOF is the portable version of that signal.
//! Stop = SIGTERM to the group → grace → SIGKILL → wait: the child is always reaped.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::process::{Child, Command};

/// Spawns `wxagent worker --session ID [--config FILE]` from the running executable.
pub fn spawn_worker(
    exe: &Path,
    session_id: &str,
    config_path: Option<&Path>,
) -> std::io::Result<Child> {
    let mut cmd = Command::new(exe);
    cmd.arg("worker").arg("--session").arg(session_id);
    if let Some(p) = config_path {
        cmd.arg("--config").arg(p);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Last resort: if the owning task is dropped without a stop, the child is still killed.
    cmd.kill_on_drop(true);
    #[cfg(unix)]
    {
        cmd.process_group(0);
    }
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe and touches only the calling (child) process.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// How a stop went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Exited within the grace period after SIGTERM.
    Gracefully(ExitStatus),
    /// Needed SIGKILL.
    Killed(ExitStatus),
}

/// Stops a worker: SIGTERM to its process group, wait up to `grace`, then SIGKILL to the group,
/// then wait. Returns only once the child is reaped.
pub async fn stop(child: &mut Child, grace: Duration) -> std::io::Result<Stopped> {
    if let Some(status) = child.try_wait()? {
        return Ok(Stopped::Gracefully(status));
    }
    signal_group(child, Signal::Term);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => Ok(Stopped::Gracefully(status?)),
        Err(_) => {
            tracing::warn!(
                pid = child.id(),
                grace_s = grace.as_secs(),
                "worker ignored SIGTERM; killing it"
            );
            signal_group(child, Signal::Kill);
            // `start_kill` covers platforms without process groups and a child that left its group.
            let _ = child.start_kill();
            Ok(Stopped::Killed(child.wait().await?))
        }
    }
}

#[derive(Clone, Copy)]
pub enum Signal {
    Term,
    Kill,
}

/// Sends a signal to the child's process group (Unix) or kills the child (elsewhere).
pub fn signal_group(child: &mut Child, sig: Signal) {
    #[cfg(unix)]
    {
        if let Some(pid) = child.id() {
            let signo = match sig {
                Signal::Term => libc::SIGTERM,
                Signal::Kill => libc::SIGKILL,
            };
            // SAFETY: kill(2) with a negative pid addresses the process group we created for it.
            let rc = unsafe { libc::kill(-(pid as i32), signo) };
            if rc != 0 {
                tracing::debug!(pid, error = %std::io::Error::last_os_error(), "signal to worker group failed");
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = sig;
        let _ = child.start_kill();
    }
}
