//! The sync pair: `synccheck` (the long poll that reports a selector when data newer than the
//! presented key exists) and `webwxsync` (delivers up to a batch of events and a new SyncKey),
//! spec §3.9, §3.10, §10.4.

use std::sync::Arc;
use std::time::Duration;

use axum::http::header;
use axum::response::Response;
use serde_json::{Value, json};

use super::faults::OpenPoll;
use super::http::{self, Auth, Req, as_u64, auth_any, auth_cookies, cookie_domains, get_ci};
use super::state::{EventKind, Life, Session, Sim};

fn synccheck_body(retcode: u32, selector: u32) -> Response {
    http::js_resp(format!(
        "window.synccheck={{retcode:\"{retcode}\",selector:\"{selector}\"}}"
    ))
}

/// Key 1 of a `k_v|k_v` synckey string (malformed items are skipped).
fn key1_of_query(s: &str) -> Option<u64> {
    s.split('|')
        .filter_map(|kv| kv.split_once('_'))
        .find(|(k, _)| k.trim() == "1")
        .and_then(|(_, v)| v.trim().parse().ok())
}

/// Key 1 of a `{"Count":…,"List":[{"Key":…,"Val":…}]}` object.
fn key1_of_json(v: &Value) -> Option<u64> {
    get_ci(v, "List")?
        .as_array()?
        .iter()
        .find(|item| get_ci(item, "Key").and_then(as_u64) == Some(1))
        .and_then(|item| get_ci(item, "Val").and_then(as_u64))
}

/// How many events from the client's position the selector looks at.
const SELECTOR_SCAN: usize = 200;

/// `GET synccheck?…&synckey=…`: cookies required (1102 without). Answers at once when something
/// newer than the presented key exists, else holds until something arrives or `hold` passes.
pub(crate) async fn synccheck(sim: &Sim, req: &Req) -> Response {
    let session = match auth_cookies(sim, req) {
        Auth::Live(s) => s,
        Auth::Dead(code) => return synccheck_body(code, 0),
        Auth::Missing => return synccheck_body(1102, 0),
    };
    let key1 = req.param("synckey").and_then(key1_of_query);
    let _open = OpenPoll::new(&sim.stats.open_synccheck);
    let hold = sim.config().hold;
    wait_for_data(sim, &session, key1, hold).await
}

async fn wait_for_data(
    sim: &Sim,
    session: &Arc<Session>,
    key1: Option<u64>,
    hold: Duration,
) -> Response {
    // Subscribe before looking, so an event pushed in between still wakes us.
    let mut rx = session.wake.subscribe();
    let deadline = tokio::time::Instant::now() + hold;
    loop {
        {
            let g = session.lock();
            if let Life::Dead { retcode, .. } = g.life {
                return synccheck_body(retcode, 0);
            }
            let pos = session.position_of(key1, g.log.end());
            let sel = g.log.selector_after(pos, SELECTOR_SCAN);
            if sel != 0 {
                return synccheck_body(0, sel);
            }
        }
        tokio::select! {
            _ = sim.shutdown.cancelled() => return synccheck_body(0, 0),
            r = tokio::time::timeout_at(deadline, rx.changed()) => match r {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return synccheck_body(0, 0),
            },
        }
    }
}

fn empty_sync(ret: u32) -> Value {
    json!({
        "BaseResponse": http::base_response(ret as i64, ""),
        "AddMsgCount": 0, "AddMsgList": [],
        "ModContactCount": 0, "ModContactList": [],
        "DelContactCount": 0, "DelContactList": [],
        "ModChatRoomMemberCount": 0, "ModChatRoomMemberList": [],
        "Profile": profile(),
        "ContinueFlag": 0,
        "SyncKey": {"Count": 0, "List": []},
        "SKey": "",
        "SyncCheckKey": {"Count": 0, "List": []},
    })
}

fn profile() -> Value {
    json!({
        "BitFlag": 0,
        "UserName": {"Buff": ""},
        "NickName": {"Buff": ""},
        "BindUin": 0,
        "BindEmail": {"Buff": ""},
        "BindMobile": {"Buff": ""},
        "Status": 0,
        "Sex": 0,
        "PersonalCard": 0,
        "Alias": "",
        "HeadImgUpdateFlag": 0,
        "HeadImgUrl": "",
        "Signature": "",
    })
}

/// `POST webwxsync` with `{"BaseRequest","SyncKey"}`: events after the presented key, at most
/// `sync_batch`, with `ContinueFlag` 1 when more remain.
pub(crate) fn webwxsync(sim: &Sim, req: &Req) -> Response {
    let body = req.json();
    let session = match auth_any(sim, req, body.as_ref()) {
        Auth::Live(s) => s,
        Auth::Dead(code) => return http::json_resp(&empty_sync(http::json_ret_for(code))),
        Auth::Missing => return http::json_resp(&empty_sync(1101)),
    };
    let key1 = body
        .as_ref()
        .and_then(|b| get_ci(b, "SyncKey"))
        .and_then(key1_of_json);
    let batch = sim.config().sync_batch.max(1);
    let (events, next, more) = {
        let g = session.lock();
        if let Life::Dead { retcode, .. } = g.life {
            drop(g);
            return http::json_resp(&empty_sync(http::json_ret_for(retcode)));
        }
        let pos = session.position_of(key1, g.log.end());
        g.log.batch(pos, batch)
    };
    let mut add = Vec::new();
    let mut modc = Vec::new();
    let mut del = Vec::new();
    for ev in events {
        match ev.kind {
            EventKind::Message { .. } => add.push(ev.body),
            EventKind::ContactAdded | EventKind::ContactChanged => modc.push(ev.body),
            EventKind::ContactDeleted => del.push(ev.body),
        }
    }
    let key = session.sync_key(next, true);
    let v = json!({
        "BaseResponse": http::base_response(0, ""),
        "AddMsgCount": add.len(), "AddMsgList": add,
        "ModContactCount": modc.len(), "ModContactList": modc,
        "DelContactCount": del.len(), "DelContactList": del,
        "ModChatRoomMemberCount": 0, "ModChatRoomMemberList": [],
        "Profile": profile(),
        "ContinueFlag": u32::from(more),
        "SyncKey": key,
        "SKey": "",
        "SyncCheckKey": key,
    });
    let mut r = http::json_resp(&v);
    // The real server re-sends the session cookies on every webwxsync.
    let (domain, data_domain) = cookie_domains(&req.host());
    const HALF_DAY: u64 = 12 * 3600;
    for c in [
        http::set_cookie(
            "wxuin",
            &session.uin.to_string(),
            domain.as_deref(),
            HALF_DAY,
        ),
        http::set_cookie("wxsid", &session.sid, domain.as_deref(), HALF_DAY),
        http::set_cookie(
            "webwx_data_ticket",
            &session.data_ticket,
            data_domain.as_deref(),
            HALF_DAY,
        ),
    ] {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synckey_parsing() {
        assert_eq!(key1_of_query("1_100|2_200|3_5|1000_7"), Some(100));
        assert_eq!(key1_of_query("2_200|1_100||"), Some(100));
        assert_eq!(key1_of_query("garbage"), None);
        assert_eq!(
            key1_of_json(
                &json!({"Count": 2, "List": [{"Key": 2, "Val": 5}, {"Key": 1, "Val": "9"}]})
            ),
            Some(9)
        );
    }

    #[test]
    fn empty_sync_counts_match_lists() {
        let v = empty_sync(1101);
        assert_eq!(v["BaseResponse"]["Ret"], 1101);
        assert_eq!(v["AddMsgCount"], 0);
        assert!(v["SyncCheckKey"].is_object());
    }
}
