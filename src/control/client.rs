//! The HTTP client for the callback URL: one envelope per POST with timeouts, optional B.6
//! signing and event ids, and the typed calls built on it (login, pull_task, reports, logout).

use crate::config::{ControlConfig, Secret};
use crate::control::envelope::{Ack, ExitFlags, RawTask, Request, WebSocketExtension, action};
use crate::control::error::ControlError;
use crate::control::lean::{LeanClient, LeanError};
use crate::control::reports::{LoginData, LogoutData, Report, TaskResult, contact_flag};
use crate::control::retry::{RetryPolicy, with_retry};
use crate::control::signature::{
    EVENT_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_request, verify_login_signature,
};
use bytes::Bytes;
use reqwest::header::CONTENT_TYPE;
use serde_json::Value;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;
use url::Url;

/// The `User-Agent` of every request.
const USER_AGENT: &str = concat!("wxagent/", env!("CARGO_PKG_VERSION"));

/// Answers larger than this are refused: an ack is a few kilobytes.
const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// Per-call extras for [`ControlClient::post`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PostOptions {
    /// Sent as `X-Wxagent-Event-Id` so the server can dedupe re-deliveries (B.5).
    pub event_id: Option<String>,
    /// The envelope's optional `client_session`.
    pub client_session: Option<String>,
}

impl PostOptions {
    pub fn event(event_id: impl Into<String>) -> Self {
        PostOptions {
            event_id: Some(event_id.into()),
            client_session: None,
        }
    }
}

/// What a successful login handshake gave us.
#[derive(Debug, Clone, PartialEq)]
pub struct LoginAck {
    /// Which contact lists to report (1 friends, 2 groups, 4 public); 7 when not given.
    pub flag_report_contact: u32,
    /// Switch to WebSocket mode (A.8) when offered.
    pub websocket: Option<WebSocketExtension>,
    /// The most reports the server takes in one `report_batch` post, when it offers that
    /// (wxagent's extension; `None`: one report per request, as WeHub).
    pub report_batch: Option<usize>,
    /// The whole ack, for anything else it carried (e.g. `reply_task_list`).
    pub ack: Ack,
}

/// A client for one control plane. Cheap to clone (the connection pool is shared).
#[derive(Debug, Clone)]
pub struct ControlClient {
    http: reqwest::Client,
    /// Serves plain `http://` URLs when no proxy is set (see [`crate::control::lean`]); reqwest
    /// serves the rest.
    lean: Option<std::sync::Arc<LeanClient>>,
    callback_url: Url,
    upload_url: Option<Url>,
    appid: String,
    secret: Option<Secret>,
    sign_requests: bool,
    timeout: Duration,
    machine_id: String,
}

impl ControlClient {
    /// Builds a client from `[control]`. Needs `callback_url`, and `secret_key` when
    /// `sign_requests` is on. No cookies are kept and redirects are not followed (a signed
    /// request must reach the configured URL or fail visibly).
    pub fn new(cfg: &ControlConfig, machine_id: String) -> Result<ControlClient, ControlError> {
        let callback_url = cfg
            .callback_url
            .clone()
            .ok_or(ControlError::NotConfigured {
                what: "control.callback_url",
            })?;
        if cfg.sign_requests && cfg.secret_key.is_none() {
            return Err(ControlError::NotConfigured {
                what: "control.secret_key (needed by control.sign_requests)",
            });
        }
        let connect_timeout = cfg.timeout.min(Duration::from_secs(10));
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(USER_AGENT)
            .use_preconfigured_tls(crate::tls::client_config().as_ref().clone())
            .build()
            .map_err(|source| ControlError::Client { source })?;
        let lean = crate::control::lean::usable_for(&callback_url, |name| std::env::var(name).ok())
            .then(|| std::sync::Arc::new(LeanClient::new(connect_timeout, USER_AGENT)));
        Ok(ControlClient {
            http,
            lean,
            callback_url,
            upload_url: cfg.upload_url.clone(),
            appid: cfg.appid.clone(),
            secret: cfg.secret_key.clone(),
            sign_requests: cfg.sign_requests,
            timeout: cfg.timeout,
            machine_id,
        })
    }

    /// The `machine_id` given at construction.
    pub fn machine_id(&self) -> &str {
        &self.machine_id
    }

    /// Whether an upload URL is configured.
    pub fn can_upload(&self) -> bool {
        self.upload_url.is_some()
    }

    /// The per-request timeout (`[control] timeout`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether requests are signed (B.6).
    pub fn signs_requests(&self) -> bool {
        self.sign_requests && self.secret.is_some()
    }

    /// The request envelope this client would send (its `appid`), for other transports.
    pub fn envelope(&self, action: &str, wxid: &str, data: Value) -> Request {
        Request::new(action, &self.appid, wxid, data)
    }

    /// The B.6 headers over `signed` (a body, or for a bodiless WebSocket upgrade its path and
    /// query); `None` when signing is off.
    pub(crate) fn sign(
        &self,
        signed: &[u8],
    ) -> Option<crate::control::signature::SignatureHeaders> {
        if !self.sign_requests {
            return None;
        }
        let secret = self.secret.as_ref()?;
        Some(sign_request(secret.expose(), signed, SystemTime::now()))
    }

    /// One envelope POST. Success is any 2xx; the body is read leniently ([`Ack::parse`]), so
    /// an empty or non-JSON body gives an ack with `parsed == false` (spec A.1: "no tasks" for
    /// every action but login; not "delivered" for a durable spool).
    pub async fn post(
        &self,
        action: &str,
        wxid: &str,
        data: Value,
        opts: PostOptions,
    ) -> Result<Ack, ControlError> {
        let mut request = Request::new(action, &self.appid, wxid, data);
        request.client_session = opts.client_session;
        let body = request.to_body();
        tracing::trace!(action, body = %String::from_utf8_lossy(&body), "control-plane request");
        let answer = self
            .send(
                action,
                &self.callback_url,
                "application/json",
                body,
                opts.event_id.as_deref(),
            )
            .await?;
        let ack = Ack::parse(&answer);
        if !ack.parsed {
            tracing::debug!(
                action,
                bytes = answer.len(),
                "control-plane answer is not a JSON object"
            );
        } else if !ack.is_ok() {
            tracing::debug!(action, error_code = ack.error_code, error_reason = %ack.error_reason, "control-plane ack carries an error");
        }
        Ok(ack)
    }

    /// [`post`](Self::post) retried by `policy` on retryable errors, stopped by `cancel`.
    pub async fn post_with_retry(
        &self,
        action: &str,
        wxid: &str,
        data: Value,
        opts: PostOptions,
        policy: &RetryPolicy,
        cancel: &CancellationToken,
    ) -> Result<Ack, ControlError> {
        with_retry(action, policy, cancel, || {
            self.post(action, wxid, data.clone(), opts.clone())
        })
        .await
    }

    /// `login` (spec A.4). Fails with [`ControlError::Json`] on a non-JSON answer,
    /// [`ControlError::LoginRefused`] on a non-zero `error_code`, and — when a secret is
    /// configured — [`ControlError::SignatureFailed`] when the signature is missing or wrong.
    pub async fn login(&self, wxid: &str, data: &LoginData) -> Result<LoginAck, ControlError> {
        let ack = self
            .post(action::LOGIN, wxid, data.to_data(), PostOptions::default())
            .await?;
        if !ack.parsed {
            return Err(ControlError::Json {
                action: action::LOGIN.to_owned(),
                detail: "the answer is not a JSON object".to_owned(),
            });
        }
        if !ack.is_ok() {
            return Err(ControlError::LoginRefused {
                code: ack.error_code,
                reason: ack.error_reason.clone(),
            });
        }
        if let Some(secret) = &self.secret {
            let Some(signature) = ack.signature() else {
                return Err(ControlError::SignatureFailed {
                    detail: "login_ack has no signature".to_owned(),
                });
            };
            if !verify_login_signature(wxid, &data.nonce, secret.expose(), &signature) {
                return Err(ControlError::SignatureFailed {
                    detail: "login_ack signature does not match the secret".to_owned(),
                });
            }
        }
        Ok(LoginAck {
            flag_report_contact: ack.flag_report_contact().unwrap_or(contact_flag::ALL),
            websocket: ack.websocket(),
            report_batch: ack.report_batch(),
            ack,
        })
    }

    /// `pull_task`: the one task the server handed out, if any, with its task id (`""` when
    /// the server sent none). Workers send `data: {}`; the supervisor sends
    /// [`PullTaskData`](crate::control::reports::PullTaskData) with `wxid: ""`.
    pub async fn pull_task(
        &self,
        wxid: &str,
        data: Value,
    ) -> Result<Option<(String, RawTask)>, ControlError> {
        let ack = self
            .post(action::PULL_TASK, wxid, data, PostOptions::default())
            .await?;
        Ok(ack.pulled_task())
    }

    /// One report, single attempt (a spool drives retries). `event_id` goes in the
    /// `X-Wxagent-Event-Id` header. Any `ack_type` is accepted.
    pub async fn report(
        &self,
        action: &str,
        wxid: &str,
        data: Value,
        event_id: Option<&str>,
    ) -> Result<Ack, ControlError> {
        let opts = PostOptions {
            event_id: event_id.map(str::to_owned),
            client_session: None,
        };
        self.post(action, wxid, data, opts).await
    }

    /// A typed report: [`report`](Self::report) with the payload's own action.
    pub async fn send_report<R: Report>(
        &self,
        wxid: &str,
        payload: &R,
        event_id: Option<&str>,
    ) -> Result<Ack, ControlError> {
        self.report(R::ACTION, wxid, payload.to_data(), event_id)
            .await
    }

    /// `report_task_result` for a pulled task (1 ok / 0 failed).
    pub async fn report_task_result(
        &self,
        wxid: &str,
        task_id: &str,
        ok: bool,
        error_reason: &str,
    ) -> Result<Ack, ControlError> {
        let result = if ok {
            TaskResult::ok(task_id)
        } else {
            TaskResult::failed(task_id, error_reason)
        };
        self.send_report(wxid, &result, None).await
    }

    /// `logout`; the server's exit flags (both `false` when it sent none or a non-JSON answer).
    pub async fn logout(&self, wxid: &str, data: &LogoutData) -> Result<ExitFlags, ControlError> {
        let ack = self
            .post(action::LOGOUT, wxid, data.to_data(), PostOptions::default())
            .await?;
        Ok(ack.exit_flags())
    }

    pub(crate) fn upload_url(&self) -> Result<&Url, ControlError> {
        self.upload_url.as_ref().ok_or(ControlError::NotConfigured {
            what: "control.upload_url",
        })
    }

    /// POSTs `body` as is (signed when configured) and returns the 2xx answer's bytes.
    pub(crate) async fn send(
        &self,
        action: &str,
        url: &Url,
        content_type: &str,
        body: Vec<u8>,
        event_id: Option<&str>,
    ) -> Result<Bytes, ControlError> {
        let signed = self
            .sign_requests
            .then_some(self.secret.as_ref())
            .flatten()
            .map(|secret| sign_request(secret.expose(), &body, SystemTime::now()));
        let mut headers: Vec<(&str, &str)> = vec![(CONTENT_TYPE.as_str(), content_type)];
        if let Some(signed) = &signed {
            headers.push((TIMESTAMP_HEADER, &signed.timestamp));
            headers.push((SIGNATURE_HEADER, &signed.signature));
        }
        if let Some(id) = event_id {
            headers.push((EVENT_ID_HEADER, id));
        }
        let started = tokio::time::Instant::now();
        let (status, answer) = match &self.lean {
            Some(lean) if url.scheme() == "http" => {
                let exchange = lean.post(url, &headers, body, MAX_RESPONSE_BYTES);
                match tokio::time::timeout(self.timeout, exchange).await {
                    Ok(Ok(answered)) => answered,
                    Ok(Err(LeanError::TooLarge(_))) => return Err(answer_too_large(action)),
                    Ok(Err(e)) => {
                        return Err(ControlError::Http {
                            action: action.to_owned(),
                            source: Box::new(e),
                        });
                    }
                    Err(_) => {
                        return Err(ControlError::Timeout {
                            action: action.to_owned(),
                            after: self.timeout,
                        });
                    }
                }
            }
            _ => self.send_with_reqwest(action, url, &headers, body).await?,
        };
        tracing::debug!(action, status = status.as_u16(), elapsed = ?started.elapsed(), "control-plane answer");
        if !status.is_success() {
            return Err(ControlError::Status {
                action: action.to_owned(),
                status,
            });
        }
        Ok(answer)
    }

    /// [`send`](Self::send) through reqwest: `https://`, or a proxy in the environment.
    async fn send_with_reqwest(
        &self,
        action: &str,
        url: &Url,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<(reqwest::StatusCode, Bytes), ControlError> {
        let mut req = self.http.post(url.clone());
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let mut resp = req
            .body(body)
            .send()
            .await
            .map_err(|e| self.transport_error(action, e))?;
        let status = resp.status();
        if !status.is_success() {
            return Ok((status, Bytes::new()));
        }
        let mut answer = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| self.transport_error(action, e))?
        {
            if answer.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(answer_too_large(action));
            }
            answer.extend_from_slice(&chunk);
        }
        Ok((status, Bytes::from(answer)))
    }

    fn transport_error(&self, action: &str, e: reqwest::Error) -> ControlError {
        if e.is_timeout() {
            ControlError::Timeout {
                action: action.to_owned(),
                after: self.timeout,
            }
        } else {
            ControlError::Http {
                action: action.to_owned(),
                source: Box::new(e.without_url()),
            }
        }
    }
}

/// An answer over [`MAX_RESPONSE_BYTES`], whichever client read it.
fn answer_too_large(action: &str) -> ControlError {
    ControlError::Json {
        action: action.to_owned(),
        detail: format!("the answer is larger than {MAX_RESPONSE_BYTES} bytes"),
    }
}

/// This machine's host name, or `localhost` when it cannot be read.
pub fn host_name() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.trim().is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// `<host>_<pid>`: how WeHub names a worker process (spec A.9 item 5).
pub fn process_machine_id(host: &str) -> String {
    format!("{host}_{}", std::process::id())
}

/// [`process_machine_id`] of [`host_name`].
pub fn machine_id() -> String {
    process_machine_id(&host_name())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A `[control]` for tests: an unreachable loopback callback URL, no secret, defaults.
    pub(crate) fn config() -> ControlConfig {
        ControlConfig {
            callback_url: Some(Url::parse("http://127.0.0.1:9/cb").unwrap()),
            upload_url: None,
            appid: "app".into(),
            secret_key: None,
            poll_interval: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            sign_requests: false,
            ws_window: 64,
            http_batch: 64,
        }
    }

    /// The lean client and reqwest put the same request on the wire (reqwest serves `https://`
    /// and proxied control planes, which the tests cannot reach, so it is compared here).
    #[tokio::test]
    async fn both_transports_send_the_same_request() {
        let server = crate::testutil::http_server(
            "/wehub/callback",
            crate::testutil::COMMON_ACK,
            usize::MAX,
        )
        .await;
        let mut cfg = config();
        cfg.callback_url = Some(server.url.clone());
        cfg.sign_requests = true;
        cfg.secret_key = Some(Secret::new("s3cret".to_owned()));
        let mut lean = ControlClient::new(&cfg, "m".into()).unwrap();
        lean.lean = Some(std::sync::Arc::new(LeanClient::new(
            Duration::from_secs(5),
            USER_AGENT,
        )));
        let mut plain = lean.clone();
        plain.lean = None;
        for client in [&lean, &plain] {
            let ack = client
                .report(
                    "report_new_msg",
                    "wxid_me",
                    serde_json::json!({"msg": {}}),
                    Some("ev-1"),
                )
                .await
                .unwrap();
            assert!(ack.parsed && ack.is_ok(), "{ack:?}");
        }
        assert_eq!(server.accepted(), 2);
        // Header lines, lower-cased, without the per-second timestamp and signature values.
        let lines = |head: &str| -> Vec<String> {
            let mut lines: Vec<String> = head
                .to_ascii_lowercase()
                .lines()
                .map(|line| match line.split_once(':') {
                    Some((name, _))
                        if name.starts_with("x-wxagent-timestamp")
                            || name.starts_with("x-wxagent-signature") =>
                    {
                        name.to_owned()
                    }
                    _ => line.to_owned(),
                })
                .collect();
            lines.sort();
            lines
        };
        let heads = server.heads.lock().unwrap();
        assert_eq!(heads.len(), 2);
        assert_eq!(lines(&heads[0]), lines(&heads[1]), "lean vs reqwest");
        for expected in [
            "content-type: application/json",
            "x-wxagent-event-id: ev-1",
            "x-wxagent-signature",
            "x-wxagent-timestamp",
            "accept: */*",
        ] {
            assert!(
                lines(&heads[0]).iter().any(|l| l == expected),
                "{expected} in {}",
                heads[0]
            );
        }
    }

    #[test]
    fn machine_id_is_host_and_pid() {
        assert_eq!(
            process_machine_id("box"),
            format!("box_{}", std::process::id())
        );
        let id = machine_id();
        assert!(id.ends_with(&format!("_{}", std::process::id())), "{id}");
        assert!(id.len() > format!("_{}", std::process::id()).len());
    }

    #[test]
    fn construction_checks_the_config() {
        let mut cfg = config();
        assert!(ControlClient::new(&cfg, "m".into()).is_ok());
        cfg.sign_requests = true;
        let err = ControlClient::new(&cfg, "m".into()).unwrap_err();
        assert!(matches!(err, ControlError::NotConfigured { .. }), "{err}");
        cfg.secret_key = Some(Secret::new("s3cret-value"));
        let client = ControlClient::new(&cfg, "m".into()).unwrap();
        assert!(!format!("{client:?}").contains("s3cret-value"));
        assert!(!client.can_upload());
        cfg.callback_url = None;
        assert!(matches!(
            ControlClient::new(&cfg, "m".into()),
            Err(ControlError::NotConfigured {
                what: "control.callback_url"
            })
        ));
    }
}
