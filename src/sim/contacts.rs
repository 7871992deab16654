//! Contact endpoints: webwxinit, webwxstatusnotify, webwxgetcontact (paged),
//! webwxbatchgetcontact, and the contact-changing calls webwxoplog, webwxverifyuser,
//! webwxcreatechatroom and webwxupdatechatroom with their webwxsync effects (spec §3.5–§3.8,
//! §3.16–§3.18, §6).

use axum::response::IntoResponse as _;
use serde_json::{Value, json};

use super::accounts::{AccountInner, Contact, Form, Kind, Member, OutboxEntry};
use super::content::{self, Message};
use super::http::{self, Req, as_u64, get_ci, json_session, str_field};
use super::ids;
use super::state::{EventKind, Sim};

pub(crate) fn ret_resp(ret: i64, msg: &str) -> axum::response::Response {
    http::json_resp(&json!({"BaseResponse": http::base_response(ret, msg)}))
}

/// How many contacts webwxinit lists besides filehelper and pinned ones.
const INIT_CONTACTS: usize = 10;

fn self_user_json(a: &AccountInner, uin: u64, skey: &str) -> Value {
    let me = a.me_contact();
    json!({
        "Uin": uin,
        "UserName": me.user_name,
        "NickName": content::emoji_spans(&me.nickname),
        "HeadImgUrl": me.head_img_url(skey),
        "RemarkName": "",
        "PYInitial": "",
        "PYQuanPin": "",
        "RemarkPYInitial": "",
        "RemarkPYQuanPin": "",
        "HideInputBarFlag": 0,
        "StarFriend": 0,
        "Sex": me.sex,
        "Signature": me.signature,
        "AppAccountFlag": 0,
        "VerifyFlag": 0,
        "ContactFlag": 0,
        "WebWxPluginSwitch": 0,
        "HeadImgFlag": 1,
        "SnsFlag": 17,
    })
}

/// `POST webwxinit`: self user, a few recent contacts, and the SyncKey. The first init of a
/// session starts at the beginning of its log (so the login StatusNotify is delivered); later
/// inits start at the current end.
pub(crate) fn init(sim: &Sim, req: &Req) -> axum::response::Response {
    let (session, account, _) = match json_session(sim, req) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let a = account.inner.lock().unwrap_or_else(|p| p.into_inner());
    let pos = {
        let mut g = session.lock();
        g.inits += 1;
        if g.inits == 1 { 0 } else { g.log.end() }
    };
    let mut list: Vec<&Contact> = Vec::new();
    if let Some(f) = a.book.get("filehelper") {
        list.push(f);
    }
    list.extend(
        a.book
            .iter()
            .filter(|c| c.pinned && !matches!(c.kind, Kind::Me)),
    );
    list.extend(
        a.book
            .iter()
            .filter(|c| c.is_group() && !c.pinned)
            .take(INIT_CONTACTS / 2),
    );
    list.extend(
        a.book
            .iter()
            .filter(|c| matches!(c.kind, Kind::Friend) && !c.pinned)
            .take(INIT_CONTACTS / 2),
    );
    let contacts: Vec<Value> = list
        .iter()
        .map(|c| a.book.contact_json(c, &session.skey, Form::Full))
        .collect();
    let chat_set: String = list.iter().map(|c| format!("{},", c.user_name)).collect();
    let mp: Vec<Value> = a
        .book
        .iter()
        .filter(|c| matches!(c.kind, Kind::Official))
        .take(3)
        .map(|c| {
            json!({
                "UserName": c.user_name,
                "MPArticleCount": 1,
                "MPArticleList": [{
                    "Title": format!("{} daily", c.nickname),
                    "Digest": "",
                    "Cover": "",
                    "Url": "http://mp.weixin.qq.com/s?__biz=sim",
                }],
                "Time": ids::unix_now(),
                "NickName": c.nickname,
            })
        })
        .collect();
    let v = json!({
        "BaseResponse": http::base_response(0, ""),
        "Count": contacts.len(),
        "ContactList": contacts,
        "SyncKey": session.sync_key(pos, false),
        "User": self_user_json(&a, account.uin, &session.skey),
        "ChatSet": chat_set,
        "SKey": session.skey,
        "ClientVersion": 385_876_258,
        "SystemTime": ids::unix_now(),
        "GrayScale": 1,
        "InviteStartCount": 40,
        "MPSubscribeMsgCount": mp.len(),
        "MPSubscribeMsgList": mp,
        "ClickReportInterval": 600_000,
    });
    drop(a);
    http::json_resp(&v)
}

/// `POST webwxstatusnotify`: acknowledged with a fresh MsgID.
pub(crate) fn status_notify(sim: &Sim, req: &Req) -> axum::response::Response {
    if let Err(r) = json_session(sim, req) {
        return r.into_response();
    }
    http::json_resp(&json!({
        "BaseResponse": http::base_response(0, ""),
        "MsgID": sim.msg_ids.next().to_string(),
    }))
}

fn listed(c: &Contact) -> bool {
    match &c.kind {
        Kind::Me | Kind::Stranger => false,
        Kind::Group(g) => g.saved,
        _ => true,
    }
}

/// `GET|POST webwxgetcontact?seq=…`: the contact book in pages; `Seq` is the next page's offset,
/// 0 on the last page.
pub(crate) fn get_contact(sim: &Sim, req: &Req) -> axum::response::Response {
    let (session, account, _) = match json_session(sim, req) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let page = sim.config().contact_page_size.max(1);
    let offset = req
        .param("seq")
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let (members, more) = {
        let a = account.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut all = a.book.iter().filter(|c| listed(c)).skip(offset);
        let members: Vec<Value> = all
            .by_ref()
            .take(page)
            .map(|c| a.book.contact_json(c, &session.skey, Form::Listing))
            .collect();
        (members, all.next().is_some())
    };
    let seq = if more { offset + members.len() } else { 0 };
    http::json_resp(&json!({
        "BaseResponse": http::base_response(0, ""),
        "MemberCount": members.len(),
        "MemberList": members,
        "Seq": seq,
    }))
}

/// `POST webwxbatchgetcontact`: the requested contacts that exist, in request order, groups with
/// their full member lists. List items may carry any extra fields.
pub(crate) fn batch_get_contact(sim: &Sim, req: &Req) -> axum::response::Response {
    let (session, account, body) = match json_session(sim, req) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let wanted: Vec<String> = get_ci(&body, "List")
        .and_then(Value::as_array)
        .map(|l| l.iter().map(|i| str_field(i, "UserName")).collect())
        .unwrap_or_default();
    let a = account.inner.lock().unwrap_or_else(|p| p.into_inner());
    let list: Vec<Value> = wanted
        .iter()
        .filter_map(|n| a.book.get(n))
        .map(|c| a.book.contact_json(c, &session.skey, Form::Full))
        .collect();
    drop(a);
    http::json_resp(&json!({
        "BaseResponse": http::base_response(0, ""),
        "Count": list.len(),
        "ContactList": list,
    }))
}

/// Queues a ModContactList entry for `user_name` on the account's live session.
pub(crate) fn push_mod_contact(a: &AccountInner, user_name: &str, kind: EventKind) {
    if let (Some(s), Some(c)) = (a.session.as_ref(), a.book.get(user_name)) {
        s.push(kind, a.book.contact_json(c, &s.skey, Form::Mod));
    }
}

pub(crate) fn push_del_contact(a: &AccountInner, user_name: &str) {
    if let Some(s) = a.session.as_ref() {
        s.push(
            EventKind::ContactDeleted,
            json!({"UserName": user_name, "ContactFlag": 0}),
        );
    }
}

/// Queues a MsgType 10000 notice in chat `chat` (no group prefix).
pub(crate) fn push_system(sim: &Sim, a: &AccountInner, chat: &str, text: &str) {
    if let Some(s) = a.session.as_ref() {
        let m = Message::new(
            sim.msg_ids.next(),
            chat,
            &a.me,
            10000,
            content::text_content(text),
        );
        s.push_message(&m);
    }
}

fn outbox(
    endpoint: &str,
    a: &AccountInner,
    to: &str,
    content: String,
    detail: Value,
) -> OutboxEntry {
    OutboxEntry {
        endpoint: endpoint.into(),
        msg_type: 0,
        from: a.me.clone(),
        to: to.into(),
        to_nickname: a.book.nickname_of(to),
        content,
        media_id: String::new(),
        msg_id: String::new(),
        local_id: String::new(),
        time_ms: ids::unix_ms_now(),
        detail,
    }
}

/// `POST webwxoplog`: CmdId 2 sets a remark; CmdId 3 pins (OP 1) or unpins (OP 0). As W4U's
/// comment warns, a CmdId 3 call without `RemarkName` clears the remark.
pub(crate) fn oplog(sim: &Sim, req: &Req) -> axum::response::Response {
    let (_session, account, body) = match json_session(sim, req) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let user = str_field(&body, "UserName");
    let cmd = get_ci(&body, "CmdId").and_then(as_u64).unwrap_or(0);
    let remark = get_ci(&body, "RemarkName").map(http::as_string);
    let op = get_ci(&body, "OP").and_then(as_u64).unwrap_or(0);
    let mut a = account.inner.lock().unwrap_or_else(|p| p.into_inner());
    let Some(c) = a.book.get_mut(&user) else {
        return ret_resp(1, "unknown UserName");
    };
    let content = match cmd {
        2 => {
            c.remark = remark.clone().unwrap_or_default();
            c.remark.clone()
        }
        3 => {
            c.pinned = op == 1;
            c.remark = remark.clone().unwrap_or_default();
            if op == 1 {
                "pin".into()
            } else {
                "unpin".into()
            }
        }
        _ => return ret_resp(1, "unknown CmdId"),
    };
    push_mod_contact(&a, &user, EventKind::ContactChanged);
    let entry = outbox(
        "webwxoplog",
        &a,
        &user,
        content,
        json!({"CmdId": cmd, "OP": op, "RemarkName": remark}),
    );
    a.record(entry);
    ret_resp(0, "")
}

/// `POST webwxverifyuser`: Opcode 2 sends a friend request (recorded only); Opcode 3 accepts a
/// pending request: the requester becomes a friend, a ModContactList entry and the 10000
/// "你已添加了 X，现在可以开始聊天了。" follow. Opcode 4 rejects.
pub(crate) fn verify_user(sim: &Sim, req: &Req) -> axum::response::Response {
    let (_session, account, body) = match json_session(sim, req) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let opcode = get_ci(&body, "Opcode").and_then(as_u64).unwrap_or(0);
    let first = get_ci(&body, "VerifyUserList")
        .and_then(Value::as_array)
        .and_then(|l| l.first())
        .cloned()
        .unwrap_or(Value::Null);
    let user = str_field(&first, "Value");
    let ticket = str_field(&first, "VerifyUserTicket");
    let mut a = account.inner.lock().unwrap_or_else(|p| p.into_inner());
    match opcode {
        2 => {
            if a.book.get(&user).is_none() {
                return ret_resp(1, "unknown user");
            }
        }
        3 | 4 => {
            let Some(expected) = a.pending_requests.get(&user).cloned() else {
                return ret_resp(1, "no pending request from this user");
            };
            // itchat sends an empty ticket; a non-empty one must match.
            if !ticket.is_empty() && ticket != expected {
                return ret_resp(-14, "ticket error");
            }
            a.pending_requests.remove(&user);
            if opcode == 3 {
                let nick = match a.book.get_mut(&user) {
                    Some(c) => {
                        c.kind = Kind::Friend;
                        c.nickname.clone()
                    }
                    None => return ret_resp(1, "unknown user"),
                };
                push_mod_contact(&a, &user, EventKind::ContactAdded);
                push_system(
                    sim,
                    &a,
                    &user,
                    &format!("你已添加了{nick}，现在可以开始聊天了。"),
                );
            }
        }
        _ => return ret_resp(1, "unsupported Opcode"),
    }
    let entry = outbox(
        "webwxverifyuser",
        &a,
        &user,
        str_field(&body, "VerifyContent"),
        json!({"Opcode": opcode, "VerifyUserTicket": ticket}),
    );
    a.record(entry);
    ret_resp(0, "")
}

fn split_names(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// `POST webwxcreatechatroom`: a new group of self plus the listed people, owned by self.
pub(crate) fn create_chatroom(sim: &Sim, req: &Req) -> axum::response::Response {
    let (_session, account, body) = match json_session(sim, req) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let names: Vec<String> = get_ci(&body, "MemberList")
        .and_then(Value::as_array)
        .map(|l| l.iter().map(|m| str_field(m, "UserName")).collect())
        .unwrap_or_default();
    let topic = str_field(&body, "Topic");
    let mut a = account.inner.lock().unwrap_or_else(|p| p.into_inner());
    if names.is_empty() {
        return ret_resp(1, "empty MemberList");
    }
    for n in &names {
        match a.book.get(n) {
            Some(c) if matches!(c.kind, Kind::Friend | Kind::Stranger) => {}
            _ => return ret_resp(1, "MemberList names an unknown person"),
        }
    }
    let mut members = vec![Member {
        user_name: a.me.clone(),
        display_name: String::new(),
    }];
    members.extend(names.iter().map(|n| Member {
        user_name: n.clone(),
        display_name: String::new(),
    }));
    let nicks: Vec<String> = names.iter().map(|n| a.book.nickname_of(n)).collect();
    let shown = if topic.is_empty() {
        nicks.iter().take(3).cloned().collect::<Vec<_>>().join("、")
    } else {
        topic.clone()
    };
    let me = a.me.clone();
    let group = Contact::group(&shown, members, me, false);
    let group_name = a.book.insert(group);
    let member_json: Vec<Value> = {
        let g = a.book.get(&group_name).and_then(Contact::group_data);
        g.map(|g| g.members.iter().map(|m| a.book.member_json(m)).collect())
            .unwrap_or_default()
    };
    push_mod_contact(&a, &group_name, EventKind::ContactAdded);
    push_system(
        sim,
        &a,
        &group_name,
        &format!("你邀请\"{}\"加入了群聊", nicks.join("、")),
    );
    let entry = outbox(
        "webwxcreatechatroom",
        &a,
        &group_name,
        topic.clone(),
        json!({"members": names}),
    );
    a.record(entry);
    drop(a);
    http::json_resp(&json!({
        "BaseResponse": http::base_response(0, "Everything is OK"),
        "Topic": topic,
        "PYInitial": "",
        "QuanPin": "",
        "MemberCount": member_json.len(),
        "MemberList": member_json,
        "ChatRoomName": group_name,
        "BlackList": "",
    }))
}

/// `POST webwxupdatechatroom?fun=modtopic|delmember|addmember|invitemember`.
pub(crate) fn update_chatroom(sim: &Sim, req: &Req) -> axum::response::Response {
    let (_session, account, body) = match json_session(sim, req) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let fun = req.param("fun").unwrap_or("").to_ascii_lowercase();
    let room = str_field(&body, "ChatRoomName");
    let mut a = account.inner.lock().unwrap_or_else(|p| p.into_inner());
    if a.book.get(&room).and_then(Contact::group_data).is_none() {
        return ret_resp(1201, "unknown ChatRoomName");
    }
    let mut added: Vec<Value> = Vec::new();
    let (content, notice) = match fun.as_str() {
        "modtopic" => {
            let topic = str_field(&body, "NewTopic");
            if let Some(c) = a.book.get_mut(&room) {
                c.nickname = topic.clone();
            }
            (topic.clone(), format!("你修改群名为“{topic}”"))
        }
        "delmember" => {
            let names = split_names(&str_field(&body, "DelMemberList"));
            let nicks: Vec<String> = names.iter().map(|n| a.book.nickname_of(n)).collect();
            if let Some(g) = a.book.get_mut(&room).and_then(Contact::group_data_mut) {
                g.members.retain(|m| !names.contains(&m.user_name));
                if names.contains(&g.owner) {
                    g.owner.clear();
                }
            }
            (
                names.join(","),
                format!("你将\"{}\"移出了群聊", nicks.join("、")),
            )
        }
        "addmember" | "invitemember" => {
            let field = if fun == "addmember" {
                "AddMemberList"
            } else {
                "InviteMemberList"
            };
            let names = split_names(&str_field(&body, field));
            for n in &names {
                match a.book.get(n) {
                    Some(c) if matches!(c.kind, Kind::Friend | Kind::Stranger) => {}
                    _ => return ret_resp(1, "member list names an unknown person"),
                }
            }
            let nicks: Vec<String> = names.iter().map(|n| a.book.nickname_of(n)).collect();
            if let Some(g) = a.book.get_mut(&room).and_then(Contact::group_data_mut) {
                for n in &names {
                    if !g.members.iter().any(|m| &m.user_name == n) {
                        g.members.push(Member {
                            user_name: n.clone(),
                            display_name: String::new(),
                        });
                    }
                }
            }
            added = names
                .iter()
                .map(|n| {
                    a.book.member_json(&Member {
                        user_name: n.clone(),
                        display_name: String::new(),
                    })
                })
                .collect();
            (
                names.join(","),
                format!("你邀请\"{}\"加入了群聊", nicks.join("、")),
            )
        }
        _ => return ret_resp(1, "unknown fun"),
    };
    push_mod_contact(&a, &room, EventKind::ContactChanged);
    push_system(sim, &a, &room, &notice);
    let entry = outbox(
        "webwxupdatechatroom",
        &a,
        &room,
        content,
        json!({"fun": fun}),
    );
    a.record(entry);
    drop(a);
    http::json_resp(&json!({
        "BaseResponse": http::base_response(0, ""),
        "MemberCount": added.len(),
        "MemberList": added,
    }))
}
