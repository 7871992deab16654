//! Generators for the identifiers and credentials the simulated server hands out, in the shapes
//! spec §2.1/§2.5/§6.1 describe (uuids, tickets, skeys, UserNames, message ids, media ids).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const LOWER_ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// `n` random lowercase hex digits.
pub(crate) fn hex(n: usize) -> String {
    const HEX: &[u8] = b"0123456789abcdef";
    (0..n)
        .map(|_| HEX[rand::random_range(0..16usize)] as char)
        .collect()
}

fn pick(alphabet: &[u8], n: usize) -> String {
    (0..n)
        .map(|_| alphabet[rand::random_range(0..alphabet.len())] as char)
        .collect()
}

/// A login uuid: 12 characters of URL-safe base64 ending in `==` (7 random bytes).
pub(crate) fn uuid() -> String {
    let mut bytes = [0u8; 7];
    rand::fill(&mut bytes);
    URL_SAFE.encode(bytes)
}

/// A login ticket as it appears in the redirect_uri: 24 characters then `@qrticket_0`.
pub(crate) fn login_ticket() -> String {
    format!("{}@qrticket_0", pick(ALNUM, 24))
}

pub(crate) fn wxsid() -> String {
    pick(ALNUM, 16)
}

pub(crate) fn skey() -> String {
    format!("@crypt_{}_{}", hex(8), hex(32))
}

/// An already URL-encoded pass_ticket (spec §2.1): base64 with `+`, `/` and `=` percent-encoded.
/// A `+` and a `/` are always present so clients that re-encode or decode it get exercised.
pub(crate) fn pass_ticket() -> String {
    let mut bytes = [0u8; 48];
    rand::fill(&mut bytes);
    let mut raw: Vec<char> = STANDARD.encode(bytes).chars().collect();
    raw[5] = '+';
    raw[17] = '/';
    let mut s: String = raw.into_iter().collect();
    s.push('=');
    s.replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
}

pub(crate) fn data_ticket() -> String {
    let mut bytes = [0u8; 18];
    rand::fill(&mut bytes);
    STANDARD.encode(bytes)
}

pub(crate) fn auth_ticket() -> String {
    let mut bytes = [0u8; 60];
    rand::fill(&mut bytes);
    STANDARD.encode(bytes)
}

/// A person or official account: `@` + 32 hex.
pub(crate) fn person_user_name() -> String {
    format!("@{}", hex(32))
}

/// A group: `@@` + 64 hex.
pub(crate) fn group_user_name() -> String {
    format!("@@{}", hex(64))
}

/// The permanent id of a person, seen only inside XML (MsgType 51).
pub(crate) fn wxid() -> String {
    format!("wxid_{}", pick(LOWER_ALNUM, 14))
}

/// The permanent id of a group, seen only inside XML.
pub(crate) fn chatroom_id() -> String {
    format!(
        "{}@chatroom",
        rand::random_range(10_000_000_000u64..99_999_999_999)
    )
}

pub(crate) fn media_id() -> String {
    format!("@crypt_{}_{}", hex(8), hex(128))
}

pub(crate) fn stranger_ticket() -> String {
    format!("v2_{}@stranger", hex(64))
}

pub(crate) fn stranger_encrypt_name() -> String {
    format!("v1_{}@stranger", hex(64))
}

pub(crate) fn md5_like() -> String {
    hex(32)
}

/// Message ids are 19-digit numbers that fit an i64 and exceed 2^53 (so JS-style precision loss
/// on `NewMsgId` shows up in clients that use it). One process-wide counter keeps them unique.
pub(crate) struct MsgIds(AtomicU64);

impl MsgIds {
    pub(crate) fn new() -> Self {
        MsgIds(AtomicU64::new(
            3_000_000_000_000_000_000 + rand::random_range(0..1_000_000_000_000_000u64),
        ))
    }

    pub(crate) fn next(&self) -> u64 {
        self.0
            .fetch_add(rand::random_range(1..1000u64), Ordering::Relaxed)
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_is_twelve_url_safe_chars_ending_in_two_pads() {
        for _ in 0..100 {
            let u = uuid();
            assert_eq!(u.len(), 12, "{u}");
            assert!(u.ends_with("=="), "{u}");
            assert!(
                u[..10]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "{u}"
            );
        }
    }

    #[test]
    fn credentials_have_spec_shapes() {
        let s = skey();
        assert!(s.starts_with("@crypt_") && s.len() == 7 + 8 + 1 + 32, "{s}");
        let p = pass_ticket();
        assert!(
            p.contains("%2B") && p.contains("%2F") && p.ends_with("%3D"),
            "{p}"
        );
        assert!(!p.contains('+') && !p.contains('/'));
        let t = login_ticket();
        assert_eq!(t.len(), 24 + "@qrticket_0".len());
        assert_eq!(person_user_name().len(), 33);
        assert_eq!(group_user_name().len(), 66);
    }

    #[test]
    fn message_ids_are_19_digits_and_increase() {
        let ids = MsgIds::new();
        let a = ids.next();
        let b = ids.next();
        assert!(b > a);
        assert_eq!(a.to_string().len(), 19);
        assert!(a < i64::MAX as u64);
    }
}
