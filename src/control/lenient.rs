//! Lenient readers for values from the control plane: numbers that arrive as strings, flags
//! that arrive as numbers, strings or bools, objects that arrive JSON-encoded in a string.
//! Spec A.2: "strict when sending, lenient when reading".

use serde_json::{Map, Value};
use std::borrow::Cow;

/// An integer sent as a JSON number (integral floats too) or as a numeric string.
pub(crate) fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < i64::MAX as f64)
                .map(|f| f as i64)
        }),
        Value::String(s) => {
            let s = s.trim();
            s.parse::<i64>().ok().or_else(|| {
                s.parse::<f64>()
                    .ok()
                    .filter(|f| f.fract() == 0.0 && f.abs() < i64::MAX as f64)
                    .map(|f| f as i64)
            })
        }
        _ => None,
    }
}

/// A string sent as a JSON string or as a number (ids such as a numeric Uin).
pub(crate) fn as_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A yes/no flag sent as a bool, a number (non-zero = yes) or a string ("1", "true", "yes").
pub(crate) fn as_flag(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(_) => as_i64(v).map(|n| n != 0),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" => Some(true),
            "false" | "no" | "" => Some(false),
            _ => as_i64(v).map(|n| n != 0),
        },
        _ => None,
    }
}

/// An object, or a string holding a JSON-encoded object (some servers double-encode `data`).
pub(crate) fn as_object(v: &Value) -> Option<Cow<'_, Map<String, Value>>> {
    match v {
        Value::Object(m) => Some(Cow::Borrowed(m)),
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(m)) => Some(Cow::Owned(m)),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integers_from_numbers_and_strings() {
        assert_eq!(as_i64(&json!(7)), Some(7));
        assert_eq!(as_i64(&json!("7")), Some(7));
        assert_eq!(as_i64(&json!(" -3 ")), Some(-3));
        assert_eq!(as_i64(&json!(1.0)), Some(1));
        assert_eq!(as_i64(&json!("2.0")), Some(2));
        assert_eq!(as_i64(&json!(1.5)), None);
        assert_eq!(as_i64(&json!("abc")), None);
        assert_eq!(as_i64(&json!(null)), None);
        assert_eq!(as_i64(&json!(true)), None);
    }

    #[test]
    fn flags_in_every_shape() {
        for yes in [json!(1), json!("1"), json!(true), json!("true"), json!("2")] {
            assert_eq!(as_flag(&yes), Some(true), "{yes}");
        }
        for no in [
            json!(0),
            json!("0"),
            json!(false),
            json!("false"),
            json!(""),
        ] {
            assert_eq!(as_flag(&no), Some(false), "{no}");
        }
        assert_eq!(as_flag(&json!("maybe")), None);
        assert_eq!(as_flag(&json!([])), None);
    }

    #[test]
    fn strings_from_numbers() {
        assert_eq!(as_string(&json!("a")).as_deref(), Some("a"));
        assert_eq!(as_string(&json!(176666155)).as_deref(), Some("176666155"));
        assert_eq!(as_string(&json!(null)), None);
    }

    #[test]
    fn objects_possibly_encoded() {
        assert!(as_object(&json!({"a": 1})).is_some());
        let enc = json!("{\"a\":1}");
        assert_eq!(
            as_object(&enc).and_then(|m| m.get("a").cloned()),
            Some(json!(1))
        );
        assert!(as_object(&json!("[1]")).is_none());
        assert!(as_object(&json!(3)).is_none());
    }
}
