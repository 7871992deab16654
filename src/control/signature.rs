//! Signatures: the WeHub login-ack signature (spec A.4), wxagent's request signing (B.6) and
//! the nonce sent with `login`. Signatures are never logged: with a known wxid and nonce, an
//! MD5 login signature is a brute-force oracle for a weak secret.

use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};
use rand::RngExt;
use sha2::Sha256;
use std::time::{SystemTime, UNIX_EPOCH};

/// Header carrying the Unix time (seconds) the request was signed at (spec B.6).
pub const TIMESTAMP_HEADER: &str = "X-Wxagent-Timestamp";
/// Header carrying `sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>` (spec B.6).
pub const SIGNATURE_HEADER: &str = "X-Wxagent-Signature";
/// Header naming a report so the server can dedupe re-deliveries (spec B.5).
pub const EVENT_ID_HEADER: &str = "X-Wxagent-Event-Id";

const SIGNATURE_PREFIX: &str = "sha256=";

/// `md5_hex(wxid + "#" + nonce + "#" + secret)`, lower-case hex: what a server puts in
/// `login_ack.data.signature`.
pub fn login_signature(wxid: &str, nonce: &str, secret: &str) -> String {
    let mut md5 = Md5::new();
    md5.update(wxid.as_bytes());
    md5.update(b"#");
    md5.update(nonce.as_bytes());
    md5.update(b"#");
    md5.update(secret.as_bytes());
    hex::encode(md5.finalize())
}

/// Whether `signature` (hex, either case, surrounding blanks ignored) is the login signature
/// for this wxid, nonce and secret.
pub fn verify_login_signature(wxid: &str, nonce: &str, secret: &str, signature: &str) -> bool {
    let expected = login_signature(wxid, nonce, secret);
    let got = signature.trim().to_ascii_lowercase();
    constant_time_eq(expected.as_bytes(), got.as_bytes())
}

/// A fresh random nonce for `login.data.nonce`: 32 characters from `[0-9A-Za-z]`.
pub fn new_nonce() -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

/// The two B.6 header values for one request. `Debug` leaves the signature out.
#[derive(Clone, PartialEq, Eq)]
pub struct SignatureHeaders {
    /// Unix seconds, decimal.
    pub timestamp: String,
    /// `sha256=<lower-case hex>`.
    pub signature: String,
}

impl std::fmt::Debug for SignatureHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignatureHeaders")
            .field("timestamp", &self.timestamp)
            .field("signature", &"<redacted>")
            .finish()
    }
}

/// `sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>` over the exact body bytes.
pub fn sign_body(secret: &str, timestamp: &str, body: &[u8]) -> String {
    format!(
        "{SIGNATURE_PREFIX}{}",
        hex::encode(mac(secret, timestamp, body).finalize().into_bytes())
    )
}

/// Signs a body at `now`.
pub fn sign_request(secret: &str, body: &[u8], now: SystemTime) -> SignatureHeaders {
    // A clock before 1970 signs as 0 rather than failing: the server's skew check decides.
    let seconds = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let timestamp = seconds.to_string();
    let signature = sign_body(secret, &timestamp, body);
    SignatureHeaders {
        timestamp,
        signature,
    }
}

/// Checks the B.6 headers of a received request against its body (constant-time). The
/// `sha256=` prefix is required; the hex may be in either case. Freshness of `timestamp` is the
/// receiver's policy and is not checked here.
pub fn verify_request(secret: &str, timestamp: &str, signature: &str, body: &[u8]) -> bool {
    let signature = signature.trim();
    let Some(hex_part) = signature
        .get(..SIGNATURE_PREFIX.len())
        .filter(|p| p.eq_ignore_ascii_case(SIGNATURE_PREFIX))
        .and_then(|_| signature.get(SIGNATURE_PREFIX.len()..))
    else {
        return false;
    };
    let Ok(tag) = hex::decode(hex_part) else {
        return false;
    };
    mac(secret, timestamp.trim(), body)
        .verify_slice(&tag)
        .is_ok()
}

fn mac(secret: &str, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length; an error here would be a bug in the hmac crate.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC-SHA256 takes a key of any length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn vendor_login_vector() {
        assert_eq!(
            login_signature("fangqing_hust", "helloworld", "112233"),
            "4b8d798f8b34a7bd2cd3b4cbfa309d9c"
        );
    }

    #[test]
    fn login_signature_is_checked_case_insensitively() {
        let (w, n, s) = ("fangqing_hust", "helloworld", "112233");
        assert!(verify_login_signature(
            w,
            n,
            s,
            "4b8d798f8b34a7bd2cd3b4cbfa309d9c"
        ));
        assert!(verify_login_signature(
            w,
            n,
            s,
            "4B8D798F8B34A7BD2CD3B4CBFA309D9C"
        ));
        assert!(verify_login_signature(
            w,
            n,
            s,
            " 4b8d798f8b34a7bd2cd3b4cbfa309d9c\n"
        ));
        assert!(!verify_login_signature(
            w,
            n,
            s,
            "4b8d798f8b34a7bd2cd3b4cbfa309d9d"
        ));
        assert!(!verify_login_signature(w, n, s, ""));
        assert!(!verify_login_signature(
            w,
            n,
            "wrong",
            "4b8d798f8b34a7bd2cd3b4cbfa309d9c"
        ));
        assert!(!verify_login_signature(
            w,
            "other",
            s,
            "4b8d798f8b34a7bd2cd3b4cbfa309d9c"
        ));
    }

    #[test]
    fn nonces_are_fresh_and_alphanumeric() {
        let (a, b) = (new_nonce(), new_nonce());
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }

    #[test]
    fn request_signature_known_answer() {
        // Computed independently (Python hmac): HMAC-SHA256("s3cret", "1700000000.{\"a\":1}").
        assert_eq!(
            sign_body("s3cret", "1700000000", br#"{"a":1}"#),
            "sha256=1698a50bc74d1ff1db85c4e0a5297c2ad9fdba245d5737cdb789e4cc6e098940"
        );
    }

    #[test]
    fn signed_requests_verify_and_tampering_fails() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let body = br#"{"action":"login"}"#;
        let h = sign_request("s3cret", body, now);
        assert_eq!(h.timestamp, "1700000000");
        assert!(verify_request("s3cret", &h.timestamp, &h.signature, body));
        assert!(verify_request(
            "s3cret",
            &h.timestamp,
            &h.signature.to_uppercase().replace("SHA256=", "sha256="),
            body
        ));
        assert!(!verify_request("other", &h.timestamp, &h.signature, body));
        assert!(!verify_request("s3cret", "1700000001", &h.signature, body));
        assert!(!verify_request(
            "s3cret",
            &h.timestamp,
            &h.signature,
            b"{\"action\":\"logout\"}"
        ));
        assert!(!verify_request(
            "s3cret",
            &h.timestamp,
            h.signature.trim_start_matches("sha256="),
            body
        ));
        assert!(!verify_request("s3cret", &h.timestamp, "sha256=zz", body));
        assert!(!verify_request("s3cret", &h.timestamp, "", body));
    }

    #[test]
    fn debug_hides_the_signature() {
        let h = sign_request("s3cret", b"x", SystemTime::now());
        let shown = format!("{h:?}");
        assert!(!shown.contains(&h.signature[7..]), "{shown}");
        assert!(shown.contains(&h.timestamp));
    }
}
