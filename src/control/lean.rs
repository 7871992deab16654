//! A lean HTTP/1.1 client for a plain `http://` control plane: hyper's connection API over
//! kept-alive TCP connections, without reqwest's layers (redirect bookkeeping that parses the
//! URL again on every request, retry and timeout services, header maps built per request).
//!
//! Why: an idle worker's only work is a `pull_task` every `poll_interval`, and with a thousand
//! workers those requests are most of the machine's idle CPU (docs/PERFORMANCE.md, round five).
//! Each runs in a process that has just woken up with cold caches, so every layer a request
//! passes through is paid for in full.
//!
//! What it does not do, and [`ControlClient`](super::client::ControlClient) keeps reqwest for:
//! `https://` URLs (TLS, and HTTP/2 where the server offers it) and proxies set in the
//! environment (`http_proxy`, `all_proxy`, in either case), see [`usable_for`].
//!
//! Behaviour that matches reqwest's: `Host`, `User-Agent` and `Accept: */*` headers,
//! `Content-Length` from the body, `TCP_NODELAY`, redirects not followed, a connect timeout per
//! address tried. A request sent on a kept-alive connection that turns out to be closed before
//! anything was written is sent again on a new connection; once written it is never repeated
//! here (a POST is not idempotent: the spool's retry and event ids deal with that).

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{ACCEPT, HOST, HeaderValue, USER_AGENT};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use std::sync::Mutex;
use std::time::Duration;
use url::Url;

/// Kept-alive connections kept per client (the delivery task, the task poller and a task's
/// own report can each hold one at a time).
const MAX_IDLE: usize = 4;

/// Whether the lean client can serve `url` in an environment where `var` reads a variable:
/// plain `http://` with a host, and no proxy configured for it.
pub fn usable_for(url: &Url, var: impl Fn(&str) -> Option<String>) -> bool {
    let proxied = ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"]
        .iter()
        .any(|name| var(name).is_some_and(|v| !v.trim().is_empty()));
    url.scheme() == "http" && url.host().is_some() && !proxied
}

/// Where a connection goes: host (without IPv6 brackets) and port.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    host: String,
    port: u16,
}

impl Origin {
    fn of(url: &Url) -> Option<Origin> {
        let host = match url.host()? {
            url::Host::Domain(d) => d.to_owned(),
            url::Host::Ipv4(a) => a.to_string(),
            url::Host::Ipv6(a) => a.to_string(),
        };
        Some(Origin {
            host,
            port: url.port_or_known_default()?,
        })
    }
}

/// Why a request failed. Never names the URL (its query may carry credentials).
#[derive(Debug, thiserror::Error)]
pub enum LeanError {
    #[error("the URL has no host or port")]
    NoOrigin,
    #[error("cannot resolve the control plane's host")]
    Resolve(#[source] std::io::Error),
    #[error("cannot connect to the control plane")]
    Connect(#[source] std::io::Error),
    #[error("HTTP exchange failed")]
    Http(#[source] hyper::Error),
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
    #[error("a request header is not valid: {0}")]
    Header(&'static str),
}

/// The client: a few idle kept-alive connections, shared by clones of the owner.
#[derive(Debug)]
pub struct LeanClient {
    idle: Mutex<Vec<(Origin, SendRequest<Full<Bytes>>)>>,
    connect_timeout: Duration,
    user_agent: HeaderValue,
}

impl LeanClient {
    pub fn new(connect_timeout: Duration, user_agent: &'static str) -> LeanClient {
        LeanClient {
            idle: Mutex::new(Vec::new()),
            connect_timeout,
            user_agent: HeaderValue::from_static(user_agent),
        }
    }

    /// POSTs `body` to `url` with `headers` and returns the status and the whole answer (at
    /// most `limit` bytes). The caller applies the overall timeout.
    pub async fn post(
        &self,
        url: &Url,
        headers: &[(&str, &str)],
        body: Vec<u8>,
        limit: usize,
    ) -> Result<(StatusCode, Bytes), LeanError> {
        let origin = Origin::of(url).ok_or(LeanError::NoOrigin)?;
        let mut request = self.request(url, headers, body)?;
        loop {
            let (mut sender, reused) = match self.checkout(&origin).await {
                Some(sender) => (sender, true),
                None => (self.connect(&origin).await?, false),
            };
            let response = match sender.try_send_request(request).await {
                Ok(response) => response,
                Err(mut failed) => match failed.take_message() {
                    // Nothing was written on a connection that had been idle: try a new one.
                    Some(unsent) if reused => {
                        request = unsent;
                        continue;
                    }
                    _ => return Err(LeanError::Http(failed.into_error())),
                },
            };
            let status = response.status();
            let answer = Limited::new(response.into_body(), limit)
                .collect()
                .await
                .map_err(|e| match e.downcast::<hyper::Error>() {
                    Ok(e) => LeanError::Http(*e),
                    Err(_) => LeanError::TooLarge(limit),
                })?
                .to_bytes();
            self.checkin(origin, sender);
            return Ok((status, answer));
        }
    }

    fn request(
        &self,
        url: &Url,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Request<Full<Bytes>>, LeanError> {
        let host = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        let target = &url[url::Position::BeforePath..url::Position::AfterQuery];
        let mut builder = Request::post(if target.is_empty() { "/" } else { target })
            .header(HOST, host)
            .header(USER_AGENT, self.user_agent.clone())
            .header(ACCEPT, HeaderValue::from_static("*/*"));
        for (name, value) in headers {
            let value = HeaderValue::from_str(value).map_err(|_| LeanError::Header("value"))?;
            builder = builder.header(*name, value);
        }
        builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|_| LeanError::Header("request line"))
    }

    /// An idle connection to `origin` that is still open, if any.
    async fn checkout(&self, origin: &Origin) -> Option<SendRequest<Full<Bytes>>> {
        loop {
            let mut sender = {
                let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                let at = idle.iter().rposition(|(o, _)| o == origin)?;
                idle.swap_remove(at).1
            };
            if !sender.is_closed() && sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    fn checkin(&self, origin: Origin, sender: SendRequest<Full<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.iter().filter(|(o, _)| *o == origin).count() < MAX_IDLE {
            idle.push((origin, sender));
        }
    }

    async fn connect(&self, origin: &Origin) -> Result<SendRequest<Full<Bytes>>, LeanError> {
        let addrs = tokio::net::lookup_host((origin.host.as_str(), origin.port))
            .await
            .map_err(LeanError::Resolve)?;
        let mut last = None;
        let mut stream = None;
        for addr in addrs {
            match tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect(addr))
                .await
            {
                Ok(Ok(s)) => {
                    stream = Some(s);
                    break;
                }
                Ok(Err(e)) => last = Some(e),
                Err(_) => {
                    last = Some(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no connection within {:?}", self.connect_timeout),
                    ));
                }
            }
        }
        let stream = stream.ok_or_else(|| {
            LeanError::Connect(last.unwrap_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, "the host has no address")
            }))
        })?;
        // Small requests answered at once: don't let Nagle hold the body back.
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(LeanError::Http)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "control-plane connection ended");
            }
        });
        Ok(sender)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::http_server;

    const CALLBACK: &str = "/wehub/callback?k=v";

    #[test]
    fn used_for_plain_http_without_a_proxy_only() {
        let none = |_: &str| None;
        let http = Url::parse("http://127.0.0.1:8080/cb").unwrap();
        assert!(usable_for(&http, none));
        assert!(!usable_for(
            &Url::parse("https://example.invalid/cb").unwrap(),
            none
        ));
        for name in ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"] {
            let proxy = |n: &str| (n == name).then(|| "http://127.0.0.1:3128".to_owned());
            assert!(!usable_for(&http, proxy), "{name} set");
        }
        let blank = |_: &str| Some(" ".to_owned());
        assert!(
            usable_for(&http, blank),
            "an empty proxy variable is no proxy"
        );
    }

    #[tokio::test]
    async fn keeps_one_connection_alive_and_sends_the_expected_head() {
        let server = http_server(CALLBACK, "{}", usize::MAX).await;
        let url = &server.url;
        let client = LeanClient::new(Duration::from_secs(5), "wxagent/test");
        let content_type = ("Content-Type", "application/json");
        for i in 0..3 {
            let (status, body) = client
                .post(
                    url,
                    &[content_type],
                    format!("{{\"n\":{i}}}").into_bytes(),
                    1024,
                )
                .await
                .unwrap();
            assert_eq!(status, StatusCode::OK);
            assert_eq!(&body[..], b"{}");
        }
        assert_eq!(server.accepted(), 1, "one kept-alive connection");
        let heads = server.heads.lock().unwrap();
        assert_eq!(heads.len(), 3);
        let head = heads[0].to_ascii_lowercase();
        assert!(
            head.starts_with("post /wehub/callback?k=v http/1.1\r\n"),
            "{head}"
        );
        for line in [
            format!("host: {}", url.authority()),
            "user-agent: wxagent/test".to_owned(),
            "accept: */*".to_owned(),
            "content-type: application/json".to_owned(),
            "content-length: 7".to_owned(),
        ] {
            assert!(head.contains(&line), "{line} missing from {head}");
        }
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_replaced() {
        let server = http_server(CALLBACK, "{}", 1).await;
        let client = LeanClient::new(Duration::from_secs(5), "wxagent/test");
        for _ in 0..3 {
            client
                .post(&server.url, &[], b"{}".to_vec(), 1024)
                .await
                .unwrap();
        }
        assert_eq!(
            server.heads.lock().unwrap().len(),
            3,
            "every request served once"
        );
        assert_eq!(server.accepted(), 3);
    }

    #[tokio::test]
    async fn answers_over_the_limit_and_refused_connections_are_errors() {
        let server = http_server(CALLBACK, "0123456789", usize::MAX).await;
        let client = LeanClient::new(Duration::from_secs(5), "wxagent/test");
        let e = client
            .post(&server.url, &[], Vec::new(), 4)
            .await
            .unwrap_err();
        assert!(matches!(e, LeanError::TooLarge(4)), "{e:?}");
        // A port nobody listens on (bound, then released).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let closed = Url::parse(&format!("http://127.0.0.1:{port}/cb")).unwrap();
        let e = client.post(&closed, &[], Vec::new(), 4).await.unwrap_err();
        assert!(matches!(e, LeanError::Connect(_)), "{e:?}");
        assert!(!e.to_string().contains(&port.to_string()), "no URL in {e}");
    }
}
