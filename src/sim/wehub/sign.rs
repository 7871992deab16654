//! Signatures: the md5 login handshake (spec A.4) and the HMAC-SHA256 request signing check (B.6).

use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;

/// Header carrying the unix-seconds timestamp that is part of the signed text (B.6).
pub const TIMESTAMP_HEADER: &str = "x-wxagent-timestamp";
/// Header carrying `sha256=<hex>` (B.6).
pub const SIGNATURE_HEADER: &str = "x-wxagent-signature";
/// Header carrying the client's idempotency key for a report (B.5).
pub const EVENT_ID_HEADER: &str = "x-wxagent-event-id";

/// `md5_hex(wxid + "#" + nonce + "#" + secret)`, lower-case hex: the `login_ack` signature.
pub fn login_signature(wxid: &str, nonce: &str, secret: &str) -> String {
    let mut md5 = Md5::new();
    md5.update(wxid.as_bytes());
    md5.update(b"#");
    md5.update(nonce.as_bytes());
    md5.update(b"#");
    md5.update(secret.as_bytes());
    hex::encode(md5.finalize())
}

/// `sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`: what a signing client sends.
pub fn request_signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mac = keyed_mac(secret, timestamp, body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a B.6 signature header value against the body; hex of either case is accepted and the
/// comparison is constant-time.
pub fn verify_request(secret: &str, timestamp: &str, signature: &str, body: &[u8]) -> bool {
    let Some(hex_part) = signature
        .get(..7)
        .filter(|prefix| prefix.eq_ignore_ascii_case("sha256="))
        .and_then(|_| signature.get(7..))
    else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_part.trim()) else {
        return false;
    };
    keyed_mac(secret, timestamp, body)
        .verify_slice(&expected)
        .is_ok()
}

fn keyed_mac(secret: &str, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("hmac accepts keys of any length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The B.6 headers of one request and whether they verified.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignatureCheck {
    pub timestamp: Option<String>,
    pub signature: Option<String>,
    /// `None`: not signed (no signature header) or no secret configured to check against;
    /// `Some(false)`: signed, but the timestamp is missing or the HMAC does not match.
    pub ok: Option<bool>,
}

impl SignatureCheck {
    /// Whether `mode` refuses this request: it requires signatures and this one is missing or
    /// does not verify.
    pub fn refused_by(&self, mode: &super::mode::Mode) -> bool {
        mode.require_signature && self.ok != Some(true)
    }

    pub fn from_headers(
        headers: &axum::http::HeaderMap,
        secret: Option<&str>,
        body: &[u8],
    ) -> Self {
        let text = |name: &str| {
            headers
                .get(name)
                .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        };
        let timestamp = text(TIMESTAMP_HEADER);
        let signature = text(SIGNATURE_HEADER);
        let ok = match (secret, &signature) {
            (Some(secret), Some(signature)) => Some(match &timestamp {
                Some(timestamp) => verify_request(secret, timestamp, signature, body),
                None => false,
            }),
            _ => None,
        };
        SignatureCheck {
            timestamp,
            signature,
            ok,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_login_vector() {
        assert_eq!(
            login_signature("fangqing_hust", "helloworld", "112233"),
            "4b8d798f8b34a7bd2cd3b4cbfa309d9c"
        );
    }

    #[test]
    fn request_signature_round_trips_and_rejects_tampering() {
        let sig = request_signature("k", "1700000000", b"{\"a\":1}");
        assert!(sig.starts_with("sha256="));
        assert!(verify_request("k", "1700000000", &sig, b"{\"a\":1}"));
        assert!(verify_request(
            "k",
            "1700000000",
            &sig.to_uppercase().replacen("SHA256=", "sha256=", 1),
            b"{\"a\":1}"
        ));
        assert!(!verify_request("k", "1700000001", &sig, b"{\"a\":1}"));
        assert!(!verify_request("k", "1700000000", &sig, b"{\"a\":2}"));
        assert!(!verify_request("other", "1700000000", &sig, b"{\"a\":1}"));
        assert!(!verify_request(
            "k",
            "1700000000",
            "sha256=zz",
            b"{\"a\":1}"
        ));
        assert!(!verify_request("k", "1700000000", "", b"{\"a\":1}"));
    }

    #[test]
    fn independent_hmac_vector() {
        // Computed with Python's hmac module, not with this code.
        assert_eq!(
            request_signature("112233", "1700000000", br#"{"action":"login"}"#),
            "sha256=83ef0e4ed79909d4dca15bb2418334b38e1c5a1ed81f609ecb65c1e4be1be1a0"
        );
    }
}
