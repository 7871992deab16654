//! What the supervisor tells the service manager it runs under: ready, status, alive, stopping.
//! Under systemd (`NOTIFY_SOCKET` set) these become notify datagrams; anywhere else (a shell,
//! the Windows service manager, which `service::windows` answers itself) they do nothing.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// The supervisor's line to its service manager. Sending never fails the caller: a lost
/// notification is logged (once) and the supervisor carries on.
#[derive(Debug, Default)]
pub struct ServiceNotifier {
    #[cfg(unix)]
    systemd: Option<super::systemd::Notifier>,
    watchdog: Option<Duration>,
    /// Whether a failed send was already logged at WARN.
    #[cfg_attr(not(unix), allow(dead_code))]
    warned: AtomicBool,
}

impl ServiceNotifier {
    /// A notifier that tells nobody anything.
    pub fn disabled() -> ServiceNotifier {
        ServiceNotifier::default()
    }

    /// The notifier for the service manager named by the environment (`NOTIFY_SOCKET`,
    /// `WATCHDOG_USEC`, `WATCHDOG_PID`); disabled when there is none.
    pub fn from_env() -> ServiceNotifier {
        #[cfg(unix)]
        {
            match super::systemd::Notifier::from_env() {
                Ok(Some(n)) => {
                    let watchdog = super::systemd::watchdog_interval_from_env();
                    tracing::info!(
                        watchdog_ping_ms = watchdog.map(|d| d.as_millis() as u64),
                        "running under systemd: will send READY, STATUS, WATCHDOG and STOPPING"
                    );
                    ServiceNotifier::systemd(n, watchdog)
                }
                Ok(None) => ServiceNotifier::disabled(),
                Err(e) => {
                    tracing::warn!(error = %e, "NOTIFY_SOCKET is set but unusable; not notifying systemd");
                    ServiceNotifier::disabled()
                }
            }
        }
        #[cfg(not(unix))]
        {
            ServiceNotifier::disabled()
        }
    }

    /// A notifier for one systemd notify socket, pinging every `watchdog` when given.
    #[cfg(unix)]
    pub fn systemd(
        notifier: super::systemd::Notifier,
        watchdog: Option<Duration>,
    ) -> ServiceNotifier {
        ServiceNotifier {
            systemd: Some(notifier),
            watchdog,
            warned: AtomicBool::new(false),
        }
    }

    /// How often [`ServiceNotifier::alive`] must be called; None when nobody watches.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Start-up is done; `status` says what is running.
    pub fn ready(&self, status: &str) {
        #[cfg(unix)]
        self.send(&[
            super::systemd::NotifyState::Ready,
            super::systemd::NotifyState::Status(status.to_owned()),
        ]);
        #[cfg(not(unix))]
        let _ = status;
    }

    /// A new one-line status.
    pub fn status(&self, status: &str) {
        #[cfg(unix)]
        self.send(&[super::systemd::NotifyState::Status(status.to_owned())]);
        #[cfg(not(unix))]
        let _ = status;
    }

    /// The watchdog ping (nothing when no watchdog is on).
    pub fn alive(&self) {
        #[cfg(unix)]
        if self.watchdog.is_some() {
            self.send(&[super::systemd::NotifyState::Watchdog]);
        }
    }

    /// The graceful shutdown began; `status` says what it waits for.
    pub fn stopping(&self, status: &str) {
        #[cfg(unix)]
        self.send(&[
            super::systemd::NotifyState::Stopping,
            super::systemd::NotifyState::Status(status.to_owned()),
        ]);
        #[cfg(not(unix))]
        let _ = status;
    }

    #[cfg(unix)]
    fn send(&self, states: &[super::systemd::NotifyState]) {
        let Some(n) = &self.systemd else {
            return;
        };
        if let Err(e) = n.notify(states) {
            if !self.warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(error = %e, "could not notify systemd (further failures are logged at DEBUG)");
            } else {
                tracing::debug!(error = %e, "could not notify systemd");
            }
        }
    }
}

/// The one-line status for a session count.
pub fn sessions_status(sessions: usize, max: usize) -> String {
    format!(
        "{sessions} session{} of at most {max}",
        if sessions == 1 { "" } else { "s" }
    )
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use crate::service::systemd::Notifier;
    use std::os::unix::net::UnixDatagram;

    fn pair(dir: &std::path::Path, watchdog: Option<Duration>) -> (UnixDatagram, ServiceNotifier) {
        let path = dir.join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        server.set_nonblocking(true).unwrap();
        let n = ServiceNotifier::systemd(Notifier::new(path.as_os_str()).unwrap(), watchdog);
        (server, n)
    }

    fn drain(server: &UnixDatagram) -> Vec<String> {
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        while let Ok(n) = server.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        got
    }

    #[test]
    fn the_lifecycle_reaches_systemd() {
        let dir = tempfile::tempdir().unwrap();
        let (server, n) = pair(dir.path(), Some(Duration::from_secs(15)));
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(15)));
        n.ready(&sessions_status(0, 5));
        n.alive();
        n.status(&sessions_status(1, 5));
        n.stopping("stopping 1 session(s)");
        assert_eq!(
            drain(&server),
            [
                "READY=1\nSTATUS=0 sessions of at most 5\n",
                "WATCHDOG=1\n",
                "STATUS=1 session of at most 5\n",
                "STOPPING=1\nSTATUS=stopping 1 session(s)\n",
            ]
        );
    }

    #[test]
    fn no_pings_without_a_watchdog() {
        let dir = tempfile::tempdir().unwrap();
        let (server, n) = pair(dir.path(), None);
        n.alive();
        n.ready("x");
        assert_eq!(drain(&server), ["READY=1\nSTATUS=x\n"]);
    }

    #[test]
    fn a_vanished_systemd_does_not_stop_the_supervisor() {
        let dir = tempfile::tempdir().unwrap();
        let (server, n) = pair(dir.path(), Some(Duration::from_secs(1)));
        drop(server);
        n.ready("x");
        n.alive();
        assert!(n.warned.load(std::sync::atomic::Ordering::Relaxed));
        ServiceNotifier::disabled().ready("nobody hears this");
    }
}
