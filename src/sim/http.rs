//! Request/response plumbing for the protocol routes: case-insensitive query parameters, cookies,
//! lenient JSON bodies (any or no Content-Type), authentication by cookies with a BaseRequest
//! fallback, and the text/JSON/XML response helpers.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::Value;

use super::state::{Life, Session, Sim};

/// Largest request body the protocol routes read (uploads come in 512 KiB chunks).
pub(crate) const MAX_BODY: usize = 32 * 1024 * 1024;

/// One protocol request, parsed once.
pub(crate) struct Req {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    /// Query pairs with lowercased names.
    pub query: Vec<(String, String)>,
    pub body: Bytes,
}

impl Req {
    pub(crate) fn new(method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Self {
        let query = uri
            .query()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.to_ascii_lowercase(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        Req {
            method,
            uri,
            headers,
            query,
            body,
        }
    }

    /// A query parameter by case-insensitive name (pass it lowercase).
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| k.trim() == name)
            .map(|(_, v)| v.trim().to_string())
    }

    pub(crate) fn has_header(&self, name: &str) -> bool {
        self.headers.contains_key(name)
    }

    /// The body as JSON whatever the Content-Type says; `None` when absent or not JSON.
    pub(crate) fn json(&self) -> Option<Value> {
        if self.body.is_empty() {
            return None;
        }
        serde_json::from_slice(&self.body).ok()
    }

    /// `Host` as the client sent it (with port), for URLs the client must come back to.
    pub(crate) fn host(&self) -> String {
        self.headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| self.uri.authority().map(|a| a.to_string()))
            .unwrap_or_else(|| "127.0.0.1".into())
    }

    /// `https` behind a TLS-terminating proxy that says so, else `http`.
    pub(crate) fn scheme(&self) -> &'static str {
        match self
            .headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
        {
            Some(p) if p.eq_ignore_ascii_case("https") => "https",
            _ => "http",
        }
    }
}

/// Looks up a JSON object member by case-insensitive key.
pub(crate) fn get_ci<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    let obj = v.as_object()?;
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// A number or a numeric string as u64.
pub(crate) fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        Value::String(s) => s
            .trim()
            .parse::<u64>()
            .ok()
            .or_else(|| s.trim().parse::<f64>().ok().map(|f| f as u64)),
        _ => None,
    }
}

/// A string, or a number rendered as one.
pub(crate) fn as_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

pub(crate) fn str_field(v: &Value, key: &str) -> String {
    get_ci(v, key).map(as_string).unwrap_or_default()
}

/// Outcome of authenticating a protocol request.
pub(crate) enum Auth {
    Live(Arc<Session>),
    /// Credentials named a session that is gone (or never existed): answer this code.
    Dead(u32),
    /// No credentials at all.
    Missing,
}

fn lookup(sim: &Sim, uin: &str, sid: &str) -> Auth {
    let Some(s) = sim.session_by_sid(sid) else {
        return Auth::Dead(1101);
    };
    if s.uin.to_string() != uin.trim() {
        return Auth::Dead(1101);
    }
    match s.life() {
        Life::Alive => Auth::Live(s),
        Life::Dead { retcode, .. } => Auth::Dead(retcode),
    }
}

/// Authenticates by the `wxuin` + `wxsid` cookies only (synccheck, downloads).
pub(crate) fn auth_cookies(sim: &Sim, req: &Req) -> Auth {
    match (req.cookie("wxuin"), req.cookie("wxsid")) {
        (Some(uin), Some(sid)) if !uin.is_empty() && !sid.is_empty() => lookup(sim, &uin, &sid),
        _ => Auth::Missing,
    }
}

/// Authenticates by cookies, falling back to `BaseRequest.Uin`/`Sid` in the JSON body.
pub(crate) fn auth_any(sim: &Sim, req: &Req, body: Option<&Value>) -> Auth {
    match auth_cookies(sim, req) {
        Auth::Missing => {}
        other => return other,
    }
    let Some(base) = body.and_then(|b| get_ci(b, "BaseRequest")) else {
        return Auth::Missing;
    };
    let uin = get_ci(base, "Uin").and_then(as_u64);
    let sid = str_field(base, "Sid");
    match uin {
        Some(uin) if uin != 0 && !sid.is_empty() => lookup(sim, &uin.to_string(), &sid),
        _ => Auth::Missing,
    }
}

/// The `Ret` a JSON endpoint reports for a dead or missing session. A 1102 kick (cookie invalid)
/// is reported as 1101 on JSON endpoints: the cookie code only makes sense on synccheck.
pub(crate) fn json_ret_for(auth_code: u32) -> u32 {
    if auth_code == 1102 { 1101 } else { auth_code }
}

/// A JSON endpoint refused for a dead or missing session; answers
/// `{"BaseResponse":{"Ret":<code>}}`.
#[derive(Debug)]
pub(crate) struct Rejected(u32);

impl IntoResponse for Rejected {
    fn into_response(self) -> Response {
        json_resp(&serde_json::json!({"BaseResponse": base_response(self.0 as i64, "")}))
    }
}

/// Authenticates a JSON endpoint: the live session, its account and the parsed body.
pub(crate) fn json_session(
    sim: &Sim,
    req: &Req,
) -> Result<(Arc<Session>, Arc<super::accounts::Account>, Value), Rejected> {
    let body = req.json().unwrap_or(Value::Null);
    let code = match auth_any(sim, req, Some(&body)) {
        Auth::Live(s) => match sim.account(s.uin) {
            Some(a) => return Ok((s, a, body)),
            None => 1101,
        },
        Auth::Dead(code) => json_ret_for(code),
        Auth::Missing => 1101,
    };
    Err(Rejected(code))
}

pub(crate) fn base_response(ret: i64, msg: &str) -> Value {
    serde_json::json!({"Ret": ret, "ErrMsg": msg})
}

/// A JSON protocol response. The real server labels JSON as text/plain; clients ignore it.
pub(crate) fn json_resp(v: &Value) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

pub(crate) fn js_resp(body: String) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/javascript"),
        )],
        body,
    )
        .into_response()
}

pub(crate) fn bytes_resp(status: StatusCode, content_type: &str, body: Bytes) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

pub(crate) fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found").into_response()
}

/// The `Expires` attribute value `secs` from now, in HTTP date format.
pub(crate) fn expires_in(secs: u64) -> String {
    httpdate::fmt_http_date(std::time::SystemTime::now() + std::time::Duration::from_secs(secs))
}

/// A `Set-Cookie` value `name=value; [Domain=…; ]Path=/; Expires=…`. On IP and single-label hosts
/// there is no Domain attribute (flat cookie maps do not care; jars would refuse it).
pub(crate) fn set_cookie(name: &str, value: &str, domain: Option<&str>, secs: u64) -> HeaderValue {
    let mut s = format!("{name}={value}; ");
    if let Some(d) = domain {
        s.push_str(&format!("Domain={d}; "));
    }
    s.push_str(&format!("Path=/; Expires={}", expires_in(secs)));
    HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static("x=y; Path=/"))
}

/// Cookie domains for a request host: (session cookies, data ticket). `None` for IP literals and
/// names without a dot; the data ticket gets the parent domain so it covers `file.<main>`.
pub(crate) fn cookie_domains(host_with_port: &str) -> (Option<String>, Option<String>) {
    let host = match host_with_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_with_port.split(':').next().unwrap_or(""),
    };
    if host.parse::<std::net::IpAddr>().is_ok() || !host.contains('.') || host.contains(':') {
        return (None, None);
    }
    let labels: Vec<&str> = host.split('.').collect();
    let parent = if labels.len() >= 3 {
        format!(".{}", labels[labels.len() - 2..].join("."))
    } else {
        format!(".{host}")
    };
    (Some(host.to_string()), Some(parent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_domains_skip_ips() {
        assert_eq!(cookie_domains("127.0.0.1:8080"), (None, None));
        assert_eq!(cookie_domains("[::1]:8080"), (None, None));
        assert_eq!(cookie_domains("localhost:1"), (None, None));
        assert_eq!(
            cookie_domains("wx.qq.com"),
            (Some("wx.qq.com".into()), Some(".qq.com".into()))
        );
    }

    #[test]
    fn lenient_numbers() {
        assert_eq!(as_u64(&serde_json::json!("123")), Some(123));
        assert_eq!(as_u64(&serde_json::json!(123)), Some(123));
        assert_eq!(
            as_u64(&serde_json::json!("1546211541.123")),
            Some(1546211541)
        );
        assert_eq!(as_u64(&serde_json::json!(null)), None);
    }

    #[test]
    fn case_insensitive_lookup() {
        let v = serde_json::json!({"MsgID": "1", "userName": "@a"});
        assert_eq!(str_field(&v, "msgid"), "1");
        assert_eq!(str_field(&v, "UserName"), "@a");
    }

    #[test]
    fn set_cookie_has_semicolon_after_value() {
        let c = set_cookie("wxsid", "abc", None, 1);
        let s = c.to_str().expect("ascii");
        assert!(s.starts_with("wxsid=abc; Path=/; Expires="), "{s}");
    }
}
