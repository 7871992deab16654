//! Typed tasks (spec A.5): what the server asks an account (or, for task 200, the machine) to
//! do. Parsing is lenient about numbers sent as strings and ids sent as numbers, and strict
//! about what is missing, naming the task type and the field.

use crate::control::envelope::RawTask;
use crate::control::lenient;
use serde_json::{Map, Value};
use std::fmt;

/// Why a task could not be read. Display: `task 1: msg_list[2]: msg_type 3 needs "msg" (the
/// image URL)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    #[error("task is {found}, not an object")]
    NotAnObject { found: &'static str },
    #[error("task has no \"task_type\"")]
    MissingType,
    #[error("task_type {found} is not a number")]
    BadType { found: String },
    #[error("task {task_type}: {detail}")]
    Invalid { task_type: i64, detail: String },
}

/// How mentions in task 1 are written (`at_style`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AtStyle {
    /// 0 (default): the mentions are put before the text.
    #[default]
    Prefix,
    /// 1: each `{$@}` in the text is replaced by the next mention, in order.
    Placeholder,
}

/// How task 3 adds a friend to a group (`flag`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteMethod {
    /// 0: send an invitation link.
    Link,
    /// 1: add the member directly.
    Direct,
}

/// One unit of task 1's `msg_list`.
#[derive(Debug, Clone, PartialEq)]
pub enum PushUnit {
    /// msg_type 1, `msg`.
    Text { text: String },
    /// msg_type 3, `msg` = image URL.
    Image { url: String },
    /// msg_type 47, `msg` = GIF URL.
    Gif { url: String },
    /// msg_type 49, `link_url, link_title, link_desc, link_img_url`.
    Link {
        url: String,
        title: String,
        desc: String,
        img_url: String,
    },
    /// msg_type 43 with a `video_url` whose path ends in `.mp4`.
    Video { url: String },
    /// msg_type 43 with any other `video_url`: sent as a file.
    File { url: String },
    /// msg_type 42, `wxid_card`: a contact card.
    Card { wxid: String },
    /// msg_type 4901, `raw_msg, cover_url`.
    MiniProgram { raw_msg: String, cover_url: String },
    /// Any other msg_type, kept whole.
    Unknown { msg_type: i64, unit: Value },
}

impl PushUnit {
    pub fn msg_type(&self) -> i64 {
        match self {
            PushUnit::Text { .. } => 1,
            PushUnit::Image { .. } => 3,
            PushUnit::Gif { .. } => 47,
            PushUnit::Link { .. } => 49,
            PushUnit::Video { .. } | PushUnit::File { .. } => 43,
            PushUnit::Card { .. } => 42,
            PushUnit::MiniProgram { .. } => 4901,
            PushUnit::Unknown { msg_type, .. } => *msg_type,
        }
    }

    /// A short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            PushUnit::Text { .. } => "text",
            PushUnit::Image { .. } => "image",
            PushUnit::Gif { .. } => "gif",
            PushUnit::Link { .. } => "link",
            PushUnit::Video { .. } => "video",
            PushUnit::File { .. } => "file",
            PushUnit::Card { .. } => "card",
            PushUnit::MiniProgram { .. } => "mini-program",
            PushUnit::Unknown { .. } => "unknown",
        }
    }
}

/// A task, one variant per `task_type` of spec A.5.
#[derive(Debug, Clone, PartialEq)]
pub enum Task {
    /// 1: send messages to `wxid_to`.
    SendMessages {
        to: String,
        at_list: Vec<String>,
        at_style: AtStyle,
        msg_list: Vec<PushUnit>,
    },
    /// 2: remove a member from a group.
    RemoveRoomMember { room_wxid: String, wxid: String },
    /// 3: invite a friend to a group; `None` when the server left the method to us.
    InviteToRoom {
        room_wxid: String,
        wxid: String,
        method: Option<InviteMethod>,
    },
    /// 4: answer with `report_room_member_info` for these groups.
    ReportRoomMembers { room_wxid_list: Vec<String> },
    /// 5: send a friend request to a group member, with `msg` as the greeting (may be empty).
    AddRoomMemberAsFriend {
        room_wxid: String,
        wxid: String,
        msg: String,
    },
    /// 6: set a friend's remark (empty clears it).
    SetRemark { wxid: String, remark_name: String },
    /// 7: set my nickname in a group (empty clears it).
    SetRoomNickname {
        room_wxid: String,
        room_nickname: String,
    },
    /// 8: leave a group.
    LeaveRoom { room_wxid: String },
    /// 9: upload a received file (spec A.6).
    UploadFile { file_index: String },
    /// 10: post a group announcement.
    RoomAnnouncement { room_wxid: String, msg: String },
    /// 11: accept a money transfer.
    AcceptTransfer {
        wxid_from: String,
        transferid: String,
    },
    /// 12: delete a friend.
    DeleteFriend { wxid_delete: String },
    /// 13: accept a friend request.
    AcceptFriendRequest { v1: String, v2: String },
    /// 14: send `report_contact` again; `None` = the login's flag.
    ReportContacts { flag_report_contact: Option<u32> },
    /// 15: check whether a friend still has us ("zombie friend").
    CheckZombie { wxid: String },
    /// 16: answer with `report_user_info`.
    ReportUserInfo { wxid: String },
    /// 17: create a group with these members.
    CreateRoom { member_list: Vec<String> },
    /// 18: rename a group.
    RenameRoom {
        room_wxid: String,
        room_name: String,
    },
    /// 19: accept a group invitation link.
    AcceptRoomInvite { invite_url: String },
    /// 100: local tag operation.
    SetTag {
        tag_name: String,
        wxid_list: Vec<String>,
        op_code: i64,
    },
    /// 101: rename a local tag.
    RenameTag {
        old_tag_name: String,
        new_tag_name: String,
    },
    /// 200: start a login worker for this QR session (`qrcode_session_id`, sic).
    StartQrSession { qr_session_id: String },
    /// A task_type this version does not know, kept whole.
    Unknown { task_type: i64, dict: Value },
}

impl RawTask {
    /// Reads the typed task.
    pub fn parse(&self) -> Result<Task, TaskError> {
        Task::parse(self.value())
    }
}

impl Task {
    /// Reads `{"task_type": N, "task_dict": {...}}`. A missing or null `task_dict` is `{}`.
    pub fn parse(task: &Value) -> Result<Task, TaskError> {
        let obj = lenient::as_object(task).ok_or(TaskError::NotAnObject {
            found: type_name(task),
        })?;
        let task_type = match obj.get("task_type") {
            None | Some(Value::Null) => return Err(TaskError::MissingType),
            Some(v) => lenient::as_i64(v).ok_or_else(|| TaskError::BadType {
                found: shorten(&v.to_string()),
            })?,
        };
        let empty = Map::new();
        let dict_value = obj.get("task_dict").unwrap_or(&Value::Null);
        let dict_map = match dict_value {
            Value::Null => std::borrow::Cow::Borrowed(&empty),
            v => lenient::as_object(v).ok_or_else(|| TaskError::Invalid {
                task_type,
                detail: format!("\"task_dict\" is {}, not an object", type_name(v)),
            })?,
        };
        let d = Dict {
            task_type,
            map: &dict_map,
            at: String::new(),
        };
        let task = match task_type {
            1 => Task::SendMessages {
                to: d.id("wxid_to")?,
                at_list: d.opt_list("at_list")?.unwrap_or_default(),
                at_style: match d.opt_int("at_style")? {
                    None | Some(0) => AtStyle::Prefix,
                    Some(1) => AtStyle::Placeholder,
                    Some(n) => return Err(d.err(format!("\"at_style\" must be 0 or 1, got {n}"))),
                },
                msg_list: parse_msg_list(&d)?,
            },
            2 => Task::RemoveRoomMember {
                room_wxid: d.id("room_wxid")?,
                wxid: d.id("wxid")?,
            },
            3 => Task::InviteToRoom {
                room_wxid: d.id("room_wxid")?,
                wxid: d.id("wxid")?,
                method: match d.opt_int("flag")? {
                    None => None,
                    Some(0) => Some(InviteMethod::Link),
                    Some(1) => Some(InviteMethod::Direct),
                    Some(n) => return Err(d.err(format!("\"flag\" must be 0 or 1, got {n}"))),
                },
            },
            4 => Task::ReportRoomMembers {
                room_wxid_list: d.list("room_wxid_list")?,
            },
            5 => Task::AddRoomMemberAsFriend {
                room_wxid: d.id("room_wxid")?,
                wxid: d.id("wxid")?,
                msg: d.opt_text("msg")?.unwrap_or_default(),
            },
            6 => Task::SetRemark {
                wxid: d.id("wxid")?,
                remark_name: d.text("remark_name")?,
            },
            7 => Task::SetRoomNickname {
                room_wxid: d.id("room_wxid")?,
                room_nickname: d.text("room_nickname")?,
            },
            8 => Task::LeaveRoom {
                room_wxid: d.id("room_wxid")?,
            },
            9 => Task::UploadFile {
                file_index: d.id("file_index")?,
            },
            10 => Task::RoomAnnouncement {
                room_wxid: d.id("room_wxid")?,
                msg: d.id("msg")?,
            },
            11 => Task::AcceptTransfer {
                wxid_from: d.id("wxid_from")?,
                transferid: d.id("transferid")?,
            },
            12 => Task::DeleteFriend {
                wxid_delete: d.id("wxid_delete")?,
            },
            13 => Task::AcceptFriendRequest {
                v1: d.id("v1")?,
                v2: d.id("v2")?,
            },
            14 => Task::ReportContacts {
                flag_report_contact: match d.opt_int("flag_report_contact")? {
                    None => None,
                    Some(n) => Some(u32::try_from(n).map_err(|_| {
                        d.err(format!("\"flag_report_contact\" must be 0..=7, got {n}"))
                    })?),
                },
            },
            15 => Task::CheckZombie {
                wxid: d.id("wxid")?,
            },
            16 => Task::ReportUserInfo {
                wxid: d.id("wxid")?,
            },
            17 => Task::CreateRoom {
                member_list: d.list("member_list")?,
            },
            18 => Task::RenameRoom {
                room_wxid: d.id("room_wxid")?,
                room_name: d.id("room_name")?,
            },
            19 => Task::AcceptRoomInvite {
                invite_url: d.id("invite_url")?,
            },
            100 => Task::SetTag {
                tag_name: d.id("tag_name")?,
                wxid_list: d.list("wxid_list")?,
                op_code: d.int("op_code")?,
            },
            101 => Task::RenameTag {
                old_tag_name: d.id("old_tag_name")?,
                new_tag_name: d.id("new_tag_name")?,
            },
            200 => {
                let id = match d.opt_id("qrcode_session_id")? {
                    Some(id) => id,
                    None => d.opt_id("qr_session_id")?.ok_or_else(|| {
                        d.err("missing \"qrcode_session_id\" (or \"qr_session_id\")".into())
                    })?,
                };
                Task::StartQrSession { qr_session_id: id }
            }
            _ => Task::Unknown {
                task_type,
                dict: Value::Object(dict_map.into_owned()),
            },
        };
        Ok(task)
    }

    /// The `task_type` number.
    pub fn type_number(&self) -> i64 {
        match self {
            Task::SendMessages { .. } => 1,
            Task::RemoveRoomMember { .. } => 2,
            Task::InviteToRoom { .. } => 3,
            Task::ReportRoomMembers { .. } => 4,
            Task::AddRoomMemberAsFriend { .. } => 5,
            Task::SetRemark { .. } => 6,
            Task::SetRoomNickname { .. } => 7,
            Task::LeaveRoom { .. } => 8,
            Task::UploadFile { .. } => 9,
            Task::RoomAnnouncement { .. } => 10,
            Task::AcceptTransfer { .. } => 11,
            Task::DeleteFriend { .. } => 12,
            Task::AcceptFriendRequest { .. } => 13,
            Task::ReportContacts { .. } => 14,
            Task::CheckZombie { .. } => 15,
            Task::ReportUserInfo { .. } => 16,
            Task::CreateRoom { .. } => 17,
            Task::RenameRoom { .. } => 18,
            Task::AcceptRoomInvite { .. } => 19,
            Task::SetTag { .. } => 100,
            Task::RenameTag { .. } => 101,
            Task::StartQrSession { .. } => 200,
            Task::Unknown { task_type, .. } => *task_type,
        }
    }

    /// One line for logs: the task type and its targets, never message text.
    pub fn describe(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task {}: ", self.type_number())?;
        match self {
            Task::SendMessages {
                to,
                at_list,
                msg_list,
                ..
            } => {
                let kinds: Vec<&str> = msg_list.iter().map(PushUnit::kind).collect();
                write!(
                    f,
                    "send {} message(s) ({}) to {to}",
                    msg_list.len(),
                    kinds.join(", ")
                )?;
                if !at_list.is_empty() {
                    write!(f, " mentioning {}", at_list.len())?;
                }
                Ok(())
            }
            Task::RemoveRoomMember { room_wxid, wxid } => {
                write!(f, "remove {wxid} from group {room_wxid}")
            }
            Task::InviteToRoom {
                room_wxid,
                wxid,
                method,
            } => {
                let how = match method {
                    None => "",
                    Some(InviteMethod::Link) => " by link",
                    Some(InviteMethod::Direct) => " directly",
                };
                write!(f, "invite {wxid} to group {room_wxid}{how}")
            }
            Task::ReportRoomMembers { room_wxid_list } => {
                write!(f, "report members of {} group(s)", room_wxid_list.len())
            }
            Task::AddRoomMemberAsFriend {
                room_wxid, wxid, ..
            } => {
                write!(f, "add {wxid} of group {room_wxid} as friend")
            }
            Task::SetRemark { wxid, .. } => write!(f, "set the remark of {wxid}"),
            Task::SetRoomNickname { room_wxid, .. } => {
                write!(f, "set my nickname in group {room_wxid}")
            }
            Task::LeaveRoom { room_wxid } => write!(f, "leave group {room_wxid}"),
            Task::UploadFile { file_index } => write!(f, "upload file {file_index}"),
            Task::RoomAnnouncement { room_wxid, .. } => {
                write!(f, "post an announcement in group {room_wxid}")
            }
            Task::AcceptTransfer { wxid_from, .. } => {
                write!(f, "accept a transfer from {wxid_from}")
            }
            Task::DeleteFriend { wxid_delete } => write!(f, "delete friend {wxid_delete}"),
            Task::AcceptFriendRequest { .. } => f.write_str("accept a friend request"),
            Task::ReportContacts {
                flag_report_contact,
            } => match flag_report_contact {
                Some(flag) => write!(f, "report contacts (flag {flag})"),
                None => f.write_str("report contacts"),
            },
            Task::CheckZombie { wxid } => write!(f, "check whether {wxid} is still a friend"),
            Task::ReportUserInfo { wxid } => write!(f, "report details of {wxid}"),
            Task::CreateRoom { member_list } => {
                write!(f, "create a group with {} member(s)", member_list.len())
            }
            Task::RenameRoom { room_wxid, .. } => write!(f, "rename group {room_wxid}"),
            Task::AcceptRoomInvite { .. } => f.write_str("accept a group invitation"),
            Task::SetTag {
                tag_name,
                wxid_list,
                op_code,
            } => write!(
                f,
                "tag {} contact(s) with {tag_name:?} (op {op_code})",
                wxid_list.len()
            ),
            Task::RenameTag {
                old_tag_name,
                new_tag_name,
            } => {
                write!(f, "rename tag {old_tag_name:?} to {new_tag_name:?}")
            }
            Task::StartQrSession { qr_session_id } => {
                write!(f, "start a login worker for QR session {qr_session_id}")
            }
            Task::Unknown { .. } => f.write_str("unknown task type"),
        }
    }
}

fn parse_msg_list(d: &Dict<'_>) -> Result<Vec<PushUnit>, TaskError> {
    let items = match d.map.get("msg_list") {
        None | Some(Value::Null) => return Err(d.err("missing \"msg_list\"".into())),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(d.err(format!(
                "\"msg_list\" must be an array, got {}",
                type_name(other)
            )));
        }
    };
    if items.is_empty() {
        return Err(d.err("\"msg_list\" is empty".into()));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, unit)| {
            let at = format!("msg_list[{i}]");
            let map = lenient::as_object(unit)
                .ok_or_else(|| d.err(format!("{at} is {}, not an object", type_name(unit))))?;
            let u = Dict {
                task_type: d.task_type,
                map: &map,
                at: format!("{at}: "),
            };
            parse_push_unit(&u, unit)
        })
        .collect()
}

fn parse_push_unit(u: &Dict<'_>, unit: &Value) -> Result<PushUnit, TaskError> {
    let msg_type = u.int("msg_type")?;
    let need = |key: &str, what: &str| -> Result<String, TaskError> {
        u.opt_id(key)?
            .ok_or_else(|| u.err(format!("msg_type {msg_type} needs \"{key}\" ({what})")))
    };
    let optional =
        |key: &str| -> Result<String, TaskError> { Ok(u.opt_text(key)?.unwrap_or_default()) };
    Ok(match msg_type {
        1 => PushUnit::Text {
            text: need("msg", "the text")?,
        },
        3 => PushUnit::Image {
            url: need("msg", "the image URL")?,
        },
        47 => PushUnit::Gif {
            url: need("msg", "the GIF URL")?,
        },
        49 => PushUnit::Link {
            url: need("link_url", "the link target")?,
            title: optional("link_title")?,
            desc: optional("link_desc")?,
            img_url: optional("link_img_url")?,
        },
        43 => {
            let url = need("video_url", "the video or file URL")?;
            if is_mp4(&url) {
                PushUnit::Video { url }
            } else {
                PushUnit::File { url }
            }
        }
        42 => PushUnit::Card {
            wxid: need("wxid_card", "the contact to share")?,
        },
        4901 => PushUnit::MiniProgram {
            raw_msg: need("raw_msg", "the mini-program XML")?,
            cover_url: optional("cover_url")?,
        },
        _ => PushUnit::Unknown {
            msg_type,
            unit: unit.clone(),
        },
    })
}

/// Whether a URL's path (not its query) ends in `.mp4`, in any case.
fn is_mp4(url: &str) -> bool {
    let path = match url::Url::parse(url) {
        Ok(parsed) => parsed.path().to_owned(),
        Err(_) => url.split(['?', '#']).next().unwrap_or("").to_owned(),
    };
    path.to_ascii_lowercase().ends_with(".mp4")
}

/// Field readers for one task_dict (or push unit) that produce errors naming the task type
/// and the place (`at`, e.g. `msg_list[2]: `).
struct Dict<'a> {
    task_type: i64,
    map: &'a Map<String, Value>,
    at: String,
}

impl Dict<'_> {
    fn err(&self, detail: String) -> TaskError {
        TaskError::Invalid {
            task_type: self.task_type,
            detail: format!("{}{detail}", self.at),
        }
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// A string (or number) that may be empty; `None` when missing.
    fn opt_text(&self, key: &str) -> Result<Option<String>, TaskError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => lenient::as_string(v).map(Some).ok_or_else(|| {
                self.err(format!("\"{key}\" must be a string, got {}", type_name(v)))
            }),
        }
    }

    /// A required string that may be empty (clearing a remark is valid).
    fn text(&self, key: &str) -> Result<String, TaskError> {
        self.opt_text(key)?
            .ok_or_else(|| self.err(format!("missing \"{key}\"")))
    }

    /// A non-empty string; `None` when missing. Blank counts as missing for ids.
    fn opt_id(&self, key: &str) -> Result<Option<String>, TaskError> {
        Ok(self.opt_text(key)?.filter(|s| !s.trim().is_empty()))
    }

    /// A required non-empty string.
    fn id(&self, key: &str) -> Result<String, TaskError> {
        match self.opt_text(key)? {
            None => Err(self.err(format!("missing \"{key}\""))),
            Some(s) if s.trim().is_empty() => Err(self.err(format!("\"{key}\" is empty"))),
            Some(s) => Ok(s),
        }
    }

    fn opt_int(&self, key: &str) -> Result<Option<i64>, TaskError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(v) => lenient::as_i64(v).map(Some).ok_or_else(|| {
                self.err(format!(
                    "\"{key}\" must be a number, got {}",
                    shorten(&v.to_string())
                ))
            }),
        }
    }

    fn int(&self, key: &str) -> Result<i64, TaskError> {
        self.opt_int(key)?
            .ok_or_else(|| self.err(format!("missing \"{key}\"")))
    }

    /// A list of ids; a single string counts as a list of one.
    fn opt_list(&self, key: &str) -> Result<Option<Vec<String>>, TaskError> {
        let items = match self.get(key) {
            None => return Ok(None),
            Some(Value::Array(items)) => items,
            Some(v @ (Value::String(_) | Value::Number(_))) => {
                return Ok(lenient::as_string(v)
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| vec![s])
                    .or(Some(Vec::new())));
            }
            Some(v) => {
                return Err(self.err(format!("\"{key}\" must be an array, got {}", type_name(v))));
            }
        };
        items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                lenient::as_string(v).ok_or_else(|| {
                    self.err(format!(
                        "\"{key}\"[{i}] must be a string, got {}",
                        type_name(v)
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// A required, non-empty list of ids.
    fn list(&self, key: &str) -> Result<Vec<String>, TaskError> {
        match self.opt_list(key)? {
            None => Err(self.err(format!("missing \"{key}\""))),
            Some(list) if list.is_empty() => Err(self.err(format!("\"{key}\" is empty"))),
            Some(list) => Ok(list),
        }
    }
}

/// The JSON type name of a value, for error messages.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Keeps error messages short when the server sends something large.
fn shorten(s: &str) -> String {
    const MAX: usize = 40;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Task, TaskError> {
        Task::parse(&v)
    }

    fn err(v: Value) -> String {
        parse(v).expect_err("should not parse").to_string()
    }

    #[test]
    fn send_messages_with_every_push_unit() {
        let task = parse(json!({"task_type": "1", "task_dict": {
            "wxid_to": "@@room", "at_list": ["@a", 176666155], "at_style": "1",
            "msg_list": [
                {"msg_type": 1, "msg": "hi {$@}"},
                {"msg_type": "3", "msg": "http://h/a.jpg"},
                {"msg_type": 47, "msg": "http://h/a.gif"},
                {"msg_type": 49, "link_url": "http://h/", "link_title": "t", "link_desc": "d", "link_img_url": "http://h/i.png"},
                {"msg_type": 43, "video_url": "http://h/v.MP4?x=1"},
                {"msg_type": 43, "video_url": "http://h/report.pdf?name=a.mp4"},
                {"msg_type": 42, "wxid_card": "@card"},
                {"msg_type": 4901, "raw_msg": "<appmsg/>", "cover_url": "http://h/c.jpg"},
                {"msg_type": 9999, "foo": 1}
            ]}}))
        .unwrap();
        let Task::SendMessages {
            to,
            at_list,
            at_style,
            msg_list,
        } = &task
        else {
            panic!("{task:?}");
        };
        assert_eq!(to, "@@room");
        assert_eq!(at_list, &["@a", "176666155"]);
        assert_eq!(*at_style, AtStyle::Placeholder);
        assert_eq!(
            msg_list[0],
            PushUnit::Text {
                text: "hi {$@}".into()
            }
        );
        assert_eq!(
            msg_list[1],
            PushUnit::Image {
                url: "http://h/a.jpg".into()
            }
        );
        assert_eq!(
            msg_list[2],
            PushUnit::Gif {
                url: "http://h/a.gif".into()
            }
        );
        assert_eq!(
            msg_list[3],
            PushUnit::Link {
                url: "http://h/".into(),
                title: "t".into(),
                desc: "d".into(),
                img_url: "http://h/i.png".into()
            }
        );
        assert_eq!(
            msg_list[4],
            PushUnit::Video {
                url: "http://h/v.MP4?x=1".into()
            }
        );
        assert_eq!(
            msg_list[5],
            PushUnit::File {
                url: "http://h/report.pdf?name=a.mp4".into()
            }
        );
        assert_eq!(
            msg_list[6],
            PushUnit::Card {
                wxid: "@card".into()
            }
        );
        assert_eq!(
            msg_list[7],
            PushUnit::MiniProgram {
                raw_msg: "<appmsg/>".into(),
                cover_url: "http://h/c.jpg".into()
            }
        );
        assert!(matches!(
            msg_list[8],
            PushUnit::Unknown { msg_type: 9999, .. }
        ));
        assert_eq!(
            msg_list.iter().map(PushUnit::msg_type).collect::<Vec<_>>(),
            [1, 3, 47, 49, 43, 43, 42, 4901, 9999]
        );
        assert_eq!(task.type_number(), 1);
        let d = task.describe();
        assert!(d.starts_with("task 1: send 9 message(s)"), "{d}");
        assert!(
            !d.contains("hi {$@}"),
            "describe must not log message text: {d}"
        );
    }

    #[test]
    fn send_messages_defaults() {
        let task = parse(json!({"task_type": 1, "task_dict": {"wxid_to": "@u", "msg_list": [{"msg_type": 1, "msg": "x"}]}})).unwrap();
        assert!(
            matches!(task, Task::SendMessages { at_style: AtStyle::Prefix, ref at_list, .. } if at_list.is_empty())
        );
    }

    #[test]
    fn errors_name_the_task_and_the_field() {
        let e = err(
            json!({"task_type": 1, "task_dict": {"wxid_to": "@u", "msg_list": [
            {"msg_type": 1, "msg": "a"}, {"msg_type": 1, "msg": "b"}, {"msg_type": 3}]}}),
        );
        assert_eq!(
            e,
            "task 1: msg_list[2]: msg_type 3 needs \"msg\" (the image URL)"
        );
        assert_eq!(
            err(json!({"task_type": 1, "task_dict": {"msg_list": []}})),
            "task 1: missing \"wxid_to\""
        );
        assert_eq!(
            err(json!({"task_type": 1, "task_dict": {"wxid_to": "@u", "msg_list": []}})),
            "task 1: \"msg_list\" is empty"
        );
        assert_eq!(
            err(
                json!({"task_type": 1, "task_dict": {"wxid_to": "@u", "msg_list": [{"msg": "x"}]}})
            ),
            "task 1: msg_list[0]: missing \"msg_type\""
        );
        assert_eq!(
            err(json!({"task_type": 1, "task_dict": {"wxid_to": "@u", "msg_list": ["x"]}})),
            "task 1: msg_list[0] is a string, not an object"
        );
        assert_eq!(
            err(
                json!({"task_type": 1, "task_dict": {"wxid_to": "@u", "at_style": 5, "msg_list": [{"msg_type": 1, "msg": "x"}]}})
            ),
            "task 1: \"at_style\" must be 0 or 1, got 5"
        );
        assert_eq!(
            err(json!({"task_type": 2, "task_dict": {"room_wxid": "@@r", "wxid": ""}})),
            "task 2: \"wxid\" is empty"
        );
        assert_eq!(
            err(json!({"task_type": 8, "task_dict": {"room_wxid": ["x"]}})),
            "task 8: \"room_wxid\" must be a string, got an array"
        );
        assert_eq!(
            err(json!({"task_type": 4, "task_dict": {}})),
            "task 4: missing \"room_wxid_list\""
        );
        assert_eq!(
            err(json!({"task_type": 4, "task_dict": {"room_wxid_list": [{}]}})),
            "task 4: \"room_wxid_list\"[0] must be a string, got an object"
        );
        assert_eq!(
            err(json!({"task_type": 3, "task_dict": {"room_wxid": "r", "wxid": "w", "flag": "x"}})),
            "task 3: \"flag\" must be a number, got \"x\""
        );
        assert_eq!(
            err(json!({"task_type": 200, "task_dict": {}})),
            "task 200: missing \"qrcode_session_id\" (or \"qr_session_id\")"
        );
        assert_eq!(
            err(json!({"task_type": 9, "task_dict": []})),
            "task 9: \"task_dict\" is an array, not an object"
        );
        assert_eq!(err(json!({"task_dict": {}})), "task has no \"task_type\"");
        assert_eq!(
            err(json!({"task_type": "abc"})),
            "task_type \"abc\" is not a number"
        );
        assert_eq!(err(json!([1])), "task is an array, not an object");
    }

    #[test]
    fn every_simple_task_type() {
        let cases: Vec<(Value, Task)> = vec![
            (
                json!({"task_type": 2, "task_dict": {"room_wxid": "@@r", "wxid": "@u"}}),
                Task::RemoveRoomMember {
                    room_wxid: "@@r".into(),
                    wxid: "@u".into(),
                },
            ),
            (
                json!({"task_type": 3, "task_dict": {"room_wxid": "@@r", "wxid": "@u", "flag": "1"}}),
                Task::InviteToRoom {
                    room_wxid: "@@r".into(),
                    wxid: "@u".into(),
                    method: Some(InviteMethod::Direct),
                },
            ),
            (
                json!({"task_type": 3, "task_dict": {"room_wxid": "@@r", "wxid": "@u", "flag": 0}}),
                Task::InviteToRoom {
                    room_wxid: "@@r".into(),
                    wxid: "@u".into(),
                    method: Some(InviteMethod::Link),
                },
            ),
            (
                json!({"task_type": 3, "task_dict": {"room_wxid": "@@r", "wxid": "@u"}}),
                Task::InviteToRoom {
                    room_wxid: "@@r".into(),
                    wxid: "@u".into(),
                    method: None,
                },
            ),
            (
                json!({"task_type": 4, "task_dict": {"room_wxid_list": ["@@a", "@@b"]}}),
                Task::ReportRoomMembers {
                    room_wxid_list: vec!["@@a".into(), "@@b".into()],
                },
            ),
            (
                json!({"task_type": 4, "task_dict": {"room_wxid_list": "@@a"}}),
                Task::ReportRoomMembers {
                    room_wxid_list: vec!["@@a".into()],
                },
            ),
            (
                json!({"task_type": 5, "task_dict": {"room_wxid": "@@r", "wxid": "@u"}}),
                Task::AddRoomMemberAsFriend {
                    room_wxid: "@@r".into(),
                    wxid: "@u".into(),
                    msg: String::new(),
                },
            ),
            (
                json!({"task_type": 6, "task_dict": {"wxid": "@u", "remark_name": ""}}),
                Task::SetRemark {
                    wxid: "@u".into(),
                    remark_name: String::new(),
                },
            ),
            (
                json!({"task_type": 7, "task_dict": {"room_wxid": "@@r", "room_nickname": "me"}}),
                Task::SetRoomNickname {
                    room_wxid: "@@r".into(),
                    room_nickname: "me".into(),
                },
            ),
            (
                json!({"task_type": 8, "task_dict": {"room_wxid": "@@r"}}),
                Task::LeaveRoom {
                    room_wxid: "@@r".into(),
                },
            ),
            (
                json!({"task_type": 9, "task_dict": {"file_index": 17}}),
                Task::UploadFile {
                    file_index: "17".into(),
                },
            ),
            (
                json!({"task_type": 10, "task_dict": {"room_wxid": "@@r", "msg": "hello"}}),
                Task::RoomAnnouncement {
                    room_wxid: "@@r".into(),
                    msg: "hello".into(),
                },
            ),
            (
                json!({"task_type": 11, "task_dict": {"wxid_from": "@u", "transferid": "t"}}),
                Task::AcceptTransfer {
                    wxid_from: "@u".into(),
                    transferid: "t".into(),
                },
            ),
            (
                json!({"task_type": 12, "task_dict": {"wxid_delete": "@u"}}),
                Task::DeleteFriend {
                    wxid_delete: "@u".into(),
                },
            ),
            (
                json!({"task_type": 13, "task_dict": {"v1": "a", "v2": "b"}}),
                Task::AcceptFriendRequest {
                    v1: "a".into(),
                    v2: "b".into(),
                },
            ),
            (
                json!({"task_type": 14}),
                Task::ReportContacts {
                    flag_report_contact: None,
                },
            ),
            (
                json!({"task_type": 14, "task_dict": {"flag_report_contact": "2"}}),
                Task::ReportContacts {
                    flag_report_contact: Some(2),
                },
            ),
            (
                json!({"task_type": 15, "task_dict": {"wxid": "@u"}}),
                Task::CheckZombie { wxid: "@u".into() },
            ),
            (
                json!({"task_type": 16, "task_dict": {"wxid": "@u"}}),
                Task::ReportUserInfo { wxid: "@u".into() },
            ),
            (
                json!({"task_type": 17, "task_dict": {"member_list": ["@a", "@b"]}}),
                Task::CreateRoom {
                    member_list: vec!["@a".into(), "@b".into()],
                },
            ),
            (
                json!({"task_type": 18, "task_dict": {"room_wxid": "@@r", "room_name": "n"}}),
                Task::RenameRoom {
                    room_wxid: "@@r".into(),
                    room_name: "n".into(),
                },
            ),
            (
                json!({"task_type": 19, "task_dict": {"invite_url": "https://x/"}}),
                Task::AcceptRoomInvite {
                    invite_url: "https://x/".into(),
                },
            ),
            (
                json!({"task_type": 100, "task_dict": {"tag_name": "vip", "wxid_list": ["@a"], "op_code": "1"}}),
                Task::SetTag {
                    tag_name: "vip".into(),
                    wxid_list: vec!["@a".into()],
                    op_code: 1,
                },
            ),
            (
                json!({"task_type": 101, "task_dict": {"old_tag_name": "a", "new_tag_name": "b"}}),
                Task::RenameTag {
                    old_tag_name: "a".into(),
                    new_tag_name: "b".into(),
                },
            ),
            (
                json!({"task_type": 200, "task_dict": {"qrcode_session_id": "q1"}}),
                Task::StartQrSession {
                    qr_session_id: "q1".into(),
                },
            ),
            (
                json!({"task_type": 200, "task_dict": {"qr_session_id": "q2"}}),
                Task::StartQrSession {
                    qr_session_id: "q2".into(),
                },
            ),
            (
                json!({"task_type": 200, "task_dict": "{\"qrcode_session_id\":\"q3\"}"}),
                Task::StartQrSession {
                    qr_session_id: "q3".into(),
                },
            ),
            (
                json!({"task_type": 555, "task_dict": {"x": 1}}),
                Task::Unknown {
                    task_type: 555,
                    dict: json!({"x": 1}),
                },
            ),
        ];
        for (raw, expected) in cases {
            let got = parse(raw.clone()).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(got, expected, "{raw}");
            assert_eq!(
                got.type_number(),
                raw["task_type"].as_i64().unwrap(),
                "{raw}"
            );
            assert!(
                got.describe()
                    .starts_with(&format!("task {}: ", got.type_number()))
            );
        }
    }

    #[test]
    fn raw_task_parses_through_the_ack() {
        let raw = RawTask::new(json!({"task_type": 8, "task_dict": {"room_wxid": "@@r"}}));
        assert_eq!(
            raw.parse(),
            Ok(Task::LeaveRoom {
                room_wxid: "@@r".into()
            })
        );
    }

    #[test]
    fn long_bad_values_are_shortened() {
        let long = "x".repeat(500);
        let e = err(json!({"task_type": long}));
        assert!(e.len() < 80, "{e}");
    }
}
