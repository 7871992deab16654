//! Integration tests of the control-plane client against a small control plane written here
//! (axum on 127.0.0.1:0) that records every request and answers from a script.
//!
//! Expected wire bytes, the login signature and the HMACs are written or computed in this file
//! independently of the library, so a serialisation or signing bug cannot cancel out.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Multipart, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use url::Url;
use wxagent::config::{ControlConfig, Secret};
use wxagent::control::reports::{LoginData, LogoutData, PullTaskData, Report};
use wxagent::control::signature::verify_request;
use wxagent::control::{ControlClient, ControlError, PostOptions, RetryPolicy, Task, action};

/// How the test server answers one request.
enum Reply {
    Status(u16, &'static str),
    Json(Value),
    /// Never answers (for timeouts and cancellation).
    Hang,
}

struct Recorded {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Default)]
struct ServerState {
    requests: Mutex<Vec<Recorded>>,
    replies: Mutex<VecDeque<Reply>>,
    arrived: Notify,
}

struct TestServer {
    base: Url,
    state: Arc<ServerState>,
}

async fn handle(
    State(state): State<Arc<ServerState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.requests.lock().unwrap().push(Recorded {
        path: uri.path().to_owned(),
        headers,
        body,
    });
    state.arrived.notify_waiters();
    let reply = state.replies.lock().unwrap().pop_front();
    match reply {
        None => (StatusCode::OK, "{}").into_response(),
        Some(Reply::Status(code, body)) => {
            (StatusCode::from_u16(code).unwrap(), body).into_response()
        }
        Some(Reply::Json(v)) => (
            StatusCode::OK,
            [("content-type", "application/json")],
            v.to_string(),
        )
            .into_response(),
        Some(Reply::Hang) => {
            std::future::pending::<()>().await;
            unreachable!()
        }
    }
}

impl TestServer {
    async fn start() -> TestServer {
        let state = Arc::new(ServerState::default());
        let app = Router::new().fallback(handle).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        TestServer {
            base: Url::parse(&format!("http://{addr}/")).unwrap(),
            state,
        }
    }

    fn reply(&self, reply: Reply) -> &Self {
        self.state.replies.lock().unwrap().push_back(reply);
        self
    }

    fn config(&self) -> ControlConfig {
        ControlConfig {
            callback_url: Some(self.base.join("cb").unwrap()),
            upload_url: Some(self.base.join("upload").unwrap()),
            appid: "app1".into(),
            secret_key: None,
            poll_interval: Duration::from_secs(5),
            timeout: Duration::from_secs(20),
            sign_requests: false,
            ws_window: 64,
            http_batch: 64,
        }
    }

    fn client(&self) -> ControlClient {
        ControlClient::new(&self.config(), "host_1".into()).unwrap()
    }

    fn count(&self) -> usize {
        self.state.requests.lock().unwrap().len()
    }

    /// The `i`-th request: path, headers, body.
    fn request(&self, i: usize) -> (String, HeaderMap, Bytes) {
        let reqs = self.state.requests.lock().unwrap();
        let r = &reqs[i];
        (r.path.clone(), r.headers.clone(), r.body.clone())
    }

    async fn wait_for_requests(&self, n: usize) {
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let notified = self.state.arrived.notified();
                if self.count() >= n {
                    return;
                }
                notified.await;
            }
        })
        .await
        .expect("requests arrived in time");
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap())
}

fn fast_retries(attempts: usize) -> RetryPolicy {
    RetryPolicy::attempts(attempts).with_delays(Duration::from_millis(1), Duration::from_millis(5))
}

fn login_data(nonce: &str) -> LoginData {
    LoginData {
        nickname: "Fang".into(),
        wx_alias: "fq".into(),
        head_img: "http://img/1".into(),
        client_version: "0.1.0".into(),
        nonce: nonce.into(),
        local_ip: "10.0.0.5".into(),
        machine_id: "host_1".into(),
        qr_session_id: Some("qr-9".into()),
    }
}

fn hmac_hex(secret: &str, message: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

/// Checks the B.6 headers of a recorded request with an HMAC computed here.
fn assert_signed(secret: &str, headers: &HeaderMap, body: &[u8]) {
    let ts = header(headers, "x-wxagent-timestamp").expect("timestamp header");
    let sig = header(headers, "x-wxagent-signature").expect("signature header");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let ts_n: u64 = ts.parse().expect("unix seconds");
    assert!(now.abs_diff(ts_n) < 600, "timestamp {ts} vs now {now}");
    let mut message = format!("{ts}.").into_bytes();
    message.extend_from_slice(body);
    assert_eq!(sig, format!("sha256={}", hmac_hex(secret, &message)));
    assert!(verify_request(secret, ts, sig, body));
}

async fn multipart_fields(
    content_type: &str,
    body: Bytes,
) -> Vec<(String, Option<String>, Option<String>, Vec<u8>)> {
    let req = axum::http::Request::builder()
        .header("content-type", content_type)
        .body(Body::from(body))
        .unwrap();
    let mut mp = Multipart::from_request(req, &())
        .await
        .expect("a multipart body");
    let mut fields = Vec::new();
    while let Some(field) = mp.next_field().await.expect("a well-formed part") {
        let name = field.name().unwrap_or_default().to_owned();
        let file_name = field.file_name().map(str::to_owned);
        let ct = field.content_type().map(str::to_owned);
        let data = field.bytes().await.unwrap().to_vec();
        fields.push((name, file_name, ct, data));
    }
    fields
}

#[tokio::test]
async fn envelope_bytes_are_exactly_the_spec() {
    let server = TestServer::start().await;
    let client = server.client();
    let ack = client
        .post(
            action::REPORT_NEW_MSG,
            "176666155",
            json!({"msg": {"msg_id": "1"}}),
            PostOptions::default(),
        )
        .await
        .unwrap();
    assert!(ack.parsed);
    let (path, headers, body) = server.request(0);
    assert_eq!(path, "/cb");
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    assert_eq!(
        std::str::from_utf8(&body).unwrap(),
        r#"{"action":"report_new_msg","appid":"app1","wxid":"176666155","data":{"msg":{"msg_id":"1"}}}"#
    );
    for absent in [
        "x-wxagent-timestamp",
        "x-wxagent-signature",
        "x-wxagent-event-id",
        "cookie",
    ] {
        assert!(headers.get(absent).is_none(), "{absent} must not be sent");
    }

    let opts = PostOptions {
        client_session: Some("cs-1".into()),
        ..PostOptions::default()
    };
    client
        .post(action::PULL_TASK, "176666155", json!({}), opts)
        .await
        .unwrap();
    let (_, _, body) = server.request(1);
    assert_eq!(
        std::str::from_utf8(&body).unwrap(),
        r#"{"action":"pull_task","appid":"app1","wxid":"176666155","client_session":"cs-1","data":{}}"#
    );

    client
        .report_task_result("176666155", "t-7", false, "no web endpoint")
        .await
        .unwrap();
    let (_, _, body) = server.request(2);
    let sent: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        sent,
        json!({"action":"report_task_result","appid":"app1","wxid":"176666155",
               "data":{"task_id":"t-7","task_result":0,"error_reason":"no web endpoint"}})
    );
}

#[tokio::test]
async fn lenient_acks() {
    let server = TestServer::start().await;
    let client = server.client();
    server
        .reply(Reply::Json(json!({})))
        .reply(Reply::Json(
            json!({"error_code":"0","ack_type":"report_new_msg_ack",
            "data":{"reply_task_list":[{"task_type":"8","task_dict":{"room_wxid":"@@r"}}]}}),
        ))
        .reply(Reply::Status(200, ""))
        .reply(Reply::Status(200, "OK"))
        .reply(Reply::Json(json!({"data": null})));

    let ack = client
        .report(action::REPORT_NEW_MSG, "w", json!({}), None)
        .await
        .unwrap();
    assert!(ack.parsed && ack.is_ok() && ack.reply_tasks().is_empty());

    let ack = client
        .report(action::REPORT_NEW_MSG, "w", json!({}), None)
        .await
        .unwrap();
    let tasks: Vec<Task> = ack
        .reply_tasks()
        .iter()
        .map(|t| t.parse().unwrap())
        .collect();
    assert_eq!(
        tasks,
        [Task::LeaveRoom {
            room_wxid: "@@r".into()
        }]
    );

    for _ in 0..2 {
        let ack = client
            .report(action::REPORT_CONTACT, "w", json!({}), None)
            .await
            .unwrap();
        assert!(
            !ack.parsed,
            "empty or non-JSON 2xx is 'no tasks', not delivered"
        );
        assert!(ack.reply_tasks().is_empty());
    }
    let ack = client
        .report(action::REPORT_CONTACT, "w", json!({}), None)
        .await
        .unwrap();
    assert!(ack.parsed && ack.reply_tasks().is_empty());
}

#[tokio::test]
async fn pull_task_and_logout() {
    let server = TestServer::start().await;
    let client = server.client();
    server
        .reply(Reply::Json(
            json!({"error_code":0,"ack_type":"pull_task_ack","data":{"task_id":"t1",
            "task_data":{"task_type":200,"task_dict":{"qrcode_session_id":"qs-1"}}}}),
        ))
        .reply(Reply::Json(json!({"ack_type":"pull_task_ack","data":{}})))
        .reply(Reply::Json(
            json!({"ack_type":"logout_ack","data":{"exit_wehub":"1","exit_wechat":1}}),
        ));

    let agent = PullTaskData::agent("host", 2, 10);
    let (id, task) = client
        .pull_task("", agent.to_data())
        .await
        .unwrap()
        .expect("a task");
    assert_eq!(id, "t1");
    assert_eq!(
        task.parse().unwrap(),
        Task::StartQrSession {
            qr_session_id: "qs-1".into()
        }
    );
    let (_, _, body) = server.request(0);
    assert_eq!(
        std::str::from_utf8(&body).unwrap(),
        r#"{"action":"pull_task","appid":"app1","wxid":"","data":{"capacity":10,"machine_id":"host","role":"agent","sessions":2}}"#
    );

    assert!(client.pull_task("w", json!({})).await.unwrap().is_none());

    let logout = LogoutData {
        client_version: "0.1.0".into(),
        machine_id: "host_1".into(),
        reason: "shutdown".into(),
        retcode: None,
    };
    let flags = client.logout("w", &logout).await.unwrap();
    assert!(flags.exit_wehub && flags.exit_wechat);
    let (_, _, body) = server.request(2);
    let sent: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        sent["data"],
        json!({"client_version":"0.1.0","machine_id":"host_1","reason":"shutdown"})
    );
}

/// A client with the vendor test secret `112233`.
fn secret_client(server: &TestServer) -> ControlClient {
    let mut cfg = server.config();
    cfg.secret_key = Some(Secret::new("112233"));
    ControlClient::new(&cfg, "host_1".into()).unwrap()
}

#[tokio::test]
async fn login_with_a_good_signature() {
    let server = TestServer::start().await;
    let client = secret_client(&server);
    // Vendor vector: md5("fangqing_hust#helloworld#112233"), sent upper-case to test case-folding.
    server.reply(Reply::Json(json!({"error_code":0,"error_reason":"","ack_type":"login_ack",
        "data":{"signature":"4B8D798F8B34A7BD2CD3B4CBFA309D9C","option":{"flag_report_contact":"3"},
                "extension_protocol":{"type":"websocket","param":{"ws_url":"ws://127.0.0.1:1/ws","heartbeat_interval":20}}}})));
    let ack = client
        .login("fangqing_hust", &login_data("helloworld"))
        .await
        .unwrap();
    assert_eq!(ack.flag_report_contact, 3);
    let ws = ack.websocket.expect("websocket offered");
    assert_eq!(
        (ws.ws_url.as_str(), ws.heartbeat_interval),
        ("ws://127.0.0.1:1/ws", Duration::from_secs(20))
    );

    let (_, _, body) = server.request(0);
    assert_eq!(
        std::str::from_utf8(&body).unwrap(),
        r#"{"action":"login","appid":"app1","wxid":"fangqing_hust","data":{"client_version":"0.1.0","head_img":"http://img/1","local_ip":"10.0.0.5","machine_id":"host_1","nickname":"Fang","nonce":"helloworld","qr_session_id":"qr-9","wx_alias":"fq"}}"#
    );
}

#[tokio::test]
async fn login_signature_missing_or_wrong_is_rejected() {
    let server = TestServer::start().await;
    let client = secret_client(&server);
    server
        .reply(Reply::Json(json!({"error_code":0,"ack_type":"login_ack","data":{}})))
        .reply(Reply::Json(json!({"error_code":0,"ack_type":"login_ack","data":{"signature":"4b8d798f8b34a7bd2cd3b4cbfa309d9d"}})))
        // Right signature for another nonce.
        .reply(Reply::Json(json!({"error_code":0,"ack_type":"login_ack","data":{"signature":"4b8d798f8b34a7bd2cd3b4cbfa309d9c"}})));
    let missing = client
        .login("fangqing_hust", &login_data("helloworld"))
        .await
        .unwrap_err();
    assert!(
        matches!(missing, ControlError::SignatureFailed { .. }),
        "{missing}"
    );
    let wrong = client
        .login("fangqing_hust", &login_data("helloworld"))
        .await
        .unwrap_err();
    assert!(
        matches!(wrong, ControlError::SignatureFailed { .. }),
        "{wrong}"
    );
    let other_nonce = client
        .login("fangqing_hust", &login_data("another"))
        .await
        .unwrap_err();
    assert!(
        matches!(other_nonce, ControlError::SignatureFailed { .. }),
        "{other_nonce}"
    );
    for e in [missing, wrong, other_nonce] {
        assert!(!e.is_retryable());
        let shown = format!("{e} {e:?}");
        assert!(
            !shown.contains("112233") && !shown.contains("4b8d798f"),
            "{shown}"
        );
    }
}

#[tokio::test]
async fn login_refused_and_unparsed() {
    let server = TestServer::start().await;
    let client = secret_client(&server);
    server
        .reply(Reply::Json(
            json!({"error_code":"1001","error_reason":"account banned","ack_type":"login_ack"}),
        ))
        .reply(Reply::Status(200, ""))
        .reply(Reply::Status(200, "<html>ok</html>"));
    match client
        .login("fangqing_hust", &login_data("helloworld"))
        .await
    {
        Err(ControlError::LoginRefused { code, reason }) => {
            assert_eq!((code, reason.as_str()), (1001, "account banned"))
        }
        other => panic!("{other:?}"),
    }
    for _ in 0..2 {
        let e = client
            .login("fangqing_hust", &login_data("helloworld"))
            .await
            .unwrap_err();
        assert!(matches!(e, ControlError::Json { .. }), "{e}");
    }
}

#[tokio::test]
async fn login_without_secret_needs_no_signature() {
    let server = TestServer::start().await;
    let client = server.client();
    server.reply(Reply::Json(json!({"ack_type":"login_ack"})));
    let ack = client.login("176666155", &login_data("n")).await.unwrap();
    assert_eq!(ack.flag_report_contact, 7);
    assert!(ack.websocket.is_none());
}

#[tokio::test]
async fn retries_server_errors_then_succeeds() {
    let server = TestServer::start().await;
    let client = server.client();
    server
        .reply(Reply::Status(500, "boom"))
        .reply(Reply::Status(503, ""))
        .reply(Reply::Status(429, ""))
        .reply(Reply::Json(
            json!({"data":{"reply_task_list":[{"task_type":8,"task_dict":{"room_wxid":"@@x"}}]}}),
        ));
    let ack = client
        .post_with_retry(
            action::REPORT_NEW_MSG,
            "w",
            json!({"msg":{}}),
            PostOptions::event("ev-9"),
            &fast_retries(5),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(ack.reply_tasks().len(), 1);
    assert_eq!(server.count(), 4);
    let bodies: Vec<Bytes> = (0..4).map(|i| server.request(i).2).collect();
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "every attempt sends the same envelope"
    );
    assert!((0..4).all(|i| header(&server.request(i).1, "x-wxagent-event-id") == Some("ev-9")));
}

#[tokio::test]
async fn gives_up_after_the_attempts() {
    let server = TestServer::start().await;
    let client = server.client();
    for _ in 0..3 {
        server.reply(Reply::Status(502, ""));
    }
    let e = client
        .post_with_retry(
            action::PULL_TASK,
            "w",
            json!({}),
            PostOptions::default(),
            &fast_retries(3),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, ControlError::Status { status, .. } if status.as_u16() == 502),
        "{e}"
    );
    assert_eq!(server.count(), 3);
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let server = TestServer::start().await;
    let client = server.client();
    server.reply(Reply::Status(400, "bad"));
    let e = client
        .post_with_retry(
            action::REPORT_NEW_MSG,
            "w",
            json!({}),
            PostOptions::default(),
            &fast_retries(5),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, ControlError::Status { status, .. } if status.as_u16() == 400),
        "{e}"
    );
    assert!(!e.is_retryable());
    assert_eq!(server.count(), 1);

    // A redirect is not followed (a signed request must reach the configured URL).
    server.reply(Reply::Status(302, ""));
    let e = client
        .report(action::REPORT_NEW_MSG, "w", json!({}), None)
        .await
        .unwrap_err();
    assert!(
        matches!(e, ControlError::Status { status, .. } if status.as_u16() == 302),
        "{e}"
    );
    assert_eq!(server.count(), 2);
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let server = TestServer::start().await;
    let mut cfg = server.config();
    cfg.timeout = Duration::from_millis(300);
    let client = ControlClient::new(&cfg, "host_1".into()).unwrap();
    server.reply(Reply::Hang);
    let started = std::time::Instant::now();
    let e = client
        .report(action::REPORT_NEW_MSG, "w", json!({}), None)
        .await
        .unwrap_err();
    assert!(matches!(e, ControlError::Timeout { .. }), "{e}");
    assert!(e.is_retryable());
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[tokio::test]
async fn cancellation_ends_a_hanging_request() {
    let server = TestServer::start().await;
    let client = server.client();
    server.reply(Reply::Hang);
    let cancel = CancellationToken::new();
    let call = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            client
                .post_with_retry(
                    action::PULL_TASK,
                    "w",
                    json!({}),
                    PostOptions::default(),
                    &fast_retries(5),
                    &cancel,
                )
                .await
        })
    };
    server.wait_for_requests(1).await;
    cancel.cancel();
    let e = call.await.unwrap().unwrap_err();
    assert!(matches!(e, ControlError::Cancelled { .. }), "{e}");
}

#[tokio::test]
async fn connection_refused_is_retryable_and_names_no_url() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let cfg = ControlConfig {
        callback_url: Some(Url::parse(&format!("http://{addr}/cb?token=hunter2")).unwrap()),
        upload_url: None,
        appid: "a".into(),
        secret_key: Some(Secret::new("topsecret")),
        poll_interval: Duration::from_secs(5),
        timeout: Duration::from_secs(5),
        sign_requests: true,
        ws_window: 64,
        http_batch: 64,
    };
    let client = ControlClient::new(&cfg, "m".into()).unwrap();
    let e = client
        .report(action::REPORT_NEW_MSG, "w", json!({}), None)
        .await
        .unwrap_err();
    assert!(matches!(e, ControlError::Http { .. }), "{e}");
    assert!(e.is_retryable());
    let mut shown = format!("{e:?}");
    let mut source: Option<&dyn std::error::Error> = Some(&e);
    while let Some(s) = source {
        shown.push_str(&s.to_string());
        source = s.source();
    }
    assert!(
        !shown.contains("hunter2") && !shown.contains("topsecret"),
        "{shown}"
    );

    let e = client.upload_qr("q", vec![1], "m").await.unwrap_err();
    assert!(
        matches!(
            e,
            ControlError::NotConfigured {
                what: "control.upload_url"
            }
        ),
        "{e}"
    );
}

#[tokio::test]
async fn event_id_header_on_reports() {
    let server = TestServer::start().await;
    let client = server.client();
    client
        .report(
            action::REPORT_NEW_MSG,
            "w",
            json!({"msg":{}}),
            Some("sess1-000042"),
        )
        .await
        .unwrap();
    let (_, headers, _) = server.request(0);
    assert_eq!(header(&headers, "x-wxagent-event-id"), Some("sess1-000042"));
}

#[tokio::test]
async fn signed_requests_verify() {
    let server = TestServer::start().await;
    let mut cfg = server.config();
    cfg.secret_key = Some(Secret::new("s3cret"));
    cfg.sign_requests = true;
    let client = ControlClient::new(&cfg, "host_1".into()).unwrap();
    client
        .report(
            action::REPORT_NEW_MSG,
            "w",
            json!({"msg":{"msg":"héllo"}}),
            Some("e1"),
        )
        .await
        .unwrap();
    let (_, headers, body) = server.request(0);
    assert_signed("s3cret", &headers, &body);
    assert!(!verify_request(
        "other",
        header(&headers, "x-wxagent-timestamp").unwrap(),
        header(&headers, "x-wxagent-signature").unwrap(),
        &body
    ));

    // Errors in signing mode show neither the secret nor the signature.
    server.reply(Reply::Status(500, ""));
    let e = client
        .report(action::REPORT_NEW_MSG, "w", json!({}), None)
        .await
        .unwrap_err();
    let sig = header(&server.request(1).1, "x-wxagent-signature")
        .unwrap()
        .to_owned();
    let shown = format!("{e} {e:?}");
    assert!(
        !shown.contains("s3cret") && !shown.contains(&sig[7..]),
        "{shown}"
    );
}

#[tokio::test]
async fn qr_upload_parts_and_signature() {
    let server = TestServer::start().await;
    let mut cfg = server.config();
    cfg.secret_key = Some(Secret::new("s3cret"));
    cfg.sign_requests = true;
    let client = ControlClient::new(&cfg, "host_1".into()).unwrap();
    let png = b"\x89PNG\r\n\x1a\n--not-a-boundary\r\n\x00\xff".to_vec();
    server.reply(Reply::Status(200, "whatever"));
    client
        .upload_qr("qs-1", png.clone(), "host_1")
        .await
        .unwrap();
    server.reply(Reply::Json(json!({"error_code": 5})));
    client
        .upload_qr("qs-1", png.clone(), "host_1")
        .await
        .expect("any JSON answer is accepted");

    let (path, headers, body) = server.request(0);
    assert_eq!(path, "/upload");
    assert_signed("s3cret", &headers, &body);
    let ct = header(&headers, "content-type").unwrap();
    assert!(ct.starts_with("multipart/form-data; boundary="), "{ct}");
    let fields = multipart_fields(ct, body).await;
    let names: Vec<&str> = fields.iter().map(|f| f.0.as_str()).collect();
    assert_eq!(names, ["qr_session_id", "file", "machine_id"]);
    assert_eq!(fields[0].3, b"qs-1");
    assert_eq!(fields[1].1.as_deref(), Some("qs-1.png"));
    assert_eq!(fields[1].2.as_deref(), Some("image/png"));
    assert_eq!(fields[1].3, png);
    assert_eq!(fields[2].3, b"host_1");

    server.reply(Reply::Status(503, ""));
    let e = client.upload_qr("qs-1", png, "host_1").await.unwrap_err();
    assert!(
        matches!(e, ControlError::Status { .. }) && e.is_retryable(),
        "{e}"
    );
}

#[tokio::test]
async fn file_upload_reads_the_flat_ack() {
    let server = TestServer::start().await;
    let client = server.client();
    server
        .reply(Reply::Json(json!({"error_code":0,"error_reason":"","ack_type":"upload_file_ack","file_index":"f-1"})))
        .reply(Reply::Json(json!({"error_code":"3","error_reason":"too large","ack_type":"upload_file_ack"})))
        .reply(Reply::Status(200, "done"));
    let audio = vec![0xffu8, 0xfb, 0x90, 0x00];
    let ack = client
        .upload_file("f-1", "voice.mp3", "audio/mpeg", audio.clone())
        .await
        .unwrap();
    assert_eq!(ack.file_index.as_deref(), Some("f-1"));
    assert_eq!(ack.ack_type, "upload_file_ack");

    let (_, headers, body) = server.request(0);
    assert!(headers.get("x-wxagent-signature").is_none());
    let fields = multipart_fields(header(&headers, "content-type").unwrap(), body).await;
    assert_eq!(fields.len(), 2);
    assert_eq!(
        (fields[0].0.as_str(), fields[0].3.as_slice()),
        ("file_index", &b"f-1"[..])
    );
    assert_eq!(fields[1].0, "file");
    assert_eq!(fields[1].1.as_deref(), Some("voice.mp3"));
    assert_eq!(fields[1].2.as_deref(), Some("audio/mpeg"));
    assert_eq!(fields[1].3, audio);

    match client
        .upload_file("f-2", "a.mp4", "video/mp4", vec![1])
        .await
    {
        Err(ControlError::Upload { code, reason, .. }) => {
            assert_eq!((code, reason.as_str()), (3, "too large"))
        }
        other => panic!("{other:?}"),
    }
    let e = client
        .upload_file("f-3", "a.jpg", "image/jpeg", vec![1])
        .await
        .unwrap_err();
    assert!(matches!(e, ControlError::Json { .. }), "{e}");
}
