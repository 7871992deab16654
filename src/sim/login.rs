//! The login host: jslogin (uuid), the login long poll (408/201/200/400), the QR image, the
//! browser "phone" page, the ticket exchange at webwxnewloginpage (spec §3.1–§3.4, §10.2) and
//! push login (§3.20).

use std::sync::Arc;
use std::time::Instant;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine as _;
use serde_json::json;

use super::assets;
use super::faults::OpenPoll;
use super::http::{self, Req, cookie_domains, js_resp, set_cookie};
use super::ids;
use super::state::{QrState, Secret, Sim};

/// `GET|POST /jslogin`: a new uuid; remembers whether the redirect asked for desktop mode.
pub(crate) fn jslogin(sim: &Sim, req: &Req) -> Response {
    let desktop = req
        .param("redirect_uri")
        .is_some_and(|r| r.contains("mod=desktop"))
        || req.param("mod") == Some("desktop");
    let qr = sim.new_qr(desktop, None);
    js_resp(format!(
        "window.QRLogin.code = 200; window.QRLogin.uuid = \"{}\";",
        qr.uuid
    ))
}

/// `GET /cgi-bin/mmwebwx-bin/login?uuid=…`: the long poll for scan and confirm.
pub(crate) async fn login_poll(sim: &Sim, req: &Req) -> Response {
    const EXPIRED: &str = "window.code=400;";
    const NOTHING: &str = "window.code=408;";
    let Some(qr) = req.param("uuid").and_then(|u| sim.qr(u)) else {
        return js_resp(EXPIRED.into());
    };
    let _open = OpenPoll::new(&sim.stats.open_login_polls);
    let deadline = Instant::now() + sim.config().hold;
    let mut rx = qr.wake.subscribe();
    let mut woke = false;
    loop {
        let expires_at = {
            let mut g = qr.lock();
            match g.state.clone() {
                QrState::Expired => {
                    g.finished = true;
                    return js_resp(EXPIRED.into());
                }
                QrState::Confirmed {
                    ticket: Secret(ticket),
                    ..
                } => {
                    g.finished = true;
                    return js_resp(format!(
                        "window.code=200;\nwindow.redirect_uri=\"{}://{}/cgi-bin/mmwebwx-bin/webwxnewloginpage?ticket={ticket}&uuid={}&lang=zh_CN&scan={}\";",
                        req.scheme(),
                        req.host(),
                        qr.uuid,
                        ids::unix_now()
                    ));
                }
                QrState::Scanned { .. } if !g.scan_reported => {
                    g.scan_reported = true;
                    let avatar = base64::engine::general_purpose::STANDARD.encode(assets::jpeg());
                    return js_resp(format!(
                        "window.code=201;window.userAvatar = 'data:img/jpg;base64,{avatar}';"
                    ));
                }
                // Woken back into Waiting: the phone cancelled; the QR can be scanned again.
                QrState::Waiting if woke => return js_resp(NOTHING.into()),
                _ => {}
            }
            g.expires_at
        };
        let until = tokio::time::Instant::from_std(deadline.min(expires_at));
        tokio::select! {
            _ = sim.shutdown.cancelled() => return js_resp(NOTHING.into()),
            r = tokio::time::timeout_at(until, rx.changed()) => match r {
                Ok(Ok(())) => woke = true,
                Ok(Err(_)) => return js_resp(NOTHING.into()),
                Err(_) if Instant::now() >= deadline => return js_resp(NOTHING.into()),
                // The QR's own expiry came first: loop to answer 400.
                Err(_) => {}
            },
        }
    }
}

/// `GET /qrcode/<uuid>`: a JPEG of the QR for `https://login.weixin.qq.com/l/<uuid>`.
pub(crate) fn qrcode(sim: &Sim, uuid: &str) -> Response {
    if sim.qr(uuid).is_none() {
        return http::not_found();
    }
    match assets::qr_jpeg(&format!("https://login.weixin.qq.com/l/{uuid}")) {
        Some(bytes) => http::bytes_resp(StatusCode::OK, "image/jpeg", bytes.into()),
        None => (StatusCode::INTERNAL_SERVER_ERROR, "qr encoding failed").into_response(),
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `GET /l/<uuid>`: a tiny "phone" so a person can log an account in from a browser.
pub(crate) fn phone_page(sim: &Sim, uuid: &str) -> Response {
    let Some(qr) = sim.qr(uuid) else {
        return (
            StatusCode::NOT_FOUND,
            Html("<p>Unknown or forgotten QR code.</p>".to_string()),
        )
            .into_response();
    };
    let state = qr.lock().state.clone();
    let u = html_escape(uuid);
    let mut rows = String::new();
    for a in sim.all_accounts() {
        if qr.push_uin.is_some_and(|p| p != a.uin) {
            continue;
        }
        let nick = a
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .nickname
            .clone();
        rows.push_str(&format!(
            "<li>{} ({}) <form method=\"post\" action=\"/__sim/qr/{u}/scan\" style=\"display:inline\"><input type=\"hidden\" name=\"uin\" value=\"{}\"><button>Scan</button></form></li>\n",
            html_escape(&nick),
            a.uin,
            a.uin
        ));
    }
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>wxagent sim phone</title></head><body>\
         <h1>Phone</h1><p>QR <code>{u}</code>: <b>{}</b>{}</p>\
         <h2>Scan as</h2><ul>\n{rows}</ul>\
         <form method=\"post\" action=\"/__sim/qr/{u}/confirm\"><button>Confirm login</button></form>\
         <form method=\"post\" action=\"/__sim/qr/{u}/cancel\"><button>Cancel</button></form>\
         </body></html>",
        state.label(),
        if qr.desktop { " (desktop)" } else { "" },
    );
    Html(page).into_response()
}

/// `GET /`: anything (itchat probes the login host before starting).
pub(crate) fn root() -> Response {
    Html(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>wxagent sim</title></head>\
         <body><p>wxagent WeChat web simulator.</p></body></html>",
    )
    .into_response()
}

const FORBIDDEN_MESSAGE: &str =
    "为了你的帐号安全，此微信号已不允许登录网页微信。你可以使用Windows微信或Mac微信在电脑端登录。";

fn login_page_response(status: StatusCode, req: &Req, body: String) -> Response {
    let mut r = http::bytes_resp(status, "text/plain;charset=utf-8", body.into());
    if status == StatusCode::MOVED_PERMANENTLY
        && let Ok(v) = HeaderValue::from_str(&format!("{}://{}/", req.scheme(), req.host()))
    {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// `GET /cgi-bin/mmwebwx-bin/webwxnewloginpage?ticket=…`: exchanges a confirmed ticket for a
/// fresh web session (XML body plus Set-Cookie). 301 + Location in desktop mode, else 200.
///
/// `web_forbidden` refuses plain web logins with 1203 and `desktop_forbidden` refuses desktop
/// ones, mirroring how desktop mode was the way around the web ban (spec §4.1).
pub(crate) fn new_login_page(sim: &Sim, req: &Req) -> Response {
    let header_desktop = req.has_header("extspam") || req.has_header("client-version");
    let ticket = req.param("ticket").and_then(|t| sim.take_ticket(t));
    let desktop = header_desktop || ticket.as_ref().is_some_and(|t| t.desktop);
    let status = if desktop {
        StatusCode::MOVED_PERMANENTLY
    } else {
        StatusCode::OK
    };
    let error = |ret: i64, msg: &str| {
        login_page_response(
            status,
            req,
            format!("<error><ret>{ret}</ret><message>{msg}</message></error>"),
        )
    };
    let Some(ticket) = ticket else {
        return error(-14, "ticket error");
    };
    let Some(account) = sim.account(ticket.uin) else {
        return error(-14, "ticket error");
    };
    let forbidden = {
        let a = account.inner.lock().unwrap_or_else(|p| p.into_inner());
        if desktop {
            a.desktop_forbidden
        } else {
            a.web_forbidden
        }
    };
    if forbidden {
        return error(1203, FORBIDDEN_MESSAGE);
    }
    let s = sim.open_session(&account);
    tracing::debug!(uin = account.uin, desktop, "sim: web session opened");
    let body = format!(
        "<error><ret>0</ret><message></message><skey>{}</skey><wxsid>{}</wxsid><wxuin>{}</wxuin><pass_ticket>{}</pass_ticket><isgrayscale>1</isgrayscale></error>",
        s.skey, s.sid, s.uin, s.pass_ticket
    );
    let mut r = login_page_response(status, req, body);
    let (domain, data_domain) = cookie_domains(&req.host());
    let d = domain.as_deref();
    const HALF_DAY: u64 = 12 * 3600;
    const TEN_YEARS: u64 = 10 * 365 * 86_400;
    let auth_ticket = ids::auth_ticket();
    let uvid = ids::hex(96);
    sim.record_issued("webwxuvid", &uvid);
    sim.record_issued("webwx_auth_ticket", &auth_ticket);
    let cookies = [
        set_cookie("wxuin", &s.uin.to_string(), d, HALF_DAY),
        set_cookie("wxsid", &s.sid, d, HALF_DAY),
        set_cookie("wxloadtime", &s.login_unix.to_string(), d, HALF_DAY),
        set_cookie("mm_lang", "zh_CN", d, HALF_DAY),
        set_cookie(
            "webwx_data_ticket",
            &s.data_ticket,
            data_domain.as_deref(),
            HALF_DAY,
        ),
        set_cookie("webwxuvid", &uvid, d, TEN_YEARS),
        set_cookie("webwx_auth_ticket", &auth_ticket, d, TEN_YEARS),
    ];
    for c in cookies {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    r
}

/// `webwxpushloginurl?uin=…` (login and main host): a uuid bound to the account that the phone
/// (the test-control API) can confirm without a scan. Needs the `wxuin` cookie of an account
/// that has logged in before.
pub(crate) fn push_login(sim: &Sim, req: &Req) -> Response {
    let args_error = || http::json_resp(&json!({"ret": "1", "msg": "args error"}));
    let Some(uin) = req.cookie("wxuin").and_then(|u| u.parse::<u64>().ok()) else {
        return args_error();
    };
    if let Some(q) = req.param("uin")
        && q.parse::<u64>().ok() != Some(uin)
    {
        return args_error();
    }
    let known = sim
        .account(uin)
        .is_some_and(|a| a.inner.lock().unwrap_or_else(|p| p.into_inner()).logins > 0);
    if !known {
        return http::json_resp(&json!({"ret": "3", "msg": "device authinfo invalid"}));
    }
    let qr = sim.new_qr(req.param("mod") == Some("desktop"), Some(uin));
    http::json_resp(&json!({"ret": "0", "msg": "all ok", "uuid": qr.uuid}))
}

/// Test-control transitions of a QR, as the phone would make them.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PhoneAction {
    Scan(u64),
    Confirm,
    Cancel,
    Expire,
}

#[derive(Debug)]
pub(crate) enum PhoneError {
    UnknownUuid,
    UnknownAccount,
    WrongState(&'static str),
}

/// Applies a phone action to a QR and wakes its pollers.
pub(crate) fn phone(sim: &Sim, uuid: &str, action: PhoneAction) -> Result<Arc<str>, PhoneError> {
    let qr = sim.qr(uuid).ok_or(PhoneError::UnknownUuid)?;
    let label = {
        let mut g = qr.lock();
        let next = match (&g.state, action) {
            (QrState::Waiting, PhoneAction::Scan(uin)) => {
                if sim.account(uin).is_none() {
                    return Err(PhoneError::UnknownAccount);
                }
                if qr.push_uin.is_some_and(|p| p != uin) {
                    return Err(PhoneError::WrongState("bound to another account"));
                }
                QrState::Scanned { uin }
            }
            (QrState::Scanned { uin }, PhoneAction::Confirm) => QrState::Confirmed {
                uin: *uin,
                ticket: Secret(sim.issue_ticket(*uin, qr.desktop)),
            },
            // A push-login prompt is confirmed on the phone without a scan.
            (QrState::Waiting, PhoneAction::Confirm) if qr.push_uin.is_some() => {
                let uin = qr.push_uin.unwrap_or_default();
                QrState::Confirmed {
                    uin,
                    ticket: Secret(sim.issue_ticket(uin, qr.desktop)),
                }
            }
            (QrState::Scanned { .. }, PhoneAction::Cancel) => QrState::Waiting,
            (QrState::Waiting | QrState::Scanned { .. }, PhoneAction::Expire) => QrState::Expired,
            (s, _) => return Err(PhoneError::WrongState(s.label())),
        };
        g.scan_reported = false;
        g.state = next;
        g.state.label()
    };
    qr.bump();
    Ok(Arc::from(label))
}
