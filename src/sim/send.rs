//! Sending: webwxsendmsg and the media sends (routed by endpoint, never by `Msg.Type`),
//! webwxrevokemsg with its 2-minute rule, and webwxlogout (spec §3.11, §3.13, §3.15, §3.19).

use std::time::Instant;

use axum::response::IntoResponse as _;
use axum::response::Response;
use serde_json::{Value, json};

use super::accounts::{AccountInner, MsgMeta, OutboxEntry, SentRecord};
use super::assets;
use super::contacts::ret_resp;
use super::content::{self, Message};
use super::http::{self, Auth, Req, auth_any, get_ci, json_session, str_field};
use super::ids;
use super::media::Blob;
use super::state::{DeathReason, Sim};

/// Which send endpoint was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendKind {
    Text,
    Image,
    Video,
    App,
    Emoticon,
}

impl SendKind {
    fn endpoint(self) -> &'static str {
        match self {
            SendKind::Text => "webwxsendmsg",
            SendKind::Image => "webwxsendmsgimg",
            SendKind::Video => "webwxsendvideomsg",
            SendKind::App => "webwxsendappmsg",
            SendKind::Emoticon => "webwxsendemoticon",
        }
    }

    /// The MsgType the message has once sent.
    fn msg_type(self) -> u32 {
        match self {
            SendKind::Text => 1,
            SendKind::Image => 3,
            SendKind::Video => 43,
            SendKind::App => 49,
            SendKind::Emoticon => 47,
        }
    }
}

fn send_reply(ret: i64, msg: &str, msg_id: &str, local_id: &str) -> Response {
    http::json_resp(&json!({
        "BaseResponse": http::base_response(ret, msg),
        "MsgID": msg_id,
        "LocalID": local_id,
    }))
}

/// Checks a recipient: groups must exist (1201 otherwise), people must be known.
fn check_recipient(a: &AccountInner, to: &str) -> Result<(), (i64, &'static str)> {
    match a.book.get(to) {
        Some(_) => Ok(()),
        None if to.starts_with("@@") => Err((1201, "chat room does not exist")),
        None => Err((1, "unknown ToUserName")),
    }
}

/// Pulls `<attachid>` and `<title>` out of an appmsg XML.
fn xml_tag(xml: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    xml.find(&open)
        .and_then(|i| {
            let rest = &xml[i + open.len()..];
            rest.find(&close).map(|j| rest[..j].to_string())
        })
        .unwrap_or_default()
}

/// All send endpoints: `{"BaseRequest","Msg":{…},"Scene":0}` → `MsgID` + `LocalID` strings.
pub(crate) fn send(sim: &Sim, req: &Req, kind: SendKind) -> Response {
    let (session, account, body) = match json_session(sim, req) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let msg = get_ci(&body, "Msg").cloned().unwrap_or(Value::Null);
    let local_id = {
        let l = str_field(&msg, "LocalID");
        if l.is_empty() {
            str_field(&msg, "ClientMsgId")
        } else {
            l
        }
    };
    if session.lock().rate_limited {
        return send_reply(1205, "operate too often", "", &local_id);
    }
    if !msg.is_object() {
        return send_reply(1, "missing Msg", "", &local_id);
    }
    let to = str_field(&msg, "ToUserName");
    let text = str_field(&msg, "Content");
    let media_id = str_field(&msg, "MediaId");
    let emoji_md5 = str_field(&msg, "EMoticonMd5");
    let client_type = get_ci(&msg, "Type").and_then(http::as_u64).unwrap_or(0);

    let mut a = account.inner.lock().unwrap_or_else(|p| p.into_inner());
    if let Err((ret, why)) = check_recipient(&a, &to) {
        return send_reply(ret, why, "", &local_id);
    }
    let known_media = !media_id.is_empty() && a.media.media(&media_id).is_some();
    match kind {
        SendKind::Image | SendKind::Video if !known_media => {
            return send_reply(1, "unknown MediaId", "", &local_id);
        }
        SendKind::Emoticon if !known_media && emoji_md5.is_empty() => {
            return send_reply(1, "need MediaId or EMoticonMd5", "", &local_id);
        }
        _ => {}
    }
    let id = sim.msg_ids.next();
    a.sent.insert(
        id,
        SentRecord {
            at: Instant::now(),
            to: to.clone(),
        },
    );
    let me = a.me.clone();
    a.messages.insert(
        id,
        MsgMeta {
            chat: to.clone(),
            sender: me.clone(),
            group: to.starts_with("@@"),
        },
    );
    let to_nickname = a.book.nickname_of(&to);
    a.record(OutboxEntry {
        endpoint: kind.endpoint().into(),
        msg_type: kind.msg_type(),
        from: str_field(&msg, "FromUserName"),
        to: to.clone(),
        to_nickname,
        content: text.clone(),
        media_id: if media_id.is_empty() {
            emoji_md5.clone()
        } else {
            media_id.clone()
        },
        msg_id: id.to_string(),
        local_id: local_id.clone(),
        time_ms: ids::unix_ms_now(),
        detail: json!({"Type": client_type, "Scene": get_ci(&body, "Scene").cloned().unwrap_or(Value::Null)}),
    });
    if sim.config().echo_sent {
        let wire = if kind == SendKind::Text {
            content::text_content(&text)
        } else {
            content::escape_content(&text)
        };
        let mut m = Message::new(id, &me, &to, kind.msg_type(), wire);
        match kind {
            SendKind::Image => {
                m.img_status = 2;
                if let Some(b) = a.media.media(&media_id).cloned() {
                    a.media.put_msg(id, b);
                }
            }
            SendKind::Video => {
                if let Some(b) = a.media.media(&media_id).cloned() {
                    a.media.put_msg(id, b);
                }
            }
            SendKind::Emoticon => {
                a.media
                    .put_msg(id, Blob::bytes("image/gif", "emoji.gif", assets::gif()));
            }
            SendKind::App => {
                m.app_msg_type = client_type as u32;
                m.file_name = xml_tag(&text, "title");
                m.file_size = xml_tag(&text, "totallen");
                m.media_id = xml_tag(&text, "attachid");
            }
            SendKind::Text => {}
        }
        session.push_message(&m);
    }
    drop(a);
    send_reply(0, "", &id.to_string(), &local_id)
}

/// `POST webwxrevokemsg`: Ret 0 within the revoke window (2 minutes by default), Ret -1 after it,
/// for a message this account never sent, or for a `ToUserName` it was not sent to.
pub(crate) fn revoke(sim: &Sim, req: &Req) -> Response {
    let (session, account, body) = match json_session(sim, req) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let svr = get_ci(&body, "SvrMsgId").and_then(http::as_u64);
    let to = str_field(&body, "ToUserName");
    let window = sim.config().revoke_window;
    let mut a = account.inner.lock().unwrap_or_else(|p| p.into_inner());
    let fresh = svr
        .and_then(|id| a.sent.get(id).cloned())
        .is_some_and(|r| r.at.elapsed() <= window && (to.is_empty() || r.to == to));
    let to_nickname = a.book.nickname_of(&to);
    let me = a.me.clone();
    a.record(OutboxEntry {
        endpoint: "webwxrevokemsg".into(),
        msg_type: 10002,
        from: me,
        to: to.clone(),
        to_nickname,
        content: String::new(),
        media_id: String::new(),
        msg_id: svr.map(|s| s.to_string()).unwrap_or_default(),
        local_id: str_field(&body, "ClientMsgId"),
        time_ms: ids::unix_ms_now(),
        detail: json!({"accepted": fresh}),
    });
    if !fresh {
        return http::json_resp(&json!({
            "BaseResponse": http::base_response(-1, ""),
            "Introduction": "",
            "SysWording": "",
        }));
    }
    if sim.config().echo_sent
        && let Some(id) = svr
    {
        let xml = content::revoke_xml(&to, id, "你");
        let m = Message::new(
            sim.msg_ids.next(),
            &a.me,
            &to,
            10002,
            content::escape_content(&xml),
        );
        session.push_message(&m);
    }
    drop(a);
    http::json_resp(&json!({
        "BaseResponse": http::base_response(0, ""),
        "Introduction": "你可以撤回2分钟内发送的消息（部分旧版本微信不支持这个功能）。",
        "SysWording": "已撤回",
    }))
}

/// `GET|POST webwxlogout`: ends the session (next synccheck → 1101). Always answers Ret 0.
pub(crate) fn logout(sim: &Sim, req: &Req) -> Response {
    let body = req.json();
    if let Auth::Live(s) = auth_any(sim, req, body.as_ref()) {
        s.kill(1101, DeathReason::Logout);
        tracing::debug!(uin = s.uin, "sim: web session logged out");
    }
    ret_resp(0, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_tags() {
        let x = content::appmsg_file_xml("a.txt", 12, "@crypt_1");
        assert_eq!(xml_tag(&x, "title"), "a.txt");
        assert_eq!(xml_tag(&x, "attachid"), "@crypt_1");
        assert_eq!(xml_tag(&x, "nothing"), "");
    }
}
