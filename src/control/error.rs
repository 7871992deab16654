//! The errors of the control-plane client, and which of them are worth retrying. Messages never
//! contain the secret, a signature or a URL (which may carry credentials in its query).

use std::time::Duration;

/// Why a control-plane call failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// A required setting is missing (`what` names it).
    #[error("{what} is not configured")]
    NotConfigured { what: &'static str },
    /// The HTTP client could not be built (TLS roots, …).
    #[error("cannot build the control-plane HTTP client")]
    Client {
        #[source]
        source: reqwest::Error,
    },
    /// Connecting, sending or reading failed (`source` never names the URL).
    #[error("{action}: request to the control plane failed")]
    Http {
        action: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No complete answer within the per-request timeout (or the retry deadline).
    #[error("{action}: no answer from the control plane within {after:?}")]
    Timeout { action: String, after: Duration },
    /// The server answered with a non-2xx status.
    #[error("{action}: control plane answered HTTP {status}")]
    Status {
        action: String,
        status: reqwest::StatusCode,
    },
    /// The answer could not be used (not JSON where JSON is required, too large, …).
    #[error("{action}: unusable answer from the control plane: {detail}")]
    Json { action: String, detail: String },
    /// `login_ack.error_code` was not 0: the server refuses this account (spec A.4).
    #[error("login refused by the control plane (error_code {code}: {reason:?})")]
    LoginRefused { code: i64, reason: String },
    /// A secret is configured and the `login_ack` signature was missing or wrong (spec A.4).
    #[error("login signature failed: {detail}")]
    SignatureFailed { detail: String },
    /// An upload was answered with a non-zero `error_code`.
    #[error("upload of {what} refused (error_code {code}: {reason:?})")]
    Upload {
        what: String,
        code: i64,
        reason: String,
    },
    /// The caller's cancellation token fired.
    #[error("{action}: cancelled")]
    Cancelled { action: String },
}

impl ControlError {
    /// Whether trying the same request again may succeed: network failures, timeouts, HTTP 5xx,
    /// 429 and 408, and unusable answers (a proxy's error page, a server mid-deploy). Final:
    /// other statuses (4xx), a refused login, a failed signature, a refused upload, a missing
    /// setting, cancellation.
    pub fn is_retryable(&self) -> bool {
        match self {
            ControlError::Http { source, .. } => !is_request_fault(source.as_ref()),
            ControlError::Timeout { .. } | ControlError::Json { .. } => true,
            ControlError::Status { status, .. } => {
                status.is_server_error()
                    || *status == reqwest::StatusCode::TOO_MANY_REQUESTS
                    || *status == reqwest::StatusCode::REQUEST_TIMEOUT
            }
            ControlError::NotConfigured { .. }
            | ControlError::Client { .. }
            | ControlError::LoginRefused { .. }
            | ControlError::SignatureFailed { .. }
            | ControlError::Upload { .. }
            | ControlError::Cancelled { .. } => false,
        }
    }

    /// The action the failed request carried, when the error belongs to one.
    pub fn action(&self) -> Option<&str> {
        match self {
            ControlError::Http { action, .. }
            | ControlError::Timeout { action, .. }
            | ControlError::Status { action, .. }
            | ControlError::Json { action, .. }
            | ControlError::Cancelled { action } => Some(action),
            ControlError::LoginRefused { .. } | ControlError::SignatureFailed { .. } => {
                Some("login")
            }
            _ => None,
        }
    }
}

/// Whether a transport error says the request itself could not be built (a header value,
/// a URL without a host): sending it again fails the same way.
fn is_request_fault(source: &(dyn std::error::Error + 'static)) -> bool {
    if let Some(e) = source.downcast_ref::<reqwest::Error>() {
        return e.is_builder();
    }
    matches!(
        source.downcast_ref::<crate::control::lean::LeanError>(),
        Some(
            crate::control::lean::LeanError::Header(_) | crate::control::lean::LeanError::NoOrigin
        )
    )
}

/// `error: cause: cause…`, for logs (thiserror's Display shows only the outer message).
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;

    fn status(code: u16) -> ControlError {
        ControlError::Status {
            action: "report_new_msg".into(),
            status: StatusCode::from_u16(code).unwrap(),
        }
    }

    #[test]
    fn retryable_statuses() {
        for code in [500, 502, 503, 504, 429, 408] {
            assert!(status(code).is_retryable(), "{code}");
        }
        for code in [400, 401, 403, 404, 409, 422, 301] {
            assert!(!status(code).is_retryable(), "{code}");
        }
    }

    #[test]
    fn final_errors() {
        let finals = [
            ControlError::LoginRefused {
                code: 1,
                reason: "no".into(),
            },
            ControlError::SignatureFailed {
                detail: "missing".into(),
            },
            ControlError::Upload {
                what: "file 1".into(),
                code: 2,
                reason: "".into(),
            },
            ControlError::Cancelled {
                action: "login".into(),
            },
            ControlError::NotConfigured {
                what: "control.upload_url",
            },
        ];
        for e in finals {
            assert!(!e.is_retryable(), "{e}");
        }
        assert!(
            ControlError::Timeout {
                action: "x".into(),
                after: Duration::from_secs(1)
            }
            .is_retryable()
        );
        assert!(
            ControlError::Json {
                action: "login".into(),
                detail: "not JSON".into()
            }
            .is_retryable()
        );
    }

    #[test]
    fn messages_are_lowercase_fragments() {
        assert_eq!(
            status(503).to_string(),
            "report_new_msg: control plane answered HTTP 503 Service Unavailable"
        );
        assert_eq!(
            ControlError::LoginRefused {
                code: 3,
                reason: "banned".into()
            }
            .to_string(),
            "login refused by the control plane (error_code 3: \"banned\")"
        );
    }
}
