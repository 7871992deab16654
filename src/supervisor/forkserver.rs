//! Starting workers by forking a prepared template process instead of executing the binary
//! afresh (Linux; `[agent] fork_server`, on by default).
//!
//! Why: an executed worker pays for its own copy of everything the dynamic loader and the
//! program set up before `main` — above all the ~0.5 MiB of relocated read-only data of a
//! position-independent executable, which every process writes once and so holds privately —
//! plus the parsed system root certificates (~0.15 MiB). A forked worker shares those pages
//! with the template (copy-on-write; they are never written again), which is about a third of
//! an idle worker's memory. The price: the workers share the template's address-space layout
//! (ASLR randomises once per template rather than once per worker) and its root certificates
//! as of its start. `fork_server = false` trades the memory back for a fresh exec per worker.
//!
//! How:
//! - The supervisor starts `wxagent fork-server [--config F] <padding>` once, isolated like a
//!   worker, with its stdin a `SOCK_SEQPACKET` socket. The template tunes the allocator, sets up
//!   logging, builds the TLS configuration, gives its start-up garbage back and waits, single-threaded and
//!   without a runtime (forking a multi-threaded process is unsafe).
//! - To start a worker the supervisor sends the session id with the three ends of the worker's
//!   stdin/stdout/stderr pipes (`SCM_RIGHTS`). The template clones itself with `CLONE_PARENT`,
//!   so the worker is the **supervisor's** child like an executed one: the supervisor reaps it
//!   (through a pidfd), its `PR_SET_PDEATHSIG` follows the supervisor, and the template dying
//!   takes no worker with it. The template answers with the pid.
//! - The child puts the pipes on fds 0–2, takes its own process group and the death signal,
//!   rewrites its command line to `wxagent worker --session ID [--config F]` (the template was
//!   started with padding to make room; `ps`, stale-worker detection and operators see the same
//!   as for an executed worker), and runs the worker's `main`.
//! - Any failure of the template (not started, dead, no answer within 10 s) makes that start
//!   fall back to executing the binary; the next start tries a new template.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest answer or request on the socket (a session id is at most 64 bytes).
const MAX_PACKET: usize = 512;
/// How long the supervisor waits for the template's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Command-line room the template reserves for a worker's: the worker's arguments minus the
/// template's own (`fork-server` is shorter than `worker --session <64-byte id>`).
const TITLE_PADDING: usize = 96;

/// The supervisor's handle on a running template. Dropping it kills the template.
pub struct ForkServer {
    socket: OwnedFd,
    template: std::process::Child,
}

impl ForkServer {
    /// Starts the template from `exe`. The environment the workers will see is the template's:
    /// the caller's, minus what only the supervisor may use, plus the allocator tuning
    /// ([`super::process::worker_environment`]).
    pub fn start(exe: &Path, config_path: Option<&Path>) -> io::Result<ForkServer> {
        let (ours, theirs) = seqpacket_pair()?;
        let mut cmd = std::process::Command::new(exe);
        cmd.arg(super::process::FORK_SERVER_COMMAND);
        if let Some(p) = config_path {
            cmd.arg("--config").arg(p);
        }
        cmd.arg(" ".repeat(TITLE_PADDING));
        super::process::worker_environment(&mut cmd);
        cmd.stdin(std::process::Stdio::from(theirs))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit());
        {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
            // SAFETY: prctl is async-signal-safe and touches only the new process.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let template = cmd.spawn()?;
        set_receive_timeout(&ours, ANSWER_TIMEOUT)?;
        Ok(ForkServer {
            socket: ours,
            template,
        })
    }

    /// The template's pid.
    pub fn pid(&self) -> u32 {
        self.template.id()
    }

    /// The template's exit status once it has exited (it is reaped then).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.template.try_wait().ok().flatten()
    }

    /// Asks the template for a worker for `session_id` whose fds 0, 1 and 2 are `stdio`; returns
    /// its pid. Blocking (a round trip of well under a millisecond, bounded by a timeout).
    pub fn fork_worker(&mut self, session_id: &str, stdio: [&OwnedFd; 3]) -> io::Result<u32> {
        if let Some(status) = self.exited() {
            return Err(io::Error::other(format!(
                "the fork-server template exited ({status})"
            )));
        }
        let fds = stdio.map(AsRawFd::as_raw_fd);
        send_with_fds(self.socket.as_raw_fd(), session_id.as_bytes(), &fds)?;
        let mut buf = [0u8; MAX_PACKET];
        let (n, _) = receive_with_fds(self.socket.as_raw_fd(), &mut buf)?;
        if n == 0 {
            return Err(io::Error::other(
                "the fork-server template closed its socket",
            ));
        }
        let answer = String::from_utf8_lossy(&buf[..n]);
        match answer.split_once(' ') {
            Some(("ok", pid)) => pid
                .parse::<u32>()
                .map_err(|_| io::Error::other(format!("fork-server answered a bad pid: {pid:?}"))),
            Some(("err", reason)) => Err(io::Error::other(format!(
                "fork-server could not start the worker: {reason}"
            ))),
            _ => Err(io::Error::other(format!(
                "fork-server answered something unexpected: {answer:?}"
            ))),
        }
    }
}

impl Drop for ForkServer {
    fn drop(&mut self) {
        let _ = self.template.kill();
        let _ = self.template.wait();
    }
}

/// A worker forked by the template: our child (`CLONE_PARENT`), watched through a pidfd.
pub struct Forked {
    pid: u32,
    pidfd: tokio::io::unix::AsyncFd<OwnedFd>,
    status: Option<std::process::ExitStatus>,
}

impl Forked {
    /// Takes charge of child `pid`. The pid cannot have been reused: it is our child and only
    /// we reap it.
    pub fn adopt(pid: u32) -> io::Result<Forked> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just gave us this fd and nobody else owns it.
        let owned = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        Ok(Forked {
            pid,
            // SAFETY: the AsyncFd owns the pidfd, which stays open and the same until it drops.
            pidfd: unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(
                    owned,
                    tokio::io::Interest::READABLE,
                )
            }?,
            status: None,
        })
    }

    pub fn id(&self) -> Option<u32> {
        self.status.is_none().then_some(self.pid)
    }

    /// Reaps the child if it has exited.
    pub fn try_wait(&mut self) -> io::Result<Option<std::process::ExitStatus>> {
        if self.status.is_none() {
            self.status = reap(self.pid)?;
        }
        Ok(self.status)
    }

    /// Waits for the child to exit and reaps it.
    pub async fn wait(&mut self) -> io::Result<std::process::ExitStatus> {
        loop {
            if let Some(s) = self.try_wait()? {
                return Ok(s);
            }
            let pid = self.pid;
            let reaped = {
                // The pidfd turns readable when the process exits.
                let mut ready = self.pidfd.readable().await?;
                let reaped = reap(pid)?;
                if reaped.is_none() {
                    ready.clear_ready();
                }
                reaped
            };
            if let Some(s) = reaped {
                self.status = Some(s);
                return Ok(s);
            }
        }
    }

    /// SIGKILL to the child itself (its group is signalled separately).
    pub fn start_kill(&mut self) -> io::Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        // SAFETY: pidfd_send_signal on our pidfd; no siginfo.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.get_ref().as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// `waitpid(pid, WNOHANG)` on our own child: its status once it has exited.
fn reap(pid: u32) -> io::Result<Option<std::process::ExitStatus>> {
    use std::os::unix::process::ExitStatusExt;
    let mut raw = 0;
    // SAFETY: waitpid on our own child with a valid out-pointer.
    match unsafe { libc::waitpid(pid as libc::pid_t, &mut raw, libc::WNOHANG) } {
        0 => Ok(None),
        r if r < 0 => Err(io::Error::last_os_error()),
        _ => Ok(Some(std::process::ExitStatus::from_raw(raw))),
    }
}

impl Drop for Forked {
    /// Last resort, like tokio's `kill_on_drop`: a worker whose handle is dropped unreaped is
    /// killed and reaped (on a runtime task, else here), so it can never stay a zombie.
    fn drop(&mut self) {
        if self.status.is_some() || matches!(self.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = self.start_kill();
        let pid = self.pid as libc::pid_t;
        let reap = move || {
            let mut raw = 0;
            // SAFETY: blocking waitpid on our own child, which was just sent SIGKILL.
            unsafe { libc::waitpid(pid, &mut raw, 0) };
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => drop(h.spawn_blocking(reap)),
            Err(_) => reap(),
        }
    }
}

/// A connected `SOCK_SEQPACKET` pair (message boundaries kept; close-on-exec).
fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: socketpair writes two fds into the array on success.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds are new and ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn set_receive_timeout(fd: &OwnedFd, after: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: after.as_secs() as libc::time_t,
        tv_usec: after.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: setsockopt with a timeval of the right size.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            std::ptr::from_ref(&tv).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A pipe (close-on-exec on both ends): (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two fds into the array on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds are new and ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Room for this many fds in one control message.
const MAX_FDS: usize = 3;

fn send_with_fds(socket: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    debug_assert!(fds.len() <= MAX_FDS);
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // u64s keep the buffer aligned for cmsghdr.
    let mut control = [0u64; 8];
    let fd_bytes = std::mem::size_of_val(fds) as u32;
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes) } as usize;
    // SAFETY: zeroed msghdr is a valid empty header; fields are filled below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: the control buffer is large and aligned enough for one cmsghdr with
        // `fds.len()` ints (CMSG_SPACE(12) = 32 bytes ≤ 64).
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(cmsg).cast::<RawFd>(),
                fds.len(),
            );
        }
    }
    loop {
        // SAFETY: msg points at live buffers for the duration of the call.
        let r = unsafe { libc::sendmsg(socket, &msg, libc::MSG_NOSIGNAL) };
        if r >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Receives one packet and the fds that came with it (owned; more than [`MAX_FDS`] or a
/// truncated control message is an error, with every fd that did arrive closed).
fn receive_with_fds(socket: RawFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = [0u64; 8];
    // SAFETY: zeroed msghdr is a valid empty header; fields are filled below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    let n = loop {
        // SAFETY: msg points at live buffers for the duration of the call.
        let r = unsafe { libc::recvmsg(socket, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if r >= 0 {
            break r as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    let mut fds = Vec::new();
    // SAFETY: walking the control messages the kernel wrote into our buffer.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                let header = libc::CMSG_LEN(0) as usize;
                let count = ((*cmsg).cmsg_len as usize - header) / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & (libc::MSG_CTRUNC | libc::MSG_TRUNC) != 0 {
        return Err(io::Error::other("truncated request"));
    }
    Ok((n, fds))
}

/// `wxagent fork-server`: the template's life. Returns when the supervisor closes the socket
/// (or it breaks); a worker child never returns from here.
pub fn serve(config_path: Option<PathBuf>, exe: OsString) -> i32 {
    crate::worker::memory::tune_allocator();
    // Everything a worker would build identically goes here, before any fork: the logging
    // set-up (a worker's own call then finds it installed) and the TLS roots.
    crate::logging::init_child(0);
    drop(crate::tls::client_config());
    crate::worker::memory::trim_if_worth_it();
    // Last before forking: a worker must find no free space in the heap it shares with us.
    let plugged = crate::worker::memory::plug_heap_holes();
    tracing::debug!(plugged, "fork-server template ready");
    // SAFETY: getppid has no preconditions.
    let supervisor = unsafe { libc::getppid() };
    let socket: RawFd = 0;
    let mut buf = [0u8; MAX_PACKET];
    loop {
        let (n, fds) = match receive_with_fds(socket, &mut buf) {
            Ok((0, _)) => return 0,
            Ok(got) => got,
            Err(e) => {
                eprintln!("wxagent fork-server: the supervisor's socket failed: {e}");
                return 1;
            }
        };
        let answer = match (
            std::str::from_utf8(&buf[..n]),
            <[OwnedFd; 3]>::try_from(fds),
        ) {
            (Ok(id), Ok(stdio)) if super::run::valid_session_id(id) => {
                match fork_child(supervisor) {
                    Ok(0) => {
                        let code = become_worker(id, stdio, config_path.as_deref(), &exe);
                        std::process::exit(code);
                    }
                    Ok(pid) => format!("ok {pid}"),
                    Err(e) => format!("err clone failed: {e}"),
                }
            }
            (Ok(id), Ok(_)) => format!("err invalid session id {id:?}"),
            (Err(_), _) => "err the session id is not UTF-8".to_owned(),
            (_, Err(v)) => format!("err expected 3 fds, got {}", v.len()),
        };
        // The fds went with the child (or are closed here on refusal).
        if let Err(e) = send_with_fds(socket, answer.as_bytes(), &[]) {
            eprintln!("wxagent fork-server: cannot answer the supervisor: {e}");
            return 1;
        }
    }
}

/// Clones this (single-threaded) process so that the copy is a child of `supervisor`, our
/// parent. Returns 0 in the child and the child's pid in the template.
fn fork_child(supervisor: libc::pid_t) -> io::Result<libc::pid_t> {
    // glibc's fork() cannot set CLONE_PARENT; the raw clone behaves like fork otherwise. The
    // template holds no locks and has one thread, so there is no fork handler state to fix.
    // SAFETY: clone without CLONE_VM and without a new stack is fork: the child continues
    // here on a private copy of the memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    if r == 0 {
        // SAFETY: prctl/getppid only affect or read the calling process.
        unsafe {
            if libc::prctl(libc::PR_SET_PDEATHSIG, crate::shutdown::PARENT_DEATH_SIGNAL) != 0
                || libc::getppid() != supervisor
            {
                // The supervisor died while we were being made: nobody would watch us.
                libc::_exit(1);
            }
        }
    }
    Ok(r as libc::pid_t)
}

/// In the new child: take the pipes as fds 0–2, a process group of its own, a worker's command
/// line, and run the worker. Returns the exit code.
fn become_worker(
    session_id: &str,
    stdio: [OwnedFd; 3],
    config_path: Option<&Path>,
    exe: &std::ffi::OsStr,
) -> i32 {
    for (target, fd) in stdio.iter().enumerate() {
        // SAFETY: dup2 onto 0, 1, 2 (the template's socket on 0 is closed by it).
        if unsafe { libc::dup2(fd.as_raw_fd(), target as RawFd) } < 0 {
            return crate::exit::WorkerExit::Failure.code().into();
        }
    }
    drop(stdio);
    // SAFETY: setpgid on ourselves.
    unsafe { libc::setpgid(0, 0) };
    let mut title: Vec<OsString> = vec![
        exe.to_owned(),
        "worker".into(),
        "--session".into(),
        session_id.into(),
    ];
    if let Some(p) = config_path {
        title.push("--config".into());
        title.push(p.as_os_str().to_owned());
    }
    set_command_line(&title);
    // Logging is the template's, set up before the fork (it writes to fd 2, now our pipe).
    crate::worker::entry::main(config_path, session_id.to_owned())
}

/// Rewrites the memory `/proc/self/cmdline` shows (the original argument strings, which the
/// template padded): `ps` and the supervisor's stale-worker check then see a worker's command
/// line. Arguments that do not fit are cut; nothing else is touched.
fn set_command_line(args: &[OsString]) {
    use std::os::unix::ffi::OsStrExt;
    let Some((start, end)) = argument_area() else {
        return;
    };
    let room = end - start;
    let mut text = Vec::with_capacity(room);
    for a in args {
        text.extend_from_slice(a.as_bytes());
        text.push(0);
    }
    text.resize(room, 0);
    // SAFETY: [start, end) is this process's original argument block (from the kernel's
    // /proc/self/stat), writable stack memory that nothing else in the program refers to by
    // reference; std's copies of the arguments were taken at start-up.
    unsafe { std::ptr::copy_nonoverlapping(text.as_ptr(), start as *mut u8, room) };
}

/// `arg_start` and `arg_end` from /proc/self/stat (fields 48 and 49).
fn argument_area() -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let start: usize = fields.get(48 - 3)?.parse().ok()?;
    let end: usize = fields.get(49 - 3)?.parse().ok()?;
    (start > 0 && end > start).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fds_travel_with_a_packet() {
        let (a, b) = seqpacket_pair().unwrap();
        let (r, w) = pipe().unwrap();
        send_with_fds(a.as_raw_fd(), b"hello", &[r.as_raw_fd(), w.as_raw_fd()]).unwrap();
        let mut buf = [0u8; 64];
        let (n, fds) = receive_with_fds(b.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(fds.len(), 2);
        // The received write end feeds the original read end.
        let mut file = std::fs::File::from(fds.into_iter().nth(1).unwrap());
        std::io::Write::write_all(&mut file, b"x").unwrap();
        drop(file);
        drop(w);
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut std::fs::File::from(r), &mut got).unwrap();
        assert_eq!(got, b"x");
    }

    #[test]
    fn the_argument_area_is_found() {
        let (start, end) = argument_area().expect("/proc/self/stat has arg_start/arg_end");
        let cmdline = std::fs::read("/proc/self/cmdline").unwrap();
        assert_eq!(end - start, cmdline.len());
    }
}
