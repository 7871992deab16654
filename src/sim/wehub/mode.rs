//! The behaviour switches of the reference control plane (`POST /__cp/mode`), merged from
//! partial JSON updates.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How the server answers. Every field has a default, so a partial update names only what changes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Mode {
    /// The shared secret: signs `login_ack` (A.4) and checks B.6 request signatures. `None`:
    /// login signatures are computed over an empty secret and B.6 headers are not checked.
    pub secret: Option<String>,
    /// Answer `login` with `error_code` 1.
    pub refuse_login: bool,
    /// Answer `login` with a signature that does not match.
    pub wrong_signature: bool,
    /// Answer `login` without a signature.
    pub no_signature: bool,
    /// `logout_ack.data.exit_wehub` (0 or 1).
    pub exit_wehub: u8,
    /// `logout_ack.data.exit_wechat` (0 or 1).
    pub exit_wechat: u8,
    /// `login_ack.data.option.flag_report_contact`.
    pub flag_report_contact: u32,
    pub auto_reply: Option<AutoReply>,
    /// Every wire request (callback and upload) answers HTTP 503.
    pub down: bool,
    /// Added latency, applied after the request took effect and before the answer is sent.
    pub delay_ms: u64,
    /// When set, `login_ack` carries `extension_protocol` (A.8) pointing at this WebSocket.
    pub websocket: Option<WebsocketMode>,
    /// `GET /wehub/ws` refuses the upgrade with HTTP 403 (the client must fall back to HTTP).
    pub ws_refuse: bool,
    /// WebSocket answers carry no `event_id`, like a stock server's (the client must then
    /// match them by order, one report at a time).
    pub ws_no_echo: bool,
    /// Requests, uploads and WebSocket upgrades without a valid B.6 signature are answered
    /// HTTP 401 (and recorded). Needs `secret`.
    pub require_signature: bool,
    /// When 2 or more, `login_ack.data.option.report_batch` offers `report_batch` posts of up
    /// to this many reports (wxagent's extension). 0: not offered, and a `report_batch` post
    /// is ignored as a stock WeHub server ignores an action it does not know.
    pub report_batch: u32,
}

/// Reply `reply` to every incoming text containing `match` (never to the account's own messages).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoReply {
    #[serde(rename = "match")]
    pub pattern: String,
    pub reply: String,
}

/// `extension_protocol.param` of `login_ack`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebsocketMode {
    pub ws_url: String,
    #[serde(default = "default_heartbeat")]
    pub heartbeat_interval: u64,
}

fn default_heartbeat() -> u64 {
    30
}

impl Default for Mode {
    fn default() -> Self {
        Mode {
            secret: None,
            refuse_login: false,
            wrong_signature: false,
            no_signature: false,
            exit_wehub: 1,
            exit_wechat: 0,
            flag_report_contact: 7,
            auto_reply: None,
            down: false,
            delay_ms: 0,
            websocket: None,
            ws_refuse: false,
            ws_no_echo: false,
            require_signature: false,
            report_batch: 0,
        }
    }
}

// Hand-written so the secret never reaches a log line through `{:?}`.
impl std::fmt::Debug for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mode")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("refuse_login", &self.refuse_login)
            .field("wrong_signature", &self.wrong_signature)
            .field("no_signature", &self.no_signature)
            .field("exit_wehub", &self.exit_wehub)
            .field("exit_wechat", &self.exit_wechat)
            .field("flag_report_contact", &self.flag_report_contact)
            .field("auto_reply", &self.auto_reply)
            .field("down", &self.down)
            .field("delay_ms", &self.delay_ms)
            .field("websocket", &self.websocket)
            .field("ws_refuse", &self.ws_refuse)
            .field("ws_no_echo", &self.ws_no_echo)
            .field("require_signature", &self.require_signature)
            .field("report_batch", &self.report_batch)
            .finish()
    }
}

impl Mode {
    /// This mode with the keys of `patch` (a JSON object) replaced; an unknown key, a value of
    /// the wrong type or an out-of-range flag is an error naming it.
    pub fn merged(&self, patch: &Value) -> Result<Mode, String> {
        let Value::Object(patch) = patch else {
            return Err("mode update must be a json object".to_owned());
        };
        let Ok(Value::Object(mut current)) = serde_json::to_value(self) else {
            return Err("mode is not representable as json".to_owned());
        };
        for (key, value) in patch {
            if !current.contains_key(key) {
                return Err(format!("unknown mode field {key:?}"));
            }
            current.insert(key.clone(), value.clone());
        }
        let merged: Mode = serde_json::from_value(Value::Object(current))
            .map_err(|e| format!("invalid mode: {e}"))?;
        merged.validate()?;
        Ok(merged)
    }

    fn validate(&self) -> Result<(), String> {
        for (name, flag) in [
            ("exit_wehub", self.exit_wehub),
            ("exit_wechat", self.exit_wechat),
        ] {
            if flag > 1 {
                return Err(format!("{name} must be 0 or 1, got {flag}"));
            }
        }
        if let Some(websocket) = &self.websocket
            && websocket.ws_url.is_empty()
        {
            return Err("websocket.ws_url must not be empty".to_owned());
        }
        if self.require_signature && self.secret.is_none() {
            return Err("require_signature needs a secret to check against".to_owned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn partial_updates_merge() {
        let mode = Mode::default()
            .merged(&json!({"secret": "s", "down": true}))
            .expect("valid update");
        let mode = mode
            .merged(&json!({"auto_reply": {"match": "hi", "reply": "hello"}}))
            .expect("valid update");
        assert_eq!(mode.secret.as_deref(), Some("s"));
        assert!(mode.down);
        assert_eq!(mode.exit_wehub, 1);
        assert_eq!(
            mode.auto_reply,
            Some(AutoReply {
                pattern: "hi".into(),
                reply: "hello".into()
            })
        );
        let mode = mode.merged(&json!({"secret": null})).expect("valid update");
        assert_eq!(mode.secret, None);
    }

    #[test]
    fn bad_updates_name_the_field() {
        let err = Mode::default()
            .merged(&json!({"nope": 1}))
            .expect_err("unknown field");
        assert!(err.contains("nope"), "{err}");
        let err = Mode::default()
            .merged(&json!({"exit_wechat": 2}))
            .expect_err("out of range");
        assert!(err.contains("exit_wechat"), "{err}");
        let err = Mode::default()
            .merged(&json!({"down": "yes"}))
            .expect_err("wrong type");
        assert!(err.contains("invalid mode"), "{err}");
        assert!(Mode::default().merged(&json!([])).is_err());
        let err = Mode::default()
            .merged(&json!({"require_signature": true}))
            .expect_err("no secret");
        assert!(err.contains("require_signature"), "{err}");
        assert!(
            Mode::default()
                .merged(&json!({"require_signature": true, "secret": "s"}))
                .is_ok()
        );
    }

    #[test]
    fn debug_hides_the_secret() {
        let mode = Mode {
            secret: Some("hunter2".into()),
            ..Mode::default()
        };
        assert!(!format!("{mode:?}").contains("hunter2"));
    }
}
