//! The supervisor's main loop: poll the control plane as the agent (spec B.1), start a worker per
//! task 200 (from that poll or relayed by a worker), enforce `max_sessions`, and on shutdown stop
//! every worker and return only when all are reaped.

use super::admin;
use super::child::{self, ChildEnd, ChildEvent, ChildSpec};
use super::process;
use super::pull::PullSettings;
use super::registry::Registry;
use crate::config::Config;
use crate::control::{ControlClient, Task};
use crate::service::{ServiceNotifier, sessions_status};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long a worker gets between the stop request and the kill. The service units wait
/// longer than this for the whole supervisor (packaging/systemd: `TimeoutStopSec`).
pub const WORKER_GRACE: Duration = Duration::from_secs(15);

/// Tunables that are not worth a config key yet.
#[derive(Debug, Clone)]
pub struct SupervisorOptions {
    /// The config file to hand to workers (None: they find it as we did, or use defaults).
    pub config_path: Option<PathBuf>,
    /// The wxagent executable to start workers from.
    pub exe: PathBuf,
    pub grace: Duration,
    /// Who hears about readiness, liveness and the shutdown (systemd, or nobody).
    pub notifier: Arc<ServiceNotifier>,
}

impl SupervisorOptions {
    /// The options for `config` loaded from its file: workers get the same file (absolute, so
    /// a working-directory change cannot lose it), this executable and [`WORKER_GRACE`].
    pub fn for_config(config: &Config, notifier: Arc<ServiceNotifier>) -> std::io::Result<Self> {
        let config_path = match &config.source {
            crate::config::ConfigSource::Defaults { .. } => None,
            src => {
                Some(std::fs::canonicalize(src.path()).unwrap_or_else(|_| src.path().to_owned()))
            }
        };
        Ok(SupervisorOptions {
            config_path,
            exe: std::env::current_exe()?,
            grace: WORKER_GRACE,
            notifier,
        })
    }
}

pub async fn run(
    config: Config,
    opts: SupervisorOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Some(_) = config.control.callback_url else {
        anyhow::bail!("`wxagent run` needs [control] callback_url in the configuration");
    };
    let machine_id = config.agent.machine_id.clone();
    // First: the fork-server template starts (its exec and TLS set-up) while the rest of the
    // supervisor starts, instead of in front of the first worker.
    let launcher = Arc::new(process::Launcher::new(
        opts.exe.clone(),
        opts.config_path.clone(),
        config.agent.fork_server,
    ));
    let control = ControlClient::new(&config.control, machine_id.clone())?;
    let registry = Arc::new(Registry::default());
    let admin_opts = admin::AdminOptions {
        listen: config.agent.admin_listen,
        token: config.agent.admin_token.clone(),
        max_sync_age: config.agent.healthz_max_sync_age,
        state_dir: config.agent.state_dir.clone(),
        machine_id: machine_id.clone(),
        max_sessions: config.agent.max_sessions,
    };
    let (addr, admin_task) = admin::serve(admin_opts, registry.clone(), shutdown.clone()).await?;
    tracing::info!(%addr, machine_id, max_sessions = config.agent.max_sessions, "supervisor started; admin API listening"); // `wxagent status` finds the API here when `admin_listen` asked for port 0.
    if let Err(e) = crate::worker::persist::ensure_dir(&config.agent.state_dir)
        .and_then(|()| std::fs::write(admin::addr_file(&config.agent.state_dir), addr.to_string()))
    {
        tracing::warn!(error = %e, "could not record the admin API address");
    }

    let mut sup = Supervisor {
        config: &config,
        launcher,
        opts,
        pull: PullSettings::new(control.clone(), config.control.poll_interval),
        control,
        registry: registry.clone(),
        children: JoinSet::new(),
        stops: HashMap::new(),
        root_stop: shutdown.child_token(),
    };
    let (child_tx, mut child_rx) = mpsc::channel::<ChildEvent>(64);
    // A restarted supervisor resumes every saved session (DESIGN §3.3) after stopping any
    // worker a previous run left behind.
    for id in saved_sessions(&config.agent.state_dir) {
        // Stopping a leftover may take seconds: keep the watchdog fed before READY too.
        sup.opts.notifier.alive();
        stop_leftover(&config.agent.state_dir, &id).await;
        tracing::info!(session = %id, "resuming a saved session");
        sup.start(&id, None, &child_tx).await;
    }
    // Ready: the admin API answers and the saved sessions' workers are starting.
    let notifier = sup.opts.notifier.clone();
    let max = config.agent.max_sessions;
    let mut shown_status = sessions_status(registry.len(), max);
    notifier.ready(&shown_status);
    let mut watchdog = notifier.watchdog_interval().map(|every| {
        let mut t = tokio::time::interval(every);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let poll_every = config.control.poll_interval;
    let mut ticker = tokio::time::interval(if poll_every.is_zero() {
        Duration::from_secs(3600)
    } else {
        poll_every
    });
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick(), if !poll_every.is_zero() => {
                // A task may have others queued behind it: ask again at once rather than one
                // task per interval (50 queued logins would otherwise take 50 intervals).
                if sup.poll(&child_tx).await {
                    ticker.reset_immediately();
                }
            }
            Some(ev) = child_rx.recv() => match ev {
                ChildEvent::StartSession { qr_session_id, task_id } => sup.start(&qr_session_id, task_id.as_deref(), &child_tx).await,
            },
            Some(done) = sup.children.join_next(), if !sup.children.is_empty() => sup.reaped(done),
            _ = tick(&mut watchdog) => notifier.alive(),
            () = shutdown.cancelled() => break,
        }
        let now = sessions_status(registry.len(), max);
        if now != shown_status {
            notifier.status(&now);
            shown_status = now;
        }
    }
    tracing::info!(sessions = registry.len(), "stopping every worker");
    notifier.stopping(&format!("stopping {} session(s)", registry.len()));
    sup.root_stop.cancel();
    // The drain takes up to the workers' grace; the watchdog keeps hearing from us meanwhile.
    loop {
        tokio::select! {
            done = sup.children.join_next() => match done {
                Some(done) => sup.reaped(done),
                None => break,
            },
            _ = tick(&mut watchdog) => notifier.alive(),
        }
    }
    let _ = admin_task.await;
    tracing::info!("all workers reaped; supervisor exiting");
    Ok(())
}

/// The next watchdog tick, or never when there is no watchdog.
async fn tick(watchdog: &mut Option<tokio::time::Interval>) {
    match watchdog {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

struct Supervisor<'a> {
    config: &'a Config,
    /// Starts worker processes (shared by the child tasks).
    launcher: Arc<process::Launcher>,
    opts: SupervisorOptions,
    control: ControlClient,
    /// Polling `pull_task` for the workers' accounts (shared by every child).
    pull: PullSettings,
    registry: Arc<Registry>,
    children: JoinSet<(String, ChildEnd)>,
    stops: HashMap<String, CancellationToken>,
    root_stop: CancellationToken,
}

impl Supervisor<'_> {
    /// One agent `pull_task`; true when it brought a task.
    async fn poll(&mut self, child_tx: &mpsc::Sender<ChildEvent>) -> bool {
        let data = serde_json::json!({
            "machine_id": self.config.agent.machine_id,
            "role": "agent",
            "sessions": self.registry.len(),
            "capacity": self.config.agent.max_sessions,
        });
        match self.control.pull_task("", data).await {
            Ok(None) => false,
            Ok(Some((task_id, raw))) => {
                self.run_agent_task(&task_id, raw, child_tx).await;
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "agent pull_task failed");
                false
            }
        }
    }

    async fn run_agent_task(
        &mut self,
        task_id: &str,
        raw: crate::control::RawTask,
        child_tx: &mpsc::Sender<ChildEvent>,
    ) {
        match raw.parse() {
            Ok(Task::StartQrSession { qr_session_id }) => {
                self.start(&qr_session_id, Some(task_id), child_tx).await
            }
            Ok(other) => {
                let reason = format!(
                    "the agent itself only runs task 200; got {}",
                    other.describe()
                );
                tracing::warn!(task_id, "{reason}");
                self.result(task_id, false, &reason).await;
            }
            Err(e) => {
                tracing::warn!(task_id, error = %e, "unusable agent task");
                self.result(task_id, false, &e.to_string()).await;
            }
        }
    }

    async fn result(&self, task_id: &str, ok: bool, reason: &str) {
        if let Err(e) = self
            .control
            .report_task_result("", task_id, ok, reason)
            .await
        {
            tracing::warn!(task_id, error = %e, "could not report the task result");
        }
    }

    /// Starts a worker for a QR session, or refuses with a reason (spec B.4).
    async fn start(
        &mut self,
        qr_session_id: &str,
        task_id: Option<&str>,
        child_tx: &mpsc::Sender<ChildEvent>,
    ) {
        let refusal = if qr_session_id.is_empty() || !valid_session_id(qr_session_id) {
            Some(format!(
                "invalid qr_session_id {qr_session_id:?}: use 1-64 letters, digits, '-', '_' or '.'"
            ))
        } else if self.registry.contains(qr_session_id) {
            Some(format!("session {qr_session_id} is already running"))
        } else if self.registry.len() >= self.config.agent.max_sessions {
            Some(format!(
                "capacity reached ({} of {} sessions)",
                self.registry.len(),
                self.config.agent.max_sessions
            ))
        } else {
            None
        };
        if let Some(reason) = refusal {
            tracing::warn!(qr_session_id, "not starting a session: {reason}");
            if let Some(id) = task_id {
                self.result(id, false, &reason).await;
            }
            return;
        }
        self.registry.insert(qr_session_id);
        let stop = self.root_stop.child_token();
        self.stops.insert(qr_session_id.to_owned(), stop.clone());
        let spec = ChildSpec {
            session_id: qr_session_id.to_owned(),
            launcher: self.launcher.clone(),
            grace: self.opts.grace,
            healthy_after: Duration::from_secs(60),
            restart_min: Duration::from_secs(1),
            restart_max: Duration::from_secs(60),
            pull: Some(self.pull.clone()),
        };
        let registry = self.registry.clone();
        let tx = child_tx.clone();
        let id = qr_session_id.to_owned();
        self.children.spawn(async move {
            let end = child::supervise(spec, registry, tx, stop).await;
            (id, end)
        });
        tracing::info!(qr_session_id, "session started");
        if let Some(id) = task_id {
            self.result(id, true, "").await;
        }
    }

    fn reaped(&mut self, done: Result<(String, ChildEnd), tokio::task::JoinError>) {
        match done {
            Ok((id, end)) => {
                tracing::info!(session = %id, ?end, "session finished");
                self.stops.remove(&id);
                self.registry.remove(&id);
            }
            Err(e) => tracing::error!(error = %e, "a session task panicked"),
        }
    }
}

/// Session ids with a saved `session.json` under `state_dir/sessions/`.
pub fn saved_sessions(state_dir: &std::path::Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(state_dir.join("sessions")) else {
        return Vec::new();
    };
    let mut ids: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().join("session.json").is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|id| valid_session_id(id))
        .collect();
    ids.sort();
    ids
}

/// Stops a worker of a previous supervisor run that is still alive for this session (its pid
/// is in `worker.pid` and its command line is ours), so two workers never share a session.
async fn stop_leftover(state_dir: &std::path::Path, id: &str) {
    let pid_file = crate::worker::persist::session_dir(state_dir, id).join("worker.pid");
    let Some(pid) = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    else {
        return;
    };
    if !is_our_worker(pid, id) {
        let _ = std::fs::remove_file(&pid_file);
        return;
    }
    tracing::warn!(
        session = id,
        pid,
        "a worker from a previous run is still alive; stopping it"
    );
    #[cfg(unix)]
    {
        // SAFETY: kill(2) on a pid we just identified as a wxagent worker for this session.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        for _ in 0..100 {
            if !is_our_worker(pid, id) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if is_our_worker(pid, id) {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let _ = std::fs::remove_file(&pid_file);
}

/// Whether `pid` is a live `wxagent worker --session <id>` (Linux: from /proc).
fn is_our_worker(pid: i32, id: &str) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let has = |s: &str| args.contains(&s.as_bytes());
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // A zombie is not alive.
    let zombie = stat
        .rsplit(')')
        .next()
        .is_some_and(|rest| rest.trim_start().starts_with('Z'));
    !zombie && has("worker") && has("--session") && has(id)
}

/// Session ids become directory names and process arguments: keep them boring.
pub fn valid_session_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_checked() {
        assert!(valid_session_id("xyz-1_2.3"));
        assert!(!valid_session_id(""));
        assert!(!valid_session_id(".."));
        assert!(!valid_session_id("a/b"));
        assert!(!valid_session_id(&"x".repeat(65)));
    }
}
