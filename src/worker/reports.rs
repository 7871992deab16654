//! Turns what the web protocol tells us into control-plane report payloads (control-plane spec
//! A.3, A.7, B.7). The own account appears as its wxid (the Uin); everyone else by UserName.
//!
//! Web message → `report_new_msg` mapping (the table operators ask for):
//!
//! | web MsgType / AppMsgType | report msg_type | fields |
//! |---|---|---|
//! | 1 text | 1 | `msg`, `atUserList` |
//! | 1 with Url (location) | 1 | `msg` = "[location] label url" |
//! | 3 image | 3 | `file_index` |
//! | 34 voice | 34 | `file_index`, `raw_msg` |
//! | 42 card | 42 | `raw_msg` |
//! | 43 / 62 video | 43 | `file_index`, `raw_msg` |
//! | 47 emoticon, 49/8 | 47 | `emoji_url`, `raw_msg` |
//! | 49/5 link (and 3, 4 and other shares) | 49 | `link_title`, `link_desc`, `link_url`, `link_img_url`, `sub_type`, `raw_msg` |
//! | 49/33, 49/36 mini-program | 4901 | `raw_msg`, `file_index` |
//! | 49/2000 transfer | 4902 | `transferid`, `paysubtype`, `raw_msg` |
//! | 49/6 file | 4903 | `file_index`, `file_name`, `file_size`, `raw_msg` |
//! | 10000 system, 10002 recall, 49/2001, 49/17 | 10000 | `raw_msg` (plain text) |
//! | 37 friend request | — | `report_friend_add_request` instead |
//! | 51 status notify, other types | — | not a chat message: not reported |
//!
//! `file_index` is `<MsgType>:<MsgId>`: enough for the worker to fetch the media later.

use crate::control::reports::{
    ContactReport, FriendAddRequest, GroupInfo, MemberInfo, MsgUnit, PublicInfo, UserInfo, msg_type,
};
use crate::wechat::contact::{Contact, ContactBook, GroupMember};
use crate::wechat::message::{Chat, Message, MessageKind, unescape_content};

/// Who this account is, for the id rules of B.7.
pub struct Ids<'a> {
    /// The own account's wxid (Uin as a string).
    pub wxid: &'a str,
    /// The own session UserName.
    pub user_name: &'a str,
}

impl Ids<'_> {
    /// The report id of a UserName: the own one becomes the wxid.
    pub fn of(&self, user_name: &str) -> String {
        if user_name == self.user_name {
            self.wxid.to_owned()
        } else {
            user_name.to_owned()
        }
    }
}

/// The body of a message as XML/text, without the group sender prefix, unescaped.
fn raw_body(m: &Message) -> String {
    let body = match (&m.chat, m.outgoing) {
        (Chat::Group { .. }, false) => m
            .raw_content
            .split_once(":<br/>")
            .map(|(_, b)| b)
            .unwrap_or(&m.raw_content),
        _ => m.raw_content.as_str(),
    };
    unescape_content(body)
}

/// The `file_index` of a media message.
pub fn file_index(m: &Message) -> String {
    format!("{}:{}", m.msg_type, m.msg_id)
}

/// The `report_new_msg` unit of a chat message; `None` for what is not a chat message.
pub fn msg_unit(m: &Message, ids: &Ids<'_>) -> Option<MsgUnit> {
    let (room, from, to) = match &m.chat {
        Chat::Group { room, sender } => {
            let from = if m.outgoing {
                ids.wxid.to_owned()
            } else {
                sender.as_deref().map(|s| ids.of(s)).unwrap_or_default()
            };
            (room.clone(), from, room.clone())
        }
        Chat::Private { .. } => (String::new(), ids.of(&m.from), ids.of(&m.to)),
    };
    let ts = m.create_time.saturating_mul(1000);
    let unit = |t: i64| {
        MsgUnit::new(
            m.msg_id.clone(),
            ts,
            t,
            room.clone(),
            from.clone(),
            to.clone(),
        )
    };
    let raw = || Some(raw_body(m));
    use MessageKind as K;
    let u = match &m.kind {
        K::Text { text, mentions, .. } => {
            let mut u = unit(msg_type::TEXT);
            u.msg = Some(text.clone());
            if !mentions.is_empty() {
                u.at_user_list = Some(mentions.iter().map(|x| ids.of(x)).collect());
            }
            u
        }
        K::Location { label, url, .. } => {
            let mut u = unit(msg_type::TEXT);
            u.msg = Some(format!("[location] {label} {url}").trim_end().to_owned());
            u
        }
        K::Image { .. } => MsgUnit {
            file_index: Some(file_index(m)),
            ..unit(msg_type::IMAGE)
        },
        K::Voice { .. } => MsgUnit {
            file_index: Some(file_index(m)),
            raw_msg: raw(),
            ..unit(msg_type::VOICE)
        },
        K::Video { .. } => MsgUnit {
            file_index: Some(file_index(m)),
            raw_msg: raw(),
            ..unit(msg_type::VIDEO)
        },
        K::Card { .. } => MsgUnit {
            raw_msg: raw(),
            ..unit(msg_type::CARD)
        },
        K::Emoticon { cdn_url, .. } => MsgUnit {
            emoji_url: Some(cdn_url.clone().unwrap_or_default()),
            raw_msg: raw(),
            ..unit(msg_type::STICKER)
        },
        K::Link {
            title,
            desc,
            url,
            thumb_url,
            app_type,
        } => MsgUnit {
            link_title: Some(title.clone()),
            link_desc: Some(desc.clone()),
            link_url: Some(url.clone()),
            link_img_url: Some(thumb_url.clone()),
            sub_type: Some(*app_type),
            raw_msg: raw(),
            ..unit(msg_type::LINK)
        },
        K::App {
            app_type,
            title,
            url,
        } => MsgUnit {
            link_title: Some(title.clone()),
            link_desc: Some(String::new()),
            link_url: Some(url.clone()),
            link_img_url: Some(String::new()),
            sub_type: Some(*app_type),
            raw_msg: raw(),
            ..unit(msg_type::LINK)
        },
        K::MiniProgram { .. } => MsgUnit {
            raw_msg: raw(),
            file_index: Some(file_index(m)),
            ..unit(msg_type::MINI_PROGRAM)
        },
        K::Transfer {
            transfer_id,
            pay_subtype,
            ..
        } => MsgUnit {
            transferid: Some(transfer_id.clone().unwrap_or_default()),
            paysubtype: Some(pay_subtype.unwrap_or_default()),
            raw_msg: raw(),
            ..unit(msg_type::TRANSFER)
        },
        K::File { name, size, .. } => MsgUnit {
            file_index: Some(file_index(m)),
            file_name: Some(name.clone()),
            file_size: Some(*size),
            raw_msg: raw(),
            ..unit(msg_type::FILE)
        },
        K::System { text }
        | K::RedPacket { text }
        | K::ShareLocation { text }
        | K::Recall { text, .. } => MsgUnit {
            raw_msg: Some(text.clone()),
            ..unit(msg_type::SYSTEM)
        },
        K::FriendRequest { .. } | K::StatusNotify { .. } | K::Other { .. } => return None,
    };
    Some(u)
}

/// `report_friend_add_request` for a MsgType 37 message: v1 = the requester's UserName, v2 =
/// the verify ticket (what task 13 hands back).
pub fn friend_request(m: &Message) -> Option<FriendAddRequest> {
    match &m.kind {
        MessageKind::FriendRequest {
            user_name,
            greeting,
            ticket,
            ..
        } => Some(FriendAddRequest {
            v1: user_name.clone(),
            v2: ticket.clone(),
            notice_word: greeting.clone(),
            raw_msg: raw_body(m),
        }),
        _ => None,
    }
}

/// A contact's avatar reference without the session's `skey` (a secret, DESIGN §3.7) — the web
/// path with its other parameters, which identifies the avatar for a later download.
pub fn head_img(url: &str) -> String {
    crate::wechat::contact::strip_skey(url)
}

fn sex(s: i64) -> u8 {
    match s {
        1 => 1,
        2 => 2,
        _ => 0,
    }
}

pub fn user_info(c: &Contact) -> UserInfo {
    UserInfo {
        wxid: c.user_name.to_string(),
        wx_alias: c.alias.to_string(),
        nickname: c.nick_name.to_string(),
        remark_name: c.remark_name.to_string(),
        head_img: c.head_img_url(),
        sex: sex(c.sex),
        country: String::new(),
        province: c.province.to_string(),
        city: c.city.to_string(),
        uin: u64::try_from(c.uin).ok().filter(|u| *u != 0),
    }
}

pub fn group_info(c: &Contact, ids: &Ids<'_>) -> GroupInfo {
    GroupInfo {
        wxid: c.user_name.to_string(),
        name: c.nick_name.to_string(),
        owner_wxid: if c.owner_user_name.is_empty() {
            String::new()
        } else {
            ids.of(&c.owner_user_name)
        },
        member_count: u32::try_from(c.member_count.max(c.members.len() as i64)).unwrap_or(0),
        head_img: c.head_img_url(),
        member_wxid_list: c.members.iter().map(|m| ids.of(&m.user_name)).collect(),
    }
}

pub fn public_info(c: &Contact) -> PublicInfo {
    PublicInfo {
        wxid: c.user_name.to_string(),
        nickname: c.nick_name.to_string(),
        head_img: c.head_img_url(),
    }
}

pub fn member_info(m: &GroupMember, ids: &Ids<'_>) -> MemberInfo {
    MemberInfo {
        wxid: ids.of(&m.user_name),
        wx_alias: String::new(),
        room_nickname: m.display_name.to_string(),
        nickname: m.nick_name.to_string(),
        head_img: String::new(),
        sex: 0,
        country: String::new(),
        province: String::new(),
        city: String::new(),
        uin: u64::try_from(m.uin).ok().filter(|u| *u != 0),
    }
}

/// `report_contact` with the lists selected by `flag` (1 friends, 2 groups, 4 public accounts).
pub fn contact_report(book: &ContactBook, ids: &Ids<'_>, flag: u32) -> ContactReport {
    ContactReport::select(
        flag,
        book.friends().map(user_info).collect(),
        book.groups().map(|g| group_info(g, ids)).collect(),
        book.officials().map(public_info).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_img_drops_the_skey() {
        assert_eq!(
            head_img("/cgi-bin/mmwebwx-bin/webwxgeticon?seq=1&username=@a&skey=@crypt_x_y"),
            "/cgi-bin/mmwebwx-bin/webwxgeticon?seq=1&username=@a"
        );
        assert_eq!(head_img("/x?skey=1"), "/x");
        assert_eq!(head_img("/x?SKey=1&a=2"), "/x?a=2");
        assert_eq!(head_img(""), "");
    }
}
