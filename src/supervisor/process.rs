//! Starting and stopping one worker process. Each worker runs in its own process group so a
//! stop reaches everything it started; on Linux it also gets PR_SET_PDEATHSIG (SIGHUP, see
//! [`crate::shutdown`]) so it drains when the supervisor dies, and its stdin is a pipe whose EOF is the portable version of that signal.
//! Stop = SIGTERM to the group → grace → SIGKILL → wait: the child is always reaped.
//! On Windows each worker goes into one kill-on-close job object held by the supervisor (when
//! the supervisor dies, Windows kills them all), and the caller closes the worker's stdin
//! instead of sending SIGTERM.

#[cfg(target_os = "linux")]
use crate::shutdown::PARENT_DEATH_SIGNAL;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::process::{Child, Command};

/// The subcommand of the fork-server template (`wxagent fork-server`).
pub const FORK_SERVER_COMMAND: &str = "fork-server";

/// Whether `pid` is a fork-server template (its command line is `wxagent fork-server …`), not a
/// worker: the template is the supervisor's child too. Reads `/proc`; false where there is none.
pub fn is_fork_server(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .nth(1)
        .is_some_and(|a| a == FORK_SERVER_COMMAND.as_bytes())
}

/// Environment only the supervisor may use (`NotifyAccess=main`): workers must not see it.
pub const SUPERVISOR_ONLY_ENV: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

/// Sets up a worker's (or the fork-server template's) environment on `cmd`: without what only
/// the supervisor may use, and with the allocator tuning (`GLIBC_TUNABLES`,
/// [`crate::worker::memory::WORKER_TUNABLE`]) that glibc reads only when a process starts.
pub fn worker_environment(cmd: &mut std::process::Command) {
    // Only the supervisor talks to systemd (`NotifyAccess=main`); a worker must not try.
    for var in SUPERVISOR_ONLY_ENV {
        cmd.env_remove(var);
    }
    let current = std::env::var_os(TUNABLES_ENV);
    if let Some(v) = crate::worker::memory::worker_tunables(current.as_deref()) {
        cmd.env(TUNABLES_ENV, v);
    }
}

const TUNABLES_ENV: &str = "GLIBC_TUNABLES";

/// The supervisor's end of a worker's stdin (kept open: its EOF is the worker's stop sign).
pub type WorkerInput = Box<dyn AsyncWrite + Send + Unpin>;
/// The supervisor's end of a worker's stdout or stderr.
pub type WorkerOutput = Box<dyn AsyncRead + Send + Unpin>;

/// A running worker, however it was started.
pub struct WorkerProcess {
    kind: Kind,
    pub stdin: Option<WorkerInput>,
    pub stdout: Option<WorkerOutput>,
    pub stderr: Option<WorkerOutput>,
}

enum Kind {
    /// `wxagent worker …` executed afresh (killed on drop).
    Executed(Child),
    /// Forked from the fork-server template (killed and reaped on drop).
    #[cfg(target_os = "linux")]
    Forked(super::forkserver::Forked),
}

impl WorkerProcess {
    fn executed(mut child: Child) -> WorkerProcess {
        let stdin = child.stdin.take().map(|s| Box::new(s) as WorkerInput);
        let stdout = child.stdout.take().map(|s| Box::new(s) as WorkerOutput);
        let stderr = child.stderr.take().map(|s| Box::new(s) as WorkerOutput);
        WorkerProcess {
            kind: Kind::Executed(child),
            stdin,
            stdout,
            stderr,
        }
    }

    /// The pid, until the process has been reaped.
    pub fn id(&self) -> Option<u32> {
        match &self.kind {
            Kind::Executed(c) => c.id(),
            #[cfg(target_os = "linux")]
            Kind::Forked(f) => f.id(),
        }
    }

    /// Whether it came from the fork server.
    pub fn forked(&self) -> bool {
        !matches!(self.kind, Kind::Executed(_))
    }

    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        match &mut self.kind {
            Kind::Executed(c) => c.try_wait(),
            #[cfg(target_os = "linux")]
            Kind::Forked(f) => f.try_wait(),
        }
    }

    /// Waits for the exit and reaps.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        match &mut self.kind {
            Kind::Executed(c) => c.wait().await,
            #[cfg(target_os = "linux")]
            Kind::Forked(f) => f.wait().await,
        }
    }

    /// SIGKILL (TerminateProcess on Windows) to the process itself.
    pub fn start_kill(&mut self) -> std::io::Result<()> {
        match &mut self.kind {
            Kind::Executed(c) => c.start_kill(),
            #[cfg(target_os = "linux")]
            Kind::Forked(f) => f.start_kill(),
        }
    }
}

/// Starts workers: forked from the template when `[agent] fork_server` is on (Linux), else, or
/// whenever the template fails, by executing the binary.
pub struct Launcher {
    exe: PathBuf,
    config_path: Option<PathBuf>,
    #[cfg(target_os = "linux")]
    fork: Option<ForkThread>,
}

/// The thread that owns the fork-server template. One long-lived thread starts (and restarts)
/// the template and forwards every request, because the kernel's parent-death signal follows
/// the *thread* that created a process: the template and every worker forked from it
/// (`CLONE_PARENT`) get it when this thread ends, which is when the launcher is dropped at the
/// supervisor's exit — not when some pool thread retires.
#[cfg(target_os = "linux")]
struct ForkThread {
    requests: std::sync::Mutex<std::sync::mpsc::Sender<ForkRequest>>,
    template_pid: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

/// How often the fork thread looks whether the template is still alive.
#[cfg(target_os = "linux")]
const TEMPLATE_CHECK: Duration = Duration::from_secs(2);

#[cfg(target_os = "linux")]
type ForkReply = std::io::Result<(u32, [std::os::fd::OwnedFd; 3])>;

#[cfg(target_os = "linux")]
struct ForkRequest {
    session_id: String,
    reply: tokio::sync::oneshot::Sender<ForkReply>,
}

#[cfg(target_os = "linux")]
impl ForkThread {
    fn start(exe: PathBuf, config_path: Option<PathBuf>) -> std::io::Result<ForkThread> {
        let (tx, rx) = std::sync::mpsc::channel::<ForkRequest>();
        let template_pid = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let pid_slot = template_pid.clone();
        std::thread::Builder::new()
            .name("fork-server".into())
            .spawn(move || {
                // Started before the first request: a worker then only waits for the fork.
                let mut server = match super::forkserver::ForkServer::start(&exe, config_path.as_deref()) {
                    Ok(t) => {
                        tracing::info!(pid = t.pid(), "fork-server template started");
                        pid_slot.store(t.pid(), std::sync::atomic::Ordering::Relaxed);
                        Some(t)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot start the fork-server template yet; the first worker tries again");
                        None
                    }
                };
                loop {
                    let req = match rx.recv_timeout(TEMPLATE_CHECK) {
                        Ok(req) => req,
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                            // A template that died between requests is reaped now, not left a
                            // zombie until the next worker starts.
                            if let Some(status) = server.as_mut().and_then(|t| t.exited()) {
                                tracing::warn!(%status, "the fork-server template exited; the next worker starts a new one");
                                server = None;
                                pid_slot.store(0, std::sync::atomic::Ordering::Relaxed);
                            }
                            continue;
                        }
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                    };
                    let reply = fork_one(&mut server, &exe, config_path.as_deref(), &req.session_id);
                    let pid = server.as_ref().map_or(0, super::forkserver::ForkServer::pid);
                    pid_slot.store(pid, std::sync::atomic::Ordering::Relaxed);
                    // The requester gave up (its task was cancelled): nobody would watch this
                    // child, so it is killed and reaped here.
                    if let Err(Ok((pid, _))) = req.reply.send(reply) {
                        // SAFETY: kill and a blocking waitpid on our own child.
                        unsafe {
                            libc::kill(pid as libc::pid_t, libc::SIGKILL);
                            libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0);
                        }
                    }
                }
                // Dropping the server kills and reaps the template.
            })?;
        Ok(ForkThread {
            requests: std::sync::Mutex::new(tx),
            template_pid,
        })
    }
}

/// One request on the fork thread: (re)start the template if needed, then ask it. A template
/// that failed once is not trusted again: the next request makes a new one.
#[cfg(target_os = "linux")]
fn fork_one(
    server: &mut Option<super::forkserver::ForkServer>,
    exe: &Path,
    config_path: Option<&Path>,
    session_id: &str,
) -> ForkReply {
    use super::forkserver::{ForkServer, pipe};
    if server.is_none() {
        let started = ForkServer::start(exe, config_path)?;
        tracing::info!(pid = started.pid(), "fork-server template started");
        *server = Some(started);
    }
    let (in_r, in_w) = pipe()?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let running = server.as_mut().expect("set just above");
    match running.fork_worker(session_id, [&in_r, &out_w, &err_w]) {
        Ok(pid) => Ok((pid, [in_w, out_r, err_r])),
        Err(e) => {
            *server = None;
            Err(e)
        }
    }
}

impl std::fmt::Debug for Launcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launcher")
            .field("exe", &self.exe)
            .field("config_path", &self.config_path)
            .field("fork_server_pid", &self.fork_server_pid())
            .finish()
    }
}

impl Launcher {
    /// With `fork_server` (Linux), a thread for the template is started here, and it starts
    /// the template at once.
    pub fn new(exe: PathBuf, config_path: Option<PathBuf>, fork_server: bool) -> Launcher {
        #[cfg(target_os = "linux")]
        let fork = if fork_server {
            match ForkThread::start(exe.clone(), config_path.clone()) {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start the fork-server thread; workers will be executed");
                    None
                }
            }
        } else {
            None
        };
        #[cfg(not(target_os = "linux"))]
        let _ = fork_server;
        Launcher {
            exe,
            config_path,
            #[cfg(target_os = "linux")]
            fork,
        }
    }

    /// The fork-server template's pid, while one runs.
    pub fn fork_server_pid(&self) -> Option<u32> {
        #[cfg(target_os = "linux")]
        {
            let pid = self
                .fork
                .as_ref()?
                .template_pid
                .load(std::sync::atomic::Ordering::Relaxed);
            (pid != 0).then_some(pid)
        }
        #[cfg(not(target_os = "linux"))]
        None
    }

    /// Starts the worker for `session_id`.
    pub async fn start(&self, session_id: &str) -> std::io::Result<WorkerProcess> {
        #[cfg(target_os = "linux")]
        if let Some(fork) = &self.fork {
            match Self::fork_worker(fork, session_id).await {
                Ok(w) => return Ok(w),
                Err(e) => tracing::warn!(
                    error = %e,
                    "could not fork the worker from the template; executing it instead"
                ),
            }
        }
        spawn_worker(&self.exe, session_id, self.config_path.as_deref())
            .map(WorkerProcess::executed)
    }

    #[cfg(target_os = "linux")]
    async fn fork_worker(fork: &ForkThread, session_id: &str) -> std::io::Result<WorkerProcess> {
        use super::forkserver::Forked;
        use tokio::net::unix::pipe as tpipe;
        let (reply, answer) = tokio::sync::oneshot::channel();
        fork.requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .send(ForkRequest {
                session_id: session_id.to_owned(),
                reply,
            })
            .map_err(|_| std::io::Error::other("the fork-server thread is gone"))?;
        let (pid, [stdin, stdout, stderr]) = answer
            .await
            .map_err(|_| std::io::Error::other("the fork-server thread dropped the request"))??;
        let forked = match Forked::adopt(pid) {
            Ok(f) => f,
            Err(e) => {
                // Cannot watch it: do not leave it running or unreaped.
                // SAFETY: kill and a blocking waitpid on our own child.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                    libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0);
                }
                return Err(e);
            }
        };
        Ok(WorkerProcess {
            kind: Kind::Forked(forked),
            stdin: Some(Box::new(tpipe::Sender::from_owned_fd(stdin)?)),
            stdout: Some(Box::new(tpipe::Receiver::from_owned_fd(stdout)?)),
            stderr: Some(Box::new(tpipe::Receiver::from_owned_fd(stderr)?)),
        })
    }
}

/// Makes `cmd` a child we own: killed if its handle is dropped without a stop (last resort), in
/// its own process group (a signal to the group reaches all it started, and a terminal's
/// Ctrl-C reaches only us), and on Linux sent [`PARENT_DEATH_SIGNAL`] when we die
/// (PR_SET_PDEATHSIG): a hang-up, which stops it gracefully however often Linux repeats it.
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
            if libc::prctl(libc::PR_SET_PDEATHSIG, PARENT_DEATH_SIGNAL) != 0 {
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
    worker_environment(cmd.as_std_mut());
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
pub async fn stop(child: &mut WorkerProcess, grace: Duration) -> std::io::Result<Stopped> {
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
pub fn signal_group(child: &mut WorkerProcess, sig: Signal) {
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
