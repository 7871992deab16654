//! Integration tests of the simulator over raw HTTP (reqwest, no client types): exact text
//! formats of the login host and synccheck, the ticket exchange, JSON shapes and types, sync
//! semantics, every injected message type, sessions dying, sends and the outbox, chunked uploads
//! and downloads, contact changes, faults, push login, and a 1,000-session capacity run.
//!
//! Modules (in file order): helpers; login; shapes; sync; inject; sessions; send and media;
//! contacts; faults; capacity.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use reqwest::StatusCode;
use reqwest::header::{COOKIE, HeaderMap};
use serde_json::{Value, json};
use wxagent::sim::{SimHandle, SimOptions};

// ---------------------------------------------------------------------------------------------
// helpers

const HOLD: Duration = Duration::from_millis(300);

struct Sim {
    handle: SimHandle,
    base: String,
    http: reqwest::Client,
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .no_proxy()
        .build()
        .expect("reqwest client")
}

impl Sim {
    async fn start() -> Sim {
        Sim::start_with(HOLD).await
    }

    async fn start_with(hold: Duration) -> Sim {
        let handle = wxagent::sim::start(SimOptions {
            listen: "127.0.0.1:0".parse().expect("addr"),
            hold,
        })
        .await
        .expect("sim starts");
        let base = handle.base_url();
        Sim {
            handle,
            base,
            http: client(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    async fn ctl(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut r = self
            .http
            .request(method, self.url(&format!("/__sim{path}")));
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("control request");
        let status = resp.status();
        let v = resp.json().await.expect("control json");
        (status, v)
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let (status, v) = self.ctl(reqwest::Method::POST, path, Some(body)).await;
        assert!(status.is_success(), "POST {path}: {status} {v}");
        v
    }

    async fn get(&self, path: &str) -> Value {
        let (status, v) = self.ctl(reqwest::Method::GET, path, None).await;
        assert!(status.is_success(), "GET {path}: {status} {v}");
        v
    }

    async fn account(&self, spec: Value) -> u64 {
        self.post("/accounts", spec)
            .await
            .get("uin")
            .and_then(Value::as_u64)
            .expect("uin")
    }

    async fn text(&self, path: &str) -> String {
        self.http
            .get(self.url(path))
            .send()
            .await
            .expect("request")
            .text()
            .await
            .expect("body")
    }

    async fn jslogin(&self, redirect: &str) -> String {
        let body = self
            .text(&format!(
                "/jslogin?appid=wx782c26e4c19acffb&redirect_uri={}&fun=new&lang=zh_CN&_=1",
                urlencode(redirect)
            ))
            .await;
        uuid_of(&body)
    }

    async fn poll(&self, uuid: &str) -> String {
        self.text(&format!(
            "/cgi-bin/mmwebwx-bin/login?loginicon=true&uuid={uuid}&tip=0&r=-1&_=1"
        ))
        .await
    }

    async fn stats(&self) -> Value {
        self.get("/stats").await
    }

    /// Waits until `n` synccheck long polls are held by the server.
    async fn wait_open_polls(&self, n: i64) {
        wait_until(|| async { self.stats().await["open_long_polls"].as_i64() == Some(n) }).await;
    }

    /// The full scan login: jslogin → scan → confirm → poll → newloginpage.
    async fn login(&self, uin: u64) -> Web {
        let uuid = self
            .jslogin("https://wx.qq.com/cgi-bin/mmwebwx-bin/webwxnewloginpage")
            .await;
        self.post(&format!("/qr/{uuid}/scan"), json!({"uin": uin}))
            .await;
        self.post(&format!("/qr/{uuid}/confirm"), json!({})).await;
        let body = self.poll(&uuid).await;
        let redirect = redirect_of(&body);
        let resp = self.http.get(&redirect).send().await.expect("newloginpage");
        assert_eq!(resp.status(), StatusCode::OK);
        let cookies = cookies_of(resp.headers());
        let xml = resp.text().await.expect("xml");
        assert_eq!(tag(&xml, "ret"), "0", "{xml}");
        Web {
            base: self.base.clone(),
            http: self.http.clone(),
            uin,
            sid: tag(&xml, "wxsid"),
            skey: tag(&xml, "skey"),
            pass_ticket: tag(&xml, "pass_ticket"),
            cookies,
        }
    }

    async fn inject(&self, uin: u64, body: Value) -> Value {
        self.post(&format!("/sessions/{uin}/inject"), body).await
    }
}

async fn wait_until<F, Fut>(mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached within 60 s"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn uuid_of(jslogin: &str) -> String {
    let prefix = "window.QRLogin.code = 200; window.QRLogin.uuid = \"";
    assert!(jslogin.starts_with(prefix), "{jslogin}");
    assert!(jslogin.ends_with("\";"), "{jslogin}");
    jslogin[prefix.len()..jslogin.len() - 2].to_string()
}

fn redirect_of(poll: &str) -> String {
    let prefix = "window.code=200;\nwindow.redirect_uri=\"";
    assert!(poll.starts_with(prefix), "{poll}");
    assert!(poll.ends_with("\";"), "{poll}");
    let url = &poll[prefix.len()..poll.len() - 2];
    assert!(!url.contains(char::is_whitespace));
    url.to_string()
}

fn tag(xml: &str, name: &str) -> String {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let Some(i) = xml.find(&open) else {
        return String::new();
    };
    let rest = &xml[i + open.len()..];
    rest.find(&close)
        .map(|j| rest[..j].to_string())
        .unwrap_or_default()
}

fn cookies_of(headers: &HeaderMap) -> BTreeMap<String, String> {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| {
            let (kv, _) = v.split_once(';')?;
            let (k, v) = kv.split_once('=')?;
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

/// One logged-in web session, as a client would hold it.
#[derive(Clone)]
struct Web {
    base: String,
    http: reqwest::Client,
    uin: u64,
    sid: String,
    skey: String,
    pass_ticket: String,
    cookies: BTreeMap<String, String>,
}

impl Web {
    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn base_request(&self) -> Value {
        json!({"Uin": self.uin, "Sid": self.sid, "Skey": self.skey, "DeviceID": "e123456789012345"})
    }

    fn url(&self, endpoint_and_query: &str) -> String {
        format!("{}/cgi-bin/mmwebwx-bin/{endpoint_and_query}", self.base)
    }

    /// POSTs a JSON body without a Content-Type, as itchat does.
    async fn call(&self, endpoint_and_query: &str, mut body: Value) -> Value {
        if let Some(o) = body.as_object_mut() {
            o.insert("BaseRequest".into(), self.base_request());
        }
        let resp = self
            .http
            .post(self.url(endpoint_and_query))
            .header(COOKIE, self.cookie_header())
            .body(body.to_string())
            .send()
            .await
            .expect("json call");
        assert_eq!(resp.status(), StatusCode::OK);
        resp.json().await.expect("json body")
    }

    async fn init(&self) -> Value {
        self.call(
            &format!("webwxinit?r=-1&pass_ticket={}", self.pass_ticket),
            json!({}),
        )
        .await
    }

    async fn sync(&self, key: &Value) -> Value {
        self.call(
            &format!("webwxsync?sid={}&skey={}", self.sid, self.skey),
            json!({"SyncKey": key, "rr": -1}),
        )
        .await
    }

    async fn synccheck(&self, key: &Value) -> String {
        synccheck_raw(
            &self.http,
            &self.url(""),
            Some(&self.cookie_header()),
            &format_key(key),
        )
        .await
    }

    async fn send_text(&self, to: &str, text: &str) -> Value {
        self.call(
            "webwxsendmsg",
            json!({"Msg": {"Type": 1, "Content": text, "FromUserName": "", "ToUserName": to,
                           "LocalID": 15462147414160521u64, "ClientMsgId": 15462147414160521u64},
                   "Scene": 0}),
        )
        .await
    }

    /// init, then one webwxsync: returns (init, first sync, key after it).
    async fn catch_up(&self) -> (Value, Value, Value) {
        let init = self.init().await;
        let first = self.sync(&init["SyncKey"]).await;
        let key = first["SyncKey"].clone();
        (init, first, key)
    }
}

async fn synccheck_raw(
    http: &reqwest::Client,
    base: &str,
    cookie: Option<&str>,
    synckey: &str,
) -> String {
    let mut r = http.get(format!(
        "{base}synccheck?r=1&skey=x&sid=x&uin=1&deviceid=e1&synckey={}&_=1",
        urlencode(synckey)
    ));
    if let Some(c) = cookie {
        r = r.header(COOKIE, c);
    }
    r.send()
        .await
        .expect("synccheck")
        .text()
        .await
        .expect("body")
}

fn format_key(key: &Value) -> String {
    key["List"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|kv| format!("{}_{}", kv["Key"], kv["Val"]))
                .collect::<Vec<_>>()
                .join("|")
        })
        .unwrap_or_default()
}

fn sc(retcode: u32, selector: u32) -> String {
    format!("window.synccheck={{retcode:\"{retcode}\",selector:\"{selector}\"}}")
}

fn assert_counts(v: &Value) {
    for (count, list) in [
        ("AddMsgCount", "AddMsgList"),
        ("ModContactCount", "ModContactList"),
        ("DelContactCount", "DelContactList"),
        ("ModChatRoomMemberCount", "ModChatRoomMemberList"),
    ] {
        assert_eq!(
            v[count].as_u64(),
            v[list].as_array().map(|l| l.len() as u64),
            "{count} vs {list} in {v}"
        );
    }
    for key in ["SyncKey", "SyncCheckKey"] {
        assert_eq!(
            v[key]["Count"].as_u64(),
            v[key]["List"].as_array().map(|l| l.len() as u64),
            "{key}"
        );
    }
}

fn assert_message_types(m: &Value) {
    assert!(m["MsgId"].is_string(), "MsgId string: {m}");
    assert!(m["NewMsgId"].is_u64(), "NewMsgId number: {m}");
    assert_eq!(
        m["MsgId"].as_str().and_then(|s| s.parse::<u64>().ok()),
        m["NewMsgId"].as_u64()
    );
    assert!(m["FileSize"].is_string());
    for k in [
        "MsgType",
        "Status",
        "ImgStatus",
        "CreateTime",
        "VoiceLength",
        "PlayLength",
        "AppMsgType",
        "StatusNotifyCode",
        "ForwardFlag",
        "HasProductId",
        "ImgHeight",
        "ImgWidth",
        "SubMsgType",
    ] {
        assert!(m[k].is_u64(), "{k} must be a number in {m}");
    }
    for k in [
        "FromUserName",
        "ToUserName",
        "Content",
        "FileName",
        "MediaId",
        "Url",
        "StatusNotifyUserName",
        "Ticket",
        "OriContent",
        "EncryFileName",
    ] {
        assert!(m[k].is_string(), "{k} must be a string in {m}");
    }
    assert!(m["RecommendInfo"]["UserName"].is_string());
    assert!(m["AppInfo"]["Type"].is_u64());
}

async fn alice_with_friends(sim: &Sim) -> u64 {
    sim.account(json!({
        "nickname": "Alice",
        "friends": [{"nickname": "Bob", "sex": 1}, {"nickname": "Carol", "sex": 2}],
        "groups": [{"name": "Team", "members": ["Bob", "Carol"], "extra_members": 1,
                    "display_names": {"Bob": "Bobby"}, "self_display_name": "Al"}],
        "officials": [{"nickname": "News"}],
    }))
    .await
}

async fn user_name(sim: &Sim, uin: u64, nickname: &str) -> String {
    let v = sim.get(&format!("/accounts/{uin}")).await;
    v["contacts"]
        .as_array()
        .and_then(|l| l.iter().find(|c| c["nickname"] == nickname))
        .and_then(|c| c["user_name"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no contact {nickname}"))
}

/// Syncs until the AddMsgList holds something; returns the messages.
async fn next_messages(web: &Web, key: &mut Value) -> Vec<Value> {
    let v = web.sync(key).await;
    assert_counts(&v);
    *key = v["SyncKey"].clone();
    v["AddMsgList"].as_array().cloned().unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// login

#[tokio::test]
async fn jslogin_answers_the_exact_format_for_get_and_post() {
    let sim = Sim::start().await;
    let uuid = sim
        .jslogin("https://wx.qq.com/cgi-bin/mmwebwx-bin/webwxnewloginpage")
        .await;
    assert_eq!(uuid.len(), 12);
    assert!(uuid.ends_with("=="));
    let body = sim
        .http
        .post(sim.url("/jslogin?appid=wx782c26e4c19acffb&fun=new&lang=zh-CN"))
        .send()
        .await
        .expect("post")
        .text()
        .await
        .expect("text");
    assert_ne!(uuid_of(&body), uuid);
    assert!(sim.text("/").await.contains("simulator"));
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn login_poll_holds_then_408_and_unknown_uuid_is_400() {
    let sim = Sim::start().await;
    let uuid = sim.jslogin("x").await;
    assert_eq!(sim.poll(&uuid).await, "window.code=408;");
    assert_eq!(sim.poll("nope").await, "window.code=400;");
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn scan_wakes_the_poll_with_201_then_confirm_with_200() {
    let sim = Arc::new(Sim::start_with(Duration::from_secs(30)).await);
    let uin = alice_with_friends(&sim).await;
    let uuid = sim.jslogin("x").await;
    let poll = tokio::spawn({
        let sim = sim.clone();
        let uuid = uuid.clone();
        async move { sim.poll(&uuid).await }
    });
    wait_until(|| async { sim.stats().await["open_login_polls"] == 1 }).await;
    sim.post(&format!("/qr/{uuid}/scan"), json!({"uin": uin}))
        .await;
    let body = poll.await.expect("join");
    let prefix = "window.code=201;window.userAvatar = 'data:img/jpg;base64,";
    assert!(body.starts_with(prefix) && body.ends_with("';"), "{body}");
    let qr = sim.get("/qr").await;
    assert_eq!(qr["pending"][0]["state"], "scanned");

    let poll = tokio::spawn({
        let sim = sim.clone();
        let uuid = uuid.clone();
        async move { sim.poll(&uuid).await }
    });
    wait_until(|| async { sim.stats().await["open_login_polls"] == 1 }).await;
    sim.post(&format!("/qr/{uuid}/confirm"), json!({})).await;
    let redirect = redirect_of(&poll.await.expect("join"));
    let prefix = format!("{}/cgi-bin/mmwebwx-bin/webwxnewloginpage?ticket=", sim.base);
    assert!(redirect.starts_with(&prefix), "{redirect}");
    let ticket = redirect[prefix.len()..].split('&').next().expect("ticket");
    assert_eq!(ticket.len(), 24 + "@qrticket_0".len(), "{ticket}");
    assert!(redirect.contains(&format!("&uuid={uuid}&lang=zh_CN&scan=")));
    // Once the poll delivered 200 the uuid drops out of the pending list.
    assert_eq!(sim.get("/qr").await["pending"], json!([]));
}

#[tokio::test]
async fn cancel_returns_408_and_the_qr_can_be_rescanned() {
    let sim = Arc::new(Sim::start_with(Duration::from_secs(30)).await);
    let uin = alice_with_friends(&sim).await;
    let uuid = sim.jslogin("x").await;
    sim.post(&format!("/qr/{uuid}/scan"), json!({"uin": uin}))
        .await;
    assert!(sim.poll(&uuid).await.starts_with("window.code=201;"));
    let poll = tokio::spawn({
        let sim = sim.clone();
        let uuid = uuid.clone();
        async move { sim.poll(&uuid).await }
    });
    wait_until(|| async { sim.stats().await["open_login_polls"] == 1 }).await;
    sim.post(&format!("/qr/{uuid}/cancel"), json!({})).await;
    assert_eq!(poll.await.expect("join"), "window.code=408;");
    assert_eq!(sim.get("/qr").await["pending"][0]["state"], "waiting");
    sim.post(&format!("/qr/{uuid}/scan"), json!({"uin": uin}))
        .await;
    assert!(sim.poll(&uuid).await.starts_with("window.code=201;"));
}

#[tokio::test]
async fn expiry_by_control_and_by_ttl_answers_400() {
    let sim = Sim::start_with(Duration::from_secs(30)).await;
    let uuid = sim.jslogin("x").await;
    sim.post(&format!("/qr/{uuid}/expire"), json!({})).await;
    assert_eq!(sim.poll(&uuid).await, "window.code=400;");
    sim.post("/config", json!({"qr_ttl_ms": 100})).await;
    let uuid = sim.jslogin("x").await;
    // The poll would hold 30 s; the QR's own expiry ends it.
    assert_eq!(sim.poll(&uuid).await, "window.code=400;");
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn qr_control_errors() {
    let sim = Sim::start().await;
    let uin = alice_with_friends(&sim).await;
    let (s, v) = sim
        .ctl(
            reqwest::Method::POST,
            "/qr/nope==/scan",
            Some(json!({"uin": uin})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(v["error"].as_str().is_some_and(|e| e.contains("uuid")));
    let uuid = sim.jslogin("x").await;
    let (s, _) = sim
        .ctl(reqwest::Method::POST, &format!("/qr/{uuid}/confirm"), None)
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = sim
        .ctl(
            reqwest::Method::POST,
            &format!("/qr/{uuid}/scan"),
            Some(json!({"uin": 1})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = sim
        .ctl(
            reqwest::Method::POST,
            &format!("/qr/{uuid}/scan"),
            Some(json!({})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = sim
        .ctl(
            reqwest::Method::POST,
            "/accounts",
            Some(json!({"nickname": "X", "frends": []})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = sim
        .ctl(
            reqwest::Method::POST,
            "/accounts",
            Some(json!({"nickname": "X", "uin": uin})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn newloginpage_gives_xml_cookies_and_status_by_mode() {
    let sim = Sim::start().await;
    let uin = alice_with_friends(&sim).await;
    // Normal mode: 200.
    let web = sim.login(uin).await;
    assert!(
        web.skey.starts_with("@crypt_") && web.skey.len() == 48,
        "{}",
        web.skey
    );
    assert_eq!(web.sid.len(), 16);
    assert!(web.pass_ticket.contains("%2B"));
    for name in [
        "wxuin",
        "wxsid",
        "webwx_data_ticket",
        "webwxuvid",
        "webwx_auth_ticket",
        "wxloadtime",
        "mm_lang",
    ] {
        assert!(
            web.cookies.get(name).is_some_and(|v| !v.is_empty()),
            "cookie {name}"
        );
    }
    assert_eq!(web.cookies["wxuin"], uin.to_string());
    assert_eq!(web.cookies["wxsid"], web.sid);

    // Desktop by jslogin redirect: 301 + Location, same XML.
    for (redirect, headers) in [
        (
            "https://wx.qq.com/cgi-bin/mmwebwx-bin/webwxnewloginpage?mod=desktop",
            false,
        ),
        (
            "https://wx.qq.com/cgi-bin/mmwebwx-bin/webwxnewloginpage",
            true,
        ),
    ] {
        let uuid = sim.jslogin(redirect).await;
        assert_eq!(sim.get("/qr").await["pending"][0]["desktop"], !headers);
        sim.post(&format!("/qr/{uuid}/scan"), json!({"uin": uin}))
            .await;
        sim.post(&format!("/qr/{uuid}/confirm"), json!({})).await;
        let url = redirect_of(&sim.poll(&uuid).await);
        let mut r = sim.http.get(&url);
        if headers {
            r = r
                .header("client-version", "2.0.0")
                .header("extspam", "Go8F");
        }
        let resp = r.send().await.expect("newloginpage");
        assert_eq!(resp.status(), StatusCode::MOVED_PERMANENTLY);
        assert!(resp.headers().get("location").is_some());
        let raw: Vec<String> = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().expect("ascii").to_string())
            .collect();
        assert_eq!(raw.len(), 7);
        assert!(
            raw.iter()
                .all(|c| c.contains("; Path=/") && c.contains("; Expires=")),
            "{raw:?}"
        );
        let xml = resp.text().await.expect("xml");
        assert!(
            xml.starts_with("<error><ret>0</ret><message></message><skey>@crypt_"),
            "{xml}"
        );
        assert!(xml.ends_with("<isgrayscale>1</isgrayscale></error>"));
        assert_eq!(tag(&xml, "wxuin"), uin.to_string());
        // A ticket is single use.
        let again = sim
            .http
            .get(&url)
            .send()
            .await
            .expect("again")
            .text()
            .await
            .expect("xml");
        assert_ne!(tag(&again, "ret"), "0");
    }
    // Each login replaced the previous session.
    let v = web.init().await;
    assert_eq!(v["BaseResponse"]["Ret"], 1101);
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn web_forbidden_account_gets_1203_without_cookies() {
    let sim = Sim::start().await;
    let uin = sim
        .account(json!({"nickname": "Barred", "web_forbidden": true}))
        .await;
    let uuid = sim.jslogin("x").await;
    sim.post(&format!("/qr/{uuid}/scan"), json!({"uin": uin}))
        .await;
    sim.post(&format!("/qr/{uuid}/confirm"), json!({})).await;
    let url = redirect_of(&sim.poll(&uuid).await);
    let resp = sim.http.get(&url).send().await.expect("newloginpage");
    assert!(resp.headers().get("set-cookie").is_none());
    let xml = resp.text().await.expect("xml");
    assert!(xml.starts_with("<error><ret>1203</ret><message>"), "{xml}");
    assert_eq!(tag(&xml, "skey"), "");
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn phone_page_and_qr_image() {
    let sim = Sim::start().await;
    alice_with_friends(&sim).await;
    let uuid = sim.jslogin("x").await;
    let page = sim.text(&format!("/l/{uuid}")).await;
    assert!(page.contains("Alice") && page.contains("/scan"), "{page}");
    let resp = sim
        .http
        .get(sim.url(&format!("/qrcode/{uuid}")))
        .send()
        .await
        .expect("qr");
    assert_eq!(resp.headers()["content-type"], "image/jpeg");
    let bytes = resp.bytes().await.expect("bytes");
    let img = image::load_from_memory(&bytes).expect("decodes");
    assert!(img.width() >= 200);
    // A form post from the page redirects back to it.
    let resp = sim
        .http
        .post(sim.url(&format!("/__sim/qr/{uuid}/scan")))
        .form(&[(
            "uin",
            sim.get("/accounts").await["accounts"][0]["uin"].to_string(),
        )])
        .send()
        .await
        .expect("form");
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(sim.get("/qr").await["pending"][0]["state"], "scanned");
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn push_login_needs_the_wxuin_cookie_and_is_confirmed_by_the_phone() {
    let sim = Sim::start().await;
    let uin = alice_with_friends(&sim).await;
    let web = sim.login(uin).await;
    let none: Value = sim
        .http
        .get(sim.url(&format!("/cgi-bin/mmwebwx-bin/webwxpushloginurl?uin={uin}")))
        .send()
        .await
        .expect("push")
        .json()
        .await
        .expect("json");
    assert_eq!(none, json!({"ret": "1", "msg": "args error"}));
    let v: Value = sim
        .http
        .get(sim.url(&format!("/cgi-bin/mmwebwx-bin/webwxpushloginurl?uin={uin}")))
        .header(COOKIE, web.cookie_header())
        .send()
        .await
        .expect("push")
        .json()
        .await
        .expect("json");
    assert_eq!(v["ret"], "0");
    assert_eq!(v["msg"], "all ok");
    let uuid = v["uuid"].as_str().expect("uuid").to_string();
    let pending = sim.get("/qr").await;
    assert_eq!(pending["pending"][0]["push_uin"], uin);
    sim.post(&format!("/qr/{uuid}/confirm"), json!({})).await;
    let url = redirect_of(&sim.poll(&uuid).await);
    let resp = sim.http.get(&url).send().await.expect("newloginpage");
    assert_eq!(tag(&resp.text().await.expect("xml"), "ret"), "0");
    sim.handle.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// shapes

#[tokio::test]
async fn init_has_every_field_with_spec_types() {
    let sim = Sim::start().await;
    let uin = alice_with_friends(&sim).await;
    let web = sim.login(uin).await;
    let v = web.init().await;
    assert_eq!(v["BaseResponse"], json!({"Ret": 0, "ErrMsg": ""}));
    assert_eq!(v["User"]["Uin"].as_u64(), Some(uin));
    assert!(
        v["User"]["UserName"]
            .as_str()
            .is_some_and(|u| u.starts_with('@'))
    );
    assert_eq!(v["User"]["NickName"], "Alice");
    assert!(v["User"]["VerifyFlag"].is_u64());
    assert_eq!(v["SyncKey"]["Count"], 4);
    let keys: Vec<u64> = v["SyncKey"]["List"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|k| k["Key"].as_u64())
        .collect();
    assert_eq!(keys, vec![1, 2, 3, 1000]);
    assert_eq!(
        v["Count"].as_u64(),
        v["ContactList"].as_array().map(|l| l.len() as u64)
    );
    for c in v["ContactList"].as_array().expect("contacts") {
        for k in ["UserName", "NickName", "HeadImgUrl"] {
            assert!(c[k].is_string(), "{k}");
        }
        for k in [
            "Sex",
            "VerifyFlag",
            "ContactFlag",
            "AttrStatus",
            "MemberCount",
            "OwnerUin",
            "ChatRoomId",
        ] {
            assert!(c[k].is_u64(), "{k} in {c}");
        }
        assert!(c["MemberList"].is_array());
        assert!(
            c["HeadImgUrl"]
                .as_str()
                .is_some_and(|u| u.starts_with("/cgi-bin/mmwebwx-bin/webwxget"))
        );
    }
    for k in [
        "InviteStartCount",
        "ClientVersion",
        "SystemTime",
        "GrayScale",
        "MPSubscribeMsgCount",
        "ClickReportInterval",
    ] {
        assert!(v[k].is_u64(), "{k}");
    }
    assert!(
        v["ChatSet"]
            .as_str()
            .is_some_and(|s| s.contains("filehelper,"))
    );
    assert_eq!(v["SKey"], web.skey.as_str());
    assert_eq!(
        v["MPSubscribeMsgCount"].as_u64(),
        v["MPSubscribeMsgList"].as_array().map(|l| l.len() as u64)
    );
    let status: Value = web
        .call("webwxstatusnotify?lang=zh_CN", json!({"Code": 3, "FromUserName": v["User"]["UserName"], "ToUserName": v["User"]["UserName"], "ClientMsgId": 1}))
        .await;
    assert_eq!(status["BaseResponse"]["Ret"], 0);
    assert!(status["MsgID"].is_string());
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn getcontact_pages_until_seq_zero() {
    let sim = Sim::start().await;
    let uin = sim
        .account(
            json!({"nickname": "Big", "friend_count": 450, "group_count": 3, "group_size": 5,
                        "groups": [{"name": "Hidden", "saved": false}]}),
        )
        .await;
    sim.post("/config", json!({"contact_page_size": 200})).await;
    let web = sim.login(uin).await;
    let mut seq = 0u64;
    let mut pages = Vec::new();
    let mut names = std::collections::HashSet::new();
    loop {
        let resp = web
            .http
            .get(web.url(&format!("webwxgetcontact?r=1&seq={seq}&skey={}", web.skey)))
            .header(COOKIE, web.cookie_header())
            .send()
            .await
            .expect("getcontact");
        let v: Value = resp.json().await.expect("json");
        assert_eq!(v["BaseResponse"]["Ret"], 0);
        let list = v["MemberList"].as_array().expect("list");
        assert_eq!(v["MemberCount"].as_u64(), Some(list.len() as u64));
        for c in list {
            assert!(names.insert(c["UserName"].as_str().expect("name").to_string()));
            if c["UserName"].as_str().is_some_and(|u| u.starts_with("@@")) {
                assert_eq!(c["MemberList"], json!([]));
            }
        }
        pages.push(list.len());
        seq = v["Seq"].as_u64().expect("Seq number");
        if seq == 0 {
            break;
        }
    }
    // 450 friends + 4 special accounts + 3 saved groups; the unsaved group is not listed.
    assert_eq!(pages, vec![200, 200, 57]);
    let view = sim.get(&format!("/accounts/{uin}")).await;
    let hidden = view["contacts"]
        .as_array()
        .and_then(|l| l.iter().find(|c| c["nickname"] == "Hidden"))
        .and_then(|c| c["user_name"].as_str())
        .expect("hidden group");
    assert!(!names.contains(hidden));
    // POST works too.
    let v: Value = web
        .http
        .post(web.url("webwxgetcontact?seq=0"))
        .header(COOKIE, web.cookie_header())
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    assert_eq!(v["MemberCount"], 200);
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn batchgetcontact_returns_requested_entries_in_order() {
    let sim = Sim::start().await;
    let uin = alice_with_friends(&sim).await;
    let web = sim.login(uin).await;
    let team = user_name(&sim, uin, "Team").await;
    let bob = user_name(&sim, uin, "Bob").await;
    let v = web
        .call(
            "webwxbatchgetcontact?type=ex&r=1",
            json!({"Count": 4, "List": [
                {"UserName": team, "ChatRoomId": ""},
                {"UserName": "@0000000000000000000000000000dead", "EncryChatRoomId": ""},
                {"UserName": bob, "EncryChatRoomId": "", "NickName": "extra", "MemberList": []},
                {"UserName": "filehelper"},
            ]}),
        )
        .await;
    assert_eq!(v["Count"], 3);
    let list = v["ContactList"].as_array().expect("list");
    assert_eq!(list[0]["UserName"], team.as_str());
    assert_eq!(list[1]["UserName"], bob.as_str());
    assert_eq!(list[2]["UserName"], "filehelper");
    let group = &list[0];
    let members = group["MemberList"].as_array().expect("members");
    assert_eq!(group["MemberCount"].as_u64(), Some(members.len() as u64));
    assert_eq!(members.len(), 4);
    assert!(
        group["EncryChatRoomId"]
            .as_str()
            .is_some_and(|e| e.starts_with('@') && e.len() == 33)
    );
    let owner = group["ChatRoomOwner"].as_str().expect("owner");
    assert!(members.iter().any(|m| m["UserName"] == owner));
    let bobby = members
        .iter()
        .find(|m| m["UserName"] == bob.as_str())
        .expect("bob");
    assert_eq!(bobby["DisplayName"], "Bobby");
    assert_eq!(bobby["NickName"], "Bob");
    for m in members {
        for k in ["Uin", "AttrStatus", "MemberStatus"] {
            assert!(m[k].is_u64(), "{k}");
        }
    }
    sim.handle.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// sync

#[tokio::test]
async fn synccheck_selector_semantics() {
    let sim = Arc::new(Sim::start_with(Duration::from_secs(30)).await);
    let uin = alice_with_friends(&sim).await;
    let web = sim.login(uin).await;
    let init = web.init().await;
    // The login StatusNotify is pending right away.
    assert_eq!(web.synccheck(&init["SyncKey"]).await, sc(0, 2));
    let first = web.sync(&init["SyncKey"]).await;
    assert_counts(&first);
    assert_eq!(first["SyncKey"]["Count"], 7);
    let notify = &first["AddMsgList"][0];
    assert_message_types(notify);
    assert_eq!(notify["MsgType"], 51);
    assert_eq!(notify["StatusNotifyCode"], 4);
    assert!(
        notify["StatusNotifyUserName"]
            .as_str()
            .is_some_and(|s| s.starts_with("filehelper"))
    );
    let key = first["SyncKey"].clone();

    // Nothing new: the poll holds; an injected message wakes it at once.
    let poll = tokio::spawn({
        let web = web.clone();
        let key = key.clone();
        async move { web.synccheck(&key).await }
    });
    sim.wait_open_polls(1).await;
    let sent = sim
        .inject(uin, json!({"type": "text", "from": "Bob", "text": "hi"}))
        .await;
    assert_eq!(poll.await.expect("join"), sc(0, 2));
    // SyncCheckKey works as well as SyncKey.
    assert_eq!(web.synccheck(&first["SyncCheckKey"]).await, sc(0, 2));
    let v = web.sync(&key).await;
    assert_eq!(v["AddMsgCount"], 1);
    let m = &v["AddMsgList"][0];
    assert_message_types(m);
    assert_eq!(m["MsgId"], sent["msg_id"]);
    assert_eq!(m["NewMsgId"], sent["new_msg_id"]);
    assert_eq!(m["Content"], "hi");
    let caught_up = v["SyncKey"].clone();

    // Caught up: selector 0 once the (short) hold passes.
    sim.post("/config", json!({"hold_ms": 200})).await;
    assert_eq!(web.synccheck(&caught_up).await, sc(0, 0));
    // A stale key re-delivers what came after it.
    assert_eq!(web.synccheck(&key).await, sc(0, 2));
    let again = web.sync(&key).await;
    assert_eq!(again["AddMsgList"][0]["MsgId"], sent["msg_id"]);
    let caught_up_again = web.sync(&caught_up).await;
    assert_eq!(caught_up_again["AddMsgCount"], 0);
    sim.post("/config", json!({"hold_ms": 30000})).await;
}

#[tokio::test]
async fn webwxsync_batches_with_continue_flag() {
    let sim = Sim::start().await;
    let uin = alice_with_friends(&sim).await;
    let web = sim.login(uin).await;
    let (_, _, mut key) = web.catch_up().await;
    sim.post("/config", json!({"sync_batch": 3})).await;
    for i in 0..7 {
        sim.inject(
            uin,
            json!({"type": "text", "from": "Bob", "text": format!("m{i}")}),
        )
        .await;
    }
    let mut got = Vec::new();
    let mut flags = Vec::new();
    loop {
        let v = web.sync(&key).await;
        assert_counts(&v);
        key = v["SyncKey"].clone();
        flags.push(v["ContinueFlag"].as_u64().expect("flag"));
        for m in v["AddMsgList"].as_array().expect("list") {
            got.push(m["Content"].as_str().expect("content").to_string());
        }
        if v["ContinueFlag"] == 0 {
            break;
        }
    }
    assert_eq!(got, (0..7).map(|i| format!("m{i}")).collect::<Vec<_>>());
    assert_eq!(flags, vec![1, 1, 0]);
    sim.handle.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// inject

#[tokio::test]
async fn every_inject_type_has_its_documented_shape() {
    let sim = Sim::start().await;
    let uin = alice_with_friends(&sim).await;
    let web = sim.login(uin).await;
    let (init, _, mut key) = web.catch_up().await;
    let me = init["User"]["UserName"].as_str().expect("me").to_string();
    let bob = user_name(&sim, uin, "Bob").await;
    let team = user_name(&sim, uin, "Team").await;

    // Group text with mentions and markup.
    let r = sim
        .inject(
            uin,
            json!({"type": "text", "group": "Team", "from": "Bob", "mentions": ["self", "Carol"],
                            "text": "hi <b> & \"x\"\nline2"}),
        )
        .await;
    let m = &next_messages(&web, &mut key).await[0];
    assert_message_types(m);
    assert_eq!(m["FromUserName"], team.as_str());
    assert_eq!(m["ToUserName"], me.as_str());
    assert_eq!(
        m["Content"],
        format!("{bob}:<br/>@Al\u{2005}@Carol\u{2005}hi &lt;b&gt; &amp; &quot;x&quot;<br/>line2")
    );
    assert_eq!(r["content"], m["Content"]);

    // Self-sent into a group: no prefix.
    sim.inject(
        uin,
        json!({"type": "text", "group": "Team", "from": "self", "text": "mine"}),
    )
    .await;
    let m = &next_messages(&web, &mut key).await[0];
    assert_eq!(
        (m["FromUserName"].as_str(), m["ToUserName"].as_str()),
        (Some(me.as_str()), Some(team.as_str()))
    );
    assert_eq!(m["Content"], "mine");

    // Self-sent to a friend from the phone.
    sim.inject(
        uin,
        json!({"type": "text", "from": "self", "to": "Bob", "text": "yo"}),
    )
    .await;
    let m = &next_messages(&web, &mut key).await[0];
    assert_eq!(m["ToUserName"], bob.as_str());

    struct Case {
        spec: Value,
        msg_type: u64,
        app_msg_type: u64,
        check: fn(&Value),
    }
    let cases = [
        Case {
            spec: json!({"type": "image", "from": "Bob"}),
            msg_type: 3,
            app_msg_type: 0,
            check: |m| {
                assert_eq!(m["ImgStatus"], 2);
                assert!(
                    m["Content"]
                        .as_str()
                        .is_some_and(|c| c.contains("&lt;img "))
                );
            },
        },
        Case {
            spec: json!({"type": "voice", "from": "Bob", "length_ms": 4200}),
            msg_type: 34,
            app_msg_type: 0,
            check: |m| {
                assert_eq!(m["VoiceLength"], 4200);
                assert!(
                    m["Content"]
                        .as_str()
                        .is_some_and(|c| c.contains("voicemsg"))
                );
            },
        },
        Case {
            spec: json!({"type": "video", "from": "Bob"}),
            msg_type: 43,
            app_msg_type: 0,
            check: |m| assert!(m["PlayLength"].as_u64().is_some_and(|p| p > 0)),
        },
        Case {
            spec: json!({"type": "microvideo", "from": "Bob"}),
            msg_type: 62,
            app_msg_type: 0,
            check: |_| {},
        },
        Case {
            spec: json!({"type": "file", "from": "Bob", "file_name": "report_1.pdf", "size": 2048}),
            msg_type: 49,
            app_msg_type: 6,
            check: |m| {
                assert_eq!(m["FileName"], "report_1.pdf");
                assert_eq!(m["FileSize"], "2048");
                assert_eq!(m["EncryFileName"], "report%5F1%2Epdf");
                assert!(
                    m["MediaId"]
                        .as_str()
                        .is_some_and(|id| id.starts_with("@crypt_"))
                );
            },
        },
        Case {
            spec: json!({"type": "emoji", "from": "Bob", "md5": "0123456789abcdef0123456789abcdef"}),
            msg_type: 47,
            app_msg_type: 0,
            check: |m| {
                assert!(m["Content"].as_str().is_some_and(|c| {
                    c.contains("md5=&quot;0123456789abcdef0123456789abcdef&quot;")
                }))
            },
        },
        Case {
            spec: json!({"type": "card", "from": "Bob", "card": "Carol"}),
            msg_type: 42,
            app_msg_type: 0,
            check: |m| {
                assert_eq!(m["RecommendInfo"]["NickName"], "Carol");
                assert_eq!(m["RecommendInfo"]["Scene"], 17);
            },
        },
        Case {
            spec: json!({"type": "link", "from": "Bob", "title": "T", "desc": "D", "url": "http://a.invalid/x?a=1&b=2"}),
            msg_type: 49,
            app_msg_type: 5,
            check: |m| {
                assert_eq!(m["FileName"], "T");
                assert_eq!(m["Url"], "http://a.invalid/x?a=1&b=2");
            },
        },
        Case {
            spec: json!({"type": "location", "from": "Bob", "label": "Park", "address": "Road 1", "lat": 1.5, "lng": 2.5}),
            msg_type: 1,
            app_msg_type: 0,
            check: |m| {
                assert_eq!(m["SubMsgType"], 48);
                assert!(
                    m["Url"]
                        .as_str()
                        .is_some_and(|u| u.contains("apis.map.qq.com") && u.contains("1.5,2.5"))
                );
                assert!(m["Content"].as_str().is_some_and(|c| {
                    c.starts_with("Park(Road 1):<br/>/cgi-bin/mmwebwx-bin/webwxgetpubliclinkimg?")
                }));
                assert!(
                    m["OriContent"]
                        .as_str()
                        .is_some_and(|c| c.contains("<location x=\"1.5\" y=\"2.5\""))
                );
            },
        },
        Case {
            spec: json!({"type": "mini_program", "from": "Bob", "title": "Game"}),
            msg_type: 49,
            app_msg_type: 33,
            check: |m| assert_eq!(m["FileName"], "Game"),
        },
        Case {
            spec: json!({"type": "transfer", "from": "Bob", "amount": "8.88"}),
            msg_type: 49,
            app_msg_type: 2000,
            check: |m| {
                assert_eq!(m["FileName"], "微信转账");
                assert!(
                    m["Content"]
                        .as_str()
                        .is_some_and(|c| c.contains("收到转账8.88元。"))
                );
            },
        },
        Case {
            spec: json!({"type": "system", "group": "Team", "text": "\"Bob\"修改群名为“X”"}),
            msg_type: 10000,
            app_msg_type: 0,
            check: |m| {
                assert!(
                    m["FromUserName"]
                        .as_str()
                        .is_some_and(|f| f.starts_with("@@"))
                );
                assert_eq!(m["Content"], "&quot;Bob&quot;修改群名为“X”");
            },
        },
        Case {
            spec: json!({"type": "status_notify", "to": "Bob", "code": 2}),
            msg_type: 51,
            app_msg_type: 0,
            check: |m| assert_eq!(m["StatusNotifyCode"], 2),
        },
    ];
    for case in &cases {
        sim.inject(uin, case.spec.clone()).await;
        let msgs = next_messages(&web, &mut key).await;
        assert_eq!(msgs.len(), 1, "{}", case.spec);
        let m = &msgs[0];
        assert_message_types(m);
        assert_eq!(m["MsgType"], case.msg_type, "{}", case.spec);
        assert_eq!(m["AppMsgType"], case.app_msg_type, "{}", case.spec);
        (case.check)(m);
    }

    // Group media keep the member prefix.
    sim.inject(
        uin,
        json!({"type": "image", "group": "Team", "from": "Carol"}),
    )
    .await;
    let m = &next_messages(&web, &mut key).await[0];
    let carol = user_name(&sim, uin, "Carol").await;
    assert!(
        m["Content"]
            .as_str()
            .is_some_and(|c| c.starts_with(&format!("{carol}:<br/>&lt;")))
    );

    // Recall of an earlier group message.
    sim.inject(uin, json!({"type": "recall", "msg_id": r["msg_id"]}))
        .await;
    let m = &next_messages(&web, &mut key).await[0];
    assert_eq!(m["MsgType"], 10002);
    let c = m["Content"].as_str().expect("content");
    assert!(
        c.starts_with(&format!(
            "{bob}:<br/>&lt;sysmsg type=&quot;revokemsg&quot;&gt;"
        )),
        "{c}"
    );
    assert!(c.contains(&format!(
        "&lt;oldmsgid&gt;{}&lt;/oldmsgid&gt;",
        r["msg_id"].as_str().expect("id")
    )));

    // Friend request.
    let fr = sim
        .inject(
            uin,
            json!({"type": "friend_request", "nickname": "Dave", "greeting": "hello"}),
        )
        .await;
    let m = &next_messages(&web, &mut key).await[0];
    assert_eq!(m["MsgType"], 37);
    assert_eq!(m["FromUserName"], "fmessage");
    let ticket = fr["ticket"].as_str().expect("ticket");
    assert!(ticket.starts_with("v2_") && ticket.ends_with("@stranger"));
    assert_eq!(m["RecommendInfo"]["Ticket"], ticket);
    assert_eq!(m["RecommendInfo"]["UserName"], fr["user_name"]);
    assert_eq!(m["RecommendInfo"]["Content"], "hello");
    assert_eq!(m["RecommendInfo"]["OpCode"], 2);

    // Errors.
    let (s, _) = sim
        .ctl(
            reqwest::Method::POST,
            &format!("/sessions/{uin}/inject"),
            Some(json!({"type": "text", "from": "Nobody"})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = sim
        .ctl(
            reqwest::Method::POST,
            &format!("/sessions/{uin}/inject"),
            Some(json!({"type": "bogus", "from": "Bob"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn emoji_travel_as_spans_in_content_and_names() {
    let sim = Sim::start().await;
    let uin = sim
        .account(json!({"nickname": "Alice", "friends": [{"nickname": "Bob 😄"}]}))
        .await;
    let web = sim.login(uin).await;
    let (_, _, mut key) = web.catch_up().await;
    sim.inject(
        uin,
        json!({"type": "text", "from": "Bob 😄", "text": "hi 🇨🇳"}),
    )
    .await;
    let m = &next_messages(&web, &mut key).await[0];
    assert_eq!(
        m["Content"],
        "hi <span class=\"emoji emoji1f1e81f1f3\"></span>"
    );
    let bob = user_name(&sim, uin, "Bob 😄").await;
    let v = web
        .call(
            "webwxbatchgetcontact?type=ex",
            json!({"List": [{"UserName": bob}]}),
        )
        .await;
    assert_eq!(
        v["ContactList"][0]["NickName"],
        "Bob <span class=\"emoji emoji1f604\"></span>"
    );
    sim.handle.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// sessions

#[tokio::test]
async fn kicks_logout_and_missing_cookies_give_their_retcodes() {
    let sim = Sim::start().await;
    let uin = alice_with_friends(&sim).await;

    let web = sim.login(uin).await;
    let (_, _, key) = web.catch_up().await;
    // No cookies at all: 1102.
    assert_eq!(
        synccheck_raw(&web.http, &web.url(""), None, &format_key(&key)).await,
        sc(1102, 0)
    );

    for code in [1100u32, 1101, 1102, 1205] {
        let web = sim.login(uin).await;
        let (_, _, key) = web.catch_up().await;
        sim.post(&format!("/sessions/{uin}/kick"), json!({"retcode": code}))
            .await;
        assert_eq!(web.synccheck(&key).await, sc(code, 0));
        let v = web.sync(&key).await;
        assert_eq!(
            v["BaseResponse"]["Ret"],
            if code == 1102 { 1101 } else { code }
        );
        assert_counts(&v);
        let sessions = sim.get("/sessions").await;
        assert_eq!(sessions[0]["alive"], false);
        assert_eq!(sessions[0]["retcode"], code);
    }

    // A held poll wakes with the kick.
    let web = Arc::new(sim.login(uin).await);
    let (_, _, key) = web.catch_up().await;
    sim.post("/config", json!({"hold_ms": 30000})).await;
    let poll = tokio::spawn({
        let web = web.clone();
        let key = key.clone();
        async move { web.synccheck(&key).await }
    });
    sim.wait_open_polls(1).await;
    sim.post(&format!("/sessions/{uin}/kick"), json!({})).await;
    assert_eq!(poll.await.expect("join"), sc(1101, 0));
    sim.post("/config", json!({"hold_ms": 300})).await;

    // Logout kills the session.
    let web = sim.login(uin).await;
    let (_, _, key) = web.catch_up().await;
    let resp: Value = web
        .http
        .get(web.url(&format!("webwxlogout?redirect=1&type=1&skey={}", web.skey)))
        .header(COOKIE, web.cookie_header())
        .send()
        .await
        .expect("logout")
        .json()
        .await
        .expect("json");
    assert_eq!(resp["BaseResponse"]["Ret"], 0);
    assert_eq!(web.synccheck(&key).await, sc(1101, 0));
    assert_eq!(web.init().await["BaseResponse"]["Ret"], 1101);

    // JSON endpoints fall back to BaseRequest when cookies are missing.
    let web = sim.login(uin).await;
    let mut no_cookies = web.clone();
    no_cookies.cookies.clear();
    assert_eq!(no_cookies.init().await["BaseResponse"]["Ret"], 0);
    let (s, _) = sim
        .ctl(
            reqwest::Method::POST,
            &format!("/sessions/{uin}/kick"),
            Some(json!({"retcode": 7})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    sim.handle.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// send and media

#[tokio::test]
async fn sends_land_in_the_outbox_with_string_ids() {
    let sim = Sim::start().await;
    let uin = alice_with_friends(&sim).await;
    let web = sim.login(uin).await;
    let (_, _, mut key) = web.catch_up().await;
    let bob = user_name(&sim, uin, "Bob").await;
    let v = web.send_text(&bob, "hello <Bob>").await;
    assert_eq!(v["BaseResponse"]["Ret"], 0);
    assert!(
        v["MsgID"]
            .as_str()
            .is_some_and(|s| s.parse::<u64>().is_ok())
    );
    assert_eq!(v["LocalID"], "15462147414160521");
    let out = sim.get(&format!("/sessions/{uin}/outbox")).await;
    let e = &out["messages"][0];
    assert_eq!(e["endpoint"], "webwxsendmsg");
    assert_eq!(e["msg_type"], 1);
    assert_eq!(e["to"], bob.as_str());
    assert_eq!(e["to_nickname"], "Bob");
    assert_eq!(e["content"], "hello <Bob>");
    assert_eq!(e["msg_id"], v["MsgID"]);
    assert_eq!(e["local_id"], "15462147414160521");
    // Not echoed by default.
    assert!(next_messages(&web, &mut key).await.is_empty());
    sim.post("/config", json!({"echo_sent": true})).await;
    let v = web.send_text(&bob, "a\nb").await;
    let m = &next_messages(&web, &mut key).await[0];
    assert_eq!(m["MsgId"], v["MsgID"]);
    assert_eq!(m["Content"], "a<br/>b");
    assert_eq!(m["ToUserName"], bob.as_str());

    // Unknown group: 1201. Rate limit: 1205.
    let v = web.send_text(&format!("@@{}", "0".repeat(64)), "x").await;
    assert_eq!(v["BaseResponse"]["Ret"], 1201);
    sim.post(&format!("/sessions/{uin}/rate_limit"), json!({"on": true}))
        .await;
    assert_eq!(web.send_text(&bob, "x").await["BaseResponse"]["Ret"], 1205);
    sim.post(&format!("/sessions/{uin}/rate_limit"), json!({"on": false}))
        .await;
    assert_eq!(web.send_text(&bob, "x").await["BaseResponse"]["Ret"], 0);

    // Revoke: fine within the window, -1 outside it.
    let sent = web.send_text(&bob, "oops").await;
    let r = web
        .call(
            "webwxrevokemsg",
            json!({"ClientMsgId": "1546.5", "SvrMsgId": sent["MsgID"], "ToUserName": bob}),
        )
        .await;
    assert_eq!(r["BaseResponse"]["Ret"], 0);
    assert_eq!(r["SysWording"], "已撤回");
    sim.post("/config", json!({"revoke_window_ms": 0})).await;
    let sent = web.send_text(&bob, "late").await;
    let r = web
        .call(
            "webwxrevokemsg",
            json!({"ClientMsgId": 1, "SvrMsgId": sent["MsgID"], "ToUserName": bob}),
        )
        .await;
    assert_eq!(r["BaseResponse"]["Ret"], -1);
    sim.handle.shutdown().await;
}

async fn upload_chunk(
    web: &Web,
    data: &[u8],
    total: usize,
    chunk: Option<(usize, usize)>,
    client_media_id: u64,
    to: &str,
) -> Value {
    let req = json!({"UploadType": 2, "BaseRequest": web.base_request(), "ClientMediaId": client_media_id,
                     "TotalLen": total, "StartPos": 0, "DataLen": total, "MediaType": 4,
                     "FromUserName": "", "ToUserName": to, "FileMd5": "d5703346bc99a77c1fe276f94b2d9fd4"});
    // Fields in an unusual order: the file part first, the request JSON last.
    let mut form = reqwest::multipart::Form::new()
        .part(
            "filename",
            reqwest::multipart::Part::bytes(data.to_vec())
                .file_name("photo.jpg")
                .mime_str("application/octet-stream")
                .expect("mime"),
        )
        .text("size", total.to_string())
        .text("mediatype", "pic")
        .text("type", "image/jpeg")
        .text("name", "photo.jpg")
        .text("id", "WU_FILE_0")
        .text(
            "webwx_data_ticket",
            web.cookies["webwx_data_ticket"].clone(),
        )
        .text("pass_ticket", "undefined");
    if let Some((i, n)) = chunk {
        form = form
            .text("chunk", i.to_string())
            .text("chunks", n.to_string());
    }
    form = form.text("uploadmediarequest", req.to_string());
    web.http
        .post(format!(
            "{}/cgi-bin/mmwebwx-bin/webwxuploadmedia?f=json",
            web.base
        ))
        .header(COOKIE, web.cookie_header())
        .multipart(form)
        .send()
        .await
        .expect("upload")
        .json()
        .await
        .expect("json")
}

#[tokio::test]
async fn chunked_upload_then_send_image_and_download() {
    let sim = Sim::start().await;
    let uin = alice_with_friends(&sim).await;
    let web = sim.login(uin).await;
    web.catch_up().await;
    let bob = user_name(&sim, uin, "Bob").await;
    let data: Vec<u8> = (0..1_200_000u32).map(|i| (i % 253) as u8).collect();
    let chunk = 524_288;
    let parts: Vec<&[u8]> = data.chunks(chunk).collect();
    assert_eq!(parts.len(), 3);
    let mut last = Value::Null;
    for (i, p) in parts.iter().enumerate() {
        last = upload_chunk(
            &web,
            p,
            data.len(),
            Some((i, parts.len())),
            77,
            "filehelper",
        )
        .await;
        assert_eq!(last["BaseResponse"]["Ret"], 0, "{last}");
        if i + 1 < parts.len() {
            assert_eq!(last["MediaId"], "");
            assert_eq!(last["StartPos"].as_u64(), Some(((i + 1) * chunk) as u64));
        }
    }
    let media_id = last["MediaId"].as_str().expect("media id").to_string();
    assert!(media_id.starts_with("@crypt_"));
    assert_eq!(last["StartPos"].as_u64(), Some(data.len() as u64));

    // Out-of-order chunks are refused.
    let bad = upload_chunk(&web, parts[1], data.len(), Some((1, 3)), 78, "filehelper").await;
    assert_ne!(bad["BaseResponse"]["Ret"], 0);
    // An unchunked upload bigger than axum's default body limit still works.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 241) as u8).collect();
    let whole = upload_chunk(&web, &big, big.len(), None, 80, "filehelper").await;
    assert_eq!(whole["BaseResponse"]["Ret"], 0, "{whole}");
    // Wrong total size is refused.
    let short = upload_chunk(&web, &data[..10], 11, None, 79, "filehelper").await;
    assert_ne!(short["BaseResponse"]["Ret"], 0);

    // Send the uploaded image to someone other than the upload's ToUserName.
    let v = web
        .call("webwxsendmsgimg?fun=async&f=json", json!({"Msg": {"Type": 3, "MediaId": media_id, "FromUserName": "", "ToUserName": bob, "LocalID": "1", "ClientMsgId": "1"}, "Scene": 0}))
        .await;
    assert_eq!(v["BaseResponse"]["Ret"], 0);
    let v = web
        .call("webwxsendmsgimg?fun=async&f=json", json!({"Msg": {"Type": 3, "MediaId": "@crypt_nope", "ToUserName": bob, "LocalID": "2"}, "Scene": 0}))
        .await;
    assert_ne!(v["BaseResponse"]["Ret"], 0);
    // OW posts Type 1 to the emoticon endpoint: routed by endpoint.
    let v = web
        .call("webwxsendemoticon?fun=sys", json!({"Msg": {"Type": 1, "EmojiFlag": 2, "EMoticonMd5": "abc", "ToUserName": bob, "LocalID": "3"}, "Scene": 0}))
        .await;
    assert_eq!(v["BaseResponse"]["Ret"], 0);
    let out = sim.get(&format!("/sessions/{uin}/outbox")).await;
    let endpoints: Vec<&str> = out["messages"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|e| e["endpoint"].as_str())
        .collect();
    assert_eq!(
        endpoints,
        vec![
            "webwxuploadmedia",
            "webwxuploadmedia",
            "webwxsendmsgimg",
            "webwxsendemoticon"
        ]
    );
    assert_eq!(out["messages"][3]["msg_type"], 47);

    // The file host serves the uploaded bytes back.
    let got = web
        .http
        .get(web.url(&format!("webwxgetmedia?sender=x&mediaid={}&filename=photo.jpg&fromuser={}&pass_ticket=undefined&webwx_data_ticket={}", urlencode(&media_id), uin, urlencode(&web.cookies["webwx_data_ticket"]))))
        .send()
        .await
        .expect("getmedia");
    assert_eq!(got.status(), StatusCode::OK);
    assert!(
        got.headers()["content-disposition"]
            .to_str()
            .is_ok_and(|d| d.contains("photo.jpg"))
    );
    assert_eq!(got.bytes().await.expect("bytes").as_ref(), data.as_slice());
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn message_media_downloads_by_id_with_ranges() {
    let sim = Sim::start().await;
    let uin = alice_with_friends(&sim).await;
    let web = sim.login(uin).await;
    web.catch_up().await;
    let img = sim
        .inject(uin, json!({"type": "image", "from": "Bob"}))
        .await;
    let resp = web
        .http
        .get(web.url(&format!(
            "webwxgetmsgimg?MsgID={}&skey={}&type=big",
            img["msg_id"].as_str().expect("id"),
            web.skey
        )))
        .header(COOKIE, web.cookie_header())
        .send()
        .await
        .expect("img");
    assert_eq!(resp.headers()["content-type"], "image/jpeg");
    let len: usize = resp.headers()["content-length"]
        .to_str()
        .expect("len")
        .parse()
        .expect("num");
    let bytes = resp.bytes().await.expect("bytes");
    assert_eq!(bytes.len(), len);
    image::load_from_memory(&bytes).expect("a real image");

    let video = sim
        .inject(uin, json!({"type": "video", "from": "Bob"}))
        .await;
    let resp = web
        .http
        .get(web.url(&format!(
            "webwxgetvideo?msgid={}&skey={}",
            video["msg_id"].as_str().expect("id"),
            web.skey
        )))
        .header(COOKIE, web.cookie_header())
        .header("range", "bytes=0-")
        .send()
        .await
        .expect("video");
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(resp.headers()["content-type"], "video/mp4");
    let total = resp.headers()["content-length"]
        .to_str()
        .expect("len")
        .to_string();
    let n: u64 = total.parse().expect("num");
    assert_eq!(
        resp.headers()["content-range"],
        format!("bytes 0-{}/{n}", n - 1).as_str()
    );

    let voice = sim
        .inject(uin, json!({"type": "voice", "from": "Bob"}))
        .await;
    let resp = web
        .http
        .get(web.url(&format!(
            "webwxgetvoice?msgid={}&skey={}",
            voice["new_msg_id"], web.skey
        )))
        .header(COOKIE, web.cookie_header())
        .send()
        .await
        .expect("voice");
    assert_eq!(resp.headers()["content-type"], "audio/mp3");
    assert!(resp.bytes().await.expect("bytes").starts_with(b"ID3"));

    let file = sim
        .inject(
            uin,
            json!({"type": "file", "from": "Bob", "file_name": "a.bin", "size": 3000}),
        )
        .await;
    let resp = web
        .http
        .get(web.url(&format!(
            "webwxgetmedia?mediaid={}",
            urlencode(file["media_id"].as_str().expect("id"))
        )))
        .header(COOKIE, web.cookie_header())
        .send()
        .await
        .expect("file");
    assert_eq!(resp.bytes().await.expect("bytes").len(), 3000);

    let icon = web
        .http
        .get(web.url("webwxgeticon?seq=1&username=@x&skey=y"))
        .send()
        .await
        .expect("icon");
    assert_eq!(icon.headers()["content-type"], "image/jpeg");
    assert_ne!(icon.headers()["content-length"], "0");
    sim.handle.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// contacts

#[tokio::test]
async fn contact_changes_flow_through_webwxsync() {
    let sim = Sim::start().await;
    let uin = alice_with_friends(&sim).await;
    let web = sim.login(uin).await;
    let (_, _, mut key) = web.catch_up().await;

    let added = sim
        .post(
            &format!("/sessions/{uin}/contacts"),
            json!({"op": "add_friend", "nickname": "Eve"}),
        )
        .await;
    assert_eq!(web.synccheck(&key).await, sc(0, 6));
    let v = web.sync(&key).await;
    assert_counts(&v);
    key = v["SyncKey"].clone();
    assert_eq!(v["ModContactList"][0]["UserName"], added["user_name"]);
    assert_eq!(v["ModContactList"][0]["NickName"], "Eve");
    assert!(v["ModContactList"][0]["MemberList"].is_array());

    sim.post(
        &format!("/sessions/{uin}/contacts"),
        json!({"op": "rename", "target": "Eve", "remark": "E"}),
    )
    .await;
    assert_eq!(web.synccheck(&key).await, sc(0, 4));
    let v = web.sync(&key).await;
    key = v["SyncKey"].clone();
    assert_eq!(v["ModContactList"][0]["RemarkName"], "E");

    sim.post(
        &format!("/sessions/{uin}/contacts"),
        json!({"op": "remove_friend", "target": "Eve"}),
    )
    .await;
    let v = web.sync(&key).await;
    key = v["SyncKey"].clone();
    assert_eq!(
        v["DelContactList"][0],
        json!({"UserName": added["user_name"], "ContactFlag": 0})
    );

    sim.post(
        &format!("/sessions/{uin}/contacts"),
        json!({"op": "add_member", "group": "Team", "member": "Frank"}),
    )
    .await;
    let v = web.sync(&key).await;
    key = v["SyncKey"].clone();
    let g = &v["ModContactList"][0];
    assert!(
        g["MemberList"]
            .as_array()
            .expect("members")
            .iter()
            .any(|m| m["NickName"] == "Frank")
    );
    assert_eq!(
        g["MemberCount"].as_u64(),
        g["MemberList"].as_array().map(|l| l.len() as u64)
    );
    assert_eq!(v["AddMsgList"][0]["MsgType"], 10000);

    sim.post(
        &format!("/sessions/{uin}/contacts"),
        json!({"op": "remove_member", "group": "Team", "member": "Frank"}),
    )
    .await;
    let v = web.sync(&key).await;
    key = v["SyncKey"].clone();
    assert!(
        !v["ModContactList"][0]["MemberList"]
            .as_array()
            .expect("members")
            .iter()
            .any(|m| m["NickName"] == "Frank")
    );

    let team = user_name(&sim, uin, "Team").await;
    sim.post(
        &format!("/sessions/{uin}/contacts"),
        json!({"op": "remove_group", "group": "Team"}),
    )
    .await;
    let v = web.sync(&key).await;
    assert_eq!(v["DelContactList"][0]["UserName"], team.as_str());
    assert_eq!(web.send_text(&team, "x").await["BaseResponse"]["Ret"], 1201);
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn verifyuser_oplog_and_chatrooms() {
    let sim = Sim::start().await;
    let uin = alice_with_friends(&sim).await;
    let web = sim.login(uin).await;
    let (_, _, mut key) = web.catch_up().await;

    let fr = sim
        .inject(uin, json!({"type": "friend_request", "nickname": "Dave"}))
        .await;
    next_messages(&web, &mut key).await;
    let dave = fr["user_name"].as_str().expect("user").to_string();
    let v = web
        .call(
            "webwxverifyuser?r=1",
            json!({"Opcode": 3, "VerifyUserListSize": 1,
            "VerifyUserList": [{"Value": dave, "VerifyUserTicket": fr["ticket"]}],
            "VerifyContent": "", "SceneListCount": 1, "SceneList": [33], "skey": web.skey}),
        )
        .await;
    assert_eq!(v["BaseResponse"]["Ret"], 0);
    let v = web.sync(&key).await;
    key = v["SyncKey"].clone();
    assert_eq!(v["ModContactList"][0]["UserName"], dave.as_str());
    assert_eq!(v["AddMsgList"][0]["MsgType"], 10000);
    assert_eq!(
        v["AddMsgList"][0]["Content"],
        "你已添加了Dave，现在可以开始聊天了。"
    );
    // A second accept has nothing pending.
    let v = web
        .call(
            "webwxverifyuser?r=1",
            json!({"Opcode": 3, "VerifyUserList": [{"Value": dave, "VerifyUserTicket": ""}]}),
        )
        .await;
    assert_ne!(v["BaseResponse"]["Ret"], 0);

    let bob = user_name(&sim, uin, "Bob").await;
    let v = web
        .call(
            "webwxoplog?lang=zh_CN",
            json!({"UserName": bob, "CmdId": 2, "RemarkName": "Bobby"}),
        )
        .await;
    assert_eq!(v["BaseResponse"]["Ret"], 0);
    let v = web
        .call(
            "webwxoplog",
            json!({"UserName": bob, "CmdId": 3, "OP": 1, "RemarkName": "Bobby"}),
        )
        .await;
    assert_eq!(v["BaseResponse"]["Ret"], 0);
    let v = web.sync(&key).await;
    key = v["SyncKey"].clone();
    let last = v["ModContactList"]
        .as_array()
        .and_then(|l| l.last())
        .expect("mod");
    assert_eq!(last["RemarkName"], "Bobby");
    assert_eq!(last["ContactFlag"].as_u64().map(|f| f & 2048), Some(2048));

    let carol = user_name(&sim, uin, "Carol").await;
    let v = web
        .call("webwxcreatechatroom?r=1", json!({"MemberCount": 2, "MemberList": [{"UserName": bob}, {"UserName": carol}], "Topic": "New"}))
        .await;
    assert_eq!(v["BaseResponse"]["Ret"], 0);
    let room = v["ChatRoomName"].as_str().expect("room").to_string();
    assert!(room.starts_with("@@"));
    assert_eq!(v["MemberCount"], 3);
    let v = web
        .call(
            "webwxupdatechatroom?fun=modtopic",
            json!({"ChatRoomName": room, "NewTopic": "Renamed"}),
        )
        .await;
    assert_eq!(v["BaseResponse"]["Ret"], 0);
    let v = web
        .call(
            "webwxupdatechatroom?fun=delmember",
            json!({"ChatRoomName": room, "DelMemberList": carol}),
        )
        .await;
    assert_eq!(v["BaseResponse"]["Ret"], 0);
    let v = web
        .call(
            "webwxupdatechatroom?fun=addmember",
            json!({"ChatRoomName": room, "AddMemberList": carol}),
        )
        .await;
    assert_eq!(v["MemberList"][0]["UserName"], carol.as_str());
    let v = web.sync(&key).await;
    let mods: Vec<&Value> = v["ModContactList"]
        .as_array()
        .expect("mods")
        .iter()
        .filter(|c| c["UserName"] == room.as_str())
        .collect();
    assert_eq!(mods.last().expect("room mod")["NickName"], "Renamed");
    let batch = web
        .call(
            "webwxbatchgetcontact?type=ex",
            json!({"List": [{"UserName": room}]}),
        )
        .await;
    assert_eq!(batch["ContactList"][0]["MemberCount"], 3);
    let out = sim.get(&format!("/sessions/{uin}/outbox")).await;
    let endpoints: Vec<&str> = out["messages"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|e| e["endpoint"].as_str())
        .collect();
    assert_eq!(
        endpoints,
        vec![
            "webwxverifyuser",
            "webwxoplog",
            "webwxoplog",
            "webwxcreatechatroom",
            "webwxupdatechatroom",
            "webwxupdatechatroom",
            "webwxupdatechatroom"
        ]
    );
    sim.handle.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// faults

#[tokio::test]
async fn faults_are_applied_per_route_and_cleared() {
    let sim = Sim::start().await;
    let uin = alice_with_friends(&sim).await;
    let web = sim.login(uin).await;
    let (_, _, key) = web.catch_up().await;

    sim.post("/faults", json!({"route": "synccheck", "http500": 1.0}))
        .await;
    let resp = web
        .http
        .get(web.url(&format!(
            "synccheck?synckey={}",
            urlencode(&format_key(&key))
        )))
        .header(COOKIE, web.cookie_header())
        .send()
        .await
        .expect("synccheck");
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    // Other routes are unaffected.
    assert_eq!(web.init().await["BaseResponse"]["Ret"], 0);

    sim.post("/faults", json!({"route": "synccheck", "drop": 1.0}))
        .await;
    let r = web
        .http
        .get(web.url(&format!(
            "synccheck?synckey={}",
            urlencode(&format_key(&key))
        )))
        .header(COOKIE, web.cookie_header())
        .send()
        .await;
    let failed = match r {
        Err(_) => true,
        Ok(resp) => resp.bytes().await.is_err(),
    };
    assert!(failed, "a dropped response must not read completely");

    sim.post("/faults", json!({"route": "*", "malformed": 1.0}))
        .await;
    sim.post("/faults", json!({"route": "synccheck", "http500": 0.0}))
        .await;
    let resp = web
        .http
        .post(web.url("webwxinit"))
        .header(COOKIE, web.cookie_header())
        .body(json!({"BaseRequest": web.base_request()}).to_string())
        .send()
        .await
        .expect("init");
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.bytes().await.expect("bytes");
    assert!(
        serde_json::from_slice::<Value>(&body).is_err(),
        "garbled body must not parse"
    );

    let stats = sim.stats().await;
    assert_eq!(stats["faults_injected"]["http500"], 1);
    assert_eq!(stats["faults_injected"]["drop"], 1);
    assert!(
        stats["faults_injected"]["malformed"]
            .as_u64()
            .is_some_and(|n| n >= 1)
    );
    assert!(
        stats["requests"]["synccheck"]
            .as_u64()
            .is_some_and(|n| n >= 2)
    );

    let (s, _) = sim
        .ctl(
            reqwest::Method::POST,
            "/faults",
            Some(json!({"route": "x", "drop": 2.0})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, v) = sim.ctl(reqwest::Method::DELETE, "/faults", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["faults"], json!({}));
    assert_eq!(web.init().await["BaseResponse"]["Ret"], 0);
    sim.handle.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// lifecycle

#[tokio::test]
async fn shutdown_answers_held_polls_at_once() {
    let sim = Sim::start_with(Duration::from_secs(600)).await;
    let uin = alice_with_friends(&sim).await;
    let web = sim.login(uin).await;
    let (_, _, key) = web.catch_up().await;
    let poll = tokio::spawn({
        let web = web.clone();
        async move { web.synccheck(&key).await }
    });
    sim.wait_open_polls(1).await;
    sim.handle.shutdown().await;
    assert_eq!(poll.await.expect("join"), sc(0, 0));
}

#[tokio::test]
async fn run_serves_until_cancelled_and_reports_bind_errors() {
    let token = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(wxagent::sim::run(
        SimOptions {
            listen: "127.0.0.1:0".parse().expect("addr"),
            hold: HOLD,
        },
        token.clone(),
    ));
    token.cancel();
    task.await.expect("join").expect("run ends cleanly");

    let sim = Sim::start().await;
    let err = wxagent::sim::run(
        SimOptions {
            listen: sim.handle.addr(),
            hold: HOLD,
        },
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .expect_err("port in use");
    assert!(
        format!("{err:#}").contains("binding the simulator"),
        "{err:#}"
    );
    sim.handle.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// capacity

/// 1,000 logged-in sessions each hold a synccheck long poll at the same time. Round one: all
/// polls are held at once, then a message for every account wakes each of them (selector 2).
/// Round two: 1,000 polls with a 2 s hold all run out to selector 0. A correctness test under
/// load, not a timing assertion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_sessions_hold_concurrent_long_polls() {
    const N: usize = 1000;
    let sim = Arc::new(Sim::start_with(Duration::from_secs(60)).await);
    let uins: Vec<u64> = futures::stream::iter(0..N)
        .map(|i| {
            let sim = sim.clone();
            async move {
                sim.account(
                    json!({"nickname": format!("User {i}"), "friends": [{"nickname": "Peer"}]}),
                )
                .await
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let webs: Vec<(Web, Value)> = futures::stream::iter(uins.clone())
        .map(|uin| {
            let sim = sim.clone();
            async move {
                let web = sim.login(uin).await;
                let (_, _, key) = web.catch_up().await;
                (web, key)
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert_eq!(webs.len(), N);
    assert_eq!(sim.stats().await["sessions_alive"], N as u64);

    // Round one: every poll is held (60 s hold) until its account gets a message.
    let polls: Vec<_> = webs
        .iter()
        .map(|(web, key)| {
            let web = web.clone();
            let key = key.clone();
            tokio::spawn(async move { web.synccheck(&key).await })
        })
        .collect();
    sim.wait_open_polls(N as i64).await;
    let sent: Vec<Value> = futures::stream::iter(uins.clone())
        .map(|uin| {
            let sim = sim.clone();
            async move {
                sim.inject(uin, json!({"type": "text", "from": "Peer", "text": "ping"}))
                    .await
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert_eq!(sent.len(), N);
    for p in polls {
        assert_eq!(p.await.expect("join"), sc(0, 2));
    }

    // Catch every session up, then round two: 1,000 concurrent polls that run out.
    let caught_up: Vec<(Web, Value)> = futures::stream::iter(webs)
        .map(|(web, key)| async move {
            let v = web.sync(&key).await;
            assert_eq!(v["AddMsgCount"], 1);
            assert_eq!(v["AddMsgList"][0]["Content"], "ping");
            let key = v["SyncKey"].clone();
            (web, key)
        })
        .buffer_unordered(32)
        .collect()
        .await;
    sim.post("/config", json!({"hold_ms": 2000})).await;
    let polls: Vec<_> = caught_up
        .into_iter()
        .map(|(web, key)| tokio::spawn(async move { web.synccheck(&key).await }))
        .collect();
    for p in polls {
        assert_eq!(p.await.expect("join"), sc(0, 0));
    }
    assert_eq!(sim.stats().await["open_long_polls"], 0);
}
