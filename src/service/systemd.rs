//! The systemd notify protocol (`Type=notify`, `WatchdogSec=`): newline-separated `KEY=VALUE`
//! datagrams sent to the unix socket named by `NOTIFY_SOCKET` (a path, or an abstract socket
//! when it starts with '@'). Written by hand because it is one `sendto` per message.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// One state change or report for the service manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyState {
    /// Start-up is finished (`READY=1`).
    Ready,
    /// The graceful shutdown began (`STOPPING=1`).
    Stopping,
    /// Still alive (`WATCHDOG=1`).
    Watchdog,
    /// A one-line human-readable status shown by `systemctl status` (`STATUS=`).
    Status(String),
}

impl NotifyState {
    fn line(&self) -> String {
        match self {
            NotifyState::Ready => "READY=1".to_owned(),
            NotifyState::Stopping => "STOPPING=1".to_owned(),
            NotifyState::Watchdog => "WATCHDOG=1".to_owned(),
            // A newline would start another assignment: keep the status on one line.
            NotifyState::Status(s) => format!("STATUS={}", s.replace(['\n', '\r'], " ")),
        }
    }
}

/// Sends notify datagrams to one socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// The notifier for `NOTIFY_SOCKET`, or None when it is unset or empty (not started by
    /// systemd as `Type=notify`).
    pub fn from_env() -> io::Result<Option<Notifier>> {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(v) if !v.is_empty() => Notifier::new(&v).map(Some),
            _ => Ok(None),
        }
    }

    /// A notifier for the socket `target` names: a filesystem path, or `@name` for a Linux
    /// abstract socket.
    pub fn new(target: &OsStr) -> io::Result<Notifier> {
        let addr = socket_addr(target)?;
        let socket = UnixDatagram::unbound()?;
        Ok(Notifier { socket, addr })
    }

    /// Sends the states as one datagram.
    pub fn notify(&self, states: &[NotifyState]) -> io::Result<()> {
        let mut text = String::new();
        for s in states {
            text.push_str(&s.line());
            text.push('\n');
        }
        let sent = self.socket.send_to_addr(text.as_bytes(), &self.addr)?;
        if sent != text.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("notify datagram cut short ({sent} of {} bytes)", text.len()),
            ));
        }
        Ok(())
    }
}

fn socket_addr(target: &OsStr) -> io::Result<SocketAddr> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = target.as_bytes();
    match bytes.split_first() {
        Some((b'@', name)) => abstract_addr(name),
        Some((b'/', _)) => SocketAddr::from_pathname(std::path::Path::new(target)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "NOTIFY_SOCKET is neither an absolute path nor an abstract '@' name",
        )),
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_addr(name: &[u8]) -> io::Result<SocketAddr> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_addr(_name: &[u8]) -> io::Result<SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract unix sockets exist only on Linux",
    ))
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, when the watchdog is on and meant
/// for us (`WATCHDOG_PID` unset or our pid). None otherwise, or when the values are unusable.
pub fn watchdog_interval(
    usec: Option<&OsStr>,
    watchdog_pid: Option<&OsStr>,
    our_pid: u32,
) -> Option<Duration> {
    if let Some(pid) = watchdog_pid.filter(|p| !p.is_empty())
        && pid.to_str()?.trim().parse::<u32>().ok()? != our_pid
    {
        return None;
    }
    let usec: u64 = usec?.to_str()?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    Some(Duration::from_micros(usec) / 2)
}

/// [`watchdog_interval`] from this process's environment.
pub fn watchdog_interval_from_env() -> Option<Duration> {
    let usec: Option<OsString> = std::env::var_os("WATCHDOG_USEC");
    let pid: Option<OsString> = std::env::var_os("WATCHDOG_PID");
    watchdog_interval(usec.as_deref(), pid.as_deref(), std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(server: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = server.recv(&mut buf).expect("a datagram");
        String::from_utf8(buf[..n].to_vec()).expect("utf-8")
    }

    #[test]
    fn datagrams_reach_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(path.as_os_str()).unwrap();
        n.notify(&[NotifyState::Ready, NotifyState::Status("2 sessions".into())])
            .unwrap();
        assert_eq!(received(&server), "READY=1\nSTATUS=2 sessions\n");
        n.notify(&[NotifyState::Watchdog]).unwrap();
        assert_eq!(received(&server), "WATCHDOG=1\n");
        n.notify(&[NotifyState::Stopping]).unwrap();
        assert_eq!(received(&server), "STOPPING=1\n");
    }

    #[test]
    fn a_status_stays_on_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(path.as_os_str()).unwrap();
        n.notify(&[NotifyState::Status("a\nREADY=1".into())])
            .unwrap();
        assert_eq!(received(&server), "STATUS=a READY=1\n");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn datagrams_reach_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("wxagent-test-{}-{}", std::process::id(), line!());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier::new(OsStr::new(&format!("@{name}"))).unwrap();
        n.notify(&[NotifyState::Ready]).unwrap();
        assert_eq!(received(&server), "READY=1\n");
    }

    #[test]
    fn relative_or_empty_targets_are_refused() {
        assert!(Notifier::new(OsStr::new("relative.sock")).is_err());
        assert!(Notifier::new(OsStr::new("")).is_err());
    }

    #[test]
    fn a_missing_listener_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let n = Notifier::new(dir.path().join("nobody.sock").as_os_str()).unwrap();
        assert!(n.notify(&[NotifyState::Ready]).is_err());
    }

    #[test]
    fn watchdog_pings_at_half_the_interval_when_meant_for_us() {
        let os = |s: &'static str| Some(OsStr::new(s));
        assert_eq!(
            watchdog_interval(os("30000000"), None, 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_interval(os("30000000"), os("7"), 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_interval(os("30000000"), os(""), 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(watchdog_interval(os("30000000"), os("8"), 7), None);
        assert_eq!(watchdog_interval(None, None, 7), None);
        assert_eq!(watchdog_interval(os("0"), None, 7), None);
        assert_eq!(watchdog_interval(os("soon"), None, 7), None);
        assert_eq!(watchdog_interval(os("30000000"), os("x"), 7), None);
    }
}
