//! Errors of the web-protocol client. Messages name the endpoint and what was wrong, and never
//! carry credentials: transport errors are stripped of their URL (which holds skey/pass_ticket).

use super::hosts::HostError;
use super::parse::ParseError;

#[derive(Debug, thiserror::Error)]
pub enum WechatError {
    #[error("{endpoint}: request failed: {source}")]
    Transport {
        endpoint: &'static str,
        #[source]
        source: reqwest::Error,
    },
    #[error("{endpoint}: no answer within {seconds} s")]
    Timeout {
        endpoint: &'static str,
        seconds: u64,
    },
    #[error("{endpoint}: unexpected HTTP status {status}")]
    Status { endpoint: &'static str, status: u16 },
    #[error("{endpoint}: {source}")]
    Parse {
        endpoint: &'static str,
        #[source]
        source: ParseError,
    },
    #[error("{endpoint}: malformed JSON answer: {detail}")]
    Json {
        endpoint: &'static str,
        detail: String,
    },
    #[error("{endpoint}: server answered Ret {ret}{}", fmt_msg(message))]
    Ret {
        endpoint: &'static str,
        ret: i64,
        message: String,
    },
    #[error("web login refused by the server (ret {ret}): {message}")]
    LoginRefused { ret: i64, message: String },
    #[error("{endpoint}: the answer lacks {what}")]
    Missing {
        endpoint: &'static str,
        what: &'static str,
    },
    #[error("host derivation: {0}")]
    Hosts(#[from] HostError),
    #[error("{endpoint}: called before login")]
    NotLoggedIn { endpoint: &'static str },
}

fn fmt_msg(m: &str) -> String {
    if m.is_empty() {
        String::new()
    } else {
        format!(" ({m})")
    }
}

impl WechatError {
    pub(crate) fn transport(
        endpoint: &'static str,
        e: reqwest::Error,
        timeout: std::time::Duration,
    ) -> Self {
        if e.is_timeout() {
            WechatError::Timeout {
                endpoint,
                seconds: timeout.as_secs(),
            }
        } else {
            WechatError::Transport {
                endpoint,
                source: e.without_url(),
            }
        }
    }

    /// Worth retrying: the network, a 5xx, or an answer that did not parse (a proxy's error page,
    /// a truncated body). A `Ret` or a refusal is the server's decision and is not.
    pub fn is_transient(&self) -> bool {
        match self {
            WechatError::Transport { .. }
            | WechatError::Timeout { .. }
            | WechatError::Parse { .. }
            | WechatError::Json { .. }
            | WechatError::Missing { .. } => true,
            WechatError::Status { status, .. } => {
                *status >= 500 || *status == 429 || *status == 408
            }
            _ => false,
        }
    }

    /// The server's Ret code, if this is one.
    pub fn ret(&self) -> Option<i64> {
        match self {
            WechatError::Ret { ret, .. } | WechatError::LoginRefused { ret, .. } => Some(*ret),
            _ => None,
        }
    }
}
