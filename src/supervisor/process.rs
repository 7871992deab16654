//! Starting and stopping one worker process. Each worker runs in its own process group so a
//! stop reaches everything it started; on Linux it also gets PR_SET_PDEATHSIG so it dies with
//! the supervisor, and its stdin is a pipe whose EOF is the portable version of that signal.
//! Stop = SIGTERM to the group → grace → SIGKILL → wait: the child is always reaped.
//! On Windows each worker goes into one kill-on-close job object held by the supervisor (when
//! the supervisor dies, Windows kills them all), and the caller closes the worker's stdin
//! instead of sending SIGTERM.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::process::{Child, Command};

/// Makes `cmd` a child we own: killed if its handle is dropped without a stop (last resort), in
/// its own process group (a signal to the group reaches all it started, and a terminal's
/// Ctrl-C reaches only us), and on Linux sent SIGTERM when we die (PR_SET_PDEATHSIG).
pub fn isolate(cmd: &mut Command) {
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
}

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
    // Only the supervisor talks to systemd (`NotifyAccess=main`); a worker must not try.
    for var in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    isolate(&mut cmd);
    let child = cmd.spawn()?;
    #[cfg(windows)]
    if let Err(e) = job::assign(&child) {
        // The worker still runs; it only would not die with a crashed supervisor.
        tracing::warn!(pid = child.id(), error = %e, "could not put the worker into the job object");
    }
    Ok(child)
}

/// The job object every worker joins: created once, never closed, so its handle closes (and
/// Windows kills the workers) exactly when the supervisor process ends, however it ends.
#[cfg(windows)]
mod job {
    use std::sync::OnceLock;
    use windows_sys::Win32::Foundation::HANDLE;
    use windows_sys::Win32::System::JobObjects::{
        AssignProcessToJobObject, CreateJobObjectW, JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
        JOBOBJECT_EXTENDED_LIMIT_INFORMATION, JobObjectExtendedLimitInformation,
        SetInformationJobObject,
    };

    struct Job(HANDLE);
    // SAFETY: a job handle is a kernel handle, usable from any thread.
    unsafe impl Send for Job {}
    // SAFETY: as above; the handle is only read after creation.
    unsafe impl Sync for Job {}

    static JOB: OnceLock<Result<Job, String>> = OnceLock::new();

    fn create() -> Result<Job, String> {
        // SAFETY: plain Win32 calls with valid (null = default) arguments and a zeroed C struct.
        unsafe {
            let handle = CreateJobObjectW(std::ptr::null(), std::ptr::null());
            if handle.is_null() {
                return Err(std::io::Error::last_os_error().to_string());
            }
            let mut info: JOBOBJECT_EXTENDED_LIMIT_INFORMATION = std::mem::zeroed();
            info.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
            let ok = SetInformationJobObject(
                handle,
                JobObjectExtendedLimitInformation,
                std::ptr::from_ref(&info).cast(),
                std::mem::size_of::<JOBOBJECT_EXTENDED_LIMIT_INFORMATION>() as u32,
            );
            if ok == 0 {
                return Err(std::io::Error::last_os_error().to_string());
            }
            Ok(Job(handle))
        }
    }

    pub fn assign(child: &tokio::process::Child) -> std::io::Result<()> {
        let job = JOB
            .get_or_init(create)
            .as_ref()
            .map_err(|e| std::io::Error::other(format!("no job object: {e}")))?;
        // None: the child already exited, nothing to contain.
        let Some(process) = child.raw_handle() else {
            return Ok(());
        };
        // SAFETY: both handles are valid: ours for the process lifetime, the child's while
        // `child` is borrowed.
        if unsafe { AssignProcessToJobObject(job.0, process as HANDLE) } == 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
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
/// then wait. Returns only once the child is reaped. (Windows: the caller has closed the
/// worker's stdin, which is its stop request; the kill after the grace is TerminateProcess.)
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
        // No SIGTERM here: a graceful stop is the stdin EOF the caller sends.
        if let Signal::Kill = sig {
            let _ = child.start_kill();
        }
    }
}
