//! Spawn and resume. Spawn: task 200 handed to the supervisor (the `pull_task_ack` that carries
//! it) → the worker's first QR PNG received by the control plane, one task at a time. Resume:
//! supervisor restarted → each saved session's `login` report received.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Serialize;
use tokio::time::Instant;

use super::lab::{Lab, SETUP_LIMIT};
use super::stats::{Summary, Table, ms};

#[derive(Debug, Clone, Serialize)]
pub struct SpawnResult {
    pub spawns: usize,
    /// Task handed out → QR PNG received, ms.
    pub spawn_ms: Summary,
    pub restarts: usize,
    pub resume_sessions: usize,
    /// Supervisor started → saved session's login report received, ms (one sample per session
    /// per restart).
    pub resume_ms: Summary,
}

pub async fn measure_spawn(lab: &mut Lab, n: usize) -> anyhow::Result<Summary> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let (id, task_id) = lab.queue_qr_task("spawn").await?;
        let deadline = Instant::now() + Duration::from_secs(120);
        let uploaded_us = loop {
            let uploads = lab.get("/__cp/uploads").await?;
            let hit = uploads["uploads"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|u| u["kind"] == "qr" && u["qr_session_id"] == id.as_str())
                .and_then(|u| u["mono_us"].as_u64());
            if let Some(us) = hit {
                break us;
            }
            if Instant::now() > deadline {
                bail!("no QR PNG for {id} within 120 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let tasks = lab.get("/__cp/tasks").await?;
        let delivered_us = tasks["tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["task_id"] == task_id.as_str())
            .and_then(|t| t["delivered_us"].as_u64())
            .with_context(|| format!("task {task_id} has no hand-out time"))?;
        samples.push(uploaded_us.saturating_sub(delivered_us) as f64 / 1000.0);
    }
    Ok(Summary::of(&samples))
}

pub async fn measure_resume(lab: &mut Lab, restarts: usize) -> anyhow::Result<Summary> {
    let wxids: Vec<String> = lab.sessions.iter().map(|s| s.wxid.clone()).collect();
    let mut samples = Vec::new();
    for _ in 0..restarts {
        lab.stop_agent().await?;
        let cursor = lab.get("/__cp/requests?since=18446744073709551615").await?["next"]
            .as_u64()
            .context("requests without next")?;
        let t0 = lab.clock().await?;
        lab.start_agent().await?;
        let deadline = Instant::now() + SETUP_LIMIT;
        let logins: HashMap<String, u64> = loop {
            let v = lab
                .get(&format!(
                    "/__cp/requests?action=login&status=200&since={cursor}"
                ))
                .await?;
            let mut seen: HashMap<String, u64> = HashMap::new();
            for r in v["requests"].as_array().into_iter().flatten() {
                if let (Some(w), Some(us)) = (r["wxid"].as_str(), r["mono_us"].as_u64()) {
                    seen.entry(w.to_owned()).or_insert(us);
                }
            }
            if wxids.iter().all(|w| seen.contains_key(w)) {
                break seen;
            }
            if Instant::now() > deadline {
                bail!(
                    "{} of {} saved sessions came back online",
                    seen.len(),
                    wxids.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        samples.extend(
            wxids
                .iter()
                .filter_map(|w| logins.get(w))
                .map(|us| us.saturating_sub(t0) as f64 / 1000.0),
        );
    }
    Ok(Summary::of(&samples))
}

impl SpawnResult {
    pub fn table(&self, t: &mut Table) {
        let s = &self.spawn_ms;
        t.row(
            format!(
                "spawn: task 200 → QR PNG ({} sessions), p50 / p99",
                self.spawns
            ),
            format!("{} / {}", ms(s.p50), ms(s.p99)),
            "p50 ≤ 50 ms",
        );
        let r = &self.resume_ms;
        t.row(
            format!(
                "resume: restart → login report ({} x {} session), p50 / p99",
                self.restarts, self.resume_sessions
            ),
            format!("{} / {}", ms(r.p50), ms(r.p99)),
            "p50 ≤ 100 ms",
        );
    }
}
