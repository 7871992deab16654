//! The `data` payloads of every action the client sends (spec A.3, A.7, B.1–B.5), as serde
//! structs whose field names are the wire names. Optional fields are left out when absent.

use crate::control::envelope::action;
use crate::control::lenient;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// A payload that belongs to one action.
pub trait Report: Serialize {
    const ACTION: &'static str;

    /// The payload as the envelope's `data`.
    fn to_data(&self) -> Value {
        // Plain structs with string keys cannot fail to serialise into a `Value`.
        serde_json::to_value(self).expect("a report payload always serialises")
    }
}

macro_rules! report {
    ($ty:ty, $action:expr) => {
        impl Report for $ty {
            const ACTION: &'static str = $action;
        }
    };
}

/// Booleans the protocol writes as 1/0; read back from numbers, strings or bools.
mod int_bool {
    use super::*;

    pub fn serialize<S: Serializer>(v: &bool, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(u8::from(*v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        let v = Value::deserialize(d)?;
        lenient::as_flag(&v).ok_or_else(|| D::Error::custom(format!("expected 1 or 0, got {v}")))
    }
}

/// `login` (A.3, A.4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoginData {
    pub nickname: String,
    pub wx_alias: String,
    pub head_img: String,
    pub client_version: String,
    /// Fresh for every login ([`crate::control::signature::new_nonce`]); the ack's signature
    /// is checked against it.
    pub nonce: String,
    pub local_ip: String,
    pub machine_id: String,
    /// Only when the session came from a QR task (A.9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qr_session_id: Option<String>,
}
report!(LoginData, action::LOGIN);

/// `logout` (A.3, B.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogoutData {
    pub client_version: String,
    pub machine_id: String,
    /// A B.3 name: `phone_logout`, `kicked`, `web_forbidden`, `rate_limited`,
    /// `expired_session`, `exit_task`, `shutdown`, `network`.
    pub reason: String,
    /// The retcode that ended the session, when one was seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retcode: Option<i64>,
}
report!(LogoutData, action::LOGOUT);

/// The role the supervisor announces in its `pull_task` (B.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentRole {
    Agent,
}

/// `pull_task` from the supervisor, with `wxid: ""` (B.1). Workers send `{}` instead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PullTaskData {
    pub machine_id: String,
    pub role: AgentRole,
    /// Live sessions on this machine.
    pub sessions: usize,
    /// `max_sessions`.
    pub capacity: usize,
}
report!(PullTaskData, action::PULL_TASK);

impl PullTaskData {
    pub fn agent(machine_id: impl Into<String>, sessions: usize, capacity: usize) -> Self {
        PullTaskData {
            machine_id: machine_id.into(),
            role: AgentRole::Agent,
            sessions,
            capacity,
        }
    }
}

/// `report_task_result` (A.3, B.4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    pub task_id: String,
    /// Sent as 1 (done) or 0 (failed).
    #[serde(with = "int_bool")]
    pub task_result: bool,
    /// Why it failed; "" on success.
    pub error_reason: String,
}
report!(TaskResult, action::REPORT_TASK_RESULT);

impl TaskResult {
    pub fn ok(task_id: impl Into<String>) -> Self {
        TaskResult {
            task_id: task_id.into(),
            task_result: true,
            error_reason: String::new(),
        }
    }

    pub fn failed(task_id: impl Into<String>, reason: impl Into<String>) -> Self {
        TaskResult {
            task_id: task_id.into(),
            task_result: false,
            error_reason: reason.into(),
        }
    }
}

/// A user (`userInfo`, A.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserInfo {
    pub wxid: String,
    pub wx_alias: String,
    pub nickname: String,
    pub remark_name: String,
    pub head_img: String,
    /// 0 unknown, 1 male, 2 female.
    pub sex: u8,
    pub country: String,
    pub province: String,
    pub city: String,
    /// The contact's web `Uin` where known (B.7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uin: Option<u64>,
}

/// A group (`groupInfo`, A.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupInfo {
    pub wxid: String,
    pub name: String,
    pub owner_wxid: String,
    pub member_count: u32,
    pub head_img: String,
    pub member_wxid_list: Vec<String>,
}

/// A public (official) account (A.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublicInfo {
    pub wxid: String,
    pub nickname: String,
    pub head_img: String,
}

/// A group member (`memberInfo`, A.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub wxid: String,
    pub wx_alias: String,
    pub room_nickname: String,
    pub nickname: String,
    pub head_img: String,
    pub sex: u8,
    pub country: String,
    pub province: String,
    pub city: String,
    /// The member's web `Uin` where known (B.7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uin: Option<u64>,
}

/// Bits of `flag_report_contact`.
pub mod contact_flag {
    pub const FRIENDS: u32 = 1;
    pub const GROUPS: u32 = 2;
    pub const PUBLIC: u32 = 4;
    /// The default when the server names none.
    pub const ALL: u32 = 7;
}

/// `report_contact` (A.3): each list only when its bit is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContactReport {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub friend_list: Option<Vec<UserInfo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_list: Option<Vec<GroupInfo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_list: Option<Vec<PublicInfo>>,
}
report!(ContactReport, action::REPORT_CONTACT);

impl ContactReport {
    /// Keeps the lists whose bit is set in `flag` (1 friends, 2 groups, 4 public accounts).
    pub fn select(
        flag: u32,
        friends: Vec<UserInfo>,
        groups: Vec<GroupInfo>,
        public: Vec<PublicInfo>,
    ) -> Self {
        let keep = |bit: u32| flag & bit != 0;
        ContactReport {
            friend_list: keep(contact_flag::FRIENDS).then_some(friends),
            group_list: keep(contact_flag::GROUPS).then_some(groups),
            public_list: keep(contact_flag::PUBLIC).then_some(public),
        }
    }
}

/// A user entry of `report_contact_update`: user fields plus `is_friend`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserUpdate {
    #[serde(flatten)]
    pub user: UserInfo,
    /// Sent as 1/0.
    #[serde(with = "int_bool")]
    pub is_friend: bool,
}

/// One entry of `update_list`: group fields for a group, user fields otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ContactUpdateEntry {
    Group(GroupInfo),
    User(UserUpdate),
}

/// `report_contact_update` (A.3).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContactUpdate {
    pub update_list: Vec<ContactUpdateEntry>,
}
report!(ContactUpdate, action::REPORT_CONTACT_UPDATE);

/// The `msg_type` values of a message report unit (A.7).
pub mod msg_type {
    pub const TEXT: i64 = 1;
    pub const IMAGE: i64 = 3;
    pub const VOICE: i64 = 34;
    pub const CARD: i64 = 42;
    pub const VIDEO: i64 = 43;
    pub const STICKER: i64 = 47;
    pub const LINK: i64 = 49;
    pub const MINI_PROGRAM: i64 = 4901;
    pub const TRANSFER: i64 = 4902;
    pub const FILE: i64 = 4903;
    pub const SYSTEM: i64 = 10000;
}

/// A message report unit (A.7): the common fields and, per type, the extra fields; absent
/// extras are left out of the JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MsgUnit {
    pub msg_id: String,
    /// Milliseconds since the Unix epoch.
    pub msg_timestamp: i64,
    pub msg_type: i64,
    /// "" in a private chat.
    pub room_wxid: String,
    pub wxid_from: String,
    pub wxid_to: String,
    /// Text (1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg: Option<String>,
    /// Mentioned wxids (1).
    #[serde(
        rename = "atUserList",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub at_user_list: Option<Vec<String>>,
    /// Opaque key for task 9 (3, 34, 43, 4901, 4903).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_index: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_msg: Option<String>,
    /// Sticker (47).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emoji_url: Option<String>,
    /// Link / share (49).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_desc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_img_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_type: Option<i64>,
    /// Money transfer (4902).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transferid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paysubtype: Option<i64>,
    /// File (4903).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_size: Option<u64>,
}

impl MsgUnit {
    /// A unit with the common fields set and no extras.
    pub fn new(
        msg_id: impl Into<String>,
        msg_timestamp: i64,
        msg_type: i64,
        room_wxid: impl Into<String>,
        wxid_from: impl Into<String>,
        wxid_to: impl Into<String>,
    ) -> Self {
        MsgUnit {
            msg_id: msg_id.into(),
            msg_timestamp,
            msg_type,
            room_wxid: room_wxid.into(),
            wxid_from: wxid_from.into(),
            wxid_to: wxid_to.into(),
            ..MsgUnit::default()
        }
    }
}

/// `report_new_msg` (A.3): `{"msg": <unit>}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewMsg {
    pub msg: MsgUnit,
}
report!(NewMsg, action::REPORT_NEW_MSG);

/// One group of `report_room_member_info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomData {
    pub room_wxid: String,
    pub name: String,
    pub owner_wxid: String,
    pub head_img: String,
    pub member_count: u32,
    #[serde(rename = "memberInfo_list")]
    pub member_info_list: Vec<MemberInfo>,
}

/// `report_room_member_info` (answer to task 4).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoomMemberInfo {
    pub room_data_list: Vec<RoomData>,
}
report!(RoomMemberInfo, action::REPORT_ROOM_MEMBER_INFO);

/// Direction of a member change, sent as `flag` 1 (added) / 0 (removed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberChange {
    Added,
    Removed,
}

impl Serialize for MemberChange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(match self {
            MemberChange::Added => 1,
            MemberChange::Removed => 0,
        })
    }
}

impl<'de> Deserialize<'de> for MemberChange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        match lenient::as_i64(&v) {
            Some(1) => Ok(MemberChange::Added),
            Some(0) => Ok(MemberChange::Removed),
            _ => Err(D::Error::custom(format!("flag must be 1 or 0, got {v}"))),
        }
    }
}

/// `report_room_member_change` (A.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomMemberChange {
    pub room_wxid: String,
    pub owner_wxid: String,
    pub wxid_list: Vec<String>,
    pub flag: MemberChange,
}
report!(RoomMemberChange, action::REPORT_ROOM_MEMBER_CHANGE);

/// `report_new_room` (A.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewRoom {
    pub wxid: String,
    pub name: String,
    pub owner_wxid: String,
    pub head_img: String,
    #[serde(rename = "memberInfo_list")]
    pub member_info_list: Vec<MemberInfo>,
}
report!(NewRoom, action::REPORT_NEW_ROOM);

/// `report_room_removed` (A.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomRemoved {
    pub wxid_removed: String,
}
report!(RoomRemoved, action::REPORT_ROOM_REMOVED);

/// `report_friend_add_request` (A.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FriendAddRequest {
    pub v1: String,
    pub v2: String,
    pub notice_word: String,
    pub raw_msg: String,
}
report!(FriendAddRequest, action::REPORT_FRIEND_ADD_REQUEST);

/// `report_new_friend` (A.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewFriend {
    pub fans_wxid: String,
    pub nickname: String,
    pub wx_alias: String,
    pub head_img: String,
    pub notice_word: String,
    pub sourceusername: String,
    pub sourcenickname: String,
}
report!(NewFriend, action::REPORT_NEW_FRIEND);

/// `report_friend_removed` (A.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FriendRemoved {
    pub wxid_removed: String,
}
report!(FriendRemoved, action::REPORT_FRIEND_REMOVED);

/// `report_user_info` (answer to task 16).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserInfoReport {
    pub wxid: String,
    pub wx_alias: String,
    pub nickname: String,
    pub remark_name: String,
    pub head_img: String,
    /// The avatar itself (base64), when fetched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_img_data: Option<String>,
    pub sex: u8,
    pub country: String,
    pub province: String,
    pub city: String,
    /// Sent as 1/0.
    #[serde(with = "int_bool")]
    pub is_friend: bool,
    /// Groups we share with this user.
    pub room_list: Vec<String>,
    /// The user's web `Uin` where known (B.7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uin: Option<u64>,
}
report!(UserInfoReport, action::REPORT_USER_INFO);

/// QR session status (B.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QrStatus {
    /// A QR code (first or refreshed) was uploaded.
    Uploaded,
    /// Scanned on the phone, waiting for confirmation.
    Scanned,
    /// Confirmed: the login follows.
    Confirmed,
    /// The code expired (a new one follows unless the bounds are reached).
    Expired,
    /// Gave up after `qr.max_refreshes` codes or `qr.max_wait`.
    Abandoned,
    /// The QR login failed for another reason (see `reason`).
    Failed,
}

impl QrStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            QrStatus::Uploaded => "uploaded",
            QrStatus::Scanned => "scanned",
            QrStatus::Confirmed => "confirmed",
            QrStatus::Expired => "expired",
            QrStatus::Abandoned => "abandoned",
            QrStatus::Failed => "failed",
        }
    }
}

/// `report_qr_status` (B.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QrStatusReport {
    pub qr_session_id: String,
    pub machine_id: String,
    pub status: QrStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// QR codes shown so far in this session.
    pub qr_count: u32,
}
report!(QrStatusReport, action::REPORT_QR_STATUS);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user() -> UserInfo {
        UserInfo {
            wxid: "@u".into(),
            wx_alias: "alias".into(),
            nickname: "Nick".into(),
            remark_name: "R".into(),
            head_img: "http://h/u".into(),
            sex: 1,
            country: "CN".into(),
            province: "GD".into(),
            city: "SZ".into(),
            uin: None,
        }
    }

    fn group() -> GroupInfo {
        GroupInfo {
            wxid: "@@g".into(),
            name: "G".into(),
            owner_wxid: "@o".into(),
            member_count: 2,
            head_img: "http://h/g".into(),
            member_wxid_list: vec!["@o".into(), "@u".into()],
        }
    }

    fn member() -> MemberInfo {
        MemberInfo {
            wxid: "@m".into(),
            wx_alias: "".into(),
            room_nickname: "rn".into(),
            nickname: "n".into(),
            head_img: "".into(),
            sex: 2,
            country: "".into(),
            province: "".into(),
            city: "".into(),
            uin: Some(42),
        }
    }

    fn user_json() -> Value {
        json!({"wxid":"@u","wx_alias":"alias","nickname":"Nick","remark_name":"R",
               "head_img":"http://h/u","sex":1,"country":"CN","province":"GD","city":"SZ"})
    }

    #[test]
    fn login_and_logout() {
        let mut login = LoginData {
            nickname: "n".into(),
            wx_alias: "a".into(),
            head_img: "h".into(),
            client_version: "0.1.0".into(),
            nonce: "abc".into(),
            local_ip: "10.0.0.2".into(),
            machine_id: "host_1".into(),
            qr_session_id: None,
        };
        assert_eq!(
            login.to_data(),
            json!({"nickname":"n","wx_alias":"a","head_img":"h","client_version":"0.1.0",
                   "nonce":"abc","local_ip":"10.0.0.2","machine_id":"host_1"})
        );
        login.qr_session_id = Some("q".into());
        assert_eq!(login.to_data()["qr_session_id"], "q");
        assert_eq!(LoginData::ACTION, "login");

        let mut logout = LogoutData {
            client_version: "0.1.0".into(),
            machine_id: "host_1".into(),
            reason: "kicked".into(),
            retcode: Some(1102),
        };
        assert_eq!(
            logout.to_data(),
            json!({"client_version":"0.1.0","machine_id":"host_1","reason":"kicked","retcode":1102})
        );
        logout.retcode = None;
        assert!(logout.to_data().get("retcode").is_none());
        assert_eq!(LogoutData::ACTION, "logout");
    }

    #[test]
    fn agent_pull_and_task_results() {
        assert_eq!(
            PullTaskData::agent("host", 3, 100).to_data(),
            json!({"machine_id":"host","role":"agent","sessions":3,"capacity":100})
        );
        assert_eq!(
            TaskResult::ok("t1").to_data(),
            json!({"task_id":"t1","task_result":1,"error_reason":""})
        );
        assert_eq!(
            TaskResult::failed("t2", "capacity reached").to_data(),
            json!({"task_id":"t2","task_result":0,"error_reason":"capacity reached"})
        );
        let back: TaskResult =
            serde_json::from_value(json!({"task_id":"t","task_result":"1","error_reason":""}))
                .unwrap();
        assert!(back.task_result);
    }

    #[test]
    fn contact_report_follows_the_flag() {
        let full = ContactReport::select(
            7,
            vec![user()],
            vec![group()],
            vec![PublicInfo {
                wxid: "gh_x".into(),
                nickname: "P".into(),
                head_img: "".into(),
            }],
        );
        assert_eq!(
            full.to_data(),
            json!({"friend_list":[user_json()],
                   "group_list":[{"wxid":"@@g","name":"G","owner_wxid":"@o","member_count":2,
                                  "head_img":"http://h/g","member_wxid_list":["@o","@u"]}],
                   "public_list":[{"wxid":"gh_x","nickname":"P","head_img":""}]})
        );
        let groups_only = ContactReport::select(2, vec![user()], vec![], vec![]);
        assert_eq!(groups_only.to_data(), json!({"group_list":[]}));
        assert_eq!(
            ContactReport::select(5, vec![], vec![group()], vec![]).to_data(),
            json!({"friend_list":[],"public_list":[]})
        );
    }

    #[test]
    fn contact_update_entries() {
        let update = ContactUpdate {
            update_list: vec![
                ContactUpdateEntry::Group(group()),
                ContactUpdateEntry::User(UserUpdate {
                    user: user(),
                    is_friend: true,
                }),
            ],
        };
        let mut expected_user = user_json();
        expected_user["is_friend"] = json!(1);
        let data = update.to_data();
        assert_eq!(data["update_list"][1], expected_user);
        assert_eq!(
            data["update_list"][0]["member_wxid_list"],
            json!(["@o", "@u"])
        );
        assert!(data["update_list"][0].get("is_friend").is_none());
        let back: ContactUpdate = serde_json::from_value(data).unwrap();
        assert_eq!(back, update);
    }

    #[test]
    fn message_units_skip_absent_fields() {
        let mut text = MsgUnit::new(
            "m1",
            1_700_000_000_000,
            msg_type::TEXT,
            "",
            "@a",
            "176666155",
        );
        text.msg = Some("hi".into());
        text.at_user_list = Some(vec!["176666155".into()]);
        assert_eq!(
            NewMsg { msg: text }.to_data(),
            json!({"msg":{"msg_id":"m1","msg_timestamp":1_700_000_000_000_i64,"msg_type":1,"room_wxid":"",
                          "wxid_from":"@a","wxid_to":"176666155","msg":"hi","atUserList":["176666155"]}})
        );
        let mut file = MsgUnit::new("m2", 1, msg_type::FILE, "@@g", "@a", "@@g");
        file.file_index = Some("fi".into());
        file.file_name = Some("a.pdf".into());
        file.file_size = Some(10);
        file.raw_msg = Some("<msg/>".into());
        let keys: Vec<String> = file.to_data_keys();
        assert_eq!(
            keys,
            [
                "file_index",
                "file_name",
                "file_size",
                "msg_id",
                "msg_timestamp",
                "msg_type",
                "raw_msg",
                "room_wxid",
                "wxid_from",
                "wxid_to"
            ]
        );
        let mut link = MsgUnit::new("m3", 1, msg_type::LINK, "", "@a", "@b");
        link.link_title = Some("t".into());
        link.link_desc = Some("d".into());
        link.link_url = Some("u".into());
        link.link_img_url = Some("i".into());
        link.sub_type = Some(5);
        let v = serde_json::to_value(&link).unwrap();
        assert_eq!(v["sub_type"], 5);
        let mut transfer = MsgUnit::new("m4", 1, msg_type::TRANSFER, "", "@a", "@b");
        transfer.transferid = Some("t".into());
        transfer.paysubtype = Some(1);
        let v = serde_json::to_value(&transfer).unwrap();
        assert_eq!(
            (v["transferid"].as_str(), v["paysubtype"].as_i64()),
            (Some("t"), Some(1))
        );
        let mut sticker = MsgUnit::new("m5", 1, msg_type::STICKER, "", "@a", "@b");
        sticker.emoji_url = Some("e".into());
        assert_eq!(serde_json::to_value(&sticker).unwrap()["emoji_url"], "e");
    }

    impl MsgUnit {
        fn to_data_keys(&self) -> Vec<String> {
            let v = serde_json::to_value(self).unwrap();
            let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            keys.sort();
            keys
        }
    }

    #[test]
    fn rooms() {
        let info = RoomMemberInfo {
            room_data_list: vec![RoomData {
                room_wxid: "@@g".into(),
                name: "G".into(),
                owner_wxid: "@o".into(),
                head_img: "".into(),
                member_count: 1,
                member_info_list: vec![member()],
            }],
        };
        assert_eq!(
            info.to_data(),
            json!({"room_data_list":[{"room_wxid":"@@g","name":"G","owner_wxid":"@o","head_img":"",
                "member_count":1,"memberInfo_list":[{"wxid":"@m","wx_alias":"","room_nickname":"rn",
                "nickname":"n","head_img":"","sex":2,"country":"","province":"","city":"","uin":42}]}]})
        );
        let change = RoomMemberChange {
            room_wxid: "@@g".into(),
            owner_wxid: "@o".into(),
            wxid_list: vec!["@m".into()],
            flag: MemberChange::Added,
        };
        assert_eq!(
            change.to_data(),
            json!({"room_wxid":"@@g","owner_wxid":"@o","wxid_list":["@m"],"flag":1})
        );
        let removed = RoomMemberChange {
            flag: MemberChange::Removed,
            ..change
        };
        assert_eq!(removed.to_data()["flag"], 0);
        let back: RoomMemberChange = serde_json::from_value(removed.to_data()).unwrap();
        assert_eq!(back.flag, MemberChange::Removed);

        let new_room = NewRoom {
            wxid: "@@g".into(),
            name: "G".into(),
            owner_wxid: "@o".into(),
            head_img: "h".into(),
            member_info_list: vec![],
        };
        assert_eq!(
            new_room.to_data(),
            json!({"wxid":"@@g","name":"G","owner_wxid":"@o","head_img":"h","memberInfo_list":[]})
        );
        assert_eq!(
            RoomRemoved {
                wxid_removed: "@@g".into()
            }
            .to_data(),
            json!({"wxid_removed":"@@g"})
        );
    }

    #[test]
    fn friends_and_user_info() {
        assert_eq!(
            FriendAddRequest {
                v1: "a".into(),
                v2: "b".into(),
                notice_word: "hi".into(),
                raw_msg: "<m/>".into()
            }
            .to_data(),
            json!({"v1":"a","v2":"b","notice_word":"hi","raw_msg":"<m/>"})
        );
        assert_eq!(
            NewFriend {
                fans_wxid: "@f".into(),
                nickname: "n".into(),
                wx_alias: "a".into(),
                head_img: "h".into(),
                notice_word: "w".into(),
                sourceusername: "@s".into(),
                sourcenickname: "s".into(),
            }
            .to_data(),
            json!({"fans_wxid":"@f","nickname":"n","wx_alias":"a","head_img":"h","notice_word":"w",
                   "sourceusername":"@s","sourcenickname":"s"})
        );
        assert_eq!(
            FriendRemoved {
                wxid_removed: "@f".into()
            }
            .to_data(),
            json!({"wxid_removed":"@f"})
        );
        let info = UserInfoReport {
            wxid: "@u".into(),
            wx_alias: "a".into(),
            nickname: "n".into(),
            remark_name: "r".into(),
            head_img: "h".into(),
            head_img_data: None,
            sex: 0,
            country: "".into(),
            province: "".into(),
            city: "".into(),
            is_friend: false,
            room_list: vec!["@@g".into()],
            uin: None,
        };
        assert_eq!(
            info.to_data(),
            json!({"wxid":"@u","wx_alias":"a","nickname":"n","remark_name":"r","head_img":"h","sex":0,
                   "country":"","province":"","city":"","is_friend":0,"room_list":["@@g"]})
        );
        assert_eq!(
            UserInfoReport {
                head_img_data: Some("AAAA".into()),
                ..info
            }
            .to_data()["head_img_data"],
            "AAAA"
        );
    }

    #[test]
    fn qr_status_names() {
        let all = [
            (QrStatus::Uploaded, "uploaded"),
            (QrStatus::Scanned, "scanned"),
            (QrStatus::Confirmed, "confirmed"),
            (QrStatus::Expired, "expired"),
            (QrStatus::Abandoned, "abandoned"),
            (QrStatus::Failed, "failed"),
        ];
        for (status, name) in all {
            assert_eq!(serde_json::to_value(status).unwrap(), name);
            assert_eq!(status.as_str(), name);
        }
        let report = QrStatusReport {
            qr_session_id: "q".into(),
            machine_id: "host_9".into(),
            status: QrStatus::Abandoned,
            reason: Some("max_refreshes".into()),
            qr_count: 5,
        };
        assert_eq!(
            report.to_data(),
            json!({"qr_session_id":"q","machine_id":"host_9","status":"abandoned","reason":"max_refreshes","qr_count":5})
        );
        assert!(
            QrStatusReport {
                reason: None,
                ..report
            }
            .to_data()
            .get("reason")
            .is_none()
        );
        assert_eq!(QrStatusReport::ACTION, "report_qr_status");
    }
}
