//! The supervisor's admin API through the real binaries (`wxagent sim` + `wxagent run`):
//!
//! - `/metrics` scraped from a supervisor with a logged-in session that received messages,
//!   checked line by line by a strict exposition parser below, values asserted; counters keep
//!   their totals when the worker is SIGKILLed and restarted;
//! - `/healthz` turning 503 (naming the session) while the simulator fails every synccheck, and
//!   200 again once it stops;
//! - `/status` fields and the `wxagent status` table columns;
//! - the bearer token: 401 without it (loopback only), `wxagent status` sending it from the
//!   config, and `check-config` refusing a non-loopback `admin_listen` without a token (the
//!   decision only: nothing binds to a non-loopback address).

mod common;

use common::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// One sample line of the exposition: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed exposition: the samples and the declared type of each metric family.
#[derive(Debug, Default)]
struct Exposition {
    samples: Vec<Sample>,
    types: BTreeMap<String, String>,
}

impl Exposition {
    /// The value of the one sample with this name and these labels.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let found: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.name == name && s.labels == want)
            .collect();
        assert!(found.len() <= 1, "duplicate samples: {found:?}");
        found.first().map(|s| s.value)
    }
}

fn is_name(s: &str, colons: bool) -> bool {
    let mut chars = s.chars();
    let first_ok = |c: char| c.is_ascii_alphabetic() || c == '_' || (colons && c == ':');
    chars.next().is_some_and(first_ok) && chars.all(|c| first_ok(c) || c.is_ascii_digit())
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse::<f64>().map_err(|e| format!("value {s:?}: {e}")),
    }
}

/// `{a="x",b="y\"z"}` → labels, with the escapes `\\`, `\"`, `\n`; returns the rest of the line.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = s.strip_prefix('{').ok_or("labels must start with {")?;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = rest.find('=').ok_or("label without =")?;
        let name = &rest[..eq];
        if !is_name(name, false) {
            return Err(format!("bad label name {name:?}"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value must be quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_owned(), value).is_some() {
            return Err(format!("label {name} twice"));
        }
        rest = &rest[end + 1..];
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err("expected , or } after a label".into());
        }
    }
}

/// A strict parser of the Prometheus / OpenMetrics text format: every line must be a
/// `# HELP`, `# TYPE`, `# UNIT` or `# EOF` comment or a sample; anything else fails.
fn parse_exposition(text: &str) -> Result<Exposition, String> {
    let mut out = Exposition::default();
    let mut eof = false;
    for (n, line) in text.lines().enumerate() {
        let fail = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if eof {
            return Err(fail("content after # EOF".into()));
        }
        if line == "# EOF" {
            eof = true;
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            let kind = parts.next().unwrap_or("");
            let name = parts.next().unwrap_or("");
            let rest = parts.next();
            if !is_name(name, true) {
                return Err(fail(format!("bad metric name {name:?}")));
            }
            match kind {
                "HELP" | "UNIT" => {}
                "TYPE" => {
                    let t = rest.unwrap_or("");
                    let known = [
                        "counter",
                        "gauge",
                        "histogram",
                        "summary",
                        "untyped",
                        "unknown",
                        "info",
                        "stateset",
                        "gaugehistogram",
                    ];
                    if !known.contains(&t) {
                        return Err(fail(format!("unknown type {t:?}")));
                    }
                    if out.types.insert(name.to_owned(), t.to_owned()).is_some() {
                        return Err(fail("type declared twice".into()));
                    }
                }
                _ => return Err(fail(format!("unknown comment {kind:?}"))),
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            return Err(fail("empty line or stray comment".into()));
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| fail("no value".into()))?;
        let name = &line[..name_end];
        if !is_name(name, true) {
            return Err(fail(format!("bad metric name {name:?}")));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(fail)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let rest = rest
            .strip_prefix(' ')
            .ok_or_else(|| fail("no space before the value".into()))?;
        let mut fields = rest.split(' ');
        let value = parse_value(fields.next().unwrap_or("")).map_err(fail)?;
        if let Some(ts) = fields.next() {
            ts.parse::<f64>()
                .map_err(|e| fail(format!("timestamp: {e}")))?;
        }
        if fields.next().is_some() {
            return Err(fail("extra fields".into()));
        }
        // Every sample belongs to a declared family (`x_total` to counter `x`).
        let family = name.strip_suffix("_total").unwrap_or(name);
        if !out.types.contains_key(family) && !out.types.contains_key(name) {
            return Err(fail(format!("sample of undeclared metric {name}")));
        }
        out.samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    Ok(out)
}

#[test]
fn the_strict_parser_refuses_malformed_lines() {
    let good = "# HELP a_total A thing.\n# TYPE a counter\na_total{x=\"q\\\"\\\\\\n\"} 3\n# TYPE g gauge\ng 1.5e3\n# EOF\n";
    let e = parse_exposition(good).expect("valid");
    assert_eq!(e.value("a_total", &[("x", "q\"\\\n")]), Some(3.0));
    assert_eq!(e.value("g", &[]), Some(1500.0));
    for bad in [
        "# TYPE a counter\na_total 3 4 5\n",
        "# TYPE a counter\na_total{x=q} 3\n",
        "# TYPE a counter\na_total{x=\"q} 3\n",
        "# TYPE a counter\na_total{x=\"\\q\"} 3\n",
        "# TYPE a counter\na_total three\n",
        "b 1\n",
        "# TYPE a countr\n",
        "# TYPE a counter\n\na_total 1\n",
        "# TYPE 1a counter\n",
        "# EOF\n# TYPE a counter\n",
    ] {
        assert!(parse_exposition(bad).is_err(), "accepted {bad:?}");
    }
}

/// Puts `lines` into the `[agent]` section of a supervisor config.
fn with_agent_keys(cfg: &TestConfig, lines: &str) {
    let text = std::fs::read_to_string(&cfg.path).expect("config");
    let text = text.replacen("[agent]\n", &format!("[agent]\n{lines}\n"), 1);
    write_config(&cfg.path, &text);
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .no_proxy()
        .build()
        .expect("http client")
}

fn get(sup: &Supervisor, path: &str) -> (u16, String) {
    let r = http()
        .get(format!("http://{}{path}", sup.admin))
        .send()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    (r.status().as_u16(), r.text().expect("body"))
}

fn scrape(sup: &Supervisor) -> Exposition {
    let (code, text) = get(sup, "/metrics");
    assert_eq!(code, 200, "{text}");
    parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\nin:\n{text}"))
}

fn wxagent_status(config: &Path) -> (bool, String, String) {
    let out = std::process::Command::new(BIN)
        .args(["status", "--config"])
        .arg(config)
        .output()
        .expect("run wxagent status");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn metrics_status_and_healthz_of_a_live_session() {
    let sim = Sim::start();
    let cfg = TestConfig::supervisor(&sim, &SupervisorSettings::default());
    with_agent_keys(&cfg, "healthz_max_sync_age = \"4s\"");
    let sup = Supervisor::start(&cfg.path);
    let id = "adm-1";
    let uin = sim.account_with_bob("Alice");
    let uuid = sim.request_qr_session(id);
    sim.confirm_qr(&sup, uin, &uuid, id);

    const INJECTED: u64 = 5;
    for i in 0..INJECTED {
        sim.inject(
            uin,
            json!({"type": "text", "from": "Bob", "text": format!("metric {i}")}),
        );
    }
    // The worker reports its counters every few seconds; all delivered means all counted.
    let s = sup.wait_session("the messages counted and delivered", id, |s| {
        s["counters"]["messages_in"].as_u64() == Some(INJECTED) && s["spool_depth"] == 0
    });
    assert!(s["last_sync_ms"].as_u64().is_some_and(|t| t > 0), "{s}");
    assert_eq!(s["restarts"], 0);
    assert_eq!(s["qr"], Value::Null, "no QR once online: {s}");

    let m = scrape(&sup);
    let v = |name: &str, labels: &[(&str, &str)]| {
        m.value(name, labels)
            .unwrap_or_else(|| panic!("no {name}{labels:?} in {:#?}", m.samples))
    };
    assert_eq!(v("wxagent_messages_in_total", &[]), INJECTED as f64);
    assert_eq!(
        v("wxagent_messages_out_total", &[]),
        0.0,
        "{:#?}",
        sim.reported_messages()
    );
    assert_eq!(v("wxagent_sessions", &[("state", "online")]), 1.0);
    assert_eq!(v("wxagent_sessions", &[("state", "waiting_for_scan")]), 0.0);
    assert_eq!(v("wxagent_reports_pending", &[]), 0.0);
    // The login, the contacts and the messages at least.
    assert!(v("wxagent_reports_delivered_total", &[]) >= INJECTED as f64 + 2.0);
    let qr_codes = v("wxagent_qr_refreshes_total", &[]);
    assert!(qr_codes >= 1.0);
    assert_eq!(
        v("wxagent_uploads_total", &[]),
        qr_codes,
        "each QR code uploaded once"
    );
    assert_eq!(v("wxagent_worker_restarts_total", &[]), 0.0);
    assert_eq!(v("wxagent_spool_full_rejections_total", &[]), 0.0);
    assert!(v("wxagent_worker_rss_bytes", &[("session", id)]) > 1e6);
    for (family, kind) in [
        ("wxagent_sessions", "gauge"),
        ("wxagent_messages_in", "counter"),
        ("wxagent_reports_pending", "gauge"),
        ("wxagent_worker_rss_bytes", "gauge"),
    ] {
        assert_eq!(
            m.types.get(family).map(String::as_str),
            Some(kind),
            "{family}"
        );
    }

    // The table has the new columns.
    let (ok, out, err) = wxagent_status(&cfg.path);
    assert!(ok, "{err}");
    assert!(out.contains("LAST SYNC") && out.contains("SPOOL"), "{out}");
    let row = out.lines().find(|l| l.starts_with(id)).expect("a row");
    assert!(row.contains("online") && row.contains("Alice"), "{row}");

    // Healthy, then stale while every synccheck fails, then healthy again.
    // (Waited for: under load a worker's counters may arrive late.)
    let healthy = wait_until("/healthz to pass", || {
        let (code, body) = get(&sup, "/healthz");
        (code == 200).then_some(body)
    });
    assert_eq!(healthy, "ok\n");
    sim.post(
        "/__sim/faults",
        json!({"route": "synccheck", "http500": 1.0}),
    );
    let body = wait_until("/healthz to fail", || {
        let (code, body) = get(&sup, "/healthz");
        (code == 503).then_some(body)
    });
    assert!(body.contains(id) && body.contains("not synced"), "{body}");
    // (A family without samples is not listed, so the type shows up with the first error.)
    let errors = wait_until("sync errors counted", || {
        let m = scrape(&sup);
        let n = m.value("wxagent_sync_errors_total", &[("retcode", "network")])?;
        assert_eq!(
            m.types.get("wxagent_sync_errors").map(String::as_str),
            Some("counter")
        );
        (n >= 1.0).then_some(n)
    });
    sim.delete("/__sim/faults");
    wait_until("/healthz to recover", || {
        (get(&sup, "/healthz").0 == 200).then_some(())
    });

    // A crash: the counters keep their totals and the restart is counted.
    let pid = sup.worker_pid(id);
    // SAFETY: kill(2) on the worker pid the supervisor reported.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    sup.wait_session("the restarted worker online", id, |s| {
        s["restarts"] == 1 && s["state"] == "online" && s["pid"].as_u64() != Some(u64::from(pid))
    });
    let m = scrape(&sup);
    assert!(m.value("wxagent_messages_in_total", &[]) >= Some(INJECTED as f64));
    assert_eq!(m.value("wxagent_worker_restarts_total", &[]), Some(1.0));
    assert!(
        m.value("wxagent_sync_errors_total", &[("retcode", "network")]) >= Some(errors),
        "sync errors went backwards"
    );
    sim.inject(uin, json!({"type": "text", "from": "Bob", "text": "after"}));
    wait_until("the new worker's message on top of the old count", || {
        let n = scrape(&sup).value("wxagent_messages_in_total", &[])?;
        (n > INJECTED as f64).then_some(())
    });
}

#[test]
fn a_token_guards_everything_but_healthz() {
    const TOKEN: &str = "admin-t0ken-for-tests";
    let sim = Sim::start();
    let cfg = TestConfig::supervisor(&sim, &SupervisorSettings::default());
    with_agent_keys(&cfg, &format!("admin_token = \"{TOKEN}\""));
    let sup = Supervisor::start(&cfg.path);
    assert!(
        !sup.err.all().iter().any(|l| l.contains(TOKEN)),
        "the token is never logged"
    );
    let client = http();
    let url = |p: &str| format!("http://{}{p}", sup.admin);
    for path in ["/status", "/metrics", "/", "/qr/x.png"] {
        let r = client.get(url(path)).send().expect("answer");
        assert_eq!(r.status().as_u16(), 401, "{path} without a token");
        assert_eq!(
            r.headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some("Bearer")
        );
        let r = client
            .get(url(path))
            .bearer_auth("admin-t0ken-for-testS")
            .send()
            .expect("answer");
        assert_eq!(r.status().as_u16(), 401, "{path} with a wrong token");
    }
    for path in ["/status", "/metrics", "/"] {
        let r = client
            .get(url(path))
            .bearer_auth(TOKEN)
            .send()
            .expect("answer");
        assert_eq!(r.status().as_u16(), 200, "{path} with the token");
    }
    // The page takes the token once in its query; the API does not.
    let r = client
        .get(url(&format!("/?token={TOKEN}")))
        .send()
        .expect("answer");
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.text().expect("page").contains("<table"));
    let r = client
        .get(url(&format!("/status?token={TOKEN}")))
        .send()
        .expect("answer");
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(get(&sup, "/healthz"), (200, "ok\n".to_owned()));

    // `wxagent status` sends the configured token.
    let (ok, out, err) = wxagent_status(&cfg.path);
    assert!(ok, "{err}");
    assert!(
        out.starts_with(&format!("supervisor {MACHINE_ID}")),
        "{out}"
    );
    // And says what is wrong when it has none.
    let text = std::fs::read_to_string(&cfg.path).expect("config");
    write_config(&cfg.path, &text.replace(TOKEN, ""));
    let (ok, _, err) = wxagent_status(&cfg.path);
    assert!(!ok);
    assert!(err.contains("bearer token"), "{err}");
}

#[test]
fn check_config_refuses_a_public_admin_api_without_a_token() {
    // Only the configuration is checked: nothing listens on these addresses.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("wxagent.toml");
    let check = |text: &str| {
        write_config(&path, text);
        let out = std::process::Command::new(BIN)
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .expect("run check-config");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = check("[agent]\nadmin_listen = \"0.0.0.0:7878\"\n");
    assert!(!ok, "{out}");
    assert!(
        out.contains("[agent] admin_listen: 0.0.0.0:7878 is not a loopback address")
            && out.contains("admin_token"),
        "{out}"
    );
    let (ok, out) =
        check("[agent]\nadmin_listen = \"0.0.0.0:7878\"\nadmin_token = \"s3cr3t-value\"\n");
    assert!(ok, "{out}");
    assert!(
        !out.contains("s3cr3t-value"),
        "the token is not printed: {out}"
    );
}
