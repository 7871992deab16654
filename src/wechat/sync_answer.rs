//! Reading a webwxsync answer (spec §3.10) into [`SyncData`] and [`PendingKeys`] in one pass:
//! the lists go straight from the text into their typed entries instead of through a
//! `serde_json::Value` of the whole answer (a burst brings 100 messages per answer, and building
//! that tree and then copying every field out of it again was most of a worker's parsing time).
//!
//! The one-pass reader takes only answers it reads exactly as the tree reader does. Anything
//! else — broken JSON, a top level that is not an object, a key given twice, a list that is not
//! a list, an entry that is not an object — goes through the tree reader ([`from_tree`]), which
//! gives the results and errors it always gave.

use super::client::{PendingKeys, SyncData, check_base_response, check_ret, opt_list, parse_json};
use super::contact::RawContact;
use super::error::WechatError;
use super::session::{SyncKey, json_i64};
use crate::wechat::message::RawMessage;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

const EP: &str = "webwxsync";

/// Reads one webwxsync answer; `old_key` is the key it was asked with.
pub(crate) fn read(text: &str, old_key: &SyncKey) -> Result<(SyncData, PendingKeys), WechatError> {
    match one_pass(text) {
        Some(answer) => answer.finish(old_key),
        None => from_tree(text, old_key),
    }
}

/// The fields of an answer that are used; the others are skipped without being kept. A list
/// that is `null` reads as absent, as in [`opt_list`].
#[derive(Deserialize)]
struct Answer {
    /// `Some(Null)` for `"BaseResponse": null`, which is "no Ret" rather than "no BaseResponse".
    #[serde(rename = "BaseResponse", default, deserialize_with = "present")]
    base_response: Option<Value>,
    #[serde(rename = "AddMsgList", default)]
    add_msg_list: Option<Vec<RawMessage>>,
    #[serde(rename = "ModContactList", default)]
    mod_contact_list: Option<Vec<RawContact>>,
    #[serde(rename = "DelContactList", default)]
    del_contact_list: Option<Vec<RawContact>>,
    #[serde(rename = "ModChatRoomMemberList", default)]
    mod_chat_room_member_list: Option<Vec<RawContact>>,
    #[serde(rename = "ContinueFlag", default)]
    continue_flag: Option<Value>,
    #[serde(rename = "SyncKey", default)]
    sync_key: Option<Value>,
    #[serde(rename = "SyncCheckKey", default)]
    sync_check_key: Option<Value>,
    #[serde(rename = "SKey", default)]
    skey: Option<Value>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// `None` when the answer needs the tree reader.
fn one_pass(text: &str) -> Option<Answer> {
    // serde would read a struct from an array too, field by field; the tree reader refuses
    // every top level but an object.
    if !text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
    {
        return None;
    }
    // Every error here (a duplicate key included: the tree keeps the last one) is left to the
    // tree reader, which either reads the answer as before or names what is wrong with it.
    serde_json::from_str(text).ok()
}

impl Answer {
    fn finish(self, old_key: &SyncKey) -> Result<(SyncData, PendingKeys), WechatError> {
        check_base_response(EP, self.base_response.as_ref())?;
        Ok(assemble(
            Parts {
                messages: self.add_msg_list.unwrap_or_default(),
                mod_contacts: self.mod_contact_list.unwrap_or_default(),
                del_contacts: self.del_contact_list.unwrap_or_default(),
                mod_chatroom_members: self.mod_chat_room_member_list.unwrap_or_default(),
                continue_flag: self.continue_flag.as_ref(),
                sync_key: self.sync_key.as_ref(),
                sync_check_key: self.sync_check_key.as_ref(),
                skey: self.skey.as_ref(),
            },
            old_key,
        ))
    }
}

/// What both readers found, before it is shaped into the result.
struct Parts<'a> {
    messages: Vec<RawMessage>,
    mod_contacts: Vec<RawContact>,
    del_contacts: Vec<RawContact>,
    mod_chatroom_members: Vec<RawContact>,
    continue_flag: Option<&'a Value>,
    sync_key: Option<&'a Value>,
    sync_check_key: Option<&'a Value>,
    skey: Option<&'a Value>,
}

fn assemble(p: Parts<'_>, old_key: &SyncKey) -> (SyncData, PendingKeys) {
    let sync_key = p
        .sync_key
        .and_then(SyncKey::from_json)
        .filter(|k| !k.is_empty());
    let sync_check_key = p
        .sync_check_key
        .and_then(SyncKey::from_json)
        .filter(|k| !k.is_empty());
    let skey = p
        .skey
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())
        .map(str::to_owned);
    let data = SyncData {
        messages: p.messages,
        mod_contacts: p.mod_contacts,
        del_contacts: p
            .del_contacts
            .into_iter()
            .map(|c| c.user_name)
            .filter(|u| !u.is_empty())
            .collect(),
        mod_chatroom_members: p.mod_chatroom_members,
        continue_flag: p.continue_flag.and_then(json_i64).unwrap_or(0),
        key_changed: sync_key.as_ref().is_some_and(|k| k != old_key),
    };
    (
        data,
        PendingKeys {
            sync_key,
            sync_check_key,
            skey,
        },
    )
}

/// The answer as a `Value` tree first, then each part out of it: slower, but it takes every
/// answer the one-pass reader leaves, and its errors name the list that was wrong.
pub(crate) fn from_tree(
    text: &str,
    old_key: &SyncKey,
) -> Result<(SyncData, PendingKeys), WechatError> {
    let v = parse_json(EP, text)?;
    check_ret(EP, &v)?;
    let parts = Parts {
        messages: opt_list(EP, &v, "AddMsgList")?,
        mod_contacts: opt_list(EP, &v, "ModContactList")?,
        del_contacts: opt_list(EP, &v, "DelContactList")?,
        mod_chatroom_members: opt_list(EP, &v, "ModChatRoomMemberList")?,
        continue_flag: v.get("ContinueFlag"),
        sync_key: v.get("SyncKey"),
        sync_check_key: v.get("SyncCheckKey"),
        skey: v.get("SKey"),
    };
    Ok(assemble(parts, old_key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(i: u32) -> Value {
        json!({
            "MsgId": format!("{}", 1_000_000 + i), "FromUserName": "@bob", "ToUserName": "@me",
            "MsgType": 1, "Content": format!("hello &lt;{i}&gt; 😀"), "Status": 3,
            "ImgStatus": 1, "CreateTime": 1_700_000_000 + i, "VoiceLength": 0,
            "PlayLength": 0, "FileName": "", "FileSize": "", "MediaId": "", "Url": "",
            "AppMsgType": 0, "StatusNotifyCode": 0, "StatusNotifyUserName": "",
            "RecommendInfo": {"UserName": "", "NickName": "", "QQNum": 0, "Content": "",
                "Sex": 0, "Scene": 0, "VerifyFlag": 0, "AttrStatus": 0, "Ticket": "", "OpCode": 0},
            "ForwardFlag": 0, "AppInfo": {"AppID": "", "Type": 0}, "HasProductId": 0,
            "Ticket": "", "ImgHeight": 0, "ImgWidth": 0, "SubMsgType": 0,
            "NewMsgId": 1_000_000 + i, "OriContent": "", "EncryFileName": ""
        })
    }

    fn key(pos: u64) -> Value {
        json!({"Count": 2, "List": [{"Key": 1, "Val": pos}, {"Key": 201, "Val": "1700000000"}]})
    }

    fn answer(messages: Vec<Value>) -> Value {
        json!({
            "BaseResponse": {"Ret": 0, "ErrMsg": ""},
            "AddMsgCount": messages.len(), "AddMsgList": messages,
            "ModContactCount": 1,
            "ModContactList": [{"UserName": "@@room", "NickName": "Room", "MemberCount": "2",
                "MemberList": [{"UserName": "@bob", "NickName": "Bob"}, 7]}],
            "DelContactCount": 2, "DelContactList": [{"UserName": "@gone"}, {"UserName": ""}],
            "ModChatRoomMemberCount": 0, "ModChatRoomMemberList": null,
            "Profile": {"BitFlag": 0, "UserName": {"Buff": ""}},
            "ContinueFlag": "1",
            "SyncKey": key(9), "SKey": "NEWSKEY", "SyncCheckKey": key(9),
        })
    }

    fn old() -> SyncKey {
        SyncKey(vec![(1, 8)])
    }

    /// Both readers give the same, and the one-pass reader took the answer or left it as said.
    fn same(text: &str, one_pass_takes_it: bool) -> Result<(SyncData, PendingKeys), String> {
        assert_eq!(one_pass(text).is_some(), one_pass_takes_it, "{text}");
        let fast = read(text, &old()).map_err(|e| e.to_string());
        let tree = from_tree(text, &old()).map_err(|e| e.to_string());
        assert_eq!(fast, tree, "{text}");
        fast
    }

    #[test]
    fn a_full_answer_reads_in_one_pass_as_through_the_tree() {
        let text = answer((0..100).map(message).collect()).to_string();
        let (data, keys) = same(&text, true).unwrap();
        assert_eq!(data.messages.len(), 100);
        assert_eq!(data.messages[7].msg_id, "1000007");
        assert_eq!(data.messages[7].new_msg_id, 1_000_007);
        assert_eq!(data.messages[7].content, "hello &lt;7&gt; 😀");
        assert!(data.messages[7].recommend_info.is_some());
        assert_eq!(data.mod_contacts.len(), 1);
        assert_eq!(
            data.mod_contacts[0].member_list.len(),
            1,
            "the odd member skipped"
        );
        assert_eq!(data.del_contacts, vec!["@gone".to_owned()]);
        assert!(data.mod_chatroom_members.is_empty());
        assert_eq!(data.continue_flag, 1);
        assert!(data.key_changed);
        assert_eq!(
            keys.sync_key,
            Some(SyncKey(vec![(1, 9), (201, 1_700_000_000)]))
        );
        assert_eq!(keys.skey.as_deref(), Some("NEWSKEY"));
        // Pretty-printed and with surrounding space it is the same answer.
        let pretty = format!(
            "\n  {}\n",
            serde_json::to_string_pretty(&answer(vec![message(1)])).unwrap()
        );
        assert_eq!(same(&pretty, true).unwrap().0.messages.len(), 1);
    }

    /// `cargo test --release --lib sync_answer::tests::timing -- --ignored --nocapture`
    #[test]
    #[ignore = "a timing, not a check"]
    fn timing() {
        let text = answer((0..100).map(message).collect()).to_string();
        let rounds = 300;
        let time = |f: &dyn Fn() -> usize| {
            let started = std::time::Instant::now();
            let mut n = 0;
            for _ in 0..rounds {
                n += f();
            }
            assert_eq!(n, rounds * 100);
            started.elapsed() / rounds as u32
        };
        let tree = time(&|| from_tree(&text, &old()).unwrap().0.messages.len());
        let fast = time(&|| read(&text, &old()).unwrap().0.messages.len());
        eprintln!(
            "{} bytes, 100 messages: tree {tree:?}, one pass {fast:?} per answer",
            text.len()
        );
    }

    #[test]
    fn lenient_and_missing_parts_read_alike() {
        let mut odd = message(1);
        odd["MsgType"] = json!("49");
        odd["CreateTime"] = json!(1.7e9);
        odd["FileSize"] = json!(1234);
        odd["Content"] = json!(null);
        odd["RecommendInfo"] = json!([1, 2]);
        odd["AppInfo"] = json!("none");
        let mut odd2 = message(2);
        odd2["RecommendInfo"] = json!({"UserName": 5, "Sex": "1", "Extra": [null, {}]});
        odd2["AppInfo"] = json!(null);
        let mut odd3 = message(3);
        odd3["RecommendInfo"] = json!(true);
        odd3["AppInfo"] = json!(2.5);
        odd["Unknown"] = json!({"deep": [1, {"x": null}]});
        let (data, _) = same(&answer(vec![odd, json!({}), odd2, odd3]).to_string(), true).unwrap();
        let info = data.messages[2].recommend_info.as_ref().expect("an object");
        assert_eq!((info.user_name.as_str(), info.sex), ("5", 1));
        assert_eq!(data.messages[2].app_info, None);
        assert_eq!(data.messages[3].recommend_info, None);
        assert_eq!(data.messages[3].app_info, None);
        assert_eq!(data.messages[0].msg_type, 49);
        assert_eq!(data.messages[0].file_size, "1234");
        assert_eq!(data.messages[0].content, "");
        assert!(data.messages[0].recommend_info.is_none());
        assert_eq!(
            data.messages[1].msg_id, "",
            "an empty entry is an empty message"
        );

        let (data, keys) = same(r#"{"BaseResponse": {"Ret": "0"}}"#, true).unwrap();
        assert_eq!(data, SyncData::default());
        assert_eq!(keys, PendingKeys::default());
        let same_key = json!({"BaseResponse": {"Ret": 0}, "SyncKey": {"Count": 1, "List": [{"Key": 1, "Val": 8}]},
            "AddMsgList": null, "SKey": ""});
        let (data, keys) = same(&same_key.to_string(), true).unwrap();
        assert!(!data.key_changed && data.is_empty());
        assert_eq!(keys.skey, None);
    }

    #[test]
    fn errors_are_the_tree_readers() {
        for (text, takes) in [
            (r#"{"BaseResponse": {"Ret": 1101, "ErrMsg": "x"}}"#, true),
            (r#"{"BaseResponse": null}"#, true),
            (r#"{"AddMsgList": []}"#, true),
            (r#"{"BaseResponse": {"Ret": 0}, "AddMsgList": [5]}"#, false),
            (
                r#"{"BaseResponse": {"Ret": 0}, "AddMsgList": {"a": 1}}"#,
                false,
            ),
            (
                r#"{"BaseResponse": {"Ret": 0}, "ModContactList": "x"}"#,
                false,
            ),
            (r#"[{"Ret": 0}]"#, false),
            (
                r#"{"BaseResponse": {"Ret": 0}, "AddMsgList": [{"MsgId": "1"#,
                false,
            ),
            ("", false),
            (r#"{"BaseResponse": {"Ret": 0}} trailing"#, false),
        ] {
            let e = same(text, takes).expect_err(text);
            assert!(!e.is_empty());
        }
    }

    #[test]
    fn answers_serde_would_refuse_go_through_the_tree() {
        // A key given twice: the tree keeps the last one.
        let twice = r#"{"BaseResponse": {"Ret": 0}, "AddMsgList": [{"MsgId": "1", "MsgId": "2"}],
            "ContinueFlag": 0, "ContinueFlag": 1}"#;
        let (data, _) = same(twice, false).unwrap();
        assert_eq!(data.messages[0].msg_id, "2");
        assert_eq!(data.continue_flag, 1);
        let nested = r#"{"BaseResponse": {"Ret": 0}, "AddMsgList": [{"MsgId": "1",
            "RecommendInfo": {"UserName": "@a", "UserName": "@b"}, "AppInfo": {"Type": "5"}}]}"#;
        let (data, _) = same(nested, false).unwrap();
        let info = data.messages[0].recommend_info.as_ref().expect("an object");
        assert_eq!(info.user_name, "@b");
        assert_eq!(data.messages[0].app_info.as_ref().map(|a| a.kind), Some(5));
    }
}
