//! The test-control API under `/__sim/`: accounts, the phone side of QR logins, sessions (inject,
//! contact changes, kick, rate limit, outbox), faults, configuration and statistics. JSON in and
//! out (unknown fields are refused); errors are 4xx with `{"error": "<what was wrong>"}`.
//!
//! - `POST /accounts` `{"nickname", "uin"?, "alias"?, "sex"?, "signature"?, "friends"?: [{"nickname",
//!   "remark"?, "sex"?, "alias"?, "province"?, "city"?, "signature"?}], "friend_count"?, "groups"?:
//!   [{"name", "members"?: [nick], "extra_members"?, "owner"?: "self"|nick, "display_names"?:
//!   {nick: name}, "self_display_name"?, "saved"?: true}], "group_count"?, "group_size"?,
//!   "stranger_members"? (the generated groups hold strangers, not friends),
//!   "officials"?: [{"nickname", "verify_flag"?: 8|24, "signature"?}], "web_forbidden"?,
//!   "desktop_forbidden"?}` → `{"uin", "nickname", "user_name"}` (409 when the uin exists).
//!   `GET /accounts` → `{"accounts": [{"uin", "nickname", "user_name"}]}`.
//! - `GET /accounts/<uin>` → `{"uin", "nickname", "user_name", "web_forbidden",
//!   "desktop_forbidden", "logins", "contacts": [{"user_name", "nickname", "kind":
//!   "self|friend|stranger|official|special|group", "remark", "pinned", "verify_flag", groups also
//!   "owner", "saved", "members": [{"user_name", "nickname", "display_name"}]}]}`.
//! - `GET /qr` → `{"pending": [{"uuid", "state": "waiting|scanned|confirmed|expired", "desktop",
//!   "push_uin", "created_ms"}]}`; a uuid drops out once a poll delivered its 200 or 400.
//! - `POST /qr/<uuid>/scan` `{"uin"}`, `/confirm`, `/cancel`, `/expire` → `{"uuid", "state"}`
//!   (404 unknown uuid or account, 409 wrong state; form posts redirect to `/l/<uuid>`).
//! - `GET /sessions` → `[{"uin", "nickname", "user_name", "alive", "retcode"}]` (retcode 0 alive).
//! - `POST /sessions/<uin>/inject` (see `inject.rs`) → `{"msg_id", "new_msg_id", "msg_type",
//!   "from_user_name", "to_user_name", "content"}` plus `"media_id"` for files and `"ticket"`,
//!   `"user_name"` for friend requests (409 without a live session), and `"injected_us"`: when
//!   it was queued, on the process's monotonic clock (`clock.rs`, shared with `/__cp/`).
//! - `POST /sessions/<uin>/burst` `{"count", "from", "text"?}` → `{"first_us", "last_us",
//!   "msg_ids"}`: `count` (at most 100,000) texts from `from` queued back to back, for
//!   throughput measurements; each text is `text` (default "burst") plus its number.
//! - `POST /sessions/<uin>/contacts` `{"op": "add_friend", "nickname", "sex"?, "remark"?}` |
//!   `{"op": "remove_friend", "target"}` | `{"op": "rename", "target", "nickname"?, "remark"?}` |
//!   `{"op": "add_member"|"remove_member", "group", "member"}` | `{"op": "remove_group", "group"}`
//!   → `{"user_name", "group"?}`.
//! - `POST /sessions/<uin>/kick` `{"retcode"?: 1100|1101|1102|1205}` → `{"uin", "retcode"}`;
//!   `POST /sessions/<uin>/rate_limit` `{"on"}` → `{"uin", "rate_limited"}`.
//! - `GET|DELETE /sessions/<uin>/outbox` → `{"messages": [{"endpoint", "msg_type", "from", "to",
//!   "to_nickname", "content", "media_id", "msg_id", "local_id", "time_ms", "detail"?}]}`.
//! - `POST /faults` `{"route", "http500"?, "drop"?, "malformed"?, "latency_ms"?}`, `DELETE /faults`,
//!   `GET /faults` → `{"faults": {route: spec}}`.
//! - `POST|GET /config` `{"hold_ms"?, "qr_ttl_ms"?, "echo_sent"?, "contact_page_size"?,
//!   "sync_batch"?, "revoke_window_ms"?}` → the whole configuration.
//! - `GET /stats` → `{"requests": {route: n}, "faults_injected": {"http500", "drop", "malformed",
//!   "latency"}, "open_long_polls", "open_login_polls", "sessions_alive", "accounts"}`.
//! - `GET /credentials` → `{"credentials": [{"kind": "ticket|wxsid|skey|pass_ticket|
//!   webwx_data_ticket|webwx_auth_ticket|webwxuvid", "value"}]}`: every credential handed to a client so
//!   far, so a test can check that none of them shows up in a log.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::accounts::{self, AccountInner, AccountSpec, Contact, Kind, Member};
use super::contacts::{push_del_contact, push_mod_contact, push_system};
use super::faults::FaultRequest;
use super::inject::{self, InjectError, InjectSpec};
use super::login::{self, PhoneAction, PhoneError};
use super::state::{DeathReason, EventKind, Life, Sim};

/// A test-control error: status plus a message naming what was wrong.
#[derive(Debug)]
pub(crate) struct ApiError(StatusCode, String);

impl ApiError {
    fn bad(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::BAD_REQUEST, msg.into())
    }
    fn not_found(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::NOT_FOUND, msg.into())
    }
    fn conflict(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::CONFLICT, msg.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({"error": self.1}))).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

fn ok(v: Value) -> ApiResult {
    Ok(axum::Json(v).into_response())
}

/// Parses a JSON body; an empty body counts as `{}`.
fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let slice: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(slice).map_err(|e| ApiError::bad(format!("bad request body: {e}")))
}

fn parse_uin(s: &str) -> Result<u64, ApiError> {
    s.parse()
        .map_err(|_| ApiError::bad(format!("{s:?} is not a uin")))
}

fn account(sim: &Sim, uin: &str) -> Result<Arc<accounts::Account>, ApiError> {
    let uin = parse_uin(uin)?;
    sim.account(uin)
        .ok_or_else(|| ApiError::not_found(format!("unknown account {uin}")))
}

fn lock(a: &accounts::Account) -> std::sync::MutexGuard<'_, AccountInner> {
    a.inner.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn router() -> Router<Arc<Sim>> {
    Router::new()
        .route("/accounts", post(create_account).get(list_accounts))
        .route("/accounts/{uin}", get(get_account))
        .route("/qr", get(list_qr))
        .route("/qr/{uuid}/{action}", post(qr_action))
        .route("/sessions", get(list_sessions))
        .route("/sessions/{uin}/inject", post(inject_message))
        .route("/sessions/{uin}/burst", post(burst))
        .route("/sessions/{uin}/contacts", post(contacts_op))
        .route("/sessions/{uin}/kick", post(kick))
        .route("/sessions/{uin}/rate_limit", post(rate_limit))
        .route("/sessions/{uin}/outbox", get(outbox).delete(clear_outbox))
        .route(
            "/faults",
            post(set_faults).delete(clear_faults).get(get_faults),
        )
        .route("/config", post(set_config).get(get_config))
        .route("/stats", get(stats))
        .route("/credentials", get(credentials))
        .fallback(|| async { ApiError::not_found("no such test-control endpoint") })
}

async fn create_account(State(sim): State<Arc<Sim>>, body: Bytes) -> ApiResult {
    let spec: AccountSpec = parse(&body)?;
    let inner = accounts::build_account(&spec).map_err(ApiError::bad)?;
    let user_name = inner.me.clone();
    let uin = sim
        .add_account(spec.uin, inner)
        .ok_or_else(|| ApiError::conflict("uin already exists"))?;
    ok(json!({"uin": uin, "nickname": spec.nickname, "user_name": user_name}))
}

async fn list_accounts(State(sim): State<Arc<Sim>>) -> ApiResult {
    let list: Vec<Value> = sim
        .all_accounts()
        .iter()
        .map(|a| {
            let g = lock(a);
            json!({"uin": a.uin, "nickname": g.nickname, "user_name": g.me})
        })
        .collect();
    ok(json!({"accounts": list}))
}

async fn get_account(State(sim): State<Arc<Sim>>, Path(uin): Path<String>) -> ApiResult {
    let a = account(&sim, &uin)?;
    let v = lock(&a).view(a.uin);
    ok(v)
}

async fn list_qr(State(sim): State<Arc<Sim>>) -> ApiResult {
    let pending: Vec<Value> = sim
        .all_qrs()
        .iter()
        .filter_map(|q| {
            let g = q.lock();
            (!g.finished).then(|| {
                json!({
                    "uuid": q.uuid,
                    "state": g.state.label(),
                    "desktop": q.desktop,
                    "push_uin": q.push_uin,
                    "created_ms": q.created_ms,
                })
            })
        })
        .collect();
    ok(json!({"pending": pending}))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ScanBody {
    uin: Option<Value>,
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

/// `POST /__sim/qr/<uuid>/scan|confirm|cancel|expire`. Form posts (from the phone page) are
/// redirected back to the page.
async fn qr_action(
    State(sim): State<Arc<Sim>>,
    Path((uuid, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let form = is_form(&headers);
    let action = match action.as_str() {
        "scan" => {
            let uin = if form {
                url::form_urlencoded::parse(&body)
                    .find(|(k, _)| k == "uin")
                    .map(|(_, v)| Value::String(v.into_owned()))
            } else {
                parse::<ScanBody>(&body)?.uin
            };
            let uin = uin
                .as_ref()
                .and_then(super::http::as_u64)
                .ok_or_else(|| ApiError::bad("uin is required"))?;
            PhoneAction::Scan(uin)
        }
        "confirm" => PhoneAction::Confirm,
        "cancel" => PhoneAction::Cancel,
        "expire" => PhoneAction::Expire,
        other => return Err(ApiError::not_found(format!("unknown QR action {other:?}"))),
    };
    let state = login::phone(&sim, &uuid, action).map_err(|e| match e {
        PhoneError::UnknownUuid => ApiError::not_found(format!("unknown uuid {uuid:?}")),
        PhoneError::UnknownAccount => ApiError::not_found("unknown account"),
        PhoneError::WrongState(s) => ApiError::conflict(format!("QR is {s}")),
    })?;
    if form {
        return Ok(Redirect::to(&format!("/l/{uuid}")).into_response());
    }
    ok(json!({"uuid": uuid, "state": &*state}))
}

async fn list_sessions(State(sim): State<Arc<Sim>>) -> ApiResult {
    let list: Vec<Value> = sim
        .all_accounts()
        .iter()
        .filter_map(|a| {
            let g = lock(a);
            let s = g.session.as_ref()?;
            let (alive, retcode) = match s.life() {
                Life::Alive => (true, 0),
                Life::Dead { retcode, .. } => (false, retcode),
            };
            Some(json!({
                "uin": a.uin,
                "nickname": g.nickname,
                "user_name": g.me,
                "alive": alive,
                "retcode": retcode,
            }))
        })
        .collect();
    ok(Value::Array(list))
}

async fn inject_message(
    State(sim): State<Arc<Sim>>,
    Path(uin): Path<String>,
    body: Bytes,
) -> ApiResult {
    let spec: InjectSpec = parse(&body)?;
    let a = account(&sim, &uin)?;
    let mut g = lock(&a);
    // Stamped before the message is queued, so a report can never seem to precede it.
    let injected_us = super::clock::mono_us();
    match inject::inject(&sim, &mut g, &spec) {
        Ok(mut v) => {
            v["injected_us"] = json!(injected_us);
            ok(v)
        }
        Err(InjectError::NotFound(m)) => Err(ApiError::not_found(m)),
        Err(InjectError::Bad(m)) if m.contains("no live session") => Err(ApiError::conflict(m)),
        Err(InjectError::Bad(m)) => Err(ApiError::bad(m)),
    }
}

/// Largest burst one request may queue: the session's event log, so that a burst cannot push
/// its own first messages out before a client could fetch them.
const MAX_BURST: usize = super::state::EVENT_LOG_CAP;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BurstBody {
    count: usize,
    from: String,
    text: Option<String>,
}

/// `POST /__sim/sessions/<uin>/burst`: many texts queued under one lock, so the measurement is of
/// the client and not of one HTTP request per message.
async fn burst(State(sim): State<Arc<Sim>>, Path(uin): Path<String>, body: Bytes) -> ApiResult {
    let body: BurstBody = parse(&body)?;
    if body.count == 0 || body.count > MAX_BURST {
        return Err(ApiError::bad(format!(
            "count must be 1..={MAX_BURST} (the events a session keeps), got {}",
            body.count
        )));
    }
    let a = account(&sim, &uin)?;
    let mut g = lock(&a);
    let prefix = body.text.as_deref().unwrap_or("burst");
    let first_us = super::clock::mono_us();
    let mut msg_ids = Vec::with_capacity(body.count);
    for n in 1..=body.count {
        let spec = InjectSpec {
            kind: "text".into(),
            from: Some(body.from.clone()),
            text: Some(format!("{prefix} {n}")),
            ..InjectSpec::default()
        };
        match inject::inject(&sim, &mut g, &spec) {
            Ok(v) => msg_ids.push(v["msg_id"].clone()),
            Err(InjectError::NotFound(m)) => return Err(ApiError::not_found(m)),
            Err(InjectError::Bad(m)) if m.contains("no live session") => {
                return Err(ApiError::conflict(m));
            }
            Err(InjectError::Bad(m)) => return Err(ApiError::bad(m)),
        }
    }
    let last_us = super::clock::mono_us();
    ok(json!({"first_us": first_us, "last_us": last_us, "msg_ids": msg_ids}))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ContactOp {
    op: String,
    /// The contact to act on (nickname or UserName).
    target: Option<String>,
    nickname: Option<String>,
    remark: Option<String>,
    group: Option<String>,
    member: Option<String>,
    #[serde(default)]
    sex: u32,
}

fn find_group(g: &AccountInner, name: Option<&str>) -> Result<String, ApiError> {
    let name = name.ok_or_else(|| ApiError::bad("group is required"))?;
    g.book
        .find(name)
        .filter(|c| c.is_group())
        .map(|c| c.user_name.clone())
        .ok_or_else(|| ApiError::not_found(format!("unknown group {name:?}")))
}

/// `POST /__sim/sessions/<uin>/contacts`: contact-book changes made elsewhere (on the phone, by
/// other people), delivered through webwxsync when a session is alive.
async fn contacts_op(
    State(sim): State<Arc<Sim>>,
    Path(uin): Path<String>,
    body: Bytes,
) -> ApiResult {
    let op: ContactOp = parse(&body)?;
    let a = account(&sim, &uin)?;
    let mut g = lock(&a);
    match op.op.as_str() {
        "add_friend" => {
            let nick = op
                .nickname
                .clone()
                .ok_or_else(|| ApiError::bad("nickname is required"))?;
            let existing = g
                .book
                .find(&nick)
                .filter(|c| matches!(c.kind, Kind::Stranger))
                .map(|c| c.user_name.clone());
            let user_name = match existing {
                Some(u) => {
                    if let Some(c) = g.book.get_mut(&u) {
                        c.kind = Kind::Friend;
                    }
                    u
                }
                None => {
                    let mut c = Contact::person(&nick, Kind::Friend);
                    c.sex = op.sex;
                    c.remark = op.remark.clone().unwrap_or_default();
                    g.book.insert(c)
                }
            };
            push_mod_contact(&g, &user_name, EventKind::ContactAdded);
            ok(json!({"user_name": user_name}))
        }
        "remove_friend" => {
            let t = op
                .target
                .as_deref()
                .ok_or_else(|| ApiError::bad("target is required"))?;
            let user_name = g
                .book
                .find(t)
                .filter(|c| matches!(c.kind, Kind::Friend | Kind::Official))
                .map(|c| c.user_name.clone())
                .ok_or_else(|| ApiError::not_found(format!("no friend {t:?}")))?;
            let in_group = g.book.iter().any(|c| {
                c.group_data()
                    .is_some_and(|gd| gd.members.iter().any(|m| m.user_name == user_name))
            });
            if in_group {
                if let Some(c) = g.book.get_mut(&user_name) {
                    c.kind = Kind::Stranger;
                }
            } else {
                g.book.remove(&user_name);
            }
            push_del_contact(&g, &user_name);
            ok(json!({"user_name": user_name}))
        }
        "rename" => {
            let t = op
                .target
                .as_deref()
                .ok_or_else(|| ApiError::bad("target is required"))?;
            let user_name = g
                .book
                .find(t)
                .map(|c| c.user_name.clone())
                .ok_or_else(|| ApiError::not_found(format!("unknown contact {t:?}")))?;
            let is_group = {
                let c = g
                    .book
                    .get_mut(&user_name)
                    .ok_or_else(|| ApiError::not_found("contact vanished"))?;
                if let Some(n) = &op.nickname {
                    c.nickname = n.clone();
                }
                if let Some(r) = &op.remark {
                    c.remark = r.clone();
                }
                c.is_group()
            };
            push_mod_contact(&g, &user_name, EventKind::ContactChanged);
            if is_group && let Some(n) = &op.nickname {
                push_system(&sim, &g, &user_name, &format!("群名已修改为“{n}”"));
            }
            ok(json!({"user_name": user_name}))
        }
        "add_member" => {
            let group = find_group(&g, op.group.as_deref())?;
            let nick = op
                .member
                .clone()
                .ok_or_else(|| ApiError::bad("member is required"))?;
            let user_name = match g
                .book
                .find(&nick)
                .filter(|c| matches!(c.kind, Kind::Friend | Kind::Stranger))
            {
                Some(c) => c.user_name.clone(),
                None => g.book.insert(Contact::person(&nick, Kind::Stranger)),
            };
            if let Some(gd) = g.book.get_mut(&group).and_then(Contact::group_data_mut) {
                if gd.members.iter().any(|m| m.user_name == user_name) {
                    return Err(ApiError::conflict(format!("{nick:?} is already a member")));
                }
                gd.members.push(Member {
                    user_name: user_name.clone(),
                    display_name: String::new(),
                });
            }
            push_mod_contact(&g, &group, EventKind::ContactChanged);
            push_system(&sim, &g, &group, &format!("\"{nick}\"加入了群聊"));
            ok(json!({"user_name": user_name, "group": group}))
        }
        "remove_member" => {
            let group = find_group(&g, op.group.as_deref())?;
            let who = op
                .member
                .clone()
                .ok_or_else(|| ApiError::bad("member is required"))?;
            let me = g.me.clone();
            let user_name = {
                let gd = g
                    .book
                    .get(&group)
                    .and_then(Contact::group_data)
                    .ok_or_else(|| ApiError::not_found("group vanished"))?;
                if who == "self" {
                    me.clone()
                } else {
                    g.book
                        .find_member(gd, &who)
                        .map(|m| m.user_name.clone())
                        .ok_or_else(|| ApiError::not_found(format!("{who:?} is not a member")))?
                }
            };
            let nick = g.book.nickname_of(&user_name);
            if let Some(gd) = g.book.get_mut(&group).and_then(Contact::group_data_mut) {
                gd.members.retain(|m| m.user_name != user_name);
                if gd.owner == user_name {
                    gd.owner.clear();
                }
            }
            push_mod_contact(&g, &group, EventKind::ContactChanged);
            let notice = if user_name == me {
                "你被移出群聊".to_string()
            } else {
                format!("\"{nick}\"被移出了群聊")
            };
            push_system(&sim, &g, &group, &notice);
            ok(json!({"user_name": user_name, "group": group}))
        }
        "remove_group" => {
            let group = find_group(&g, op.group.as_deref().or(op.target.as_deref()))?;
            g.book.remove(&group);
            push_del_contact(&g, &group);
            ok(json!({"user_name": group}))
        }
        other => Err(ApiError::bad(format!("unknown op {other:?}"))),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct KickBody {
    retcode: Option<u32>,
}

async fn kick(State(sim): State<Arc<Sim>>, Path(uin): Path<String>, body: Bytes) -> ApiResult {
    let k: KickBody = parse(&body)?;
    let retcode = k.retcode.unwrap_or(1101);
    if ![1100, 1101, 1102, 1205].contains(&retcode) {
        return Err(ApiError::bad(
            "retcode must be one of 1100, 1101, 1102, 1205",
        ));
    }
    let a = account(&sim, &uin)?;
    let s = lock(&a)
        .session
        .clone()
        .filter(|s| s.is_alive())
        .ok_or_else(|| ApiError::conflict("account has no live session"))?;
    s.kill(retcode, DeathReason::Kicked);
    ok(json!({"uin": a.uin, "retcode": retcode}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitBody {
    on: bool,
}

async fn rate_limit(
    State(sim): State<Arc<Sim>>,
    Path(uin): Path<String>,
    body: Bytes,
) -> ApiResult {
    let r: RateLimitBody = parse(&body)?;
    let a = account(&sim, &uin)?;
    let s = lock(&a)
        .session
        .clone()
        .filter(|s| s.is_alive())
        .ok_or_else(|| ApiError::conflict("account has no live session"))?;
    s.lock().rate_limited = r.on;
    ok(json!({"uin": a.uin, "rate_limited": r.on}))
}

async fn outbox(State(sim): State<Arc<Sim>>, Path(uin): Path<String>) -> ApiResult {
    let a = account(&sim, &uin)?;
    let messages: Vec<Value> = lock(&a)
        .outbox
        .iter()
        .map(|e| serde_json::to_value(e).unwrap_or(Value::Null))
        .collect();
    ok(json!({"messages": messages}))
}

async fn clear_outbox(State(sim): State<Arc<Sim>>, Path(uin): Path<String>) -> ApiResult {
    let a = account(&sim, &uin)?;
    lock(&a).outbox.clear();
    ok(json!({"messages": []}))
}

async fn set_faults(State(sim): State<Arc<Sim>>, body: Bytes) -> ApiResult {
    let f: FaultRequest = parse(&body)?;
    f.spec.validate().map_err(ApiError::bad)?;
    if f.route.is_empty() {
        return Err(ApiError::bad("route must not be empty"));
    }
    let mut g = sim.faults.write().unwrap_or_else(|p| p.into_inner());
    g.routes.insert(f.route.to_ascii_lowercase(), f.spec);
    ok(g.to_json())
}

async fn clear_faults(State(sim): State<Arc<Sim>>) -> ApiResult {
    let mut g = sim.faults.write().unwrap_or_else(|p| p.into_inner());
    g.routes.clear();
    ok(g.to_json())
}

async fn get_faults(State(sim): State<Arc<Sim>>) -> ApiResult {
    let g = sim.faults.read().unwrap_or_else(|p| p.into_inner());
    ok(g.to_json())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ConfigBody {
    hold_ms: Option<u64>,
    qr_ttl_ms: Option<u64>,
    echo_sent: Option<bool>,
    contact_page_size: Option<usize>,
    sync_batch: Option<usize>,
    revoke_window_ms: Option<u64>,
}

async fn set_config(State(sim): State<Arc<Sim>>, body: Bytes) -> ApiResult {
    let c: ConfigBody = parse(&body)?;
    if c.contact_page_size == Some(0) || c.sync_batch == Some(0) {
        return Err(ApiError::bad(
            "contact_page_size and sync_batch must be positive",
        ));
    }
    if c.hold_ms.is_some_and(|h| h > 600_000) {
        return Err(ApiError::bad("hold_ms must be at most 600000"));
    }
    let cfg = sim.update_config(|cfg| {
        if let Some(v) = c.hold_ms {
            cfg.hold = Duration::from_millis(v);
        }
        if let Some(v) = c.qr_ttl_ms {
            cfg.qr_ttl = Duration::from_millis(v);
        }
        if let Some(v) = c.echo_sent {
            cfg.echo_sent = v;
        }
        if let Some(v) = c.contact_page_size {
            cfg.contact_page_size = v;
        }
        if let Some(v) = c.sync_batch {
            cfg.sync_batch = v;
        }
        if let Some(v) = c.revoke_window_ms {
            cfg.revoke_window = Duration::from_millis(v);
        }
    });
    ok(cfg.to_json())
}

async fn get_config(State(sim): State<Arc<Sim>>) -> ApiResult {
    ok(sim.config().to_json())
}

async fn credentials(State(sim): State<Arc<Sim>>) -> ApiResult {
    let list: Vec<Value> = sim
        .issued()
        .into_iter()
        .map(|(kind, value)| json!({"kind": kind, "value": value}))
        .collect();
    ok(json!({"credentials": list}))
}

async fn stats(State(sim): State<Arc<Sim>>) -> ApiResult {
    let accounts = sim.all_accounts().len();
    ok(sim.stats.to_json(sim.sessions_alive(), accounts))
}
