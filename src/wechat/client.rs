//! The HTTP side of the web protocol: one method per endpoint, cookies kept in the session's
//! jar, credentials and hosts from [`WebSession`]. Methods take `&self` so a send can run while
//! the sync long poll is outstanding; the session sits behind a mutex that is never held across
//! an await.

use super::contact::RawContact;
use super::cookies::CookieJar;
use super::desktop;
use super::error::WechatError;
use super::hosts::{self, Hosts};
use super::message::RawMessage;
use super::parse::{self, LoginPoll, SyncCheck};
use super::session::{Credentials, SyncKey, WebSession, json_i64, new_device_id};
use reqwest::header::{self, HeaderMap, HeaderValue};
use serde_json::{Value, json};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use url::Url;

/// How the client talks to the servers.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// Origin of the login host (validated by [`hosts::login_origin`]).
    pub login: Url,
    /// UOS desktop mode (spec §4).
    pub desktop_mode: bool,
    pub request_timeout: Duration,
    pub longpoll_timeout: Duration,
}

/// What webwxinit returned.
#[derive(Debug)]
pub struct InitData {
    pub user: RawContact,
    pub contacts: Vec<RawContact>,
    pub chat_set: String,
}

/// One webwxsync answer.
#[derive(Debug, Default, PartialEq)]
pub struct SyncData {
    pub messages: Vec<RawMessage>,
    pub mod_contacts: Vec<RawContact>,
    pub del_contacts: Vec<String>,
    pub mod_chatroom_members: Vec<RawContact>,
    pub continue_flag: i64,
    /// Whether the SyncKey moved (an unchanged key with nothing in it is an "empty" sync).
    pub key_changed: bool,
}

impl SyncData {
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
            && self.mod_contacts.is_empty()
            && self.del_contacts.is_empty()
            && self.mod_chatroom_members.is_empty()
    }
}

/// The server's ids for a message this client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMessage {
    pub msg_id: String,
    pub local_id: String,
}

pub struct WebClient {
    /// Replaced by [`Self::renew_connections`] once the login's bulk reads are over.
    http: Mutex<reqwest::Client>,
    settings: ClientSettings,
    state: Mutex<WebSession>,
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A client message id: 17 digits like the official client's (ms timestamp + 4 random digits).
pub(crate) fn client_msg_id() -> String {
    use rand::RngExt;
    format!("{}{:04}", now_ms(), rand::rng().random_range(0..10_000u32))
}

/// The HTTP client for the web protocol: no redirects followed, the web (or desktop) user
/// agent, the process's shared TLS configuration.
fn build_http(desktop_mode: bool) -> Result<reqwest::Client, WechatError> {
    let user_agent = if desktop_mode {
        desktop::USER_AGENT_DESKTOP
    } else {
        desktop::USER_AGENT_WEB
    };
    reqwest::Client::builder()
        // newloginpage answers 301 in desktop mode and must not be followed (spec §3.4).
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(user_agent)
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(60))
        // A clone shares the process's one root store (src/tls.rs).
        .use_preconfigured_tls(crate::tls::client_config().as_ref().clone())
        .build()
        .map_err(|e| WechatError::Transport {
            endpoint: "client",
            source: e.without_url(),
        })
}

impl WebClient {
    pub fn new(settings: ClientSettings) -> Result<WebClient, WechatError> {
        let login = hosts::login_origin(&settings.login)?;
        let http = build_http(settings.desktop_mode)?;
        let session = WebSession {
            credentials: Credentials {
                device_id: new_device_id(),
                ..Credentials::default()
            },
            desktop_mode: settings.desktop_mode,
            ..WebSession::default()
        };
        Ok(WebClient {
            http: Mutex::new(http),
            settings: ClientSettings { login, ..settings },
            state: Mutex::new(session),
        })
    }

    /// A client for a saved session (resume).
    pub fn with_session(
        settings: ClientSettings,
        session: WebSession,
    ) -> Result<WebClient, WechatError> {
        let c = WebClient::new(settings)?;
        *c.lock() = session;
        Ok(c)
    }

    /// The HTTP client (a handle: cloning it is cheap and shares its connection pool).
    pub(crate) fn http(&self) -> reqwest::Client {
        self.http.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Starts over with a new HTTP client, so the pooled connections of the old one close once
    /// the requests still using them end. Called after the login has read the contact lists:
    /// hyper grows a connection's read buffer to fit the largest answer it has read (up to
    /// ~400 KiB) and never shrinks it, and the main host's connection stays alive for the
    /// whole session (every webwxsync uses it), so without this an idle worker would keep a
    /// buffer sized for its contact list. The cost is one new connection to each host.
    pub fn renew_connections(&self) -> Result<(), WechatError> {
        let fresh = build_http(self.settings.desktop_mode)?;
        *self.http.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, WebSession> {
        // A panic while holding this lock cannot leave the session half-written in a way that
        // matters more than losing the worker, so a poisoned lock is simply taken over.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of the session state (for saving or inspection).
    pub fn session(&self) -> WebSession {
        self.lock().clone()
    }

    pub fn settings(&self) -> &ClientSettings {
        &self.settings
    }

    pub fn self_user_name(&self) -> String {
        self.lock().self_user_name.clone()
    }

    pub fn uin(&self) -> String {
        self.lock().credentials.uin.clone()
    }

    fn cookie_header(&self) -> Option<HeaderValue> {
        self.lock().cookies.header_value()
    }

    fn store_cookies(&self, headers: &HeaderMap) {
        self.lock().cookies.store_from_headers(headers);
    }

    pub(crate) fn origin(&self, which: Host, endpoint: &'static str) -> Result<Url, WechatError> {
        let s = self.lock();
        let o = match which {
            Host::Main => &s.main_origin,
            Host::File => &s.file_origin,
            Host::Webpush => &s.webpush_origin,
        };
        if o.is_empty() {
            return Err(WechatError::NotLoggedIn { endpoint });
        }
        Url::parse(o).map_err(|_| WechatError::NotLoggedIn { endpoint })
    }

    pub(crate) fn api(&self, which: Host, endpoint: &'static str) -> Result<Url, WechatError> {
        Ok(Hosts::api_url(&self.origin(which, endpoint)?, endpoint))
    }

    /// Sends a request with the session cookies, stores the cookies of the answer and returns
    /// status, headers and body text.
    pub(crate) async fn send(
        &self,
        endpoint: &'static str,
        req: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<(u16, HeaderMap, String), WechatError> {
        let mut req = req.timeout(timeout);
        if let Some(c) = self.cookie_header() {
            req = req.header(header::COOKIE, c);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| WechatError::transport(endpoint, e, timeout))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        self.store_cookies(&headers);
        let body = resp
            .text()
            .await
            .map_err(|e| WechatError::transport(endpoint, e, timeout))?;
        tracing::trace!(endpoint, status, len = body.len(), "answer");
        Ok((status, headers, body))
    }

    pub(crate) async fn get_text(
        &self,
        endpoint: &'static str,
        url: Url,
        timeout: Duration,
    ) -> Result<String, WechatError> {
        let (status, _, body) = self.send(endpoint, self.http().get(url), timeout).await?;
        if !(200..300).contains(&status) {
            return Err(WechatError::Status { endpoint, status });
        }
        Ok(body)
    }

    /// POSTs a JSON body to a main-host endpoint and checks `BaseResponse.Ret`.
    pub(crate) async fn post_json(
        &self,
        endpoint: &'static str,
        url: Url,
        body: Value,
    ) -> Result<Value, WechatError> {
        let text = self.post_for_text(endpoint, url, body).await?;
        let v = parse_json(endpoint, &text)?;
        check_ret(endpoint, &v)?;
        Ok(v)
    }

    /// POSTs a JSON body to a main-host endpoint; the answer's text, for a caller that reads
    /// (and checks) it itself.
    pub(crate) async fn post_for_text(
        &self,
        endpoint: &'static str,
        url: Url,
        body: Value,
    ) -> Result<String, WechatError> {
        let req = self
            .http()
            .post(url)
            .header(header::CONTENT_TYPE, "application/json;charset=UTF-8")
            .body(body.to_string());
        let (status, _, text) = self
            .send(endpoint, req, self.settings.request_timeout)
            .await?;
        if !(200..300).contains(&status) {
            return Err(WechatError::Status { endpoint, status });
        }
        Ok(text)
    }

    pub(crate) fn base_request(&self) -> Value {
        self.lock().credentials.base_request()
    }

    pub(crate) fn pass_ticket(&self) -> String {
        self.lock().credentials.pass_ticket.clone()
    }

    // ---- login -------------------------------------------------------------------------

    /// jslogin: a new login uuid (spec §3.1).
    pub async fn jslogin(&self) -> Result<String, WechatError> {
        const EP: &str = "jslogin";
        let mut url = self
            .settings
            .login
            .join("jslogin")
            .expect("static path joins");
        let redirect = if self.settings.desktop_mode {
            "https://wx.qq.com/cgi-bin/mmwebwx-bin/webwxnewloginpage?mod=desktop"
        } else {
            "https://wx.qq.com/cgi-bin/mmwebwx-bin/webwxnewloginpage"
        };
        url.query_pairs_mut()
            .append_pair("appid", desktop::APPID)
            .append_pair("redirect_uri", redirect)
            .append_pair("fun", "new")
            .append_pair("lang", "zh_CN")
            .append_pair("_", &now_ms().to_string());
        let body = self
            .get_text(EP, url, self.settings.request_timeout)
            .await?;
        let js = parse::parse_jslogin(&body).map_err(|source| WechatError::Parse {
            endpoint: EP,
            source,
        })?;
        if js.code != 200 {
            return Err(WechatError::Ret {
                endpoint: EP,
                ret: js.code,
                message: String::new(),
            });
        }
        js.uuid.ok_or(WechatError::Missing {
            endpoint: EP,
            what: "uuid",
        })
    }

    /// webwxpushloginurl (spec §3.20): asks the phone to confirm a login without a scan, using
    /// the saved session's cookies. Returns the uuid to long-poll with [`Self::poll_login`].
    pub async fn push_login(&self) -> Result<String, WechatError> {
        const EP: &str = "webwxpushloginurl";
        let uin = self.uin();
        if uin.is_empty() {
            return Err(WechatError::NotLoggedIn { endpoint: EP });
        }
        let mut url = self
            .settings
            .login
            .join("cgi-bin/mmwebwx-bin/webwxpushloginurl")
            .expect("static path joins");
        url.query_pairs_mut().append_pair("uin", &uin);
        if self.settings.desktop_mode {
            url.query_pairs_mut().append_pair("mod", "desktop");
        }
        let text = self
            .get_text(EP, url, self.settings.request_timeout)
            .await?;
        let v = parse_json(EP, &text)?;
        // `ret` is a string on the wire; accept a number too.
        let ret = v
            .get("ret")
            .and_then(json_i64)
            .ok_or(WechatError::Missing {
                endpoint: EP,
                what: "ret",
            })?;
        if ret != 0 {
            let message = v
                .get("msg")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .chars()
                .take(200)
                .collect();
            return Err(WechatError::Ret {
                endpoint: EP,
                ret,
                message,
            });
        }
        v.get("uuid")
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .ok_or(WechatError::Missing {
                endpoint: EP,
                what: "uuid",
            })
    }

    /// The text to encode in the QR code for `uuid`.
    pub fn qr_content(&self, uuid: &str) -> String {
        hosts::qr_content(&self.settings.login, uuid)
    }

    /// One login long poll (spec §3.3). A client-side timeout is the same as the server's 408.
    pub async fn poll_login(&self, uuid: &str, first: bool) -> Result<LoginPoll, WechatError> {
        const EP: &str = "login";
        let mut url = self
            .settings
            .login
            .join("cgi-bin/mmwebwx-bin/login")
            .expect("static path joins");
        let now = now_ms();
        url.query_pairs_mut()
            .append_pair("loginicon", "true")
            .append_pair("uuid", uuid)
            .append_pair("tip", if first { "1" } else { "0" })
            .append_pair("r", &(-(now / 1579)).to_string())
            .append_pair("_", &now.to_string());
        match self.get_text(EP, url, self.settings.longpoll_timeout).await {
            Ok(body) => parse::parse_login_poll(&body).map_err(|source| WechatError::Parse {
                endpoint: EP,
                source,
            }),
            Err(WechatError::Timeout { .. }) => Ok(LoginPoll::Waiting),
            Err(e) => Err(e),
        }
    }

    /// webwxnewloginpage: exchanges the confirmed ticket for credentials and derives the hosts.
    pub async fn new_login_page(&self, redirect_uri: &str) -> Result<(), WechatError> {
        const EP: &str = "webwxnewloginpage";
        let mut url = Url::parse(redirect_uri).map_err(|e| WechatError::Json {
            endpoint: "login",
            detail: format!("redirect_uri is not a URL: {e}"),
        })?;
        let derived = Hosts::derive(&self.settings.login, &url)?;
        if !url.query_pairs().any(|(k, _)| k == "fun") {
            url.query_pairs_mut().append_pair("fun", "new");
        }
        if !url.query_pairs().any(|(k, _)| k == "version") {
            url.query_pairs_mut().append_pair("version", "v2");
        }
        let mut req = self.http().get(url);
        if self.settings.desktop_mode {
            req = req
                .header("client-version", desktop::CLIENT_VERSION)
                .header("extspam", desktop::EXTSPAM)
                .header(header::REFERER, desktop::REFERER);
        }
        let (status, _, body) = self.send(EP, req, self.settings.request_timeout).await?;
        // 200 in normal mode, 301 (with or without Location) in desktop mode; both carry the XML.
        if !(200..300).contains(&status) && !(300..400).contains(&status) {
            return Err(WechatError::Status {
                endpoint: EP,
                status,
            });
        }
        let page = parse::parse_newloginpage(&body).map_err(|source| WechatError::Parse {
            endpoint: EP,
            source,
        })?;
        if page.ret != 0 {
            return Err(WechatError::LoginRefused {
                ret: page.ret,
                message: page.message.clone(),
            });
        }
        let mut s = self.lock();
        let cookie = |n: &str| s.cookies.get(n).map(str::to_owned);
        // Desktop-mode servers may put the credentials only in cookies (spec §3.4, IU).
        let uin = page
            .wxuin
            .clone()
            .filter(|v| !v.is_empty())
            .or_else(|| cookie("wxuin"));
        let sid = page
            .wxsid
            .clone()
            .filter(|v| !v.is_empty())
            .or_else(|| cookie("wxsid"));
        let (Some(uin), Some(sid)) = (uin, sid) else {
            return Err(WechatError::Missing {
                endpoint: EP,
                what: "wxuin/wxsid (neither in the body nor in cookies)",
            });
        };
        s.credentials.uin = uin;
        s.credentials.sid = sid;
        s.credentials.skey = page.skey.clone().unwrap_or_default();
        s.credentials.pass_ticket = page.pass_ticket.clone().unwrap_or_default();
        s.main_origin = derived.main.to_string();
        s.file_origin = derived.file.to_string();
        s.webpush_origin = derived.webpush.to_string();
        s.desktop_mode = self.settings.desktop_mode;
        Ok(())
    }

    // ---- after login -------------------------------------------------------------------

    /// webwxinit (spec §3.5). Updates SKey, SyncKey and the own UserName. A saved SyncKey is
    /// kept when `keep_sync_key` (resume), so nothing since the save is skipped.
    pub async fn init(&self, keep_sync_key: bool) -> Result<InitData, WechatError> {
        const EP: &str = "webwxinit";
        let mut url = self.api(Host::Main, EP)?;
        url.query_pairs_mut()
            .append_pair("r", &(-(now_ms() / 1579)).to_string())
            .append_pair("lang", "zh_CN")
            .append_pair("pass_ticket", &self.pass_ticket());
        let v = self
            .post_json(EP, url, json!({ "BaseRequest": self.base_request() }))
            .await?;
        let user: RawContact = field(EP, &v, "User")?;
        if user.user_name.is_empty() {
            return Err(WechatError::Missing {
                endpoint: EP,
                what: "User.UserName",
            });
        }
        let contacts: Vec<RawContact> = opt_list(EP, &v, "ContactList")?;
        let key = v
            .get("SyncKey")
            .and_then(SyncKey::from_json)
            .ok_or(WechatError::Missing {
                endpoint: EP,
                what: "SyncKey",
            })?;
        let mut s = self.lock();
        if let Some(sk) = v
            .get("SKey")
            .and_then(Value::as_str)
            .filter(|k| !k.is_empty())
        {
            s.credentials.skey = sk.to_owned();
        }
        if !keep_sync_key || s.sync_key.is_empty() {
            s.sync_key = key;
            s.sync_check_key = SyncKey::default();
        }
        s.self_user_name = user.user_name.clone();
        drop(s);
        let chat_set = v
            .get("ChatSet")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        Ok(InitData {
            user,
            contacts,
            chat_set,
        })
    }

    /// webwxstatusnotify Code 3 (inited), as every client does after init.
    pub async fn status_notify(&self) -> Result<(), WechatError> {
        const EP: &str = "webwxstatusnotify";
        let mut url = self.api(Host::Main, EP)?;
        url.query_pairs_mut()
            .append_pair("lang", "zh_CN")
            .append_pair("pass_ticket", &self.pass_ticket());
        let me = self.self_user_name();
        let body = json!({
            "BaseRequest": self.base_request(),
            "Code": 3,
            "FromUserName": me,
            "ToUserName": me,
            "ClientMsgId": now_ms(),
        });
        self.post_json(EP, url, body).await.map(|_| ())
    }

    /// The whole contact list, page by page (spec §3.7). Stops at `Seq == 0`, or when the
    /// server repeats a seq, or after a page bound, so a broken server cannot loop us forever.
    pub async fn get_contacts(&self) -> Result<Vec<RawContact>, WechatError> {
        const EP: &str = "webwxgetcontact";
        const MAX_PAGES: usize = 1000;
        let mut all = Vec::new();
        let mut seq = 0i64;
        for _ in 0..MAX_PAGES {
            let mut url = self.api(Host::Main, EP)?;
            let skey = self.lock().credentials.skey.clone();
            url.query_pairs_mut()
                .append_pair("lang", "zh_CN")
                .append_pair("pass_ticket", &self.pass_ticket())
                .append_pair("r", &now_ms().to_string())
                .append_pair("seq", &seq.to_string())
                .append_pair("skey", &skey);
            let text = self
                .get_text(EP, url, self.settings.request_timeout)
                .await?;
            let v = parse_json(EP, &text)?;
            check_ret(EP, &v)?;
            let page: Vec<RawContact> = opt_list(EP, &v, "MemberList")?;
            all.extend(page);
            let next = v.get("Seq").and_then(json_i64).unwrap_or(0);
            if next == 0 || next == seq {
                return Ok(all);
            }
            seq = next;
        }
        tracing::warn!(
            pages = MAX_PAGES,
            "webwxgetcontact kept paging; stopped at the bound"
        );
        Ok(all)
    }

    /// webwxbatchgetcontact for up to 50 entries (spec §3.8): `(UserName, EncryChatRoomId)`.
    pub async fn batch_get_contact(
        &self,
        items: &[(String, String)],
    ) -> Result<Vec<RawContact>, WechatError> {
        const EP: &str = "webwxbatchgetcontact";
        let mut url = self.api(Host::Main, EP)?;
        url.query_pairs_mut()
            .append_pair("type", "ex")
            .append_pair("r", &now_ms().to_string())
            .append_pair("lang", "zh_CN")
            .append_pair("pass_ticket", &self.pass_ticket());
        let list: Vec<Value> = items
            .iter()
            .map(|(u, e)| json!({"UserName": u, "EncryChatRoomId": e}))
            .collect();
        let body = json!({ "BaseRequest": self.base_request(), "Count": list.len(), "List": list });
        let v = self.post_json(EP, url, body).await?;
        opt_list(EP, &v, "ContactList")
    }

    /// synccheck long poll (spec §3.9). A client-side timeout reads as "nothing new".
    pub async fn sync_check(&self) -> Result<SyncCheck, WechatError> {
        const EP: &str = "synccheck";
        let mut url = self.api(Host::Webpush, EP)?;
        {
            let s = self.lock();
            let c = &s.credentials;
            url.query_pairs_mut()
                .append_pair("r", &now_ms().to_string())
                .append_pair("skey", &c.skey)
                .append_pair("sid", &c.sid)
                .append_pair("uin", &c.uin)
                .append_pair("deviceid", &c.device_id)
                .append_pair("synckey", &s.check_key().to_query())
                .append_pair("_", &now_ms().to_string());
        }
        match self.get_text(EP, url, self.settings.longpoll_timeout).await {
            Ok(body) => parse::parse_synccheck(&body).map_err(|source| WechatError::Parse {
                endpoint: EP,
                source,
            }),
            Err(WechatError::Timeout { .. }) => Ok(SyncCheck {
                retcode: 0,
                selector: 0,
            }),
            Err(e) => Err(e),
        }
    }

    /// webwxsync (spec §3.10): fetches what is new and advances the keys. The keys are updated
    /// in the session only by [`WebClient::commit_sync_keys`], so the caller can first make the
    /// data durable (DESIGN §3.3).
    pub async fn sync(&self) -> Result<(SyncData, PendingKeys), WechatError> {
        const EP: &str = "webwxsync";
        let mut url = self.api(Host::Main, EP)?;
        let (body, old_key) = {
            let s = self.lock();
            let c = &s.credentials;
            url.query_pairs_mut()
                .append_pair("sid", &c.sid)
                .append_pair("skey", &c.skey)
                .append_pair("lang", "zh_CN")
                .append_pair("pass_ticket", &c.pass_ticket);
            let body = json!({
                "BaseRequest": c.base_request(),
                "SyncKey": s.sync_key.to_json(),
                "rr": !(now_ms() / 1000),
            });
            (body, s.sync_key.clone())
        };
        let text = self.post_for_text(EP, url, body).await?;
        super::sync_answer::read(&text, &old_key)
    }

    /// Applies the keys of a webwxsync once its data is safe.
    pub fn commit_sync_keys(&self, keys: PendingKeys) {
        let mut s = self.lock();
        if let Some(k) = keys.sync_key {
            s.sync_key = k;
        }
        if let Some(k) = keys.sync_check_key {
            s.sync_check_key = k;
        }
        if let Some(k) = keys.skey {
            s.credentials.skey = k;
        }
    }

    /// webwxsendmsg: a text message (spec §3.11).
    pub async fn send_text(&self, to: &str, content: &str) -> Result<SentMessage, WechatError> {
        const EP: &str = "webwxsendmsg";
        let mut url = self.api(Host::Main, EP)?;
        url.query_pairs_mut()
            .append_pair("lang", "zh_CN")
            .append_pair("pass_ticket", &self.pass_ticket());
        let id = client_msg_id();
        let body = json!({
            "BaseRequest": self.base_request(),
            "Msg": {
                "Type": 1,
                "Content": content,
                "FromUserName": self.self_user_name(),
                "ToUserName": to,
                "LocalID": id,
                "ClientMsgId": id,
            },
            "Scene": 0,
        });
        let v = self.post_json(EP, url, body).await?;
        let msg_id = v
            .get("MsgID")
            .map(id_string)
            .filter(|s| !s.is_empty())
            .ok_or(WechatError::Missing {
                endpoint: EP,
                what: "MsgID",
            })?;
        Ok(SentMessage {
            msg_id,
            local_id: id,
        })
    }

    /// webwxlogout (spec §3.19). The answer is not needed: the session is over either way.
    pub async fn logout(&self) -> Result<(), WechatError> {
        const EP: &str = "webwxlogout";
        let mut url = self.api(Host::Main, EP)?;
        let skey = self.lock().credentials.skey.clone();
        url.query_pairs_mut()
            .append_pair("redirect", "1")
            .append_pair("type", "1")
            .append_pair("skey", &skey);
        let (status, _, _) = self
            .send(EP, self.http().get(url), self.settings.request_timeout)
            .await?;
        if status >= 400 {
            return Err(WechatError::Status {
                endpoint: EP,
                status,
            });
        }
        Ok(())
    }

    /// The cookie jar (read-only copy), e.g. for the webwx_data_ticket.
    pub fn cookies(&self) -> CookieJar {
        self.lock().cookies.clone()
    }
}

/// Keys from a webwxsync, applied later by [`WebClient::commit_sync_keys`].
#[derive(Debug, Default, PartialEq)]
#[must_use = "apply the keys with commit_sync_keys once the data is safe"]
pub struct PendingKeys {
    pub(super) sync_key: Option<SyncKey>,
    pub(super) sync_check_key: Option<SyncKey>,
    pub(super) skey: Option<String>,
}

/// Which of the session's hosts a request goes to.
#[derive(Clone, Copy)]
pub(crate) enum Host {
    Main,
    /// Uploads and file downloads (src/wechat/media.rs).
    File,
    Webpush,
}

pub(crate) fn parse_json(endpoint: &'static str, text: &str) -> Result<Value, WechatError> {
    let v: Value = serde_json::from_str(text).map_err(|e| WechatError::Json {
        endpoint,
        detail: e.to_string(),
    })?;
    if !v.is_object() {
        return Err(WechatError::Json {
            endpoint,
            detail: "expected a JSON object".into(),
        });
    }
    Ok(v)
}

pub(crate) fn check_ret(endpoint: &'static str, v: &Value) -> Result<(), WechatError> {
    check_base_response(endpoint, v.get("BaseResponse"))
}

/// [`check_ret`] for an answer's `BaseResponse` (`None`: the answer had none).
pub(crate) fn check_base_response(
    endpoint: &'static str,
    br: Option<&Value>,
) -> Result<(), WechatError> {
    let br = br.ok_or(WechatError::Missing {
        endpoint,
        what: "BaseResponse",
    })?;
    let ret = br
        .get("Ret")
        .and_then(json_i64)
        .ok_or(WechatError::Missing {
            endpoint,
            what: "BaseResponse.Ret",
        })?;
    if ret != 0 {
        let message = br
            .get("ErrMsg")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect();
        return Err(WechatError::Ret {
            endpoint,
            ret,
            message,
        });
    }
    Ok(())
}

fn field<T: serde::de::DeserializeOwned>(
    endpoint: &'static str,
    v: &Value,
    key: &'static str,
) -> Result<T, WechatError> {
    let f = v.get(key).ok_or(WechatError::Missing {
        endpoint,
        what: key,
    })?;
    T::deserialize(f).map_err(|e| WechatError::Json {
        endpoint,
        detail: format!("{key}: {e}"),
    })
}

/// A list field; absent or null reads as empty (some servers omit empty lists).
pub(crate) fn opt_list<T: serde::de::DeserializeOwned>(
    endpoint: &'static str,
    v: &Value,
    key: &'static str,
) -> Result<Vec<T>, WechatError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                T::deserialize(i).map_err(|e| WechatError::Json {
                    endpoint,
                    detail: format!("{key}: {e}"),
                })
            })
            .collect(),
        Some(_) => Err(WechatError::Json {
            endpoint,
            detail: format!("{key}: expected a list"),
        }),
    }
}

pub(crate) fn id_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ret_check_names_the_code() {
        let v = json!({"BaseResponse": {"Ret": 1101, "ErrMsg": ""}});
        let e = check_ret("webwxsync", &v).unwrap_err();
        assert_eq!(e.ret(), Some(1101));
        assert_eq!(e.to_string(), "webwxsync: server answered Ret 1101");
        assert!(check_ret("x", &json!({"BaseResponse": {"Ret": "0"}})).is_ok());
        assert!(matches!(
            check_ret("x", &json!({})),
            Err(WechatError::Missing { .. })
        ));
    }

    #[test]
    fn malformed_json_is_transient_error() {
        let e = parse_json("webwxinit", "{\"BaseResp").unwrap_err();
        assert!(e.is_transient());
        assert!(parse_json("webwxinit", "[1]").is_err());
    }

    #[test]
    fn lists_absent_null_or_wrong() {
        let v = json!({"A": null, "C": 3});
        assert!(opt_list::<Value>("x", &v, "A").unwrap().is_empty());
        assert!(opt_list::<Value>("x", &v, "B").unwrap().is_empty());
        assert!(opt_list::<Value>("x", &v, "C").is_err());
    }

    #[tokio::test]
    async fn renewed_client_closes_the_pooled_connections_and_opens_new_ones() {
        let server = crate::testutil::http_server("/", "ok", usize::MAX).await;
        let url = server.url.clone();
        let client = WebClient::new(ClientSettings {
            login: url.clone(),
            desktop_mode: false,
            request_timeout: Duration::from_secs(30),
            longpoll_timeout: Duration::from_secs(30),
        })
        .unwrap();
        let t = Duration::from_secs(30);
        for _ in 0..2 {
            assert_eq!(client.get_text("test", url.clone(), t).await.unwrap(), "ok");
        }
        assert_eq!(server.accepted(), 1, "kept alive and reused");
        client.renew_connections().unwrap();
        // The old pool is gone with the old client: its idle connection closes.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while server.closed() == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the old connection was never closed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(client.get_text("test", url.clone(), t).await.unwrap(), "ok");
        assert_eq!(server.accepted(), 2, "a new connection after renewal");
    }

    #[test]
    fn client_msg_ids_are_17_digits() {
        let id = client_msg_id();
        assert_eq!(id.len(), 17, "{id}");
        assert!(id.chars().all(|c| c.is_ascii_digit()));
    }
}
