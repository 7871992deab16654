//! Which origin each request goes to: the login host (configurable), the main host (from the
//! login redirect) and the file/webpush hosts derived from the main host's family (spec §1).
//!
//! Mixing host families makes the server answer 1100, so derivation follows the table of spec §1.3
//! exactly; unknown hosts (the simulator on 127.0.0.1:PORT) serve everything from one origin.

use url::{Host, Url};

/// Why a URL cannot serve as a WeChat origin. Messages name the host, never the full URL (a
/// redirect_uri carries the login ticket in its query).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("{which} uses scheme {scheme:?}; only https (or http on loopback) is allowed")]
    UnsupportedScheme { which: &'static str, scheme: String },
    #[error("{which} uses plain http for non-loopback host {host}; https is required")]
    InsecureHttp { which: &'static str, host: String },
    #[error("{which} has no host")]
    NoHost { which: &'static str },
}

/// The origins of one session: each is `scheme://host[:port]/`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Hosts {
    #[serde(with = "url_string")]
    pub login: Url,
    #[serde(with = "url_string")]
    pub main: Url,
    #[serde(with = "url_string")]
    pub file: Url,
    #[serde(with = "url_string")]
    pub webpush: Url,
}

/// (family suffix, file host, webpush host), first match wins — spec §1.3 (itchat's table,
/// matched on the host rather than on a substring of the URL).
const FAMILIES: &[(&str, &str, &str)] = &[
    ("wx2.qq.com", "file.wx2.qq.com", "webpush.wx2.qq.com"),
    ("wx8.qq.com", "file.wx8.qq.com", "webpush.wx8.qq.com"),
    ("qq.com", "file.wx.qq.com", "webpush.wx.qq.com"),
    (
        "web2.wechat.com",
        "file.web2.wechat.com",
        "webpush.web2.wechat.com",
    ),
    (
        "wechat.com",
        "file.web.wechat.com",
        "webpush.web.wechat.com",
    ),
];

/// The host of the login QR's text for real WeChat logins (spec §1.1, §3.2).
const CANONICAL_QR_ORIGIN: &str = "https://login.weixin.qq.com/";

fn host_in(host: &str, suffix: &str) -> bool {
    host == suffix
        || host
            .strip_suffix(suffix)
            .is_some_and(|prefix| prefix.ends_with('.'))
}

/// Loopback hosts: 127.0.0.0/8, ::1 (also IPv4-mapped), `localhost`.
pub fn is_loopback_host(host: &Host<&str>) -> bool {
    match host {
        Host::Domain(d) => {
            let d = d.trim_end_matches('.');
            d.eq_ignore_ascii_case("localhost")
        }
        Host::Ipv4(ip) => ip.is_loopback(),
        Host::Ipv6(ip) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Checks the scheme rule and returns `scheme://host[:port]/` (no credentials, path or query).
fn origin_of(which: &'static str, url: &Url) -> Result<Url, HostError> {
    let host = url.host().ok_or(HostError::NoHost { which })?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback_host(&host) => {}
        "http" => {
            return Err(HostError::InsecureHttp {
                which,
                host: host.to_string(),
            });
        }
        other => {
            return Err(HostError::UnsupportedScheme {
                which,
                scheme: other.to_owned(),
            });
        }
    }
    let mut origin = url.clone();
    origin.set_path("/");
    origin.set_query(None);
    origin.set_fragment(None);
    // Both only fail for URLs without a host, excluded above.
    let _ = origin.set_username("");
    let _ = origin.set_password(None);
    Ok(origin)
}

/// `main` with its host replaced: scheme and port stay those of the main origin.
fn sibling(main: &Url, host: &str) -> Url {
    let mut u = main.clone();
    match u.set_host(Some(host)) {
        Ok(()) => u,
        // Cannot happen for the constant family hosts; fall back to the main origin.
        Err(_) => main.clone(),
    }
}

impl Hosts {
    /// From the login poll's redirect_uri (spec §1.2, §1.3, DESIGN §4).
    pub fn derive(login: &Url, redirect_uri: &Url) -> Result<Hosts, HostError> {
        let login = origin_of("login url", login)?;
        let main = origin_of("redirect_uri", redirect_uri)?;
        let family = match main.host() {
            Some(Host::Domain(d)) => {
                let d = d.trim_end_matches('.').to_ascii_lowercase();
                FAMILIES
                    .iter()
                    .find(|(suffix, _, _)| host_in(&d, suffix))
                    .map(|&(_, file, push)| (file, push))
            }
            _ => None,
        };
        let (file, webpush) = match family {
            Some((file, push)) => (sibling(&main, file), sibling(&main, push)),
            None => (main.clone(), main.clone()),
        };
        Ok(Hosts {
            login,
            main,
            file,
            webpush,
        })
    }

    /// `<base>/cgi-bin/mmwebwx-bin/<endpoint>`. The endpoint is one path segment (anything that
    /// would change the URL's structure is percent-encoded). A base that cannot carry a path
    /// (never the case for a [`Hosts`] origin) is returned unchanged.
    pub fn api_url(base: &Url, endpoint: &str) -> Url {
        let mut url = base.clone();
        url.set_query(None);
        url.set_fragment(None);
        if let Ok(mut segments) = url.path_segments_mut() {
            segments
                .pop_if_empty()
                .extend(["cgi-bin", "mmwebwx-bin", endpoint]);
        }
        url
    }
}

/// Validates `[wechat] login_url` (https, or http on loopback) and returns its origin.
pub fn login_origin(login_url: &Url) -> Result<Url, HostError> {
    origin_of("login url", login_url)
}

/// True for the real WeChat login hosts (`login.weixin.qq.com`, `login.wx2.qq.com`,
/// `login.web.wechat.com`, …), whose QR text always names `login.weixin.qq.com`.
fn is_wechat_login_host(login: &Url) -> bool {
    let Some(Host::Domain(d)) = login.host() else {
        return false;
    };
    let d = d.trim_end_matches('.').to_ascii_lowercase();
    d.starts_with("login.") && (host_in(&d, "qq.com") || host_in(&d, "wechat.com"))
}

/// The text encoded in the login QR: `https://login.weixin.qq.com/l/<uuid>` for a real WeChat
/// login host, else `<login origin>/l/<uuid>` (the simulator).
pub fn qr_content(login: &Url, uuid: &str) -> String {
    let mut url = if is_wechat_login_host(login) {
        Url::parse(CANONICAL_QR_ORIGIN).expect("constant URL parses")
    } else {
        let mut u = login.clone();
        u.set_path("/");
        u.set_query(None);
        u.set_fragment(None);
        u
    };
    // Dot segments cannot be expressed in a URL path at all; parse_jslogin never yields them.
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.clear().extend(["l", uuid]);
    }
    url.into()
}

/// Serde for `Url` as a plain string (re-validated on load), without the `url/serde` feature.
mod url_string {
    use serde::{Deserialize, Deserializer, Serializer};
    use url::Url;

    pub fn serialize<S: Serializer>(u: &Url, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(u.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Url, D::Error> {
        let s = String::deserialize(d)?;
        Url::parse(&s).map_err(|e| serde::de::Error::custom(format!("invalid url: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    const LOGIN: &str = "https://login.wx.qq.com/";

    fn derive(redirect: &str) -> Hosts {
        Hosts::derive(&u(LOGIN), &u(redirect)).unwrap_or_else(|e| panic!("{redirect}: {e}"))
    }

    #[test]
    fn known_families() {
        let cases = [
            (
                "https://wx.qq.com/cgi-bin/mmwebwx-bin/webwxnewloginpage?ticket=T&uuid=U",
                "wx.qq.com",
                "file.wx.qq.com",
                "webpush.wx.qq.com",
            ),
            (
                "https://wx2.qq.com/cgi-bin/mmwebwx-bin/webwxnewloginpage?ticket=T",
                "wx2.qq.com",
                "file.wx2.qq.com",
                "webpush.wx2.qq.com",
            ),
            (
                "https://wx8.qq.com/x",
                "wx8.qq.com",
                "file.wx8.qq.com",
                "webpush.wx8.qq.com",
            ),
            (
                "https://web.wechat.com/x",
                "web.wechat.com",
                "file.web.wechat.com",
                "webpush.web.wechat.com",
            ),
            (
                "https://web2.wechat.com/x",
                "web2.wechat.com",
                "file.web2.wechat.com",
                "webpush.web2.wechat.com",
            ),
            // Any other *.qq.com / *.wechat.com falls into the generic family.
            (
                "https://wx3.qq.com/x",
                "wx3.qq.com",
                "file.wx.qq.com",
                "webpush.wx.qq.com",
            ),
            (
                "https://WEB9.WeChat.com/x",
                "web9.wechat.com",
                "file.web.wechat.com",
                "webpush.web.wechat.com",
            ),
        ];
        for (redirect, main, file, push) in cases {
            let h = derive(redirect);
            assert_eq!(h.main.as_str(), format!("https://{main}/"), "{redirect}");
            assert_eq!(h.file.as_str(), format!("https://{file}/"), "{redirect}");
            assert_eq!(h.webpush.as_str(), format!("https://{push}/"), "{redirect}");
            assert_eq!(h.login.as_str(), LOGIN);
        }
    }

    #[test]
    fn family_match_is_by_host_not_substring() {
        // A host merely containing "qq.com" or "wx2.qq.com" is not in the family.
        for redirect in [
            "https://notqq.com/x",
            "https://wx2.qq.com.evil.example/x",
            "https://example.com/?h=wx2.qq.com",
            "https://fakewechat.com/x",
        ] {
            let h = derive(redirect);
            assert_eq!(h.file, h.main, "{redirect}");
            assert_eq!(h.webpush, h.main, "{redirect}");
        }
        let h = derive("https://a.wx2.qq.com/x");
        assert_eq!(h.file.as_str(), "https://file.wx2.qq.com/");
    }

    #[test]
    fn unknown_host_serves_everything_with_port_kept() {
        let h = Hosts::derive(
            &u("http://127.0.0.1:18080/jslogin"),
            &u("http://127.0.0.1:18080/cgi-bin/mmwebwx-bin/webwxnewloginpage?ticket=T"),
        )
        .unwrap();
        assert_eq!(h.login.as_str(), "http://127.0.0.1:18080/");
        assert_eq!(h.main.as_str(), "http://127.0.0.1:18080/");
        assert_eq!(h.file, h.main);
        assert_eq!(h.webpush, h.main);
        let h = Hosts::derive(&u("http://localhost:1/"), &u("http://[::1]:9/x")).unwrap();
        assert_eq!(h.main.as_str(), "http://[::1]:9/");
    }

    #[test]
    fn ports_are_kept_for_known_families() {
        let h = derive("https://wx2.qq.com:8443/x");
        assert_eq!(h.main.as_str(), "https://wx2.qq.com:8443/");
        assert_eq!(h.file.as_str(), "https://file.wx2.qq.com:8443/");
        assert_eq!(h.webpush.as_str(), "https://webpush.wx2.qq.com:8443/");
    }

    #[test]
    fn origin_strips_credentials_path_query() {
        let o = login_origin(&u("https://user:pw@login.wx.qq.com:444/jslogin?x=1#f")).unwrap();
        assert_eq!(o.as_str(), "https://login.wx.qq.com:444/");
    }

    #[test]
    fn scheme_rules() {
        for ok in [
            "https://login.wx.qq.com/",
            "http://127.0.0.1:8080/",
            "http://127.5.6.7/",
            "http://localhost:9/",
            "http://LOCALHOST./",
            "http://[::1]:80/",
            "http://[::ffff:127.0.0.1]/",
        ] {
            assert!(login_origin(&u(ok)).is_ok(), "{ok}");
        }
        let e = login_origin(&u("http://login.wx.qq.com/")).unwrap_err();
        assert!(matches!(e, HostError::InsecureHttp { .. }));
        assert!(e.to_string().contains("login.wx.qq.com"));
        for bad in [
            "http://10.0.0.1/",
            "http://192.168.1.1/",
            "http://localhost.example/",
            "http://[::2]/",
        ] {
            assert!(
                matches!(login_origin(&u(bad)), Err(HostError::InsecureHttp { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            login_origin(&u("ftp://127.0.0.1/")),
            Err(HostError::UnsupportedScheme { .. })
        ));
        assert!(matches!(
            login_origin(&u("file:///tmp/x")),
            Err(HostError::NoHost { .. }) | Err(HostError::UnsupportedScheme { .. })
        ));
        assert!(matches!(
            login_origin(&u("mailto:a@b")),
            Err(HostError::NoHost { .. })
        ));
    }

    #[test]
    fn derive_rejects_insecure_redirect_without_leaking_ticket() {
        let e = Hosts::derive(
            &u(LOGIN),
            &u("http://wx.qq.com/cgi-bin/mmwebwx-bin/webwxnewloginpage?ticket=SECRET@qrticket_0"),
        )
        .unwrap_err();
        assert!(matches!(
            e,
            HostError::InsecureHttp {
                which: "redirect_uri",
                ..
            }
        ));
        assert!(!e.to_string().contains("SECRET"));
        assert!(!format!("{e:?}").contains("SECRET"));
        assert!(Hosts::derive(&u("http://login.wx.qq.com/"), &u("https://wx.qq.com/")).is_err());
    }

    #[test]
    fn api_urls() {
        let h = derive("https://wx2.qq.com/x");
        assert_eq!(
            Hosts::api_url(&h.main, "webwxinit").as_str(),
            "https://wx2.qq.com/cgi-bin/mmwebwx-bin/webwxinit"
        );
        assert_eq!(
            Hosts::api_url(&h.webpush, "synccheck").as_str(),
            "https://webpush.wx2.qq.com/cgi-bin/mmwebwx-bin/synccheck"
        );
        assert_eq!(
            Hosts::api_url(&u("http://127.0.0.1:5/"), "login").as_str(),
            "http://127.0.0.1:5/cgi-bin/mmwebwx-bin/login"
        );
        // Query and fragment of the base are dropped; odd endpoints stay one segment.
        assert_eq!(
            Hosts::api_url(&u("https://h/?q=1#f"), "a/b?c").as_str(),
            "https://h/cgi-bin/mmwebwx-bin/a%2Fb%3Fc"
        );
        // A base with a path prefix keeps it.
        assert_eq!(
            Hosts::api_url(&u("http://127.0.0.1/sim/"), "x").as_str(),
            "http://127.0.0.1/sim/cgi-bin/mmwebwx-bin/x"
        );
        let odd = u("mailto:a@b");
        assert_eq!(Hosts::api_url(&odd, "x"), odd);
    }

    #[test]
    fn qr_text() {
        for login in [
            "https://login.weixin.qq.com/",
            "https://login.wx.qq.com/",
            "https://login.wx2.qq.com/",
            "https://login.wx8.qq.com/",
            "https://login.web.wechat.com/",
            "https://login.web2.wechat.com/",
        ] {
            assert_eq!(
                qr_content(&u(login), "gbyKnbsmqQ=="),
                "https://login.weixin.qq.com/l/gbyKnbsmqQ==",
                "{login}"
            );
        }
        assert_eq!(
            qr_content(&u("http://127.0.0.1:18080/"), "obpi9Rft-A=="),
            "http://127.0.0.1:18080/l/obpi9Rft-A=="
        );
        assert_eq!(
            qr_content(&u("http://127.0.0.1:18080/base/jslogin?x"), "QZA2_kDzdw=="),
            "http://127.0.0.1:18080/l/QZA2_kDzdw=="
        );
        // Not a login host of WeChat: the configured origin is used.
        assert_eq!(
            qr_content(&u("https://login.example.com/"), "a"),
            "https://login.example.com/l/a"
        );
        assert_eq!(
            qr_content(&u("https://wx.qq.com/"), "a"),
            "https://wx.qq.com/l/a"
        );
        assert!(qr_content(&u("http://127.0.0.1/"), "..").starts_with("http://127.0.0.1/l"));
        // A hostile uuid cannot escape its path segment.
        assert_eq!(
            qr_content(&u("http://127.0.0.1/"), "../x?y#z"),
            "http://127.0.0.1/l/..%2Fx%3Fy%23z"
        );
    }

    #[test]
    fn hosts_round_trip_through_json() {
        let h = derive("https://wx2.qq.com/x");
        let json = serde_json::to_string(&h).unwrap();
        assert!(
            json.contains("\"file\":\"https://file.wx2.qq.com/\""),
            "{json}"
        );
        let back: Hosts = serde_json::from_str(&json).unwrap();
        assert_eq!(back, h);
        assert!(serde_json::from_str::<Hosts>(&json.replace("https://file", "::")).is_err());
    }

    #[test]
    fn loopback_detection() {
        assert!(is_loopback_host(&Host::Domain("localhost")));
        assert!(!is_loopback_host(&Host::Domain("localhost.example")));
        assert!(is_loopback_host(&Host::Ipv4("127.0.0.1".parse().unwrap())));
        assert!(is_loopback_host(&Host::Ipv4(
            "127.255.0.1".parse().unwrap()
        )));
        assert!(!is_loopback_host(&Host::Ipv4("128.0.0.1".parse().unwrap())));
        assert!(is_loopback_host(&Host::Ipv6("::1".parse().unwrap())));
        assert!(!is_loopback_host(&Host::Ipv6("::".parse().unwrap())));
    }
}
