//! The local admin API of the supervisor (`[agent] admin_listen`, loopback by default):
//! the dashboard page at `/`, `GET /status` (JSON sessions), `GET /metrics` (see
//! [`super::metrics`]), `GET /healthz`, `GET /qr/<session>.png` (the QR code a waiting session
//! shows, which its worker keeps in `sessions/<id>/qr.png`); and the `wxagent status` client
//! that prints the sessions as a table.
//!
//! With `[agent] admin_token` every endpoint but `/healthz` wants `Authorization: Bearer
//! <token>` (compared in constant time); the page itself also takes `?token=` once, since a
//! browser cannot send a header when it navigates. Without a token the API must stay on
//! loopback ([`crate::config::admin_listen_refusal`], checked again before binding).

use super::registry::{Registry, SessionStatus, now_ms};
use crate::config::Secret;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    pub machine_id: String,
    pub pid: u32,
    pub max_sessions: usize,
    pub sessions: Vec<SessionStatus>,
}

/// What the admin API needs from the configuration.
#[derive(Debug, Clone)]
pub struct AdminOptions {
    pub listen: SocketAddr,
    pub token: Option<Secret>,
    /// `/healthz` fails when an online session has not synced for longer.
    pub max_sync_age: Duration,
    pub state_dir: PathBuf,
    pub machine_id: String,
    pub max_sessions: usize,
}

#[derive(Clone)]
struct AdminState {
    registry: Arc<Registry>,
    opts: Arc<AdminOptions>,
}

const DASHBOARD: &str = include_str!("dashboard.html");

/// Binds the admin API and serves it until `shutdown`. Returns the bound address.
pub async fn serve(
    opts: AdminOptions,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listen = opts.listen;
    if let Some(why) = crate::config::admin_listen_refusal(listen, opts.token.is_some()) {
        anyhow::bail!("admin API: refusing to listen: {why}");
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("admin API: cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    let app = router(registry, opts);
    let handle = tokio::spawn(async move {
        let r = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "admin API stopped");
        }
    });
    Ok((addr, handle))
}

fn router(registry: Arc<Registry>, opts: AdminOptions) -> Router {
    let state = AdminState {
        registry,
        opts: Arc::new(opts),
    };
    let guarded = Router::new()
        .route("/", get(dashboard))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/qr/{file}", get(qr))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(guarded)
        .with_state(state)
}

/// Whether `given` is the token, without a timing signal of how much of it matched (both sides
/// are hashed first, so not even the length leaks).
fn token_matches(expected: &Secret, given: &str) -> bool {
    let a = Sha256::digest(expected.expose().as_bytes());
    let b = Sha256::digest(given.as_bytes());
    a.as_slice().ct_eq(b.as_slice()).into()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The page's one-time `?token=` (only `/` accepts it).
fn query_token(req: &Request) -> Option<String> {
    if req.uri().path() != "/" {
        return None;
    }
    let query = req.uri().query()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
}

async fn authorize(State(st): State<AdminState>, req: Request, next: Next) -> Response {
    let Some(expected) = &st.opts.token else {
        return next.run(req).await;
    };
    let ok = match bearer(req.headers()) {
        Some(given) => token_matches(expected, given),
        None => query_token(&req).is_some_and(|given| token_matches(expected, &given)),
    };
    if ok {
        return next.run(req).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "missing or wrong bearer token\n",
    )
        .into_response()
}

async fn dashboard() -> Response {
    ([(header::CACHE_CONTROL, "no-store")], Html(DASHBOARD)).into_response()
}

async fn status(State(st): State<AdminState>) -> Json<StatusReport> {
    Json(StatusReport {
        machine_id: st.opts.machine_id.clone(),
        pid: std::process::id(),
        max_sessions: st.opts.max_sessions,
        sessions: st.registry.snapshot(),
    })
}

async fn metrics(State(st): State<AdminState>) -> Response {
    match super::metrics::render(&st.registry) {
        Ok(text) => ([(header::CONTENT_TYPE, super::metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "could not encode the metrics");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot encode the metrics\n",
            )
                .into_response()
        }
    }
}

/// Online sessions whose last sync (or, before the first one, going online) is older than
/// `max_age`, with that age.
pub fn stale_sessions(
    sessions: &[SessionStatus],
    max_age: Duration,
    now_ms: u64,
) -> Vec<(String, Duration)> {
    sessions
        .iter()
        .filter(|s| s.state == "online")
        .filter_map(|s| {
            let last = s.last_sync_ms.unwrap_or(0).max(s.since_ms);
            let age = Duration::from_millis(now_ms.saturating_sub(last));
            (age > max_age).then(|| (s.id.clone(), age))
        })
        .collect()
}

async fn healthz(State(st): State<AdminState>) -> Response {
    let stale = stale_sessions(&st.registry.snapshot(), st.opts.max_sync_age, now_ms());
    if stale.is_empty() {
        return (StatusCode::OK, "ok\n").into_response();
    }
    let mut body = format!(
        "unhealthy: {} online session(s) not synced for over {}:\n",
        stale.len(),
        humantime::format_duration(st.opts.max_sync_age)
    );
    for (id, age) in stale {
        body.push_str(&format!("{id} (last sync {}s ago)\n", age.as_secs()));
    }
    (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
}

async fn qr(State(st): State<AdminState>, Path(file): Path<String>) -> Response {
    let not_found = || (StatusCode::NOT_FOUND, "no QR code for that session\n").into_response();
    let Some(id) = file.strip_suffix(".png") else {
        return not_found();
    };
    // The id becomes a path: only ids the supervisor runs, which it checked when starting them.
    let waiting = st
        .registry
        .snapshot()
        .iter()
        .any(|s| s.id == id && s.qr.is_some());
    if !waiting || !super::run::valid_session_id(id) {
        return not_found();
    }
    let path = crate::worker::supervised::qr_file(&st.opts.state_dir, id);
    match tokio::fs::read(&path).await {
        Ok(png) => (
            [
                (header::CONTENT_TYPE, "image/png"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            png,
        )
            .into_response(),
        Err(_) => not_found(),
    }
}

/// Where the supervisor records the admin API's bound address.
pub fn addr_file(state_dir: &std::path::Path) -> std::path::PathBuf {
    state_dir.join("admin.addr")
}

/// The address to reach the running supervisor's admin API: the configured one, or, when it
/// asked for port 0, the one the supervisor recorded in the state directory.
pub fn resolve_listen(
    listen: SocketAddr,
    state_dir: &std::path::Path,
) -> anyhow::Result<SocketAddr> {
    if listen.port() != 0 {
        return Ok(listen);
    }
    let path = addr_file(state_dir);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        anyhow::anyhow!(
            "admin_listen uses port 0 and {} is unreadable ({e}); is `wxagent run` running?",
            path.display()
        )
    })?;
    text.trim()
        .parse()
        .map_err(|e| anyhow::anyhow!("{}: not an address ({e})", path.display()))
}

/// `wxagent status`: fetches `/status` from the local supervisor and renders a table.
pub async fn fetch_status(
    listen: SocketAddr,
    token: Option<&Secret>,
) -> anyhow::Result<StatusReport> {
    let url = format!("http://{listen}/status");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let mut req = client.get(&url);
    if let Some(token) = token {
        req = req.bearer_auth(token.expose());
    }
    let resp = req.send().await.map_err(|e| {
        anyhow::anyhow!(
            "no supervisor answering on {listen} ({}); is `wxagent run` running?",
            e.without_url()
        )
    })?;
    if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
        anyhow::bail!(
            "supervisor at {listen} wants a bearer token: set [agent] admin_token to its token"
        );
    }
    if !resp.status().is_success() {
        anyhow::bail!("supervisor at {listen} answered HTTP {}", resp.status());
    }
    Ok(resp.json().await?)
}

pub fn render_table(report: &StatusReport) -> String {
    let mut out = format!(
        "supervisor {} (pid {}), {} of {} sessions\n",
        report.machine_id,
        report.pid,
        report.sessions.len(),
        report.max_sessions
    );
    if report.sessions.is_empty() {
        return out;
    }
    let now = now_ms();
    let rows: Vec<[String; 8]> = report
        .sessions
        .iter()
        .map(|s| {
            let account = match (&s.account, &s.nickname) {
                (Some(w), Some(n)) => format!("{n} ({w})"),
                (Some(w), None) => w.clone(),
                _ => "-".into(),
            };
            [
                s.id.clone(),
                s.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                s.state.clone(),
                account,
                format_age(now.saturating_sub(s.since_ms)),
                s.last_sync_ms
                    .map(|t| format_age(now.saturating_sub(t)))
                    .unwrap_or_else(|| "-".into()),
                s.spool_depth.to_string(),
                s.restarts.to_string(),
            ]
        })
        .collect();
    let header = [
        "SESSION",
        "PID",
        "STATE",
        "ACCOUNT",
        "SINCE",
        "LAST SYNC",
        "SPOOL",
        "RESTARTS",
    ];
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            l.push_str(c);
            if i + 1 < cells.len() {
                l.push_str(&" ".repeat(widths[i] - c.chars().count() + 2));
            }
        }
        l.push('\n');
        l
    };
    out.push_str(&line(header.to_vec()));
    for r in &rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

fn format_age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        _ => format!("{}h{}m ago", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lists_every_session() {
        let report = StatusReport {
            machine_id: "host".into(),
            pid: 7,
            max_sessions: 10,
            sessions: vec![
                SessionStatus {
                    id: "q1".into(),
                    pid: Some(123),
                    state: "online".into(),
                    account: Some("42".into()),
                    nickname: Some("Alice".into()),
                    since_ms: now_ms(),
                    restarts: 1,
                    last_exit: None,
                    last_sync_ms: Some(now_ms() - 7_000),
                    spool_depth: 17,
                    qr: None,
                    counters: Default::default(),
                    agent_pulls: false,
                },
                SessionStatus {
                    id: "q2".into(),
                    pid: None,
                    state: "restarting".into(),
                    account: None,
                    nickname: None,
                    since_ms: now_ms() - 120_000,
                    restarts: 3,
                    last_exit: Some("crashed".into()),
                    last_sync_ms: None,
                    spool_depth: 0,
                    qr: None,
                    counters: Default::default(),
                    agent_pulls: false,
                },
            ],
        };
        let t = render_table(&report);
        assert!(
            t.starts_with("supervisor host (pid 7), 2 of 10 sessions\n"),
            "{t}"
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert!(lines[1].starts_with("SESSION"));
        assert!(
            lines[2].contains("q1")
                && lines[2].contains("123")
                && lines[2].contains("Alice (42)")
                && lines[2].contains("online")
                && lines[2].contains("7s ago")
                && lines[2].contains(" 17 ")
        );
        assert!(lines[1].contains("LAST SYNC") && lines[1].contains("SPOOL"));
        assert!(lines[3].contains("restarting") && lines[3].contains("2m ago"));
    }

    fn online(id: &str, since_ms: u64, last_sync_ms: Option<u64>) -> SessionStatus {
        SessionStatus {
            id: id.into(),
            pid: Some(1),
            state: "online".into(),
            account: None,
            nickname: None,
            since_ms,
            restarts: 0,
            last_exit: None,
            last_sync_ms,
            spool_depth: 0,
            qr: None,
            counters: Default::default(),
            agent_pulls: false,
        }
    }

    #[test]
    fn stale_means_online_without_a_recent_sync() {
        let max = Duration::from_secs(60);
        let now = 1_000_000;
        let mut waiting = online("w", 0, None);
        waiting.state = "waiting_for_scan".into();
        let sessions = vec![
            online("fresh", 0, Some(now - 10_000)),
            online("stale", 0, Some(now - 61_000)),
            // Just online, no sync reported yet: going online counts as the last sign of life.
            online("new", now - 5_000, None),
            online("silent", now - 70_000, None),
            waiting,
        ];
        let stale: Vec<String> = stale_sessions(&sessions, max, now)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(stale, ["stale", "silent"]);
    }

    #[test]
    fn tokens_compare_whole() {
        let t = Secret::new("s3cret-token");
        assert!(token_matches(&t, "s3cret-token"));
        assert!(!token_matches(&t, "s3cret-toke"));
        assert!(!token_matches(&t, "s3cret-token2"));
        assert!(!token_matches(&t, ""));
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().expect("header"));
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().expect("header"));
        assert_eq!(bearer(&h), None);
    }
}
