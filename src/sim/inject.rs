//! Message injection for the test-control API: builds the AddMsgList entry a real server would
//! deliver for each message kind (text with mentions, media, cards, links, locations, system
//! notices, recalls, friend requests, status notifies), stores its media and queues it.

use serde::Deserialize;
use serde_json::{Value, json};

use super::accounts::{AccountInner, Contact, Kind, MsgMeta};
use super::assets;
use super::content::{self, FriendRequestXml, Message, Recommend};
use super::http::as_u64;
use super::ids;
use super::media::{Blob, BlobData};
use super::state::Sim;

/// `POST /__sim/sessions/<uin>/inject` body. Which fields matter depends on `type`:
///
/// | type | fields (besides `from`/`to`/`group`) | MsgType |
/// |---|---|---|
/// | `text` | `text`, `mentions` (nicknames or `"self"`) | 1 |
/// | `image` | `md5` | 3 |
/// | `voice` | `length_ms` | 34 |
/// | `video` / `microvideo` | `length_ms` | 43 / 62 |
/// | `file` | `file_name`, `size` | 49 / AppMsgType 6 |
/// | `emoji` | `md5` | 47 |
/// | `card` | `card` (a nickname) | 42 |
/// | `link` | `title`, `desc`, `url` | 49 / 5 |
/// | `location` | `label`, `address`, `lat`, `lng` | 1, SubMsgType 48 |
/// | `mini_program` | `title`, `app_name`, `url` | 49 / 33 |
/// | `transfer` | `amount` | 49 / 2000 |
/// | `system` | `text` (`from` or `group` names the chat) | 10000 |
/// | `recall` | `msg_id` of an earlier message | 10002 |
/// | `friend_request` | `nickname`, `greeting`, `sex`, `alias`, `province`, `city`, `signature` | 37 |
/// | `status_notify` | `code` (default 2), `to` | 51 |
///
/// `from` is a contact's nickname or UserName, or `"self"` (sent from the phone; `to` names the
/// peer). With `group`, `from` names the member.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct InjectSpec {
    #[serde(rename = "type")]
    pub kind: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub group: Option<String>,
    pub text: Option<String>,
    #[serde(default)]
    pub mentions: Vec<String>,
    pub length_ms: Option<u64>,
    pub file_name: Option<String>,
    pub size: Option<u64>,
    pub md5: Option<String>,
    pub card: Option<String>,
    pub title: Option<String>,
    pub desc: Option<String>,
    pub url: Option<String>,
    pub app_name: Option<String>,
    pub label: Option<String>,
    pub address: Option<String>,
    pub lat: Option<f64>,
    pub lng: Option<f64>,
    pub amount: Option<String>,
    pub msg_id: Option<Value>,
    pub nickname: Option<String>,
    pub greeting: Option<String>,
    pub sex: Option<u32>,
    pub alias: Option<String>,
    pub province: Option<String>,
    pub city: Option<String>,
    pub signature: Option<String>,
    pub code: Option<u32>,
}

/// Why an injection was refused; `NotFound` maps to 404, the rest to 400.
#[derive(Debug)]
pub(crate) enum InjectError {
    Bad(String),
    NotFound(String),
}

/// Where a message goes and who sent it.
struct Route {
    /// FromUserName on the wire.
    from: String,
    /// ToUserName on the wire.
    to: String,
    /// Group UserName when this is a group chat.
    group: Option<String>,
    /// The real sender (member in groups, self for messages sent from the phone).
    sender: String,
    /// Whether the body needs the `@member:<br/>` prefix.
    prefixed: bool,
}

impl Route {
    /// The chat the message belongs to: the group, else the peer.
    fn chat<'a>(&'a self, me: &str) -> &'a str {
        match &self.group {
            Some(g) => g,
            None if self.from == me => &self.to,
            None => &self.from,
        }
    }
}

fn resolve(a: &AccountInner, spec: &InjectSpec, need_from: bool) -> Result<Route, InjectError> {
    let me = a.me.clone();
    if let Some(gname) = &spec.group {
        let g = a
            .book
            .find(gname)
            .filter(|c| c.is_group())
            .ok_or_else(|| InjectError::NotFound(format!("unknown group {gname:?}")))?;
        let group = g.user_name.clone();
        let Some(from) = spec.from.as_deref() else {
            if need_from {
                return Err(InjectError::Bad("from is required".into()));
            }
            return Ok(Route {
                from: group.clone(),
                to: me.clone(),
                group: Some(group),
                sender: String::new(),
                prefixed: false,
            });
        };
        if from == "self" || from == me {
            return Ok(Route {
                from: me.clone(),
                to: group.clone(),
                group: Some(group),
                sender: me,
                prefixed: false,
            });
        }
        let data = g
            .group_data()
            .ok_or_else(|| InjectError::Bad("not a group".into()))?;
        let member = a.book.find_member(data, from).ok_or_else(|| {
            InjectError::NotFound(format!("{from:?} is not a member of {gname:?}"))
        })?;
        return Ok(Route {
            from: group.clone(),
            to: me,
            group: Some(group),
            sender: member.user_name.clone(),
            prefixed: true,
        });
    }
    let from = spec
        .from
        .as_deref()
        .ok_or_else(|| InjectError::Bad("from is required".into()))?;
    let peer_of = |name: &str| -> Result<String, InjectError> {
        let c = a
            .book
            .find(name)
            .ok_or_else(|| InjectError::NotFound(format!("unknown contact {name:?}")))?;
        if c.is_group() {
            return Err(InjectError::Bad(format!(
                "{name:?} is a group: pass it as \"group\" and the member as \"from\""
            )));
        }
        Ok(c.user_name.clone())
    };
    if from == "self" || from == me {
        let to = spec
            .to
            .as_deref()
            .ok_or_else(|| InjectError::Bad("to is required when from is \"self\"".into()))?;
        let peer = peer_of(to)?;
        return Ok(Route {
            from: me.clone(),
            to: peer,
            group: None,
            sender: me,
            prefixed: false,
        });
    }
    let peer = peer_of(from)?;
    Ok(Route {
        from: peer.clone(),
        to: me,
        group: None,
        sender: peer,
        prefixed: false,
    })
}

fn wire(route: &Route, escaped: String) -> String {
    if route.prefixed {
        content::group_prefixed(&route.sender, &escaped)
    } else {
        escaped
    }
}

fn group_of<'a>(a: &'a AccountInner, route: &Route) -> Option<&'a super::accounts::Group> {
    route
        .group
        .as_deref()
        .and_then(|g| a.book.get(g))
        .and_then(Contact::group_data)
}

fn mention_name(a: &AccountInner, route: &Route, name: &str) -> Result<String, InjectError> {
    let group = group_of(a, route);
    let user_name = if name == "self" {
        a.me.clone()
    } else if let Some(g) = group {
        a.book
            .find_member(g, name)
            .map(|m| m.user_name.clone())
            .ok_or_else(|| InjectError::NotFound(format!("mentioned {name:?} is not a member")))?
    } else {
        a.book
            .find(name)
            .map(|c| c.user_name.clone())
            .ok_or_else(|| InjectError::NotFound(format!("mentioned {name:?} is unknown")))?
    };
    Ok(a.shown_name(group, &user_name))
}

fn wxid_of(a: &AccountInner, user_name: &str) -> String {
    a.book
        .get(user_name)
        .map(|c| c.wxid.clone())
        .unwrap_or_default()
}

/// Builds, stores and queues the message; returns the JSON answer for the control API.
pub(crate) fn inject(
    sim: &Sim,
    a: &mut AccountInner,
    spec: &InjectSpec,
) -> Result<Value, InjectError> {
    let Some(session) = a.session.clone().filter(|s| s.is_alive()) else {
        return Err(InjectError::Bad("account has no live session".into()));
    };
    let id = sim.msg_ids.next();
    let mut extra = json!({});
    let mut blob: Option<Blob> = None;
    let (m, route) = match spec.kind.as_str() {
        "text" => {
            let route = resolve(a, spec, true)?;
            let mut body = String::new();
            for name in &spec.mentions {
                body.push_str(&content::mention(&mention_name(a, &route, name)?));
            }
            body.push_str(spec.text.as_deref().unwrap_or(""));
            let m = Message::new(
                id,
                &route.from,
                &route.to,
                1,
                wire(&route, content::text_content(&body)),
            );
            (m, route)
        }
        "image" => {
            let route = resolve(a, spec, true)?;
            let bytes = assets::jpeg();
            let md5 = spec.md5.clone().unwrap_or_else(ids::md5_like);
            let xml = content::image_xml(bytes.len(), &md5, 48, 48);
            let mut m = Message::new(
                id,
                &route.from,
                &route.to,
                3,
                wire(&route, content::escape_content(&xml)),
            );
            m.img_status = 2;
            m.img_height = 48;
            m.img_width = 48;
            blob = Some(Blob::bytes("image/jpeg", "image.jpg", bytes));
            (m, route)
        }
        "voice" => {
            let route = resolve(a, spec, true)?;
            let ms = spec.length_ms.unwrap_or(3000);
            let xml = content::voice_xml(ms, assets::mp3().len(), &wxid_of(a, &route.sender));
            let mut m = Message::new(
                id,
                &route.from,
                &route.to,
                34,
                wire(&route, content::escape_content(&xml)),
            );
            m.voice_length = ms;
            blob = Some(Blob::bytes("audio/mp3", "voice.mp3", assets::mp3()));
            (m, route)
        }
        "video" | "microvideo" => {
            let route = resolve(a, spec, true)?;
            let secs = spec.length_ms.map(|ms| ms.div_ceil(1000)).unwrap_or(5);
            let md5 = ids::md5_like();
            let xml = content::video_xml(secs, assets::mp4().len(), &md5);
            let t = if spec.kind == "video" { 43 } else { 62 };
            let mut m = Message::new(
                id,
                &route.from,
                &route.to,
                t,
                wire(&route, content::escape_content(&xml)),
            );
            m.play_length = secs;
            m.img_height = 120;
            m.img_width = 160;
            m.img_status = 2;
            blob = Some(Blob::bytes("video/mp4", "video.mp4", assets::mp4()));
            (m, route)
        }
        "file" => {
            let route = resolve(a, spec, true)?;
            let name = spec.file_name.clone().unwrap_or_else(|| "file.bin".into());
            let size = spec.size.unwrap_or(1024);
            if size > 4 * 1024 * 1024 * 1024 {
                return Err(InjectError::Bad("size must be at most 4 GiB".into()));
            }
            let media_id = ids::media_id();
            let xml = content::appmsg_file_xml(&name, size, &media_id);
            let mut m = Message::new(
                id,
                &route.from,
                &route.to,
                49,
                wire(&route, content::escape_content(&xml)),
            );
            m.app_msg_type = 6;
            m.file_name = name.clone();
            m.file_size = size.to_string();
            m.media_id = media_id.clone();
            m.encry_file_name = content::encry_file_name(&name);
            a.media.put_media(
                media_id.clone(),
                Blob {
                    content_type: "application/octet-stream".into(),
                    file_name: name,
                    data: BlobData::Pattern(size),
                },
            );
            extra["media_id"] = json!(media_id);
            (m, route)
        }
        "emoji" => {
            let route = resolve(a, spec, true)?;
            let md5 = spec.md5.clone().unwrap_or_else(ids::md5_like);
            let xml = content::emoji_xml(
                &wxid_of(a, &route.sender),
                &wxid_of(a, &a.me),
                &md5,
                assets::gif().len(),
            );
            let mut m = Message::new(
                id,
                &route.from,
                &route.to,
                47,
                wire(&route, content::escape_content(&xml)),
            );
            m.img_status = 2;
            m.img_height = 1;
            m.img_width = 1;
            blob = Some(Blob::bytes("image/gif", "emoji.gif", assets::gif()));
            (m, route)
        }
        "card" => {
            let route = resolve(a, spec, true)?;
            let who = spec
                .card
                .as_deref()
                .ok_or_else(|| InjectError::Bad("card (a nickname) is required".into()))?;
            let (user_name, nickname, alias, sex, province, city, signature) =
                match a.book.find(who) {
                    Some(c) => (
                        c.user_name.clone(),
                        c.nickname.clone(),
                        c.alias.clone(),
                        c.sex,
                        c.province.clone(),
                        c.city.clone(),
                        c.signature.clone(),
                    ),
                    None => (
                        ids::person_user_name(),
                        who.to_string(),
                        String::new(),
                        0,
                        String::new(),
                        String::new(),
                        String::new(),
                    ),
                };
            let xml = content::card_xml(&user_name, &nickname, &alias, sex);
            let mut m = Message::new(
                id,
                &route.from,
                &route.to,
                42,
                wire(&route, content::escape_content(&xml)),
            );
            m.recommend = Recommend {
                user_name,
                nickname,
                province,
                city,
                signature,
                alias,
                scene: 17,
                sex,
                ..Recommend::default()
            };
            (m, route)
        }
        "link" => {
            let route = resolve(a, spec, true)?;
            let title = spec.title.clone().unwrap_or_else(|| "Link".into());
            let url = spec
                .url
                .clone()
                .unwrap_or_else(|| "http://example.invalid/".into());
            let xml = content::appmsg_link_xml(&title, spec.desc.as_deref().unwrap_or(""), &url);
            let mut m = Message::new(
                id,
                &route.from,
                &route.to,
                49,
                wire(&route, content::escape_content(&xml)),
            );
            m.app_msg_type = 5;
            m.file_name = title;
            m.url = url;
            (m, route)
        }
        "mini_program" => {
            let route = resolve(a, spec, true)?;
            let title = spec.title.clone().unwrap_or_else(|| "Mini program".into());
            let url = spec.url.clone().unwrap_or_default();
            let xml = content::appmsg_mini_program_xml(
                &title,
                spec.app_name.as_deref().unwrap_or(""),
                &url,
            );
            let mut m = Message::new(
                id,
                &route.from,
                &route.to,
                49,
                wire(&route, content::escape_content(&xml)),
            );
            m.app_msg_type = 33;
            m.file_name = title;
            m.url = url;
            (m, route)
        }
        "transfer" => {
            let route = resolve(a, spec, true)?;
            let amount = spec.amount.clone().unwrap_or_else(|| "0.01".into());
            let xml = content::appmsg_transfer_xml(&amount);
            let mut m = Message::new(
                id,
                &route.from,
                &route.to,
                49,
                wire(&route, content::escape_content(&xml)),
            );
            m.app_msg_type = 2000;
            m.file_name = "微信转账".into();
            (m, route)
        }
        "location" => {
            let route = resolve(a, spec, true)?;
            let label = spec.label.clone().unwrap_or_else(|| "Somewhere".into());
            let lat = spec.lat.unwrap_or(39.9087);
            let lng = spec.lng.unwrap_or(116.3975);
            let place = match &spec.address {
                Some(addr) => format!("{label}({addr})"),
                None => label.clone(),
            };
            let text = format!(
                "{}:<br/>/cgi-bin/mmwebwx-bin/webwxgetpubliclinkimg?url=xxx&msgid={id}&pictype=location",
                content::escape_content(&place)
            );
            let mut m = Message::new(id, &route.from, &route.to, 1, wire(&route, text));
            m.sub_msg_type = 48;
            m.url = format!("http://apis.map.qq.com/uri/v1/geocoder?coord={lat},{lng}");
            m.ori_content = content::location_xml(lat, lng, &label, &place);
            (m, route)
        }
        "system" => {
            let route = resolve(a, spec, false)?;
            let text = spec
                .text
                .as_deref()
                .ok_or_else(|| InjectError::Bad("text is required".into()))?;
            // Group notices come from the group itself, never with a member prefix.
            let (from, to) = match &route.group {
                Some(g) => (g.clone(), a.me.clone()),
                None => (route.from.clone(), route.to.clone()),
            };
            let m = Message::new(id, &from, &to, 10000, content::text_content(text));
            (m, route)
        }
        "recall" => {
            let old = spec.msg_id.as_ref().and_then(as_u64).ok_or_else(|| {
                InjectError::Bad("msg_id of an earlier message is required".into())
            })?;
            let meta = a
                .messages
                .get(old)
                .cloned()
                .ok_or_else(|| InjectError::NotFound(format!("unknown msg_id {old}")))?;
            let mine = meta.sender == a.me;
            let group = meta.group.then(|| meta.chat.clone());
            let who = if mine {
                "你".to_string()
            } else {
                let g = group
                    .as_deref()
                    .and_then(|g| a.book.get(g))
                    .and_then(Contact::group_data);
                a.shown_name(g, &meta.sender)
            };
            let xml = content::revoke_xml(&meta.chat, old, &who);
            let route = Route {
                from: if mine {
                    a.me.clone()
                } else if meta.group {
                    meta.chat.clone()
                } else {
                    meta.sender.clone()
                },
                to: if mine {
                    meta.chat.clone()
                } else {
                    a.me.clone()
                },
                group,
                sender: meta.sender.clone(),
                prefixed: meta.group && !mine,
            };
            let mut m = Message::new(
                id,
                &route.from,
                &route.to,
                10002,
                wire(&route, content::escape_content(&xml)),
            );
            m.status = 4;
            (m, route)
        }
        "friend_request" => {
            let nickname = spec
                .nickname
                .clone()
                .ok_or_else(|| InjectError::Bad("nickname is required".into()))?;
            let greeting = spec.greeting.clone().unwrap_or_default();
            let ticket = ids::stranger_ticket();
            let mut stranger = Contact::person(&nickname, Kind::Stranger);
            stranger.sex = spec.sex.unwrap_or(0);
            stranger.alias = spec.alias.clone().unwrap_or_default();
            stranger.province = spec.province.clone().unwrap_or_default();
            stranger.city = spec.city.clone().unwrap_or_default();
            stranger.signature = spec.signature.clone().unwrap_or_default();
            let xml = content::friend_request_xml(&FriendRequestXml {
                encrypt_user_name: &ids::stranger_encrypt_name(),
                nickname: &nickname,
                greeting: &greeting,
                ticket: &ticket,
                sex: stranger.sex,
                alias: &stranger.alias,
                province: &stranger.province,
                city: &stranger.city,
                signature: &stranger.signature,
                scene: 14,
            });
            let mut m = Message::new(id, "fmessage", &a.me, 37, content::escape_content(&xml));
            m.status = 3;
            m.ticket = ticket.clone();
            m.recommend = Recommend {
                user_name: stranger.user_name.clone(),
                nickname: nickname.clone(),
                province: stranger.province.clone(),
                city: stranger.city.clone(),
                content: greeting,
                signature: stranger.signature.clone(),
                alias: stranger.alias.clone(),
                scene: 14,
                verify_flag: 0,
                attr_status: stranger.attr_status,
                sex: stranger.sex,
                ticket: ticket.clone(),
                op_code: 2,
            };
            let user_name = a.book.insert(stranger);
            a.pending_requests.insert(user_name.clone(), ticket.clone());
            extra["ticket"] = json!(ticket);
            extra["user_name"] = json!(user_name);
            let route = Route {
                from: "fmessage".into(),
                to: a.me.clone(),
                group: None,
                sender: "fmessage".into(),
                prefixed: false,
            };
            (m, route)
        }
        "status_notify" => {
            let code = spec.code.unwrap_or(2);
            let me = a.me.clone();
            let mut m = Message::new(id, &me, &me, 51, String::new());
            m.status_notify_code = code;
            if code == 4 {
                let recent = a.recent_chats(20);
                let wxids: Vec<String> = recent.iter().map(|c| c.wxid.clone()).collect();
                m.status_notify_user_name = recent
                    .iter()
                    .map(|c| c.user_name.as_str())
                    .collect::<Vec<_>>()
                    .join(",");
                m.content = content::escape_content(&content::init_notify_xml(&wxids));
            } else {
                let peer_name = spec
                    .to
                    .as_deref()
                    .or(spec.from.as_deref())
                    .unwrap_or("filehelper");
                let peer = a.book.find(peer_name).ok_or_else(|| {
                    InjectError::NotFound(format!("unknown contact {peer_name:?}"))
                })?;
                m.to = peer.user_name.clone();
                m.status_notify_user_name = peer.user_name.clone();
            }
            let route = Route {
                from: me.clone(),
                to: m.to.clone(),
                group: None,
                sender: me,
                prefixed: false,
            };
            (m, route)
        }
        other => return Err(InjectError::Bad(format!("unknown type {other:?}"))),
    };
    if let Some(b) = blob {
        a.media.put_msg(id, b);
    }
    if !matches!(spec.kind.as_str(), "status_notify" | "friend_request") {
        a.messages.insert(
            id,
            MsgMeta {
                chat: route.chat(&a.me).to_string(),
                sender: if route.sender.is_empty() {
                    route.from.clone()
                } else {
                    route.sender.clone()
                },
                group: route.group.is_some(),
            },
        );
    }
    session.push_message(&m);
    let mut out = json!({
        "msg_id": id.to_string(),
        "new_msg_id": id,
        "msg_type": m.msg_type,
        "from_user_name": m.from,
        "to_user_name": m.to,
        "content": m.content,
    });
    if let (Some(o), Some(e)) = (out.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
    Ok(out)
}
