//! `wxagent demo`: the whole product on loopback in one command — simulated WeChat servers, the
//! reference control plane, the supervisor and one worker — walked through a QR login, a few
//! messages, an automatic reply and a logout from the phone, narrated step by step on stdout.
//!
//! The simulator (with the control plane on the same listener) runs inside this process; the
//! supervisor is the real `wxagent run`, started from this executable with a throw-away config,
//! so what the demo shows is what a deployment does. Every wait has a deadline. On a failure
//! or Ctrl-C the supervisor is stopped (SIGTERM, then SIGKILL to its process group) and the
//! simulator shut down before the process exits; a failed run keeps its files for a look.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail, ensure};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStderr, Command};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Secret};
use crate::exit::WorkerExit;
use crate::sim::{self, SimHandle, SimOptions};
use crate::worker::qr;

/// The QR session the demo asks for (task 200).
pub const QR_SESSION: &str = "demo-1";
/// What the control plane's auto-reply answers to a text containing [`PING`].
pub const PONG: &str = "pong from the orchestrator";
const PING: &str = "ping";
const NICKNAME: &str = "Demo Account";
const FRIENDS: [&str; 3] = ["Alice", "Bob", "Carol"];
const GROUP: &str = "Demo Group";
const GROUP_MEMBERS: [&str; 2] = ["Alice", "Bob"];
/// How long the simulator holds an idle long poll (the real servers hold ~25 s).
const SIM_HOLD: Duration = Duration::from_secs(2);
/// How long the supervisor gets after SIGTERM during a clean-up: it gives its workers 15 s.
const STOP_GRACE: Duration = Duration::from_secs(20);
/// Exit code of an interrupted demo (128 + SIGINT, as shells report it).
pub const INTERRUPTED_EXIT: u8 = 130;
const INDENT: &str = "      ";

/// How to run the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The wxagent executable the supervisor (and through it the worker) is started from.
    pub exe: PathBuf,
    /// Longest wait for any one thing the demo expects to happen.
    pub deadline: Duration,
}

impl DemoOptions {
    pub fn new(exe: PathBuf) -> Self {
        DemoOptions {
            exe,
            deadline: Duration::from_secs(30),
        }
    }
}

/// Runs the demo to the end and returns the process exit code: 0 when every step passed,
/// 1 when one failed (after cleaning up), [`INTERRUPTED_EXIT`] on Ctrl-C / SIGTERM.
pub fn run(opts: DemoOptions) -> anyhow::Result<ExitCode> {
    // Current-thread on purpose: the supervisor is spawned from this thread, and on Linux its
    // parent-death signal fires when the spawning *thread* ends, so it must be the main one.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the demo's runtime")?;
    Ok(rt.block_on(drive(opts)))
}

/// The steps, in order; each has one method on [`Demo`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Simulator = 1,
    Account,
    Supervisor,
    QrCode,
    Login,
    Messages,
    Logout,
    Summary,
}

impl Step {
    pub const COUNT: usize = 8;

    pub fn number(self) -> usize {
        self as usize
    }

    pub fn title(self) -> &'static str {
        match self {
            Step::Simulator => "start the simulator",
            Step::Account => "create the demo account",
            Step::Supervisor => "start the supervisor",
            Step::QrCode => "get a QR code",
            Step::Login => "log in from the phone",
            Step::Messages => "exchange messages",
            Step::Logout => "log out from the phone",
            Step::Summary => "summarise",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} ({})", self.number(), Step::COUNT, self.title())
    }
}

/// Why the steps stopped early.
enum Stop {
    Failed(anyhow::Error),
    Interrupted,
}

async fn drive(opts: DemoOptions) -> ExitCode {
    // The first signal interrupts the steps; a second one cuts the clean-up's grace short.
    let interrupt = CancellationToken::new();
    let hurry = CancellationToken::new();
    watch_signals(interrupt.clone(), hurry.clone());
    let mut demo = Demo::new(opts);
    let outcome = tokio::select! {
        r = demo.run_steps() => r.map_err(Stop::Failed),
        () = interrupt.cancelled() => Err(Stop::Interrupted),
    };
    match outcome {
        Ok(()) => {
            demo.clean_up(&hurry, Keep::Nothing).await;
            ExitCode::SUCCESS
        }
        Err(Stop::Failed(error)) => {
            eprintln!("wxagent demo: step {} failed: {error:#}", demo.step);
            demo.clean_up(&hurry, Keep::Files).await;
            WorkerExit::Failure.into()
        }
        Err(Stop::Interrupted) => {
            eprintln!(
                "wxagent demo: interrupted during step {}; cleaning up",
                demo.step
            );
            demo.clean_up(&hurry, Keep::Nothing).await;
            ExitCode::from(INTERRUPTED_EXIT)
        }
    }
}

fn watch_signals(interrupt: CancellationToken, hurry: CancellationToken) {
    #[cfg(unix)]
    let streams = {
        use tokio::signal::unix::{SignalKind, signal};
        signal(SignalKind::interrupt()).and_then(|i| Ok((i, signal(SignalKind::terminate())?)))
    };
    #[cfg(unix)]
    let Ok((mut int, mut term)) = streams else {
        tracing::warn!("cannot listen for signals; Ctrl-C will not clean up");
        return;
    };
    tokio::spawn(async move {
        for token in [interrupt, hurry] {
            #[cfg(unix)]
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            #[cfg(not(unix))]
            if tokio::signal::ctrl_c().await.is_err() {
                return;
            }
            token.cancel();
        }
    });
}

/// What the clean-up leaves behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    Nothing,
    /// The temp folder (config, supervisor log, state) for looking into a failure.
    Files,
}

/// The account the demo created in the simulator.
struct Account {
    uin: u64,
}

/// What the control plane learnt at login.
struct LoggedIn {
    wxid: String,
    /// Report ids (contacts' UserNames, the own wxid) → names, for printing messages.
    names: HashMap<String, String>,
}

/// The demo's state: what must be cleaned up, and where the step functions talk to.
struct Demo {
    opts: DemoOptions,
    started: Instant,
    step: Step,
    http: reqwest::Client,
    secret: Secret,
    base: String,
    sim: Option<SimHandle>,
    files: Option<PathBuf>,
    supervisor: Option<Supervisor>,
    tally: Tally,
}

impl Demo {
    fn new(opts: DemoOptions) -> Demo {
        // Loopback only: no proxy may see the demo's traffic, and every call is bounded.
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Demo {
            opts,
            started: Instant::now(),
            step: Step::Simulator,
            http,
            secret: Secret::new(random_hex(32)),
            base: String::new(),
            sim: None,
            files: None,
            supervisor: None,
            tally: Tally::default(),
        }
    }

    async fn run_steps(&mut self) -> anyhow::Result<()> {
        self.step = Step::Simulator;
        self.start_simulator().await?;
        self.step = Step::Account;
        let account = self.create_account().await?;
        self.step = Step::Supervisor;
        self.start_supervisor().await?;
        self.step = Step::QrCode;
        let uuid = self.show_qr_code().await?;
        self.step = Step::Login;
        let login = self.log_in(&account, &uuid).await?;
        self.step = Step::Messages;
        self.exchange_messages(&account, &login).await?;
        self.step = Step::Logout;
        self.log_out(&account, &login).await?;
        self.step = Step::Summary;
        self.summarise()
    }

    fn say(&self, text: impl fmt::Display) {
        println!("[{}/{}] {text}", self.step.number(), Step::COUNT);
    }

    fn detail(&self, text: impl fmt::Display) {
        println!("{INDENT}{text}");
    }

    // ---- step 1 ----

    async fn start_simulator(&mut self) -> anyhow::Result<()> {
        let sim = sim::start(SimOptions {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            hold: SIM_HOLD,
        })
        .await
        .context("starting the simulator")?;
        self.base = sim.base_url();
        self.sim = Some(sim);
        self.say(format_args!(
            "simulator listening on {}: simulated WeChat web servers and a reference control plane",
            self.base
        ));
        self.detail(format_args!(
            "WeHub callback {0}/wehub/callback, uploads {0}/wehub/upload",
            self.base
        ));
        Ok(())
    }

    // ---- step 2 ----

    async fn create_account(&mut self) -> anyhow::Result<Account> {
        let spec = json!({
            "nickname": NICKNAME,
            "friends": FRIENDS.map(|nickname| json!({"nickname": nickname})),
            "groups": [{"name": GROUP, "members": GROUP_MEMBERS}],
        });
        let made = self.post("/__sim/accounts", &spec).await?;
        let uin = made["uin"]
            .as_u64()
            .ok_or_else(|| anyhow!("the simulator's new account has no uin: {made}"))?;
        self.say(format_args!(
            "created the account {NICKNAME:?} (uin {uin}) with friends {} and the group {GROUP:?} ({} and the account)",
            FRIENDS.join(", "),
            GROUP_MEMBERS.join(", "),
        ));
        let mode = json!({
            "secret": self.secret.expose(),
            "auto_reply": {"match": PING, "reply": PONG},
        });
        let answered = self.post("/__cp/mode", &mode).await?;
        ensure!(
            answered["auto_reply"]["reply"] == PONG,
            "the control plane did not take the auto-reply rule"
        );
        self.detail(format_args!(
            "control plane: a shared secret (logins and requests are signed) and an auto-reply: texts containing {PING:?} get {PONG:?}"
        ));
        Ok(Account { uin })
    }

    // ---- step 3 ----

    async fn start_supervisor(&mut self) -> anyhow::Result<()> {
        let dir = create_private_dir()?;
        self.files = Some(dir.clone());
        let config_path = dir.join("wxagent.toml");
        let log_path = dir.join("supervisor.log");
        let admin = free_loopback_addr()?;
        let text = config_text(&self.base, &dir.join("state"), admin, &self.secret)?;
        write_private(&config_path, text.as_bytes())?;
        // Checked here so a mistake shows as this step's error, not as a supervisor that exits.
        Config::load(Some(&config_path))
            .map_err(|e| anyhow!("the demo's configuration is invalid: {e}"))?;
        let log = tokio::fs::File::from_std(create_private_file(&log_path)?);
        let supervisor = Supervisor::spawn(&self.opts.exe, &config_path, admin, log)?;
        let pid = supervisor.pid;
        self.supervisor = Some(supervisor);
        self.say(format_args!(
            "started the supervisor (pid {pid}): wxagent run --config {}",
            config_path.display()
        ));
        self.detail(format_args!(
            "config (mode 0600): control plane {}/wehub/*, WeChat login host {}, poll every 300 ms",
            self.base, self.base
        ));
        let healthz = format!("http://{admin}/healthz");
        self.wait_for("the supervisor's admin API", async || {
            let answer = self.http.get(&healthz).send().await?;
            Ok(answer.status().is_success().then_some(()))
        })
        .await?;
        self.detail(format_args!(
            "admin API http://{admin}/status answers; supervisor log {} (kept if the demo fails; its warnings and errors show here)",
            log_path.display()
        ));
        Ok(())
    }

    // ---- step 4 ----

    /// Queues task 200 and shows the QR code the worker uploads; returns the login's uuid.
    async fn show_qr_code(&mut self) -> anyhow::Result<String> {
        let task = json!({
            "wxid": "",
            "task_type": 200,
            "task_dict": {"qrcode_session_id": QR_SESSION},
        });
        let queued = self.post("/__cp/tasks", &task).await?;
        let task_id = id_text(&queued["task_id"])
            .ok_or_else(|| anyhow!("the control plane returned no task id: {queued}"))?;
        self.say(format_args!(
            "queued task 200 for QR session {QR_SESSION} (task {task_id})"
        ));
        let result = self
            .wait_for("the supervisor to take task 200", async || {
                let results = self.get("/__cp/task_results").await?;
                Ok(results["results"].get(&task_id).cloned())
            })
            .await?;
        ensure!(
            result["task_result"] == 1,
            "the supervisor refused task 200: {}",
            result["error_reason"]
        );
        self.detail("the supervisor took the task and started a worker for the session");
        let (uuid, content, size, machine) = self
            .wait_for("the worker to upload the QR code", async || {
                let sessions = self.get("/__cp/qr_sessions").await?;
                let Some(session) = sessions.as_array().and_then(|list| {
                    list.iter().find(|s| {
                        s["qr_session_id"] == QR_SESSION && s["uploads"].as_u64() > Some(0)
                    })
                }) else {
                    return Ok(None);
                };
                let png = self
                    .get_bytes(&format!("/__cp/qr_sessions/{QR_SESSION}/png"))
                    .await?;
                let pending = self.get("/__sim/qr").await?;
                // The code to scan is the waiting login whose rendering is the uploaded image;
                // an image matching none is an error (retried: the code may just have changed).
                let found = waiting_uuids(&pending).into_iter().find_map(|uuid| {
                    let content = login_content(&self.base, &uuid).ok()?;
                    (qr::render_png(&content).ok()? == png).then_some((uuid, content))
                });
                let Some((uuid, content)) = found else {
                    bail!("the uploaded QR image is not the code of any login waiting for a scan");
                };
                let machine = session["machine_id"].as_str().unwrap_or("?").to_owned();
                Ok(Some((uuid, content, png.len(), machine)))
            })
            .await?;
        self.detail(format_args!(
            "worker {machine} uploaded the QR code (PNG, {size} bytes); it encodes {content}:"
        ));
        let art = qr::render_terminal(&content).context("drawing the QR code")?;
        for line in art.lines() {
            println!("{INDENT}{line}");
        }
        self.detail(format_args!(
            "the orchestrator's page {}/cp/ shows it too",
            self.base
        ));
        Ok(uuid)
    }

    // ---- step 5 ----

    async fn log_in(&mut self, account: &Account, uuid: &str) -> anyhow::Result<LoggedIn> {
        self.post(
            &format!("/__sim/qr/{uuid}/scan"),
            &json!({"uin": account.uin}),
        )
        .await?;
        self.post(&format!("/__sim/qr/{uuid}/confirm"), &json!({}))
            .await?;
        self.say(format_args!(
            "a scripted phone scanned the code as uin {} and confirmed the login",
            account.uin
        ));
        let login = self
            .wait_for("the control plane to receive login", async || {
                let found = self
                    .requests("login", None)
                    .await?
                    .into_iter()
                    .find(|r| r["data"]["qr_session_id"] == QR_SESSION);
                Ok(found)
            })
            .await?;
        let wxid = login["wxid"].as_str().unwrap_or_default().to_owned();
        ensure!(
            wxid == account.uin.to_string(),
            "login reported wxid {wxid:?}, expected the account's uin {}",
            account.uin
        );
        self.detail(format_args!(
            "control plane got login: wxid {wxid}, nickname {:?}, machine {}, QR session {QR_SESSION}; the agent checked the login_ack signature against the secret",
            text(&login["data"]["nickname"]),
            text(&login["data"]["machine_id"])
        ));
        let contacts = self
            .wait_for("the control plane to receive report_contact", async || {
                Ok(self
                    .requests("report_contact", Some(&wxid))
                    .await?
                    .into_iter()
                    .next())
            })
            .await?;
        let data = &contacts["data"];
        let mut names = HashMap::new();
        names.insert(wxid.clone(), "you".to_owned());
        let friends = list_names(&data["friend_list"], "nickname", &mut names);
        let groups = list_names(&data["group_list"], "name", &mut names);
        let public = list_names(&data["public_list"], "nickname", &mut names);
        self.detail(format_args!(
            "report_contact: {} ({}), {} ({}), {}",
            plural(friends.len(), "friend"),
            friends.join(", "),
            plural(groups.len(), "group"),
            groups.join(", "),
            plural(public.len(), "public account"),
        ));
        let admin = self.supervisor()?.admin;
        let session = self
            .wait_for("the supervisor to list the session online", async || {
                let status = self.get_url(&format!("http://{admin}/status")).await?;
                let sessions = status["sessions"].as_array().cloned().unwrap_or_default();
                Ok(sessions
                    .into_iter()
                    .find(|s| s["id"] == QR_SESSION && s["state"] == "online"))
            })
            .await?;
        self.detail(format_args!(
            "supervisor /status: session {QR_SESSION} online as {:?} (worker pid {})",
            text(&session["nickname"]),
            session["pid"]
        ));
        Ok(LoggedIn { wxid, names })
    }

    // ---- step 6 ----

    async fn exchange_messages(
        &mut self,
        account: &Account,
        login: &LoggedIn,
    ) -> anyhow::Result<()> {
        self.say("contacts send messages; the agent reports each one to the control plane");
        let messages = [
            json!({"type": "text", "from": "Alice", "text": "hello"}),
            json!({"type": "text", "group": GROUP, "from": "Bob", "mentions": ["self"], "text": "lunch at noon?"}),
            json!({"type": "text", "from": "Carol", "text": format!("{PING}, anyone there?")}),
        ];
        let inject = format!("/__sim/sessions/{}/inject", account.uin);
        for message in messages {
            let sent = self.post(&inject, &message).await?;
            let msg_id = id_text(&sent["msg_id"])
                .ok_or_else(|| anyhow!("the simulator's injected message has no msg_id: {sent}"))?;
            let unit = self
                .wait_for(&format!("report_new_msg of message {msg_id}"), async || {
                    let reports = self.requests("report_new_msg", Some(&login.wxid)).await?;
                    Ok(msg_units(&reports)
                        .into_iter()
                        .find(|u| id_text(&u["msg_id"]).as_deref() == Some(msg_id.as_str())))
                })
                .await?;
            self.detail(format_args!(
                "report_new_msg: {}",
                describe_msg(&unit, &login.wxid, &login.names)
            ));
        }
        let outbox = format!("/__sim/sessions/{}/outbox", account.uin);
        let reply = self
            .wait_for("the agent to send the auto-reply", async || {
                let sent = self.get(&outbox).await?;
                let messages = sent["messages"].as_array().cloned().unwrap_or_default();
                Ok(messages
                    .into_iter()
                    .find(|m| m["content"].as_str().is_some_and(|c| c.contains(PONG))))
            })
            .await?;
        self.detail(format_args!(
            "the control plane's auto-reply came back as a send task; the agent sent {} a message: \"{}\"",
            text(&reply["to_nickname"]),
            text(&reply["content"])
        ));
        let own = self
            .wait_for("report_new_msg of the agent's own reply", async || {
                let reports = self.requests("report_new_msg", Some(&login.wxid)).await?;
                Ok(msg_units(&reports).into_iter().find(|u| {
                    u["wxid_from"] == login.wxid.as_str()
                        && u["msg"].as_str().is_some_and(|m| m.contains(PONG))
                }))
            })
            .await?;
        self.detail(format_args!(
            "report_new_msg: {} (own messages are reported too)",
            describe_msg(&own, &login.wxid, &login.names)
        ));
        Ok(())
    }

    // ---- step 7 ----

    async fn log_out(&mut self, account: &Account, login: &LoggedIn) -> anyhow::Result<()> {
        self.post(
            &format!("/__sim/sessions/{}/kick", account.uin),
            &json!({"retcode": 1101}),
        )
        .await?;
        self.say("the account was logged out from the phone (synccheck answers retcode 1101)");
        let logout = self
            .wait_for("the control plane to receive logout", async || {
                Ok(self
                    .requests("logout", Some(&login.wxid))
                    .await?
                    .into_iter()
                    .next())
            })
            .await?;
        let reason = &logout["data"]["reason"];
        ensure!(
            reason == "phone_logout",
            "logout reported reason {reason}, expected \"phone_logout\""
        );
        self.detail("control plane got logout: reason phone_logout");
        let admin = self.supervisor()?.admin;
        self.wait_for("the supervisor to reap the worker", async || {
            let status = self.get_url(&format!("http://{admin}/status")).await?;
            Ok(status["sessions"]
                .as_array()
                .is_some_and(Vec::is_empty)
                .then_some(()))
        })
        .await?;
        self.detail("the supervisor reaped the worker: /status lists no sessions");
        let records = self.get("/__cp/requests").await?;
        let uploads = self.get("/__cp/uploads").await?;
        self.tally = Tally::count(&records, &uploads, &login.wxid);

        let deadline = self.opts.deadline;
        let supervisor = self.supervisor_mut()?;
        supervisor.ask(Ask::Terminate);
        let ended = supervisor
            .wait_exit(deadline)
            .await
            .ok_or_else(|| anyhow!("the supervisor did not exit within {deadline:?} of SIGTERM"))?;
        ensure!(
            ended.success(),
            "the supervisor ended with {ended} after SIGTERM"
        );
        self.supervisor = None;
        self.detail(format_args!("supervisor stopped on SIGTERM ({ended})"));
        if let Some(sim) = self.sim.take() {
            tokio::time::timeout(self.opts.deadline, sim.shutdown())
                .await
                .map_err(|_| anyhow!("the simulator did not shut down in time"))?;
        }
        self.detail("simulator stopped");
        Ok(())
    }

    // ---- step 8 ----

    fn summarise(&self) -> anyhow::Result<()> {
        ensure!(
            self.tally.bad_signatures == 0,
            "{} requests carried a signature the control plane rejected",
            self.tally.bad_signatures
        );
        self.say(format_args!(
            "all {} steps passed in {:.1} s",
            Step::COUNT,
            self.started.elapsed().as_secs_f64()
        ));
        for line in self.tally.lines() {
            self.detail(line);
        }
        Ok(())
    }

    // ---- clean-up ----

    async fn clean_up(&mut self, hurry: &CancellationToken, keep: Keep) {
        if let Some(mut supervisor) = self.supervisor.take()
            && supervisor.ended().is_none()
        {
            println!("{INDENT}stopping the supervisor (pid {})", supervisor.pid);
            supervisor.ask(Ask::Terminate);
            let ended = tokio::select! {
                ended = supervisor.wait_exit(STOP_GRACE) => ended,
                () = hurry.cancelled() => None,
            };
            match ended {
                Some(ended) => println!("{INDENT}supervisor stopped ({ended})"),
                None => {
                    println!("{INDENT}the supervisor did not stop; killing its process group");
                    supervisor.ask(Ask::Kill);
                    match supervisor.wait_exit(Duration::from_secs(5)).await {
                        Some(ended) => println!("{INDENT}supervisor killed ({ended})"),
                        None => eprintln!(
                            "wxagent demo: supervisor pid {} did not exit after SIGKILL",
                            supervisor.pid
                        ),
                    }
                }
            }
        }
        if let Some(sim) = self.sim.take()
            && tokio::time::timeout(Duration::from_secs(5), sim.shutdown())
                .await
                .is_err()
        {
            eprintln!("wxagent demo: the simulator did not shut down in time");
        }
        if let Some(dir) = self.files.take() {
            match keep {
                Keep::Files => eprintln!(
                    "wxagent demo: files kept in {} (supervisor.log, wxagent.toml, state/)",
                    dir.display()
                ),
                Keep::Nothing => {
                    if let Err(e) = std::fs::remove_dir_all(&dir) {
                        eprintln!("wxagent demo: cannot remove {}: {e}", dir.display());
                    }
                }
            }
        }
    }

    // ---- plumbing ----

    fn supervisor(&self) -> anyhow::Result<&Supervisor> {
        self.supervisor
            .as_ref()
            .ok_or_else(|| anyhow!("the supervisor is not running"))
    }

    fn supervisor_mut(&mut self) -> anyhow::Result<&mut Supervisor> {
        self.supervisor
            .as_mut()
            .ok_or_else(|| anyhow!("the supervisor is not running"))
    }

    /// Polls `probe` until it yields a value, the deadline passes (an error naming `what` and
    /// the last probe error), or the supervisor exits on its own.
    async fn wait_for<T>(
        &self,
        what: &str,
        mut probe: impl AsyncFnMut() -> anyhow::Result<Option<T>>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + self.opts.deadline;
        let mut pause = Duration::from_millis(50);
        let mut last_error = None;
        loop {
            if let Some(ended) = self.supervisor.as_ref().and_then(Supervisor::ended) {
                bail!("the supervisor exited unexpectedly ({ended}) while waiting for {what}");
            }
            match probe().await {
                Ok(Some(value)) => return Ok(value),
                Ok(None) => {}
                Err(error) => last_error = Some(error),
            }
            if Instant::now() >= deadline {
                let waited = self.opts.deadline.as_secs();
                return Err(match last_error {
                    Some(error) => error.context(format!("gave up waiting {waited} s for {what}")),
                    None => anyhow!("gave up waiting {waited} s for {what}"),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }

    /// The control plane's records of `action` (answered 200, first copies only), oldest first.
    async fn requests(&self, action: &str, wxid: Option<&str>) -> anyhow::Result<Vec<Value>> {
        let mut path = format!("/__cp/requests?action={action}&status=200");
        if let Some(wxid) = wxid {
            path.push_str("&wxid=");
            path.extend(url::form_urlencoded::byte_serialize(wxid.as_bytes()));
        }
        let answer = self.get(&path).await?;
        Ok(answer["requests"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter(|r| r["duplicate"] != true)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.get_url(&format!("{}{path}", self.base)).await
    }

    async fn get_url(&self, url: &str) -> anyhow::Result<Value> {
        let answer = self.http.get(url).send().await;
        json_answer("GET", url, answer).await
    }

    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let answer = self.http.post(&url).json(body).send().await;
        json_answer("POST", &url, answer).await
    }

    async fn get_bytes(&self, path: &str) -> anyhow::Result<bytes::Bytes> {
        let url = format!("{}{path}", self.base);
        let answer = self
            .http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = answer.status();
        let body = answer
            .bytes()
            .await
            .with_context(|| format!("GET {url}: reading the body"))?;
        ensure!(
            status.is_success(),
            "GET {url} answered {status}: {}",
            excerpt(&body)
        );
        Ok(body)
    }
}

async fn json_answer(
    method: &str,
    url: &str,
    answer: reqwest::Result<reqwest::Response>,
) -> anyhow::Result<Value> {
    let answer = answer.with_context(|| format!("{method} {url}"))?;
    let status = answer.status();
    let body = answer
        .bytes()
        .await
        .with_context(|| format!("{method} {url}: reading the body"))?;
    ensure!(
        status.is_success(),
        "{method} {url} answered {status}: {}",
        excerpt(&body)
    );
    serde_json::from_slice(&body)
        .with_context(|| format!("{method} {url}: the answer is not json: {}", excerpt(&body)))
}

/// The start of a body for an error message.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.into_owned(),
    }
}

/// A JSON string for display ("?" when it is not one).
fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("?")
}

/// An id that may arrive as a JSON string or number, as text.
fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// The names in a contact list, remembering each `wxid → name` for later messages.
fn list_names(list: &Value, key: &str, names: &mut HashMap<String, String>) -> Vec<String> {
    let entries = list.as_array().map(Vec::as_slice).unwrap_or_default();
    entries
        .iter()
        .map(|entry| {
            let name = entry[key].as_str().unwrap_or("?").to_owned();
            if let Some(wxid) = entry["wxid"].as_str() {
                names.insert(wxid.to_owned(), name.clone());
            }
            name
        })
        .collect()
}

/// Every message unit in `report_new_msg` records (`data.msg` is one unit or a list).
fn msg_units(records: &[Value]) -> Vec<Value> {
    records
        .iter()
        .flat_map(|r| match &r["data"]["msg"] {
            Value::Array(list) => list.clone(),
            unit @ Value::Object(_) => vec![unit.clone()],
            _ => Vec::new(),
        })
        .collect()
}

/// One line for a reported message: who, where, what.
fn describe_msg(unit: &Value, own: &str, names: &HashMap<String, String>) -> String {
    let name = |id: &Value| {
        let id = id.as_str().unwrap_or_default();
        names.get(id).cloned().unwrap_or_else(|| {
            if id.is_empty() {
                "?".to_owned()
            } else {
                id.to_owned()
            }
        })
    };
    let text = unit["msg"].as_str().unwrap_or_default();
    let room = unit["room_wxid"].as_str().unwrap_or_default();
    if room.is_empty() {
        return format!(
            "{} -> {}: \"{text}\"",
            name(&unit["wxid_from"]),
            name(&unit["wxid_to"])
        );
    }
    let mentioned = unit["atUserList"]
        .as_array()
        .is_some_and(|list| list.iter().any(|w| w == own));
    format!(
        "{} in {}: \"{text}\"{}",
        name(&unit["wxid_from"]),
        name(&unit["room_wxid"]),
        if mentioned { " (mentions you)" } else { "" }
    )
}

/// The uuids of QR logins the simulator has waiting for a scan.
fn waiting_uuids(pending: &Value) -> Vec<String> {
    pending["pending"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|q| q["state"] == "waiting")
        .filter_map(|q| q["uuid"].as_str().map(str::to_owned))
        .collect()
}

/// The text of the login QR code for `uuid` on the simulator's login host: `<base>/l/<uuid>`.
fn login_content(base: &str, uuid: &str) -> anyhow::Result<String> {
    let mut url = url::Url::parse(base).with_context(|| format!("bad simulator url {base}"))?;
    url.path_segments_mut()
        .map_err(|()| anyhow!("simulator url {base} cannot take a path"))?
        .clear()
        .extend(["l", uuid]);
    Ok(url.into())
}

/// What the control plane received during the demo, for the summary.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Tally {
    /// Requests answered 200 (first copies), by action.
    actions: BTreeMap<String, usize>,
    incoming_msgs: usize,
    own_msgs: usize,
    signed: usize,
    bad_signatures: usize,
    qr_uploads: usize,
}

impl Tally {
    fn count(records: &Value, uploads: &Value, wxid: &str) -> Tally {
        let mut tally = Tally::default();
        let records = records["requests"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        for record in records {
            match record["signature_ok"] {
                Value::Bool(true) => tally.signed += 1,
                Value::Bool(false) => tally.bad_signatures += 1,
                _ => {}
            }
            if record["status"] != 200 || record["duplicate"] == true {
                continue;
            }
            let action = record["action"].as_str().unwrap_or_default();
            *tally.actions.entry(action.to_owned()).or_default() += 1;
        }
        let reported: Vec<Value> = records
            .iter()
            .filter(|r| {
                r["action"] == "report_new_msg" && r["status"] == 200 && r["duplicate"] != true
            })
            .cloned()
            .collect();
        for unit in msg_units(&reported) {
            if unit["wxid_from"] == wxid {
                tally.own_msgs += 1;
            } else {
                tally.incoming_msgs += 1;
            }
        }
        tally.qr_uploads = uploads["uploads"]
            .as_array()
            .map_or(0, |list| list.iter().filter(|u| u["kind"] == "qr").count());
        tally
    }

    /// The summary's detail lines.
    fn lines(&self) -> Vec<String> {
        let n = |action: &str| self.actions.get(action).copied().unwrap_or(0);
        let mut lines = vec![format!(
            "the control plane received {} login, {} report_contact, {} report_new_msg ({} incoming, {} sent by the agent), {} logout",
            n("login"),
            n("report_contact"),
            n("report_new_msg"),
            self.incoming_msgs,
            self.own_msgs,
            n("logout"),
        )];
        let main = ["login", "report_contact", "report_new_msg", "logout"];
        let others: Vec<String> = self
            .actions
            .iter()
            .filter(|(action, _)| !main.contains(&action.as_str()))
            .map(|(action, count)| format!("{count} {action}"))
            .collect();
        if !others.is_empty() {
            lines.push(format!("and {}", others.join(", ")));
        }
        lines.push(format!(
            "{}; {} signed with the shared secret and verified",
            plural(self.qr_uploads, "QR upload"),
            plural(self.signed, "request")
        ));
        lines
    }
}

// ---- the supervisor process ----

/// Requests to the task that owns the supervisor's `Child`.
#[derive(Debug, Clone, Copy)]
enum Ask {
    /// SIGTERM to the supervisor: it stops its workers and exits.
    Terminate,
    /// SIGKILL to its process group.
    Kill,
}

/// How the supervisor process ended.
#[derive(Debug, Clone)]
enum Ended {
    Exited(ExitStatus),
    /// Waiting for it failed; it may be gone or not.
    Lost(String),
}

impl Ended {
    fn success(&self) -> bool {
        matches!(self, Ended::Exited(status) if status.success())
    }
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ended::Exited(status) => write!(f, "{status}"),
            Ended::Lost(why) => write!(f, "lost track of it: {why}"),
        }
    }
}

/// The running `wxagent run`: one task owns its `Child` (reaps it, delivers signals), another
/// copies its stderr to the log file.
struct Supervisor {
    pid: u32,
    admin: SocketAddr,
    asks: mpsc::UnboundedSender<Ask>,
    ended: watch::Receiver<Option<Ended>>,
}

impl Supervisor {
    fn spawn(
        exe: &Path,
        config: &Path,
        admin: SocketAddr,
        log: tokio::fs::File,
    ) -> anyhow::Result<Supervisor> {
        let mut cmd = Command::new(exe);
        cmd.arg("run")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // Its own process group: the terminal's Ctrl-C reaches only the demo, which then stops
        // the supervisor in order; and a SIGKILL to the group cannot hit the demo.
        crate::supervisor::process::isolate(&mut cmd);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {} run", exe.display()))?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("the supervisor exited before it could be watched"))?;
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(copy_log(stderr, log));
        }
        let (asks, asks_rx) = mpsc::unbounded_channel();
        let (ended_tx, ended) = watch::channel(None);
        tokio::spawn(own_child(child, asks_rx, ended_tx));
        Ok(Supervisor {
            pid,
            admin,
            asks,
            ended,
        })
    }

    fn ended(&self) -> Option<Ended> {
        self.ended.borrow().clone()
    }

    fn ask(&self, ask: Ask) {
        // A closed channel means the child is already reaped: nothing left to signal.
        let _ = self.asks.send(ask);
    }

    /// Waits up to `within` for the process to end.
    async fn wait_exit(&mut self, within: Duration) -> Option<Ended> {
        let waited = tokio::time::timeout(within, self.ended.wait_for(Option::is_some)).await;
        match waited {
            Ok(Ok(ended)) => ended.clone(),
            // The owning task is gone without a word: only possible if it panicked.
            Ok(Err(_)) => Some(Ended::Lost("the task owning it ended".to_owned())),
            Err(_) => None,
        }
    }
}

/// Owns the child: delivers signals until it exits, then reaps it and publishes how it ended.
async fn own_child(
    mut child: Child,
    mut asks: mpsc::UnboundedReceiver<Ask>,
    ended: watch::Sender<Option<Ended>>,
) {
    loop {
        tokio::select! {
            status = child.wait() => {
                let _ = ended.send(Some(match status {
                    Ok(status) => Ended::Exited(status),
                    Err(e) => Ended::Lost(e.to_string()),
                }));
                return;
            }
            Some(ask) = asks.recv() => deliver(&mut child, ask),
        }
    }
}

fn deliver(child: &mut Child, ask: Ask) {
    #[cfg(unix)]
    if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
        // SAFETY: plain kill(2)/killpg(2) on our own unreaped child (its pid cannot be reused
        // before the wait in `own_child`), with valid signal numbers.
        let rc = unsafe {
            match ask {
                Ask::Terminate => libc::kill(pid, libc::SIGTERM),
                Ask::Kill => libc::killpg(pid, libc::SIGKILL),
            }
        };
        if rc == 0 {
            return;
        }
    }
    // No process groups here (Windows: terminate and kill are one thing), or the group is
    // gone: kill the process itself.
    #[cfg(not(unix))]
    let _ = ask;
    let _ = child.start_kill();
}

/// Copies the supervisor's stderr to its log file and shows warnings and errors.
async fn copy_log(stderr: ChildStderr, mut log: tokio::fs::File) {
    let mut lines = BufReader::new(stderr).lines();
    let mut log_ok = true;
    while let Ok(Some(line)) = lines.next_line().await {
        if log_ok {
            log_ok =
                log.write_all(line.as_bytes()).await.is_ok() && log.write_all(b"\n").await.is_ok();
        }
        if let Some(shown) = worth_showing(&line) {
            println!("{INDENT}supervisor: {shown}");
        }
    }
    let _ = log.flush().await;
}

/// The part of a supervisor log line to show: WARN and ERROR events, and lines that are not
/// log events at all (such as a fatal error printed before logging started).
fn worth_showing(line: &str) -> Option<&str> {
    let line = line.trim();
    if line.is_empty() {
        return None;
    }
    // `<timestamp> <LEVEL> …`, or `<LEVEL> …` without a timestamp.
    let mut words = line.split_whitespace();
    for _ in 0..2 {
        match words.next() {
            Some("WARN" | "ERROR") => {
                let level_at = line.find(" WARN").or_else(|| line.find(" ERROR"));
                return Some(level_at.map_or(line, |at| line[at..].trim_start()));
            }
            Some("TRACE" | "DEBUG" | "INFO") => return None,
            _ => {}
        }
    }
    Some(line)
}

// ---- files ----

fn random_hex(len: usize) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    (0..len)
        .map(|_| char::from(HEX[rand::random_range(0..16usize)]))
        .collect()
}

/// A fresh folder only this user can read, in the system's temp folder.
fn create_private_dir() -> anyhow::Result<PathBuf> {
    let parent = std::env::temp_dir();
    #[cfg_attr(not(unix), allow(unused_mut))]
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    for _ in 0..16 {
        let path = parent.join(format!(
            "wxagent-demo-{}-{}",
            std::process::id(),
            random_hex(8)
        ));
        match builder.create(&path) {
            // Canonical, so the path printed is the one the supervisor hands to its workers.
            Ok(()) => return Ok(std::fs::canonicalize(&path).unwrap_or(path)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("creating a folder in {}", parent.display()));
            }
        }
    }
    bail!("cannot find a free folder name in {}", parent.display())
}

fn create_private_file(path: &Path) -> anyhow::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    create_private_file(path)?
        .write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))
}

/// A loopback address with a port nobody listens on right now, for the admin API.
fn free_loopback_addr() -> anyhow::Result<SocketAddr> {
    let probe = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .context("finding a free loopback port for the admin API")?;
    probe
        .local_addr()
        .context("reading the free port's address")
}

/// The demo's configuration file.
fn config_text(
    base: &str,
    state_dir: &Path,
    admin: SocketAddr,
    secret: &Secret,
) -> anyhow::Result<String> {
    let state_dir = state_dir
        .to_str()
        .ok_or_else(|| anyhow!("the temp folder {} is not UTF-8", state_dir.display()))?;
    let quote = |s: &str| toml::Value::String(s.to_owned()).to_string();
    Ok(format!(
        "# Written by `wxagent demo` for one run against its simulator; removed when it ends.\n\
         \n\
         [agent]\n\
         state_dir = {state_dir}\n\
         admin_listen = {admin}\n\
         max_sessions = 4\n\
         \n\
         [control]\n\
         callback_url = {callback}\n\
         upload_url = {upload}\n\
         secret_key = {secret}\n\
         sign_requests = true\n\
         poll_interval = \"300ms\"\n\
         timeout = \"10s\"\n\
         \n\
         [wechat]\n\
         login_url = {login}\n",
        state_dir = quote(state_dir),
        admin = quote(&admin.to_string()),
        callback = quote(&format!("{base}/wehub/callback")),
        upload = quote(&format!("{base}/wehub/upload")),
        secret = quote(secret.expose()),
        login = quote(base),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigSource;

    #[test]
    fn config_text_is_a_valid_configuration_with_every_demo_setting() {
        let admin: SocketAddr = "127.0.0.1:40123".parse().unwrap();
        let text = config_text(
            "http://127.0.0.1:39999",
            Path::new("/tmp/wxagent demo \"x\"/state"),
            admin,
            &Secret::new("s3cret"),
        )
        .unwrap();
        let config =
            Config::from_toml_str(&text, ConfigSource::Flag(PathBuf::from("/tmp/demo.toml")))
                .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(config.agent.admin_listen, admin);
        assert_eq!(
            config.agent.state_dir,
            PathBuf::from("/tmp/wxagent demo \"x\"/state")
        );
        assert_eq!(
            config.control.callback_url.as_ref().map(|u| u.as_str()),
            Some("http://127.0.0.1:39999/wehub/callback")
        );
        assert_eq!(
            config.control.upload_url.as_ref().map(|u| u.as_str()),
            Some("http://127.0.0.1:39999/wehub/upload")
        );
        assert_eq!(
            config.control.secret_key.as_ref().map(Secret::expose),
            Some("s3cret")
        );
        assert!(config.control.sign_requests);
        assert_eq!(config.control.poll_interval, Duration::from_millis(300));
        assert_eq!(config.wechat.login_url.as_str(), "http://127.0.0.1:39999/");
    }

    #[test]
    fn only_warnings_errors_and_stray_lines_of_the_supervisor_are_shown() {
        let cases = [
            (
                "2026-05-01T10:00:00.000001Z  INFO wxagent::supervisor::run: supervisor started",
                None,
            ),
            (
                "2026-05-01T10:00:00.000001Z DEBUG session{session=demo-1}: wxagent::x: detail",
                None,
            ),
            (
                "2026-05-01T10:00:00.000001Z  WARN session{session=demo-1}: wxagent::x: retrying",
                Some("WARN session{session=demo-1}: wxagent::x: retrying"),
            ),
            (
                "2026-05-01T10:00:00.000001Z ERROR wxagent::x: admin API stopped",
                Some("ERROR wxagent::x: admin API stopped"),
            ),
            (
                "ERROR wxagent::x: no timestamp",
                Some("ERROR wxagent::x: no timestamp"),
            ),
            ("INFO wxagent::x: no timestamp", None),
            (
                "wxagent: error: cannot read configuration file",
                Some("wxagent: error: cannot read configuration file"),
            ),
            ("   ", None),
        ];
        for (line, shown) in cases {
            assert_eq!(worth_showing(line), shown, "{line:?}");
        }
    }

    #[test]
    fn messages_are_described_with_names_and_mentions() {
        let names = HashMap::from([
            ("42".to_owned(), "you".to_owned()),
            ("@alice".to_owned(), "Alice".to_owned()),
            ("@@group".to_owned(), "Demo Group".to_owned()),
        ]);
        let private = json!({"msg_id": "1", "room_wxid": "", "wxid_from": "@alice", "wxid_to": "42", "msg": "hello"});
        assert_eq!(
            describe_msg(&private, "42", &names),
            "Alice -> you: \"hello\""
        );
        let group = json!({"msg_id": "2", "room_wxid": "@@group", "wxid_from": "@bob", "wxid_to": "@@group", "msg": "hi", "atUserList": ["42"]});
        assert_eq!(
            describe_msg(&group, "42", &names),
            "@bob in Demo Group: \"hi\" (mentions you)"
        );
        let unmentioned =
            json!({"room_wxid": "@@group", "wxid_from": "@alice", "msg": "hi", "atUserList": []});
        assert_eq!(
            describe_msg(&unmentioned, "42", &names),
            "Alice in Demo Group: \"hi\""
        );
    }

    #[test]
    fn tally_counts_first_copies_by_action_and_message_direction() {
        let records = json!({"requests": [
            {"action": "login", "status": 200, "duplicate": false, "signature_ok": true, "data": {}},
            {"action": "report_new_msg", "status": 200, "duplicate": false, "signature_ok": true,
             "data": {"msg": {"msg_id": "1", "wxid_from": "@alice"}}},
            {"action": "report_new_msg", "status": 200, "duplicate": true, "signature_ok": true,
             "data": {"msg": {"msg_id": "1", "wxid_from": "@alice"}}},
            {"action": "report_new_msg", "status": 200, "duplicate": false, "signature_ok": true,
             "data": {"msg": [{"msg_id": "2", "wxid_from": "42"}, {"msg_id": "3", "wxid_from": "@bob"}]}},
            {"action": "pull_task", "status": 200, "duplicate": false, "signature_ok": false, "data": {}},
            {"action": "pull_task", "status": 503, "duplicate": false, "data": {}},
        ]});
        let uploads = json!({"uploads": [{"kind": "qr"}, {"kind": "media"}, {"kind": "qr"}]});
        let tally = Tally::count(&records, &uploads, "42");
        assert_eq!(tally.actions.get("report_new_msg"), Some(&2));
        assert_eq!(tally.actions.get("pull_task"), Some(&1));
        assert_eq!(tally.actions.get("login"), Some(&1));
        assert_eq!((tally.incoming_msgs, tally.own_msgs), (2, 1));
        assert_eq!((tally.signed, tally.bad_signatures), (4, 1));
        assert_eq!(tally.qr_uploads, 2);
        let lines = tally.lines();
        assert!(
            lines[0].contains("2 report_new_msg (2 incoming, 1 sent by the agent)"),
            "{lines:?}"
        );
        assert_eq!(lines[1], "and 1 pull_task");
        assert!(
            lines[2].starts_with("2 QR uploads; 4 requests signed"),
            "{lines:?}"
        );
    }

    #[test]
    fn login_content_is_the_login_host_with_the_uuid() {
        assert_eq!(
            login_content("http://127.0.0.1:4000", "ab_c-D==").unwrap(),
            "http://127.0.0.1:4000/l/ab_c-D=="
        );
        let pending = json!({"pending": [
            {"uuid": "a", "state": "scanned"},
            {"uuid": "b", "state": "waiting"},
            {"uuid": "c", "state": "waiting"},
        ]});
        assert_eq!(waiting_uuids(&pending), ["b", "c"]);
    }

    #[test]
    fn ids_are_read_from_strings_and_numbers() {
        assert_eq!(id_text(&json!("7")), Some("7".to_owned()));
        assert_eq!(id_text(&json!(7)), Some("7".to_owned()));
        assert_eq!(id_text(&json!("")), None);
        assert_eq!(id_text(&Value::Null), None);
    }
}
