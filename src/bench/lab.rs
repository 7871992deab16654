//! The bench's world: a `wxagent sim` process (simulator + reference control plane), a
//! supervisor (`wxagent run`) with its config and state in a private temporary directory, the
//! simulated accounts and the sessions logged in through task 200 and the simulator's phone.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt as _;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::cli::BenchCommon;

/// How long set-up steps (logins, a supervisor stop) may take before the bench gives up.
pub const SETUP_LIMIT: Duration = Duration::from_secs(900);

/// One logged-in session.
#[derive(Debug, Clone)]
pub struct Session {
    pub uin: u64,
    /// The wxid the worker reports under (the uin, in the simulator).
    pub wxid: String,
}

/// The simulator's HTTP APIs (`/__sim/`, `/__cp/`); cheap to clone into tasks.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    pub base: String,
}

impl Api {
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        answer(r, path).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        answer(r, path).await
    }

    /// Every accepted `report_new_msg` unit from request index `since` on: (msg_id, arrival
    /// µs) pairs and the index to continue from.
    pub async fn msg_times(&self, since: u64) -> anyhow::Result<(Vec<(String, u64)>, u64)> {
        let v = self.get(&format!("/__cp/msg_times?since={since}")).await?;
        let next = v["next"].as_u64().context("msg_times without next")?;
        let msgs = v["msgs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| Some((m["msg_id"].as_str()?.to_owned(), m["us"].as_u64()?)))
            .collect();
        Ok((msgs, next))
    }
}

pub struct Lab {
    pub common: BenchCommon,
    exe: PathBuf,
    pub dir: PathBuf,
    sim: Child,
    pub api: Api,
    config: PathBuf,
    max_sessions: usize,
    agent: Option<Child>,
    pub sessions: Vec<Session>,
    next_task: usize,
    next_account: usize,
}

impl Lab {
    /// Starts the simulator and writes the supervisor's config (room for `max_sessions`).
    pub async fn start(
        exe: &Path,
        common: &BenchCommon,
        max_sessions: usize,
    ) -> anyhow::Result<Lab> {
        let dir = private_temp_dir()?;
        let sim_log = std::fs::File::create(dir.join("sim.log")).context("creating sim.log")?;
        let mut cmd = Command::new(exe);
        cmd.arg("sim")
            .args(["--listen", "127.0.0.1:0", "--hold"])
            .arg(humantime::format_duration(common.hold).to_string())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(sim_log);
        // Killed with the bench however it ends (a signal runs no destructors).
        crate::supervisor::process::isolate(&mut cmd);
        let mut sim = cmd.spawn().context("starting wxagent sim")?;
        let stdout = sim.stdout.take().context("sim stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let banner = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .context("waiting for the sim's listening line")?
            .context("reading the sim's listening line")?
            .context("the sim exited before listening")?;
        let base = banner
            .rsplit(' ')
            .next()
            .filter(|b| b.starts_with("http://127.0.0.1:"))
            .with_context(|| format!("unexpected sim banner {banner:?}"))?
            .to_owned();
        // Keep draining stdout so the sim never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(120))
            .build()
            .context("building the bench's http client")?;
        let config = dir.join("wxagent.toml");
        std::fs::write(&config, config_text(&base, &dir, common, max_sessions))
            .context("writing the supervisor config")?;
        let api = Api { http, base };
        if common.websocket {
            let ws_url = format!("{}/wehub/ws", api.base.replacen("http://", "ws://", 1));
            api.post(
                "/__cp/mode",
                &json!({"websocket": {"ws_url": ws_url, "heartbeat_interval": 30}}),
            )
            .await
            .context("offering websocket mode")?;
        }
        if common.report_batch > 0 {
            api.post("/__cp/mode", &json!({"report_batch": common.report_batch}))
                .await
                .context("offering report batches")?;
        }
        Ok(Lab {
            common: common.clone(),
            exe: exe.to_owned(),
            dir,
            sim,
            api,
            config,
            max_sessions,
            agent: None,
            sessions: Vec::new(),
            next_task: 0,
            next_account: 0,
        })
    }

    pub fn sim_pid(&self) -> Option<u32> {
        self.sim.id()
    }

    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().and_then(Child::id)
    }

    /// The supervisor's children (one worker per session).
    pub fn worker_pids(&self) -> Vec<u32> {
        self.agent_pid()
            .map(super::procfs::children_of)
            .unwrap_or_default()
            .into_iter()
            .filter(|p| !crate::supervisor::process::is_fork_server(*p))
            .collect()
    }

    /// The supervisor's fork-server template (`[agent] fork_server`), if one runs.
    pub fn fork_server_pid(&self) -> Option<u32> {
        self.agent_pid()
            .map(super::procfs::children_of)
            .unwrap_or_default()
            .into_iter()
            .find(|p| crate::supervisor::process::is_fork_server(*p))
    }

    /// Starts `wxagent run` (its log goes to `supervisor.log`, appended across restarts).
    pub async fn start_agent(&mut self) -> anyhow::Result<()> {
        if self.agent.is_some() {
            bail!("the supervisor is already running");
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("supervisor.log"))
            .context("opening supervisor.log")?;
        let mut cmd = Command::new(&self.exe);
        cmd.args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // SIGTERM with the bench however it ends; the supervisor then stops its workers.
        crate::supervisor::process::isolate(&mut cmd);
        let child = cmd.spawn().context("starting wxagent run")?;
        self.agent = Some(child);
        Ok(())
    }

    /// SIGTERM to the supervisor, then waits for it (it drains its workers first).
    pub async fn stop_agent(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.agent.take() else {
            return Ok(());
        };
        if let Some(pid) = child.id() {
            // SAFETY: kill(2) on our own, not yet reaped child.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
        match tokio::time::timeout(Duration::from_secs(60), child.wait()).await {
            Ok(status) => {
                status.context("waiting for the supervisor")?;
            }
            Err(_) => {
                let _ = child.kill().await;
                bail!("the supervisor did not exit within 60 s of SIGTERM");
            }
        }
        Ok(())
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.api.get(path).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.api.post(path, body).await
    }

    /// Now on the simulator's monotonic clock, in µs.
    pub async fn clock(&self) -> anyhow::Result<u64> {
        self.get("/__cp/clock").await?["mono_us"]
            .as_u64()
            .context("clock answer without mono_us")
    }

    /// A new account with the configured friends and groups; returns its uin.
    pub async fn create_account(&mut self) -> anyhow::Result<u64> {
        self.next_account += 1;
        let c = &self.common;
        let spec = json!({
            "nickname": format!("bench {}", self.next_account),
            "friend_count": c.friends,
            "group_count": c.groups,
            "group_size": c.group_size,
            "stranger_members": true,
        });
        self.post("/__sim/accounts", &spec).await?["uin"]
            .as_u64()
            .context("account answer without uin")
    }

    /// Queues task 200 for a new QR session id; returns (qr session id, task id).
    pub async fn queue_qr_task(&mut self, prefix: &str) -> anyhow::Result<(String, String)> {
        self.next_task += 1;
        let id = format!("{prefix}-{}", self.next_task);
        let r = self
            .post(
                "/__cp/tasks",
                &json!({"wxid": "", "task_type": 200, "task_dict": {"qrcode_session_id": id}}),
            )
            .await?;
        let task_id = r["task_id"]
            .as_str()
            .context("task answer without task_id")?;
        Ok((id, task_id.to_owned()))
    }

    /// Logs `n` more sessions in: accounts, task 200 each, scan and confirm every QR code that
    /// shows up, then waits until each account's login and first contact report arrived.
    pub async fn log_in(&mut self, n: usize) -> anyhow::Result<()> {
        let mut uins = Vec::with_capacity(n);
        for _ in 0..n {
            uins.push(self.create_account().await?);
        }
        for _ in 0..n {
            self.queue_qr_task("bench").await?;
        }
        let mut scanned: HashSet<String> = HashSet::new();
        let deadline = Instant::now() + SETUP_LIMIT;
        let mut next = 0;
        while next < n {
            if Instant::now() > deadline {
                bail!("only {next} of {n} QR codes appeared within {SETUP_LIMIT:?}");
            }
            let pending = self.get("/__sim/qr").await?;
            let waiting: Vec<String> = pending["pending"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|q| q["state"] == "waiting")
                .filter_map(|q| q["uuid"].as_str().map(str::to_owned))
                .filter(|u| !scanned.contains(u))
                .collect();
            for uuid in waiting {
                if next == n {
                    break;
                }
                let uin = uins[next];
                self.post(&format!("/__sim/qr/{uuid}/scan"), &json!({"uin": uin}))
                    .await?;
                self.post(&format!("/__sim/qr/{uuid}/confirm"), &json!({}))
                    .await?;
                scanned.insert(uuid);
                next += 1;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let wxids: Vec<String> = uins.iter().map(u64::to_string).collect();
        loop {
            let counts = self.get("/__cp/counts").await?;
            let ready = wxids
                .iter()
                .filter(|w| {
                    counts["counts"]["login"][w.as_str()].as_u64() >= Some(1)
                        && counts["counts"]["report_contact"][w.as_str()].as_u64() >= Some(1)
                })
                .count();
            if ready == n {
                break;
            }
            if Instant::now() > deadline {
                bail!("only {ready} of {n} sessions logged in and reported their contacts");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.sessions.extend(
            uins.into_iter()
                .zip(wxids)
                .map(|(uin, wxid)| Session { uin, wxid }),
        );
        Ok(())
    }

    /// Restarts the supervisor with another `[control] poll_interval` (every account's tasks are
    /// polled at that interval too, so an idle measurement must use the operator's setting, not
    /// the fast one that hands out set-up logins quickly); waits until every session is back
    /// online and has sent its login and contact reports again.
    pub async fn restart_with_poll_interval(&mut self, poll: Duration) -> anyhow::Result<()> {
        self.stop_agent().await?;
        self.common.poll_interval = poll;
        std::fs::write(
            &self.config,
            config_text(&self.api.base, &self.dir, &self.common, self.max_sessions),
        )
        .context("rewriting the supervisor config")?;
        let before = self.get("/__cp/counts").await?;
        self.start_agent().await?;
        let deadline = Instant::now() + SETUP_LIMIT;
        loop {
            let now = self.get("/__cp/counts").await?;
            let grew = |action: &str, wxid: &str| {
                now["counts"][action][wxid].as_u64().unwrap_or(0)
                    > before["counts"][action][wxid].as_u64().unwrap_or(0)
            };
            let ready = self
                .sessions
                .iter()
                .filter(|s| grew("login", &s.wxid) && grew("report_contact", &s.wxid))
                .count();
            if ready == self.sessions.len() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{ready} of {} sessions came back after the restart",
                    self.sessions.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// With `--websocket`: waits until every session has its socket open (a restart opens new
    /// ones), so what is measured next goes over them.
    pub async fn websockets_open(&self) -> anyhow::Result<()> {
        if !self.common.websocket {
            return Ok(());
        }
        let deadline = Instant::now() + SETUP_LIMIT;
        loop {
            let ws = self.get("/__cp/ws").await?;
            let open = open_websockets(&ws);
            let ready = self
                .sessions
                .iter()
                .filter(|s| open.contains(s.wxid.as_str()))
                .count();
            if ready == self.sessions.len() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{ready} of {} sessions opened their websocket",
                    self.sessions.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Report frames the control plane received over WebSockets so far (every connection).
    pub async fn websocket_frames(&self) -> anyhow::Result<u64> {
        let ws = self.get("/__cp/ws").await?;
        Ok(ws["connections"]
            .as_array()
            .map(|all| all.iter().filter_map(|c| c["frames"].as_u64()).sum())
            .unwrap_or(0))
    }

    /// `report_batch` posts the control plane accepted so far (all sessions).
    pub async fn batch_posts(&self) -> anyhow::Result<u64> {
        let counts = self.get("/__cp/counts").await?;
        Ok(counts["counts"]["report_batch"]
            .as_object()
            .map(|all| all.values().filter_map(Value::as_u64).sum())
            .unwrap_or(0))
    }

    /// Stops the supervisor and the simulator; removes the directory unless `--keep`.
    pub async fn finish(mut self) -> anyhow::Result<()> {
        let stopped = self.stop_agent().await;
        let _ = self.sim.kill().await;
        if self.common.keep {
            eprintln!("bench: kept {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        stopped
    }
}

/// The wxids with an open connection in a `/__cp/ws` answer.
fn open_websockets(ws: &Value) -> HashSet<&str> {
    ws["connections"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter(|c| c["closed_ms"].is_null())
                .filter_map(|c| c["wxid"].as_str())
                .collect()
        })
        .unwrap_or_default()
}

async fn answer(r: reqwest::Response, path: &str) -> anyhow::Result<Value> {
    let status = r.status();
    let body = r.bytes().await.with_context(|| format!("reading {path}"))?;
    if !status.is_success() {
        bail!(
            "{path}: HTTP {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        );
    }
    serde_json::from_slice(&body).with_context(|| format!("{path}: answer is not json"))
}

fn config_text(base: &str, dir: &Path, c: &BenchCommon, max_sessions: usize) -> String {
    let state = dir.join("state");
    // The client's long-poll timeout must outlast the simulator's hold.
    let longpoll = c.hold + Duration::from_secs(15);
    format!(
        "[agent]\nmachine_id = \"bench\"\nstate_dir = {state:?}\nmax_sessions = {max_sessions}\n\
         admin_listen = \"127.0.0.1:0\"\n\n\
         [control]\ncallback_url = \"{base}/wehub/callback\"\nupload_url = \"{base}/wehub/upload\"\n\
         poll_interval = \"{poll}\"\ntimeout = \"30s\"\n\n\
         [wechat]\nlogin_url = \"{base}\"\nrequest_timeout = \"30s\"\nlongpoll_timeout = \"{longpoll}\"\n\
         network_give_up = \"5m\"\n",
        state = state.display().to_string(),
        poll = humantime::format_duration(c.poll_interval),
        longpoll = humantime::format_duration(longpoll),
    )
}

/// A fresh 0700 directory under the system temp dir.
fn private_temp_dir() -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt as _;
    let name = format!(
        "wxagent-bench-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    );
    let dir = std::env::temp_dir().join(name);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
