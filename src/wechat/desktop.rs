//! Constants of the UOS "desktop mode" login (spec §4.2) and the browser identities we present.
//!
//! Desktop mode adds `mod=desktop` to the jslogin redirect_uri and two headers to
//! webwxnewloginpage; accounts barred from web login (ret 1203) can log in that way. The values
//! are protocol constants an interoperable client must send byte-for-byte.

/// The web client's app id, sent as `appid` to jslogin (spec §3.1).
pub const APPID: &str = "wx782c26e4c19acffb";

/// Value of the `client-version` header on webwxnewloginpage in desktop mode.
pub const CLIENT_VERSION: &str = "2.0.0";

/// Value of the `extspam` header on webwxnewloginpage in desktop mode: blob B of spec §4.2, the
/// value current clients carry since the 2022 restore of UOS login. Opaque (base64 of a binary).
pub const EXTSPAM: &str = "Go8FCIkFEokFCggwMDAwMDAwMRAGGvAESySibk50w5Wb3uTl2c2h64jVVrV7gNs06GFlWplHQbY/5FfiO++1yH4ykCyNPWKXmco+wfQzK5R98D3so7rJ5LmGFvBLjGceleySrc3SOf2Pc1gVehzJgODeS0lDL3/I/0S2SSE98YgKleq6Uqx6ndTy9yaL9qFxJL7eiA/R3SEfTaW1SBoSITIu+EEkXff+Pv8NHOk7N57rcGk1w0ZzRrQDkXTOXFN2iHYIzAAZPIOY45Lsh+A4slpgnDiaOvRtlQYCt97nmPLuTipOJ8Qc5pM7ZsOsAPPrCQL7nK0I7aPrFDF0q4ziUUKettzW8MrAaiVfmbD1/VkmLNVqqZVvBCtRblXb5FHmtS8FxnqCzYP4WFvz3T0TcrOqwLX1M/DQvcHaGGw0B0y4bZMs7lVScGBFxMj3vbFi2SRKbKhaitxHfYHAOAa0X7/MSS0RNAjdwoyGHeOepXOKY+h3iHeqCvgOH6LOifdHf/1aaZNwSkGotYnYScW8Yx63LnSwba7+hESrtPa/huRmB9KWvMCKbDThL/nne14hnL277EDCSocPu3rOSYjuB9gKSOdVmWsj9Dxb/iZIe+S6AiG29Esm+/eUacSba0k8wn5HhHg9d4tIcixrxveflc8vi2/wNQGVFNsGO6tB5WF0xf/plngOvQ1/ivGV/C1Qpdhzznh0ExAVJ6dwzNg7qIEBaw+BzTJTUuRcPk92Sn6QDn2Pu3mpONaEumacjW4w6ipPnPw+g2TfywJjeEcpSZaP4Q3YV5HG8D6UjWA4GSkBKculWpdCMadx0usMomsSS/74QgpYqcPkmamB4nVv1JxczYITIqItIKjD35IGKAUwAA==";

/// Value of the `referer` header on webwxnewloginpage in desktop mode.
pub const REFERER: &str = "https://wx.qq.com/?&lang=zh_CN&target=t";

/// Header names of the desktop-mode additions.
pub const HEADER_CLIENT_VERSION: &str = "client-version";
pub const HEADER_EXTSPAM: &str = "extspam";

/// The UOS browser identity used for every request in desktop mode.
pub const USER_AGENT_DESKTOP: &str = "Mozilla/5.0 (Linux; U; UOS x86_64; zh-cn) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/91.0.4472.124 Safari/537.36 UOSBrowser/6.0.1.1001";

/// A current desktop Chrome identity, used in plain web mode.
pub const USER_AGENT_WEB: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/136.0.0.0 Safari/537.36";

/// jslogin `redirect_uri` values (spec §3.1): the desktop one carries `mod=desktop`.
pub const JSLOGIN_REDIRECT_WEB: &str = "https://wx.qq.com/cgi-bin/mmwebwx-bin/webwxnewloginpage";
pub const JSLOGIN_REDIRECT_DESKTOP: &str =
    "https://wx.qq.com/cgi-bin/mmwebwx-bin/webwxnewloginpage?mod=desktop";

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    #[test]
    fn extspam_is_blob_b() {
        // Spec §4.2: 880 characters of standard base64 with padding.
        assert_eq!(EXTSPAM.len(), 880);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(EXTSPAM)
            .expect("extspam is valid base64");
        assert_eq!(bytes.len(), 880 / 4 * 3 - 2);
        // The decoded header carries the ASCII version field "00000001" (spec §4.2).
        assert!(bytes.windows(8).any(|w| w == b"00000001"));
        assert!(EXTSPAM.starts_with("Go8FCIkFEokFCggwMDAwMDAwMRAG"));
        assert!(EXTSPAM.ends_with("KAUwAA=="));
    }

    #[test]
    fn header_values_are_valid() {
        for v in [
            CLIENT_VERSION,
            EXTSPAM,
            REFERER,
            USER_AGENT_DESKTOP,
            USER_AGENT_WEB,
        ] {
            assert!(reqwest::header::HeaderValue::from_str(v).is_ok(), "{v}");
        }
        assert!(USER_AGENT_DESKTOP.contains("UOS x86_64"));
        assert!(
            url::Url::parse(JSLOGIN_REDIRECT_DESKTOP)
                .unwrap()
                .query_pairs()
                .any(|(k, v)| k == "mod" && v == "desktop")
        );
        assert_eq!(APPID.len(), 18);
    }
}
