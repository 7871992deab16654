//! Talking to the operating system's service manager: systemd's notify protocol and watchdog
//! (Unix), and the Windows service (`wxagent service install | uninstall | run`).

mod notifier;
#[cfg(unix)]
pub mod systemd;
#[cfg(windows)]
pub mod windows;

pub use notifier::{ServiceNotifier, sessions_status};
