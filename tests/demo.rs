//! `wxagent demo` end to end: the real binary walks through all eight steps and exits 0, and
//! neither a finished nor an interrupted demo leaves a supervisor or worker running.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_wxagent");

/// The whole demo takes a few seconds; this covers a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(120);

/// A running `wxagent demo` with its output lines arriving on channels.
struct Demo {
    child: Child,
    started: Instant,
    out: Receiver<String>,
    stdout: Vec<String>,
    err: Receiver<String>,
}

impl Demo {
    fn start() -> Demo {
        let mut child = Command::new(BIN)
            .arg("demo")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start wxagent demo");
        let out = read_lines(child.stdout.take().expect("stdout piped"), "demo");
        let err = read_lines(child.stderr.take().expect("stderr piped"), "demo-err");
        Demo {
            child,
            started: Instant::now(),
            out,
            stdout: Vec::new(),
            err,
        }
    }

    fn time_left(&self) -> Duration {
        DEADLINE.saturating_sub(self.started.elapsed())
    }

    /// Collects stdout lines until one matches `pred`; panics after the deadline.
    fn wait_for_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        loop {
            match self.out.recv_timeout(self.time_left()) {
                Ok(line) => {
                    self.stdout.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.kill();
                    panic!(
                        "timed out waiting for {what}; output:\n{}",
                        self.stdout.join("\n")
                    );
                }
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "the demo closed stdout before {what}; output:\n{}",
                    self.stdout.join("\n")
                ),
            }
        }
    }

    /// Reads stdout to its end (the demo exiting), then reaps it; returns status, stdout and
    /// stderr.
    fn finish(mut self) -> (ExitStatus, Vec<String>, String) {
        loop {
            match self.out.recv_timeout(self.time_left()) {
                Ok(line) => self.stdout.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    self.kill();
                    panic!(
                        "the demo did not finish within {DEADLINE:?}; output:\n{}",
                        self.stdout.join("\n")
                    );
                }
            }
        }
        let status = self.child.wait().expect("reap the demo");
        // Its stderr closes with it; read that to the end too.
        let mut stderr = Vec::new();
        while let Ok(line) = self.err.recv_timeout(self.time_left()) {
            stderr.push(line);
        }
        (status, std::mem::take(&mut self.stdout), stderr.join("\n"))
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}

fn read_lines(from: impl Read + Send + 'static, echo: &'static str) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            eprintln!("[{echo}] {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The config path named on the step-3 line (`… wxagent run --config PATH`).
fn config_path(line: &str) -> PathBuf {
    let path = line
        .split_once("--config ")
        .map(|(_, path)| path.trim())
        .unwrap_or_else(|| panic!("no --config in {line:?}"));
    assert!(
        path.ends_with("wxagent.toml"),
        "unexpected config path in {line:?}"
    );
    PathBuf::from(path)
}

/// Pids of processes whose command line mentions `needle`.
fn processes_mentioning(needle: &Path) -> Vec<u32> {
    let needle = needle.to_str().expect("utf-8 temp path").as_bytes();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| cmdline.windows(needle.len()).any(|w| w == needle))
        })
        .collect()
}

fn step_line(lines: &[String], step: usize) -> &str {
    let prefix = format!("[{step}/8] ");
    lines
        .iter()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no line for step {step}; output:\n{}", lines.join("\n")))
}

fn has_line(lines: &[String], needle: &str) -> bool {
    lines.iter().any(|l| l.contains(needle))
}

#[test]
fn demo_walks_through_every_step_and_leaves_nothing_running() {
    let demo = Demo::start();
    let (status, lines, stderr) = demo.finish();
    let output = lines.join("\n");
    assert!(
        status.success(),
        "demo failed ({status}); stdout:\n{output}\nstderr:\n{stderr}"
    );
    for step in 1..=8 {
        step_line(&lines, step);
    }
    let config = config_path(step_line(&lines, 3));
    assert!(
        step_line(&lines, 4).contains("queued task 200 for QR session demo-1"),
        "{output}"
    );
    assert!(
        has_line(&lines, "uploaded the QR code (PNG") && has_line(&lines, "/cp/ shows it too"),
        "{output}"
    );
    assert!(
        has_line(&lines, "control plane got login: wxid ")
            && has_line(&lines, "report_contact: 3 friends"),
        "{output}"
    );
    for expected in [
        "report_new_msg: Alice -> you: \"hello\"",
        "report_new_msg: Bob in Demo Group:",
        "(mentions you)",
        "report_new_msg: Carol -> you: \"ping",
        "the agent sent Carol a message: \"pong from the orchestrator\"",
        "report_new_msg: you -> Carol: \"pong from the orchestrator\"",
        "control plane got logout: reason phone_logout",
        "/status lists no sessions",
        "supervisor stopped on SIGTERM",
    ] {
        assert!(
            has_line(&lines, expected),
            "missing {expected:?} in:\n{output}"
        );
    }
    let summary = step_line(&lines, 8);
    assert!(summary.contains("all 8 steps passed in"), "{summary}");
    assert!(
        has_line(
            &lines,
            "1 login, 1 report_contact, 4 report_new_msg (3 incoming, 1 sent by the agent), 1 logout"
        ),
        "{output}"
    );
    assert!(
        processes_mentioning(&config).is_empty(),
        "processes of the demo still running: {:?}",
        processes_mentioning(&config)
    );
    assert!(
        !config.exists(),
        "a successful demo removes its files, but {} is still there",
        config.display()
    );
}

#[test]
fn interrupted_demo_stops_the_supervisor_and_its_worker() {
    let mut demo = Demo::start();
    let line = demo.wait_for_line("the supervisor's start", |l| l.starts_with("[3/8] "));
    let config = config_path(&line);
    // Once the account is online both the supervisor and its worker are running.
    demo.wait_for_line("the login step", |l| l.starts_with("[5/8] "));
    assert!(
        processes_mentioning(&config).len() >= 2,
        "expected the supervisor and a worker running with {}",
        config.display()
    );
    // SAFETY: kill(2) with SIGINT on our own child, which has not been reaped yet.
    let rc = unsafe { libc::kill(demo.child.id() as i32, libc::SIGINT) };
    assert_eq!(rc, 0, "could not signal the demo");
    let (status, lines, stderr) = demo.finish();
    assert_eq!(
        status.code(),
        Some(130),
        "stdout:\n{}\nstderr:\n{stderr}",
        lines.join("\n")
    );
    assert!(stderr.contains("interrupted during step"), "{stderr}");
    assert!(!has_line(&lines, "[8/8]"), "{}", lines.join("\n"));
    assert!(
        processes_mentioning(&config).is_empty(),
        "processes left after the interrupted demo: {:?}",
        processes_mentioning(&config)
    );
}
