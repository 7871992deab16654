//! The request envelope wxagent sends and the ack it reads back (spec A.2), with accessors for
//! the tasks an ack carries (A.5), the login handshake (A.4) and the logout exit flags (A.9).
//! Requests are written exactly as the spec shows; acks are read leniently.

use crate::control::lenient;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::time::Duration;

/// The action names of spec A.3 and B.2.
pub mod action {
    pub const LOGIN: &str = "login";
    pub const LOGOUT: &str = "logout";
    pub const PULL_TASK: &str = "pull_task";
    pub const REPORT_TASK_RESULT: &str = "report_task_result";
    pub const REPORT_CONTACT: &str = "report_contact";
    pub const REPORT_CONTACT_UPDATE: &str = "report_contact_update";
    pub const REPORT_NEW_MSG: &str = "report_new_msg";
    pub const REPORT_ROOM_MEMBER_INFO: &str = "report_room_member_info";
    pub const REPORT_ROOM_MEMBER_CHANGE: &str = "report_room_member_change";
    pub const REPORT_NEW_ROOM: &str = "report_new_room";
    pub const REPORT_ROOM_REMOVED: &str = "report_room_removed";
    pub const REPORT_FRIEND_ADD_REQUEST: &str = "report_friend_add_request";
    pub const REPORT_NEW_FRIEND: &str = "report_new_friend";
    pub const REPORT_FRIEND_REMOVED: &str = "report_friend_removed";
    pub const REPORT_USER_INFO: &str = "report_user_info";
    pub const REPORT_QR_STATUS: &str = "report_qr_status";
    /// wxagent's extension: several spooled reports in one HTTP post, sent only to a server
    /// whose `login_ack` offers it (`data.option.report_batch`).
    pub const REPORT_BATCH: &str = "report_batch";
    /// WebSocket mode only (A.8): keeps the socket alive; never spooled.
    pub const HEARTBEAT: &str = "heartbeat";
}

/// One request to the callback URL: `{"action", "appid", "wxid", "client_session"?, "data"}`,
/// serialised in that key order. `client_session` is left out when `None`, and so is
/// `event_id`, which only WebSocket frames carry (the HTTP post has it in a header).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub action: String,
    pub appid: String,
    pub wxid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_session: Option<String>,
    pub data: Value,
    /// wxagent's extension for WebSocket frames (B.5 over A.8): the server echoes it in the
    /// answer frame, which is how an answer is matched to its request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
}

impl Request {
    pub fn new(action: &str, appid: &str, wxid: &str, data: Value) -> Request {
        Request {
            action: action.to_owned(),
            appid: appid.to_owned(),
            wxid: wxid.to_owned(),
            client_session: None,
            data,
            event_id: None,
        }
    }

    /// The exact body bytes (compact JSON, UTF-8).
    pub fn to_body(&self) -> Vec<u8> {
        // Strings and a `Value` cannot fail to serialise into memory.
        serde_json::to_vec(self).expect("a request envelope always serialises")
    }
}

/// A task as it arrived (`{"task_type": N, "task_dict": {...}}`), kept whole so it can be
/// logged, forwarded (task 200 → supervisor) and parsed with [`RawTask::parse`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RawTask(Value);

impl RawTask {
    pub fn new(value: Value) -> RawTask {
        RawTask(value)
    }

    pub fn value(&self) -> &Value {
        &self.0
    }

    pub fn into_value(self) -> Value {
        self.0
    }

    /// `task_type`, read leniently; `None` when missing or not a number.
    pub fn task_type(&self) -> Option<i64> {
        self.0.get("task_type").and_then(lenient::as_i64)
    }
}

/// The `extension_protocol` of a `login_ack` that asks for WebSocket mode (spec A.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSocketExtension {
    /// As sent by the server; not validated here.
    pub ws_url: String,
    /// `param.heartbeat_interval`; 30 s when missing or not a positive number.
    pub heartbeat_interval: Duration,
}

/// What the server asked for in a `logout_ack` (spec A.9 item 4). Both default to `false`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExitFlags {
    /// `exit_wehub`: end the worker process.
    pub exit_wehub: bool,
    /// `exit_wechat`: end the account's web session (webwxlogout).
    pub exit_wechat: bool,
}

/// The server's answer to one request, read leniently (spec A.2): numbers may be strings,
/// every field may be missing, `{}` is a valid ack meaning "nothing to do".
#[derive(Debug, Clone, PartialEq)]
pub struct Ack {
    /// 0 = OK. Missing or empty = 0; a value that is not a number = -1.
    pub error_code: i64,
    pub error_reason: String,
    /// Not checked: older servers answer `<action>_ack`.
    pub ack_type: String,
    /// `Value::Null` when missing or null. A JSON-encoded object in a string is decoded.
    pub data: Value,
    /// Whether the body was a JSON object. An empty or non-JSON 2xx body is "no tasks" for every
    /// action but `login` (spec A.1), but a durable spool must not count it as delivered (B.5).
    pub parsed: bool,
    /// The top-level `event_id` a WebSocket answer frame echoes; `None` over HTTP.
    pub event_id: Option<String>,
}

impl Default for Ack {
    fn default() -> Self {
        Ack::unparsed()
    }
}

impl Ack {
    /// The ack for a body that was empty or not a JSON object.
    pub fn unparsed() -> Ack {
        Ack {
            error_code: 0,
            error_reason: String::new(),
            ack_type: String::new(),
            data: Value::Null,
            parsed: false,
            event_id: None,
        }
    }

    /// Reads a response body. Never fails: anything but a JSON object gives [`Ack::unparsed`].
    pub fn parse(body: &[u8]) -> Ack {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => Ack::from_object(&map),
            _ => Ack::unparsed(),
        }
    }

    /// Reads an ack that is already a JSON value (e.g. a WebSocket frame).
    pub fn from_value(value: &Value) -> Ack {
        match value {
            Value::Object(map) => Ack::from_object(map),
            _ => Ack::unparsed(),
        }
    }

    fn from_object(map: &Map<String, Value>) -> Ack {
        let error_code = match map.get("error_code") {
            None | Some(Value::Null) => 0,
            Some(Value::String(s)) if s.trim().is_empty() => 0,
            Some(v) => lenient::as_i64(v).unwrap_or(-1),
        };
        let text = |key: &str| match map.get(key) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        let data = match map.get("data") {
            None | Some(Value::Null) => Value::Null,
            Some(v @ Value::String(_)) => lenient::as_object(v)
                .map(|m| Value::Object(m.into_owned()))
                .unwrap_or(Value::Null),
            Some(v) => v.clone(),
        };
        Ack {
            error_code,
            error_reason: text("error_reason"),
            ack_type: text("ack_type"),
            data,
            parsed: true,
            event_id: map
                .get("event_id")
                .and_then(lenient::as_string)
                .filter(|id| !id.is_empty()),
        }
    }

    pub fn is_ok(&self) -> bool {
        self.error_code == 0
    }

    fn data_field(&self, key: &str) -> Option<&Value> {
        self.data.as_object()?.get(key).filter(|v| !v.is_null())
    }

    /// `data.reply_task_list` of a `common_ack`: tasks to execute without reporting a result.
    /// Empty when there is none.
    pub fn reply_tasks(&self) -> Vec<RawTask> {
        let Some(list) = self.data_field("reply_task_list") else {
            return Vec::new();
        };
        let decoded;
        let list = match list {
            Value::String(s) => match serde_json::from_str::<Value>(s) {
                Ok(v) => {
                    decoded = v;
                    &decoded
                }
                Err(_) => return Vec::new(),
            },
            other => other,
        };
        match list {
            Value::Array(items) => items.iter().cloned().map(RawTask::new).collect(),
            // One task sent without the list around it.
            Value::Object(_) => vec![RawTask::new(list.clone())],
            _ => Vec::new(),
        }
    }

    /// The task of a `pull_task_ack` (`data = {"task_id", "task_data"}`), `None` for `data: {}`
    /// or when `task_data` is missing. The task id is `""` when the server sent none; then no
    /// `report_task_result` is due.
    pub fn pulled_task(&self) -> Option<(String, RawTask)> {
        let task = self.data_field("task_data")?;
        let task = lenient::as_object(task)?;
        if task.is_empty() {
            return None;
        }
        let task_id = self
            .data_field("task_id")
            .and_then(lenient::as_string)
            .unwrap_or_default();
        Some((task_id, RawTask::new(Value::Object(task.into_owned()))))
    }

    /// `data.signature` of a `login_ack`.
    pub fn signature(&self) -> Option<String> {
        self.data_field("signature").and_then(lenient::as_string)
    }

    /// `data.option.flag_report_contact` of a `login_ack` (bits: 1 friends, 2 groups, 4 public
    /// accounts), `None` when absent or not a non-negative number.
    pub fn flag_report_contact(&self) -> Option<u32> {
        let option = lenient::as_object(self.data_field("option")?)?;
        let flag = lenient::as_i64(option.get("flag_report_contact")?)?;
        u32::try_from(flag).ok()
    }

    /// `data.option.report_batch` of a `login_ack`: the most reports the server takes in one
    /// `report_batch` post (wxagent's extension). `None` when absent, not a number, or below 2
    /// (a stock WeHub server never sends it: one report per request).
    pub fn report_batch(&self) -> Option<usize> {
        let option = lenient::as_object(self.data_field("option")?)?;
        let most = lenient::as_i64(option.get("report_batch")?)?;
        usize::try_from(most).ok().filter(|&n| n >= 2)
    }

    /// `data.extension_protocol` of a `login_ack` when it asks for WebSocket mode with a URL.
    pub fn websocket(&self) -> Option<WebSocketExtension> {
        let ext = lenient::as_object(self.data_field("extension_protocol")?)?;
        let kind = ext.get("type").and_then(Value::as_str)?;
        if !kind.trim().eq_ignore_ascii_case("websocket") {
            return None;
        }
        let param = lenient::as_object(ext.get("param")?)?;
        let ws_url = param.get("ws_url").and_then(Value::as_str)?.trim();
        if ws_url.is_empty() {
            return None;
        }
        let heartbeat = param
            .get("heartbeat_interval")
            .and_then(lenient::as_i64)
            .and_then(|s| u64::try_from(s).ok())
            .filter(|s| *s > 0)
            .unwrap_or(30);
        Some(WebSocketExtension {
            ws_url: ws_url.to_owned(),
            heartbeat_interval: Duration::from_secs(heartbeat),
        })
    }

    /// `data.exit_wehub` / `data.exit_wechat` of a `logout_ack` (numbers, strings or bools).
    pub fn exit_flags(&self) -> ExitFlags {
        let flag = |key| {
            self.data_field(key)
                .and_then(lenient::as_flag)
                .unwrap_or(false)
        };
        ExitFlags {
            exit_wehub: flag("exit_wehub"),
            exit_wechat: flag("exit_wechat"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn request_bytes_follow_the_spec_order() {
        let mut req = Request::new("report_new_msg", "app1", "176666155", json!({"msg": {}}));
        assert_eq!(
            String::from_utf8(req.to_body()).unwrap(),
            r#"{"action":"report_new_msg","appid":"app1","wxid":"176666155","data":{"msg":{}}}"#
        );
        req.client_session = Some("cs".into());
        assert_eq!(
            String::from_utf8(req.to_body()).unwrap(),
            r#"{"action":"report_new_msg","appid":"app1","wxid":"176666155","client_session":"cs","data":{"msg":{}}}"#
        );
        req.event_id = Some("s:1".into());
        assert!(
            String::from_utf8(req.to_body())
                .unwrap()
                .ends_with(r#""data":{"msg":{}},"event_id":"s:1"}"#)
        );
    }

    #[test]
    fn empty_object_is_a_parsed_ack_with_nothing_to_do() {
        let ack = Ack::parse(b"{}");
        assert!(ack.parsed);
        assert!(ack.is_ok());
        assert!(ack.reply_tasks().is_empty());
        assert!(ack.pulled_task().is_none());
        assert_eq!(ack.exit_flags(), ExitFlags::default());
    }

    #[test]
    fn non_json_bodies_are_unparsed() {
        for body in [
            &b""[..],
            b"OK",
            b"<html></html>",
            b"[1,2]",
            b"null",
            b"\"ok\"",
        ] {
            let ack = Ack::parse(body);
            assert!(!ack.parsed, "{body:?}");
            assert!(ack.reply_tasks().is_empty());
        }
    }

    #[test]
    fn numbers_as_strings_and_odd_error_codes() {
        let ack = Ack::parse(br#"{"error_code":"3","error_reason":"no","ack_type":"x"}"#);
        assert_eq!((ack.error_code, ack.error_reason.as_str()), (3, "no"));
        assert_eq!(Ack::parse(br#"{"error_code":""}"#).error_code, 0);
        assert_eq!(Ack::parse(br#"{"error_code":null}"#).error_code, 0);
        assert_eq!(Ack::parse(br#"{"error_code":"bad"}"#).error_code, -1);
        assert_eq!(Ack::parse(br#"{"error_reason":12}"#).error_reason, "12");
    }

    #[test]
    fn reply_tasks_in_every_shape() {
        let ack = Ack::parse(
            br#"{"error_code":0,"ack_type":"report_new_msg_ack","data":{"reply_task_list":[
                {"task_type":1,"task_dict":{}},{"task_type":"8","task_dict":{"room_wxid":"r"}}]}}"#,
        );
        let tasks = ack.reply_tasks();
        assert_eq!(tasks.len(), 2);
        assert_eq!(tasks[1].task_type(), Some(8));

        let encoded = json!({"data": {"reply_task_list": "[{\"task_type\":2}]"}});
        assert_eq!(Ack::from_value(&encoded).reply_tasks().len(), 1);
        let encoded_data = json!({"data": "{\"reply_task_list\":[{\"task_type\":2}]}"});
        assert_eq!(Ack::from_value(&encoded_data).reply_tasks().len(), 1);
        assert!(
            Ack::from_value(&json!({"data": null}))
                .reply_tasks()
                .is_empty()
        );
        assert!(
            Ack::from_value(&json!({"data": {"reply_task_list": null}}))
                .reply_tasks()
                .is_empty()
        );
    }

    #[test]
    fn pulled_task_with_and_without_task() {
        let ack = Ack::from_value(&json!({"ack_type":"pull_task_ack","data":{
            "task_id":"t-1","task_data":{"task_type":200,"task_dict":{"qrcode_session_id":"q"}}}}));
        let (id, task) = ack.pulled_task().expect("a task");
        assert_eq!(id, "t-1");
        assert_eq!(task.task_type(), Some(200));

        let numeric_id =
            Ack::from_value(&json!({"data":{"task_id":42,"task_data":{"task_type":8}}}));
        assert_eq!(numeric_id.pulled_task().map(|t| t.0).as_deref(), Some("42"));
        let no_id = Ack::from_value(&json!({"data":{"task_data":{"task_type":8}}}));
        assert_eq!(no_id.pulled_task().map(|t| t.0).as_deref(), Some(""));

        for none in [
            json!({"data":{}}),
            json!({"data":null}),
            json!({}),
            json!({"data":{"task_id":"x","task_data":{}}}),
        ] {
            assert!(Ack::from_value(&none).pulled_task().is_none(), "{none}");
        }
    }

    #[test]
    fn login_ack_accessors() {
        let ack = Ack::from_value(&json!({"error_code":0,"ack_type":"login_ack","data":{
            "signature":"ABC","option":{"flag_report_contact":"3"},
            "extension_protocol":{"type":"websocket","param":{"ws_url":"ws://127.0.0.1:1/ws","heartbeat_interval":"15"}}}}));
        assert_eq!(ack.signature().as_deref(), Some("ABC"));
        assert_eq!(ack.flag_report_contact(), Some(3));
        assert_eq!(
            ack.websocket(),
            Some(WebSocketExtension {
                ws_url: "ws://127.0.0.1:1/ws".into(),
                heartbeat_interval: Duration::from_secs(15)
            })
        );

        let bare = Ack::parse(b"{}");
        assert_eq!(bare.signature(), None);
        assert_eq!(bare.flag_report_contact(), None);
        assert_eq!(bare.websocket(), None);

        let other_ext = Ack::from_value(
            &json!({"data":{"extension_protocol":{"type":"mqtt","param":{"ws_url":"x"}}}}),
        );
        assert_eq!(other_ext.websocket(), None);
        let default_hb = Ack::from_value(
            &json!({"data":{"extension_protocol":{"type":"WebSocket","param":{"ws_url":"ws://h/"}}}}),
        );
        assert_eq!(
            default_hb.websocket().map(|w| w.heartbeat_interval),
            Some(Duration::from_secs(30))
        );
        let negative = Ack::from_value(&json!({"data":{"option":{"flag_report_contact":-1}}}));
        assert_eq!(negative.flag_report_contact(), None);
    }

    #[test]
    fn report_batch_is_offered_only_with_two_or_more() {
        let offer = |v: Value| Ack::from_value(&json!({"data":{"option":{"report_batch":v}}}));
        assert_eq!(offer(json!(64)).report_batch(), Some(64));
        assert_eq!(offer(json!("16")).report_batch(), Some(16));
        assert_eq!(offer(json!(2)).report_batch(), Some(2));
        for none in [json!(1), json!(0), json!(-5), json!("many"), json!(null)] {
            assert_eq!(offer(none.clone()).report_batch(), None, "{none}");
        }
        assert_eq!(Ack::parse(b"{}").report_batch(), None);
    }

    #[test]
    fn exit_flags_in_every_shape() {
        let cases = [
            (json!({"exit_wehub":1,"exit_wechat":1}), (true, true)),
            (json!({"exit_wehub":"1","exit_wechat":"0"}), (true, false)),
            (
                json!({"exit_wehub":false,"exit_wechat":true}),
                (false, true),
            ),
            (json!({}), (false, false)),
        ];
        for (data, (wehub, wechat)) in cases {
            let flags = Ack::from_value(&json!({"ack_type":"logout_ack","data":data})).exit_flags();
            assert_eq!(
                (flags.exit_wehub, flags.exit_wechat),
                (wehub, wechat),
                "{data}"
            );
        }
    }
}
