//! Documented exit codes. A worker's exit code is its report to the supervisor, so every way a
//! session can end has its own code; the supervisor maps them back with [`WorkerExit::from_code`].

use std::fmt;

/// Why a `wxagent` process ended, as its exit code.
///
/// | code | name | meaning |
/// |---|---|---|
/// | 0 | `Ok` | ended on request (Ctrl-C / SIGTERM / exit task) |
/// | 1 | `Failure` | an unexpected internal error (a bug or an unusable environment) |
/// | 2 | `Usage` | bad command line or configuration |
/// | 10 | `PhoneLogout` | the account was logged out from the phone or elsewhere (retcode 1100/1101) |
/// | 11 | `Kicked` | the server declared the session's cookies invalid (retcode 1102) |
/// | 12 | `WebForbidden` | the account may not use web login (newloginpage ret 1203) |
/// | 13 | `RateLimited` | the server blocked the session for operating too often (1205) |
/// | 14 | `ExpiredSession` | the saved or live session was rejected and could not be renewed |
/// | 15 | `QrAbandoned` | nobody scanned within `[qr] max_refreshes` / `max_wait` |
/// | 16 | `LoginFailed` | the login exchange failed (other non-zero `ret`, unusable answer) |
/// | 17 | `Network` | WeChat stayed unreachable past the retry budget |
/// | 18 | `ControlRefused` | the control plane refused the account or its signature check failed |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum WorkerExit {
    Ok = 0,
    Failure = 1,
    Usage = 2,
    PhoneLogout = 10,
    Kicked = 11,
    WebForbidden = 12,
    RateLimited = 13,
    ExpiredSession = 14,
    QrAbandoned = 15,
    LoginFailed = 16,
    Network = 17,
    ControlRefused = 18,
}

impl WorkerExit {
    pub const ALL: [WorkerExit; 12] = [
        WorkerExit::Ok,
        WorkerExit::Failure,
        WorkerExit::Usage,
        WorkerExit::PhoneLogout,
        WorkerExit::Kicked,
        WorkerExit::WebForbidden,
        WorkerExit::RateLimited,
        WorkerExit::ExpiredSession,
        WorkerExit::QrAbandoned,
        WorkerExit::LoginFailed,
        WorkerExit::Network,
        WorkerExit::ControlRefused,
    ];

    pub fn code(self) -> u8 {
        self as u8
    }

    /// The exit code a child process returned, if it is one of ours.
    pub fn from_code(code: i32) -> Option<WorkerExit> {
        Self::ALL.into_iter().find(|e| i32::from(e.code()) == code)
    }

    /// Short stable name, used in logs and status output.
    pub fn name(self) -> &'static str {
        match self {
            WorkerExit::Ok => "ok",
            WorkerExit::Failure => "failure",
            WorkerExit::Usage => "usage",
            WorkerExit::PhoneLogout => "phone_logout",
            WorkerExit::Kicked => "kicked",
            WorkerExit::WebForbidden => "web_forbidden",
            WorkerExit::RateLimited => "rate_limited",
            WorkerExit::ExpiredSession => "expired_session",
            WorkerExit::QrAbandoned => "qr_abandoned",
            WorkerExit::LoginFailed => "login_failed",
            WorkerExit::Network => "network",
            WorkerExit::ControlRefused => "control_refused",
        }
    }

    /// Whether a supervisor should start the session again after this exit.
    /// Only crashes and network trouble are worth a restart; every logout is final.
    pub fn is_restartable(self) -> bool {
        matches!(self, WorkerExit::Failure | WorkerExit::Network)
    }
}

impl fmt::Display for WorkerExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (exit code {})", self.name(), self.code())
    }
}

impl From<WorkerExit> for std::process::ExitCode {
    fn from(e: WorkerExit) -> Self {
        std::process::ExitCode::from(e.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for e in WorkerExit::ALL {
            assert!(seen.insert(e.code()), "duplicate code {}", e.code());
            assert_eq!(WorkerExit::from_code(i32::from(e.code())), Some(e));
        }
        assert_eq!(WorkerExit::from_code(3), None);
        assert_eq!(WorkerExit::from_code(-1), None);
    }

    #[test]
    fn only_crashes_restart() {
        assert!(WorkerExit::Failure.is_restartable());
        assert!(!WorkerExit::PhoneLogout.is_restartable());
        assert!(!WorkerExit::Ok.is_restartable());
    }
}
