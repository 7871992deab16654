//! The local admin API of the supervisor (`[agent] admin_listen`, loopback by default):
//! `GET /status` (JSON sessions), `GET /healthz`; and the `wxagent status` client that prints
//! the sessions as a table.

use super::registry::{Registry, SessionStatus, now_ms};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    pub machine_id: String,
    pub pid: u32,
    pub max_sessions: usize,
    pub sessions: Vec<SessionStatus>,
}

#[derive(Clone)]
struct AdminState {
    registry: Arc<Registry>,
    machine_id: String,
    max_sessions: usize,
}

/// Binds the admin API and serves it until `shutdown`. Returns the bound address.
pub async fn serve(
    listen: SocketAddr,
    registry: Arc<Registry>,
    machine_id: String,
    max_sessions: usize,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("admin API: cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/status", get(status))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(AdminState {
            registry,
            machine_id,
            max_sessions,
        });
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

async fn status(State(st): State<AdminState>) -> Json<StatusReport> {
    Json(StatusReport {
        machine_id: st.machine_id,
        pid: std::process::id(),
        max_sessions: st.max_sessions,
        sessions: st.registry.snapshot(),
    })
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
pub async fn fetch_status(listen: SocketAddr) -> anyhow::Result<StatusReport> {
    let url = format!("http://{listen}/status");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let resp = client.get(&url).send().await.map_err(|e| {
        anyhow::anyhow!(
            "no supervisor answering on {listen} ({}); is `wxagent run` running?",
            e.without_url()
        )
    })?;
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
    let rows: Vec<[String; 6]> = report
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
                s.restarts.to_string(),
            ]
        })
        .collect();
    let header = ["SESSION", "PID", "STATE", "ACCOUNT", "SINCE", "RESTARTS"];
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
        );
        assert!(lines[3].contains("restarting") && lines[3].contains("2m ago"));
    }
}
