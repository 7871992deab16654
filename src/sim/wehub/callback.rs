//! `POST /wehub/callback`: every action of spec A.3 / B answered as a stock WeHub server would,
//! with each request recorded for the test-control API.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

use super::envelope::{Envelope, ack, lenient_i64, lenient_string, refusal};
use super::mode::Mode;
use super::sign::{EVENT_ID_HEADER, SignatureCheck, login_signature};
use super::state::WehubState;
use super::store::{QrStatusEntry, RequestRecord, Store, Transport, Via, now_ms};

pub async fn callback(
    State(state): State<WehubState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let time_ms = now_ms();
    let mono_us = crate::sim::clock::mono_us();
    let (status, answer, delay_ms) = {
        let mut store = state.lock();
        let mode = store.mode.clone();
        let signature = SignatureCheck::from_headers(&headers, mode.secret.as_deref(), &body);
        let event_id = headers
            .get(EVENT_ID_HEADER)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
        let refused = signature.refused_by(&mode);
        let mut batched = false;
        let mut record = RequestRecord {
            index: 0,
            time_ms,
            transport: Transport::Http,
            mono_us,
            action: String::new(),
            appid: String::new(),
            wxid: String::new(),
            client_session: None,
            data: Value::Null,
            event_id,
            timestamp: signature.timestamp,
            signature: signature.signature,
            signature_ok: signature.ok,
            status: StatusCode::OK.as_u16(),
            duplicate: false,
            error: None,
            batch: 0,
            body_len: body.len(),
        };
        let (status, answer) = match Envelope::parse(&body) {
            Err(error) => {
                let message = error.to_string();
                record.status = StatusCode::BAD_REQUEST.as_u16();
                record.error = Some(message.clone());
                (StatusCode::BAD_REQUEST, json!({"error": message}))
            }
            Ok(mut envelope) => {
                record.action = envelope.action.clone();
                record.appid = envelope.appid.clone();
                record.wxid = envelope.wxid.clone();
                record.client_session = envelope.client_session.clone();
                let answered = if mode.down {
                    record.status = StatusCode::SERVICE_UNAVAILABLE.as_u16();
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        json!({"error": "control plane is down (mode down)"}),
                    )
                } else if refused {
                    record.status = StatusCode::UNAUTHORIZED.as_u16();
                    (
                        StatusCode::UNAUTHORIZED,
                        json!({"error": "missing or invalid request signature (mode require_signature)"}),
                    )
                } else if envelope.action == "report_batch" && mode.report_batch >= 2 {
                    match respond_batch(&mut store, &mode, &mut envelope, &record) {
                        Ok(answer) => {
                            // Each report of the batch was recorded as a request of its own.
                            batched = true;
                            (StatusCode::OK, answer)
                        }
                        Err(message) => {
                            record.status = StatusCode::BAD_REQUEST.as_u16();
                            record.error = Some(message.clone());
                            (StatusCode::BAD_REQUEST, json!({"error": message}))
                        }
                    }
                } else {
                    let (answer, duplicate) = respond(&mut store, &mode, &envelope, &record);
                    record.duplicate = duplicate;
                    (StatusCode::OK, answer)
                };
                // Moved in after the answer: `respond` reads the envelope's.
                record.data = envelope.data;
                answered
            }
        };
        tracing::debug!(
            action = %record.action,
            wxid = %record.wxid,
            status = record.status,
            "control-plane callback"
        );
        if !batched {
            store.record_request(record);
        }
        (status, answer, mode.delay_ms)
    };
    if delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    }
    (status, Json(answer)).into_response()
}

/// A `report_batch` post (wxagent's extension, offered by `mode.report_batch`): every report of
/// `data.report_list` is taken in order as if it had come alone, and recorded as a request of
/// its own; the one answer carries the reply tasks of them all. A list that cannot be read, or
/// holds more reports than offered, is refused whole (HTTP 400) with the reason, and nothing of
/// it is taken.
fn respond_batch(
    store: &mut Store,
    mode: &Mode,
    envelope: &mut Envelope,
    template: &RequestRecord,
) -> Result<Value, String> {
    let Some(Value::Array(list)) = envelope.data.get_mut("report_list") else {
        return Err("report_batch: data.report_list must be a list of reports".to_owned());
    };
    if list.len() > mode.report_batch as usize {
        return Err(format!(
            "report_batch: {} reports, more than the {} offered",
            list.len(),
            mode.report_batch
        ));
    }
    let mut reports = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let action = lenient_string(item.get("action")).unwrap_or_default();
        if !action.starts_with("report_") || action == "report_batch" {
            return Err(format!(
                "report_batch: report_list[{i}] has no report action (got {:?})",
                action
            ));
        }
        let event_id = match item.get("event_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) => Some(id.clone()),
            Some(other) => {
                return Err(format!(
                    "report_batch: report_list[{i}].event_id must be a string, got {other}"
                ));
            }
        };
        reports.push((action, event_id));
    }
    // The list is readable: its reports are taken out of the post and recorded one by one.
    let data = list
        .iter_mut()
        .map(|item| item.get_mut("data").map_or(Value::Null, Value::take));
    let count = reports.len();
    store.count_batch(&envelope.wxid);
    let mut tasks = Vec::new();
    for ((action, event_id), data) in reports.into_iter().zip(data) {
        let single = Envelope {
            action: action.clone(),
            appid: envelope.appid.clone(),
            wxid: envelope.wxid.clone(),
            client_session: envelope.client_session.clone(),
            data,
        };
        let mut record = template.clone();
        record.action = action;
        record.appid = single.appid.clone();
        record.wxid = single.wxid.clone();
        record.client_session = single.client_session.clone();
        record.event_id = event_id;
        record.batch = count;
        record.body_len = template.body_len / count.max(1);
        let (answer, duplicate) = respond(store, mode, &single, &record);
        if let Some(Value::Array(replies)) = answer["data"].get("reply_task_list") {
            tasks.extend(replies.iter().cloned());
        }
        record.duplicate = duplicate;
        record.data = single.data;
        store.record_request(record);
    }
    Ok(ack("common_ack", json!({"reply_task_list": tasks})))
}

/// The ack for one request, and whether it repeats one already seen (shared by the HTTP
/// callback and the WebSocket endpoint).
pub(crate) fn respond(
    store: &mut Store,
    mode: &Mode,
    envelope: &Envelope,
    record: &RequestRecord,
) -> (Value, bool) {
    let wxid = envelope.wxid.as_str();
    let mut duplicate = record
        .event_id
        .as_deref()
        .is_some_and(|event_id| store.seen_event(wxid, event_id));
    let answer = match envelope.action.as_str() {
        "login" => login_ack(store, mode, envelope),
        "logout" => {
            store.account_logout(wxid, lenient_string(envelope.field("reason")));
            ack(
                "logout_ack",
                json!({"exit_wehub": mode.exit_wehub, "exit_wechat": mode.exit_wechat}),
            )
        }
        "pull_task" => match store.pop_pull(wxid) {
            Some(task) => ack(
                "pull_task_ack",
                json!({"task_id": task.task_id, "task_data": task.wire()}),
            ),
            None => ack("pull_task_ack", json!({})),
        },
        action if action.starts_with("report_") => {
            match action {
                "report_task_result" => record_task_result(store, envelope),
                "report_qr_status" => record_qr_status(store, envelope),
                "report_new_msg" => {
                    duplicate |= auto_reply(store, mode, envelope, duplicate);
                }
                _ => {}
            }
            let tasks: Vec<Value> = store
                .drain_replies(wxid)
                .iter()
                .map(|task| task.wire())
                .collect();
            ack("common_ack", json!({"reply_task_list": tasks}))
        }
        // A stock WeHub ignores actions it does not know; so do we (they are still recorded).
        _ => ack("common_ack", json!({})),
    };
    (answer, duplicate)
}

fn login_ack(store: &mut Store, mode: &Mode, envelope: &Envelope) -> Value {
    if mode.refuse_login {
        return refusal(
            "login_ack",
            1,
            "login refused by the control plane (mode refuse_login)",
        );
    }
    let wxid = envelope.wxid.as_str();
    let nonce = lenient_string(envelope.field("nonce")).unwrap_or_default();
    store.account_login(
        wxid,
        lenient_string(envelope.field("nickname")),
        lenient_string(envelope.field("machine_id")),
        lenient_string(envelope.field("qr_session_id")).filter(|id| !id.is_empty()),
    );
    let mut data = json!({"option": {"flag_report_contact": mode.flag_report_contact}});
    if mode.report_batch >= 2 {
        data["option"]["report_batch"] = json!(mode.report_batch);
    }
    if !mode.no_signature {
        let secret = mode.secret.as_deref().unwrap_or("");
        let signature = if mode.wrong_signature {
            login_signature(wxid, nonce.as_str(), &format!("{secret}#not-the-secret"))
        } else {
            login_signature(wxid, &nonce, secret)
        };
        data["signature"] = Value::String(signature);
    }
    if let Some(websocket) = &mode.websocket {
        data["extension_protocol"] = json!({
            "type": "websocket",
            "param": {
                "ws_url": websocket.ws_url,
                "heartbeat_interval": websocket.heartbeat_interval,
            },
        });
    }
    ack("login_ack", data)
}

fn record_task_result(store: &mut Store, envelope: &Envelope) {
    let Some(task_id) = lenient_string(envelope.field("task_id")).filter(|id| !id.is_empty())
    else {
        return;
    };
    store.record_result(
        &task_id,
        &envelope.wxid,
        lenient_i64(envelope.field("task_result")),
        lenient_string(envelope.field("error_reason")).unwrap_or_default(),
    );
}

fn record_qr_status(store: &mut Store, envelope: &Envelope) {
    let Some(id) = lenient_string(envelope.field("qr_session_id")).filter(|id| !id.is_empty())
    else {
        return;
    };
    store.qr_status(
        &id,
        QrStatusEntry {
            status: lenient_string(envelope.field("status")).unwrap_or_default(),
            reason: lenient_string(envelope.field("reason")),
            qr_count: lenient_i64(envelope.field("qr_count")),
            machine_id: lenient_string(envelope.field("machine_id")).unwrap_or_default(),
            time_ms: now_ms(),
        },
    );
}

/// Queues the auto-reply for each matching incoming text of a `report_new_msg`. Returns true
/// when a message of this report was seen before (a retried report gets no second reply).
fn auto_reply(store: &mut Store, mode: &Mode, envelope: &Envelope, duplicate_event: bool) -> bool {
    let messages: Vec<&Value> = match envelope.field("msg") {
        Some(Value::Array(list)) => list.iter().collect(),
        Some(unit @ Value::Object(_)) => vec![unit],
        _ => Vec::new(),
    };
    let mut duplicate = false;
    for unit in messages {
        let repeated = lenient_string(unit.get("msg_id"))
            .filter(|id| !id.is_empty())
            .is_some_and(|msg_id| store.seen_message(&envelope.wxid, &msg_id));
        duplicate |= repeated;
        let Some(rule) = &mode.auto_reply else {
            continue;
        };
        if repeated || duplicate_event || lenient_i64(unit.get("msg_type")) != Some(1) {
            continue;
        }
        let from = lenient_string(unit.get("wxid_from")).unwrap_or_default();
        let text = lenient_string(unit.get("msg")).unwrap_or_default();
        // B.5: own messages are reported too; answering them would loop forever.
        if from.is_empty() || from == envelope.wxid || !text.contains(&rule.pattern) {
            continue;
        }
        let room = lenient_string(unit.get("room_wxid")).unwrap_or_default();
        let to = if room.is_empty() { from } else { room };
        let task_dict = json!({"wxid_to": to, "msg_list": [{"msg_type": 1, "msg": rule.reply}]});
        if let Err(error) = store.queue_task(&envelope.wxid, Via::Reply, 1, task_dict, true) {
            tracing::warn!(%error, "auto-reply dropped");
        }
    }
    duplicate
}
