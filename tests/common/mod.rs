//! Shared helpers for the integration tests: start the real `wxagent sim` binary on loopback,
//! drive its test-control API, write a config for it and run `wxagent --qr_session` against it,
//! watching the worker's output lines. No fixed sleeps: every wait polls a condition with a
//! generous deadline.

#![allow(dead_code)]

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_wxagent");

/// Deadline for anything a test waits for; generous so a loaded 2-core machine does not flake.
pub const WAIT: Duration = Duration::from_secs(60);

/// Lines a child wrote, shared with a reader thread.
#[derive(Clone, Default)]
pub struct Lines(Arc<(Mutex<Vec<String>>, Condvar)>);

impl Lines {
    fn spawn_reader(&self, r: impl std::io::Read + Send + 'static, echo: &'static str) {
        let me = self.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines() {
                let Ok(line) = line else { break };
                eprintln!("[{echo}] {line}");
                let (m, cv) = &*me.0;
                m.lock().unwrap().push(line);
                cv.notify_all();
            }
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
    http: reqwest::blocking::Client,
}

impl Sim {
    pub fn start() -> Sim {
        Sim::start_with_hold("400ms")
    }

    pub fn start_with_hold(hold: &str) -> Sim {
        let mut child = Command::new(BIN)
            .args(["sim", "--listen", "127.0.0.1:0", "--hold", hold])
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
        Sim { child, base, http }
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
        std::fs::write(&path, text).unwrap();
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
        let mut child = Command::new(BIN)
            .args(["--qr_session", session, "--config"])
            .arg(config)
            .env("RUST_LOG", "wxagent=debug")
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
