//! The supervisor (`wxagent run`) and its workers through the real binaries, against the real
//! simulator and its reference control plane (`wxagent sim`): each test starts its own.
//!
//! - the whole QR flow: task 200 → PNG whose QR decodes to the simulator's login URL → scan /
//!   confirm → signed `login` → contacts and messages → task 1 texts (with an @-mention) →
//!   task results → kick → `logout` with the reason → worker reaped → SIGTERM → nothing left;
//! - report rules: B.7 ids in both directions, own messages reported once, reply tasks and the
//!   auto-reply (no task result), task 200 relayed from an account's acks;
//! - QR expiry (re-upload under the same id) and abandonment (refresh bound, time bound);
//! - the control plane refusing the account, a wrong or missing signature;
//! - `max_sessions`, a SIGKILLed worker restarted, SIGTERM / SIGKILL to the supervisor;
//! - `exit_wehub` / `exit_wechat` as src/worker/supervised.rs implements them;
//! - `wxagent status`.
//!
//! Process checks read /proc: worker pids come from the admin API and the supervisor's children.

mod common;

use common::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;

fn alice(sim: &Sim) -> u64 {
    sim.create_account(json!({
        "nickname": "Alice",
        "friends": [{"nickname": "Bob"}, {"nickname": "Carol", "remark": "Caz"}],
        "groups": [{"name": "Team", "members": ["Bob", "Carol"], "display_names": {"Bob": "Bobby"}}],
        "officials": [{"nickname": "News Daily"}],
    }))
}

/// Asks for session `id` with task 200 and waits for the result (1) and the first QR upload;
/// returns the uuid the uploaded QR code shows.
fn start_session(sim: &Sim, id: &str) -> String {
    let task = sim.queue_qr_task(id);
    let result = sim.wait_task_result(&task);
    assert_eq!(result["task_result"], 1, "task 200 accepted: {result}");
    assert_eq!(result["error_reason"], "", "{result}");
    sim.wait_qr_session(&format!("the QR upload of {id}"), id, |s| {
        s["uploads"].as_u64() >= Some(1)
    });
    sim.uploaded_qr_uuid(id)
}

/// Scans and confirms `uuid` as `uin`, then waits until the control plane accepted the
/// account (its `report_contact` arrived) and the supervisor lists the session online.
fn confirm(sim: &Sim, sup: &Supervisor, uin: u64, uuid: &str, id: &str) -> u32 {
    let wxid = uin.to_string();
    let contact_reports = || {
        sim.requests("report_contact")
            .iter()
            .filter(|r| r["wxid"] == wxid)
            .count()
    };
    let before = contact_reports();
    sim.post(&format!("/__sim/qr/{uuid}/scan"), json!({"uin": uin}));
    sim.post(&format!("/__sim/qr/{uuid}/confirm"), json!({}));
    wait_until("the contact report of the new login", || {
        (contact_reports() > before).then_some(())
    });
    let s = sup.wait_session(&format!("{id} online"), id, |s| s["state"] == "online");
    s["pid"].as_u64().expect("worker pid") as u32
}

/// Task 200 for `id`, then a login of `uin` through the uploaded QR code; returns the worker pid.
fn log_in(sim: &Sim, sup: &Supervisor, uin: u64, id: &str) -> u32 {
    let uuid = start_session(sim, id);
    confirm(sim, sup, uin, &uuid, id)
}

/// Asserts that a task result record says failed, with `reason` in its error.
fn assert_failed(r: &Value, reason: &str) {
    assert_eq!(r["task_result"], 0, "{r}");
    assert!(
        r["error_reason"]
            .as_str()
            .is_some_and(|e| e.contains(reason)),
        "{r}"
    );
}

fn exit_code(sup: &mut Supervisor) -> i32 {
    sup.wait_exit().code().expect("exited with a code")
}

/// The index of the first request with this action and wxid.
fn index_of(sim: &Sim, action: &str, wxid: &str) -> u64 {
    sim.requests(action)
        .iter()
        .find(|r| r["wxid"] == wxid)
        .and_then(|r| r["index"].as_u64())
        .unwrap_or_else(|| panic!("no {action} for {wxid:?}"))
}

#[test]
fn qr_task_to_logout_through_the_supervisor() {
    let sim = Sim::start();
    let uin = alice(&sim);
    let wxid = uin.to_string();
    sim.set_mode(json!({"secret": "e2e-secret"}));
    let cfg = TestConfig::supervisor(
        &sim,
        &SupervisorSettings {
            control: "secret_key = \"e2e-secret\"\nsign_requests = true\n".into(),
            ..SupervisorSettings::default()
        },
    );
    let mut sup = Supervisor::start(&cfg.path);
    let sup_pid = sup.pid();

    // Task 200 → a worker in its own process group → a PNG whose QR shows a pending login.
    let uuid = start_session(&sim, "qs-main");
    let worker = sup.worker_pid("qs-main");
    let child = sup
        .children()
        .into_iter()
        .find(|c| c.pid == worker)
        .unwrap_or_else(|| panic!("worker {worker} is not a child of {sup_pid}"));
    assert_eq!(child.pgrp, worker as i32, "the worker leads its own group");
    let qr = sim.qr_session("qs-main").expect("qr session");
    assert_eq!(qr["machine_id"], format!("{MACHINE_ID}_{worker}"), "{qr}");
    let upload = sim.get("/__cp/uploads")["uploads"][0].clone();
    assert_eq!(upload["kind"], "qr", "{upload}");
    assert_eq!(upload["file_name"], "qs-main.png", "{upload}");
    assert_eq!(upload["content_type"], "image/png", "{upload}");
    assert_eq!(upload["signature_ok"], true, "upload signed: {upload}");
    wait_until("the uploaded status", || {
        (sim.qr_statuses("qs-main") == ["uploaded"]).then_some(())
    });

    // Scan, then confirm: each is reported before the login.
    sim.post(&format!("/__sim/qr/{uuid}/scan"), json!({"uin": uin}));
    wait_until("the scanned status", || {
        (sim.qr_statuses("qs-main") == ["uploaded", "scanned"]).then_some(())
    });
    sup.wait_session("the scanned state", "qs-main", |s| s["state"] == "scanned");
    sim.post(&format!("/__sim/qr/{uuid}/confirm"), json!({}));
    let login = sim.wait_request("the login", "login", |r| r["wxid"] == wxid);
    assert_eq!(login["data"]["qr_session_id"], "qs-main", "{login}");
    assert_eq!(login["data"]["nickname"], "Alice", "{login}");
    assert_eq!(
        login["data"]["machine_id"],
        format!("{MACHINE_ID}_{worker}"),
        "{login}"
    );
    assert!(
        login["data"]["nonce"]
            .as_str()
            .is_some_and(|n| n.len() >= 8),
        "a fresh nonce: {login}"
    );
    assert_eq!(
        sim.qr_statuses("qs-main"),
        ["uploaded", "scanned", "confirmed"]
    );

    // The signature checked out: the worker goes on to report its contacts.
    let contacts = sim.wait_request("the contact report", "report_contact", |r| {
        r["wxid"] == wxid
    });
    assert!(contacts["index"].as_u64() > login["index"].as_u64());
    let data = &contacts["data"];
    let bob = sim.user_name(uin, "Bob");
    let carol = sim.user_name(uin, "Carol");
    let team = sim.user_name(uin, "Team");
    let friend = |w: &str| {
        data["friend_list"]
            .as_array()
            .and_then(|l| l.iter().find(|f| f["wxid"] == w).cloned())
            .unwrap_or_else(|| panic!("friend {w} not reported: {data}"))
    };
    assert_eq!(friend(&bob)["nickname"], "Bob");
    assert_eq!(friend(&carol)["nickname"], "Carol");
    assert_eq!(friend(&carol)["remark_name"], "Caz");
    assert_eq!(
        data["friend_list"].as_array().map(Vec::len),
        Some(2),
        "{data}"
    );
    let group = &data["group_list"][0];
    assert_eq!(group["wxid"], team, "{group}");
    assert_eq!(group["name"], "Team", "{group}");
    assert_eq!(group["member_count"], 3, "{group}");
    assert_eq!(group["owner_wxid"], wxid, "own account as its Uin: {group}");
    let members: BTreeSet<&str> = group["member_wxid_list"]
        .as_array()
        .expect("member list")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        members,
        BTreeSet::from([wxid.as_str(), bob.as_str(), carol.as_str()])
    );
    assert_eq!(data["public_list"][0]["nickname"], "News Daily", "{data}");
    let status = sup.wait_session("online", "qs-main", |s| s["state"] == "online");
    assert_eq!(status["pid"], worker);
    assert_eq!(status["account"], wxid.as_str());
    assert_eq!(status["nickname"], "Alice");

    // An incoming message is reported with its fields.
    let injected = sim.inject(
        uin,
        json!({"type": "text", "from": "Bob", "text": "hello Alice"}),
    );
    let unit = sim.wait_reported_message("Bob's message", |m| m["msg"] == "hello Alice");
    assert_eq!(unit["msg_id"], injected["msg_id"], "{unit}");
    assert_eq!(unit["msg_type"], 1);
    assert_eq!(unit["room_wxid"], "");
    assert_eq!(unit["wxid_from"], bob.as_str());
    assert_eq!(unit["wxid_to"], wxid.as_str());
    assert!(
        unit["msg_timestamp"].as_u64() > Some(1_000_000_000_000),
        "milliseconds: {unit}"
    );

    // Pulled task 1: a text, and a group text mentioning Bob, reach the simulator's outbox.
    let text = sim.queue_task(
        &wxid,
        1,
        json!({"wxid_to": bob, "msg_list": [{"msg_type": 1, "msg": "hi Bob, from a task"}]}),
        "pull",
    );
    let mention = sim.queue_task(
        &wxid,
        1,
        json!({"wxid_to": team, "at_list": [bob], "msg_list": [{"msg_type": 1, "msg": "standup now"}]}),
        "pull",
    );
    for task in [&text, &mention] {
        let r = sim.wait_task_result(task);
        assert_eq!(r["task_result"], 1, "{task}: {r}");
        assert_eq!(r["wxid"], wxid.as_str(), "{r}");
        assert_eq!(r["reports"], 1, "one result per task: {r}");
    }
    let outbox = sim.outbox(uin);
    let sent = outbox
        .iter()
        .find(|m| m["content"] == "hi Bob, from a task")
        .unwrap_or_else(|| panic!("text not in outbox: {outbox:?}"));
    assert_eq!(sent["to"], bob.as_str(), "{sent}");
    let at = outbox
        .iter()
        .find(|m| m["to"] == team)
        .unwrap_or_else(|| panic!("group text not in outbox: {outbox:?}"));
    assert_eq!(
        at["content"], "@Bobby\u{2005}standup now",
        "mention written with the member's group name: {at}"
    );

    // Every request and upload was signed (B.6).
    let unsigned: Vec<Value> = sim
        .all_requests()
        .into_iter()
        .filter(|r| r["signature_ok"] != true)
        .collect();
    assert!(unsigned.is_empty(), "unsigned requests: {unsigned:?}");

    // A kick: `logout` with the reason, the worker ends for good and is reaped.
    sim.post(
        &format!("/__sim/sessions/{uin}/kick"),
        json!({"retcode": 1102}),
    );
    let logout = sim.wait_request("the logout", "logout", |r| r["wxid"] == wxid);
    assert_eq!(logout["data"]["reason"], "kicked", "{logout}");
    assert_eq!(logout["data"]["retcode"], 1102, "{logout}");
    assert_eq!(
        logout["data"]["machine_id"],
        format!("{MACHINE_ID}_{worker}")
    );
    sup.wait_session_gone("qs-main");
    sup.wait_log(
        "the end of the session",
        &["session ended", "kicked (exit code 11)"],
    );
    sup.assert_reaped(&[worker]);
    assert!(sup.children().is_empty(), "{:?}", sup.children());

    sup.signal(libc::SIGTERM);
    assert_eq!(exit_code(&mut sup), 0);
    assert_no_process_left(&[sup_pid, worker]);
}

#[test]
fn reports_use_the_uin_for_the_own_account_in_both_directions() {
    let sim = Sim::start();
    let uin = alice(&sim);
    let wxid = uin.to_string();
    // The server echoes sent messages through webwxsync, as the real one does for some clients.
    sim.post("/__sim/config", json!({"echo_sent": true}));
    let cfg = TestConfig::supervisor(&sim, &SupervisorSettings::default());
    let sup = Supervisor::start(&cfg.path);
    log_in(&sim, &sup, uin, "qs-ids");
    let bob = sim.user_name(uin, "Bob");
    let carol = sim.user_name(uin, "Carol");
    let team = sim.user_name(uin, "Team");

    // Incoming, private: to the Uin.
    sim.inject(
        uin,
        json!({"type": "text", "from": "Bob", "text": "private in"}),
    );
    let m = sim.wait_reported_message("private in", |m| m["msg"] == "private in");
    assert_eq!(
        (&m["wxid_from"], &m["wxid_to"]),
        (&json!(bob), &json!(wxid))
    );
    assert_eq!(m["room_wxid"], "");

    // Incoming, group, mentioning the account and Bob: the Uin in atUserList.
    sim.inject(
        uin,
        json!({"type": "text", "group": "Team", "from": "Carol", "text": "group in", "mentions": ["self", "Bob"]}),
    );
    let m = sim.wait_reported_message("group in", |m| {
        m["msg"].as_str().is_some_and(|t| t.ends_with("group in"))
    });
    assert_eq!(m["room_wxid"], team.as_str(), "{m}");
    assert_eq!(m["wxid_from"], carol.as_str(), "{m}");
    assert_eq!(m["wxid_to"], team.as_str(), "{m}");
    let at: BTreeSet<&str> = m["atUserList"]
        .as_array()
        .unwrap_or_else(|| panic!("atUserList: {m}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(at, BTreeSet::from([wxid.as_str(), bob.as_str()]), "{m}");

    // Sent from the phone, private and in the group: from the Uin.
    sim.inject(
        uin,
        json!({"type": "text", "from": "self", "to": "Bob", "text": "phone out"}),
    );
    let m = sim.wait_reported_message("phone out", |m| m["msg"] == "phone out");
    assert_eq!(
        (&m["wxid_from"], &m["wxid_to"]),
        (&json!(wxid), &json!(bob))
    );
    sim.inject(
        uin,
        json!({"type": "text", "group": "Team", "from": "self", "text": "phone group out"}),
    );
    let m = sim.wait_reported_message("phone group out", |m| {
        m["msg"]
            .as_str()
            .is_some_and(|t| t.ends_with("phone group out"))
    });
    assert_eq!(m["wxid_from"], wxid.as_str(), "{m}");
    assert_eq!(m["room_wxid"], team.as_str(), "{m}");

    // Sent by a task (mentioning the account itself by its Uin): reported once, from the Uin,
    // although the server echoes it back.
    let task = sim.queue_task(
        &wxid,
        1,
        json!({"wxid_to": team, "at_list": [wxid], "at_style": 1, "msg_list": [{"msg_type": 1, "msg": "note to {$@} self"}]}),
        "pull",
    );
    assert_eq!(sim.wait_task_result(&task)["task_result"], 1);
    let content = "note to @Alice\u{2005} self";
    let outbox = sim.outbox(uin);
    let sent = outbox
        .iter()
        .find(|m| m["content"] == content)
        .unwrap_or_else(|| panic!("{content:?} not in outbox: {outbox:?}"));
    let m = sim.wait_reported_message("the task's text", |m| m["msg"] == content);
    assert_eq!(m["msg_id"], sent["msg_id"], "{m} / {sent}");
    assert_eq!(m["wxid_from"], wxid.as_str(), "{m}");
    assert_eq!(m["room_wxid"], team.as_str(), "{m}");
    // Messages are applied in order: once a later one is reported, the echo was seen too.
    sim.inject(
        uin,
        json!({"type": "text", "from": "Bob", "text": "marker"}),
    );
    sim.wait_reported_message("marker", |m| m["msg"] == "marker");
    let copies = sim
        .reported_messages()
        .iter()
        .filter(|m| m["msg_id"] == sent["msg_id"])
        .count();
    assert_eq!(
        copies, 1,
        "the echo of an own sent message is not reported again"
    );
}

#[test]
fn reply_tasks_and_the_auto_reply_run_without_task_results() {
    let sim = Sim::start();
    let uin = alice(&sim);
    let wxid = uin.to_string();
    let cfg = TestConfig::supervisor(&sim, &SupervisorSettings::default());
    let sup = Supervisor::start(&cfg.path);
    log_in(&sim, &sup, uin, "qs-reply");
    let bob = sim.user_name(uin, "Bob");

    // A reply task rides on the ack of the next report.
    let reply = sim.queue_task(
        &wxid,
        1,
        json!({"wxid_to": bob, "msg_list": [{"msg_type": 1, "msg": "from a reply task"}]}),
        "reply",
    );
    sim.inject(
        uin,
        json!({"type": "text", "from": "Bob", "text": "anyone there?"}),
    );
    wait_until("the reply task's text in the outbox", || {
        sim.outbox(uin)
            .into_iter()
            .find(|m| m["content"] == "from a reply task" && m["to"] == bob)
    });

    // The auto-reply answers an incoming "ping" once, never its own "pong".
    sim.set_mode(json!({"auto_reply": {"match": "ping", "reply": "pong"}}));
    sim.inject(uin, json!({"type": "text", "from": "Bob", "text": "ping?"}));
    wait_until("the pong in the outbox", || {
        sim.outbox(uin)
            .into_iter()
            .find(|m| m["content"] == "pong" && m["to"] == bob)
    });
    let pong = sim.wait_reported_message("the own pong", |m| m["msg"] == "pong");
    assert_eq!(pong["wxid_from"], wxid.as_str(), "{pong}");
    let tasks = sim.get("/__cp/tasks")["tasks"].clone();
    let auto: Vec<String> = tasks
        .as_array()
        .expect("tasks")
        .iter()
        .filter(|t| t["auto"] == true)
        .filter_map(|t| t["task_id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(auto.len(), 1, "one auto-reply: {tasks}");

    // Tasks run one at a time: once a later pulled task has its result, an earlier reply task
    // would have had one too.
    let pulled = sim.queue_task(
        &wxid,
        1,
        json!({"wxid_to": bob, "msg_list": [{"msg_type": 1, "msg": "pulled"}]}),
        "pull",
    );
    assert_eq!(sim.wait_task_result(&pulled)["task_result"], 1);
    let results = sim.task_results();
    for id in [&reply, &auto[0]] {
        assert!(
            results[id].is_null(),
            "no result for reply task {id}: {results}"
        );
    }
    let pongs = sim
        .outbox(uin)
        .iter()
        .filter(|m| m["content"] == "pong")
        .count();
    assert_eq!(pongs, 1, "the own pong got no answer");
}

#[test]
fn task_200_in_an_accounts_acks_starts_a_session() {
    let sim = Sim::start();
    let uin = alice(&sim);
    let wxid = uin.to_string();
    let cfg = TestConfig::supervisor(&sim, &SupervisorSettings::default());
    let sup = Supervisor::start(&cfg.path);
    let first = log_in(&sim, &sup, uin, "qs-first");
    // Pulled by the account: the supervisor starts it and reports the result (B.1, B.4).
    let pulled = sim.queue_task(
        &wxid,
        200,
        json!({"qrcode_session_id": "qs-pulled"}),
        "pull",
    );
    let r = sim.wait_task_result(&pulled);
    assert_eq!(r["task_result"], 1, "{r}");
    sim.wait_qr_session("the relayed session's QR", "qs-pulled", |s| {
        s["uploads"] == 1
    });
    sim.uploaded_qr_uuid("qs-pulled");
    // In a reply list (no task id), with the alternative key name.
    sim.queue_task(&wxid, 200, json!({"qr_session_id": "qs-replied"}), "reply");
    sim.inject(
        uin,
        json!({"type": "text", "from": "Bob", "text": "carry it"}),
    );
    sim.wait_qr_session("the replied session's QR", "qs-replied", |s| {
        s["uploads"] == 1
    });
    let pids: BTreeSet<u32> = ["qs-first", "qs-pulled", "qs-replied"]
        .iter()
        .map(|id| sup.worker_pid(id))
        .collect();
    assert_eq!(pids.len(), 3, "three workers");
    assert!(pids.contains(&first));
    let children: BTreeSet<u32> = sup.children().iter().map(|c| c.pid).collect();
    assert_eq!(
        children, pids,
        "the supervisor's children are exactly its sessions"
    );
}

#[test]
fn expired_qr_is_uploaded_again_under_the_same_id_then_abandoned() {
    let sim = Sim::start();
    alice(&sim);
    let cfg = TestConfig::supervisor(
        &sim,
        &SupervisorSettings {
            extra: "[qr]\nmax_refreshes = 2\nmax_wait = \"10m\"\n".into(),
            ..SupervisorSettings::default()
        },
    );
    let sup = Supervisor::start(&cfg.path);
    let first = start_session(&sim, "qs-exp");
    let worker = sup.worker_pid("qs-exp");
    sim.post(&format!("/__sim/qr/{first}/expire"), json!({}));
    sim.wait_qr_session("the second upload", "qs-exp", |s| s["uploads"] == 2);
    let second = sim.uploaded_qr_uuid("qs-exp");
    assert_ne!(first, second, "a new code");
    assert_eq!(sim.qr_sessions().len(), 1, "under the same id");
    wait_until("the statuses of two codes", || {
        (sim.qr_statuses("qs-exp") == ["uploaded", "expired", "uploaded"]).then_some(())
    });
    let history = sim.qr_session("qs-exp").expect("session")["status_history"].clone();
    assert_eq!(history[2]["qr_count"], 2, "{history}");
    assert_eq!(sup.worker_pid("qs-exp"), worker, "the same worker");

    sim.post(&format!("/__sim/qr/{second}/expire"), json!({}));
    let abandoned = sim.wait_qr_session("abandonment", "qs-exp", |s| s["status"] == "abandoned");
    assert_eq!(abandoned["uploads"], 2, "no third code: {abandoned}");
    let last = abandoned["status_history"]
        .as_array()
        .and_then(|h| h.last().cloned())
        .expect("history");
    assert!(
        last["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{last}"
    );
    sup.wait_session_gone("qs-exp");
    sup.wait_log("the end", &["session ended", "qr_abandoned (exit code 15)"]);
    sup.assert_reaped(&[worker]);
    assert!(sim.requests("login").is_empty());
}

#[test]
fn unscanned_session_is_abandoned_after_max_wait() {
    let sim = Sim::start();
    alice(&sim);
    let cfg = TestConfig::supervisor(
        &sim,
        &SupervisorSettings {
            extra: "[qr]\nmax_refreshes = 5\nmax_wait = \"2s\"\n".into(),
            ..SupervisorSettings::default()
        },
    );
    let sup = Supervisor::start(&cfg.path);
    start_session(&sim, "qs-wait");
    let worker = sup.worker_pid("qs-wait");
    let s = sim.wait_qr_session("abandonment", "qs-wait", |s| s["status"] == "abandoned");
    assert_eq!(s["uploads"], 1, "{s}");
    sup.wait_session_gone("qs-wait");
    sup.assert_reaped(&[worker]);
}

/// Logs in with the control plane in `mode`; the worker must stop without reporting anything
/// after its `login`, log the account out of WeChat and exit with code 18.
fn refused_login(mode: Value, control: &str) {
    let sim = Sim::start();
    let uin = alice(&sim);
    let wxid = uin.to_string();
    sim.set_mode(mode);
    let cfg = TestConfig::supervisor(
        &sim,
        &SupervisorSettings {
            control: control.into(),
            ..SupervisorSettings::default()
        },
    );
    let sup = Supervisor::start(&cfg.path);
    let uuid = start_session(&sim, "qs-no");
    let worker = sup.worker_pid("qs-no");
    sim.post(&format!("/__sim/qr/{uuid}/scan"), json!({"uin": uin}));
    sim.post(&format!("/__sim/qr/{uuid}/confirm"), json!({}));
    sim.wait_request("the login", "login", |r| r["wxid"] == wxid);
    sup.wait_session_gone("qs-no");
    sup.wait_log(
        "the refusal exit",
        &["session ended", "control_refused (exit code 18)"],
    );
    sup.assert_reaped(&[worker]);
    let login = index_of(&sim, "login", &wxid);
    let after: Vec<Value> = sim
        .all_requests()
        .into_iter()
        .filter(|r| r["index"].as_u64() > Some(login))
        .filter(|r| !(r["action"] == "pull_task" && r["wxid"] == ""))
        .collect();
    assert!(after.is_empty(), "reported after the refusal: {after:?}");
    assert_eq!(
        sim.session(uin).expect("session listed")["alive"],
        false,
        "the account was logged out of WeChat"
    );
}

#[test]
fn refused_login_stops_the_worker_without_reporting() {
    refused_login(json!({"refuse_login": true}), "");
}

#[test]
fn wrong_login_signature_stops_the_worker_without_reporting() {
    refused_login(
        json!({"secret": "e2e-secret", "wrong_signature": true}),
        "secret_key = \"e2e-secret\"\n",
    );
}

#[test]
fn missing_login_signature_stops_the_worker_without_reporting() {
    refused_login(
        json!({"secret": "e2e-secret", "no_signature": true}),
        "secret_key = \"e2e-secret\"\n",
    );
}

#[test]
fn max_sessions_refuses_further_qr_tasks() {
    let sim = Sim::start();
    alice(&sim);
    let cfg = TestConfig::supervisor(
        &sim,
        &SupervisorSettings {
            max_sessions: 1,
            extra: "[qr]\nmax_refreshes = 1\nmax_wait = \"10m\"\n".into(),
            ..SupervisorSettings::default()
        },
    );
    let sup = Supervisor::start(&cfg.path);
    let uuid = start_session(&sim, "qs-one");
    let worker = sup.worker_pid("qs-one");
    let full = sim.queue_qr_task("qs-two");
    let r = sim.wait_task_result(&full);
    assert_failed(&r, "capacity reached");
    let again = sim.queue_qr_task("qs-one");
    let r = sim.wait_task_result(&again);
    assert_failed(&r, "already running");
    assert_eq!(sup.sessions().len(), 1);
    assert_eq!(sim.qr_session("qs-two").expect("listed")["uploads"], 0);
    assert_eq!(sup.children().len(), 1, "{:?}", sup.children());
    let poll = sim.wait_request("an agent poll with one session", "pull_task", |r| {
        r["wxid"] == "" && r["data"]["sessions"] == 1
    });
    assert_eq!(poll["data"]["capacity"], 1, "{poll}");
    assert_eq!(poll["data"]["role"], "agent", "{poll}");
    assert_eq!(poll["data"]["machine_id"], MACHINE_ID, "{poll}");

    // Once the session ends, there is room again.
    sim.post(&format!("/__sim/qr/{uuid}/expire"), json!({}));
    sup.wait_session_gone("qs-one");
    sup.assert_reaped(&[worker]);
    let later = sim.queue_qr_task("qs-three");
    assert_eq!(sim.wait_task_result(&later)["task_result"], 1);
    sim.wait_qr_session("the new session's QR", "qs-three", |s| s["uploads"] == 1);
}

#[test]
fn sigkilled_worker_is_restarted() {
    let sim = Sim::start();
    let uin = alice(&sim);
    let cfg = TestConfig::supervisor(&sim, &SupervisorSettings::default());
    let mut sup = Supervisor::start(&cfg.path);
    start_session(&sim, "qs-crash");
    let first = sup.worker_pid("qs-crash");
    // SAFETY: kill(2) on the worker pid the supervisor just reported.
    assert_eq!(unsafe { libc::kill(first as i32, libc::SIGKILL) }, 0);
    let restarted = sup.wait_session("a restarted worker", "qs-crash", |s| {
        s["restarts"] == 1 && s["pid"].as_u64().is_some_and(|p| p != u64::from(first))
    });
    assert!(
        restarted["last_exit"]
            .as_str()
            .is_some_and(|e| e.contains("crashed")),
        "{restarted}"
    );
    sup.assert_reaped(&[first]);
    let second = restarted["pid"].as_u64().expect("pid") as u32;
    // The new worker shows a new code under the same id, and the login goes through it.
    let s = sim.wait_qr_session("the new worker's QR", "qs-crash", |s| {
        s["uploads"] == 2 && s["machine_id"] == format!("{MACHINE_ID}_{second}")
    });
    assert_eq!(s["qr_session_id"], "qs-crash");
    let uuid = sim.uploaded_qr_uuid("qs-crash");
    let pid = confirm(&sim, &sup, uin, &uuid, "qs-crash");
    assert_eq!(pid, second);
    let login = sim.wait_request("the login", "login", |_| true);
    assert_eq!(login["data"]["qr_session_id"], "qs-crash");
    let sup_pid = sup.pid();
    sup.signal(libc::SIGTERM);
    assert_eq!(exit_code(&mut sup), 0);
    assert_no_process_left(&[sup_pid, first, second]);
}

#[test]
fn sigterm_to_the_supervisor_leaves_no_child_behind() {
    let sim = Sim::start();
    let uin = alice(&sim);
    let wxid = uin.to_string();
    let cfg = TestConfig::supervisor(&sim, &SupervisorSettings::default());
    let mut sup = Supervisor::start(&cfg.path);
    let online = log_in(&sim, &sup, uin, "qs-online");
    start_session(&sim, "qs-waiting");
    let waiting = sup.worker_pid("qs-waiting");
    let listed: BTreeSet<u32> = sup
        .sessions()
        .iter()
        .filter_map(|s| s["pid"].as_u64().map(|p| p as u32))
        .collect();
    let children: BTreeSet<u32> = sup.children().iter().map(|c| c.pid).collect();
    assert_eq!(listed, BTreeSet::from([online, waiting]));
    assert_eq!(children, listed, "/proc agrees with /status");
    let sup_pid = sup.pid();

    sup.signal(libc::SIGTERM);
    assert_eq!(exit_code(&mut sup), 0);
    assert_no_process_left(&[sup_pid, online, waiting]);
    // The online account was drained: `logout` with reason shutdown, and (exit_wechat 0) its
    // web session is kept for a resume.
    let logout = sim.wait_request("the drain logout", "logout", |r| r["wxid"] == wxid);
    assert_eq!(logout["data"]["reason"], "shutdown", "{logout}");
    assert_eq!(sim.session(uin).expect("session")["alive"], true);
}

#[test]
fn exit_wechat_on_shutdown_logs_the_account_out_of_wechat() {
    let sim = Sim::start();
    let uin = alice(&sim);
    sim.set_mode(json!({"exit_wechat": 1}));
    let cfg = TestConfig::supervisor(&sim, &SupervisorSettings::default());
    let mut sup = Supervisor::start(&cfg.path);
    let worker = log_in(&sim, &sup, uin, "qs-exit");
    let sup_pid = sup.pid();
    sup.signal(libc::SIGTERM);
    assert_eq!(exit_code(&mut sup), 0);
    assert_no_process_left(&[sup_pid, worker]);
    let logout = sim.wait_request("the drain logout", "logout", |_| true);
    assert_eq!(logout["data"]["reason"], "shutdown", "{logout}");
    assert_eq!(
        sim.session(uin).expect("session")["alive"],
        false,
        "webwxlogout reached the server"
    );
}

#[test]
fn exit_wehub_0_keeps_the_worker_for_a_new_login() {
    let sim = Sim::start();
    let uin = alice(&sim);
    let wxid = uin.to_string();
    sim.set_mode(json!({"exit_wehub": 0}));
    let cfg = TestConfig::supervisor(&sim, &SupervisorSettings::default());
    let sup = Supervisor::start(&cfg.path);
    let worker = log_in(&sim, &sup, uin, "qs-stay");
    sim.post(
        &format!("/__sim/sessions/{uin}/kick"),
        json!({"retcode": 1101}),
    );
    let logout = sim.wait_request("the logout", "logout", |r| r["wxid"] == wxid);
    assert_eq!(logout["data"]["reason"], "phone_logout", "{logout}");
    // The same worker shows a new code under the same id.
    sim.wait_qr_session("a new code", "qs-stay", |s| s["uploads"] == 2);
    let uuid = sim.uploaded_qr_uuid("qs-stay");
    assert_eq!(sup.worker_pid("qs-stay"), worker);
    assert_eq!(
        sim.qr_statuses("qs-stay").last().map(String::as_str),
        Some("uploaded")
    );
    let pid = confirm(&sim, &sup, uin, &uuid, "qs-stay");
    assert_eq!(pid, worker, "logged in again by the same worker");
    let logins = sim.requests("login");
    assert_eq!(logins.len(), 2, "{logins:?}");
    assert_eq!(logins[1]["data"]["qr_session_id"], "qs-stay");

    // With exit_wehub 1 the next logout ends the worker.
    sim.set_mode(json!({"exit_wehub": 1}));
    sim.post(
        &format!("/__sim/sessions/{uin}/kick"),
        json!({"retcode": 1101}),
    );
    sup.wait_session_gone("qs-stay");
    sup.wait_log("the end", &["session ended", "phone_logout (exit code 10)"]);
    sup.assert_reaped(&[worker]);
    assert_eq!(sim.requests("logout").len(), 2);
}

#[test]
fn sigkilled_supervisor_takes_its_workers_with_it() {
    let sim = Sim::start();
    let uin = alice(&sim);
    let cfg = TestConfig::supervisor(&sim, &SupervisorSettings::default());
    let mut sup = Supervisor::start(&cfg.path);
    let online = log_in(&sim, &sup, uin, "qs-orphan");
    start_session(&sim, "qs-orphan-2");
    let waiting = sup.worker_pid("qs-orphan-2");
    sup.signal(libc::SIGKILL);
    sup.wait_exit();
    // PR_SET_PDEATHSIG (and stdin EOF) stop them; whoever adopted them reaps them.
    for pid in [online, waiting] {
        wait_until(&format!("orphaned worker {pid} to exit"), || {
            (!process_alive(pid)).then_some(())
        });
    }
    // The online one drained: the control plane heard why.
    let wxid = uin.to_string();
    let logout = sim.wait_request("the drain logout", "logout", |r| r["wxid"] == wxid);
    assert_eq!(logout["data"]["reason"], "shutdown", "{logout}");
}

#[test]
fn status_command_lists_the_session() {
    let sim = Sim::start();
    let uin = alice(&sim);
    let port = free_port();
    let cfg = TestConfig::supervisor(
        &sim,
        &SupervisorSettings {
            admin_listen: format!("127.0.0.1:{port}"),
            ..SupervisorSettings::default()
        },
    );
    let mut sup = Supervisor::start(&cfg.path);
    assert_eq!(sup.admin, format!("127.0.0.1:{port}"));
    let status = || {
        let out = std::process::Command::new(BIN)
            .args(["status", "--config"])
            .arg(&cfg.path)
            .output()
            .expect("run wxagent status");
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = status();
    assert!(code.success(), "{err}");
    assert_eq!(
        out.lines().next(),
        Some(
            format!(
                "supervisor {MACHINE_ID} (pid {}), 0 of 10 sessions",
                sup.pid()
            )
            .as_str()
        ),
        "{out}"
    );

    start_session(&sim, "qs-st");
    let waiting = sup.wait_session("waiting", "qs-st", |s| s["state"] == "waiting_for_scan");
    let pid = waiting["pid"].as_u64().expect("pid").to_string();
    let (_, out, _) = status();
    let row = out
        .lines()
        .find(|l| l.starts_with("qs-st"))
        .unwrap_or_else(|| panic!("no row: {out}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cells[..4],
        ["qs-st", pid.as_str(), "waiting_for_scan", "-"],
        "{out}"
    );

    let uuid = sim.uploaded_qr_uuid("qs-st");
    confirm(&sim, &sup, uin, &uuid, "qs-st");
    let (_, out, _) = status();
    assert!(out.contains("1 of 10 sessions"), "{out}");
    let header = out.lines().nth(1).unwrap_or_default();
    assert!(
        header.starts_with("SESSION") && header.contains("PID") && header.contains("ACCOUNT"),
        "{out}"
    );
    let row = out
        .lines()
        .find(|l| l.starts_with("qs-st"))
        .unwrap_or_else(|| panic!("no row: {out}"));
    assert!(row.contains(&pid), "{row}");
    assert!(row.contains("online"), "{row}");
    assert!(row.contains(&format!("Alice ({uin})")), "{row}");

    let health = reqwest::blocking::get(format!("http://{}/healthz", sup.admin))
        .and_then(|r| r.text())
        .expect("healthz");
    assert_eq!(health.trim(), "ok");

    sup.signal(libc::SIGTERM);
    assert_eq!(exit_code(&mut sup), 0);
    let (code, _, err) = status();
    assert!(!code.success(), "no supervisor any more");
    assert!(err.contains("no supervisor answering"), "{err}");
}

#[test]
fn queued_login_tasks_are_taken_without_waiting_an_interval_each() {
    // With an hour between polls, only an immediate re-poll after each task can start all three.
    let sim = Sim::start();
    let cfg = TestConfig::supervisor(&sim, &SupervisorSettings::default());
    let text = std::fs::read_to_string(&cfg.path).expect("config");
    assert!(text.contains("poll_interval = \"200ms\""), "{text}");
    write_config(
        &cfg.path,
        &text.replace("poll_interval = \"200ms\"", "poll_interval = \"1h\""),
    );
    let tasks: Vec<String> = ["q-1", "q-2", "q-3"]
        .iter()
        .map(|id| sim.queue_qr_task(id))
        .collect();
    let sup = Supervisor::start(&cfg.path);
    for task in &tasks {
        let result = sim.wait_task_result(task);
        assert_eq!(result["task_result"], 1, "task 200 accepted: {result}");
    }
    for id in ["q-1", "q-2", "q-3"] {
        sup.wait_session(&format!("{id} listed"), id, |_| true);
    }
}

/// An idle account's worker is not woken to poll: the supervisor polls `pull_task` for it and
/// writes each task down the worker's stdin. A frozen worker shows it: its task is still taken
/// from the control plane, and runs when the worker thaws. A task taken for a worker that then
/// dies before reading it is reported failed, not lost in the pipe.
#[test]
fn the_supervisor_polls_for_idle_workers_and_answers_for_tasks_they_never_took() {
    let sim = Sim::start();
    let uin = alice(&sim);
    let wxid = uin.to_string();
    let bob = sim.user_name(uin, "Bob");
    let cfg = TestConfig::supervisor(&sim, &SupervisorSettings::default());
    let sup = Supervisor::start(&cfg.path);
    let worker = log_in(&sim, &sup, uin, "qs-feed");
    sup.wait_session("the supervisor polling for the account", "qs-feed", |s| {
        s["agent_pulls"] == true
    });
    let taken = |id: &str| {
        sim.get("/__cp/tasks")["tasks"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["task_id"] == id).cloned())
            .filter(|t| !t["delivered_ms"].is_null())
    };
    let text = |msg: &str| json!({"wxid_to": bob, "msg_list": [{"msg_type": 1, "msg": msg}]});

    assert!(signal_pid(worker, libc::SIGSTOP));
    let first = sim.queue_task(&wxid, 1, text("sent after the thaw"), "pull");
    wait_until("the task taken while the worker is frozen", || {
        taken(&first)
    });
    let results = sim.task_results();
    assert!(results.get(&first).is_none(), "ran while frozen: {results}");
    assert!(signal_pid(worker, libc::SIGCONT));
    let r = sim.wait_task_result(&first);
    assert_eq!(r["task_result"], 1, "{r}");
    assert!(
        sim.outbox(uin)
            .iter()
            .any(|m| m["content"] == "sent after the thaw" && m["to"] == bob)
    );

    assert!(signal_pid(worker, libc::SIGSTOP));
    let second = sim.queue_task(&wxid, 1, text("never sent"), "pull");
    wait_until("the second task taken", || taken(&second));
    assert!(signal_pid(worker, libc::SIGKILL));
    let r = sim.wait_task_result(&second);
    assert_failed(&r, "worker ended before it took the task");
    assert!(sim.outbox(uin).iter().all(|m| m["content"] != "never sent"));
    sup.assert_reaped(&[worker]);
}
