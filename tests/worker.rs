//! One session through the real binary (`wxagent --qr_session ID`) against the real simulator
//! (`wxagent sim`) on loopback: login, QR refresh and abandonment, desktop mode, refusal,
//! contacts, every message type, sending, kicks, faults and a clean Ctrl-C logout.

mod common;

use common::*;
use serde_json::json;

fn alice(sim: &Sim) -> u64 {
    sim.create_account(json!({
        "nickname": "Alice",
        "friends": [{"nickname": "Bob"}, {"nickname": "Carol", "remark": "Caz"}],
        "friend_count": 450,
        "groups": [{"name": "Team", "members": ["Bob", "Carol"], "extra_members": 3, "display_names": {"Bob": "Bobby"}}],
        "officials": [{"nickname": "News Daily"}],
    }))
}

fn online(sim: &Sim, extra: &str) -> (u64, TestConfig, Worker) {
    let uin = alice(sim);
    let cfg = TestConfig::new(sim, extra);
    let w = Worker::start(&cfg.path, "s1");
    sim.login(uin);
    w.wait_online();
    (uin, cfg, w)
}

fn exit_code(w: &mut Worker) -> i32 {
    w.wait_exit()
        .code()
        .expect("exited with a code, not a signal")
}

#[test]
fn login_with_scan_and_confirm_loads_paged_contacts_and_groups() {
    let sim = Sim::start();
    let uin = alice(&sim);
    let cfg = TestConfig::new(&sim, "");
    let w = Worker::start(&cfg.path, "s1");
    let qr = w.out.wait_for("a QR line", |l| l.starts_with("qr: "));
    let uuid = sim.wait_qr("waiting", &[]);
    assert!(
        qr.contains(&format!("{}/l/{uuid}", sim.base)),
        "QR content names the simulator's login URL: {qr}"
    );
    assert!(
        cfg.state_dir().join("sessions/s1/qr.png").exists(),
        "QR PNG saved"
    );
    sim.post(&format!("/__sim/qr/{uuid}/scan"), json!({"uin": uin}));
    w.out
        .wait_for("the scanned line", |l| l.starts_with("scanned:"));
    sim.post(&format!("/__sim/qr/{uuid}/confirm"), json!({}));
    let line = w.wait_online();
    assert!(line.contains("Alice"), "{line}");
    assert!(line.contains(&format!("wxid {uin}")), "{line}");
    assert!(
        line.contains("452 friends"),
        "every page of contacts loaded: {line}"
    );
    assert!(line.contains("1 groups"), "{line}");
    assert!(line.contains("1 official"), "{line}");
    // A group message from a member shows the group and the member's group display name.
    sim.inject(
        uin,
        json!({"type": "text", "group": "Team", "from": "Bob", "text": "standup in 5"}),
    );
    let msg = w
        .out
        .wait_for("the group message", |l| l.contains("standup in 5"));
    assert!(msg.contains("Team"), "{msg}");
    assert!(msg.contains("Bobby") || msg.contains("Bob"), "{msg}");
}

#[test]
fn expired_qr_is_refreshed_then_abandoned_after_the_bound() {
    let sim = Sim::start();
    alice(&sim);
    let cfg = TestConfig::new(&sim, "[qr]\nmax_refreshes = 2\nmax_wait = \"10m\"\n");
    let mut w = Worker::start(&cfg.path, "s1");
    let first = sim.wait_qr("waiting", &[]);
    w.out.wait_for("the first QR line", |l| {
        l.starts_with("qr: ") && l.contains(&first)
    });
    sim.post(&format!("/__sim/qr/{first}/expire"), json!({}));
    w.out
        .wait_for("the expiry line", |l| l.starts_with("qr expired: code 1"));
    let second = sim.wait_qr("waiting", std::slice::from_ref(&first));
    assert_ne!(first, second);
    w.out.wait_for("the second QR line", |l| {
        l.starts_with("qr: ") && l.contains(&second) && l.contains("code 2")
    });
    sim.post(&format!("/__sim/qr/{second}/expire"), json!({}));
    assert_eq!(exit_code(&mut w), 15, "abandoned exit code");
    let ended = w.out.wait_for("the end line", |l| l.starts_with("ended:"));
    assert!(ended.contains("abandoned"), "{ended}");
    assert_eq!(
        w.out.count(|l| l.starts_with("qr: ")),
        2,
        "no third QR code"
    );
}

#[test]
fn unscanned_session_is_abandoned_after_max_wait() {
    let sim = Sim::start();
    alice(&sim);
    let cfg = TestConfig::new(&sim, "[qr]\nmax_refreshes = 5\nmax_wait = \"2s\"\n");
    let mut w = Worker::start(&cfg.path, "s1");
    assert_eq!(exit_code(&mut w), 15);
    assert!(
        w.out
            .wait_for("the end line", |l| l.starts_with("ended:"))
            .contains("abandoned")
    );
}

#[test]
fn desktop_and_normal_mode_both_log_in() {
    let sim = Sim::start();
    for desktop in [true, false] {
        let uin = sim.create_account(json!({"nickname": format!("User{desktop}")}));
        let cfg = TestConfig::new(&sim, &format!("desktop_mode = {desktop}\n"));
        let mut w = Worker::start(&cfg.path, "s1");
        let pending = wait_until("the QR to be pending", || {
            let v = sim.get("/__sim/qr");
            v["pending"]
                .as_array()
                .and_then(|a| a.iter().find(|q| q["state"] == "waiting").cloned())
        });
        assert_eq!(
            pending["desktop"], desktop,
            "jslogin asked for desktop mode = {desktop}: {pending}"
        );
        sim.login(uin);
        w.wait_online();
        w.signal(libc::SIGINT);
        assert_eq!(exit_code(&mut w), 0);
    }
}

#[test]
fn web_login_refusal_1203_ends_with_its_code_and_message() {
    let sim = Sim::start();
    let uin = sim.create_account(json!({"nickname": "Barred", "web_forbidden": true}));
    // Desktop mode is the way around the web ban (spec §4.1): refused only in normal mode.
    let cfg = TestConfig::new(&sim, "desktop_mode = false\n");
    let mut w = Worker::start(&cfg.path, "s1");
    sim.login(uin);
    assert_eq!(exit_code(&mut w), 12, "web_forbidden exit code");
    let ended = w.out.wait_for("the end line", |l| l.starts_with("ended:"));
    assert!(
        ended.contains("1203"),
        "the refusal names the code: {ended}"
    );
    assert!(ended.contains("web WeChat"), "{ended}");

    let desktop = TestConfig::new(&sim, "desktop_mode = true\n");
    let w = Worker::start(&desktop.path, "s2");
    sim.login(uin);
    w.wait_online();
}

#[test]
fn every_message_type_is_parsed_and_printed() {
    let sim = Sim::start();
    let (uin, _cfg, w) = online(&sim, "");
    let cases: Vec<(serde_json::Value, Vec<&str>)> = vec![
        (
            json!({"type": "text", "from": "Bob", "text": "a < b & c\nsecond line"}),
            vec!["Bob", "a < b & c"],
        ),
        (
            json!({"type": "text", "group": "Team", "from": "Carol", "text": "hey you", "mentions": ["self"]}),
            vec!["Team", "hey you"],
        ),
        (
            json!({"type": "image", "from": "Bob"}),
            vec!["Bob", "image"],
        ),
        (
            json!({"type": "voice", "from": "Bob", "length_ms": 3000}),
            vec!["voice"],
        ),
        (json!({"type": "video", "from": "Bob"}), vec!["video"]),
        (
            json!({"type": "file", "from": "Bob", "file_name": "report.pdf", "size": 2048}),
            vec!["report.pdf"],
        ),
        (
            json!({"type": "emoji", "from": "Bob", "md5": "0123456789abcdef0123456789abcdef"}),
            vec!["Bob"],
        ),
        (
            json!({"type": "card", "from": "Bob", "card": "Carol"}),
            vec!["Carol"],
        ),
        (
            json!({"type": "link", "from": "Bob", "title": "Rust news", "desc": "d", "url": "https://example.org/a"}),
            vec!["Rust news"],
        ),
        (
            json!({"type": "location", "from": "Bob", "label": "Central Park", "lat": 40.78, "lng": -73.96}),
            vec!["Central Park"],
        ),
        (
            json!({"type": "system", "group": "Team", "from": "Bob", "text": "Bob joined the group chat"}),
            vec!["Bob joined the group chat"],
        ),
        (
            json!({"type": "friend_request", "nickname": "Dave", "greeting": "hi, I am Dave"}),
            vec!["Dave"],
        ),
        (
            json!({"type": "text", "from": "self", "to": "Bob", "text": "sent from my phone"}),
            vec!["sent from my phone"],
        ),
    ];
    for (body, expect) in &cases {
        let id = sim.inject(uin, body.clone())["msg_id"]
            .as_str()
            .expect("msg_id")
            .to_owned();
        let line = w.out.wait_for(&format!("the line for {body}"), |l| {
            l.starts_with("msg: ")
                && expect
                    .iter()
                    .all(|e| l.to_lowercase().contains(&e.to_lowercase()))
        });
        assert!(!line.is_empty(), "{id}");
    }
    // Recall of the first text.
    let first = sim.inject(uin, json!({"type": "text", "from": "Bob", "text": "oops"}))["msg_id"]
        .as_str()
        .unwrap()
        .to_owned();
    w.out.wait_for("oops", |l| l.contains("oops"));
    sim.inject(
        uin,
        json!({"type": "recall", "from": "Bob", "msg_id": first}),
    );
    w.out.wait_for("the recall line", |l| {
        l.starts_with("msg: ") && l.to_lowercase().contains("recall")
    });
}

#[test]
fn sent_text_appears_in_the_simulator_outbox() {
    let sim = Sim::start();
    let (uin, _cfg, mut w) = online(&sim, "");
    w.command("send Bob hello from the test");
    let sent = w.out.wait_for("the sent line", |l| {
        l.starts_with("sent: ") || l.starts_with("error:")
    });
    assert!(sent.starts_with("sent: "), "{sent}");
    w.command("send Team to the whole team");
    w.out.wait_for("the second sent line", |l| {
        l.starts_with("sent: ") && !l.eq(&sent)
    });
    let outbox = sim.outbox(uin);
    let bob = outbox
        .iter()
        .find(|m| m["content"] == "hello from the test")
        .unwrap_or_else(|| panic!("not in outbox: {outbox:?}"));
    assert_eq!(bob["to_nickname"], "Bob");
    assert_eq!(bob["endpoint"], "webwxsendmsg");
    assert!(
        outbox
            .iter()
            .any(|m| m["content"] == "to the whole team" && m["to_nickname"] == "Team"),
        "{outbox:?}"
    );
    w.command("send Nobody hi");
    let err = w
        .out
        .wait_for("the error line", |l| l.starts_with("error:"));
    assert!(err.contains("Nobody"), "{err}");
}

#[test]
fn kick_ends_the_session_with_a_typed_reason_and_exit_code() {
    for (retcode, code, word) in [(1101, 10, "phone"), (1102, 11, "1102"), (1100, 10, "phone")] {
        let sim = Sim::start();
        let (uin, _cfg, mut w) = online(&sim, "");
        // Kick while the worker waits in synccheck (where 1102 shows; JSON calls say 1101).
        w.out
            .wait_for("the login status notify", |l| l.contains("status notify"));
        wait_until("the worker's synccheck to be held", || {
            (sim.get("/__sim/stats")["open_long_polls"]
                .as_u64()
                .unwrap_or(0)
                >= 1)
                .then_some(())
        });
        sim.post(
            &format!("/__sim/sessions/{uin}/kick"),
            json!({"retcode": retcode}),
        );
        assert_eq!(exit_code(&mut w), code, "retcode {retcode}");
        let ended = w.out.wait_for("the end line", |l| l.starts_with("ended:"));
        assert!(ended.contains(word), "retcode {retcode}: {ended}");
    }
}

#[test]
fn faults_on_every_route_lose_no_message() {
    let sim = Sim::start();
    let (uin, _cfg, w) = online(&sim, "");
    for route in ["synccheck", "webwxsync"] {
        sim.post("/__sim/faults", json!({"route": route, "http500": 0.2, "drop": 0.1, "malformed": 0.1, "latency_ms": 30}));
    }
    let n = 30;
    for i in 0..n {
        sim.inject(
            uin,
            json!({"type": "text", "from": "Bob", "text": format!("faulty-{i:03}")}),
        );
    }
    for i in 0..n {
        w.out.wait_for(&format!("message {i}"), |l| {
            l.contains(&format!("faulty-{i:03}"))
        });
    }
    sim.delete("/__sim/faults");
    sim.inject(
        uin,
        json!({"type": "text", "from": "Bob", "text": "after the storm"}),
    );
    w.out
        .wait_for("the last message", |l| l.contains("after the storm"));
    for i in 0..n {
        assert_eq!(
            w.out.count(|l| l.contains(&format!("faulty-{i:03}"))),
            1,
            "message {i} printed exactly once"
        );
    }
    assert_eq!(
        w.out.count(|l| l.starts_with("ended:")),
        0,
        "the session survived"
    );
}

#[test]
fn ctrl_c_logs_the_account_out_cleanly() {
    let sim = Sim::start();
    let (uin, _cfg, mut w) = online(&sim, "");
    assert_eq!(sim.session(uin).expect("session listed")["alive"], true);
    w.signal(libc::SIGINT);
    assert_eq!(exit_code(&mut w), 0);
    let ended = w.out.wait_for("the end line", |l| l.starts_with("ended:"));
    assert!(ended.contains("stopped by the operator"), "{ended}");
    assert_eq!(
        sim.session(uin).expect("session listed")["alive"],
        false,
        "webwxlogout reached the server"
    );
    assert!(!process_exists(w.pid()), "worker reaped");
}

/// A burst arrives in batches (`sync_batch`); while a webwxsync says more are waiting
/// (`ContinueFlag`), the worker fetches the next batch without a synccheck in between.
#[test]
fn a_burst_is_fetched_batch_after_batch_without_a_synccheck_between() {
    let sim = Sim::start();
    let (uin, _cfg, w) = online(&sim, "");
    sim.post("/__sim/config", json!({"sync_batch": 10}));
    let count = |route: &str| {
        sim.get("/__sim/stats")["requests"][route]
            .as_u64()
            .unwrap_or(0)
    };
    let (checks, syncs) = (count("synccheck"), count("webwxsync"));
    sim.post(
        &format!("/__sim/sessions/{uin}/burst"),
        json!({"count": 50, "from": "Bob", "text": "wave"}),
    );
    w.out
        .wait_for_nth("the whole burst", 50, |l| l.contains("wave"));
    let (checks, syncs) = (count("synccheck") - checks, count("webwxsync") - syncs);
    assert!(syncs >= 5, "{syncs} webwxsync for 5 batches");
    // The held synccheck that announced the burst was counted before it; the one after the
    // last batch is held again. One synccheck per batch would be 5 or more.
    assert!(checks <= 2, "{checks} synccheck for {syncs} webwxsync");
}

#[test]
fn quiet_session_is_probed_and_keeps_working() {
    let sim = Sim::start();
    // synccheck keeps answering "nothing new"; with deaf_after at 1 s the worker probes with a
    // webwxsync now and then, and the session goes on normally.
    let (uin, _cfg, w) = online(&sim, "deaf_after = \"1s\"\n");
    w.err
        .wait_for("a probe", |l| l.contains("probing with a webwxsync"));
    sim.inject(
        uin,
        json!({"type": "text", "from": "Bob", "text": "still listening"}),
    );
    w.out.wait_for("a message after the probe", |l| {
        l.contains("still listening")
    });
    assert_eq!(w.out.count(|l| l.starts_with("ended:")), 0);
}
