//! What the packages promise, checked without the tools that build or run them: the systemd
//! unit's directives (so a regression shows where `systemd-analyze` is absent), the .deb
//! metadata and the container recipe; the supervisor's notify conversation with a fake systemd
//! (a datagram socket in a temp dir: READY, STATUS, WATCHDOG, STOPPING; workers never get the
//! socket); and `wxagent service` refusing clearly off Windows.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn repo_file(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// `[section]` → key → values (a key may repeat) of a systemd unit file.
fn unit_directives(text: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not a directive: {line}"));
        out.entry(section.clone())
            .or_default()
            .entry(key.trim().to_owned())
            .or_default()
            .push(value.trim().to_owned());
    }
    out
}

/// Seconds in a systemd time span such as "45", "45s", "1min 30s".
fn seconds(span: &str) -> u64 {
    if let Ok(n) = span.parse::<u64>() {
        return n;
    }
    humantime::parse_duration(&span.replace("min", "m"))
        .unwrap_or_else(|e| panic!("unusable time span {span:?}: {e}"))
        .as_secs()
}

#[test]
fn the_systemd_unit_has_the_directives_operations_rely_on() {
    let unit = unit_directives(&repo_file("packaging/systemd/wxagent.service"));
    let service = &unit["Service"];
    let one = |key: &str| -> &str {
        let values = service
            .get(key)
            .unwrap_or_else(|| panic!("[Service] {key} is missing"));
        assert_eq!(values.len(), 1, "[Service] {key} set more than once");
        &values[0]
    };
    assert_eq!(one("Type"), "notify");
    assert_eq!(one("NotifyAccess"), "main");
    assert!(
        seconds(one("WatchdogSec")) >= 10,
        "a watchdog that leaves room for a ping"
    );
    assert_eq!(one("KillMode"), "mixed");
    assert_eq!(one("Restart"), "on-failure");
    assert_eq!(one("StateDirectory"), "wxagent");
    assert_eq!(one("User"), "wxagent");
    assert_eq!(one("Group"), "wxagent");
    assert_eq!(
        one("ExecStartPre"),
        "/usr/bin/wxagent check-config --config /etc/wxagent/wxagent.toml"
    );
    assert_eq!(
        one("ExecStart"),
        "/usr/bin/wxagent run --config /etc/wxagent/wxagent.toml"
    );
    // systemd must wait out the workers' grace plus the reaping before its SIGKILL.
    let grace = wxagent::supervisor::run::WORKER_GRACE.as_secs();
    let stop = seconds(one("TimeoutStopSec"));
    assert!(
        stop >= 2 * grace,
        "TimeoutStopSec={stop}s must exceed the {grace}s worker grace with room to reap"
    );
    for (key, value) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("RestrictNamespaces", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
        ("CapabilityBoundingSet", ""),
        ("UMask", "0077"),
    ] {
        assert_eq!(one(key), value, "[Service] {key}");
    }
    // The state directory the unit creates is the one wxagent uses by default.
    assert_eq!(
        wxagent::config::default_state_dir(),
        Path::new("/var/lib").join(one("StateDirectory"))
    );
    assert_eq!(unit["Install"]["WantedBy"], ["multi-user.target"]);
}

#[test]
fn the_deb_metadata_ships_binary_unit_config_and_user_scripts() {
    let manifest: toml::Table = repo_file("Cargo.toml").parse().expect("Cargo.toml parses");
    let deb = &manifest["package"]["metadata"]["deb"];
    let assets: Vec<(String, String)> = deb["assets"]
        .as_array()
        .expect("assets")
        .iter()
        .map(|a| {
            (
                a[0].as_str().unwrap().to_owned(),
                a[1].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(assets.contains(&("target/release/wxagent".into(), "usr/bin/".into())));
    assert!(assets.contains(&(
        "config/wxagent.toml".into(),
        "etc/wxagent/wxagent.toml".into()
    )));
    assert_eq!(
        deb["conf-files"].as_array().unwrap()[0].as_str(),
        Some("/etc/wxagent/wxagent.toml")
    );
    let units = deb["systemd-units"]["unit-scripts"].as_str().unwrap();
    assert!(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(units)
            .join("wxagent.service")
            .is_file()
    );
    let scripts = deb["maintainer-scripts"].as_str().unwrap();
    let postinst = repo_file(&format!("{scripts}postinst"));
    assert!(postinst.contains("adduser --system"), "{postinst}");
    assert!(postinst.contains("chmod 0640 /etc/wxagent/wxagent.toml"));
    assert!(postinst.contains("#DEBHELPER#"));
}

#[test]
fn the_container_runs_the_supervisor_as_a_user_with_a_state_volume() {
    let recipe = repo_file("packaging/container/Containerfile");
    let has = |line: &str| recipe.lines().any(|l| l.trim() == line);
    assert!(has("USER wxagent"), "{recipe}");
    assert!(has(r#"VOLUME ["/var/lib/wxagent"]"#));
    assert!(has(r#"ENTRYPOINT ["/usr/bin/wxagent"]"#));
    assert!(has(
        r#"CMD ["run", "--config", "/etc/wxagent/wxagent.toml"]"#
    ));
    assert!(recipe.contains("ca-certificates"));
}

#[test]
fn service_commands_refuse_clearly_off_windows() {
    let out = Command::new(BIN)
        .args(["service", "install"])
        .stdin(Stdio::null())
        .output()
        .expect("run wxagent service install");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("exist only on Windows") && err.contains("packaging/systemd/wxagent.service"),
        "{err}"
    );
}

/// Datagrams received on the fake notify socket, in order.
struct FakeSystemd {
    socket: UnixDatagram,
    got: Vec<String>,
}

impl FakeSystemd {
    /// Receives until one datagram (old or new) satisfies `pred`, and returns it.
    fn wait_for(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        if let Some(hit) = self.got.iter().find(|d| pred(d)) {
            return hit.clone();
        }
        loop {
            let d = self.receive(what);
            if pred(&d) {
                return d;
            }
        }
    }

    /// Receives one more datagram.
    fn receive(&mut self, what: &str) -> String {
        let deadline = Instant::now() + WAIT;
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for {what}; got {:?}",
                self.got
            );
            self.socket.set_read_timeout(Some(left)).unwrap();
            match self.socket.recv(&mut buf) {
                Ok(n) => {
                    let d = String::from_utf8_lossy(&buf[..n]).into_owned();
                    self.got.push(d.clone());
                    return d;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("notify socket: {e}"),
            }
        }
    }

    fn count(&self, line: &str) -> usize {
        self.got
            .iter()
            .filter(|d| d.lines().any(|l| l == line))
            .count()
    }
}

#[test]
fn the_supervisor_talks_to_systemd_and_keeps_it_from_its_workers() {
    let sim = Sim::start();
    sim.create_account(serde_json::json!({"nickname": "Alice"}));
    let cfg = TestConfig::supervisor(&sim, &SupervisorSettings::default());
    let socket_path = cfg.dir.path().join("notify.sock");
    let mut systemd = FakeSystemd {
        socket: UnixDatagram::bind(&socket_path).expect("bind the notify socket"),
        got: Vec::new(),
    };
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg.path)
        .env("RUST_LOG", "info,wxagent=debug")
        .env("NOTIFY_SOCKET", &socket_path)
        // Pings every 150 ms.
        .env("WATCHDOG_USEC", "300000")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start wxagent run");
    let log = Lines::default();
    log.spawn_reader(child.stderr.take().unwrap(), "supervisor");
    let pid = child.id();

    let ready = systemd.wait_for("READY=1", |d| d.contains("READY=1"));
    assert_eq!(ready, "READY=1\nSTATUS=0 sessions of at most 10\n");
    assert_eq!(systemd.got.len(), 1, "READY is the first message");
    // Logged before READY was sent (the reader thread may lag behind the socket).
    log.wait_for("the admin API line", |l| l.contains("admin API listening"));

    sim.queue_qr_task("qs-notify");
    systemd.wait_for("the status with one session", |d| {
        d == "STATUS=1 session of at most 10\n"
    });
    // The worker must not see the socket: with NotifyAccess=main systemd would ignore it, and
    // a worker must never be mistaken for the service.
    // A child that has not exec'd yet still shows our environment: wait for the worker itself.
    let worker = wait_until("a worker process", || {
        children_of(pid)
            .into_iter()
            .find(|c| c.state != 'Z' && proc_list(c.pid, "cmdline").iter().any(|a| a == "worker"))
    });
    let environ = environ(worker.pid);
    assert!(!environ.is_empty(), "the worker's environment is readable");
    for var in environ {
        assert!(
            !var.starts_with("NOTIFY_SOCKET=") && !var.starts_with("WATCHDOG_"),
            "the worker inherited {var}"
        );
    }

    let started = Instant::now();
    while systemd.count("WATCHDOG=1") < 3 {
        systemd.receive("three watchdog pings");
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "pings come at half of WATCHDOG_USEC"
    );

    // SAFETY: kill(2) on our own, not yet reaped child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let stopping = systemd.wait_for("STOPPING=1", |d| d.contains("STOPPING=1"));
    assert!(
        stopping.starts_with("STOPPING=1\nSTATUS=stopping 1 session"),
        "{stopping:?}"
    );
    let status = wait_until("the supervisor to exit", || child.try_wait().unwrap());
    assert_eq!(status.code(), Some(0), "clean exit after the drain");
    assert_eq!(systemd.count("READY=1"), 1, "{:?}", systemd.got);
}
