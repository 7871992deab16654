//! The durable report spool delivered to a control plane written here (axum on 127.0.0.1:0)
//! that records every request's `X-Wxagent-Event-Id`, action and data and answers from a
//! script: in-order delivery, outages, unusable answers, client errors, restarts after a crash,
//! and `drained()`. An ignored test measures append costs (`cargo test --test spool --
//! --ignored --nocapture`).

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use url::Url;
use wxagent::config::ControlConfig;
use wxagent::control::ControlClient;
use wxagent::control::delivery::{self, DeliveryHandle, DeliveryPolicy};
use wxagent::control::spool::{Spool, SpoolLimits};

const SESSION: &str = "qr-7";
const WAIT: Duration = Duration::from_secs(20);

const LIMITS: SpoolLimits = SpoolLimits {
    max_bytes: 64 * 1024 * 1024,
    max_events: 100_000,
};

/// How the server answers one request.
enum Reply {
    Status(u16),
    /// HTTP 200 with this body, as is.
    Body(&'static str),
}

#[derive(Debug, Clone)]
struct Seen {
    event_id: String,
    action: String,
    data: Value,
    /// The HTTP status answered.
    status: u16,
}

#[derive(Default)]
struct ServerState {
    seen: Mutex<Vec<Seen>>,
    script: Mutex<VecDeque<Reply>>,
    /// Answer 503 to everything while set.
    down: AtomicBool,
    arrived: Notify,
}

async fn handle(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let envelope: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let reply = if state.down.load(Ordering::SeqCst) {
        Reply::Status(503)
    } else {
        state
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Reply::Body(
                r#"{"error_code":0,"error_reason":"","ack_type":"common_ack","data":{}}"#,
            ))
    };
    let status = match reply {
        Reply::Status(code) => code,
        Reply::Body(_) => 200,
    };
    state.seen.lock().unwrap().push(Seen {
        event_id: headers
            .get("x-wxagent-event-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned(),
        action: envelope["action"].as_str().unwrap_or("").to_owned(),
        data: envelope["data"].clone(),
        status,
    });
    state.arrived.notify_waiters();
    match reply {
        Reply::Status(code) => (StatusCode::from_u16(code).unwrap(), "unavailable").into_response(),
        Reply::Body(body) => (StatusCode::OK, body).into_response(),
    }
}

struct Server {
    url: Url,
    state: Arc<ServerState>,
}

impl Server {
    async fn start() -> Server {
        let state = Arc::new(ServerState::default());
        let app = Router::new().fallback(handle).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Server {
            url: Url::parse(&format!("http://{addr}/wehub/callback")).unwrap(),
            state,
        }
    }

    fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.script.lock().unwrap().extend(replies);
    }

    fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    fn client(&self) -> ControlClient {
        client_for(&self.url)
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Event ids of the requests answered with 200, in arrival order.
    fn accepted_ids(&self) -> Vec<String> {
        self.seen()
            .into_iter()
            .filter(|s| s.status == 200)
            .map(|s| s.event_id)
            .collect()
    }

    /// Waits until `cond` holds for what the server has seen.
    async fn wait_until(&self, what: &str, cond: impl Fn(&[Seen]) -> bool) {
        let done = tokio::time::timeout(WAIT, async {
            loop {
                let arrived = self.state.arrived.notified();
                if cond(&self.seen()) {
                    return;
                }
                arrived.await;
            }
        })
        .await;
        assert!(
            done.is_ok(),
            "timed out waiting until {what}: {:#?}",
            self.seen()
        );
    }
}

/// A control-plane client posting to `url`.
fn client_for(url: &Url) -> ControlClient {
    let cfg = ControlConfig {
        callback_url: Some(url.clone()),
        upload_url: None,
        appid: "app1".into(),
        secret_key: None,
        poll_interval: Duration::from_secs(5),
        timeout: Duration::from_secs(10),
        sign_requests: false,
        ws_window: 64,
        http_batch: 64,
    };
    ControlClient::new(&cfg, "host_1".into()).unwrap()
}

/// Millisecond delays so outages and retries play out quickly.
fn quick() -> DeliveryPolicy {
    DeliveryPolicy {
        min_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        slow_min_delay: Duration::from_millis(20),
        slow_max_delay: Duration::from_millis(50),
        ack_queue: 1000,
        ..DeliveryPolicy::default()
    }
}

struct Running {
    spool: Arc<Mutex<Spool>>,
    wake: Arc<Notify>,
    cancel: CancellationToken,
    handle: DeliveryHandle,
    acks: tokio::sync::mpsc::Receiver<wxagent::control::Ack>,
}

fn open(dir: &Path) -> Spool {
    Spool::open(dir, SESSION, LIMITS).unwrap()
}

fn run(spool: Spool, server: &Server) -> Running {
    run_on(spool, server.client(), quick())
}

fn run_on(spool: Spool, client: ControlClient, policy: DeliveryPolicy) -> Running {
    let spool = Arc::new(Mutex::new(spool));
    let wake = Arc::new(Notify::new());
    let cancel = CancellationToken::new();
    let (handle, acks) =
        delivery::start_with(spool.clone(), client, wake.clone(), cancel.clone(), policy);
    Running {
        spool,
        wake,
        cancel,
        handle,
        acks,
    }
}

impl Running {
    fn append(&self, n: u64) -> String {
        let id = self
            .spool
            .lock()
            .unwrap()
            .append("report_new_msg", "1001", &msg(n))
            .unwrap()
            .event_id;
        self.wake.notify_one();
        id
    }

    /// Stops delivery and gives the spool back (as a worker shutting down would).
    async fn stop(self) -> Spool {
        self.cancel.cancel();
        self.handle.join().await;
        Arc::try_unwrap(self.spool)
            .expect("delivery released the spool")
            .into_inner()
            .unwrap()
    }
}

fn msg(n: u64) -> Value {
    json!({"msg": [{"msg_id": format!("m{n}"), "msg_type": 1, "msg": format!("hello {n}")}]})
}

fn ids(range: std::ops::RangeInclusive<u64>) -> Vec<String> {
    range.map(|i| format!("{SESSION}:{i}")).collect()
}

#[tokio::test]
async fn delivers_in_order_and_wakes_on_append() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut r = run(open(dir.path()), &server);
    assert!(r.handle.drained(WAIT).await);

    assert_eq!(r.append(1), "qr-7:1");
    let batch: Vec<_> = (2..=10)
        .map(|n| ("report_new_msg".to_owned(), "1001".to_owned(), msg(n)))
        .collect();
    r.spool.lock().unwrap().append_batch(&batch).unwrap();
    r.wake.notify_one();
    for n in 11..=20 {
        r.append(n);
    }
    assert!(r.handle.drained(WAIT).await);

    let seen = server.seen();
    assert_eq!(
        seen.iter().map(|s| s.event_id.clone()).collect::<Vec<_>>(),
        ids(1..=20)
    );
    for (i, s) in seen.iter().enumerate() {
        assert_eq!(s.action, "report_new_msg");
        assert_eq!(s.data, msg(i as u64 + 1));
    }
    for _ in 0..20 {
        let ack = tokio::time::timeout(WAIT, r.acks.recv())
            .await
            .expect("an ack per delivered report")
            .expect("the channel is open");
        assert!(ack.parsed && ack.is_ok());
    }
    let stats = r.handle.stats();
    assert_eq!((stats.delivered, stats.retries), (20, 0));
    assert_eq!(stats.last_error, None);
    let spool = r.stop().await;
    assert_eq!(spool.stats().acked_total, 20);
}

#[tokio::test]
async fn an_outage_delays_but_never_loses_or_reorders() {
    let server = Server::start().await;
    server.script((0..6).map(|_| Reply::Status(503)));
    let dir = tempfile::tempdir().unwrap();
    let mut spool = open(dir.path());
    for n in 1..=5 {
        spool.append("report_new_msg", "1001", &msg(n)).unwrap();
    }
    let r = run(spool, &server);
    assert!(r.handle.drained(WAIT).await);

    let seen: Vec<_> = server.seen().into_iter().map(|s| s.event_id).collect();
    // Six refusals of the first report, all with its one event id, then each once in order.
    let mut expected = vec!["qr-7:1".to_owned(); 6];
    expected.extend(ids(1..=5));
    assert_eq!(seen, expected);
    assert_eq!(server.accepted_ids(), ids(1..=5));
    let stats = r.handle.stats();
    assert_eq!((stats.delivered, stats.retries), (5, 6));
    assert_eq!(stats.consecutive_failures, 0);
    let last = stats.last_error.unwrap();
    assert!(last.contains("503"), "{last}");
    r.stop().await;
}

#[tokio::test]
async fn a_non_json_answer_is_not_an_acknowledgement() {
    let server = Server::start().await;
    server.script([Reply::Body("OK"), Reply::Body(""), Reply::Body("[1, 2]")]);
    let dir = tempfile::tempdir().unwrap();
    let r = run(open(dir.path()), &server);
    r.append(1);
    assert!(r.handle.drained(WAIT).await);
    let seen = server.seen();
    assert_eq!(seen.len(), 4, "{seen:#?}");
    assert!(seen.iter().all(|s| s.event_id == "qr-7:1"), "{seen:#?}");
    let stats = r.handle.stats();
    assert_eq!((stats.delivered, stats.retries), (1, 3));
    let last = stats.last_error.unwrap();
    assert!(last.contains("not a JSON object"), "{last}");
    r.stop().await;
}

#[tokio::test]
async fn client_errors_are_retried_not_dropped() {
    let server = Server::start().await;
    server.script([Reply::Status(400), Reply::Status(404)]);
    let dir = tempfile::tempdir().unwrap();
    let r = run(open(dir.path()), &server);
    r.append(1);
    r.append(2);
    assert!(r.handle.drained(WAIT).await);
    let seen: Vec<_> = server.seen().into_iter().map(|s| s.event_id).collect();
    assert_eq!(seen, ["qr-7:1", "qr-7:1", "qr-7:1", "qr-7:2"]);
    let stats = r.handle.stats();
    assert_eq!((stats.delivered, stats.retries), (2, 2));
    let last = stats.last_error.unwrap();
    assert!(
        last.contains("404") && last.contains("slow schedule"),
        "{last}"
    );
    r.stop().await;
}

#[tokio::test]
async fn drained_reports_a_timeout_while_the_server_is_down() {
    let server = Server::start().await;
    server.set_down(true);
    let dir = tempfile::tempdir().unwrap();
    let r = run(open(dir.path()), &server);
    r.append(1);
    assert!(!r.handle.drained(Duration::from_millis(300)).await);
    server.wait_until("two attempts", |s| s.len() >= 2).await;
    assert_eq!(r.spool.lock().unwrap().len(), 1);
    assert!(r.handle.stats().consecutive_failures >= 1);
    server.set_down(false);
    assert!(r.handle.drained(WAIT).await);
    assert_eq!(server.accepted_ids(), ids(1..=1));
    r.stop().await;
}

/// Appends `garbage` to the newest segment file, as a write torn by a crash leaves it.
fn tear_the_tail(dir: &Path, garbage: &[u8]) {
    let newest = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .max()
        .expect("a segment file");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(newest)
        .unwrap();
    f.write_all(garbage).unwrap();
}

#[tokio::test]
async fn a_crash_loses_nothing_and_event_ids_survive_restarts() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();

    // First life: 10 delivered, then the control plane goes away while 20 more are appended.
    let r = run(open(dir.path()), &server);
    for n in 1..=10 {
        r.append(n);
    }
    assert!(r.handle.drained(WAIT).await);
    server.set_down(true);
    for n in 11..=30 {
        r.append(n);
    }
    server
        .wait_until("report 11 was refused three times", |s| {
            s.iter().filter(|x| x.event_id == "qr-7:11").count() >= 3
        })
        .await;
    // The crash: no acks, no clean shutdown of the files, a half-written record at the end.
    let spool = r.stop().await;
    assert_eq!(spool.len(), 20);
    drop(spool);
    tear_the_tail(dir.path(), b"wr\x01\0\x05\0\0\0half a rec");

    // Second life.
    server.set_down(false);
    let spool = open(dir.path());
    assert_eq!(spool.len(), 20);
    assert_eq!(spool.recovery().pending, 20);
    assert!(spool.recovery().torn_bytes > 0);
    assert_eq!(spool.front().unwrap().unwrap().event_id, "qr-7:11");
    let r = run(spool, &server);
    for n in 31..=35 {
        assert_eq!(r.append(n), format!("qr-7:{n}"));
    }
    assert!(r.handle.drained(WAIT).await);
    r.stop().await;

    // Every report reached the server once, in order, under the id it was first sent with.
    assert_eq!(server.accepted_ids(), ids(1..=35));
    let refused: Vec<_> = server
        .seen()
        .into_iter()
        .filter(|s| s.status != 200)
        .map(|s| s.event_id)
        .collect();
    assert!(refused.len() >= 3);
    assert!(refused.iter().all(|id| id == "qr-7:11"), "{refused:?}");
    for s in server.seen().iter().filter(|s| s.status == 200) {
        let n: u64 = s.event_id.rsplit(':').next().unwrap().parse().unwrap();
        assert_eq!(s.data, msg(n));
    }

    // A third life starts empty and keeps counting.
    let mut spool = open(dir.path());
    assert!(spool.is_empty());
    assert_eq!(
        spool
            .append("report_new_msg", "1001", &msg(36))
            .unwrap()
            .event_id,
        "qr-7:36"
    );
}

/// A batch of reports shaped like one webwxsync's worth of messages.
fn batch(n: usize) -> Vec<(String, String, Value)> {
    (0..n)
        .map(|i| {
            let data = json!({"msg": [{
                "msg_id": format!("{}", 4_000_000_000_000_000_000u64 + i as u64),
                "msg_type": 1,
                "room_wxid": "@@0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c",
                "wxid_from": "@1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d",
                "wxid_to": "1001",
                "atUserList": [],
                "msg": "a message of ordinary length, about this long, with some text in it",
                "msg_source": "web",
                "timestamp": 1_700_000_000 + i,
            }]});
            ("report_new_msg".to_owned(), "1001".to_owned(), data)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Report batches over HTTP (wxagent's extension), against the reference control plane.

/// The reference control plane on 127.0.0.1:0 with `mode`, and a client of its test API.
struct Reference {
    base: String,
    http: reqwest::Client,
    stop: CancellationToken,
}

impl Reference {
    async fn start(mode: Value) -> Reference {
        use wxagent::sim::wehub::{WehubState, serve};
        let (addr, _task, stop) = serve("127.0.0.1:0".parse().unwrap(), WehubState::new())
            .await
            .expect("the reference control plane starts");
        let r = Reference {
            base: format!("http://{addr}"),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            stop,
        };
        r.mode(mode).await;
        r
    }

    async fn mode(&self, patch: Value) {
        let answer = self
            .http
            .post(format!("{}/__cp/mode", self.base))
            .json(&patch)
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success(), "mode {patch}");
    }

    fn client(&self) -> ControlClient {
        client_for(&Url::parse(&format!("{}/wehub/callback", self.base)).unwrap())
    }

    /// (event id, batch size, HTTP status) of every `report_new_msg` the ledger recorded, in
    /// arrival order (a batch size of 0: the report came alone).
    async fn reports(&self) -> Vec<(String, u64, u64)> {
        let ledger: Value = self
            .http
            .get(format!("{}/__cp/requests?action=report_new_msg", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ledger["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["event_id"].as_str().unwrap_or("").to_owned(),
                    r["batch"].as_u64().unwrap_or(0),
                    r["status"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    }
}

impl Running {
    /// Appends reports 1..=n in one write, so delivery finds them all waiting at once.
    fn append_all(&self, n: u64) {
        let items: Vec<_> = (1..=n)
            .map(|i| ("report_new_msg".to_owned(), "1001".to_owned(), msg(i)))
            .collect();
        self.spool.lock().unwrap().append_batch(&items).unwrap();
        self.wake.notify_one();
    }
}

/// Delivers `n` waiting reports with `policy` to a control plane offering `offer` (None: not
/// told of any); returns the ledger and how many answers the worker got.
async fn deliver_waiting(
    n: u64,
    offer: Option<usize>,
    policy: DeliveryPolicy,
) -> (Vec<(String, u64, u64)>, usize) {
    let cp = Reference::start(json!({"report_batch": 64})).await;
    let dir = tempfile::tempdir().unwrap();
    let mut r = run_on(open(dir.path()), cp.client(), policy);
    r.handle.batch_over_http(offer);
    r.append_all(n);
    assert!(r.handle.drained(WAIT).await);
    assert_eq!(r.handle.stats().delivered, n);
    let mut answers = 0;
    while r.acks.try_recv().is_ok() {
        answers += 1;
    }
    let spool = r.stop().await;
    assert!(spool.is_empty());
    let ledger = cp.reports().await;
    cp.stop.cancel();
    (ledger, answers)
}

/// With an offer, reports already waiting go out together, in spool order, as many per post
/// as the offer allows; the last one left goes alone as a plain post. The worker gets one
/// answer per post.
#[tokio::test]
async fn waiting_reports_go_out_in_batches_of_the_offer() {
    let (ledger, answers) = deliver_waiting(10, Some(4), quick()).await;
    let expected: Vec<(String, u64, u64)> = ids(1..=10)
        .into_iter()
        .zip([4, 4, 4, 4, 4, 4, 4, 4, 2, 2])
        .map(|(id, batch)| (id, batch, 200))
        .collect();
    assert_eq!(ledger, expected);
    assert_eq!(answers, 3, "one answer per post");
}

/// `[control] http_batch` caps what the server offers.
#[tokio::test]
async fn http_batch_caps_the_offer() {
    let policy = DeliveryPolicy {
        http_batch: 3,
        ..quick()
    };
    let (ledger, answers) = deliver_waiting(10, Some(64), policy).await;
    let sizes: Vec<u64> = ledger.iter().map(|r| r.1).collect();
    assert_eq!(sizes, vec![3, 3, 3, 3, 3, 3, 3, 3, 3, 0]);
    assert_eq!(answers, 4);
    let order: Vec<String> = ledger.into_iter().map(|r| r.0).collect();
    assert_eq!(order, ids(1..=10));
}

/// Without an offer (a stock WeHub server), and with `http_batch = 1`, every report goes
/// alone, one post each.
#[tokio::test]
async fn without_an_offer_each_report_goes_alone() {
    for (offer, policy) in [
        (None, quick()),
        (
            Some(64),
            DeliveryPolicy {
                http_batch: 1,
                ..quick()
            },
        ),
    ] {
        let (ledger, answers) = deliver_waiting(6, offer, policy).await;
        let expected: Vec<(String, u64, u64)> =
            ids(1..=6).into_iter().map(|id| (id, 0, 200)).collect();
        assert_eq!(ledger, expected, "offer {offer:?}");
        assert_eq!(answers, 6);
    }
}

/// A batch the control plane does not take (it is down) is sent again whole once it is back:
/// nothing lost, nothing out of order, nothing taken twice.
#[tokio::test]
async fn a_failed_batch_is_sent_again_whole() {
    let cp = Reference::start(json!({"report_batch": 8, "down": true})).await;
    let dir = tempfile::tempdir().unwrap();
    let r = run_on(open(dir.path()), cp.client(), quick());
    r.handle.batch_over_http(Some(8));
    r.append_all(20);
    let deadline = Instant::now() + WAIT;
    while r.handle.stats().retries < 2 {
        assert!(Instant::now() < deadline, "no failed attempt");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        r.handle
            .stats()
            .last_error
            .is_some_and(|e| e.contains("(8 reports in one post)"))
    );
    cp.mode(json!({"down": false})).await;
    assert!(r.handle.drained(WAIT).await);
    let accepted: Vec<String> = cp
        .reports()
        .await
        .into_iter()
        .filter(|r| r.2 == 200)
        .map(|r| r.0)
        .collect();
    assert_eq!(accepted, ids(1..=20));
    let spool = r.stop().await;
    assert_eq!(spool.stats().acked_total, 20);
    cp.stop.cancel();
}

/// Append costs on the disk holding the temp directory (each sync is a real fdatasync).
#[test]
#[ignore = "a benchmark: run with --ignored --nocapture"]
fn bench_append_costs() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(
        dir.path(),
        SESSION,
        SpoolLimits {
            max_bytes: 1 << 30,
            max_events: 10_000_000,
        },
    )
    .unwrap();
    let items = batch(100);
    let record = {
        let before = spool.bytes();
        spool.append_batch(&items[..1]).unwrap();
        spool.bytes() - before
    };

    let rounds = 200;
    let started = Instant::now();
    for _ in 0..rounds {
        spool.append_batch(&items).unwrap();
    }
    let batched = started.elapsed() / (rounds * items.len() as u32);

    let singles = 1000;
    let started = Instant::now();
    for (action, wxid, data) in items.iter().cycle().take(singles) {
        spool.append(action, wxid, data).unwrap();
    }
    let single = started.elapsed() / singles as u32;

    let acks = 1000;
    let started = Instant::now();
    for _ in 0..acks {
        let id = spool.front().unwrap().unwrap().event_id;
        spool.ack(&id).unwrap();
    }
    let front_ack = started.elapsed() / acks;

    println!("record size: {record} bytes");
    println!("append_batch of 100: {batched:?} per entry");
    println!("append (one sync each): {single:?} per entry");
    println!("front + ack (one sync each): {front_ack:?} per entry");
}
