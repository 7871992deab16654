//! No credential ever reaches a log (DESIGN §3.7, logging.rs): whole sessions run at DEBUG —
//! through the supervisor (QR login, signed control plane, a message, a send task, a drain that
//! logs the account out of WeChat) and in the foreground (login, send, logout) — and then every
//! line every process wrote (supervisor with its relayed workers, foreground worker stdout and
//! stderr, the simulator) is searched for every credential the simulator handed out (login
//! tickets, wxsid, skey, pass_ticket, cookies) and for the control-plane secret.

mod common;

use common::*;
use serde_json::{Value, json};

/// The control-plane secret: long and unusual, so a hit cannot be a coincidence.
const SECRET: &str = "cp-secret-5d1e0c9a7b3f4e21";

/// Every credential value the simulator issued so far, as (kind, value).
fn issued(sim: &Sim) -> Vec<(String, String)> {
    sim.get("/__sim/credentials")["credentials"]
        .as_array()
        .expect("credentials list")
        .iter()
        .map(|c| {
            (
                c["kind"].as_str().expect("kind").to_owned(),
                c["value"].as_str().expect("value").to_owned(),
            )
        })
        .collect()
}

/// Asserts that none of `secrets` appears in any of `lines` (each named by its source).
fn assert_no_leak(secrets: &[(String, String)], lines: &[(&str, Vec<String>)]) {
    let mut leaks = Vec::new();
    for (source, lines) in lines {
        for line in lines {
            for (kind, value) in secrets {
                if line.contains(value.as_str()) {
                    leaks.push(format!("{kind} in {source}: {line}"));
                }
            }
        }
    }
    assert!(leaks.is_empty(), "secrets in logs:\n{}", leaks.join("\n"));
}

/// The kinds a whole web login hands out; the check is only meaningful if each was seen.
fn assert_complete(secrets: &[(String, String)]) {
    for kind in [
        "ticket",
        "wxsid",
        "skey",
        "pass_ticket",
        "webwx_data_ticket",
        "webwx_auth_ticket",
    ] {
        assert!(
            secrets.iter().any(|(k, v)| k == kind && v.len() >= 8),
            "the simulator issued no {kind}: {secrets:?}"
        );
    }
}

#[test]
fn a_supervised_session_at_debug_logs_no_credential() {
    let sim = Sim::start_logging("debug");
    let uin = sim.create_account(json!({"nickname": "Alice", "friends": [{"nickname": "Bob"}]}));
    let wxid = uin.to_string();
    sim.set_mode(json!({"secret": SECRET, "exit_wechat": 1}));
    let cfg = TestConfig::supervisor(
        &sim,
        &SupervisorSettings {
            control: format!("secret_key = \"{SECRET}\"\nsign_requests = true\n"),
            ..SupervisorSettings::default()
        },
    );
    // Everything at DEBUG, dependencies included; the workers inherit it.
    let mut sup = Supervisor::start_logging(&cfg.path, "debug");

    let task = sim.queue_qr_task("qs-secrets");
    assert_eq!(sim.wait_task_result(&task)["task_result"], 1);
    sim.wait_qr_session("the QR upload", "qs-secrets", |s| {
        s["uploads"].as_u64() >= Some(1)
    });
    let uuid = sim.uploaded_qr_uuid("qs-secrets");
    sim.post(&format!("/__sim/qr/{uuid}/scan"), json!({"uin": uin}));
    sim.post(&format!("/__sim/qr/{uuid}/confirm"), json!({}));
    sup.wait_session("online", "qs-secrets", |s| s["state"] == "online");

    sim.inject(
        uin,
        json!({"type": "text", "from": "Bob", "text": "hello Alice"}),
    );
    sim.wait_reported_message("Bob's message", |m| m["msg"] == "hello Alice");
    let bob = sim.user_name(uin, "Bob");
    let send = sim.queue_task(
        &wxid,
        1,
        json!({"wxid_to": bob, "msg_list": [{"msg_type": 1, "msg": "hi Bob"}]}),
        "pull",
    );
    assert_eq!(sim.wait_task_result(&send)["task_result"], 1);
    assert!(sim.outbox(uin).iter().any(|m| m["content"] == "hi Bob"));

    // The drain logs the account out of WeChat (exit_wechat 1): webwxlogout carries the skey.
    sup.signal(libc::SIGTERM);
    assert_eq!(sup.wait_exit().code(), Some(0));
    sim.wait_request("the drain logout", "logout", |r| r["wxid"] == wxid);
    assert_eq!(sim.session(uin).expect("session")["alive"], false);

    sup.err.wait_closed("the supervisor's log");
    let mut secrets = issued(&sim);
    assert_complete(&secrets);
    // The values are the ones the worker used: its saved session holds them.
    let saved: Value = serde_json::from_str(
        &std::fs::read_to_string(cfg.state_dir().join("sessions/qs-secrets/session.json"))
            .unwrap_or_default(),
    )
    .unwrap_or(Value::Null);
    if !saved.is_null() {
        let text = saved.to_string();
        assert!(
            secrets
                .iter()
                .any(|(k, v)| k == "skey" && text.contains(v.as_str())),
            "the saved session holds an issued skey"
        );
    }
    secrets.push(("control-plane secret".into(), SECRET.into()));
    let sup_lines = sup.err.all();
    assert!(
        sup_lines.iter().any(|l| l.contains("DEBUG")),
        "the supervisor logged at DEBUG"
    );
    assert!(
        sup_lines.iter().any(|l| l.contains("worker_output")),
        "the workers' logs were relayed"
    );
    assert_no_leak(
        &secrets,
        &[
            ("supervisor and workers", sup_lines),
            ("simulator", sim.log.all()),
        ],
    );
}

#[test]
fn a_foreground_session_at_debug_logs_no_credential() {
    let sim = Sim::start_logging("debug");
    let uin = sim.create_account(json!({"nickname": "Alice", "friends": [{"nickname": "Bob"}]}));
    let cfg = TestConfig::new(&sim, "");
    let mut w = Worker::start_logging(&cfg.path, "fg-secrets", "debug");
    sim.login(uin);
    w.wait_online();
    sim.inject(uin, json!({"type": "text", "from": "Bob", "text": "ping"}));
    w.out.wait_for("the message line", |l| {
        l.starts_with("msg: ") && l.contains("ping")
    });
    w.command("send Bob pong");
    let sent = w.out.wait_for("the sent line", |l| {
        l.starts_with("sent: ") || l.starts_with("error:")
    });
    assert!(sent.starts_with("sent: "), "{sent}");
    w.command("logout");
    assert_eq!(w.wait_exit().code(), Some(0));
    assert_eq!(sim.session(uin).expect("session")["alive"], false);

    w.out.wait_closed("the worker's output");
    w.err.wait_closed("the worker's log");
    let secrets = issued(&sim);
    assert_complete(&secrets);
    assert!(w.err.all().iter().any(|l| l.contains("DEBUG")));
    assert_no_leak(
        &secrets,
        &[
            ("worker stdout", w.out.all()),
            ("worker log", w.err.all()),
            ("simulator", sim.log.all()),
        ],
    );
}
