//! Fault injection and request statistics for the protocol routes: per-route probabilities of an
//! HTTP 500, a dropped connection or a garbled body, plus added latency; counters per route.
//!
//! Timing of the effects: a 500 is answered before the handler runs (the request has no effect);
//! "drop" and "malformed" run the handler first (its effect happens, the answer is lost or
//! broken), which is the harder case for a client's at-least-once logic.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::state::Sim;

/// Faults for one route (or `"*"`). Probabilities are in [0, 1] and are tried in the order
/// http500, drop, malformed with a single roll, so their sum is the total fault rate.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FaultSpec {
    #[serde(default)]
    pub http500: f64,
    #[serde(default)]
    pub drop: f64,
    #[serde(default)]
    pub malformed: f64,
    #[serde(default)]
    pub latency_ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FaultRequest {
    pub route: String,
    #[serde(flatten)]
    pub spec: FaultSpec,
}

impl FaultSpec {
    pub(crate) fn validate(&self) -> Result<(), String> {
        for (name, p) in [
            ("http500", self.http500),
            ("drop", self.drop),
            ("malformed", self.malformed),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("{name} must be a probability in [0, 1]"));
            }
        }
        if self.http500 + self.drop + self.malformed > 1.0 + 1e-9 {
            return Err("http500 + drop + malformed must not exceed 1".into());
        }
        if self.latency_ms > 120_000 {
            return Err("latency_ms must be at most 120000".into());
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
pub(crate) struct Faults {
    pub routes: HashMap<String, FaultSpec>,
}

impl Faults {
    fn for_route(&self, route: &str) -> Option<FaultSpec> {
        self.routes
            .get(route)
            .or_else(|| self.routes.get("*"))
            .cloned()
    }

    pub(crate) fn to_json(&self) -> Value {
        json!({"faults": self.routes})
    }
}

#[derive(Debug, Default)]
pub(crate) struct Stats {
    requests: Mutex<HashMap<String, u64>>,
    pub http500: AtomicU64,
    pub dropped: AtomicU64,
    pub malformed: AtomicU64,
    pub delayed: AtomicU64,
    pub open_synccheck: AtomicI64,
    pub open_login_polls: AtomicI64,
}

/// Counts a long poll as open for as long as it lives.
pub(crate) struct OpenPoll<'a>(&'a AtomicI64);

impl<'a> OpenPoll<'a> {
    pub(crate) fn new(gauge: &'a AtomicI64) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        OpenPoll(gauge)
    }
}

impl Drop for OpenPoll<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Stats {
    fn count(&self, route: &str) {
        let mut g = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        match g.get_mut(route) {
            Some(n) => *n += 1,
            None => {
                g.insert(route.to_string(), 1);
            }
        }
    }

    pub(crate) fn to_json(&self, sessions_alive: usize, accounts: usize) -> Value {
        let requests = self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        json!({
            "requests": requests,
            "faults_injected": {
                "http500": self.http500.load(Ordering::Relaxed),
                "drop": self.dropped.load(Ordering::Relaxed),
                "malformed": self.malformed.load(Ordering::Relaxed),
                "latency": self.delayed.load(Ordering::Relaxed),
            },
            "open_long_polls": self.open_synccheck.load(Ordering::Relaxed),
            "open_login_polls": self.open_login_polls.load(Ordering::Relaxed),
            "sessions_alive": sessions_alive,
            "accounts": accounts,
        })
    }
}

/// The route name used for statistics and fault selection: the endpoint name for
/// `/cgi-bin/mmwebwx-bin/<x>`, else the first path segment (`jslogin`, `qrcode`, `l`), `root`
/// for `/`, or `None` for the test-control API.
pub(crate) fn route_name(path: &str) -> Option<String> {
    if let Some(rest) = path.strip_prefix("/cgi-bin/mmwebwx-bin/") {
        return Some(rest.split('/').next().unwrap_or("").to_ascii_lowercase());
    }
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    match first {
        "__sim" => None,
        "" => Some("root".into()),
        other => Some(other.to_ascii_lowercase()),
    }
}

enum Roll {
    None,
    Http500,
    Drop,
    Malformed,
}

fn roll(spec: &FaultSpec) -> Roll {
    let total = spec.http500 + spec.drop + spec.malformed;
    if total <= 0.0 {
        return Roll::None;
    }
    let r: f64 = rand::random();
    if r < spec.http500 {
        Roll::Http500
    } else if r < spec.http500 + spec.drop {
        Roll::Drop
    } else if r < total {
        Roll::Malformed
    } else {
        Roll::None
    }
}

const MAX_BUFFERED_BODY: usize = 64 * 1024 * 1024;

/// Middleware on every protocol route: counts the request and applies the configured faults.
pub(crate) async fn middleware(State(sim): State<Arc<Sim>>, req: Request, next: Next) -> Response {
    let Some(route) = route_name(req.uri().path()) else {
        sim.stats.count("__sim");
        return next.run(req).await;
    };
    sim.stats.count(&route);
    let spec = {
        let g = sim.faults.read().unwrap_or_else(|p| p.into_inner());
        g.for_route(&route)
    };
    let Some(spec) = spec else {
        return next.run(req).await;
    };
    if spec.latency_ms > 0 {
        sim.stats.delayed.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(spec.latency_ms)).await;
    }
    match roll(&spec) {
        Roll::None => next.run(req).await,
        Roll::Http500 => {
            sim.stats.http500.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(route, "sim fault: http 500");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal server error").into_response()
        }
        Roll::Drop => {
            let resp = next.run(req).await;
            sim.stats.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(route, "sim fault: dropped connection");
            dropped(resp).await
        }
        Roll::Malformed => {
            let resp = next.run(req).await;
            sim.stats.malformed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(route, "sim fault: malformed body");
            malformed(resp).await
        }
    }
}

/// Sends the headers and half the body, then fails the body stream so the server aborts the
/// connection: the client sees an incomplete response.
async fn dropped(resp: Response) -> Response {
    let (mut parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_BUFFERED_BODY)
        .await
        .unwrap_or_default();
    let full_len = bytes.len().max(16);
    let half = bytes.slice(..bytes.len() / 2);
    parts.headers.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from_str(&full_len.to_string()).unwrap_or(HeaderValue::from_static("16")),
    );
    let stream = futures::stream::iter(vec![
        Ok::<Bytes, std::io::Error>(half),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "sim fault: dropped",
        )),
    ]);
    Response::from_parts(parts, Body::from_stream(stream))
}

/// Answers 200 with a truncated, garbled version of the real body.
async fn malformed(resp: Response) -> Response {
    let (mut parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_BUFFERED_BODY)
        .await
        .unwrap_or_default();
    let mut garbled = bytes[..bytes.len() / 2].to_vec();
    garbled.extend_from_slice(b"\x00\xff<<}{garbled");
    parts.status = StatusCode::OK;
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::LOCATION);
    Response::from_parts(parts, Body::from(garbled))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_names() {
        assert_eq!(
            route_name("/cgi-bin/mmwebwx-bin/synccheck").as_deref(),
            Some("synccheck")
        );
        assert_eq!(route_name("/jslogin").as_deref(), Some("jslogin"));
        assert_eq!(route_name("/qrcode/abc==").as_deref(), Some("qrcode"));
        assert_eq!(route_name("/").as_deref(), Some("root"));
        assert_eq!(route_name("/__sim/stats"), None);
    }

    #[test]
    fn spec_validation() {
        assert!(
            FaultSpec {
                http500: 0.5,
                drop: 0.6,
                ..Default::default()
            }
            .validate()
            .is_err()
        );
        assert!(
            FaultSpec {
                malformed: -0.1,
                ..Default::default()
            }
            .validate()
            .is_err()
        );
        assert!(
            FaultSpec {
                http500: 1.0,
                ..Default::default()
            }
            .validate()
            .is_ok()
        );
    }

    #[test]
    fn certain_faults_always_fire() {
        let s = FaultSpec {
            drop: 1.0,
            ..Default::default()
        };
        for _ in 0..50 {
            assert!(matches!(roll(&s), Roll::Drop));
        }
        assert!(matches!(roll(&FaultSpec::default()), Roll::None));
    }
}
