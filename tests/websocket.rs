//! WebSocket mode (control-plane spec A.8) end to end, and request signing (B.6) against the
//! reference control plane when it requires signatures.
//!
//! Real binaries (`wxagent sim`, `wxagent run` and its workers), like tests/supervisor.rs:
//! - a session offered WebSocket mode reports messages over the socket (the ledger says
//!   `transport: "websocket"`), stops polling `pull_task`, runs a pushed reply task (task 1:
//!   the simulator's outbox shows the text) and a pushed `pull_task_ack` task (its
//!   `report_task_result` arrives over the socket), and sends heartbeats;
//! - with the upgrade refused (mode `ws_refuse`) the session falls back to HTTP: messages are
//!   reported and pulled tasks run;
//! - the server drops the socket mid-session: the worker reconnects, nothing is lost and the
//!   order is kept;
//! - with the reference control plane echoing event ids, a 2,000-report burst goes out with
//!   frames sent ahead of their answers (the server's `max_unanswered` shows it) and arrives
//!   complete and in order, also when the socket is dropped mid-burst; a server that echoes
//!   nothing (mode `ws_no_echo`) never has more than one frame unanswered;
//! - with mode `require_signature`, a whole session's callbacks, QR and media uploads,
//!   WebSocket upgrade and frames verify (nothing is refused with 401);
//! - over HTTP, a control plane offering report batches (mode `report_batch`, wxagent's
//!   extension) gets a burst in batches no larger than offered, complete and in order, also
//!   across an outage in the middle of it.
//!
//! In-process, against the reference control plane alone (tokio-tungstenite as the client):
//! answer frames echo `event_id`, frames land in the callback ledger, tasks are pushed, and
//! refused / unsigned upgrades are answered 403 / 401.

mod common;

use common::*;
use serde_json::{Value, json};
use std::time::Duration;

fn ws_url(sim: &Sim) -> String {
    format!("{}/wehub/ws", sim.base.replacen("http://", "ws://", 1))
}

/// The WebSocket connections the control plane saw (`/__cp/ws`).
fn connections(sim: &Sim, wxid: &str) -> Vec<Value> {
    sim.get("/__cp/ws")["connections"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c["wxid"] == wxid)
        .collect()
}

/// Waits until `wxid` has an open connection, at least `n` in all; returns the open one.
fn wait_open_connection(sim: &Sim, wxid: &str, n: usize) -> Value {
    wait_until(&format!("websocket connection #{n} of {wxid}"), || {
        let all = connections(sim, wxid);
        if all.len() < n {
            return None;
        }
        all.into_iter().rev().find(|c| c["closed_ms"].is_null())
    })
}

/// Requests with this action and wxid (every transport), oldest first.
fn requests_of(sim: &Sim, action: &str, wxid: &str) -> Vec<Value> {
    sim.get(&format!("/__cp/requests?action={action}&wxid={wxid}"))["requests"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// A supervisor, an account with Bob, and a logged-in session `id`; returns (sup, uin).
fn session(sim: &Sim, cfg: &TestConfig, id: &str) -> (Supervisor, u64) {
    let uin = sim.account_with_bob("Alice");
    let sup = Supervisor::start(&cfg.path);
    sim.log_in_session(&sup, uin, id);
    (sup, uin)
}

/// The transport each of the ledger's copies of these injected messages came by.
fn transports(sim: &Sim, sent: &[Injected]) -> Vec<(String, String)> {
    let records = sim.get("/__cp/requests?action=report_new_msg&status=200")["requests"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    sent.iter()
        .flat_map(|m| {
            records
                .iter()
                .filter(|r| r["data"]["msg"]["msg_id"] == m.msg_id.as_str())
                .map(|r| {
                    (
                        m.text.clone(),
                        r["transport"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn websocket_mode_reports_pushes_tasks_and_heartbeats() {
    let sim = Sim::start();
    sim.set_mode(json!({"websocket": {"ws_url": ws_url(&sim), "heartbeat_interval": 1}}));
    let cfg = TestConfig::supervisor(&sim, &SupervisorSettings::default());
    let (_sup, uin) = session(&sim, &cfg, "qs-ws");
    let wxid = uin.to_string();
    let login = sim.wait_request("the login", "login", |r| r["wxid"] == wxid.as_str());
    assert_eq!(login["transport"], "http", "login always goes over HTTP");
    let conn = wait_open_connection(&sim, &wxid, 1);

    // Messages go over the socket, in order.
    let mut ledger = Ledger::default();
    let mut sent = Vec::new();
    for _ in 0..5 {
        sent.push(ledger.inject(&sim, "qs-ws", uin));
    }
    let delivered = ledger.wait_all_delivered(&sim, Duration::from_secs(60));
    ledger.assert_content(&sim, &delivered);
    assert_eq!(
        ledger.first_acceptance_order("qs-ws", &delivered),
        vec![1, 2, 3, 4, 5]
    );
    let via = transports(&sim, &sent);
    assert!(
        via.iter().all(|(_, t)| t == "websocket"),
        "every message came over the socket: {via:?}"
    );
    let polls = requests_of(&sim, "pull_task", &wxid).len();

    // A reply task pushed at once: task 1 sends a text (no result is reported for it).
    let bob = sim.user_name(uin, "Bob");
    let pushed = sim.post(
        "/__cp/tasks",
        json!({"wxid": wxid, "task_type": 1, "via": "reply",
               "task_dict": {"wxid_to": bob, "msg_list": [{"msg_type": 1, "msg": "pushed over the socket"}]}}),
    );
    assert_eq!(pushed["pushed"], true, "{pushed}");
    let sent_text = sim.wait_outbox("the pushed text", uin, |m| {
        m["content"] == "pushed over the socket"
    });
    assert_eq!(sent_text["to"], bob.as_str(), "{sent_text}");

    // A pull task pushed as pull_task_ack: it runs and its result comes back over the socket.
    let pulled = sim.post(
        "/__cp/tasks",
        json!({"wxid": wxid, "task_type": 1, "via": "pull",
               "task_dict": {"wxid_to": bob, "msg_list": [{"msg_type": 1, "msg": "pulled over the socket"}]}}),
    );
    assert_eq!(pulled["pushed"], true, "{pulled}");
    let task_id = pulled["task_id"].as_str().expect("task_id").to_owned();
    let result = sim.wait_task_result(&task_id);
    assert_eq!(result["task_result"], 1, "{result}");
    assert_eq!(result["reports"], 1, "one result: {result}");
    sim.wait_outbox("the pulled text", uin, |m| {
        m["content"] == "pulled over the socket"
    });
    let result_request = requests_of(&sim, "report_task_result", &wxid)
        .into_iter()
        .find(|r| r["data"]["task_id"] == task_id.as_str())
        .expect("the task result request");
    assert_eq!(result_request["transport"], "websocket", "{result_request}");
    assert!(
        result_request["event_id"]
            .as_str()
            .is_some_and(|e| e.starts_with("qs-ws:")),
        "the frame carries its spool event id: {result_request}"
    );

    // Heartbeats every second on the same connection; no pull_task polling meanwhile.
    let beating = wait_until("three heartbeats", || {
        let c = connections(&sim, &wxid)
            .into_iter()
            .find(|c| c["id"] == conn["id"])?;
        (c["heartbeats"].as_u64() >= Some(3)).then_some(c)
    });
    assert!(beating["closed_ms"].is_null(), "still open: {beating}");
    assert!(
        beating["frames"].as_u64() >= Some(6),
        "messages and the result came as frames: {beating}"
    );
    assert_eq!(
        requests_of(&sim, "pull_task", &wxid).len(),
        polls,
        "no pull_task while the socket is open"
    );
    assert_eq!(connections(&sim, &wxid).len(), 1, "one connection");
}

#[test]
fn refused_websocket_falls_back_to_http() {
    let sim = Sim::start();
    sim.set_mode(json!({
        "websocket": {"ws_url": ws_url(&sim), "heartbeat_interval": 1},
        "ws_refuse": true,
    }));
    let cfg = TestConfig::supervisor(&sim, &SupervisorSettings::default());
    let (sup, uin) = session(&sim, &cfg, "qs-http");
    let wxid = uin.to_string();
    wait_until("a refused upgrade", || {
        (sim.get("/__cp/ws")["refused"].as_u64() >= Some(1)).then_some(())
    });

    let mut ledger = Ledger::default();
    let mut sent = Vec::new();
    for _ in 0..3 {
        sent.push(ledger.inject(&sim, "qs-http", uin));
    }
    let delivered = ledger.wait_all_delivered(&sim, Duration::from_secs(60));
    ledger.assert_content(&sim, &delivered);
    assert_eq!(
        ledger.first_acceptance_order("qs-http", &delivered),
        vec![1, 2, 3]
    );
    let via = transports(&sim, &sent);
    assert!(via.iter().all(|(_, t)| t == "http"), "over HTTP: {via:?}");

    // Tasks are pulled over HTTP and run.
    let bob = sim.user_name(uin, "Bob");
    let queued = sim.post(
        "/__cp/tasks",
        json!({"wxid": wxid, "task_type": 1, "via": "pull",
               "task_dict": {"wxid_to": bob, "msg_list": [{"msg_type": 1, "msg": "pulled over http"}]}}),
    );
    assert_eq!(queued["pushed"], false, "{queued}");
    let task_id = queued["task_id"].as_str().expect("task_id");
    let result = sim.wait_task_result(task_id);
    assert_eq!(result["task_result"], 1, "{result}");
    sim.wait_outbox("the pulled text", uin, |m| {
        m["content"] == "pulled over http"
    });
    assert!(!requests_of(&sim, "pull_task", &wxid).is_empty());
    assert!(connections(&sim, &wxid).is_empty(), "no socket was opened");
    sup.wait_session("still online", "qs-http", |s| s["state"] == "online");
}

#[test]
fn dropped_websocket_reconnects_without_loss_or_reordering() {
    let sim = Sim::start();
    sim.set_mode(json!({"websocket": {"ws_url": ws_url(&sim), "heartbeat_interval": 1}}));
    let cfg = TestConfig::supervisor(&sim, &SupervisorSettings::default());
    let (_sup, uin) = session(&sim, &cfg, "qs-drop");
    let wxid = uin.to_string();
    wait_open_connection(&sim, &wxid, 1);

    let mut ledger = Ledger::default();
    for _ in 0..5 {
        ledger.inject(&sim, "qs-drop", uin);
    }
    ledger.wait_all_delivered(&sim, Duration::from_secs(60));
    // Drop the socket while more messages arrive.
    for i in 0..10 {
        ledger.inject(&sim, "qs-drop", uin);
        if i == 2 {
            let dropped = sim.post("/__cp/ws/close", json!({"wxid": wxid}));
            assert_eq!(dropped["dropped"], 1, "{dropped}");
        }
    }
    let second = wait_open_connection(&sim, &wxid, 2);
    let mut after = Vec::new();
    for _ in 0..5 {
        after.push(ledger.inject(&sim, "qs-drop", uin));
    }
    let delivered = ledger.wait_all_delivered(&sim, Duration::from_secs(90));
    ledger.assert_content(&sim, &delivered);
    assert_eq!(
        ledger.first_acceptance_order("qs-drop", &delivered),
        (1..=20).collect::<Vec<u64>>(),
        "every message once at least, in order"
    );
    let first = &connections(&sim, &wxid)[0];
    assert_eq!(first["closed_by"], "dropped", "{first}");
    // After the reconnect, reports are back on the socket.
    let via = transports(&sim, &after);
    assert!(
        via.iter().all(|(_, t)| t == "websocket"),
        "after the reconnect: {via:?}"
    );
    let second_now = connections(&sim, &wxid)
        .into_iter()
        .find(|c| c["id"] == second["id"])
        .expect("the second connection");
    assert!(
        second_now["frames"].as_u64() >= Some(5),
        "the second connection carried the later reports: {second_now}"
    );
}

/// Queues `count` texts from Bob at once; returns their msg_ids in inject order.
fn burst(sim: &Sim, uin: u64, count: usize, text: &str) -> Vec<String> {
    let r = sim.post(
        &format!("/__sim/sessions/{uin}/burst"),
        json!({"count": count, "from": "Bob", "text": text}),
    );
    r["msg_ids"]
        .as_array()
        .expect("msg_ids")
        .iter()
        .map(|id| id.as_str().expect("a msg_id").to_owned())
        .collect()
}

/// The ledger's `report_new_msg` records of these msg_ids, in arrival order.
fn records_of(sim: &Sim, wxid: &str, ids: &[String]) -> Vec<Value> {
    let ours: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
    requests_of(sim, "report_new_msg", wxid)
        .into_iter()
        .filter(|r| r["status"] == 200)
        .filter(|r| {
            r["data"]["msg"]["msg_id"]
                .as_str()
                .is_some_and(|id| ours.contains(id))
        })
        .collect()
}

/// Waits until every one of `ids` reached the control plane; then checks that their first
/// sightings came in inject order, each exactly once (repeats are marked duplicates), and
/// returns every record of them.
fn assert_first_sightings_in_order(sim: &Sim, wxid: &str, ids: &[String]) -> Vec<Value> {
    let records = wait_until_within(
        &format!("{} messages at the control plane", ids.len()),
        Duration::from_secs(180),
        || {
            let records = records_of(sim, wxid, ids);
            let seen: std::collections::HashSet<&str> = records
                .iter()
                .filter_map(|r| r["data"]["msg"]["msg_id"].as_str())
                .collect();
            (seen.len() == ids.len()).then_some(records)
        },
    );
    let first: Vec<&str> = records
        .iter()
        .filter(|r| r["duplicate"] == false)
        .filter_map(|r| r["data"]["msg"]["msg_id"].as_str())
        .collect();
    let expected: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert!(
        first == expected,
        "first sightings: {} records, the first out of place at {:?}",
        first.len(),
        first.iter().zip(&expected).position(|(a, b)| a != b)
    );
    records
}

/// With the window on (the reference control plane echoes event ids), a burst into one session
/// arrives complete, in order, each report once, over the socket — and the control plane saw
/// frames sent ahead of their answers (it holds each answer back `delay_ms`, so a client that
/// waits for every answer never has more than one unanswered), never more than the window.
#[test]
fn window_sends_ahead_and_keeps_order() {
    let sim = Sim::start();
    sim.set_mode(json!({"websocket": {"ws_url": ws_url(&sim), "heartbeat_interval": 1}}));
    let cfg = TestConfig::supervisor(&sim, &SupervisorSettings::default());
    let (_sup, uin) = session(&sim, &cfg, "qs-window");
    let wxid = uin.to_string();
    wait_open_connection(&sim, &wxid, 1);
    sim.set_mode(json!({"delay_ms": 2}));

    let ids = burst(&sim, uin, 2000, "window");
    let records = assert_first_sightings_in_order(&sim, &wxid, &ids);
    assert_eq!(records.len(), ids.len(), "no report was sent twice");
    assert!(records.iter().all(|r| r["transport"] == "websocket"));
    let all = connections(&sim, &wxid);
    assert_eq!(all.len(), 1, "one connection throughout: {all:?}");
    let most = all[0]["max_unanswered"].as_u64().expect("max_unanswered");
    assert!(
        (2..=64).contains(&most),
        "frames unanswered at once: {most} (1: no window; above 64: past the default ws_window)"
    );
}

/// A socket dropped in the middle of a windowed burst: everything still arrives, and the
/// first sighting of each report is still in inject order (what was in flight is sent again,
/// from the first unanswered report on).
#[test]
fn window_survives_a_dropped_socket_mid_burst() {
    let sim = Sim::start();
    sim.set_mode(json!({"websocket": {"ws_url": ws_url(&sim), "heartbeat_interval": 1}}));
    let cfg = TestConfig::supervisor(&sim, &SupervisorSettings::default());
    let (_sup, uin) = session(&sim, &cfg, "qs-wdrop");
    let wxid = uin.to_string();
    wait_open_connection(&sim, &wxid, 1);
    // Slow answers keep the burst going long enough to cut it in the middle.
    sim.set_mode(json!({"delay_ms": 2}));

    let ids = burst(&sim, uin, 2000, "wdrop");
    wait_until_within("part of the burst", Duration::from_secs(120), || {
        (records_of(&sim, &wxid, &ids).len() >= 300).then_some(())
    });
    let dropped = sim.post("/__cp/ws/close", json!({"wxid": wxid}));
    assert_eq!(dropped["dropped"], 1, "{dropped}");
    let records = assert_first_sightings_in_order(&sim, &wxid, &ids);
    let first = &connections(&sim, &wxid)[0];
    assert_eq!(first["closed_by"], "dropped", "{first}");
    assert!(
        first["frames"].as_u64() < Some(2000),
        "the drop came before the end of the burst: {first}"
    );
    assert!(
        first["max_unanswered"].as_u64() >= Some(2),
        "the window was open when the socket dropped: {first}"
    );
    wait_open_connection(&sim, &wxid, 2);
    let last = records.last().expect("records");
    assert_eq!(
        last["data"]["msg"]["msg_id"].as_str(),
        ids.last().map(String::as_str),
        "the last report came last: {last}"
    );
}

/// A server that echoes no event_id (as a stock one) gets one report frame at a time: answers
/// are matched by order, so nothing may be sent ahead of them.
#[test]
fn no_echo_means_one_frame_in_flight() {
    let sim = Sim::start();
    sim.set_mode(json!({
        "websocket": {"ws_url": ws_url(&sim), "heartbeat_interval": 1},
        "ws_no_echo": true,
    }));
    let cfg = TestConfig::supervisor(&sim, &SupervisorSettings::default());
    let (_sup, uin) = session(&sim, &cfg, "qs-noecho");
    let wxid = uin.to_string();
    wait_open_connection(&sim, &wxid, 1);
    sim.set_mode(json!({"delay_ms": 5}));

    let ids = burst(&sim, uin, 100, "noecho");
    let records = assert_first_sightings_in_order(&sim, &wxid, &ids);
    assert!(records.iter().all(|r| r["transport"] == "websocket"));
    let all = connections(&sim, &wxid);
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["max_unanswered"], 1, "{}", all[0]);
}

/// The worker learns the offer from `login_ack` and sends what is waiting in batches: a burst
/// arrives complete and in order, in posts of at most the offer, and an outage in the middle
/// (every post answered 503 for a while) loses and reorders nothing.
#[test]
fn offered_report_batches_carry_a_burst_in_order_across_an_outage() {
    let sim = Sim::start();
    sim.set_mode(json!({"report_batch": 16}));
    let cfg = TestConfig::supervisor(&sim, &SupervisorSettings::default());
    let (_sup, uin) = session(&sim, &cfg, "qs-batch");
    let wxid = uin.to_string();
    // Slow answers (about 2 s for the burst) leave time to cut it in the middle.
    sim.set_mode(json!({"delay_ms": 20}));

    let ids = burst(&sim, uin, 1500, "batch");
    wait_until_within("part of the burst", Duration::from_secs(120), || {
        (records_of(&sim, &wxid, &ids).len() >= 200).then_some(())
    });
    sim.set_mode(json!({"down": true}));
    let refused = || {
        sim.get("/__cp/requests?action=report_batch&status=503")["requests"]
            .as_array()
            .map_or(0, Vec::len)
    };
    wait_until("a batch refused by the outage", || {
        (refused() >= 2).then_some(())
    });
    sim.set_mode(json!({"down": false}));
    let records = assert_first_sightings_in_order(&sim, &wxid, &ids);
    assert_eq!(records.len(), ids.len(), "no report was taken twice");
    assert!(records.iter().all(|r| r["transport"] == "http"));
    let sizes: Vec<u64> = records.iter().filter_map(|r| r["batch"].as_u64()).collect();
    assert!(sizes.iter().all(|&n| n <= 16), "a batch above the offer");
    let batched = sizes.iter().filter(|&&n| n >= 2).count();
    assert!(
        batched > ids.len() / 2,
        "{batched} of {} reports came in batches",
        ids.len()
    );
}

#[test]
fn signed_requests_uploads_and_upgrades_verify_when_required() {
    let sim = Sim::start();
    sim.set_mode(json!({
        "secret": "ws-secret",
        "require_signature": true,
        "websocket": {"ws_url": ws_url(&sim), "heartbeat_interval": 1},
    }));
    let cfg = TestConfig::supervisor(
        &sim,
        &SupervisorSettings {
            control: "secret_key = \"ws-secret\"\nsign_requests = true\n".into(),
            ..SupervisorSettings::default()
        },
    );
    let (_sup, uin) = session(&sim, &cfg, "qs-signed");
    let wxid = uin.to_string();
    let conn = wait_open_connection(&sim, &wxid, 1);
    assert_eq!(conn["signature_ok"], true, "signed upgrade: {conn}");
    let mut ledger = Ledger::default();
    for _ in 0..3 {
        ledger.inject(&sim, "qs-signed", uin);
    }
    let delivered = ledger.wait_all_delivered(&sim, Duration::from_secs(60));
    ledger.assert_content(&sim, &delivered);
    // A received image uploaded by task 9 (pushed over the socket): a signed media upload.
    let image = sim.inject(uin, json!({"type": "image", "from": "Bob"}));
    let unit = sim.wait_reported_message("the image", |m| m["msg_id"] == image["msg_id"]);
    let file_index = unit["file_index"].as_str().expect("file_index").to_owned();
    let task = sim.queue_task(&wxid, 9, json!({"file_index": file_index}), "pull");
    let result = sim.wait_task_result(&task);
    assert_eq!(result["task_result"], 1, "{result}");

    let all = sim.all_requests();
    let http = all.iter().filter(|r| r["transport"] == "http").count();
    let ws = all.iter().filter(|r| r["transport"] == "websocket").count();
    assert!(
        http >= 3,
        "agent polls, QR status, login over HTTP: {all:?}"
    );
    assert!(ws >= 3, "messages over the socket: {all:?}");
    let bad: Vec<&Value> = all
        .iter()
        .filter(|r| r["signature_ok"] != true || r["status"] != 200)
        .collect();
    assert!(bad.is_empty(), "refused or unsigned requests: {bad:?}");
    let uploads = sim.get("/__cp/uploads")["uploads"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        uploads.iter().any(|u| u["kind"] == "qr") && uploads.iter().any(|u| u["kind"] == "media"),
        "the QR code and the image were uploaded: {uploads:?}"
    );
    assert!(
        uploads.iter().all(|u| u["signature_ok"] == true),
        "signed uploads: {uploads:?}"
    );
    assert_eq!(sim.get("/__cp/ws")["refused"], 0);
}

// ---------------------------------------------------------------------------------------------
// The reference control plane's WebSocket endpoint alone.

mod endpoint {
    use futures::{SinkExt, StreamExt};
    use serde_json::{Value, json};
    use std::time::Duration;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::{self, Message};
    use wxagent::control::signature::sign_request;
    use wxagent::sim::wehub::{Mode, WebsocketMode, WehubState, serve};

    type Socket = tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >;

    async fn start(mode: Mode) -> (String, WehubState, tokio_util::sync::CancellationToken) {
        let state = WehubState::with_mode(mode);
        let (addr, _task, stop) = serve("127.0.0.1:0".parse().unwrap(), state.clone())
            .await
            .expect("serve");
        (format!("127.0.0.1:{}", addr.port()), state, stop)
    }

    fn ws_mode(addr: &str) -> Mode {
        Mode {
            websocket: Some(WebsocketMode {
                ws_url: format!("ws://{addr}/wehub/ws"),
                heartbeat_interval: 1,
            }),
            ..Mode::default()
        }
    }

    async fn next_json(socket: &mut Socket) -> Value {
        let msg = tokio::time::timeout(Duration::from_secs(20), socket.next())
            .await
            .expect("a frame in time")
            .expect("the socket is open")
            .expect("a readable frame");
        serde_json::from_str(msg.to_text().expect("a text frame")).expect("json")
    }

    async fn get_json(url: String) -> Value {
        reqwest::get(url)
            .await
            .expect("get")
            .json()
            .await
            .expect("json")
    }

    /// The delivery task and the link in-process, against the reference control plane: with
    /// the window on, reports go out ahead of their answers and arrive in spool order; a
    /// damaged report in the middle of the spool stops delivery exactly there (everything
    /// before it delivered and acked, nothing after it sent), as one report at a time would.
    #[tokio::test]
    async fn window_delivers_up_to_a_damaged_report_in_order() {
        use std::sync::{Arc, Mutex};
        use wxagent::control::delivery::{self, DeliveryPolicy};
        use wxagent::control::spool::{Spool, SpoolLimits};
        use wxagent::control::ws::{LinkState, WsLink, WsPolicy};
        use wxagent::control::{ControlClient, WebSocketExtension};

        let (addr, _state, stop) = start(Mode {
            delay_ms: 1,
            ..Mode::default()
        })
        .await;
        let cfg = wxagent::config::ControlConfig {
            callback_url: Some(url::Url::parse(&format!("http://{addr}/wehub/callback")).unwrap()),
            upload_url: None,
            appid: "app".into(),
            secret_key: None,
            poll_interval: Duration::from_secs(5),
            timeout: Duration::from_secs(20),
            sign_requests: false,
            ws_window: 16,
            http_batch: 64,
        };
        let control = ControlClient::new(&cfg, "m".into()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let limits = SpoolLimits {
            max_bytes: 1 << 30,
            max_events: 1_000_000,
        };
        let mut spool = Spool::open(dir.path(), "sw", limits).unwrap();
        let batch: Vec<_> = (1..=300)
            .map(|n| {
                let data =
                    json!({"msg": {"msg_id": format!("m{n}"), "msg": format!("report #{n:05}")}});
                ("report_new_msg".to_owned(), "w1".to_owned(), data)
            })
            .collect();
        spool.append_batch(&batch).unwrap();
        // Damage report 200 on disk after the spool was opened (one byte of its text).
        let segment = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "seg"))
            .expect("a segment");
        let mut bytes = std::fs::read(&segment).unwrap();
        let needle = b"report #00200";
        let at = bytes
            .windows(needle.len())
            .position(|w| w == needle)
            .expect("report 200 on disk");
        bytes[at + 8] ^= 0x01;
        std::fs::write(&segment, bytes).unwrap();

        let cancel = tokio_util::sync::CancellationToken::new();
        let (tasks, _pushed) = tokio::sync::mpsc::channel(16);
        let ext = WebSocketExtension {
            ws_url: format!("ws://{addr}/wehub/ws"),
            heartbeat_interval: Duration::from_secs(30),
        };
        let link = WsLink::start(
            control.clone(),
            &ext,
            "w1".into(),
            tasks,
            cancel.clone(),
            WsPolicy::default(),
        )
        .unwrap();
        let mut state = link.state();
        tokio::time::timeout(Duration::from_secs(20), async {
            while !matches!(*state.borrow_and_update(), LinkState::Open { .. }) {
                state.changed().await.unwrap();
            }
        })
        .await
        .expect("the socket opens");
        let spool = Arc::new(Mutex::new(spool));
        let (handle, mut acks) = delivery::start_with(
            spool.clone(),
            control,
            Arc::new(tokio::sync::Notify::new()),
            cancel.clone(),
            DeliveryPolicy {
                ws_window: 16,
                ..DeliveryPolicy::default()
            },
        );
        handle.route_over(Some(link.sender()));
        // One ack per delivered report, in spool order.
        for n in 1..=199 {
            let ack = tokio::time::timeout(Duration::from_secs(30), acks.recv())
                .await
                .unwrap_or_else(|_| panic!("the ack of report {n} in time"))
                .expect("the ack channel is open");
            assert!(ack.is_ok(), "report {n}: {ack:?}");
        }
        let error = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Some(e) = handle.stats().last_error {
                    return e;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the damage reported");
        assert!(error.contains("corrupt"), "{error}");
        assert_eq!(handle.stats().delivered, 199);
        assert_eq!(spool.lock().unwrap().len(), 101, "report 200 on stays");

        let ledger = get_json(format!("http://{addr}/__cp/requests?action=report_new_msg")).await;
        let seen: Vec<String> = ledger["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["event_id"].as_str().unwrap_or("").to_owned())
            .collect();
        let expected: Vec<String> = (1..=199).map(|n| format!("sw:{n}")).collect();
        assert_eq!(
            seen, expected,
            "each once, in order, nothing after the damage"
        );
        let ws = get_json(format!("http://{addr}/__cp/ws")).await;
        let most = ws["connections"][0]["max_unanswered"].as_u64().unwrap();
        assert!(
            (2..=16).contains(&most),
            "frames unanswered at once: {most}"
        );
        cancel.cancel();
        handle.join().await;
        stop.cancel();
    }

    #[tokio::test]
    async fn frames_are_answered_with_their_event_id_and_tasks_are_pushed() {
        let (addr, _state, stop) = start(Mode::default()).await;
        let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/wehub/ws"))
            .await
            .expect("upgrade");
        socket
            .send(Message::text(
                json!({"atcion": "heartbeat", "wxid": "w1", "data": {}}).to_string(),
            ))
            .await
            .unwrap();
        assert_eq!(next_json(&mut socket).await["ack_type"], "heartbeat_ack");
        let frame = json!({"action": "report_new_msg", "appid": "a", "wxid": "w1",
            "data": {"msg": {"msg_id": "m1", "msg_type": 1, "msg": "hi"}}, "event_id": "s:7"});
        socket.send(Message::text(frame.to_string())).await.unwrap();
        let answer = next_json(&mut socket).await;
        assert_eq!(answer["event_id"], "s:7", "{answer}");
        assert_eq!(answer["ack_type"], "common_ack", "{answer}");
        assert_eq!(answer["error_code"], 0, "{answer}");

        let ledger = get_json(format!("http://{addr}/__cp/requests?action=report_new_msg")).await;
        let record = &ledger["requests"][0];
        assert_eq!(record["transport"], "websocket", "{record}");
        assert_eq!(record["event_id"], "s:7", "{record}");
        assert_eq!(record["data"]["msg"]["msg_id"], "m1", "{record}");

        // A queued pull task is pushed at once as pull_task_ack, with its id.
        let queued: Value = reqwest::Client::new()
            .post(format!("http://{addr}/__cp/tasks"))
            .json(&json!({"wxid": "w1", "task_type": 8, "task_dict": {"room_wxid": "@@r"}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(queued["pushed"], true, "{queued}");
        let push = next_json(&mut socket).await;
        assert_eq!(push["ack_type"], "pull_task_ack", "{push}");
        assert_eq!(push["data"]["task_id"], queued["task_id"], "{push}");
        assert_eq!(push["data"]["task_data"]["task_type"], 8, "{push}");
        assert!(
            push.get("event_id").is_none(),
            "a push answers nothing: {push}"
        );

        // Dropped by the control API: the client sees the connection end.
        let dropped: Value = reqwest::Client::new()
            .post(format!("http://{addr}/__cp/ws/close"))
            .json(&json!({}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(dropped["dropped"], 1);
        let end = tokio::time::timeout(Duration::from_secs(20), socket.next())
            .await
            .expect("the end in time");
        assert!(!matches!(end, Some(Ok(Message::Text(_)))), "{end:?}");
        let ws = get_json(format!("http://{addr}/__cp/ws")).await;
        let conn = &ws["connections"][0];
        assert_eq!(conn["wxid"], "w1", "{conn}");
        assert_eq!(conn["heartbeats"], 1, "{conn}");
        assert_eq!(conn["frames"], 1, "{conn}");
        assert_eq!(conn["closed_by"], "dropped", "{conn}");
        stop.cancel();
    }

    fn refused_status(err: tungstenite::Error) -> u16 {
        match err {
            tungstenite::Error::Http(response) => response.status().as_u16(),
            other => panic!("expected an HTTP refusal, got {other}"),
        }
    }

    #[tokio::test]
    async fn refused_and_unsigned_upgrades() {
        let (addr, state, stop) = start(Mode::default()).await;
        let url = format!("ws://{addr}/wehub/ws?token=t1");
        state.set_mode(Mode {
            ws_refuse: true,
            ..ws_mode(&addr)
        });
        let err = tokio_tungstenite::connect_async(url.clone())
            .await
            .expect_err("refused");
        assert_eq!(refused_status(err), 403);

        state.set_mode(Mode {
            secret: Some("k".into()),
            require_signature: true,
            ..ws_mode(&addr)
        });
        let err = tokio_tungstenite::connect_async(url.clone())
            .await
            .expect_err("unsigned");
        assert_eq!(refused_status(err), 401);

        // Signed over the wrong target (the path without the query): refused.
        let signed = |target: &str| {
            let headers = sign_request("k", target.as_bytes(), std::time::SystemTime::now());
            let mut request = url.as_str().into_client_request().unwrap();
            let h = request.headers_mut();
            h.insert("x-wxagent-timestamp", headers.timestamp.parse().unwrap());
            h.insert("x-wxagent-signature", headers.signature.parse().unwrap());
            request
        };
        let err = tokio_tungstenite::connect_async(signed("/wehub/ws"))
            .await
            .expect_err("wrong target");
        assert_eq!(refused_status(err), 401);
        let (mut socket, _) = tokio_tungstenite::connect_async(signed("/wehub/ws?token=t1"))
            .await
            .expect("a signed upgrade is accepted");
        socket
            .send(Message::text(
                json!({"action": "report_contact", "wxid": "w2", "data": {}, "event_id": "e1"})
                    .to_string(),
            ))
            .await
            .unwrap();
        assert_eq!(next_json(&mut socket).await["event_id"], "e1");
        let ledger = get_json(format!("http://{addr}/__cp/requests?wxid=w2")).await;
        assert_eq!(ledger["requests"][0]["signature_ok"], true, "{ledger}");
        let ws = get_json(format!("http://{addr}/__cp/ws")).await;
        assert_eq!(ws["refused"], 3, "{ws}");
        stop.cancel();
    }
}
