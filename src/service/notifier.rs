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

    /// The watchdog ping.
    pub fn alive(&self) {
        #[cfg(unix)]
        self.send(&[super::systemd::NotifyState::Watchdog]);
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
