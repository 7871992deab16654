//! Shared helpers for the integration tests: start the real `wxagent sim` binary on loopback,
//! drive its test-control APIs (`/__sim/` and the reference control plane's `/__cp/`), write a
//! config for it and run `wxagent --qr_session` or `wxagent run` against it, watching their
//! output lines and the process table. No fixed sleeps: every wait polls a condition with a
//! generous deadline.

#![allow(dead_code)]

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
pub use wxagent::supervisor::process::is_fork_server;

pub const BIN: &str = env!("CARGO_BIN_EXE_wxagent");

/// Deadline for anything a test waits for; generous so a loaded 2-core machine does not flake.
pub const WAIT: Duration = Duration::from_secs(60);

/// Lines a child wrote, shared with a reader thread.
#[derive(Clone, Default)]
pub struct Lines(
    Arc<(Mutex<Vec<String>>, Condvar)>,
    /// Set once the reader reached the end of the stream.
    Arc<std::sync::atomic::AtomicBool>,
);

impl Lines {
    pub fn spawn_reader(&self, r: impl std::io::Read + Send + 'static, echo: &'static str) {
        let me = self.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines() {
                let Ok(line) = line else { break };
                eprintln!("[{echo}] {line}");
                let (m, cv) = &*me.0;
                m.lock().unwrap().push(line);
                cv.notify_all();
            }
            me.1.store(true, std::sync::atomic::Ordering::SeqCst);
            me.0.1.notify_all();
        });
    }

    /// Waits until the stream ended (the writer exited and every line was read).
    pub fn wait_closed(&self, what: &str) {
        wait_until(&format!("the end of {what}"), || {
            self.1
                .load(std::sync::atomic::Ordering::SeqCst)
                .then_some(())
        });
    }

    pub fn all(&self) -> Vec<String> {
        self.0.0.lock().unwrap().clone()
    }

    /// Waits for a line matching `pred` (looking at every line so far) and returns it.
    pub fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.wait_for_nth(what, 1, pred)
    }

    /// Waits until `n` lines match and returns the n-th.
    pub fn wait_for_nth(&self, what: &str, n: usize, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        let (m, cv) = &*self.0;
        let mut g = m.lock().unwrap();
        loop {
            let hits: Vec<&String> = g.iter().filter(|l| pred(l)).collect();
            if hits.len() >= n {
                return hits[n - 1].clone();
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "timed out waiting for {what}; lines so far:\n{}",
                g.join("\n")
            );
            g = cv.wait_timeout(g, deadline - now).unwrap().0;
        }
    }

    pub fn count(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.0.0.lock().unwrap().iter().filter(|l| pred(l)).count()
    }
}

/// A running `wxagent sim`.
pub struct Sim {
    child: Child,
    pub base: String,
    /// Its log lines (stderr).
    pub log: Lines,
    http: reqwest::blocking::Client,
}

impl Sim {
    pub fn start() -> Sim {
        Sim::start_with_hold("400ms")
    }

    pub fn start_with_hold(hold: &str) -> Sim {
        Sim::launch(hold, None)
    }

    /// A simulator logging at `rust_log` (a `RUST_LOG` value).
    pub fn start_logging(rust_log: &str) -> Sim {
        Sim::launch("400ms", Some(rust_log))
    }

    fn launch(hold: &str, rust_log: Option<&str>) -> Sim {
        let mut cmd = Command::new(BIN);
        cmd.args(["sim", "--listen", "127.0.0.1:0", "--hold", hold]);
        if let Some(filter) = rust_log {
            cmd.env("RUST_LOG", filter);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start wxagent sim");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).expect("read sim address");
        let base = first.trim().rsplit(' ').next().unwrap().to_owned();
        assert!(
            base.starts_with("http://127.0.0.1:"),
            "unexpected sim banner {first:?}"
        );
        let err = Lines::default();
        err.spawn_reader(child.stderr.take().unwrap(), "sim");
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Sim {
            child,
            base,
            log: err,
            http,
        }
    }

    pub fn get(&self, path: &str) -> Value {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .unwrap();
        let status = r.status();
        let v: Value = r.json().unwrap_or(Value::Null);
        assert!(status.is_success(), "GET {path}: {status} {v}");
        v
    }

    pub fn post(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .unwrap();
        let status = r.status();
        let v: Value = r.json().unwrap_or(Value::Null);
        assert!(status.is_success(), "POST {path} {body}: {status} {v}");
        v
    }

    pub fn delete(&self, path: &str) {
        let r = self
            .http
            .delete(format!("{}{path}", self.base))
            .send()
            .unwrap();
        assert!(r.status().is_success(), "DELETE {path}: {}", r.status());
    }

    pub fn create_account(&self, spec: Value) -> u64 {
        self.post("/__sim/accounts", spec)["uin"]
            .as_u64()
            .expect("uin")
    }

    /// Waits until a QR uuid is pending in the given state and returns it.
    pub fn wait_qr(&self, state: &str, not: &[String]) -> String {
        wait_until("a pending QR code", || {
            let v = self.get("/__sim/qr");
            v["pending"].as_array()?.iter().find_map(|q| {
                let uuid = q["uuid"].as_str()?.to_owned();
                (q["state"] == state && !not.contains(&uuid)).then_some(uuid)
            })
        })
    }

    /// Scans and confirms the one pending QR code as account `uin`.
    pub fn login(&self, uin: u64) -> String {
        let uuid = self.wait_qr("waiting", &[]);
        self.post(&format!("/__sim/qr/{uuid}/scan"), json!({"uin": uin}));
        self.post(&format!("/__sim/qr/{uuid}/confirm"), json!({}));
        uuid
    }

    pub fn session(&self, uin: u64) -> Option<Value> {
        let v = self.get("/__sim/sessions");
        let list = v
            .as_array()
            .cloned()
            .or_else(|| v["sessions"].as_array().cloned())
            .unwrap_or_default();
        list.into_iter().find(|s| s["uin"].as_u64() == Some(uin))
    }

    pub fn inject(&self, uin: u64, body: Value) -> Value {
        self.post(&format!("/__sim/sessions/{uin}/inject"), body)
    }

    pub fn outbox(&self, uin: u64) -> Vec<Value> {
        self.get(&format!("/__sim/sessions/{uin}/outbox"))["messages"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn account(&self, uin: u64) -> Value {
        self.get(&format!("/__sim/accounts/{uin}"))
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` until it returns Some, or panics after [`WAIT`].
pub fn wait_until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// Writes a config file readable by its owner only, as wxagent requires of a file that holds a
/// secret.
pub fn write_config(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A config file for a worker against `sim`, plus its state directory, in a temp dir.
pub struct TestConfig {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl TestConfig {
    pub fn new(sim: &Sim, extra: &str) -> TestConfig {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wxagent.toml");
        let state = dir.path().join("state");
        let text = format!(
            "[agent]\nstate_dir = {state:?}\n\n[wechat]\nlogin_url = \"{base}\"\nrequest_timeout = \"10s\"\nlongpoll_timeout = \"30s\"\nnetwork_give_up = \"2m\"\n{extra}\n",
            state = state.display().to_string(),
            base = sim.base,
        );
        // `extra` may add keys to [wechat] (it is appended right after it) or new sections.
        write_config(&path, &text);
        TestConfig { dir, path }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
}

/// A running `wxagent --qr_session ID` with its stdout lines.
pub struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    pub out: Lines,
    pub err: Lines,
}

impl Worker {
    pub fn start(config: &Path, session: &str) -> Worker {
        Worker::start_logging(config, session, "wxagent=debug")
    }

    /// Starts the worker with `RUST_LOG=<rust_log>`.
    pub fn start_logging(config: &Path, session: &str, rust_log: &str) -> Worker {
        let mut child = Command::new(BIN)
            .args(["--qr_session", session, "--config"])
            .arg(config)
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start worker");
        let out = Lines::default();
        out.spawn_reader(child.stdout.take().unwrap(), "worker");
        let err = Lines::default();
        err.spawn_reader(child.stderr.take().unwrap(), "worker-log");
        let stdin = child.stdin.take();
        Worker {
            child,
            stdin,
            out,
            err,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn command(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    pub fn wait_online(&self) -> String {
        self.out
            .wait_for("the online line", |l| l.starts_with("online:"))
    }

    /// Waits for the process to exit and returns its status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        wait_until("the worker to exit", || self.child.try_wait().unwrap())
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid with a valid signal number.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill failed");
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a process with this pid still exists (zombies included).
pub fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// A NUL-separated `/proc/<pid>/<file>` (`cmdline`, `environ`) as its entries (empty when it
/// cannot be read).
pub fn proc_list(pid: u32, file: &str) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/{file}"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

/// The environment of a process, one `NAME=value` per entry (empty when it cannot be read).
pub fn environ(pid: u32) -> Vec<String> {
    proc_list(pid, "environ")
}

// ---------------------------------------------------------------------------------------------
// The reference control plane (`/__cp/` on the simulator's listener).

impl Sim {
    /// GET returning the raw body (a PNG, a text page).
    pub fn get_bytes(&self, path: &str) -> Vec<u8> {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .unwrap();
        let status = r.status();
        let bytes = r.bytes().unwrap().to_vec();
        assert!(status.is_success(), "GET {path}: {status}");
        bytes
    }

    /// Queues a task for `wxid` ("" = the agent) via `pull` or `reply`; returns its task id.
    pub fn queue_task(&self, wxid: &str, task_type: i64, task_dict: Value, via: &str) -> String {
        self.post(
            "/__cp/tasks",
            json!({"wxid": wxid, "task_type": task_type, "task_dict": task_dict, "via": via}),
        )["task_id"]
            .as_str()
            .expect("task_id")
            .to_owned()
    }

    /// Queues task 200 for the agent (pull) and returns its task id.
    pub fn queue_qr_task(&self, qr_session_id: &str) -> String {
        self.queue_task("", 200, json!({"qrcode_session_id": qr_session_id}), "pull")
    }

    /// Every callback request with this action so far, oldest first.
    pub fn requests(&self, action: &str) -> Vec<Value> {
        self.get(&format!("/__cp/requests?action={action}"))["requests"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Every callback request so far, oldest first.
    pub fn all_requests(&self) -> Vec<Value> {
        self.get("/__cp/requests")["requests"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until a request with this action satisfies `pred` and returns it.
    pub fn wait_request(&self, what: &str, action: &str, pred: impl Fn(&Value) -> bool) -> Value {
        wait_until(what, || self.requests(action).into_iter().find(|r| pred(r)))
    }

    /// The `data.msg` units of every `report_new_msg` so far.
    pub fn reported_messages(&self) -> Vec<Value> {
        self.requests("report_new_msg")
            .into_iter()
            .map(|r| r["data"]["msg"].clone())
            .collect()
    }

    /// Waits until a reported message unit satisfies `pred` and returns it.
    pub fn wait_reported_message(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        wait_until(what, || {
            self.reported_messages().into_iter().find(|m| pred(m))
        })
    }

    pub fn qr_sessions(&self) -> Vec<Value> {
        self.get("/__cp/qr_sessions")
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn qr_session(&self, id: &str) -> Option<Value> {
        self.qr_sessions()
            .into_iter()
            .find(|s| s["qr_session_id"] == id)
    }

    /// Waits until the control plane's record of QR session `id` satisfies `pred`.
    pub fn wait_qr_session(&self, what: &str, id: &str, pred: impl Fn(&Value) -> bool) -> Value {
        wait_until(what, || self.qr_session(id).filter(|s| pred(s)))
    }

    /// The statuses reported for QR session `id`, in order.
    pub fn qr_statuses(&self, id: &str) -> Vec<String> {
        self.qr_session(id)
            .and_then(|s| s["status_history"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|e| e["status"].as_str().map(str::to_owned))
            .collect()
    }

    /// The latest QR PNG uploaded for session `id`.
    pub fn qr_png(&self, id: &str) -> Vec<u8> {
        self.get_bytes(&format!("/__cp/qr_sessions/{id}/png"))
    }

    /// Decodes the latest QR PNG of session `id` and checks it shows the simulator's login URL
    /// `<base>/l/<uuid>` for a uuid the simulator lists as pending and waiting; returns that uuid.
    pub fn uploaded_qr_uuid(&self, id: &str) -> String {
        let content = decode_qr(&self.qr_png(id));
        let prefix = format!("{}/l/", self.base);
        let uuid = content
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("QR content {content:?} is not under {prefix}"))
            .to_owned();
        let pending = self.get("/__sim/qr");
        let listed = pending["pending"].as_array().is_some_and(|a| {
            a.iter()
                .any(|q| q["uuid"] == uuid && q["state"] == "waiting")
        });
        assert!(
            listed,
            "uuid {uuid} of the uploaded QR is not pending: {pending}"
        );
        uuid
    }

    pub fn task_results(&self) -> Value {
        self.get("/__cp/task_results")["results"].clone()
    }

    /// Waits for the `report_task_result` of `task_id` and returns the record.
    pub fn wait_task_result(&self, task_id: &str) -> Value {
        wait_until(&format!("the result of {task_id}"), || {
            let r = self.task_results()[task_id].clone();
            (!r.is_null()).then_some(r)
        })
    }

    /// Changes the control plane's behaviour (`/__cp/mode`).
    pub fn set_mode(&self, patch: Value) -> Value {
        self.post("/__cp/mode", patch)
    }

    /// A contact of account `uin` by nickname (from `/__sim/accounts/<uin>`).
    pub fn contact(&self, uin: u64, nickname: &str) -> Value {
        let account = self.account(uin);
        account["contacts"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["nickname"] == nickname).cloned())
            .unwrap_or_else(|| panic!("no contact {nickname:?} in {account}"))
    }

    /// The UserName of a contact of account `uin`, by nickname.
    pub fn user_name(&self, uin: u64, nickname: &str) -> String {
        self.contact(uin, nickname)["user_name"]
            .as_str()
            .expect("user_name")
            .to_owned()
    }
}

/// Decodes the single QR code in a PNG.
pub fn decode_qr(png: &[u8]) -> String {
    let image = image::load_from_memory(png)
        .expect("the upload is an image")
        .to_luma8();
    let mut prepared = rqrr::PreparedImage::prepare(image);
    let grids = prepared.detect_grids();
    assert_eq!(grids.len(), 1, "expected one QR code in the PNG");
    grids[0].decode().expect("the QR code decodes").1
}

// ---------------------------------------------------------------------------------------------
// The supervisor (`wxagent run`).

/// What a supervisor config says besides the fixed parts (see [`TestConfig::supervisor`]).
pub struct SupervisorSettings {
    /// `[agent] admin_listen`; port 0 is fine unless the test runs `wxagent status`.
    pub admin_listen: String,
    pub max_sessions: usize,
    /// Extra lines for `[control]` (e.g. `secret_key = "..."`).
    pub control: String,
    /// Appended after `[wechat]`: more `[wechat]` keys, then other sections.
    pub extra: String,
    /// Extra lines for `[agent]` (e.g. `fork_server = false`).
    pub agent: String,
}

impl Default for SupervisorSettings {
    fn default() -> Self {
        SupervisorSettings {
            admin_listen: "127.0.0.1:0".into(),
            max_sessions: 10,
            control: String::new(),
            extra: String::new(),
            agent: String::new(),
        }
    }
}

/// The `[agent] machine_id` of supervisor configs; workers report `<this>_<pid>`.
pub const MACHINE_ID: &str = "e2e-host";

impl TestConfig {
    /// A config for `wxagent run` against `sim` and its reference control plane.
    pub fn supervisor(sim: &Sim, s: &SupervisorSettings) -> TestConfig {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wxagent.toml");
        let state = dir.path().join("state");
        let text = format!(
            "[agent]\nmachine_id = \"{MACHINE_ID}\"\nstate_dir = {state:?}\nmax_sessions = {max}\nadmin_listen = \"{admin}\"\n{agent}\n\n\
             [control]\ncallback_url = \"{base}/wehub/callback\"\nupload_url = \"{base}/wehub/upload\"\n\
             poll_interval = \"200ms\"\ntimeout = \"10s\"\n{control}\n\n\
             [wechat]\nlogin_url = \"{base}\"\nrequest_timeout = \"10s\"\nlongpoll_timeout = \"30s\"\nnetwork_give_up = \"2m\"\n{extra}\n",
            state = state.display().to_string(),
            max = s.max_sessions,
            admin = s.admin_listen,
            base = sim.base,
            control = s.control,
            extra = s.extra,
            agent = s.agent,
        );
        write_config(&path, &text);
        TestConfig { dir, path }
    }
}

/// A loopback port that was free a moment ago (for `wxagent status`, which needs a fixed port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

/// A running `wxagent run` with its log lines (workers' logs are relayed into them).
pub struct Supervisor {
    child: Child,
    pub err: Lines,
    /// The bound admin API address, read from the start-up log line.
    pub admin: String,
    http: reqwest::blocking::Client,
}

impl Supervisor {
    /// Starts the supervisor and waits until its admin API listens.
    pub fn start(config: &Path) -> Supervisor {
        Supervisor::start_logging(config, "info,wxagent=debug")
    }

    /// Starts the supervisor with `RUST_LOG=<rust_log>` (its workers inherit it).
    pub fn start_logging(config: &Path, rust_log: &str) -> Supervisor {
        let mut child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start wxagent run");
        let err = Lines::default();
        err.spawn_reader(child.stderr.take().unwrap(), "supervisor");
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .no_proxy()
            .build()
            .unwrap();
        let mut sup = Supervisor {
            child,
            err,
            admin: String::new(),
            http,
        };
        let line = sup.err.wait_for("the admin API line", |l| {
            l.contains("admin API listening") && l.contains("addr=")
        });
        sup.admin = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("addr="))
            .expect("addr field")
            .to_owned();
        sup
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid with a valid signal number.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Waits for the supervisor to exit and returns its status (it is reaped).
    pub fn wait_exit(&mut self) -> ExitStatus {
        wait_until("the supervisor to exit", || self.child.try_wait().unwrap())
    }

    /// `GET /status` of the admin API.
    pub fn status(&self) -> Value {
        let r = self
            .http
            .get(format!("http://{}/status", self.admin))
            .send()
            .expect("admin API answers");
        assert!(r.status().is_success(), "GET /status: {}", r.status());
        r.json().expect("status is json")
    }

    pub fn sessions(&self) -> Vec<Value> {
        self.status()["sessions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn session(&self, id: &str) -> Option<Value> {
        self.sessions().into_iter().find(|s| s["id"] == id)
    }

    /// Waits until session `id` is listed and satisfies `pred`; returns its status entry.
    pub fn wait_session(&self, what: &str, id: &str, pred: impl Fn(&Value) -> bool) -> Value {
        wait_until(what, || self.session(id).filter(|s| pred(s)))
    }

    /// Waits until session `id` has a worker process and returns its pid.
    pub fn worker_pid(&self, id: &str) -> u32 {
        let s = self.wait_session(&format!("a worker for {id}"), id, |s| s["pid"].is_u64());
        s["pid"].as_u64().expect("pid") as u32
    }

    /// Waits until session `id` is no longer listed (its worker was reaped).
    pub fn wait_session_gone(&self, id: &str) {
        wait_until(&format!("session {id} to end"), || {
            self.session(id).is_none().then_some(())
        });
    }

    /// The supervisor's worker processes, from the process table (its children other than
    /// the fork-server template).
    pub fn children(&self) -> Vec<ProcStat> {
        children_of(self.pid())
            .into_iter()
            .filter(|c| !is_fork_server(c.pid))
            .collect()
    }

    /// The fork-server template among the supervisor's children, if one runs.
    pub fn fork_server(&self) -> Option<ProcStat> {
        children_of(self.pid())
            .into_iter()
            .find(|c| c.state != 'Z' && is_fork_server(c.pid))
    }

    /// Asserts that none of the supervisor's children is a zombie and none of `pids` is left.
    pub fn assert_reaped(&self, pids: &[u32]) {
        let zombies: Vec<ProcStat> = self
            .children()
            .into_iter()
            .filter(|c| c.state == 'Z')
            .collect();
        assert!(zombies.is_empty(), "unreaped children: {zombies:?}");
        for &pid in pids {
            assert!(
                !process_exists(pid),
                "process {pid} is still there: {:?}",
                proc_stat(pid)
            );
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        // A failed test: let it drain its workers like an operator would, within bounds.
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on our own, not yet reaped child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One line of `/proc/<pid>/stat`, the fields the tests need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: u32,
    pub comm: String,
    /// R, S, D, Z, T, …
    pub state: char,
    pub ppid: u32,
    pub pgrp: i32,
}

/// Reads `/proc/<pid>/stat`; None when the process is gone.
pub fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself hold spaces or parentheses.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let mut rest = text.get(close + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    let pgrp = rest.next()?.parse().ok()?;
    Some(ProcStat {
        pid,
        comm,
        state,
        ppid,
        pgrp,
    })
}

/// Every process whose parent is `ppid`.
pub fn children_of(ppid: u32) -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(proc_stat)
        .filter(|p| p.ppid == ppid)
        .collect()
}

/// Every process in process group `pgrp` (a worker runs in its own group).
pub fn processes_in_group(pgrp: u32) -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(proc_stat)
        .filter(|p| i64::from(p.pgrp) == i64::from(pgrp))
        .collect()
}

/// Whether `pid` is a live process (a zombie waiting for someone else's wait counts as dead).
pub fn process_alive(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|p| p.state != 'Z')
}

/// Asserts that nothing is left of these processes or their process groups.
pub fn assert_no_process_left(pids: &[u32]) {
    for &pid in pids {
        assert!(
            !process_exists(pid),
            "process {pid} is still there: {:?}",
            proc_stat(pid)
        );
        let group = processes_in_group(pid);
        assert!(group.is_empty(), "processes left in group {pid}: {group:?}");
    }
}

impl Supervisor {
    /// Waits for a log line containing every one of `needles` and returns it.
    pub fn wait_log(&self, what: &str, needles: &[&str]) -> String {
        self.err
            .wait_for(what, |l| needles.iter().all(|n| l.contains(n)))
    }
}

// ---------------------------------------------------------------------------------------------
// Simulator statistics, contact changes and media read back with a worker's session.

impl Sim {
    /// `GET /__sim/stats`.
    pub fn stats(&self) -> Value {
        self.get("/__sim/stats")
    }

    /// How many requests the simulator served on one protocol route (`webwxsendmsg`, …).
    pub fn route_requests(&self, route: &str) -> u64 {
        self.stats()["requests"][route].as_u64().unwrap_or(0)
    }

    /// A contact-book change made "elsewhere" (`POST /__sim/sessions/<uin>/contacts`).
    pub fn contacts_op(&self, uin: u64, body: Value) -> Value {
        self.post(&format!("/__sim/sessions/{uin}/contacts"), body)
    }

    /// Waits until the outbox of `uin` holds an entry satisfying `pred` and returns it.
    pub fn wait_outbox(&self, what: &str, uin: u64, pred: impl Fn(&Value) -> bool) -> Value {
        wait_until(what, || self.outbox(uin).into_iter().find(|m| pred(m)))
    }

    /// GETs a protocol download (`webwxgetmsgimg?…`, `webwxgetmedia?…`) as the logged-in web
    /// session saved under `state_dir` for `session_id` would: with its `wxuin` / `wxsid`
    /// cookies. Lets a test read back the simulator's stored media byte for byte.
    pub fn download_as(&self, state_dir: &Path, session_id: &str, endpoint_query: &str) -> Vec<u8> {
        let file = state_dir
            .join("sessions")
            .join(session_id)
            .join("session.json");
        let saved: Value = serde_json::from_slice(
            &std::fs::read(&file).unwrap_or_else(|e| panic!("read {}: {e}", file.display())),
        )
        .expect("session.json is json");
        let creds = &saved["web"]["credentials"];
        let cookie = format!(
            "wxuin={}; wxsid={}",
            creds["uin"].as_str().expect("uin"),
            creds["sid"].as_str().expect("sid")
        );
        let r = self
            .http
            .get(format!(
                "{}/cgi-bin/mmwebwx-bin/{endpoint_query}",
                self.base
            ))
            .header("Cookie", cookie)
            .send()
            .unwrap();
        let status = r.status();
        assert!(status.is_success(), "GET {endpoint_query}: {status}");
        r.bytes().unwrap().to_vec()
    }
}
// Sessions under a supervisor, and a ledger of numbered messages for "nothing lost" checks.

/// Like [`wait_until`] with its own deadline, for waits the issue makes long (a 60 s outage,
/// a delivery backoff that grew during it).
pub fn wait_until_within<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// Milliseconds since the epoch (the clock the simulator stamps its records with).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One accepted (HTTP 200) `report_new_msg`, as the reference control plane recorded it.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub index: u64,
    pub time_ms: u64,
    pub wxid: String,
    pub event_id: Option<String>,
    /// `data.msg`: the message unit.
    pub msg: Value,
}

impl Delivered {
    pub fn text(&self) -> &str {
        self.msg["msg"].as_str().unwrap_or("")
    }

    pub fn msg_id(&self) -> &str {
        self.msg["msg_id"].as_str().unwrap_or("")
    }
}

impl Sim {
    /// An account with one friend, Bob (who sends the numbered messages).
    pub fn account_with_bob(&self, nickname: &str) -> u64 {
        self.create_account(json!({"nickname": nickname, "friends": [{"nickname": "Bob"}]}))
    }

    /// Task 200 for `id`: waits for its result (accepted) and the first QR upload; returns the
    /// uuid the uploaded QR code shows.
    pub fn request_qr_session(&self, id: &str) -> String {
        let task = self.queue_qr_task(id);
        let result = self.wait_task_result(&task);
        assert_eq!(result["task_result"], 1, "task 200 accepted: {result}");
        self.wait_qr_session(&format!("the QR upload of {id}"), id, |s| {
            s["uploads"].as_u64() >= Some(1)
        });
        self.uploaded_qr_uuid(id)
    }

    /// Scans and confirms `uuid` as `uin`, then waits until the control plane has the new login's
    /// contact report and the supervisor lists `id` online; returns the worker pid.
    pub fn confirm_qr(&self, sup: &Supervisor, uin: u64, uuid: &str, id: &str) -> u32 {
        let wxid = uin.to_string();
        let contact_reports = || {
            self.get(&format!(
                "/__cp/requests?action=report_contact&wxid={wxid}&status=200"
            ))["requests"]
                .as_array()
                .map_or(0, Vec::len)
        };
        let before = contact_reports();
        self.post(&format!("/__sim/qr/{uuid}/scan"), json!({"uin": uin}));
        self.post(&format!("/__sim/qr/{uuid}/confirm"), json!({}));
        wait_until(&format!("the contact report of {id}"), || {
            (contact_reports() > before).then_some(())
        });
        let s = sup.wait_session(&format!("{id} online"), id, |s| s["state"] == "online");
        s["pid"].as_u64().expect("worker pid") as u32
    }

    /// Task 200 for `id`, then a login of `uin` through the uploaded QR code; returns the pid.
    pub fn log_in_session(&self, sup: &Supervisor, uin: u64, id: &str) -> u32 {
        let uuid = self.request_qr_session(id);
        self.confirm_qr(sup, uin, &uuid, id)
    }

    /// Every `report_new_msg` the control plane accepted (HTTP 200), oldest first.
    pub fn delivered_messages(&self) -> Vec<Delivered> {
        self.get("/__cp/requests?action=report_new_msg&status=200")["requests"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|r| Delivered {
                index: r["index"].as_u64().unwrap_or(0),
                time_ms: r["time_ms"].as_u64().unwrap_or(0),
                wxid: r["wxid"].as_str().unwrap_or("").to_owned(),
                event_id: r["event_id"].as_str().map(str::to_owned),
                msg: r["data"]["msg"].clone(),
            })
            .collect()
    }

    /// The history of QR session `id`: (status, reason) pairs, oldest first.
    pub fn qr_history(&self, id: &str) -> Vec<(String, String)> {
        self.qr_session(id)
            .and_then(|s| s["status_history"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|e| {
                (
                    e["status"].as_str().unwrap_or("").to_owned(),
                    e["reason"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    }
}

/// One numbered message injected into a session.
#[derive(Debug, Clone)]
pub struct Injected {
    pub session: String,
    pub uin: u64,
    pub n: u64,
    pub text: String,
    pub msg_id: String,
    pub at_ms: u64,
}

/// Numbered texts from Bob, per session, with what the simulator answered; checks them against
/// what the control plane accepted.
#[derive(Default)]
pub struct Ledger {
    pub sent: Vec<Injected>,
    next: std::collections::HashMap<String, u64>,
}

impl Ledger {
    /// The text of message `n` of `session`: unique across sessions and numbers.
    pub fn text(session: &str, n: u64) -> String {
        format!("{session} says #{n:05}")
    }

    /// Injects the next numbered text into `session` (account `uin`) and records it.
    pub fn inject(&mut self, sim: &Sim, session: &str, uin: u64) -> Injected {
        let n = {
            let next = self.next.entry(session.to_owned()).or_insert(0);
            *next += 1;
            *next
        };
        let text = Ledger::text(session, n);
        let at_ms = now_ms();
        let r = sim.inject(uin, json!({"type": "text", "from": "Bob", "text": text}));
        let msg_id = r["msg_id"].as_str().expect("msg_id").to_owned();
        let m = Injected {
            session: session.to_owned(),
            uin,
            n,
            text,
            msg_id,
            at_ms,
        };
        self.sent.push(m.clone());
        m
    }

    /// The injected messages the control plane has not accepted yet (matched by msg_id).
    pub fn missing(&self, delivered: &[Delivered]) -> Vec<Injected> {
        let seen: std::collections::HashSet<&str> =
            delivered.iter().map(Delivered::msg_id).collect();
        self.sent
            .iter()
            .filter(|m| !seen.contains(m.msg_id.as_str()))
            .cloned()
            .collect()
    }

    /// Waits until every injected message was accepted at least once; returns what was accepted.
    pub fn wait_all_delivered(&self, sim: &Sim, limit: Duration) -> Vec<Delivered> {
        let deadline = Instant::now() + limit;
        loop {
            let delivered = sim.delivered_messages();
            let missing = self.missing(&delivered);
            if missing.is_empty() {
                return delivered;
            }
            if Instant::now() >= deadline {
                let list: Vec<&str> = missing.iter().map(|m| m.text.as_str()).collect();
                panic!(
                    "{} of {} injected messages never reached the control plane: {list:?}",
                    missing.len(),
                    self.sent.len()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Every accepted copy of an injected message carries its content: the text, Bob as the
    /// sender, the account (its Uin) as the receiver, reported under the account's wxid.
    pub fn assert_content(&self, sim: &Sim, delivered: &[Delivered]) {
        let by_id: std::collections::HashMap<&str, &Injected> =
            self.sent.iter().map(|m| (m.msg_id.as_str(), m)).collect();
        let mut bobs: std::collections::HashMap<u64, String> = Default::default();
        for d in delivered {
            let Some(m) = by_id.get(d.msg_id()) else {
                continue;
            };
            let bob = bobs
                .entry(m.uin)
                .or_insert_with(|| sim.user_name(m.uin, "Bob"))
                .clone();
            let wxid = m.uin.to_string();
            assert_eq!(d.text(), m.text, "content of {}: {:?}", m.msg_id, d.msg);
            assert_eq!(d.wxid, wxid, "reported for the right account: {:?}", d.msg);
            assert_eq!(d.msg["wxid_from"], bob.as_str(), "{:?}", d.msg);
            assert_eq!(d.msg["wxid_to"], wxid.as_str(), "{:?}", d.msg);
            assert_eq!(d.msg["msg_type"], 1, "{:?}", d.msg);
            assert!(
                d.event_id
                    .as_deref()
                    .is_some_and(|e| e.starts_with(&format!("{}:", m.session))),
                "event id <session>:<seq> on {:?}: {:?}",
                d.msg,
                d.event_id
            );
        }
    }

    /// Numbers of `session`'s messages in the order the control plane first accepted them.
    pub fn first_acceptance_order(&self, session: &str, delivered: &[Delivered]) -> Vec<u64> {
        let by_id: std::collections::HashMap<&str, &Injected> = self
            .sent
            .iter()
            .filter(|m| m.session == session)
            .map(|m| (m.msg_id.as_str(), m))
            .collect();
        let mut seen = std::collections::HashSet::new();
        delivered
            .iter()
            .filter_map(|d| by_id.get(d.msg_id()))
            .filter(|m| seen.insert(m.n))
            .map(|m| m.n)
            .collect()
    }

    /// Groups the accepted copies of each injected message: msg_id → copies, oldest first.
    pub fn copies<'a>(
        &self,
        delivered: &'a [Delivered],
    ) -> std::collections::BTreeMap<String, Vec<&'a Delivered>> {
        let ours: std::collections::HashSet<&str> =
            self.sent.iter().map(|m| m.msg_id.as_str()).collect();
        let mut out: std::collections::BTreeMap<String, Vec<&Delivered>> = Default::default();
        for d in delivered.iter().filter(|d| ours.contains(d.msg_id())) {
            out.entry(d.msg_id().to_owned()).or_default().push(d);
        }
        out
    }
}

/// Total size of the files under `dir` (recursively) and how many there are.
pub fn dir_usage(dir: &Path) -> (u64, usize) {
    let mut bytes = 0;
    let mut files = 0;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    for e in entries.filter_map(Result::ok) {
        let Ok(meta) = e.metadata() else { continue };
        if meta.is_dir() {
            let (b, f) = dir_usage(&e.path());
            bytes += b;
            files += f;
        } else {
            bytes += meta.len();
            files += 1;
        }
    }
    (bytes, files)
}

/// Sends `sig` to `pid` (a worker the supervisor reported); false if it is already gone.
pub fn signal_pid(pid: u32, sig: i32) -> bool {
    // SAFETY: kill(2) with a pid taken from the admin API or /proc and a valid signal number.
    unsafe { libc::kill(pid as i32, sig) == 0 }
}
