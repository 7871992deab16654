//! The state of one logged-in web session: credentials, cookies, hosts, sync keys. Serialisable
//! so it can be saved and resumed; `Debug` never shows a credential.

use super::cookies::CookieJar;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The credentials that authenticate every call after login (spec §2.1).
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Credentials {
    pub uin: String,
    pub sid: String,
    pub skey: String,
    pub pass_ticket: String,
    pub device_id: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The uin is the account's public id, not a secret.
        f.debug_struct("Credentials")
            .field("uin", &self.uin)
            .field("sid", &"<redacted>")
            .field("skey", &"<redacted>")
            .field("pass_ticket", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// `BaseRequest` as the server expects it. Uin goes as a number when it is one (W4U, OW and
    /// the official client after init), else as the string.
    pub fn base_request(&self) -> serde_json::Value {
        let uin = match self.uin.parse::<i64>() {
            Ok(n) => serde_json::Value::from(n),
            Err(_) => serde_json::Value::from(self.uin.clone()),
        };
        serde_json::json!({
            "Uin": uin,
            "Sid": self.sid,
            "Skey": self.skey,
            "DeviceID": self.device_id,
        })
    }
}

/// A SyncKey / SyncCheckKey: ordered (Key, Val) pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncKey(pub Vec<(i64, i64)>);

impl SyncKey {
    /// Reads the wire shape `{"Count":N,"List":[{"Key":k,"Val":v},…]}`, tolerating a Count that
    /// disagrees with the list (the list wins) and numbers sent as strings.
    pub fn from_json(v: &serde_json::Value) -> Option<SyncKey> {
        let list = v.get("List")?.as_array()?;
        let mut out = Vec::with_capacity(list.len());
        for item in list {
            let k = json_i64(item.get("Key")?)?;
            let val = json_i64(item.get("Val")?)?;
            out.push((k, val));
        }
        Some(SyncKey(out))
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "Count": self.0.len(),
            "List": self.0.iter().map(|(k, v)| serde_json::json!({"Key": k, "Val": v})).collect::<Vec<_>>(),
        })
    }

    /// The `synckey` query value: `k_v|k_v…`.
    pub fn to_query(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}_{v}"))
            .collect::<Vec<_>>()
            .join("|")
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

pub(crate) fn json_i64(v: &serde_json::Value) -> Option<i64> {
    match v {
        serde_json::Value::Number(n) => n.as_i64().or_else(|| n.as_u64().map(|u| u as i64)),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Everything needed to keep talking to the server after login.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WebSession {
    pub credentials: Credentials,
    pub cookies: CookieJar,
    /// Origins (scheme://host[:port]/) of the main, file and webpush hosts.
    pub main_origin: String,
    pub file_origin: String,
    pub webpush_origin: String,
    pub sync_key: SyncKey,
    pub sync_check_key: SyncKey,
    /// Own `UserName` (session-scoped `@…`).
    pub self_user_name: String,
    pub desktop_mode: bool,
}

impl fmt::Debug for WebSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSession")
            .field("credentials", &self.credentials)
            .field("cookies", &self.cookies)
            .field("main_origin", &self.main_origin)
            .field("sync_key_len", &self.sync_key.0.len())
            .field("self_user_name", &self.self_user_name)
            .field("desktop_mode", &self.desktop_mode)
            .finish()
    }
}

impl WebSession {
    /// The key to present to synccheck: SyncCheckKey when the server gave one, else SyncKey.
    pub fn check_key(&self) -> &SyncKey {
        if self.sync_check_key.is_empty() {
            &self.sync_key
        } else {
            &self.sync_check_key
        }
    }
}

/// A fresh DeviceID: `e` + 15 random digits (spec §2.1).
pub fn new_device_id() -> String {
    use rand::RngExt;
    let mut rng = rand::rng();
    let mut s = String::with_capacity(16);
    s.push('e');
    for _ in 0..15 {
        s.push(char::from(b'0' + rng.random_range(0..10u8)));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_key_round_trip_and_query() {
        let v = serde_json::json!({"Count": 2, "List": [{"Key": 1, "Val": 698325105}, {"Key": "1000", "Val": 1546210682}]});
        let k = SyncKey::from_json(&v).unwrap();
        assert_eq!(k.0, vec![(1, 698325105), (1000, 1546210682)]);
        assert_eq!(k.to_query(), "1_698325105|1000_1546210682");
        assert_eq!(SyncKey::from_json(&k.to_json()).unwrap(), k);
        assert_eq!(k.to_json()["Count"], 2);
    }

    #[test]
    fn sync_key_rejects_garbage() {
        assert!(
            SyncKey::from_json(&serde_json::json!({"List": [{"Key": "x", "Val": 1}]})).is_none()
        );
        assert!(SyncKey::from_json(&serde_json::json!({"Count": 0})).is_none());
    }

    #[test]
    fn credentials_debug_redacts() {
        let c = Credentials {
            uin: "42".into(),
            sid: "SIDVALUE".into(),
            skey: "@crypt_x".into(),
            pass_ticket: "PT".into(),
            device_id: new_device_id(),
        };
        let d = format!("{c:?}");
        assert!(
            !d.contains("SIDVALUE") && !d.contains("@crypt_x") && !d.contains("PT\""),
            "{d}"
        );
        assert_eq!(c.base_request()["Uin"], 42);
    }

    #[test]
    fn device_id_shape() {
        let d = new_device_id();
        assert_eq!(d.len(), 16);
        assert!(d.starts_with('e') && d[1..].chars().all(|c| c.is_ascii_digit()));
    }
}
