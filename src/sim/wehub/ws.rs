//! `GET /wehub/ws`: the WebSocket mode of spec A.8, server side. After `login_ack` offered it
//! (mode `websocket`), a client sends the same request envelopes as text frames; each is
//! recorded in the same ledger as `POST /wehub/callback` (with `transport: "websocket"`) and
//! answered with the same ack frame, plus the frame's own `event_id` echoed at the top level so
//! the client can match the answer to its request (mode `ws_no_echo` leaves it out, as a stock
//! server would). Frames are read as they come, so a client may send several before the first
//! is answered; answers go out in the order of the frames, each `delay_ms` after its frame
//! arrived (as over HTTP), and `max_unanswered` on the connection shows how many frames were
//! ever waiting for their answers at once — whether the client really sent ahead. Tasks are pushed at any time: a queued pull
//! task goes out alone as a `pull_task_ack` frame (a `report_task_result` is due), queued reply
//! tasks together as a `common_ack` frame without an `event_id`.
//!
//! A connection belongs to the wxid of its first frame that names one (clients send a
//! heartbeat right after connecting). `{"action":"heartbeat"}` (or the vendor's `atcion`) is
//! counted on the connection, not in the ledger, and answered `heartbeat_ack`.
//!
//! Signing (B.6, extended): the upgrade is a GET without a body, so its signature covers
//! `timestamp + "." + <path and query of the request>`. With mode `require_signature` an
//! unsigned or wrongly signed upgrade is refused with 401; the frames of an accepted connection
//! carry its verdict in `signature_ok`. Mode `ws_refuse` refuses every upgrade with 403 (and
//! `down` with 503) so a client's fallback to HTTP can be tested. `POST /__cp/ws/close` drops
//! open connections without a close frame, as a broken network would.

use std::collections::VecDeque;

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::callback::respond;
use super::envelope::{Envelope, ack, lenient_string};
use super::sign::SignatureCheck;
use super::state::WehubState;
use super::store::{RequestRecord, Store, Transport, now_ms};

/// Connection records kept for `/__cp/ws` (oldest closed ones dropped first).
pub const MAX_CONNECTION_RECORDS: usize = 10_000;
/// Largest frame a client may send (the same bound as a callback body).
const MAX_FRAME: usize = super::store::MAX_CALLBACK_BODY;

/// What the server sends on one connection.
#[derive(Debug)]
pub enum Outgoing {
    Frame(Value),
    /// Drop the connection without a close frame.
    Drop,
}

/// One WebSocket connection, open or closed (`/__cp/ws`).
#[derive(Debug, Serialize)]
pub struct Connection {
    pub id: u64,
    /// Learnt from the first frame that names one.
    pub wxid: Option<String>,
    pub opened_ms: u64,
    pub closed_ms: Option<u64>,
    /// `dropped` (by `/__cp/ws/close`), `client` (closed or broken by the client).
    pub closed_by: Option<&'static str>,
    /// The B.6 verdict of the upgrade request (see [`SignatureCheck::ok`]).
    pub signature_ok: Option<bool>,
    /// Request frames recorded in the ledger.
    pub frames: u64,
    pub heartbeats: u64,
    pub last_heartbeat_ms: Option<u64>,
    /// Frames the server pushed unasked (tasks).
    pub pushed: u64,
    /// The most request frames received and not yet answered at one time (1 for a client that
    /// waits for each answer; more for one that sends ahead, seen when `delay_ms` holds the
    /// answers back).
    pub max_unanswered: u64,
    #[serde(skip)]
    tx: Option<mpsc::UnboundedSender<Outgoing>>,
}

/// The connections and refusals of the WebSocket endpoint; lives in the [`Store`].
#[derive(Debug, Default, Serialize)]
pub struct Registry {
    /// Upgrades refused (403 `ws_refuse`, 503 `down`, 401 signature).
    pub refused: u64,
    pub connections: VecDeque<Connection>,
    #[serde(skip)]
    next_id: u64,
}

impl Registry {
    fn open(&mut self, signature_ok: Option<bool>, tx: mpsc::UnboundedSender<Outgoing>) -> u64 {
        self.next_id += 1;
        self.connections.push_back(Connection {
            id: self.next_id,
            wxid: None,
            opened_ms: now_ms(),
            closed_ms: None,
            closed_by: None,
            signature_ok,
            frames: 0,
            heartbeats: 0,
            last_heartbeat_ms: None,
            pushed: 0,
            max_unanswered: 0,
            tx: Some(tx),
        });
        while self.connections.len() > MAX_CONNECTION_RECORDS {
            match self.connections.iter().position(|c| c.tx.is_none()) {
                Some(oldest_closed) => {
                    self.connections.remove(oldest_closed);
                }
                None => break,
            }
        }
        self.next_id
    }

    fn get(&mut self, id: u64) -> Option<&mut Connection> {
        self.connections.iter_mut().find(|c| c.id == id)
    }

    fn closed(&mut self, id: u64, by: &'static str) {
        if let Some(c) = self.get(id) {
            c.tx = None;
            c.closed_ms = Some(now_ms());
            c.closed_by.get_or_insert(by);
        }
    }

    /// The newest open connection of `wxid`.
    fn open_for(&mut self, wxid: &str) -> Option<&mut Connection> {
        self.connections
            .iter_mut()
            .rev()
            .find(|c| c.tx.is_some() && c.wxid.as_deref() == Some(wxid))
    }

    /// Drops the open connections (of `wxid`, or all); returns how many.
    pub fn drop_open(&mut self, wxid: Option<&str>) -> usize {
        let mut dropped = 0;
        for c in self.connections.iter_mut().filter(|c| c.tx.is_some()) {
            if wxid.is_some_and(|w| c.wxid.as_deref() != Some(w)) {
                continue;
            }
            if let Some(tx) = c.tx.take() {
                let _ = tx.send(Outgoing::Drop);
            }
            c.closed_ms = Some(now_ms());
            c.closed_by = Some("dropped");
            dropped += 1;
        }
        dropped
    }
}

/// Pushes what is queued for `wxid` over its open connection, if it has one: each pull task in
/// its own `pull_task_ack`, the reply tasks together in one `common_ack`. Returns whether a
/// connection took them.
pub fn push_queued(store: &mut Store, wxid: &str) -> bool {
    if wxid.is_empty() || store.ws.open_for(wxid).is_none() {
        return false;
    }
    let mut frames = Vec::new();
    while let Some(task) = store.pop_pull(wxid) {
        frames.push(ack(
            "pull_task_ack",
            json!({"task_id": task.task_id, "task_data": task.wire()}),
        ));
    }
    let replies: Vec<Value> = store.drain_replies(wxid).iter().map(|t| t.wire()).collect();
    if !replies.is_empty() {
        frames.push(ack("common_ack", json!({"reply_task_list": replies})));
    }
    let Some(connection) = store.ws.open_for(wxid) else {
        return false;
    };
    for frame in frames {
        connection.pushed += 1;
        if let Some(tx) = &connection.tx {
            let _ = tx.send(Outgoing::Frame(frame));
        }
    }
    true
}

pub async fn upgrade(
    State(state): State<WehubState>,
    headers: HeaderMap,
    uri: Uri,
    upgrade: WebSocketUpgrade,
) -> Response {
    let mode = state.mode();
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let signature =
        SignatureCheck::from_headers(&headers, mode.secret.as_deref(), target.as_bytes());
    let refusal = if mode.down {
        Some((
            StatusCode::SERVICE_UNAVAILABLE,
            "control plane is down (mode down)",
        ))
    } else if mode.ws_refuse {
        Some((StatusCode::FORBIDDEN, "websocket refused (mode ws_refuse)"))
    } else if signature.refused_by(&mode) {
        Some((
            StatusCode::UNAUTHORIZED,
            "missing or invalid request signature (mode require_signature)",
        ))
    } else {
        None
    };
    if let Some((status, why)) = refusal {
        state.lock().ws.refused += 1;
        tracing::debug!(status = status.as_u16(), "control-plane websocket refused");
        return (status, axum::Json(json!({"error": why}))).into_response();
    }
    upgrade
        .max_message_size(MAX_FRAME)
        .on_upgrade(move |socket| connection(state, socket, signature.ok))
}

async fn connection(state: WehubState, socket: WebSocket, signature_ok: Option<bool>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let id = state.lock().ws.open(signature_ok, tx);
    tracing::debug!(id, "control-plane websocket open");
    let (mut sink, mut stream) = socket.split();
    // Answers held back by `delay_ms`, in frame order, each with when it is due.
    let mut held: VecDeque<(tokio::time::Instant, Value)> = VecDeque::new();
    // Answers written but not flushed: flushed once no frame is waiting to be read, so a
    // client that sends ahead gets its answers in few writes.
    let mut unflushed = false;
    let closed_by = loop {
        let due = held.front().map(|(at, _)| *at);
        tokio::select! {
            biased;
            () = until(due) => {
                if let Some((_, answer)) = held.pop_front()
                    && sink.send(Message::Text(answer.to_string().into())).await.is_err()
                {
                    break "client";
                }
            }
            out = rx.recv() => match out {
                Some(Outgoing::Frame(frame)) => {
                    if sink.send(Message::Text(frame.to_string().into())).await.is_err() {
                        break "client";
                    }
                }
                Some(Outgoing::Drop) | None => break "dropped",
            },
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    let (answer, delay_ms) = frame(&state, id, text.as_str(), held.len() as u64);
                    // Heartbeats are answered at once; other answers keep the frames' order.
                    if delay_ms.is_none() || (delay_ms == Some(0) && held.is_empty()) {
                        if sink.feed(Message::Text(answer.to_string().into())).await.is_err() {
                            break "client";
                        }
                        unflushed = true;
                    } else {
                        let wait = std::time::Duration::from_millis(delay_ms.unwrap_or(0));
                        let at = tokio::time::Instant::now() + wait;
                        held.push_back((at, answer));
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    let answer = json!({"error_code": 1, "error_reason": "binary frames are not envelopes", "ack_type": "common_ack", "data": {}});
                    if sink.send(Message::Text(answer.to_string().into())).await.is_err() {
                        break "client";
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break "client",
                // Pings are answered by the library.
                Some(Ok(_)) => {}
            },
            // Last: reached only when nothing above is ready.
            () = std::future::ready(()), if unflushed => {
                unflushed = false;
                if sink.flush().await.is_err() {
                    break "client";
                }
            }
        }
    };
    state.lock().ws.closed(id, closed_by);
    tracing::debug!(id, closed_by, "control-plane websocket closed");
}

async fn until(due: Option<tokio::time::Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Handles one text frame, with `held` earlier answers not yet sent; returns the answer frame
/// and how long to hold it back (the mode's `delay_ms`; `None`: a heartbeat, answered at once).
fn frame(state: &WehubState, id: u64, text: &str, held: u64) -> (Value, Option<u64>) {
    // Read once: the id, then the envelope (a frame is parsed outside the store's lock).
    let parsed = if text.bytes().all(|b| b.is_ascii_whitespace()) {
        Err(super::envelope::EnvelopeError::Empty)
    } else {
        serde_json::from_str::<Value>(text)
            .map_err(|e| super::envelope::EnvelopeError::NotJson(e.to_string()))
    };
    let event_id = parsed
        .as_ref()
        .ok()
        .and_then(|v| lenient_string(v.get("event_id")));
    let parsed = parsed.and_then(Envelope::from_value);
    let mut store = state.lock();
    let (echo, delay_ms) = (!store.mode.ws_no_echo, Some(store.mode.delay_ms));
    let event_id = event_id.filter(|_| echo);
    let mut envelope = match parsed {
        Ok(envelope) => envelope,
        Err(error) => {
            let mut answer = json!({"error_code": 1, "error_reason": error.to_string(), "ack_type": "common_ack", "data": {}});
            if let Some(event_id) = event_id {
                answer["event_id"] = Value::String(event_id);
            }
            return (answer, delay_ms);
        }
    };
    let signature_ok = {
        let Some(connection) = store.ws.get(id) else {
            return (ack("common_ack", json!({})), delay_ms);
        };
        if connection.wxid.is_none() && !envelope.wxid.is_empty() {
            connection.wxid = Some(envelope.wxid.clone());
        }
        connection.signature_ok
    };
    let heartbeat = envelope.action == "heartbeat";
    let mut answer = if heartbeat {
        if let Some(connection) = store.ws.get(id) {
            connection.heartbeats += 1;
            connection.last_heartbeat_ms = Some(now_ms());
        }
        ack("heartbeat_ack", json!({}))
    } else {
        if let Some(connection) = store.ws.get(id) {
            connection.frames += 1;
            connection.max_unanswered = connection.max_unanswered.max(held + 1);
        }
        let mode = store.mode.clone();
        let mut record = RequestRecord {
            index: 0,
            time_ms: now_ms(),
            transport: Transport::Websocket,
            mono_us: crate::sim::clock::mono_us(),
            action: envelope.action.clone(),
            appid: envelope.appid.clone(),
            wxid: envelope.wxid.clone(),
            client_session: envelope.client_session.clone(),
            // Moved in after the answer: `respond` reads the envelope's.
            data: Value::Null,
            event_id: event_id.clone(),
            timestamp: None,
            signature: None,
            signature_ok,
            status: StatusCode::OK.as_u16(),
            duplicate: false,
            error: None,
            batch: 0,
            body_len: text.len(),
        };
        let (answer, duplicate) = respond(&mut store, &mode, &envelope, &record);
        record.duplicate = duplicate;
        record.data = std::mem::take(&mut envelope.data);
        tracing::debug!(action = %record.action, wxid = %record.wxid, "control-plane websocket frame");
        store.record_request(record);
        answer
    };
    // Whatever waits for this account goes out now that its connection is known.
    push_queued(&mut store, &envelope.wxid);
    if let Some(event_id) = event_id {
        answer["event_id"] = Value::String(event_id);
    }
    (answer, delay_ms.filter(|_| !heartbeat))
}
