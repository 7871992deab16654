//! Typed messages: the lenient view of a webwxsync `AddMsgList` entry (spec §5.1) and its
//! interpretation by MsgType / AppMsgType (spec §5.2), group prefixes and @-mentions (spec §5.3).
//!
//! Parsing never fails: unknown types become [`MessageKind::Other`], and content whose XML cannot
//! be read yields the kind with whatever the JSON fields give and empty XML-derived fields.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::wechat::contact::{ContactBook, is_group_name};
use crate::wechat::parse::{
    XmlElement, decode_entities, decode_xml_entities_lenient, lenient, parse_xml,
    replace_emoji_spans, replace_line_breaks,
};

/// The separator the phone puts after `@Name` (FOUR-PER-EM SPACE).
pub const MENTION_SEPARATOR: char = '\u{2005}';

/// MsgType values (spec §5.2).
pub mod msg_type {
    pub const TEXT: i64 = 1;
    pub const IMAGE: i64 = 3;
    pub const VOICE: i64 = 34;
    pub const VERIFY: i64 = 37;
    pub const POSSIBLE_FRIEND: i64 = 40;
    pub const SHARE_CARD: i64 = 42;
    pub const VIDEO: i64 = 43;
    pub const EMOTICON: i64 = 47;
    pub const LOCATION: i64 = 48;
    pub const APP: i64 = 49;
    pub const VOIP_MSG: i64 = 50;
    pub const STATUS_NOTIFY: i64 = 51;
    pub const VOIP_NOTIFY: i64 = 52;
    pub const VOIP_INVITE: i64 = 53;
    pub const MICRO_VIDEO: i64 = 62;
    pub const SYS_NOTICE: i64 = 9999;
    pub const SYS: i64 = 10000;
    pub const RECALLED: i64 = 10002;
}

/// AppMsgType values of MsgType 49 (spec §5.2).
pub mod app_type {
    pub const TEXT: i64 = 1;
    pub const IMG: i64 = 2;
    pub const AUDIO: i64 = 3;
    pub const VIDEO: i64 = 4;
    pub const URL: i64 = 5;
    pub const ATTACH: i64 = 6;
    pub const OPEN: i64 = 7;
    pub const EMOJI: i64 = 8;
    pub const VOICE_REMIND: i64 = 9;
    pub const SCAN_GOOD: i64 = 10;
    pub const GOOD: i64 = 13;
    pub const EMOTION: i64 = 15;
    pub const CARD_TICKET: i64 = 16;
    pub const REALTIME_SHARE_LOCATION: i64 = 17;
    pub const MINI_PROGRAM: i64 = 33;
    /// Newer mini-program share cards.
    pub const MINI_PROGRAM_NEW: i64 = 36;
    pub const TRANSFERS: i64 = 2000;
    pub const RED_ENVELOPES: i64 = 2001;
    pub const READER_TYPE: i64 = 100001;
}

/// `RecommendInfo` of friend requests (37) and cards (42).
#[derive(Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RawRecommendInfo {
    #[serde(deserialize_with = "lenient::string")]
    pub user_name: String,
    #[serde(deserialize_with = "lenient::string")]
    pub nick_name: String,
    #[serde(rename = "QQNum", deserialize_with = "lenient::i64")]
    pub qq_num: i64,
    #[serde(deserialize_with = "lenient::string")]
    pub province: String,
    #[serde(deserialize_with = "lenient::string")]
    pub city: String,
    /// The greeting of a friend request.
    #[serde(deserialize_with = "lenient::string")]
    pub content: String,
    #[serde(deserialize_with = "lenient::string")]
    pub signature: String,
    #[serde(deserialize_with = "lenient::string")]
    pub alias: String,
    #[serde(deserialize_with = "lenient::i64")]
    pub scene: i64,
    #[serde(deserialize_with = "lenient::i64")]
    pub verify_flag: i64,
    #[serde(deserialize_with = "lenient::i64")]
    pub attr_status: i64,
    #[serde(deserialize_with = "lenient::i64")]
    pub sex: i64,
    /// Verify ticket (`v2_…@stranger`): a secret, redacted in `Debug`.
    #[serde(deserialize_with = "lenient::string")]
    pub ticket: String,
    #[serde(deserialize_with = "lenient::i64")]
    pub op_code: i64,
}

impl fmt::Debug for RawRecommendInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawRecommendInfo")
            .field("user_name", &self.user_name)
            .field("nick_name", &self.nick_name)
            .field("qq_num", &self.qq_num)
            .field("province", &self.province)
            .field("city", &self.city)
            .field("content", &self.content)
            .field("signature", &self.signature)
            .field("alias", &self.alias)
            .field("scene", &self.scene)
            .field("verify_flag", &self.verify_flag)
            .field("attr_status", &self.attr_status)
            .field("sex", &self.sex)
            .field("ticket", &redact(&self.ticket))
            .field("op_code", &self.op_code)
            .finish()
    }
}

/// `AppInfo` of a message: `{"AppID":"","Type":0}`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct RawAppInfo {
    #[serde(rename = "AppID", deserialize_with = "lenient::string")]
    pub app_id: String,
    #[serde(rename = "Type", deserialize_with = "lenient::i64")]
    pub kind: i64,
}

/// Lenient view of an `AddMsgList` entry (spec §5.1): numbers as numbers or strings, `FileSize`
/// string or number, `RecommendInfo`/`AppInfo` optional, unknown fields ignored.
#[derive(Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RawMessage {
    #[serde(deserialize_with = "lenient::string")]
    pub msg_id: String,
    #[serde(deserialize_with = "lenient::i64")]
    pub new_msg_id: i64,
    #[serde(deserialize_with = "lenient::string")]
    pub from_user_name: String,
    #[serde(deserialize_with = "lenient::string")]
    pub to_user_name: String,
    #[serde(deserialize_with = "lenient::i64")]
    pub msg_type: i64,
    #[serde(deserialize_with = "lenient::string")]
    pub content: String,
    #[serde(deserialize_with = "lenient::i64")]
    pub status: i64,
    #[serde(deserialize_with = "lenient::i64")]
    pub img_status: i64,
    #[serde(deserialize_with = "lenient::i64")]
    pub create_time: i64,
    #[serde(deserialize_with = "lenient::i64")]
    pub voice_length: i64,
    #[serde(deserialize_with = "lenient::i64")]
    pub play_length: i64,
    #[serde(deserialize_with = "lenient::string")]
    pub file_name: String,
    #[serde(deserialize_with = "lenient::string")]
    pub file_size: String,
    #[serde(deserialize_with = "lenient::string")]
    pub media_id: String,
    #[serde(deserialize_with = "lenient::string")]
    pub url: String,
    #[serde(deserialize_with = "lenient::i64")]
    pub app_msg_type: i64,
    #[serde(deserialize_with = "lenient::i64")]
    pub status_notify_code: i64,
    #[serde(deserialize_with = "lenient::string")]
    pub status_notify_user_name: String,
    #[serde(deserialize_with = "lenient::object")]
    pub recommend_info: Option<RawRecommendInfo>,
    #[serde(deserialize_with = "lenient::i64")]
    pub forward_flag: i64,
    #[serde(deserialize_with = "lenient::object")]
    pub app_info: Option<RawAppInfo>,
    #[serde(deserialize_with = "lenient::i64")]
    pub has_product_id: i64,
    #[serde(deserialize_with = "lenient::string")]
    pub ticket: String,
    #[serde(deserialize_with = "lenient::i64")]
    pub img_height: i64,
    #[serde(deserialize_with = "lenient::i64")]
    pub img_width: i64,
    #[serde(deserialize_with = "lenient::i64")]
    pub sub_msg_type: i64,
    #[serde(deserialize_with = "lenient::string")]
    pub ori_content: String,
    #[serde(deserialize_with = "lenient::string")]
    pub encry_file_name: String,
}

fn redact(s: &str) -> &'static str {
    if s.is_empty() { "" } else { "<redacted>" }
}

/// Content can embed friend-request tickets, so `Debug` reports only its size.
struct Len(usize);

impl fmt::Debug for Len {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes>", self.0)
    }
}

impl fmt::Debug for RawMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawMessage")
            .field("msg_id", &self.msg_id)
            .field("new_msg_id", &self.new_msg_id)
            .field("from_user_name", &self.from_user_name)
            .field("to_user_name", &self.to_user_name)
            .field("msg_type", &self.msg_type)
            .field("content", &Len(self.content.len()))
            .field("status", &self.status)
            .field("img_status", &self.img_status)
            .field("create_time", &self.create_time)
            .field("voice_length", &self.voice_length)
            .field("play_length", &self.play_length)
            .field("file_name", &self.file_name)
            .field("file_size", &self.file_size)
            .field("media_id", &self.media_id)
            .field("url", &self.url)
            .field("app_msg_type", &self.app_msg_type)
            .field("status_notify_code", &self.status_notify_code)
            .field("status_notify_user_name", &self.status_notify_user_name)
            .field("recommend_info", &self.recommend_info)
            .field("forward_flag", &self.forward_flag)
            .field("app_info", &self.app_info)
            .field("has_product_id", &self.has_product_id)
            .field("ticket", &redact(&self.ticket))
            .field("img_height", &self.img_height)
            .field("img_width", &self.img_width)
            .field("sub_msg_type", &self.sub_msg_type)
            .field("ori_content", &Len(self.ori_content.len()))
            .field("encry_file_name", &self.encry_file_name)
            .finish()
    }
}

/// Where a message was said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chat {
    /// One-to-one chat (also special accounts like `filehelper`); `peer` is the other side.
    Private { peer: String },
    /// Group chat; `sender` is the member who spoke (`None` for group system notices).
    Group {
        room: String,
        sender: Option<String>,
    },
}

/// What a message says, by type.
#[derive(Clone, PartialEq)]
pub enum MessageKind {
    Text {
        text: String,
        /// UserNames resolved through the group's members where possible, else the names as
        /// written after `@`.
        mentions: Vec<String>,
        mentions_me: bool,
    },
    Location {
        label: String,
        url: String,
        lat: Option<f64>,
        lng: Option<f64>,
    },
    Image {
        media_id: String,
        width: i64,
        height: i64,
    },
    Voice {
        length_ms: i64,
    },
    Video {
        /// Seconds.
        play_length: i64,
        /// MsgType 62 (short "micro video").
        micro: bool,
    },
    Emoticon {
        md5: Option<String>,
        cdn_url: Option<String>,
    },
    Card {
        user_name: String,
        nick_name: String,
        alias: String,
        province: String,
        city: String,
        sex: i64,
    },
    Link {
        title: String,
        desc: String,
        url: String,
        thumb_url: String,
        app_type: i64,
    },
    File {
        name: String,
        size: u64,
        media_id: String,
        ext: String,
    },
    MiniProgram {
        title: String,
        url: String,
        app_id: String,
    },
    Transfer {
        text: String,
        transfer_id: Option<String>,
        pay_subtype: Option<i64>,
    },
    RedPacket {
        text: String,
    },
    ShareLocation {
        text: String,
    },
    App {
        app_type: i64,
        title: String,
        url: String,
    },
    FriendRequest {
        user_name: String,
        nick_name: String,
        greeting: String,
        /// Verify ticket for webwxverifyuser: a secret, redacted in `Debug`.
        ticket: String,
        scene: i64,
        alias: String,
        province: String,
        city: String,
        sex: i64,
    },
    StatusNotify {
        code: i64,
        user_names: Vec<String>,
    },
    System {
        text: String,
    },
    Recall {
        /// Server id of the recalled message (matches its `MsgId`).
        old_msg_id: String,
        text: String,
    },
    Other {
        msg_type: i64,
    },
}

impl fmt::Debug for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use MessageKind as K;
        match self {
            K::Text {
                text,
                mentions,
                mentions_me,
            } => f
                .debug_struct("Text")
                .field("text", text)
                .field("mentions", mentions)
                .field("mentions_me", mentions_me)
                .finish(),
            K::Location {
                label,
                url,
                lat,
                lng,
            } => f
                .debug_struct("Location")
                .field("label", label)
                .field("url", url)
                .field("lat", lat)
                .field("lng", lng)
                .finish(),
            K::Image {
                media_id,
                width,
                height,
            } => f
                .debug_struct("Image")
                .field("media_id", media_id)
                .field("width", width)
                .field("height", height)
                .finish(),
            K::Voice { length_ms } => f
                .debug_struct("Voice")
                .field("length_ms", length_ms)
                .finish(),
            K::Video { play_length, micro } => f
                .debug_struct("Video")
                .field("play_length", play_length)
                .field("micro", micro)
                .finish(),
            K::Emoticon { md5, cdn_url } => f
                .debug_struct("Emoticon")
                .field("md5", md5)
                .field("cdn_url", cdn_url)
                .finish(),
            K::Card {
                user_name,
                nick_name,
                alias,
                province,
                city,
                sex,
            } => f
                .debug_struct("Card")
                .field("user_name", user_name)
                .field("nick_name", nick_name)
                .field("alias", alias)
                .field("province", province)
                .field("city", city)
                .field("sex", sex)
                .finish(),
            K::Link {
                title,
                desc,
                url,
                thumb_url,
                app_type,
            } => f
                .debug_struct("Link")
                .field("title", title)
                .field("desc", desc)
                .field("url", url)
                .field("thumb_url", thumb_url)
                .field("app_type", app_type)
                .finish(),
            K::File {
                name,
                size,
                media_id,
                ext,
            } => f
                .debug_struct("File")
                .field("name", name)
                .field("size", size)
                .field("media_id", media_id)
                .field("ext", ext)
                .finish(),
            K::MiniProgram { title, url, app_id } => f
                .debug_struct("MiniProgram")
                .field("title", title)
                .field("url", url)
                .field("app_id", app_id)
                .finish(),
            K::Transfer {
                text,
                transfer_id,
                pay_subtype,
            } => f
                .debug_struct("Transfer")
                .field("text", text)
                .field("transfer_id", transfer_id)
                .field("pay_subtype", pay_subtype)
                .finish(),
            K::RedPacket { text } => f.debug_struct("RedPacket").field("text", text).finish(),
            K::ShareLocation { text } => {
                f.debug_struct("ShareLocation").field("text", text).finish()
            }
            K::App {
                app_type,
                title,
                url,
            } => f
                .debug_struct("App")
                .field("app_type", app_type)
                .field("title", title)
                .field("url", url)
                .finish(),
            K::FriendRequest {
                user_name,
                nick_name,
                greeting,
                ticket,
                scene,
                alias,
                province,
                city,
                sex,
            } => f
                .debug_struct("FriendRequest")
                .field("user_name", user_name)
                .field("nick_name", nick_name)
                .field("greeting", greeting)
                .field("ticket", &redact(ticket))
                .field("scene", scene)
                .field("alias", alias)
                .field("province", province)
                .field("city", city)
                .field("sex", sex)
                .finish(),
            K::StatusNotify { code, user_names } => f
                .debug_struct("StatusNotify")
                .field("code", code)
                .field("user_names", user_names)
                .finish(),
            K::System { text } => f.debug_struct("System").field("text", text).finish(),
            K::Recall { old_msg_id, text } => f
                .debug_struct("Recall")
                .field("old_msg_id", old_msg_id)
                .field("text", text)
                .finish(),
            K::Other { msg_type } => f.debug_struct("Other").field("msg_type", msg_type).finish(),
        }
    }
}

/// One received (or echoed) message, interpreted.
#[derive(Clone, PartialEq)]
pub struct Message {
    pub msg_id: String,
    pub new_msg_id: i64,
    pub create_time: i64,
    pub msg_type: i64,
    /// AppMsgType for MsgType 49 (from the JSON field, else the XML `<type>`), else 0.
    pub app_msg_type: i64,
    /// Raw UserNames as sent by the server.
    pub from: String,
    pub to: String,
    pub chat: Chat,
    /// Sent by this account (from the phone or this client).
    pub outgoing: bool,
    pub kind: MessageKind,
    /// `Content` exactly as received (escaped, group prefix included).
    pub raw_content: String,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("msg_id", &self.msg_id)
            .field("new_msg_id", &self.new_msg_id)
            .field("create_time", &self.create_time)
            .field("msg_type", &self.msg_type)
            .field("app_msg_type", &self.app_msg_type)
            .field("from", &self.from)
            .field("to", &self.to)
            .field("chat", &self.chat)
            .field("outgoing", &self.outgoing)
            .field("kind", &self.kind)
            .field("raw_content", &Len(self.raw_content.len()))
            .finish()
    }
}

/// Converts message text to plain text: emoji spans → characters, `<br/>` → `\n`, HTML entities
/// decoded, including the second level of escaping the server applies to text embedded in XML
/// (`&amp;lt;` → `<`).
pub fn unescape_content(s: &str) -> String {
    let s = replace_emoji_spans(s);
    let s = replace_line_breaks(&s);
    let once = decode_entities(&s);
    decode_xml_entities_lenient(&once).into_owned()
}

/// Reads the XML carried (escaped) in a message body. Spans and line breaks are replaced first,
/// since they arrive as real markup inside the escaped document. Returns `None` when nothing
/// XML-like can be read.
fn content_xml(body: &str) -> Option<XmlElement> {
    let s = replace_emoji_spans(body);
    let s = replace_line_breaks(&s);
    let decoded = decode_entities(&s);
    let from_first_tag = |t: &str| t.find('<').map(|i| t[i..].to_owned());
    if let Some(x) = from_first_tag(&decoded).and_then(|t| parse_xml(&t).ok()) {
        return Some(x);
    }
    // Some senders (and simulators) put the XML in unescaped.
    from_first_tag(&s).and_then(|t| parse_xml(&t).ok())
}

fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

fn first_non_empty<'a>(candidates: impl IntoIterator<Item = &'a str>) -> String {
    candidates
        .into_iter()
        .map(str::trim)
        .find(|s| !s.is_empty())
        .unwrap_or_default()
        .to_owned()
}

fn attr_of<'a>(el: Option<&'a XmlElement>, name: &str) -> &'a str {
    el.and_then(|e| e.attr(name)).unwrap_or_default()
}

fn text_of<'a>(el: Option<&'a XmlElement>, path: &[&str]) -> &'a str {
    el.and_then(|e| e.path(path))
        .map(XmlElement::text)
        .unwrap_or_default()
}

fn attr_i64(el: Option<&XmlElement>, name: &str) -> i64 {
    attr_of(el, name).trim().parse().unwrap_or(0)
}

/// Splits the `@member:<br/>body` prefix of a group message sent by someone else.
fn split_group_prefix(content: &str) -> Option<(&str, &str)> {
    let pos = content.find(":<br/>")?;
    let prefix = &content[..pos];
    let valid = prefix.len() > 1
        && prefix.starts_with('@')
        && !prefix
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '<' | '>' | '&' | ':' | '"'));
    valid.then(|| (prefix, &content[pos + ":<br/>".len()..]))
}

/// Parses an `AddMsgList` entry. Never panics.
pub fn parse_message(raw: RawMessage, book: &ContactBook) -> Message {
    let self_name = book.self_user_name();
    let from = raw.from_user_name.clone();
    let to = raw.to_user_name.clone();
    let outgoing = !self_name.is_empty() && from == self_name;
    let is_notice = matches!(raw.msg_type, msg_type::SYS | msg_type::RECALLED);

    let (chat, body) = if is_group_name(&from) {
        match split_group_prefix(&raw.content).filter(|_| !is_notice) {
            Some((sender, body)) => (
                Chat::Group {
                    room: from.clone(),
                    sender: Some(sender.to_owned()),
                },
                body,
            ),
            None => (
                Chat::Group {
                    room: from.clone(),
                    sender: None,
                },
                raw.content.as_str(),
            ),
        }
    } else if is_group_name(&to) {
        // Our own (or echoed) message into a group: no prefix, except that some senders add
        // their own name anyway.
        let body = split_group_prefix(&raw.content)
            .filter(|(sender, _)| *sender == from)
            .map_or(raw.content.as_str(), |(_, body)| body);
        (
            Chat::Group {
                room: to.clone(),
                sender: Some(from.clone()),
            },
            body,
        )
    } else {
        let peer = if outgoing { to.clone() } else { from.clone() };
        (Chat::Private { peer }, raw.content.as_str())
    };

    let mut app_msg_type = 0;
    let kind = match raw.msg_type {
        msg_type::TEXT if !raw.url.trim().is_empty() || raw.sub_msg_type == 48 => {
            location_from_text(&raw, body)
        }
        msg_type::TEXT => text_kind(body, &chat, outgoing, book),
        msg_type::LOCATION => location_from_xml(&raw, body),
        msg_type::IMAGE => image_kind(&raw, body),
        msg_type::VOICE => {
            let x = content_xml(body);
            let vm = x.as_ref().and_then(|x| x.find("voicemsg"));
            MessageKind::Voice {
                length_ms: if raw.voice_length > 0 {
                    raw.voice_length
                } else {
                    attr_i64(vm, "voicelength")
                },
            }
        }
        msg_type::VIDEO | msg_type::MICRO_VIDEO => {
            let x = content_xml(body);
            let vm = x.as_ref().and_then(|x| x.find("videomsg"));
            MessageKind::Video {
                play_length: if raw.play_length > 0 {
                    raw.play_length
                } else {
                    attr_i64(vm, "playlength")
                },
                micro: raw.msg_type == msg_type::MICRO_VIDEO,
            }
        }
        msg_type::EMOTICON => {
            let x = content_xml(body);
            let emoji = x.as_ref().and_then(|x| x.find("emoji"));
            MessageKind::Emoticon {
                md5: non_empty(attr_of(emoji, "md5")),
                cdn_url: non_empty(attr_of(emoji, "cdnurl")),
            }
        }
        msg_type::SHARE_CARD => card_kind(&raw, body),
        msg_type::VERIFY => friend_request_kind(&raw, body),
        msg_type::APP => {
            let (kind, t) = app_kind(&raw, body);
            app_msg_type = t;
            kind
        }
        msg_type::STATUS_NOTIFY => MessageKind::StatusNotify {
            code: raw.status_notify_code,
            user_names: raw
                .status_notify_user_name
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        },
        msg_type::SYS => MessageKind::System {
            text: unescape_content(body),
        },
        msg_type::RECALLED => recall_kind(body),
        other => MessageKind::Other { msg_type: other },
    };

    let new_msg_id = if raw.new_msg_id != 0 {
        raw.new_msg_id
    } else {
        raw.msg_id.trim().parse().unwrap_or(0)
    };
    let msg_id = match non_empty(&raw.msg_id) {
        Some(id) => id,
        None if new_msg_id != 0 => new_msg_id.to_string(),
        None => String::new(),
    };
    Message {
        msg_id,
        new_msg_id,
        create_time: raw.create_time,
        msg_type: raw.msg_type,
        app_msg_type,
        from,
        to,
        chat,
        outgoing,
        kind,
        raw_content: raw.content,
    }
}

// ---------------------------------------------------------------------------------------------
// Text and mentions
// ---------------------------------------------------------------------------------------------

fn text_kind(body: &str, chat: &Chat, outgoing: bool, book: &ContactBook) -> MessageKind {
    let text = unescape_content(body);
    let (mentions, mentions_me) = match chat {
        Chat::Group { room, .. } => {
            let mentions = find_mentions(&text, room, book);
            let me = !outgoing
                && (mentions.iter().any(|m| m == book.self_user_name())
                    || mentions_self(&text, room, book));
            (mentions, me)
        }
        Chat::Private { .. } => (Vec::new(), false),
    };
    MessageKind::Text {
        text,
        mentions,
        mentions_me,
    }
}

/// itchat's rule (spec §5.3): `@` + own group nickname (else nickname), followed by U+2005 or a
/// space, or at the very end.
fn mentions_self(text: &str, room: &str, book: &ContactBook) -> bool {
    let me = book.self_user();
    let group_name = book
        .group_member(room, &me.user_name)
        .map(|m| &*m.display_name)
        .filter(|s| !s.is_empty());
    let name = group_name.unwrap_or(&me.nick_name);
    if name.is_empty() {
        return false;
    }
    let flag = format!("@{name}");
    text.contains(&format!("{flag}{MENTION_SEPARATOR}"))
        || text.contains(&format!("{flag} "))
        || text.ends_with(&flag)
}

fn ends_mention(rest: &str) -> bool {
    rest.chars()
        .next()
        .is_none_or(|c| c == MENTION_SEPARATOR || c.is_whitespace())
}

/// Finds `@Name` mentions. Names of the group's members (group nickname or nickname, the account's
/// own included) are matched longest first, so names with spaces resolve; other `@words` count
/// when the phone's U+2005 ends them, or when they stand alone between spaces.
fn find_mentions(text: &str, room: &str, book: &ContactBook) -> Vec<String> {
    let mut known: Vec<(&str, &str)> = Vec::new();
    if let Some(group) = book.get(room) {
        for m in &group.members {
            for name in [&*m.display_name, &*m.nick_name] {
                if !name.is_empty() {
                    known.push((name, &*m.user_name));
                }
            }
        }
    }
    let me = book.self_user();
    if !me.nick_name.is_empty() {
        known.push((&*me.nick_name, &*me.user_name));
    }
    known.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));

    let mut out: Vec<String> = Vec::new();
    let mut push = |m: String| {
        if !out.contains(&m) {
            out.push(m);
        }
    };
    let mut i = 0;
    while let Some(off) = text[i..].find('@') {
        let at = i + off;
        let rest = &text[at + 1..];
        i = at + 1;
        if let Some((name, user)) = known
            .iter()
            .find(|(name, _)| rest.starts_with(name) && ends_mention(&rest[name.len()..]))
        {
            push((*user).to_owned());
            i += name.len();
            continue;
        }
        let standalone = text[..at]
            .chars()
            .next_back()
            .is_none_or(|c| c.is_whitespace() || c == MENTION_SEPARATOR);
        let by_separator = rest
            .find([MENTION_SEPARATOR, '\n', '@'])
            .filter(|&end| rest[end..].starts_with(MENTION_SEPARATOR));
        let end = match by_separator {
            Some(end) => Some(end),
            None if standalone => Some(rest.find(char::is_whitespace).unwrap_or(rest.len())),
            None => None,
        };
        if let Some(end) = end {
            let name = rest[..end].trim();
            if !name.is_empty() && name.chars().count() <= 64 {
                push(name.to_owned());
                i += end;
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Other kinds
// ---------------------------------------------------------------------------------------------

/// `coord=lat,lng` (or `latlng=`) in a map URL.
fn coords_from_url(url: &str) -> Option<(f64, f64)> {
    let parsed = url::Url::parse(url.trim()).ok()?;
    parsed.query_pairs().find_map(|(k, v)| {
        if k != "coord" && k != "latlng" {
            return None;
        }
        let (lat, lng) = v.split_once(',')?;
        let lat: f64 = lat.trim().parse().ok()?;
        let lng: f64 = lng.trim().parse().ok()?;
        valid_coords(lat, lng).then_some((lat, lng))
    })
}

fn valid_coords(lat: f64, lng: f64) -> bool {
    lat.is_finite() && lng.is_finite() && lat.abs() <= 90.0 && lng.abs() <= 180.0
}

/// `<location x="lat" y="lng" label=… poiname=…/>`, from OriContent or the body.
fn location_element(raw: &RawMessage, body: &str) -> Option<XmlElement> {
    [raw.ori_content.as_str(), body]
        .into_iter()
        .filter_map(content_xml)
        .find_map(|x| x.find("location").cloned())
}

fn location_parts(raw: &RawMessage, body: &str) -> (String, Option<f64>, Option<f64>) {
    let loc = location_element(raw, body);
    let xml_coords = loc.as_ref().and_then(|l| {
        let lat: f64 = l.attr("x")?.trim().parse().ok()?;
        let lng: f64 = l.attr("y")?.trim().parse().ok()?;
        valid_coords(lat, lng).then_some((lat, lng))
    });
    let (lat, lng) = xml_coords
        .or_else(|| coords_from_url(&raw.url))
        .map_or((None, None), |(a, b)| (Some(a), Some(b)));
    let label = first_non_empty([
        attr_of(loc.as_ref(), "label"),
        attr_of(loc.as_ref(), "poiname"),
    ]);
    (label, lat, lng)
}

/// MsgType 1 with a `Url`: `Place(addr):<br/>/cgi-bin/mmwebwx-bin/webwxgetpubliclinkimg?…`.
fn location_from_text(raw: &RawMessage, body: &str) -> MessageKind {
    let head = body.split(":<br/>").next().unwrap_or_default();
    let (xml_label, lat, lng) = location_parts(raw, body);
    let label = first_non_empty([unescape_content(head).as_str(), xml_label.as_str()]);
    MessageKind::Location {
        label,
        url: raw.url.trim().to_owned(),
        lat,
        lng,
    }
}

fn location_from_xml(raw: &RawMessage, body: &str) -> MessageKind {
    let (label, lat, lng) = location_parts(raw, body);
    MessageKind::Location {
        label,
        url: raw.url.trim().to_owned(),
        lat,
        lng,
    }
}

fn image_kind(raw: &RawMessage, body: &str) -> MessageKind {
    let (mut width, mut height) = (raw.img_width, raw.img_height);
    if width <= 0 || height <= 0 {
        let x = content_xml(body);
        let img = x.as_ref().and_then(|x| x.find("img"));
        for (w, h) in [
            ("cdnhdwidth", "cdnhdheight"),
            ("cdnmidwidth", "cdnmidheight"),
        ] {
            let (xw, xh) = (attr_i64(img, w), attr_i64(img, h));
            if xw > 0 && xh > 0 {
                (width, height) = (xw, xh);
                break;
            }
        }
    }
    MessageKind::Image {
        media_id: raw.media_id.trim().to_owned(),
        width: width.max(0),
        height: height.max(0),
    }
}

fn card_kind(raw: &RawMessage, body: &str) -> MessageKind {
    let x = content_xml(body);
    let m = x.as_ref().and_then(|x| x.find("msg"));
    let ri = raw.recommend_info.clone().unwrap_or_default();
    let sex = if ri.sex != 0 {
        ri.sex
    } else {
        attr_i64(m, "sex")
    };
    MessageKind::Card {
        user_name: first_non_empty([ri.user_name.as_str(), attr_of(m, "username")]),
        nick_name: unescape_content(&first_non_empty([
            ri.nick_name.as_str(),
            attr_of(m, "nickname"),
        ])),
        alias: first_non_empty([ri.alias.as_str(), attr_of(m, "alias")]),
        province: unescape_content(&first_non_empty([
            ri.province.as_str(),
            attr_of(m, "province"),
        ])),
        city: unescape_content(&first_non_empty([ri.city.as_str(), attr_of(m, "city")])),
        sex,
    }
}

fn friend_request_kind(raw: &RawMessage, body: &str) -> MessageKind {
    let x = content_xml(body);
    let m = x.as_ref().and_then(|x| x.find("msg"));
    let ri = raw.recommend_info.clone().unwrap_or_default();
    let scene = if ri.scene != 0 {
        ri.scene
    } else {
        attr_i64(m, "scene")
    };
    let sex = if ri.sex != 0 {
        ri.sex
    } else {
        attr_i64(m, "sex")
    };
    MessageKind::FriendRequest {
        user_name: first_non_empty([ri.user_name.as_str(), attr_of(m, "fromusername")]),
        nick_name: unescape_content(&first_non_empty([
            ri.nick_name.as_str(),
            attr_of(m, "fromnickname"),
        ])),
        greeting: unescape_content(&first_non_empty([
            ri.content.as_str(),
            attr_of(m, "content"),
        ])),
        ticket: first_non_empty([
            ri.ticket.as_str(),
            attr_of(m, "ticket"),
            raw.ticket.as_str(),
        ]),
        scene,
        alias: first_non_empty([ri.alias.as_str(), attr_of(m, "alias")]),
        province: unescape_content(&first_non_empty([
            ri.province.as_str(),
            attr_of(m, "province"),
        ])),
        city: unescape_content(&first_non_empty([ri.city.as_str(), attr_of(m, "city")])),
        sex,
    }
}

fn recall_kind(body: &str) -> MessageKind {
    let x = content_xml(body);
    let rm = x.as_ref().and_then(|x| x.find("revokemsg"));
    MessageKind::Recall {
        old_msg_id: first_non_empty([text_of(rm, &["msgid"]), text_of(rm, &["oldmsgid"])]),
        text: text_of(rm, &["replacemsg"]).replace('\\', ""),
    }
}

/// Extension of a file name, without the dot ("" when none).
fn extension(name: &str) -> String {
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() && !ext.is_empty() && ext.len() <= 16 => {
            ext.to_ascii_lowercase()
        }
        _ => String::new(),
    }
}

/// MsgType 49: the kind by AppMsgType, and the AppMsgType used.
fn app_kind(raw: &RawMessage, body: &str) -> (MessageKind, i64) {
    let x = content_xml(body);
    let app = x.as_ref().and_then(|x| x.find("appmsg"));
    let xml_type: i64 = text_of(app, &["type"]).parse().unwrap_or(0);
    let t = if raw.app_msg_type != 0 {
        raw.app_msg_type
    } else {
        xml_type
    };
    let file_name = unescape_content(&raw.file_name);
    let title = first_non_empty([text_of(app, &["title"]), file_name.as_str()]);
    let desc = text_of(app, &["des"]).to_owned();
    let url = first_non_empty([text_of(app, &["url"]), raw.url.as_str()]);
    let kind = match t {
        app_type::ATTACH => {
            let size = raw
                .file_size
                .trim()
                .parse::<u64>()
                .ok()
                .or_else(|| text_of(app, &["appattach", "totallen"]).parse().ok())
                .unwrap_or(0);
            let name = first_non_empty([file_name.as_str(), text_of(app, &["title"])]);
            let ext = first_non_empty([
                text_of(app, &["appattach", "fileext"]),
                extension(&name).as_str(),
            ]);
            MessageKind::File {
                size,
                media_id: first_non_empty([
                    raw.media_id.as_str(),
                    text_of(app, &["appattach", "attachid"]),
                ]),
                ext,
                name,
            }
        }
        app_type::AUDIO | app_type::VIDEO | app_type::URL => MessageKind::Link {
            title,
            desc,
            url,
            thumb_url: text_of(app, &["thumburl"]).to_owned(),
            app_type: t,
        },
        app_type::EMOJI => MessageKind::Emoticon {
            md5: non_empty(text_of(app, &["appattach", "emoticonmd5"])),
            cdn_url: non_empty(text_of(app, &["appattach", "cdnattachurl"])),
        },
        app_type::REALTIME_SHARE_LOCATION => MessageKind::ShareLocation {
            text: first_non_empty([file_name.as_str(), text_of(app, &["title"])]),
        },
        app_type::MINI_PROGRAM | app_type::MINI_PROGRAM_NEW => MessageKind::MiniProgram {
            title,
            url,
            app_id: first_non_empty([
                text_of(app, &["weappinfo", "appid"]),
                attr_of(app, "appid"),
                raw.app_info.as_ref().map_or("", |a| a.app_id.as_str()),
            ]),
        },
        app_type::TRANSFERS => {
            let pay = app.and_then(|a| a.child("wcpayinfo"));
            // itchat shows the description up to its first full stop ("收到转账0.10元。如需…").
            let first_sentence = desc.split('。').next().unwrap_or_default();
            MessageKind::Transfer {
                text: first_non_empty([first_sentence, text_of(pay, &["feedesc"]), title.as_str()]),
                transfer_id: non_empty(text_of(pay, &["transferid"])),
                pay_subtype: text_of(pay, &["paysubtype"]).parse().ok(),
            }
        }
        app_type::RED_ENVELOPES => MessageKind::RedPacket {
            text: first_non_empty([desc.as_str(), title.as_str()]),
        },
        other => MessageKind::App {
            app_type: other,
            title,
            url,
        },
    };
    (kind, t)
}

// ---------------------------------------------------------------------------------------------
// One-line rendering
// ---------------------------------------------------------------------------------------------

/// Longest summary kept in [`Message::one_line`], in characters.
const ONE_LINE_MAX: usize = 300;

/// Newlines become `↵`, other control characters spaces; long text is cut with `…`.
fn single_line(s: &str) -> String {
    let mut out = String::new();
    for (n, c) in s.chars().enumerate() {
        if n >= ONE_LINE_MAX {
            out.push('…');
            break;
        }
        match c {
            '\n' => out.push('↵'),
            '\r' => {}
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

impl Message {
    /// The member who spoke in a group, or the sender of a private message.
    pub fn sender(&self) -> Option<&str> {
        match &self.chat {
            Chat::Group { sender, .. } => sender.as_deref(),
            Chat::Private { .. } => Some(&self.from),
        }
    }

    /// A short description of the content, e.g. `hi`, `[image 640x480]`.
    pub fn summary(&self) -> String {
        use MessageKind as K;
        match &self.kind {
            K::Text { text, .. } => text.clone(),
            K::Location { label, .. } => format!("[location {label}]"),
            K::Image { width, height, .. } if *width > 0 && *height > 0 => {
                format!("[image {width}x{height}]")
            }
            K::Image { .. } => "[image]".into(),
            K::Voice { length_ms } => format!("[voice {:.1}s]", *length_ms as f64 / 1000.0),
            K::Video { play_length, micro } => format!(
                "[{} {play_length}s]",
                if *micro { "micro video" } else { "video" }
            ),
            K::Emoticon { .. } => "[emoticon]".into(),
            K::Card { nick_name, .. } => format!("[card {nick_name}]"),
            K::Link { title, url, .. } => format!("[link {title} {url}]"),
            K::File { name, size, .. } => format!("[file {name}, {size} bytes]"),
            K::MiniProgram { title, .. } => format!("[mini program {title}]"),
            K::Transfer { text, .. } => format!("[transfer {text}]"),
            K::RedPacket { text } => format!("[red packet {text}]"),
            K::ShareLocation { text } => format!("[location sharing {text}]"),
            K::App {
                app_type, title, ..
            } => format!("[app {app_type} {title}]"),
            K::FriendRequest {
                nick_name,
                greeting,
                ..
            } => format!("[friend request from {nick_name}: {greeting}]"),
            K::StatusNotify { code, user_names } => {
                format!("[status notify {code}, {} chats]", user_names.len())
            }
            K::System { text } => format!("[system] {text}"),
            K::Recall { text, .. } => format!("[recall] {text}"),
            K::Other { msg_type } => format!("[message type {msg_type}]"),
        }
    }

    /// A human-readable single line: `[Team] Bob: hi @Alice`, `Bob → me: [image 640x480]`.
    pub fn one_line(&self, book: &ContactBook) -> String {
        let self_name = book.self_user_name();
        let name = |u: &str| -> String {
            if !self_name.is_empty() && u == self_name {
                "me".to_owned()
            } else {
                book.display_name_of(u).to_owned()
            }
        };
        let head = match &self.chat {
            Chat::Group { room, sender } => {
                let room_name = book.display_name_of(room);
                match sender {
                    Some(s) if s == self_name => format!("[{room_name}] me: "),
                    Some(s) => format!("[{room_name}] {}: ", book.member_display_name(room, s)),
                    None => format!("[{room_name}] "),
                }
            }
            Chat::Private { .. } => format!("{} → {}: ", name(&self.from), name(&self.to)),
        };
        single_line(&(head + &self.summary()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wechat::contact::Contact;
    use serde_json::{Value, json};

    const SELF: &str = "@f0c04abe389590b02d91684d99584439";
    const BOB: &str = "@b0b1e2d3c4b5a69788796a5b4c3d2e1f";
    const ALICE: &str = "@a11ce2d3c4b5a69788796a5b4c3d2e1f";
    const CAROL: &str = "@ca201e2d3c4b5a69788796a5b4c3d2e1";
    const ROOM: &str = "@@9a7f6e5d4c3b2a19081726354453627180a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5";
    const ROOM2: &str = "@@2222222222222222222222222222222222222222222222222222222222222222";

    fn contact(v: Value) -> Contact {
        Contact::from_raw(serde_json::from_value(v).unwrap(), SELF)
    }

    fn book() -> ContactBook {
        let mut b = ContactBook::new(contact(
            json!({"UserName": SELF, "NickName": "Me", "Uin": 176666155, "ContactFlag": 0}),
        ));
        b.upsert(contact(
            json!({"UserName": BOB, "NickName": "Bob", "ContactFlag": 3}),
        ));
        b.upsert(contact(json!({
            "UserName": ROOM, "NickName": "Team", "MemberCount": 4,
            "MemberList": [
                {"UserName": SELF, "NickName": "Me", "DisplayName": "Boss"},
                {"UserName": BOB, "NickName": "Bob", "DisplayName": ""},
                {"UserName": ALICE, "NickName": "Alice W", "DisplayName": "Alice"},
                {"UserName": CAROL, "NickName": "Carol Ann", "DisplayName": ""}
            ]
        })));
        b.upsert(contact(json!({
            "UserName": ROOM2, "NickName": "Plain",
            "MemberList": [{"UserName": SELF, "NickName": "Me"}, {"UserName": BOB, "NickName": "Bob"}]
        })));
        b
    }

    /// An AddMsgList entry with every §5.1 field at its usual empty value, overridden by `fields`.
    fn raw(fields: Value) -> RawMessage {
        let mut base = json!({
            "MsgId": "6829170713397432617", "NewMsgId": 6829170713397432617i64,
            "FromUserName": BOB, "ToUserName": SELF, "MsgType": 1, "Content": "",
            "Status": 3, "ImgStatus": 1, "CreateTime": 1546211600, "VoiceLength": 0, "PlayLength": 0,
            "FileName": "", "FileSize": "", "MediaId": "", "Url": "", "AppMsgType": 0,
            "StatusNotifyCode": 0, "StatusNotifyUserName": "",
            "RecommendInfo": {"UserName": "", "NickName": "", "QQNum": 0, "Province": "", "City": "",
                "Content": "", "Signature": "", "Alias": "", "Scene": 0, "VerifyFlag": 0, "AttrStatus": 0,
                "Sex": 0, "Ticket": "", "OpCode": 0},
            "ForwardFlag": 0, "AppInfo": {"AppID": "", "Type": 0}, "HasProductId": 0, "Ticket": "",
            "ImgHeight": 0, "ImgWidth": 0, "SubMsgType": 0, "NewMsgId2": null, "OriContent": "",
            "EncryFileName": ""
        });
        for (k, v) in fields.as_object().unwrap() {
            base[k] = v.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    fn parse(fields: Value) -> Message {
        parse_message(raw(fields), &book())
    }

    fn text_of_kind(m: &Message) -> (&str, &[String], bool) {
        match &m.kind {
            MessageKind::Text {
                text,
                mentions,
                mentions_me,
            } => (text, mentions, *mentions_me),
            other => panic!("not text: {other:?}"),
        }
    }

    // ---- text, groups, mentions ----

    #[test]
    fn private_text_is_unescaped() {
        let m = parse(json!({
            "Content": "hello&lt;world&gt; &amp;amp; x&amp;lt;y <span class=\"emoji emoji1f604\"></span><br/>line2"
        }));
        assert_eq!(m.msg_id, "6829170713397432617");
        assert_eq!(m.new_msg_id, 6829170713397432617);
        assert_eq!(m.create_time, 1546211600);
        assert_eq!(m.chat, Chat::Private { peer: BOB.into() });
        assert!(!m.outgoing);
        let (text, mentions, me) = text_of_kind(&m);
        assert_eq!(text, "hello<world> & x<y 😄\nline2");
        assert!(mentions.is_empty());
        assert!(!me);
        assert!(m.raw_content.starts_with("hello&lt;world"));
        assert_eq!(m.one_line(&book()), "Bob → me: hello<world> & x<y 😄↵line2");
        assert_eq!(m.sender(), Some(BOB));
    }

    #[test]
    fn outgoing_private_text() {
        let m = parse(json!({"FromUserName": SELF, "ToUserName": BOB, "Content": "hi"}));
        assert!(m.outgoing);
        assert_eq!(m.chat, Chat::Private { peer: BOB.into() });
        assert_eq!(m.one_line(&book()), "me → Bob: hi");
        let m = parse(json!({"FromUserName": SELF, "ToUserName": "filehelper", "Content": "note"}));
        assert_eq!(
            m.chat,
            Chat::Private {
                peer: "filehelper".into()
            }
        );
        assert_eq!(m.one_line(&book()), "me → filehelper: note");
    }

    #[test]
    fn group_message_prefix_and_mentions() {
        let m = parse(json!({
            "FromUserName": ROOM,
            "Content": format!("{BOB}:<br/>hi @Alice\u{2005}and @Carol Ann\u{2005}and @Zed\u{2005}!")
        }));
        assert_eq!(
            m.chat,
            Chat::Group {
                room: ROOM.into(),
                sender: Some(BOB.into())
            }
        );
        assert!(!m.outgoing);
        let (text, mentions, me) = text_of_kind(&m);
        assert_eq!(
            text,
            "hi @Alice\u{2005}and @Carol Ann\u{2005}and @Zed\u{2005}!"
        );
        assert_eq!(mentions, [ALICE, CAROL, "Zed"]);
        assert!(!me);
        assert_eq!(m.sender(), Some(BOB));
        assert!(m.one_line(&book()).starts_with("[Team] Bob: hi @Alice"));
    }

    #[test]
    fn mentions_of_me() {
        // Group nickname + U+2005 (what the phone inserts).
        let m = parse(
            json!({"FromUserName": ROOM, "Content": format!("{BOB}:<br/>@Boss\u{2005}please look")}),
        );
        let (_, mentions, me) = text_of_kind(&m);
        assert!(me);
        assert_eq!(mentions, [SELF]);
        // At the very end, and followed by a plain space.
        for body in ["ping @Boss", "@Boss look"] {
            let m = parse(json!({"FromUserName": ROOM, "Content": format!("{BOB}:<br/>{body}")}));
            assert!(text_of_kind(&m).2, "{body}");
        }
        // No group nickname in ROOM2: the nickname counts.
        let m =
            parse(json!({"FromUserName": ROOM2, "Content": format!("{BOB}:<br/>@Me\u{2005}hi")}));
        assert!(text_of_kind(&m).2);
        // A longer name that merely starts with mine is not me.
        let m =
            parse(json!({"FromUserName": ROOM2, "Content": format!("{BOB}:<br/>@Meredith hi")}));
        let (_, mentions, me) = text_of_kind(&m);
        assert!(!me);
        assert_eq!(mentions, ["Meredith"]);
        // E-mail addresses and lone @ are not mentions.
        let m = parse(
            json!({"FromUserName": ROOM, "Content": format!("{BOB}:<br/>mail a@b.com @ 5pm")}),
        );
        assert_eq!(text_of_kind(&m).1, [] as [String; 0]);
        // My own messages never "mention me".
        let m = parse(
            json!({"FromUserName": SELF, "ToUserName": ROOM, "Content": "@Boss\u{2005}note to self"}),
        );
        assert!(!text_of_kind(&m).2);
        // Private chats have no mentions.
        let m = parse(json!({"Content": "@Me\u{2005}hi"}));
        assert_eq!(text_of_kind(&m), ("@Me\u{2005}hi", &[][..], false));
    }

    #[test]
    fn self_sent_group_copy() {
        let m = parse(
            json!({"FromUserName": SELF, "ToUserName": ROOM, "Content": "hi all<br/>second"}),
        );
        assert!(m.outgoing);
        assert_eq!(
            m.chat,
            Chat::Group {
                room: ROOM.into(),
                sender: Some(SELF.into())
            }
        );
        assert_eq!(text_of_kind(&m).0, "hi all\nsecond");
        assert_eq!(m.one_line(&book()), "[Team] me: hi all↵second");
        // A copy that does carry our own prefix has it removed.
        let m = parse(
            json!({"FromUserName": SELF, "ToUserName": ROOM, "Content": format!("{SELF}:<br/>x")}),
        );
        assert_eq!(text_of_kind(&m).0, "x");
    }

    #[test]
    fn group_message_without_valid_prefix() {
        for content in ["no prefix here", "Note:<br/>body", "@a b:<br/>x", ":<br/>x"] {
            let m = parse(json!({"FromUserName": ROOM, "Content": content}));
            assert_eq!(
                m.chat,
                Chat::Group {
                    room: ROOM.into(),
                    sender: None
                },
                "{content}"
            );
        }
        let m = parse(json!({"FromUserName": ROOM, "Content": "@x:<br/>"}));
        assert_eq!(
            m.chat,
            Chat::Group {
                room: ROOM.into(),
                sender: Some("@x".into())
            }
        );
        assert_eq!(text_of_kind(&m).0, "");
        // Unknown member: the UserName is shown.
        assert_eq!(m.one_line(&book()), "[Team] @x: ");
    }

    #[test]
    fn system_notes() {
        let m = parse(json!({
            "MsgType": 10000, "FromUserName": ROOM,
            "Content": "&quot;Bob&quot;邀请&quot;Carol Ann&quot;加入了群聊"
        }));
        assert_eq!(
            m.chat,
            Chat::Group {
                room: ROOM.into(),
                sender: None
            }
        );
        assert_eq!(
            m.kind,
            MessageKind::System {
                text: "\"Bob\"邀请\"Carol Ann\"加入了群聊".into()
            }
        );
        assert_eq!(
            m.one_line(&book()),
            "[Team] [system] \"Bob\"邀请\"Carol Ann\"加入了群聊"
        );
        // A 10000 note that happens to look like a prefix is not split.
        let m = parse(json!({"MsgType": 10000, "FromUserName": ROOM, "Content": "@x:<br/>y"}));
        assert_eq!(
            m.chat,
            Chat::Group {
                room: ROOM.into(),
                sender: None
            }
        );
        let m = parse(json!({"MsgType": 10000, "Content": "你已添加了 Bob，现在可以开始聊天了。"}));
        assert_eq!(
            m.kind,
            MessageKind::System {
                text: "你已添加了 Bob，现在可以开始聊天了。".into()
            }
        );
        let m = parse(json!({"MsgType": 10000, "Content": "收到红包，请在手机上查看"}));
        assert_eq!(
            m.one_line(&book()),
            "Bob → me: [system] 收到红包，请在手机上查看"
        );
    }

    // ---- location ----

    const LOC_CONTENT: &str = "深圳市南山区(科技园):<br/>/cgi-bin/mmwebwx-bin/webwxgetpubliclinkimg?url=xxx&amp;msgid=6829170713397432617&amp;pictype=location";
    const LOC_ORI: &str = "&lt;?xml version=\"1.0\"?&gt;\n&lt;msg&gt;\n\t&lt;location x=\"22.540503\" y=\"113.934528\" scale=\"16\" label=\"深圳市南山区(科技园)\" maptype=\"0\" poiname=\"科技园\" /&gt;\n&lt;/msg&gt;\n";

    #[test]
    fn location_as_text_with_url() {
        let m = parse(json!({
            "Content": LOC_CONTENT, "SubMsgType": 48, "OriContent": LOC_ORI,
            "Url": "http://apis.map.qq.com/uri/v1/geocoder?coord=22.540503,113.934528"
        }));
        assert_eq!(
            m.kind,
            MessageKind::Location {
                label: "深圳市南山区(科技园)".into(),
                url: "http://apis.map.qq.com/uri/v1/geocoder?coord=22.540503,113.934528".into(),
                lat: Some(22.540503),
                lng: Some(113.934528),
            }
        );
        assert_eq!(
            m.one_line(&book()),
            "Bob → me: [location 深圳市南山区(科技园)]"
        );
        // Without OriContent the coordinates come from the map URL; in a group after the prefix.
        let m = parse(json!({
            "FromUserName": ROOM, "Content": format!("{BOB}:<br/>{LOC_CONTENT}"),
            "Url": "http://apis.map.qq.com/uri/v1/geocoder?coord=1.5,2.5"
        }));
        assert_eq!(
            m.chat,
            Chat::Group {
                room: ROOM.into(),
                sender: Some(BOB.into())
            }
        );
        match m.kind {
            MessageKind::Location {
                label, lat, lng, ..
            } => {
                assert_eq!(label, "深圳市南山区(科技园)");
                assert_eq!((lat, lng), (Some(1.5), Some(2.5)));
            }
            other => panic!("{other:?}"),
        }
        // No coordinates anywhere, bad coordinates ignored.
        let m =
            parse(json!({"Content": LOC_CONTENT, "Url": "http://apis.map.qq.com/?coord=999,1"}));
        assert!(matches!(
            m.kind,
            MessageKind::Location {
                lat: None,
                lng: None,
                ..
            }
        ));
    }

    #[test]
    fn location_msg_type_48() {
        let m = parse(json!({"MsgType": 48, "Content": LOC_ORI}));
        assert_eq!(
            m.kind,
            MessageKind::Location {
                label: "深圳市南山区(科技园)".into(),
                url: String::new(),
                lat: Some(22.540503),
                lng: Some(113.934528)
            }
        );
    }

    // ---- media ----

    #[test]
    fn image() {
        let content = "&lt;?xml version=\"1.0\"?&gt;&lt;msg&gt;&lt;img aeskey=\"a1\" encryver=\"1\" cdnthumbaeskey=\"a1\" cdnthumburl=\"3053\" cdnthumblength=\"3012\" cdnthumbheight=\"120\" cdnthumbwidth=\"90\" cdnmidheight=\"0\" cdnmidwidth=\"0\" cdnhdheight=\"0\" cdnhdwidth=\"0\" cdnmidimgurl=\"3053\" length=\"53230\" md5=\"e3b0\" /&gt;&lt;/msg&gt;";
        let m = parse(
            json!({"MsgType": 3, "Content": content, "ImgWidth": 640, "ImgHeight": 480, "ImgStatus": 2, "MediaId": ""}),
        );
        assert_eq!(
            m.kind,
            MessageKind::Image {
                media_id: String::new(),
                width: 640,
                height: 480
            }
        );
        assert_eq!(m.one_line(&book()), "Bob → me: [image 640x480]");
        let hd = content.replace(
            "cdnhdheight=\"0\" cdnhdwidth=\"0\"",
            "cdnhdheight=\"1920\" cdnhdwidth=\"1080\"",
        );
        let m = parse(json!({"MsgType": 3, "Content": hd}));
        assert_eq!(
            m.kind,
            MessageKind::Image {
                media_id: String::new(),
                width: 1080,
                height: 1920
            }
        );
        let m = parse(
            json!({"MsgType": 3, "Content": "@a1b2c3d4", "MediaId": "@crypt_1", "ImgWidth": "100", "ImgHeight": "50"}),
        );
        assert_eq!(
            m.kind,
            MessageKind::Image {
                media_id: "@crypt_1".into(),
                width: 100,
                height: 50
            }
        );
        let m = parse(json!({"MsgType": 3, "Content": "garbage &lt;msg"}));
        assert_eq!(m.summary(), "[image]");
    }

    #[test]
    fn voice_and_video() {
        let voice = "&lt;msg&gt;&lt;voicemsg endflag=\"1\" cancelflag=\"0\" forwardflag=\"0\" voiceformat=\"4\" voicelength=\"3200\" length=\"5000\" bufid=\"0\" clientmsgid=\"41\" fromusername=\"wxid_b\" /&gt;&lt;/msg&gt;";
        assert_eq!(
            parse(json!({"MsgType": 34, "Content": voice, "VoiceLength": 3100})).kind,
            MessageKind::Voice { length_ms: 3100 }
        );
        let m = parse(json!({"MsgType": 34, "Content": voice}));
        assert_eq!(m.kind, MessageKind::Voice { length_ms: 3200 });
        assert_eq!(m.summary(), "[voice 3.2s]");
        let video = "&lt;?xml version=\"1.0\"?&gt;&lt;msg&gt;&lt;videomsg aeskey=\"k\" cdnthumburl=\"3057\" cdnthumblength=\"5123\" cdnthumbheight=\"240\" cdnthumbwidth=\"320\" length=\"491520\" playlength=\"5\" cdnvideourl=\"3057\" fromusername=\"wxid_b\" md5=\"m\" /&gt;&lt;/msg&gt;";
        assert_eq!(
            parse(json!({"MsgType": 43, "Content": video, "PlayLength": 12})).kind,
            MessageKind::Video {
                play_length: 12,
                micro: false
            }
        );
        let m = parse(json!({"MsgType": 62, "Content": video}));
        assert_eq!(
            m.kind,
            MessageKind::Video {
                play_length: 5,
                micro: true
            }
        );
        assert_eq!(m.summary(), "[micro video 5s]");
        assert_eq!(
            parse(json!({"MsgType": 43, "Content": "@opaque"})).kind,
            MessageKind::Video {
                play_length: 0,
                micro: false
            }
        );
    }

    #[test]
    fn emoticon() {
        let content = "&lt;msg&gt;&lt;emoji fromusername=\"wxid_b\" tousername=\"wxid_me\" type=\"2\" idbuffer=\"media:0_0\" md5=\"0a1b2c3d\" len=\"12345\" productid=\"\" androidmd5=\"0a1b2c3d\" cdnurl=\"http://emoji.qpic.cn/wx_emoji/abc/?a=1&amp;amp;b=2\" designerid=\"\" thumburl=\"\" encrypturl=\"http://emoji.qpic.cn/def/\" aeskey=\"k\" width=\"240\" height=\"240\" &gt;&lt;/emoji&gt;&lt;/msg&gt;";
        let m = parse(json!({"MsgType": 47, "Content": content}));
        assert_eq!(
            m.kind,
            MessageKind::Emoticon {
                md5: Some("0a1b2c3d".into()),
                cdn_url: Some("http://emoji.qpic.cn/wx_emoji/abc/?a=1&b=2".into())
            }
        );
        // Store stickers arrive empty.
        assert_eq!(
            parse(json!({"MsgType": 47, "Content": ""})).kind,
            MessageKind::Emoticon {
                md5: None,
                cdn_url: None
            }
        );
        let m = parse(
            json!({"MsgType": 47, "FromUserName": ROOM, "Content": format!("{BOB}:<br/>{content}")}),
        );
        assert!(matches!(m.kind, MessageKind::Emoticon { md5: Some(_), .. }));
        assert_eq!(m.one_line(&book()), "[Team] Bob: [emoticon]");
    }

    // ---- cards and friend requests ----

    #[test]
    fn card() {
        let content = "&lt;?xml version=\"1.0\"?&gt;\n&lt;msg bigheadimgurl=\"http://wx.qlogo.cn/a\" smallheadimgurl=\"\" username=\"v1_abc@stranger\" nickname=\"Carol &amp;amp; Co\" fullpy=\"\" shortpy=\"\" alias=\"carol_w\" imagestatus=\"3\" scene=\"17\" province=\"广东\" city=\"广州\" sign=\"\" sex=\"2\" certflag=\"0\" certinfo=\"\" brandIconUrl=\"\" brandHomeUrl=\"\" brandSubscriptConfigUrl=\"\" brandFlags=\"0\" regionCode=\"CN_Guangdong_Guangzhou\" /&gt;\n";
        let m = parse(json!({
            "MsgType": 42, "Content": content,
            "RecommendInfo": {"UserName": "@c4rd", "NickName": "Carol", "QQNum": 0, "Province": "广东", "City": "广州",
                "Content": "", "Signature": "", "Alias": "carol_w", "Scene": 17, "VerifyFlag": 0, "AttrStatus": 0, "Sex": 2, "Ticket": "", "OpCode": 0}
        }));
        assert_eq!(
            m.kind,
            MessageKind::Card {
                user_name: "@c4rd".into(),
                nick_name: "Carol".into(),
                alias: "carol_w".into(),
                province: "广东".into(),
                city: "广州".into(),
                sex: 2
            }
        );
        assert_eq!(m.summary(), "[card Carol]");
        // Without RecommendInfo everything comes from the XML.
        let m = parse(json!({"MsgType": 42, "Content": content, "RecommendInfo": null}));
        assert_eq!(
            m.kind,
            MessageKind::Card {
                user_name: "v1_abc@stranger".into(),
                nick_name: "Carol & Co".into(),
                alias: "carol_w".into(),
                province: "广东".into(),
                city: "广州".into(),
                sex: 2
            }
        );
    }

    const FRIEND_XML: &str = "&lt;msg fromusername=\"wxid_dave\" encryptusername=\"v1_dave@stranger\" fromnickname=\"Dave\" content=\"I&amp;apos;m Dave\" fullpy=\"dave\" shortpy=\"D\" imagestatus=\"3\" scene=\"14\" country=\"CN\" province=\"Beijing\" city=\"\" sign=\"\" percard=\"1\" sex=\"1\" alias=\"dave_w\" weibo=\"\" albumflag=\"0\" albumstyle=\"0\" albumbgimgid=\"\" snsflag=\"1\" bigheadimgurl=\"\" smallheadimgurl=\"\" ticket=\"v2_secretticket@stranger\" opcode=\"2\" googlecontact=\"\" qrticket=\"\" chatroomusername=\"\" sourceusername=\"\" sourcenickname=\"\"&gt;&lt;brandlist count=\"0\" ver=\"1\"&gt;&lt;/brandlist&gt;&lt;/msg&gt;";

    #[test]
    fn friend_request_from_recommend_info() {
        let r = raw(json!({
            "MsgType": 37, "FromUserName": "fmessage", "Content": FRIEND_XML, "Status": 3,
            "RecommendInfo": {"UserName": "@new", "NickName": "Dave", "QQNum": 0, "Province": "北京", "City": "",
                "Content": "I'm Dave", "Signature": "", "Alias": "", "Scene": 14, "VerifyFlag": 0, "AttrStatus": 0,
                "Sex": 1, "Ticket": "v2_secretticket@stranger", "OpCode": 2}
        }));
        assert!(!format!("{r:?}").contains("secretticket"), "{r:?}");
        let m = parse_message(r, &book());
        assert_eq!(
            m.chat,
            Chat::Private {
                peer: "fmessage".into()
            }
        );
        assert_eq!(
            m.kind,
            MessageKind::FriendRequest {
                user_name: "@new".into(),
                nick_name: "Dave".into(),
                greeting: "I'm Dave".into(),
                ticket: "v2_secretticket@stranger".into(),
                scene: 14,
                alias: "dave_w".into(),
                province: "北京".into(),
                city: String::new(),
                sex: 1,
            }
        );
        for dbg in [format!("{m:?}"), format!("{:?}", m.kind)] {
            assert!(!dbg.contains("secretticket"), "{dbg}");
            assert!(dbg.contains("FriendRequest"), "{dbg}");
        }
        let line = m.one_line(&book());
        assert_eq!(line, "fmessage → me: [friend request from Dave: I'm Dave]");
    }

    #[test]
    fn friend_request_from_xml_only() {
        let m = parse(
            json!({"MsgType": 37, "FromUserName": "fmessage", "Content": FRIEND_XML, "RecommendInfo": null}),
        );
        match m.kind {
            MessageKind::FriendRequest {
                user_name,
                nick_name,
                greeting,
                ticket,
                scene,
                sex,
                province,
                ..
            } => {
                assert_eq!(user_name, "wxid_dave");
                assert_eq!(nick_name, "Dave");
                assert_eq!(greeting, "I'm Dave");
                assert_eq!(ticket, "v2_secretticket@stranger");
                assert_eq!((scene, sex), (14, 1));
                assert_eq!(province, "Beijing");
            }
            other => panic!("{other:?}"),
        }
        // Unreadable XML and no RecommendInfo: empty fields, no panic.
        let m =
            parse(json!({"MsgType": 37, "Content": "&lt;msg ticket=", "RecommendInfo": "junk"}));
        assert!(
            matches!(m.kind, MessageKind::FriendRequest { ref ticket, .. } if ticket.is_empty())
        );
    }

    // ---- MsgType 49 ----

    fn appmsg(app_type: i64, inner: &str) -> String {
        format!(
            "&lt;?xml version=\"1.0\"?&gt;&lt;msg&gt;&lt;appmsg appid=\"\" sdkver=\"0\"&gt;{inner}&lt;type&gt;{app_type}&lt;/type&gt;&lt;/appmsg&gt;&lt;fromusername&gt;wxid_b&lt;/fromusername&gt;&lt;scene&gt;0&lt;/scene&gt;&lt;appinfo&gt;&lt;version&gt;1&lt;/version&gt;&lt;appname&gt;&lt;/appname&gt;&lt;/appinfo&gt;&lt;commenturl&gt;&lt;/commenturl&gt;&lt;/msg&gt;"
        )
    }

    #[test]
    fn app_link_article() {
        let content = appmsg(
            5,
            "&lt;title&gt;Rust 2024 &amp;amp; you&lt;/title&gt;&lt;des&gt;What changed&lt;/des&gt;&lt;action&gt;view&lt;/action&gt;&lt;url&gt;http://mp.weixin.qq.com/s?__biz=MzA3&amp;amp;mid=2650&amp;amp;idx=1&lt;/url&gt;&lt;thumburl&gt;http://mmbiz.qpic.cn/x.jpg&lt;/thumburl&gt;",
        );
        let m = parse(
            json!({"MsgType": 49, "AppMsgType": 5, "Content": content, "FileName": "Rust 2024 &amp; you", "Url": "http://mp.weixin.qq.com/s?__biz=MzA3&mid=2650&idx=1"}),
        );
        assert_eq!(m.app_msg_type, 5);
        assert_eq!(
            m.kind,
            MessageKind::Link {
                title: "Rust 2024 & you".into(),
                desc: "What changed".into(),
                url: "http://mp.weixin.qq.com/s?__biz=MzA3&mid=2650&idx=1".into(),
                thumb_url: "http://mmbiz.qpic.cn/x.jpg".into(),
                app_type: 5,
            }
        );
        assert_eq!(
            m.one_line(&book()),
            "Bob → me: [link Rust 2024 & you http://mp.weixin.qq.com/s?__biz=MzA3&mid=2650&idx=1]"
        );
        // Group copy with the sender prefix.
        let m = parse(
            json!({"MsgType": 49, "AppMsgType": 5, "FromUserName": ROOM, "Content": format!("{BOB}:<br/>{content}")}),
        );
        assert!(
            matches!(m.kind, MessageKind::Link { ref title, .. } if title == "Rust 2024 & you")
        );
        // Music and video shares are links too.
        for t in [3, 4] {
            let m = parse(
                json!({"MsgType": 49, "AppMsgType": t, "Content": appmsg(t, "&lt;title&gt;Song&lt;/title&gt;&lt;url&gt;http://y.qq.com/1&lt;/url&gt;")}),
            );
            assert_eq!(
                m.kind,
                MessageKind::Link {
                    title: "Song".into(),
                    desc: String::new(),
                    url: "http://y.qq.com/1".into(),
                    thumb_url: String::new(),
                    app_type: t
                }
            );
        }
    }

    #[test]
    fn app_file() {
        let content = appmsg(
            6,
            "&lt;title&gt;report.pdf&lt;/title&gt;&lt;des&gt;&lt;/des&gt;&lt;appattach&gt;&lt;totallen&gt;1048576&lt;/totallen&gt;&lt;attachid&gt;@cdn_1&lt;/attachid&gt;&lt;fileext&gt;pdf&lt;/fileext&gt;&lt;/appattach&gt;",
        );
        let m = parse(
            json!({"MsgType": 49, "AppMsgType": 6, "Content": content, "FileName": "report.pdf", "FileSize": "1048576", "MediaId": "@crypt_abc", "EncryFileName": "report%2Epdf"}),
        );
        assert_eq!(
            m.kind,
            MessageKind::File {
                name: "report.pdf".into(),
                size: 1048576,
                media_id: "@crypt_abc".into(),
                ext: "pdf".into()
            }
        );
        assert_eq!(m.summary(), "[file report.pdf, 1048576 bytes]");
        // FileSize as a number, or empty (then the XML total is used).
        let m = parse(
            json!({"MsgType": 49, "AppMsgType": 6, "Content": content, "FileName": "report.pdf", "FileSize": 77}),
        );
        assert!(
            matches!(m.kind, MessageKind::File { size: 77, ref media_id, .. } if media_id == "@cdn_1")
        );
        let m = parse(json!({"MsgType": 49, "AppMsgType": 6, "Content": content}));
        assert_eq!(
            m.kind,
            MessageKind::File {
                name: "report.pdf".into(),
                size: 1048576,
                media_id: "@cdn_1".into(),
                ext: "pdf".into()
            }
        );
        // Broken XML: JSON fields only, extension from the name.
        let m = parse(
            json!({"MsgType": 49, "AppMsgType": 6, "Content": "&lt;msg&gt;&lt;appmsg", "FileName": "Data.TAR.GZ", "FileSize": "12"}),
        );
        assert_eq!(
            m.kind,
            MessageKind::File {
                name: "Data.TAR.GZ".into(),
                size: 12,
                media_id: String::new(),
                ext: "gz".into()
            }
        );
    }

    #[test]
    fn app_emoji_share_location_mini_program() {
        let m = parse(
            json!({"MsgType": 49, "AppMsgType": 8, "Content": appmsg(8, "&lt;title&gt;&lt;/title&gt;&lt;appattach&gt;&lt;totallen&gt;9&lt;/totallen&gt;&lt;emoticonmd5&gt;ffee&lt;/emoticonmd5&gt;&lt;/appattach&gt;")}),
        );
        assert_eq!(
            m.kind,
            MessageKind::Emoticon {
                md5: Some("ffee".into()),
                cdn_url: None
            }
        );
        let m = parse(
            json!({"MsgType": 49, "AppMsgType": 17, "FileName": "我发起了位置共享", "Content": appmsg(17, "&lt;title&gt;我发起了位置共享&lt;/title&gt;")}),
        );
        assert_eq!(
            m.kind,
            MessageKind::ShareLocation {
                text: "我发起了位置共享".into()
            }
        );
        let weapp = "&lt;title&gt;Order coffee&lt;/title&gt;&lt;url&gt;https://mp.weixin.qq.com/mp/waerrpage?appid=wx0123&amp;amp;type=upgrade&lt;/url&gt;&lt;weappinfo&gt;&lt;username&gt;&lt;![CDATA[gh_abc@app]]&gt;&lt;/username&gt;&lt;appid&gt;&lt;![CDATA[wx0123456789abcdef]]&gt;&lt;/appid&gt;&lt;type&gt;2&lt;/type&gt;&lt;pagepath&gt;&lt;![CDATA[pages/index.html]]&gt;&lt;/pagepath&gt;&lt;/weappinfo&gt;";
        for t in [33, 36] {
            let m = parse(json!({"MsgType": 49, "AppMsgType": t, "Content": appmsg(t, weapp)}));
            assert_eq!(
                m.kind,
                MessageKind::MiniProgram {
                    title: "Order coffee".into(),
                    url: "https://mp.weixin.qq.com/mp/waerrpage?appid=wx0123&type=upgrade".into(),
                    app_id: "wx0123456789abcdef".into()
                }
            );
        }
    }

    #[test]
    fn app_transfer_and_red_packet() {
        let transfer = appmsg(
            2000,
            "&lt;title&gt;&lt;![CDATA[微信转账]]&gt;&lt;/title&gt;&lt;des&gt;&lt;![CDATA[收到转账0.10元。如需收钱，请点此升级至最新版本]]&gt;&lt;/des&gt;&lt;url&gt;&lt;![CDATA[https://support.weixin.qq.com/cgi-bin/mmsupport-bin/readtemplate?t=page/common_page__upgrade&amp;text=text001&amp;btn_text=btn_text_0]]&gt;&lt;/url&gt;&lt;wcpayinfo&gt;&lt;paysubtype&gt;1&lt;/paysubtype&gt;&lt;feedesc&gt;&lt;![CDATA[￥0.10]]&gt;&lt;/feedesc&gt;&lt;transcationid&gt;&lt;![CDATA[100005010118123100060111111]]&gt;&lt;/transcationid&gt;&lt;transferid&gt;&lt;![CDATA[1000050001201812310000000001]]&gt;&lt;/transferid&gt;&lt;invalidtime&gt;&lt;![CDATA[1546298000]]&gt;&lt;/invalidtime&gt;&lt;pay_memo&gt;&lt;![CDATA[]]&gt;&lt;/pay_memo&gt;&lt;/wcpayinfo&gt;",
        );
        let m = parse(
            json!({"MsgType": 49, "AppMsgType": 2000, "FileName": "微信转账", "Content": transfer}),
        );
        assert_eq!(
            m.kind,
            MessageKind::Transfer {
                text: "收到转账0.10元".into(),
                transfer_id: Some("1000050001201812310000000001".into()),
                pay_subtype: Some(1)
            }
        );
        assert_eq!(m.summary(), "[transfer 收到转账0.10元]");
        let m = parse(
            json!({"MsgType": 49, "AppMsgType": 2000, "FileName": "微信转账", "Content": "broken"}),
        );
        assert_eq!(
            m.kind,
            MessageKind::Transfer {
                text: "微信转账".into(),
                transfer_id: None,
                pay_subtype: None
            }
        );
        let red = appmsg(
            2001,
            "&lt;title&gt;&lt;![CDATA[微信红包]]&gt;&lt;/title&gt;&lt;des&gt;&lt;![CDATA[我给你发了一个红包，赶紧去拆!]]&gt;&lt;/des&gt;&lt;wcpayinfo&gt;&lt;templateid&gt;x&lt;/templateid&gt;&lt;/wcpayinfo&gt;",
        );
        let m = parse(json!({"MsgType": 49, "AppMsgType": 2001, "Content": red}));
        assert_eq!(
            m.kind,
            MessageKind::RedPacket {
                text: "我给你发了一个红包，赶紧去拆!".into()
            }
        );
    }

    #[test]
    fn app_other_types() {
        for t in [1, 2, 7, 9, 10, 13, 15, 16, 100001, 424242] {
            let m = parse(
                json!({"MsgType": 49, "AppMsgType": t, "Url": "https://fallback/", "Content": appmsg(t, "&lt;title&gt;Shared thing&lt;/title&gt;")}),
            );
            assert_eq!(
                m.kind,
                MessageKind::App {
                    app_type: t,
                    title: "Shared thing".into(),
                    url: "https://fallback/".into()
                },
                "{t}"
            );
            assert_eq!(m.app_msg_type, t);
        }
        // AppMsgType 0 (merged chat history): the XML type is used when it is known.
        let m = parse(
            json!({"MsgType": 49, "AppMsgType": 0, "Content": appmsg(19, "&lt;title&gt;Chat history&lt;/title&gt;&lt;des&gt;Bob: hi&lt;/des&gt;")}),
        );
        assert_eq!(
            m.kind,
            MessageKind::App {
                app_type: 19,
                title: "Chat history".into(),
                url: String::new()
            }
        );
        let m = parse(
            json!({"MsgType": 49, "AppMsgType": 0, "Content": "&lt;msg&gt;&lt;/msg&gt;", "FileName": "History"}),
        );
        assert_eq!(
            m.kind,
            MessageKind::App {
                app_type: 0,
                title: "History".into(),
                url: String::new()
            }
        );
        // The XML type stands in for a missing AppMsgType.
        let m = parse(
            json!({"MsgType": 49, "AppMsgType": "", "Content": appmsg(5, "&lt;title&gt;T&lt;/title&gt;&lt;url&gt;http://u/&lt;/url&gt;")}),
        );
        assert_eq!(m.app_msg_type, 5);
        assert!(matches!(m.kind, MessageKind::Link { .. }));
    }

    #[test]
    fn app_malformed_xml_is_best_effort() {
        for content in [
            "&lt;msg&gt;&lt;appmsg&gt;&lt;title&gt;broken",
            "not xml",
            "",
            "&lt;msg&gt;&lt;appmsg&gt;&lt;/wrong&gt;",
            "&amp;&amp;&lt;&lt;",
        ] {
            let m = parse(
                json!({"MsgType": 49, "AppMsgType": 5, "Content": content, "FileName": "Fallback", "Url": "https://x/"}),
            );
            assert_eq!(
                m.kind,
                MessageKind::Link {
                    title: "Fallback".into(),
                    desc: String::new(),
                    url: "https://x/".into(),
                    thumb_url: String::new(),
                    app_type: 5
                },
                "{content}"
            );
        }
        // Unescaped XML (as some senders produce) is read too.
        let m = parse(
            json!({"MsgType": 49, "AppMsgType": 5, "Content": "<msg><appmsg><title>Raw</title><url>http://r/</url></appmsg></msg>"}),
        );
        assert!(
            matches!(m.kind, MessageKind::Link { ref title, ref url, .. } if title == "Raw" && url == "http://r/")
        );
    }

    // ---- status notify, recall, other ----

    #[test]
    fn status_notify() {
        let m = parse(json!({
            "MsgType": 51, "FromUserName": SELF, "ToUserName": SELF, "StatusNotifyCode": 4,
            "StatusNotifyUserName": format!("{BOB},filehelper,{ROOM},"),
            "Content": "&lt;msg&gt;&lt;op id='4'&gt;&lt;username&gt;wxid_b,filehelper,123@chatroom&lt;/username&gt;&lt;unreadchatlist&gt;&lt;chat&gt;&lt;username&gt;wxid_b&lt;/username&gt;&lt;/chat&gt;&lt;/unreadchatlist&gt;&lt;unreadfunctionlist&gt;&lt;/unreadfunctionlist&gt;&lt;/op&gt;&lt;/msg&gt;"
        }));
        assert!(m.outgoing);
        assert_eq!(
            m.kind,
            MessageKind::StatusNotify {
                code: 4,
                user_names: vec![BOB.into(), "filehelper".into(), ROOM.into()]
            }
        );
        assert_eq!(m.summary(), "[status notify 4, 3 chats]");
        let m = parse(json!({"MsgType": 51, "StatusNotifyCode": "1", "StatusNotifyUserName": ""}));
        assert_eq!(
            m.kind,
            MessageKind::StatusNotify {
                code: 1,
                user_names: vec![]
            }
        );
    }

    const RECALL: &str = "&lt;sysmsg type=\"revokemsg\"&gt;&lt;revokemsg&gt;&lt;session&gt;wxid_b&lt;/session&gt;&lt;oldmsgid&gt;1105183477&lt;/oldmsgid&gt;&lt;msgid&gt;6829170713397432000&lt;/msgid&gt;&lt;replacemsg&gt;&lt;![CDATA[\"Bob\" 撤回了一条消息]]&gt;&lt;/replacemsg&gt;&lt;/revokemsg&gt;&lt;/sysmsg&gt;";

    #[test]
    fn recall() {
        let m = parse(json!({"MsgType": 10002, "Content": RECALL, "Status": 4}));
        assert_eq!(
            m.kind,
            MessageKind::Recall {
                old_msg_id: "6829170713397432000".into(),
                text: "\"Bob\" 撤回了一条消息".into()
            }
        );
        assert_eq!(
            m.one_line(&book()),
            "Bob → me: [recall] \"Bob\" 撤回了一条消息"
        );
        // In a group the note has no sender; a stray prefix does not hide the XML.
        let m = parse(
            json!({"MsgType": 10002, "FromUserName": ROOM, "Content": format!("{BOB}:<br/>{RECALL}")}),
        );
        assert_eq!(
            m.chat,
            Chat::Group {
                room: ROOM.into(),
                sender: None
            }
        );
        assert!(
            matches!(m.kind, MessageKind::Recall { ref old_msg_id, .. } if old_msg_id == "6829170713397432000")
        );
        // Only oldmsgid present.
        let old_only = RECALL.replace("&lt;msgid&gt;6829170713397432000&lt;/msgid&gt;", "");
        let m = parse(json!({"MsgType": 10002, "Content": old_only}));
        assert!(
            matches!(m.kind, MessageKind::Recall { ref old_msg_id, .. } if old_msg_id == "1105183477")
        );
        let m = parse(json!({"MsgType": 10002, "Content": "&lt;sysmsg"}));
        assert_eq!(
            m.kind,
            MessageKind::Recall {
                old_msg_id: String::new(),
                text: String::new()
            }
        );
    }

    #[test]
    fn other_types() {
        for t in [40, 50, 52, 53, 9999, 12345, 0, -1] {
            let m = parse(json!({"MsgType": t, "Content": "whatever"}));
            assert_eq!(m.kind, MessageKind::Other { msg_type: t }, "{t}");
            assert_eq!(m.summary(), format!("[message type {t}]"));
        }
    }

    // ---- ids and leniency ----

    #[test]
    fn ids_and_lenient_fields() {
        let m = parse(json!({"MsgId": "123", "NewMsgId": "123"}));
        assert_eq!((m.msg_id.as_str(), m.new_msg_id), ("123", 123));
        let m = parse(json!({"MsgId": "9223372036854775807", "NewMsgId": null}));
        assert_eq!(m.new_msg_id, i64::MAX);
        let m = parse(json!({"MsgId": "", "NewMsgId": 77}));
        assert_eq!(m.msg_id, "77");
        let m = parse(json!({"MsgId": 88, "NewMsgId": 18446744073709551615u64}));
        assert_eq!((m.msg_id.as_str(), m.new_msg_id), ("88", 88));
        let r: RawMessage = serde_json::from_str(
            r#"{"MsgId":1,"MsgType":"3","CreateTime":"1546211600","FileSize":1024,"ImgWidth":"640",
                "RecommendInfo":"junk","AppInfo":[1],"Unknown":{"x":[1,2]}}"#,
        )
        .unwrap();
        assert_eq!(
            (r.msg_type, r.create_time, r.img_width),
            (3, 1546211600, 640)
        );
        assert_eq!(r.file_size, "1024");
        assert_eq!(r.recommend_info, None);
        assert_eq!(r.app_info, None);
        let empty: RawMessage = serde_json::from_str("{}").unwrap();
        let m = parse_message(empty, &book());
        assert_eq!(m.kind, MessageKind::Other { msg_type: 0 });
        assert_eq!(m.msg_id, "");
        // The raw view's Debug hides content and tickets.
        let r = raw(json!({"Content": "private words", "Ticket": "tkt_secret"}));
        let dbg = format!("{r:?}");
        assert!(
            !dbg.contains("private words") && !dbg.contains("tkt_secret"),
            "{dbg}"
        );
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let pieces = [
            "&lt;",
            "&gt;",
            "&amp;",
            "<br/>",
            ":<br/>",
            "@",
            "\u{2005}",
            "msg",
            "appmsg",
            "title",
            "/",
            "<span class=\"emoji emoji1f604\"></span>",
            "<span class=\"emoji emoji",
            "\"",
            "=",
            " ",
            "&lt;![CDATA[",
            "]]&gt;",
            "x",
            "😄",
            "revokemsg",
            "location x=\"1\"",
            "&#",
            "é",
            "\n",
        ];
        let book = book();
        for _ in 0..400 {
            let mut content = String::new();
            for _ in 0..(seed % 40) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                content.push_str(pieces[(seed % pieces.len() as u64) as usize]);
            }
            for t in [1, 3, 34, 37, 42, 43, 47, 48, 49, 51, 62, 10000, 10002] {
                for from in [BOB, ROOM, SELF] {
                    let r = raw(
                        json!({"MsgType": t, "AppMsgType": seed % 7, "FromUserName": from, "ToUserName": ROOM, "Content": content, "Url": if t == 1 && seed.is_multiple_of(2) { "http://a/?coord=x" } else { "" }}),
                    );
                    let m = parse_message(r, &book);
                    let _ = m.one_line(&book);
                }
            }
        }
    }

    // ---- helpers ----

    #[test]
    fn unescape_content_cases() {
        assert_eq!(unescape_content("a<br/>b<br />c"), "a\nb\nc");
        assert_eq!(unescape_content("&lt;b&gt;bold&lt;/b&gt;"), "<b>bold</b>");
        assert_eq!(unescape_content("&amp;lt;x&amp;gt; &amp;amp;"), "<x> &");
        assert_eq!(
            unescape_content("&quot;q&quot; &#39;s&#39; &nbsp;"),
            "\"q\" 's' \u{a0}"
        );
        assert_eq!(
            unescape_content(
                "<span class=\"emoji emoji1f44d\"></span>&amp;<span class=\"emoji emoji1f1e81f1f3\"></span>"
            ),
            "👍&🇨🇳"
        );
        // A typed "&lt;br/&gt;" is text, not a line break.
        assert_eq!(unescape_content("&lt;br/&gt;"), "<br/>");
        assert_eq!(
            unescape_content("AT&T &unknown; 100% & more"),
            "AT&T &unknown; 100% & more"
        );
        assert_eq!(unescape_content(""), "");
    }

    #[test]
    fn one_line_is_single_and_bounded() {
        let long = "x".repeat(1000);
        let m = parse(json!({"Content": format!("a\r\nb\u{7}c{long}")}));
        let line = m.one_line(&book());
        assert!(!line.contains('\n') && !line.contains('\r') && !line.contains('\u{7}'));
        assert!(line.starts_with("Bob → me: a↵b c"), "{line}");
        assert!(line.ends_with('…'));
        assert!(line.chars().count() <= ONE_LINE_MAX + 1);
        // Unknown sender and group fall back to UserNames.
        let m = parse(json!({"FromUserName": "@stranger", "Content": "yo"}));
        assert_eq!(m.one_line(&book()), "@stranger → me: yo");
    }
}
