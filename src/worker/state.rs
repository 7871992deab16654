//! The lifecycle of one session as enums with data: where it is ([`SessionState`]), why the
//! account left ([`LogoutReason`]) and how the worker ended ([`Outcome`]).

use crate::exit::WorkerExit;
use std::fmt;

/// Where a session is in its life. Reported to the supervisor and shown by `wxagent status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionState {
    /// Fetching a login uuid.
    Starting,
    /// A QR code is shown and waits for a scan (`refresh` counts the codes shown so far, from 1).
    WaitingForScan { uuid: String, refresh: u32 },
    /// Scanned on the phone; waiting for the user to confirm.
    Scanned,
    /// Exchanging the ticket, webwxinit, contacts.
    LoggingIn,
    /// Logged in and syncing. `wxid` is the account's stable id (its Uin as a string).
    Online { wxid: String, nickname: String },
    /// Leaving: logging out or saving state.
    Stopping,
}

impl SessionState {
    pub fn name(&self) -> &'static str {
        match self {
            SessionState::Starting => "starting",
            SessionState::WaitingForScan { .. } => "waiting_for_scan",
            SessionState::Scanned => "scanned",
            SessionState::LoggingIn => "logging_in",
            SessionState::Online { .. } => "online",
            SessionState::Stopping => "stopping",
        }
    }
}

/// Why an account that was logged in is no longer (control-plane spec B.3 names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogoutReason {
    /// synccheck / webwxsync retcode 1100 or 1101: logged out on the phone or elsewhere.
    PhoneLogout { retcode: i64 },
    /// retcode 1102: the server no longer accepts the session's cookies.
    Kicked { retcode: i64 },
    /// newloginpage ret 1203: the account may not use web login.
    WebForbidden { message: String },
    /// retcode 1205: operating too often; the server blocked the session.
    RateLimited { retcode: i64 },
    /// The session was rejected (webwxinit failed, saved credentials no longer valid).
    ExpiredSession { detail: String },
    /// The control plane asked the account to leave.
    ExitTask,
    /// The operator stopped the worker (Ctrl-C, SIGTERM, service stop).
    Shutdown,
    /// WeChat stayed unreachable past the retry budget.
    Network { detail: String },
}

impl LogoutReason {
    /// Maps a non-zero synccheck/webwxsync retcode that ends a session to its reason.
    /// Returns `None` for codes that do not end the session by themselves.
    pub fn from_retcode(retcode: i64) -> Option<LogoutReason> {
        match retcode {
            1100 | 1101 => Some(LogoutReason::PhoneLogout { retcode }),
            1102 => Some(LogoutReason::Kicked { retcode }),
            1205 => Some(LogoutReason::RateLimited { retcode }),
            _ => None,
        }
    }

    /// The stable name sent as `logout.data.reason` (control-plane spec B.3).
    pub fn as_str(&self) -> &'static str {
        match self {
            LogoutReason::PhoneLogout { .. } => "phone_logout",
            LogoutReason::Kicked { .. } => "kicked",
            LogoutReason::WebForbidden { .. } => "web_forbidden",
            LogoutReason::RateLimited { .. } => "rate_limited",
            LogoutReason::ExpiredSession { .. } => "expired_session",
            LogoutReason::ExitTask => "exit_task",
            LogoutReason::Shutdown => "shutdown",
            LogoutReason::Network { .. } => "network",
        }
    }

    /// The retcode that caused it, when one was seen.
    pub fn retcode(&self) -> Option<i64> {
        match self {
            LogoutReason::PhoneLogout { retcode }
            | LogoutReason::Kicked { retcode }
            | LogoutReason::RateLimited { retcode } => Some(*retcode),
            LogoutReason::WebForbidden { .. } => Some(1203),
            _ => None,
        }
    }

    pub fn exit(&self) -> WorkerExit {
        match self {
            LogoutReason::PhoneLogout { .. } => WorkerExit::PhoneLogout,
            LogoutReason::Kicked { .. } => WorkerExit::Kicked,
            LogoutReason::WebForbidden { .. } => WorkerExit::WebForbidden,
            LogoutReason::RateLimited { .. } => WorkerExit::RateLimited,
            LogoutReason::ExpiredSession { .. } => WorkerExit::ExpiredSession,
            LogoutReason::ExitTask | LogoutReason::Shutdown => WorkerExit::Ok,
            LogoutReason::Network { .. } => WorkerExit::Network,
        }
    }
}

impl fmt::Display for LogoutReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogoutReason::PhoneLogout { retcode } => {
                write!(
                    f,
                    "logged out on the phone or elsewhere (retcode {retcode})"
                )
            }
            LogoutReason::Kicked { retcode } => {
                write!(
                    f,
                    "session cookies rejected by the server (retcode {retcode})"
                )
            }
            LogoutReason::WebForbidden { message } => {
                write!(
                    f,
                    "account may not log in to web WeChat (ret 1203: {message})"
                )
            }
            LogoutReason::RateLimited { retcode } => {
                write!(f, "blocked for operating too often (retcode {retcode})")
            }
            LogoutReason::ExpiredSession { detail } => write!(f, "session expired: {detail}"),
            LogoutReason::ExitTask => f.write_str("asked to exit by the control plane"),
            LogoutReason::Shutdown => f.write_str("stopped by the operator"),
            LogoutReason::Network { detail } => write!(f, "WeChat unreachable: {detail}"),
        }
    }
}

/// How a worker ended. Maps one-to-one onto an exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The account was logged in and then left for this reason.
    LoggedOut(LogoutReason),
    /// No scan / confirm within the QR bounds.
    Abandoned { qr_count: u32 },
    /// The login was refused before the account came online (1203 is reported as
    /// `LoggedOut(WebForbidden)` so the control plane hears it as a logout reason).
    LoginFailed { detail: String },
    /// The control plane refused the account (non-zero error_code or signature failure).
    ControlRefused { detail: String },
    /// Stopped on request (Ctrl-C, SIGTERM, supervisor gone) before the account logged in.
    Stopped,
}

impl Outcome {
    pub fn exit(&self) -> WorkerExit {
        match self {
            Outcome::LoggedOut(r) => r.exit(),
            Outcome::Abandoned { .. } => WorkerExit::QrAbandoned,
            Outcome::LoginFailed { .. } => WorkerExit::LoginFailed,
            Outcome::ControlRefused { .. } => WorkerExit::ControlRefused,
            Outcome::Stopped => WorkerExit::Ok,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::LoggedOut(r) => write!(f, "logged out: {r}"),
            Outcome::Abandoned { qr_count } => {
                write!(f, "abandoned: no login after {qr_count} QR code(s)")
            }
            Outcome::LoginFailed { detail } => write!(f, "login failed: {detail}"),
            Outcome::ControlRefused { detail } => {
                write!(f, "refused by the control plane: {detail}")
            }
            Outcome::Stopped => f.write_str("stopped before login"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retcodes_map_to_reasons_and_exit_codes() {
        assert_eq!(
            LogoutReason::from_retcode(1101).unwrap().exit(),
            WorkerExit::PhoneLogout
        );
        assert_eq!(
            LogoutReason::from_retcode(1100).unwrap().as_str(),
            "phone_logout"
        );
        assert_eq!(
            LogoutReason::from_retcode(1102).unwrap().exit(),
            WorkerExit::Kicked
        );
        assert_eq!(
            LogoutReason::from_retcode(1205).unwrap().as_str(),
            "rate_limited"
        );
        assert_eq!(LogoutReason::from_retcode(0), None);
        assert_eq!(LogoutReason::from_retcode(1), None);
    }

    #[test]
    fn display_names_the_code() {
        let r = LogoutReason::from_retcode(1102).unwrap();
        assert!(r.to_string().contains("1102"), "{r}");
        assert_eq!(r.retcode(), Some(1102));
    }
}
