//! The test-control API under `/__cp/`: queue tasks, switch behaviour, read back what the client
//! sent. JSON in and out; every error is 4xx `{"error": "..."}`.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::envelope::{lenient_i64, lenient_string};
use super::state::WehubState;
use super::store::{MAX_QUEUED_PER_WXID, Via};

/// A 4xx answer with `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    fn not_found(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"error": self.message}))).into_response()
    }
}

fn json_object(body: &Bytes, what: &str) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(ApiError::bad_request(format!(
            "{what} must be a json object"
        ))),
        Err(error) => Err(ApiError::bad_request(format!(
            "{what} is not json: {error}"
        ))),
    }
}

/// `POST /__cp/tasks` `{"wxid", "task_type", "task_dict"?, "via"?: "pull"|"reply"}` →
/// `{"task_id", "pushed"}`. When the wxid has an open WebSocket (spec A.8) the task is pushed
/// over it at once (`pushed: true`); otherwise it waits for `pull_task` or the next ack.
pub async fn queue_task(
    State(state): State<WehubState>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let request = json_object(&body, "task")?;
    let wxid = lenient_string(request.get("wxid"))
        .ok_or_else(|| ApiError::bad_request("missing wxid (use \"\" for the agent)"))?;
    let task_type = lenient_i64(request.get("task_type"))
        .filter(|task_type| *task_type >= 0)
        .ok_or_else(|| ApiError::bad_request("missing or invalid task_type (a number >= 0)"))?;
    let task_dict = match request.get("task_dict") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(dict @ Value::Object(_)) => dict.clone(),
        Some(_) => return Err(ApiError::bad_request("task_dict must be a json object")),
    };
    let via = match request.get("via") {
        None | Some(Value::Null) => Via::Pull,
        Some(Value::String(via)) if via == "pull" => Via::Pull,
        Some(Value::String(via)) if via == "reply" => Via::Reply,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "via must be \"pull\" or \"reply\", got {other}"
            )));
        }
    };
    let mut store = state.lock();
    let task_id = store
        .queue_task(&wxid, via, task_type, task_dict, false)
        .map_err(|error| ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: format!("{error} (cap {MAX_QUEUED_PER_WXID})"),
        })?;
    let pushed = super::ws::push_queued(&mut store, &wxid);
    Ok(Json(json!({"task_id": task_id, "pushed": pushed})))
}

/// `GET /__cp/ws` → `{"refused": N, "connections": [...]}` (WebSocket connections, oldest
/// first, with their wxid, frame and heartbeat counts).
pub async fn websockets(State(state): State<WehubState>) -> Json<Value> {
    let store = state.lock();
    Json(json!(store.ws))
}

/// `POST /__cp/ws/close` `{"wxid"?}` → `{"dropped": N}`: drops the open WebSocket connections
/// (of that wxid, or all) without a close frame.
pub async fn close_websockets(
    State(state): State<WehubState>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let request = json_object(&body, "close request")?;
    let wxid = lenient_string(request.get("wxid"));
    let dropped = state.lock().ws.drop_open(wxid.as_deref());
    Ok(Json(json!({"dropped": dropped})))
}

/// `GET /__cp/tasks` → `{"tasks": [...]}` (bookkeeping of every task issued, oldest first).
pub async fn list_tasks(State(state): State<WehubState>) -> Json<Value> {
    let store = state.lock();
    Json(json!({"tasks": store.tasks()}))
}

/// `GET /__cp/requests?action=&wxid=&since=&status=` → `{"requests": [...], "next": N}`;
/// `since` is inclusive, `next` is the index the next request will get.
pub async fn requests(
    State(state): State<WehubState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let mut action = None;
    let mut wxid = None;
    let mut since = 0u64;
    let mut status = None;
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "action" => action = Some(value.into_owned()),
            "wxid" => wxid = Some(value.into_owned()),
            "since" => {
                since = value.parse().map_err(|_| {
                    ApiError::bad_request(format!("since must be a request index, got {value:?}"))
                })?;
            }
            "status" => {
                status = Some(value.parse::<u16>().map_err(|_| {
                    ApiError::bad_request(format!("status must be an http status, got {value:?}"))
                })?);
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?}"
                )));
            }
        }
    }
    let store = state.lock();
    let records: Vec<_> = store
        .requests()
        .filter(|record| record.index >= since)
        .filter(|record| {
            action
                .as_deref()
                .is_none_or(|action| record.action == action)
        })
        .filter(|record| wxid.as_deref().is_none_or(|wxid| record.wxid == wxid))
        .filter(|record| status.is_none_or(|status| record.status == status))
        .collect();
    Ok(Json(
        json!({"requests": records, "next": store.next_request_index()}),
    ))
}

/// `GET /__cp/task_results` → `{"results": {"<task_id>": {...}}}`.
pub async fn task_results(State(state): State<WehubState>) -> Json<Value> {
    let store = state.lock();
    Json(json!({"results": store.results()}))
}

/// `GET /__cp/uploads` → `{"uploads": [...]}` (oldest first).
pub async fn uploads(State(state): State<WehubState>) -> Json<Value> {
    let store = state.lock();
    let uploads: Vec<_> = store.uploads().collect();
    Json(json!({"uploads": uploads}))
}

/// `GET /__cp/uploads/media/<file_index>` → the stored bytes with their content type.
pub async fn media(
    State(state): State<WehubState>,
    Path(file_index): Path<String>,
) -> Result<Response, ApiError> {
    let store = state.lock();
    let file = store
        .media(&file_index)
        .ok_or_else(|| ApiError::not_found(format!("no media uploaded as {file_index:?}")))?;
    let content_type = file
        .content_type
        .clone()
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    Ok(([(header::CONTENT_TYPE, content_type)], file.bytes.clone()).into_response())
}

/// `GET /__cp/qr_sessions` → `[{...}]` (oldest first).
pub async fn qr_sessions(State(state): State<WehubState>) -> Json<Value> {
    let store = state.lock();
    Json(json!(store.qr_sessions()))
}

/// `GET /__cp/qr_sessions/<id>/png` → the latest PNG of that session.
pub async fn qr_png(
    State(state): State<WehubState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let png = state
        .lock()
        .qr_png(&id)
        .ok_or_else(|| ApiError::not_found(format!("no qr code uploaded for session {id:?}")))?;
    // The same URL serves each new code of the session; a browser must not keep an old one.
    Ok((
        [
            (header::CONTENT_TYPE, "image/png"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        png,
    )
        .into_response())
}

/// `GET /__cp/accounts` → `{"accounts": [...]}` (logins and logouts seen, by wxid).
pub async fn accounts(State(state): State<WehubState>) -> Json<Value> {
    let store = state.lock();
    Json(json!({"accounts": store.accounts()}))
}

/// `GET /__cp/mode` → the mode.
pub async fn get_mode(State(state): State<WehubState>) -> Json<Value> {
    Json(json!(state.mode()))
}

/// `POST /__cp/mode` with any subset of the mode's fields → the merged mode.
pub async fn set_mode(
    State(state): State<WehubState>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let patch = json_object(&body, "mode")?;
    let mut store = state.lock();
    let merged = store
        .mode
        .merged(&Value::Object(patch))
        .map_err(ApiError::bad_request)?;
    tracing::debug!(mode = ?merged, "control-plane mode changed");
    store.mode = merged.clone();
    Ok(Json(json!(merged)))
}

/// `POST /__cp/reset` → `{}`: forgets records and queued tasks (the mode stays).
pub async fn reset(State(state): State<WehubState>) -> Json<Value> {
    state.lock().reset();
    Json(json!({}))
}

/// `GET /__cp/msg_times?since=N` → `{"msgs": [{"msg_id", "wxid", "us", "index"}], "next"}`: the
/// message units of every accepted (200, not duplicate) `report_new_msg` from request index
/// `since` on, each with its arrival on the simulator's monotonic clock. Compact on purpose:
/// `wxagent bench` reads tens of thousands of them.
pub async fn msg_times(
    State(state): State<WehubState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let mut since = 0u64;
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "since" => {
                since = value.parse().map_err(|_| {
                    ApiError::bad_request(format!("since must be a request index, got {value:?}"))
                })?;
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?}"
                )));
            }
        }
    }
    let store = state.lock();
    let mut msgs = Vec::new();
    for record in store.requests_from(since).filter(|record| {
        record.action == "report_new_msg" && record.status == 200 && !record.duplicate
    }) {
        let units: Vec<&Value> = match record.data.get("msg") {
            Some(Value::Array(list)) => list.iter().collect(),
            Some(unit) => vec![unit],
            None => Vec::new(),
        };
        for unit in units {
            let Some(msg_id) = lenient_string(unit.get("msg_id")) else {
                continue;
            };
            msgs.push(json!({
                "msg_id": msg_id,
                "wxid": record.wxid,
                "us": record.mono_us,
                "index": record.index,
            }));
        }
    }
    Ok(Json(
        json!({"msgs": msgs, "next": store.next_request_index()}),
    ))
}

/// `GET /__cp/clock` → `{"mono_us"}`: now on the simulator's monotonic clock.
pub async fn clock() -> Json<Value> {
    Json(json!({"mono_us": crate::sim::clock::mono_us()}))
}

/// `GET /__cp/counts` → `{"counts": {"<action>": {"<wxid>": n}}}`: accepted (200) callback
/// requests per action and wxid since the last reset, including those the bounded request
/// ledger has already dropped (`wxagent bench` waits on these).
pub async fn counts(State(state): State<WehubState>) -> Json<Value> {
    let store = state.lock();
    Json(json!({"counts": store.counts()}))
}
