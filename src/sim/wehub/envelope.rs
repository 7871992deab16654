//! Request envelopes read leniently (spec A.2: numbers may arrive as strings, `data` may be
//! missing) and ack bodies written strictly.

use serde_json::{Map, Value, json};

/// One parsed callback request.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub action: String,
    pub appid: String,
    pub wxid: String,
    pub client_session: Option<String>,
    /// Always present: a missing or null `data` becomes `{}`; a string holding a JSON object is
    /// unwrapped; anything else is kept as sent.
    pub data: Value,
}

/// Why a callback body could not be read as an envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("empty request body")]
    Empty,
    #[error("request body is not json: {0}")]
    NotJson(String),
    #[error("request body is not a json object")]
    NotObject,
    #[error("missing action")]
    MissingAction,
}

impl Envelope {
    pub fn parse(body: &[u8]) -> Result<Envelope, EnvelopeError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(EnvelopeError::Empty);
        }
        let value: Value =
            serde_json::from_slice(body).map_err(|e| EnvelopeError::NotJson(e.to_string()))?;
        Envelope::from_value(value)
    }

    /// [`parse`](Self::parse) for a body already read as JSON.
    pub fn from_value(value: Value) -> Result<Envelope, EnvelopeError> {
        let Value::Object(mut object) = value else {
            return Err(EnvelopeError::NotObject);
        };
        // "atcion" is the vendor's own misspelling (spec A.8); accept it wherever we read.
        let action = lenient_string(object.get("action"))
            .or_else(|| lenient_string(object.get("atcion")))
            .filter(|action| !action.is_empty())
            .ok_or(EnvelopeError::MissingAction)?;
        let data = match object.remove("data") {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(Value::String(text)) => match serde_json::from_str::<Value>(&text) {
                Ok(inner @ Value::Object(_)) => inner,
                _ => Value::String(text),
            },
            Some(other) => other,
        };
        Ok(Envelope {
            action,
            appid: lenient_string(object.get("appid")).unwrap_or_default(),
            wxid: lenient_string(object.get("wxid")).unwrap_or_default(),
            client_session: lenient_string(object.get("client_session")),
            data,
        })
    }

    /// A field of `data` (None when `data` is not an object).
    pub fn field(&self, key: &str) -> Option<&Value> {
        self.data.get(key)
    }
}

/// A string, or a number/bool rendered as one.
pub fn lenient_string(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// An integer, or a string holding one (surrounding blanks ignored), or an integral float.
pub fn lenient_i64(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::Number(number) => number.as_i64().or_else(|| {
            number
                .as_f64()
                .filter(|float| float.fract() == 0.0 && float.abs() < 9.0e15)
                .map(|float| float as i64)
        }),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

/// `{"error_code":0,"error_reason":"","ack_type":…,"data":…}`.
pub fn ack(ack_type: &str, data: Value) -> Value {
    json!({"error_code": 0, "error_reason": "", "ack_type": ack_type, "data": data})
}

/// A refusal: non-zero `error_code` with a reason.
pub fn refusal(ack_type: &str, error_code: i64, reason: &str) -> Value {
    json!({"error_code": error_code, "error_reason": reason, "ack_type": ack_type, "data": {}})
}

/// The ack type a stock WeHub server answers for an action (spec A.2).
pub fn ack_type_for(action: &str) -> &'static str {
    match action {
        "login" => "login_ack",
        "logout" => "logout_ack",
        "pull_task" => "pull_task_ack",
        _ => "common_ack",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_fields() {
        let envelope =
            Envelope::parse(br#"{"action":"report_new_msg","appid":12,"wxid":345,"data":null}"#)
                .expect("valid envelope");
        assert_eq!(envelope.appid, "12");
        assert_eq!(envelope.wxid, "345");
        assert_eq!(envelope.data, json!({}));
        assert_eq!(envelope.client_session, None);

        let envelope = Envelope::parse(br#"{"atcion":"heartbeat","data":"{\"x\":\"1\"}"}"#)
            .expect("misspelt action accepted");
        assert_eq!(envelope.action, "heartbeat");
        assert_eq!(envelope.wxid, "");
        assert_eq!(lenient_i64(envelope.field("x")), Some(1));
    }

    #[test]
    fn bad_bodies_say_what_is_wrong() {
        assert_eq!(Envelope::parse(b"  "), Err(EnvelopeError::Empty));
        assert!(matches!(
            Envelope::parse(b"{nope"),
            Err(EnvelopeError::NotJson(_))
        ));
        assert_eq!(Envelope::parse(b"[1]"), Err(EnvelopeError::NotObject));
        assert_eq!(
            Envelope::parse(br#"{"wxid":"a"}"#),
            Err(EnvelopeError::MissingAction)
        );
    }

    #[test]
    fn lenient_numbers() {
        assert_eq!(lenient_i64(Some(&json!(" 7 "))), Some(7));
        assert_eq!(lenient_i64(Some(&json!(7.0))), Some(7));
        assert_eq!(lenient_i64(Some(&json!(7.5))), None);
        assert_eq!(lenient_i64(Some(&json!("x"))), None);
        assert_eq!(lenient_i64(None), None);
        assert_eq!(lenient_string(Some(&json!(null))), None);
    }
}
