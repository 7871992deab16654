//! The session's cookie jar: one flat name→value map sent to every WeChat host of the session.
//!
//! Flat rather than domain-aware on purpose (spec §2.2): the file and webpush hosts need the
//! cookies set by the main host (`webwx_data_ticket` is set for `.qq.com`, `wxsid` for
//! `wx.qq.com`), and with the simulator all hosts are one origin anyway. Cookie values are
//! credentials, so `Debug` shows names only.

use std::collections::BTreeMap;
use std::fmt;

use cookie::time::OffsetDateTime;
use reqwest::header::{HeaderMap, HeaderValue, SET_COOKIE};

/// Cookies of one session, persisted in session.json as a JSON object.
#[derive(Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct CookieJar {
    // BTreeMap: the Cookie header comes out in a stable order, which keeps tests and traces
    // deterministic.
    cookies: BTreeMap<String, String>,
}

/// A name is an RFC 6265 token; anything else could not be sent back in a `Cookie` header.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_graphic()
                && !matches!(
                    b,
                    b'(' | b')'
                        | b'<'
                        | b'>'
                        | b'@'
                        | b','
                        | b';'
                        | b':'
                        | b'\\'
                        | b'"'
                        | b'/'
                        | b'['
                        | b']'
                        | b'?'
                        | b'='
                        | b'{'
                        | b'}'
                )
        })
}

/// Values are visible ASCII without the pair separators; non-ASCII bytes could not be sent back
/// unchanged (they arrive lossily decoded).
fn valid_value(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b';' | b','))
}

impl CookieJar {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies every `Set-Cookie` header: a cookie with `Max-Age<=0` or an `Expires` in the past
    /// is removed; an empty value is ignored (as the wechat4u parser does); attributes (Domain,
    /// Path, Secure…) are ignored; unparsable lines are skipped.
    pub fn store_from_headers(&mut self, headers: &HeaderMap) {
        let now = OffsetDateTime::now_utc();
        for raw in headers.get_all(SET_COOKIE) {
            let line = String::from_utf8_lossy(raw.as_bytes());
            let Ok(c) = cookie::Cookie::parse(line.as_ref()) else {
                tracing::trace!("skipping an unparsable Set-Cookie header");
                continue;
            };
            let name = c.name().trim();
            if !valid_name(name) {
                continue;
            }
            let expired = c
                .max_age()
                .is_some_and(|age| age.is_zero() || age.is_negative())
                || c.expires_datetime().is_some_and(|when| when <= now);
            if expired {
                self.cookies.remove(name);
                continue;
            }
            let value = c.value().trim();
            if valid_value(value) {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
    }

    /// `a=1; b=2` in name order, or `None` when there is nothing to send. Entries that could not
    /// travel in a header (possible only from a hand-edited session file) are left out.
    pub fn header_value(&self) -> Option<HeaderValue> {
        let joined = self
            .cookies
            .iter()
            .filter(|(n, v)| valid_name(n) && valid_value(v))
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        if joined.is_empty() {
            return None;
        }
        let mut value = HeaderValue::from_bytes(joined.as_bytes()).ok()?;
        value.set_sensitive(true);
        Some(value)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.cookies.get(name).map(String::as_str)
    }

    /// Sets a cookie by hand (push-login jar rebuild, spec §7). A name or value that could not be
    /// sent in a `Cookie` header (empty, separators, control characters) is ignored.
    pub fn set(&mut self, name: &str, value: &str) {
        if valid_name(name) && valid_value(value) {
            self.cookies.insert(name.to_owned(), value.to_owned());
        }
    }

    pub fn remove(&mut self, name: &str) {
        self.cookies.remove(name);
    }

    pub fn clear(&mut self) {
        self.cookies.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.cookies.is_empty()
    }

    pub fn len(&self) -> usize {
        self.cookies.len()
    }

    /// Cookie names in the order they are sent.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.cookies.keys().map(String::as_str)
    }
}

impl fmt::Debug for CookieJar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.cookies.keys().map(|k| (k, "<redacted>")))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(SET_COOKIE, HeaderValue::from_str(l).unwrap());
        }
        h
    }

    /// The seven lines of spec §2.2 (CAP18), with concrete dates in place of the elisions.
    const LOGIN_COOKIES: &[&str] = &[
        "wxuin=176666155; Domain=wx.qq.com; Path=/; Expires=Sun, 31-Dec-2099 07:12:21 GMT; Secure",
        "wxsid=5YpLHmVgWwH5LxN1; Domain=wx.qq.com; Path=/; Expires=Sun, 31-Dec-2099 07:12:21 GMT; Secure",
        "wxloadtime=1546211541; Domain=wx.qq.com; Path=/; Expires=Sun, 31-Dec-2099 07:12:21 GMT; Secure",
        "mm_lang=zh_CN; Domain=wx.qq.com; Path=/; Expires=Sun, 31-Dec-2099 07:12:21 GMT; Secure",
        "webwx_data_ticket=gSehWtnDWTMh38gmz0IjaFv0; Domain=.qq.com; Path=/; Expires=Sun, 31-Dec-2099 07:12:21 GMT; Secure",
        "webwxuvid=3b0ab1d7fb0e1ca4a0fbd0fb1fb0fa1f0e1bb3ad1b2c1a9df0f0a3f1e7ed47f3e1da0a4b5c6d7e8f90a1b2c3d4e5f6a7; Domain=wx.qq.com; Path=/; Expires=Tue, 28-Dec-2108 19:12:21 GMT; Secure",
        "webwx_auth_ticket=CIsBEMzX8pcFGmBVcSvnLhBKN2Yx1YSZsQ9+X/kXpLhJ2qk0Hn1cE+DbcB==; Domain=wx.qq.com; Path=/; Expires=Tue, 28-Dec-2108 19:12:21 GMT; Secure",
    ];

    #[test]
    fn stores_the_login_cookies() {
        let mut jar = CookieJar::new();
        jar.store_from_headers(&headers(LOGIN_COOKIES));
        assert_eq!(jar.len(), 7);
        assert_eq!(jar.get("wxuin"), Some("176666155"));
        assert_eq!(jar.get("wxsid"), Some("5YpLHmVgWwH5LxN1"));
        assert_eq!(
            jar.get("webwx_data_ticket"),
            Some("gSehWtnDWTMh38gmz0IjaFv0")
        );
        assert_eq!(
            jar.get("webwx_auth_ticket"),
            Some("CIsBEMzX8pcFGmBVcSvnLhBKN2Yx1YSZsQ9+X/kXpLhJ2qk0Hn1cE+DbcB==")
        );
        assert_eq!(
            jar.names().collect::<Vec<_>>(),
            [
                "mm_lang",
                "webwx_auth_ticket",
                "webwx_data_ticket",
                "webwxuvid",
                "wxloadtime",
                "wxsid",
                "wxuin"
            ]
        );
        let header = jar.header_value().unwrap();
        assert!(header.is_sensitive());
        let text = header.to_str().unwrap();
        assert!(
            text.starts_with("mm_lang=zh_CN; webwx_auth_ticket=CIsB"),
            "{text}"
        );
        assert!(
            text.ends_with("; wxsid=5YpLHmVgWwH5LxN1; wxuin=176666155"),
            "{text}"
        );
        assert!(!text.contains("Domain"), "{text}");
    }

    #[test]
    fn later_responses_overwrite_and_expire() {
        let mut jar = CookieJar::new();
        jar.store_from_headers(&headers(LOGIN_COOKIES));
        // webwxsync refreshes (spec §3.10).
        jar.store_from_headers(&headers(&[
            "wxloadtime=1546211541_expired; Domain=wx.qq.com; Path=/; Secure",
            "wxpluginkey=1546210682; Domain=wx.qq.com; Path=/",
            "wxsid=NEWSID; Max-Age=0; Path=/",
            "mm_lang=x; Expires=Thu, 01-Jan-1970 00:00:01 GMT",
            "wxuin=; Path=/",
        ]));
        assert_eq!(jar.get("wxloadtime"), Some("1546211541_expired"));
        assert_eq!(jar.get("wxpluginkey"), Some("1546210682"));
        assert_eq!(jar.get("wxsid"), None, "Max-Age=0 removes");
        assert_eq!(jar.get("mm_lang"), None, "past Expires removes");
        assert_eq!(
            jar.get("wxuin"),
            Some("176666155"),
            "empty value is ignored"
        );
        jar.store_from_headers(&headers(&["webwxuvid=abc; Max-Age=-5"]));
        assert_eq!(jar.get("webwxuvid"), None, "negative Max-Age removes");
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let mut jar = CookieJar::new();
        let mut h = headers(&[
            "",
            "=value; Path=/",
            "novalue",
            "; ; ;",
            "bad name=1",
            "ok=1; Expires=garbage",
            "q=\"quoted\"; Path=/",
        ]);
        h.append(
            SET_COOKIE,
            HeaderValue::from_bytes(b"bin=\xff\xfe; Path=/").unwrap(),
        );
        h.append(
            reqwest::header::CONTENT_TYPE,
            HeaderValue::from_static("x=1"),
        );
        jar.store_from_headers(&h);
        assert_eq!(jar.get("ok"), Some("1"));
        assert_eq!(jar.get("novalue"), None);
        assert_eq!(jar.get("bin"), None, "non-ASCII values are dropped");
        assert_eq!(jar.get("x"), None, "only Set-Cookie headers count");
        // Whatever else was accepted must still form a valid header.
        assert!(jar.header_value().is_some());
        for name in jar.names() {
            assert!(valid_name(name), "{name}");
        }
    }

    #[test]
    fn set_get_remove_and_empty() {
        let mut jar = CookieJar::new();
        assert!(jar.is_empty());
        assert_eq!(jar.header_value(), None);
        jar.set("login_frequency", "2");
        jar.set("MM_WX_NOTIFY_STATE", "1");
        jar.set("", "x");
        jar.set("a;b", "x");
        jar.set("c", "x; evil=1");
        jar.set("d", "");
        assert_eq!(jar.len(), 2);
        assert_eq!(
            jar.header_value().unwrap().to_str().unwrap(),
            "MM_WX_NOTIFY_STATE=1; login_frequency=2"
        );
        jar.remove("login_frequency");
        jar.remove("absent");
        assert_eq!(jar.names().collect::<Vec<_>>(), ["MM_WX_NOTIFY_STATE"]);
        jar.clear();
        assert!(jar.is_empty());
    }

    #[test]
    fn debug_shows_names_only() {
        let mut jar = CookieJar::new();
        jar.store_from_headers(&headers(LOGIN_COOKIES));
        let dbg = format!("{jar:?}");
        assert!(dbg.contains("wxsid"), "{dbg}");
        for secret in [
            "5YpLHmVgWwH5LxN1",
            "gSehWtnDWTMh38gmz0IjaFv0",
            "176666155",
            "CIsBEMzX",
        ] {
            assert!(!dbg.contains(secret), "{dbg}");
        }
    }

    #[test]
    fn serde_round_trip() {
        let mut jar = CookieJar::new();
        jar.set("wxuin", "1");
        jar.set("wxsid", "s");
        let json = serde_json::to_string(&jar).unwrap();
        assert_eq!(json, r#"{"wxsid":"s","wxuin":"1"}"#);
        let back: CookieJar = serde_json::from_str(&json).unwrap();
        assert_eq!(back, jar);
        // A hand-edited file with an unusable entry still yields a valid header.
        let odd: CookieJar = serde_json::from_str(r#"{"a":"1","b":"x\ny","":"z"}"#).unwrap();
        assert_eq!(odd.header_value().unwrap().to_str().unwrap(), "a=1");
    }
}
