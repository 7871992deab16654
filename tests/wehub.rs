//! The reference control plane (`wxagent::sim::wehub`) over real HTTP on 127.0.0.1:0: every
//! action's answer, the modes, uploads, signatures and the test-control API.

use std::net::SocketAddr;

use hmac::{Hmac, KeyInit, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wxagent::sim::wehub::{WehubState, serve};

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

/// A running control plane and a client for it.
struct Cp {
    base: String,
    http: reqwest::Client,
    task: Option<JoinHandle<()>>,
    shutdown: CancellationToken,
}

impl Cp {
    async fn start() -> Cp {
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("literal address");
        let (bound, task, shutdown) = serve(addr, WehubState::new())
            .await
            .expect("control plane starts");
        Cp {
            base: format!("http://{bound}"),
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("http client"),
            task: Some(task),
            shutdown,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs an envelope to the callback and returns (status, body).
    async fn call(&self, envelope: Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(self.url("/wehub/callback"))
            .json(&envelope)
            .send()
            .await
            .expect("callback request");
        let status = response.status();
        (status, response.json().await.expect("json answer"))
    }

    /// An OK answer to an action.
    async fn ack(&self, action: &str, wxid: &str, data: Value) -> Value {
        let (status, body) = self
            .call(json!({"action": action, "appid": "app", "wxid": wxid, "data": data}))
            .await;
        assert_eq!(status, StatusCode::OK, "{action}: {body}");
        body
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("control request");
        let status = response.status();
        (status, response.json().await.expect("json answer"))
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(self.url(path))
            .send()
            .await
            .expect("control request");
        let status = response.status();
        (status, response.json().await.expect("json answer"))
    }

    async fn mode(&self, patch: Value) {
        let (status, body) = self.post("/__cp/mode", patch).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    async fn queue(&self, wxid: &str, task_type: i64, task_dict: Value, via: &str) -> String {
        let (status, body) = self
            .post(
                "/__cp/tasks",
                json!({"wxid": wxid, "task_type": task_type, "task_dict": task_dict, "via": via}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["task_id"]
            .as_str()
            .expect("task id is a string")
            .to_owned()
    }

    async fn requests(&self, query: &str) -> Vec<Value> {
        let (status, body) = self.get(&format!("/__cp/requests?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["requests"].as_array().expect("requests list").clone()
    }

    /// POSTs a raw body to the upload URL with extra headers; returns (status, body).
    async fn upload_raw(
        &self,
        content_type: &str,
        body: Vec<u8>,
        headers: &[(&str, String)],
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .post(self.url("/wehub/upload"))
            .header("content-type", content_type)
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.expect("upload request");
        let status = response.status();
        (status, response.json().await.expect("json answer"))
    }

    /// A QR upload made by reqwest's own multipart encoder (as the real client does).
    async fn upload_qr(&self, session: &str, machine: &str, png: Vec<u8>) -> (StatusCode, Value) {
        let file = reqwest::multipart::Part::bytes(png)
            .file_name(format!("{session}.png"))
            .mime_str("image/png")
            .expect("valid mime");
        let form = reqwest::multipart::Form::new()
            .text("qr_session_id", session.to_owned())
            .part("file", file)
            .text("machine_id", machine.to_owned());
        let response = self
            .http
            .post(self.url("/wehub/upload"))
            .multipart(form)
            .send()
            .await
            .expect("upload request");
        let status = response.status();
        (status, response.json().await.expect("json answer"))
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("server task ends cleanly");
        }
    }
}

fn png(tag: &str) -> Vec<u8> {
    let mut bytes = PNG_MAGIC.to_vec();
    bytes.extend_from_slice(tag.as_bytes());
    bytes
}

const BOUNDARY: &str = "----wehubtestboundary7MA4YWxk";

/// A multipart/form-data body written by hand, so the test knows the exact signed bytes.
fn multipart_body(texts: &[(&str, &str)], file: Option<(&str, &str, &[u8])>) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, value) in texts {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    if let Some((file_name, content_type, bytes)) = file {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; \
                 filename=\"{file_name}\"\r\nContent-Type: {content_type}\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

fn multipart_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

/// `sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`, computed here independently.
fn b6_signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).expect("any key");
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("sha256={hex}")
}

fn reply_tasks(ack: &Value) -> Vec<Value> {
    ack["data"]["reply_task_list"]
        .as_array()
        .expect("reply_task_list present")
        .clone()
}

#[tokio::test]
async fn login_ack_carries_the_vendor_signature_vector() {
    let cp = Cp::start().await;
    cp.mode(json!({"secret": "112233"})).await;
    let ack = cp
        .ack(
            "login",
            "fangqing_hust",
            json!({"nonce": "helloworld", "nickname": "Fang", "machine_id": "host_1"}),
        )
        .await;
    assert_eq!(ack["error_code"], 0);
    assert_eq!(ack["error_reason"], "");
    assert_eq!(ack["ack_type"], "login_ack");
    assert_eq!(ack["data"]["signature"], "4b8d798f8b34a7bd2cd3b4cbfa309d9c");
    assert_eq!(ack["data"]["option"]["flag_report_contact"], 7);
    assert!(ack["data"].get("extension_protocol").is_none());

    cp.mode(json!({"flag_report_contact": 3})).await;
    let ack = cp
        .ack("login", "fangqing_hust", json!({"nonce": "other"}))
        .await;
    assert_eq!(ack["data"]["option"]["flag_report_contact"], 3);
    assert_ne!(ack["data"]["signature"], "4b8d798f8b34a7bd2cd3b4cbfa309d9c");

    let (_, accounts) = cp.get("/__cp/accounts").await;
    assert_eq!(accounts["accounts"][0]["wxid"], "fangqing_hust");
    assert_eq!(accounts["accounts"][0]["state"], "online");
    assert_eq!(accounts["accounts"][0]["logins"], 2);
    cp.stop().await;
}

#[tokio::test]
async fn login_modes_refuse_or_spoil_the_signature() {
    let cp = Cp::start().await;
    let good = "4b8d798f8b34a7bd2cd3b4cbfa309d9c";
    let login = json!({"nonce": "helloworld"});
    cp.mode(json!({"secret": "112233", "refuse_login": true}))
        .await;
    let ack = cp.ack("login", "fangqing_hust", login.clone()).await;
    assert_eq!(ack["ack_type"], "login_ack");
    assert_eq!(ack["error_code"], 1);
    assert!(!ack["error_reason"].as_str().unwrap_or_default().is_empty());
    assert!(ack["data"].get("signature").is_none());

    cp.mode(json!({"refuse_login": false, "wrong_signature": true}))
        .await;
    let ack = cp.ack("login", "fangqing_hust", login.clone()).await;
    assert_eq!(ack["error_code"], 0);
    let wrong = ack["data"]["signature"].as_str().expect("a signature");
    assert_ne!(wrong, good);
    assert_eq!(wrong.len(), 32);

    cp.mode(json!({"wrong_signature": false, "no_signature": true}))
        .await;
    let ack = cp.ack("login", "fangqing_hust", login.clone()).await;
    assert_eq!(ack["error_code"], 0);
    assert!(ack["data"].get("signature").is_none());

    cp.mode(json!({"no_signature": false, "websocket": {"ws_url": "ws://127.0.0.1:1/ws"}}))
        .await;
    let ack = cp.ack("login", "fangqing_hust", login).await;
    assert_eq!(ack["data"]["signature"], good);
    assert_eq!(
        ack["data"]["extension_protocol"],
        json!({"type": "websocket", "param": {"ws_url": "ws://127.0.0.1:1/ws", "heartbeat_interval": 30}})
    );
    cp.stop().await;
}

#[tokio::test]
async fn logout_ack_carries_the_exit_flags() {
    let cp = Cp::start().await;
    cp.ack("login", "w1", json!({"nonce": "n"})).await;
    let ack = cp
        .ack("logout", "w1", json!({"reason": "phone_logout"}))
        .await;
    assert_eq!(ack["ack_type"], "logout_ack");
    assert_eq!(ack["data"], json!({"exit_wehub": 1, "exit_wechat": 0}));

    cp.mode(json!({"exit_wehub": 0, "exit_wechat": 1})).await;
    let ack = cp.ack("logout", "w1", json!({})).await;
    assert_eq!(ack["data"], json!({"exit_wehub": 0, "exit_wechat": 1}));

    let (_, accounts) = cp.get("/__cp/accounts").await;
    assert_eq!(accounts["accounts"][0]["state"], "offline");
    cp.stop().await;
}

#[tokio::test]
async fn pull_tasks_come_in_order_per_wxid_then_nothing() {
    let cp = Cp::start().await;
    let first = cp
        .queue("", 200, json!({"qrcode_session_id": "qr-1"}), "pull")
        .await;
    let second = cp
        .queue("", 200, json!({"qrcode_session_id": "qr-2"}), "pull")
        .await;
    let for_account = cp
        .queue("w1", 6, json!({"wxid": "@a", "remark_name": "A"}), "pull")
        .await;
    assert_ne!(first, second);
    assert_ne!(second, for_account);

    let agent = json!({"machine_id": "host", "role": "agent", "sessions": 0, "capacity": 4});
    let ack = cp.ack("pull_task", "", agent.clone()).await;
    assert_eq!(ack["ack_type"], "pull_task_ack");
    assert_eq!(ack["error_code"], 0);
    assert_eq!(ack["data"]["task_id"], first.as_str());
    assert_eq!(
        ack["data"]["task_data"],
        json!({"task_type": 200, "task_dict": {"qrcode_session_id": "qr-1"}})
    );
    let ack = cp.ack("pull_task", "", agent.clone()).await;
    assert_eq!(ack["data"]["task_id"], second.as_str());
    let ack = cp.ack("pull_task", "", agent).await;
    assert_eq!(ack["data"], json!({}));

    let ack = cp.ack("pull_task", "w1", json!({})).await;
    assert_eq!(ack["data"]["task_id"], for_account.as_str());
    assert_eq!(ack["data"]["task_data"]["task_type"], 6);
    let ack = cp.ack("pull_task", "w1", json!({})).await;
    assert_eq!(ack["data"], json!({}));

    let (_, tasks) = cp.get("/__cp/tasks").await;
    let tasks = tasks["tasks"].as_array().expect("task list").clone();
    assert_eq!(tasks.len(), 3);
    assert!(tasks.iter().all(|task| task["delivered_ms"].is_u64()));
    cp.stop().await;
}

#[tokio::test]
async fn reply_tasks_are_delivered_once_in_a_common_ack() {
    let cp = Cp::start().await;
    let send = json!({"wxid_to": "@friend", "msg_list": [{"msg_type": 1, "msg": "hi"}]});
    cp.queue("w1", 1, send.clone(), "reply").await;
    cp.queue("w1", 8, json!({"room_wxid": "@@room"}), "reply")
        .await;
    cp.queue("w2", 1, send.clone(), "reply").await;

    let ack = cp
        .ack("report_contact", "w1", json!({"friend_list": []}))
        .await;
    assert_eq!(ack["ack_type"], "common_ack");
    assert_eq!(ack["error_code"], 0);
    assert_eq!(
        reply_tasks(&ack),
        vec![
            json!({"task_type": 1, "task_dict": send}),
            json!({"task_type": 8, "task_dict": {"room_wxid": "@@room"}}),
        ]
    );
    let ack = cp
        .ack("report_contact_update", "w1", json!({"update_list": []}))
        .await;
    assert!(reply_tasks(&ack).is_empty());
    // Reply tasks never travel in a pull.
    let ack = cp.ack("pull_task", "w2", json!({})).await;
    assert_eq!(ack["data"], json!({}));
    let ack = cp
        .ack("report_friend_removed", "w2", json!({"wxid_removed": "@x"}))
        .await;
    assert_eq!(reply_tasks(&ack).len(), 1);
    cp.stop().await;
}

fn text_msg(msg_id: &str, from: &str, to: &str, room: &str, text: &str) -> Value {
    json!({"msg": {
        "msg_id": msg_id, "msg_timestamp": 1_700_000_000_000u64, "msg_type": 1,
        "room_wxid": room, "wxid_from": from, "wxid_to": to, "msg": text, "atUserList": [],
    }})
}

#[tokio::test]
async fn auto_reply_answers_incoming_text_but_never_own_messages() {
    let cp = Cp::start().await;
    cp.mode(json!({"auto_reply": {"match": "ping", "reply": "pong"}}))
        .await;
    let pong_to = |to: &str| json!({"task_type": 1, "task_dict": {"wxid_to": to, "msg_list": [{"msg_type": 1, "msg": "pong"}]}});

    let ack = cp
        .ack(
            "report_new_msg",
            "1001",
            text_msg("m1", "@friend", "1001", "", "say ping please"),
        )
        .await;
    assert_eq!(reply_tasks(&ack), vec![pong_to("@friend")]);

    let ack = cp
        .ack(
            "report_new_msg",
            "1001",
            text_msg("m2", "@member", "@@room", "@@room", "ping"),
        )
        .await;
    assert_eq!(reply_tasks(&ack), vec![pong_to("@@room")]);

    // The account's own message (B.5: reported too) must not be answered.
    let ack = cp
        .ack(
            "report_new_msg",
            "1001",
            text_msg("m3", "1001", "@friend", "", "ping"),
        )
        .await;
    assert!(reply_tasks(&ack).is_empty());

    let ack = cp
        .ack(
            "report_new_msg",
            "1001",
            text_msg("m4", "@friend", "1001", "", "hello"),
        )
        .await;
    assert!(reply_tasks(&ack).is_empty());

    // msg_type as a string still counts as text (lenient reading).
    let mut lenient = text_msg("m5", "@friend", "1001", "", "ping");
    lenient["msg"]["msg_type"] = json!("1");
    let ack = cp.ack("report_new_msg", "1001", lenient).await;
    assert_eq!(reply_tasks(&ack), vec![pong_to("@friend")]);

    // A retried report of the same message gets no second reply, and is flagged.
    let ack = cp
        .ack(
            "report_new_msg",
            "1001",
            text_msg("m1", "@friend", "1001", "", "say ping please"),
        )
        .await;
    assert!(reply_tasks(&ack).is_empty());
    let records = cp.requests("action=report_new_msg").await;
    assert_eq!(records.len(), 6);
    assert_eq!(records[5]["duplicate"], true);
    assert_eq!(records[0]["duplicate"], false);

    // An image is not text.
    let image = json!({"msg": {"msg_id": "m6", "msg_type": 3, "room_wxid": "", "wxid_from": "@friend",
        "wxid_to": "1001", "file_index": "f1", "msg": "ping"}});
    let ack = cp.ack("report_new_msg", "1001", image).await;
    assert!(reply_tasks(&ack).is_empty());

    cp.mode(json!({"auto_reply": null})).await;
    let ack = cp
        .ack(
            "report_new_msg",
            "1001",
            text_msg("m7", "@friend", "1001", "", "ping"),
        )
        .await;
    assert!(reply_tasks(&ack).is_empty());
    cp.stop().await;
}

/// `report_batch` (wxagent's extension): offered in `login_ack` only with mode `report_batch`;
/// then each report of the list is taken as if it came alone (recorded one by one, in order,
/// duplicates flagged by event id, auto-replies queued), and the one answer carries every reply
/// task. A list that cannot be read, or is longer than offered, is refused whole with the
/// reason; without the offer the post is ignored, as a stock WeHub ignores an unknown action.
#[tokio::test]
async fn report_batches_are_taken_report_by_report_only_when_offered() {
    let cp = Cp::start().await;
    let item = |n: u32, text: &str| {
        let mut unit = text_msg(&format!("b{n}"), "@friend", "1001", "", text);
        json!({"action": "report_new_msg", "event_id": format!("s:{n}"), "data": unit.take()})
    };
    let batch = |items: Vec<Value>| {
        json!({"action": "report_batch", "appid": "app", "wxid": "1001",
               "data": {"report_list": items}})
    };
    // Not offered: ignored (a stock server), nothing taken.
    let login = cp
        .ack("login", "1001", json!({"nonce": "n", "nickname": "A"}))
        .await;
    assert!(
        login["data"]["option"].get("report_batch").is_none(),
        "{login}"
    );
    let (status, body) = cp.call(batch(vec![item(0, "x")])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(cp.requests("action=report_new_msg").await.is_empty());

    cp.mode(json!({"report_batch": 3, "auto_reply": {"match": "ping", "reply": "pong"}}))
        .await;
    let login = cp
        .ack("login", "1001", json!({"nonce": "n", "nickname": "A"}))
        .await;
    assert_eq!(login["data"]["option"]["report_batch"], 3, "{login}");
    let (status, ack) = cp
        .call(batch(vec![
            item(1, "ping"),
            item(2, "hello"),
            item(3, "ping"),
        ]))
        .await;
    assert_eq!(status, StatusCode::OK, "{ack}");
    assert_eq!(ack["ack_type"], "common_ack");
    assert_eq!(reply_tasks(&ack).len(), 2, "one reply per ping: {ack}");
    let records = cp.requests("action=report_new_msg").await;
    let seen: Vec<(&str, &str, u64)> = records
        .iter()
        .map(|r| {
            (
                r["event_id"].as_str().unwrap_or(""),
                r["data"]["msg"]["msg_id"].as_str().unwrap_or(""),
                r["batch"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![("s:1", "b1", 3), ("s:2", "b2", 3), ("s:3", "b3", 3)]
    );
    // Sent again (a retried batch): flagged as duplicates, no second reply.
    let (_, again) = cp.call(batch(vec![item(3, "ping")])).await;
    assert!(reply_tasks(&again).is_empty(), "{again}");
    let records = cp.requests("action=report_new_msg").await;
    assert_eq!(records.len(), 4);
    assert_eq!(records[3]["duplicate"], true);
    let (_, counts) = cp.get("/__cp/counts").await;
    // Two taken, and the one ignored before the offer (answered 200 all the same).
    assert_eq!(counts["counts"]["report_batch"]["1001"], 3, "{counts}");
    assert_eq!(counts["counts"]["report_new_msg"]["1001"], 4, "{counts}");

    // Refused whole, with the reason.
    for (bad, why) in [
        (
            batch(vec![item(4, "a"), item(5, "b"), item(6, "c"), item(7, "d")]),
            "4 reports, more than the 3 offered",
        ),
        (
            batch(vec![item(4, "a"), json!({"event_id": "s:5", "data": {}})]),
            "report_list[1] has no report action",
        ),
        (
            batch(vec![
                json!({"action": "report_new_msg", "event_id": 5, "data": {}}),
            ]),
            "report_list[0].event_id must be a string",
        ),
        (
            json!({"action": "report_batch", "wxid": "1001", "data": {"report_list": {}}}),
            "data.report_list must be a list",
        ),
    ] {
        let (status, body) = cp.call(bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let error = body["error"].as_str().unwrap_or("");
        assert!(error.contains(why), "{error}");
    }
    assert_eq!(cp.requests("action=report_new_msg").await.len(), 4);
    cp.stop().await;
}

#[tokio::test]
async fn task_results_and_qr_status_are_recorded() {
    let cp = Cp::start().await;
    let task_id = cp
        .queue("", 200, json!({"qrcode_session_id": "qr-9"}), "pull")
        .await;
    let (_, sessions) = cp.get("/__cp/qr_sessions").await;
    assert_eq!(sessions[0]["qr_session_id"], "qr-9");
    assert_eq!(sessions[0]["status"], "requested");

    let ack = cp
        .ack(
            "report_task_result",
            "",
            json!({"task_id": task_id, "task_result": "1", "error_reason": ""}),
        )
        .await;
    assert_eq!(ack["ack_type"], "common_ack");
    cp.ack(
        "report_task_result",
        "w1",
        json!({"task_id": 77, "task_result": 0, "error_reason": "no web endpoint for task 11"}),
    )
    .await;
    let (status, results) = cp.get("/__cp/task_results").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(results["results"][&task_id]["task_result"], 1);
    assert_eq!(results["results"][&task_id]["reports"], 1);
    assert_eq!(results["results"]["77"]["task_result"], 0);
    assert_eq!(results["results"]["77"]["wxid"], "w1");
    assert_eq!(
        results["results"]["77"]["error_reason"],
        "no web endpoint for task 11"
    );

    for (status, count) in [
        ("uploaded", 1),
        ("expired", 1),
        ("uploaded", 2),
        ("scanned", 2),
    ] {
        cp.ack(
            "report_qr_status",
            "",
            json!({"qr_session_id": "qr-9", "machine_id": "host_7", "status": status, "qr_count": count}),
        )
        .await;
    }
    let (_, sessions) = cp.get("/__cp/qr_sessions").await;
    let session = &sessions[0];
    assert_eq!(session["status"], "scanned");
    assert_eq!(session["machine_id"], "host_7");
    let history: Vec<&str> = session["status_history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|entry| entry["status"].as_str())
        .collect();
    assert_eq!(history, vec!["uploaded", "expired", "uploaded", "scanned"]);
    assert_eq!(session["status_history"][3]["qr_count"], 2);
    cp.stop().await;
}

#[tokio::test]
async fn qr_uploads_keep_the_latest_png_per_session_with_a_counter() {
    let cp = Cp::start().await;
    for (session, tag) in [("qr-a", "first"), ("qr-b", "other"), ("qr-a", "second")] {
        let (status, ack) = cp.upload_qr(session, "host_42", png(tag)).await;
        assert_eq!(status, StatusCode::OK, "{ack}");
        assert_eq!(ack["error_code"], 0);
        assert_eq!(ack["ack_type"], "upload_file_ack");
    }
    let (_, sessions) = cp.get("/__cp/qr_sessions").await;
    let sessions = sessions.as_array().expect("session list").clone();
    assert_eq!(sessions.len(), 2);
    let a = sessions
        .iter()
        .find(|session| session["qr_session_id"] == "qr-a")
        .expect("session qr-a");
    assert_eq!(a["uploads"], 2);
    assert_eq!(a["machine_id"], "host_42");
    assert_eq!(a["status"], "uploaded");

    let response = cp
        .http
        .get(cp.url("/__cp/qr_sessions/qr-a/png"))
        .send()
        .await
        .expect("png request");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "image/png");
    assert_eq!(
        response.bytes().await.expect("png bytes").as_ref(),
        png("second").as_slice()
    );
    let (status, error) = cp.get("/__cp/qr_sessions/qr-none/png").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(error["error"].as_str().is_some());

    let (_, uploads) = cp.get("/__cp/uploads").await;
    let uploads = uploads["uploads"].as_array().expect("upload list").clone();
    assert_eq!(uploads.len(), 3);
    assert_eq!(uploads[0]["kind"], "qr");
    assert_eq!(uploads[0]["qr_session_id"], "qr-a");
    assert_eq!(uploads[0]["file_name"], "qr-a.png");
    assert_eq!(uploads[0]["content_type"], "image/png");
    assert_eq!(uploads[0]["size"], png("first").len());
    assert!(uploads[0]["signature_ok"].is_null());
    cp.stop().await;
}

#[tokio::test]
async fn media_upload_can_be_downloaded() {
    let cp = Cp::start().await;
    let jpeg = b"\xff\xd8\xff\xe0 not really a jpeg".to_vec();
    let part = reqwest::multipart::Part::bytes(jpeg.clone())
        .file_name("m1.jpg")
        .mime_str("image/jpeg")
        .expect("valid mime");
    let form = reqwest::multipart::Form::new()
        .text("file_index", "img/m1")
        .part("file", part);
    let response = cp
        .http
        .post(cp.url("/wehub/upload"))
        .multipart(form)
        .send()
        .await
        .expect("upload");
    assert_eq!(response.status(), StatusCode::OK);
    let ack: Value = response.json().await.expect("json ack");
    assert_eq!(
        ack,
        json!({"error_code": 0, "error_reason": "", "ack_type": "upload_file_ack", "file_index": "img/m1"})
    );

    let response = cp
        .http
        .get(cp.url("/__cp/uploads/media/img/m1"))
        .send()
        .await
        .expect("download");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "image/jpeg");
    assert_eq!(
        response.bytes().await.expect("bytes").as_ref(),
        jpeg.as_slice()
    );

    let (_, uploads) = cp.get("/__cp/uploads").await;
    let record = &uploads["uploads"][0];
    assert_eq!(record["kind"], "media");
    assert_eq!(record["file_index"], "img/m1");
    assert_eq!(record["file_name"], "m1.jpg");
    assert_eq!(record["size"], jpeg.len());
    assert!(record.get("qr_session_id").is_none());

    let (status, _) = cp.get("/__cp/uploads/media/unknown").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    cp.stop().await;
}

#[tokio::test]
async fn malformed_upload_forms_name_what_is_missing() {
    let cp = Cp::start().await;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            multipart_body(
                &[("machine_id", "h")],
                Some(("x.png", "image/png", &png("x"))),
            ),
            "file_index",
        ),
        (
            multipart_body(&[("qr_session_id", "s"), ("machine_id", "h")], None),
            "\"file\"",
        ),
        (
            multipart_body(
                &[("qr_session_id", "s")],
                Some(("s.png", "image/png", &png("x"))),
            ),
            "machine_id",
        ),
        (
            multipart_body(
                &[("qr_session_id", "s"), ("machine_id", "h")],
                Some(("s.png", "image/png", b"GIF89a")),
            ),
            "png",
        ),
        (multipart_body(&[("file_index", "f")], None), "\"file\""),
    ];
    for (body, missing) in cases {
        let (status, error) = cp.upload_raw(&multipart_type(), body, &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
        let message = error["error"].as_str().expect("error message");
        assert!(message.contains(missing), "{message:?} names {missing}");
    }
    let (status, error) = cp.upload_raw("application/json", b"{}".to_vec(), &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error["error"]
            .as_str()
            .unwrap_or_default()
            .contains("multipart")
    );
    let (_, uploads) = cp.get("/__cp/uploads").await;
    assert_eq!(uploads["uploads"], json!([]));
    cp.stop().await;
}

#[tokio::test]
async fn request_signatures_are_verified() {
    let cp = Cp::start().await;
    cp.mode(json!({"secret": "s3cret"})).await;
    let body = serde_json::to_vec(&json!({"action": "report_contact", "wxid": "w1",
        "data": {"friend_list": []}}))
    .expect("json");
    let timestamp = "1700000000";
    let send = |signature: Option<String>, event: &'static str| {
        let mut request = cp
            .http
            .post(cp.url("/wehub/callback"))
            .header("content-type", "application/json")
            .header("x-wxagent-event-id", event)
            .body(body.clone());
        if let Some(signature) = signature {
            request = request
                .header("x-wxagent-timestamp", timestamp)
                .header("x-wxagent-signature", signature);
        }
        request.send()
    };
    let good = b6_signature("s3cret", timestamp, &body);
    assert_eq!(
        send(Some(good.clone()), "e1").await.expect("sent").status(),
        200
    );
    let bad = b6_signature("not-it", timestamp, &body);
    assert_eq!(send(Some(bad), "e2").await.expect("sent").status(), 200);
    assert_eq!(send(None, "e3").await.expect("sent").status(), 200);
    assert_eq!(send(Some(good), "e1").await.expect("sent").status(), 200);

    let records = cp.requests("wxid=w1").await;
    let verdicts: Vec<&Value> = records.iter().map(|r| &r["signature_ok"]).collect();
    assert_eq!(
        verdicts,
        vec![&json!(true), &json!(false), &Value::Null, &json!(true)]
    );
    assert_eq!(records[0]["event_id"], "e1");
    assert_eq!(records[0]["timestamp"], timestamp);
    assert_eq!(records[3]["duplicate"], true);
    assert_eq!(records[1]["duplicate"], false);

    // Uploads: the signature covers the exact multipart body.
    let form = multipart_body(
        &[("qr_session_id", "qr-s"), ("machine_id", "h_1")],
        Some(("qr-s.png", "image/png", &png("signed"))),
    );
    let signed = b6_signature("s3cret", timestamp, &form);
    let headers = [
        ("x-wxagent-timestamp", timestamp.to_owned()),
        ("x-wxagent-signature", signed),
    ];
    let (status, _) = cp
        .upload_raw(&multipart_type(), form.clone(), &headers)
        .await;
    assert_eq!(status, StatusCode::OK);
    let tampered_headers = [
        ("x-wxagent-timestamp", "1700000001".to_owned()),
        headers[1].clone(),
    ];
    let (status, _) = cp
        .upload_raw(&multipart_type(), form, &tampered_headers)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, uploads) = cp.get("/__cp/uploads").await;
    assert_eq!(uploads["uploads"][0]["signature_ok"], true);
    assert_eq!(uploads["uploads"][1]["signature_ok"], false);
    cp.stop().await;
}

#[tokio::test]
async fn down_mode_answers_503_and_changes_nothing() {
    let cp = Cp::start().await;
    let task_id = cp.queue("", 200, json!({}), "pull").await;
    cp.mode(json!({"down": true})).await;
    let (status, _) = cp
        .call(json!({"action": "pull_task", "wxid": "", "data": {"role": "agent"}}))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, _) = cp
        .call(json!({"action": "report_new_msg", "wxid": "w", "data": {}}))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, _) = cp.upload_qr("qr-d", "h", png("d")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    let failed = cp.requests("status=503").await;
    assert_eq!(failed.len(), 2);
    let (_, sessions) = cp.get("/__cp/qr_sessions").await;
    assert_eq!(sessions, json!([]));

    cp.mode(json!({"down": false})).await;
    let ack = cp.ack("pull_task", "", json!({"role": "agent"})).await;
    assert_eq!(ack["data"]["task_id"], task_id.as_str());
    cp.stop().await;
}

#[tokio::test]
async fn delay_mode_adds_latency() {
    let cp = Cp::start().await;
    cp.mode(json!({"delay_ms": 300})).await;
    let started = std::time::Instant::now();
    cp.ack("report_contact", "w", json!({})).await;
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
    cp.stop().await;
}

#[tokio::test]
async fn envelopes_are_read_leniently() {
    let cp = Cp::start().await;
    cp.mode(json!({"secret": "112233"})).await;
    // wxid as a number, data missing, numbers as strings.
    let (status, ack) = cp
        .call(json!({"action": "login", "appid": 5, "wxid": 1234567}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ack["ack_type"], "login_ack");
    assert_eq!(ack["data"]["signature"].as_str().map(str::len), Some(32));
    let (status, ack) = cp
        .call(json!({"action": "report_contact", "wxid": "w", "data": null}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ack["ack_type"], "common_ack");
    let (status, ack) = cp
        .call(json!({"action": "heartbeat_or_anything", "wxid": "w", "data": {}}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ack["ack_type"], "common_ack");
    assert_eq!(ack["error_code"], 0);

    let records = cp.requests("").await;
    assert_eq!(records[0]["wxid"], "1234567");
    assert_eq!(records[0]["appid"], "5");
    assert_eq!(records[0]["data"], json!({}));
    assert_eq!(records[2]["action"], "heartbeat_or_anything");

    // Not JSON at all: 400, and still recorded.
    let response = cp
        .http
        .post(cp.url("/wehub/callback"))
        .body("not json")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let records = cp.requests("status=400").await;
    assert_eq!(records.len(), 1);
    assert!(
        records[0]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("not json")
    );
    cp.stop().await;
}

#[tokio::test]
async fn requests_can_be_filtered_and_reset() {
    let cp = Cp::start().await;
    cp.ack("report_contact", "a", json!({})).await;
    cp.ack("report_new_msg", "a", json!({})).await;
    cp.ack("report_contact", "b", json!({})).await;
    assert_eq!(cp.requests("action=report_contact").await.len(), 2);
    assert_eq!(cp.requests("wxid=a").await.len(), 2);
    assert_eq!(cp.requests("action=report_contact&wxid=b").await.len(), 1);
    let (_, all) = cp.get("/__cp/requests").await;
    let next = all["next"].as_u64().expect("next index");
    assert_eq!(next, 3);
    let since_one = cp.requests("since=1").await;
    assert_eq!(since_one.len(), 2);
    assert_eq!(since_one[0]["index"], 1);
    assert!(cp.requests(&format!("since={next}")).await.is_empty());
    let (status, error) = cp.get("/__cp/requests?since=x").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error["error"]
            .as_str()
            .unwrap_or_default()
            .contains("since")
    );

    cp.mode(json!({"secret": "kept"})).await;
    cp.queue("a", 1, json!({}), "reply").await;
    let (status, _) = cp.post("/__cp/reset", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert!(cp.requests("").await.is_empty());
    let ack = cp.ack("report_contact", "a", json!({})).await;
    assert!(reply_tasks(&ack).is_empty());
    let (_, mode) = cp.get("/__cp/mode").await;
    assert_eq!(mode["secret"], "kept");
    cp.stop().await;
}

#[tokio::test]
async fn control_api_rejects_bad_input_with_json_errors() {
    let cp = Cp::start().await;
    let bad_tasks = [
        json!({"task_type": 1}),
        json!({"wxid": "w"}),
        json!({"wxid": "w", "task_type": -1}),
        json!({"wxid": "w", "task_type": 1, "task_dict": []}),
        json!({"wxid": "w", "task_type": 1, "via": "push"}),
    ];
    for body in bad_tasks {
        let (status, error) = cp.post("/__cp/tasks", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(error["error"].is_string(), "{body}");
    }
    for body in [json!({"nope": true}), json!({"exit_wehub": 5}), json!([1])] {
        let (status, error) = cp.post("/__cp/mode", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(error["error"].is_string(), "{body}");
    }
    let (_, mode) = cp.get("/__cp/mode").await;
    assert_eq!(mode["exit_wehub"], 1);
    assert_eq!(mode["flag_report_contact"], 7);
    assert_eq!(mode["down"], false);
    cp.stop().await;
}

#[tokio::test]
async fn page_shows_the_qr_image_of_a_waiting_session() {
    let cp = Cp::start().await;
    cp.upload_qr("qr-wait", "host_1", png("w")).await;
    cp.upload_qr("qr-done", "host_1", png("d")).await;
    cp.queue("", 200, json!({"qrcode_session_id": "qr-new"}), "pull")
        .await;
    cp.ack(
        "login",
        "9001",
        json!({"nonce": "n", "qr_session_id": "qr-done"}),
    )
    .await;

    let response = cp.http.get(cp.url("/cp/")).send().await.expect("page");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/html")
    );
    let html = response.text().await.expect("html");
    assert!(
        html.contains("<img src=\"/__cp/qr_sessions/qr-wait/png\""),
        "{html}"
    );
    assert!(!html.contains("/__cp/qr_sessions/qr-done/png"), "{html}");
    assert!(html.contains("qr-new"), "{html}");
    assert!(
        html.contains("http-equiv=\"refresh\" content=\"2\""),
        "{html}"
    );
    assert!(
        !html.contains("<script src") && !html.contains("<link"),
        "{html}"
    );
    let (_, sessions) = cp.get("/__cp/qr_sessions").await;
    let done = sessions
        .as_array()
        .expect("sessions")
        .iter()
        .find(|session| session["qr_session_id"] == "qr-done")
        .cloned()
        .expect("qr-done listed");
    assert_eq!(done["wxid"], "9001");
    cp.stop().await;
}
