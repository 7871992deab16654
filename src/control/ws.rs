//! WebSocket mode (spec A.8): when `login_ack` offers `extension_protocol.type = "websocket"`,
//! one [`WsLink`] per logged-in account keeps a socket to `ws_url` open, carries the session's
//! reports as text frames, receives tasks the server pushes, and sends heartbeats.
//!
//! How it fits the rest:
//! - **The spool stays the source of truth.** The delivery task ([`crate::control::delivery`])
//!   removes a report only when its answer arrived. While the link is open it sends reports as
//!   frames ([`WsSender::request`], [`WsSender::submit`]) instead of HTTP posts; otherwise over
//!   HTTP. A report whose answer never came (socket dropped, timeout) stays at the front and is
//!   sent again, with everything after it, on whichever transport is up then (at-least-once;
//!   the server dedupes by event id, as over HTTP).
//! - **Sending ahead.** Once the server has echoed an `event_id` on a connection
//!   ([`WsSender::pipelining`]), answers can be matched by id, so the delivery task keeps up to
//!   `ws_window` frames in flight instead of waiting a round trip per report. Order is safe
//!   because one socket delivers frames in the order they were written and the link writes them
//!   in the order they were submitted. A frame submitted for a connection that has since closed
//!   is never written on the next one: there it would overtake the resent reports before it.
//!   Until an echo (a new connection starts without one), and for servers that never echo, the
//!   link writes the next frame only after the previous one was answered.
//! - **Matching answers to frames.** Each report frame is the usual envelope plus a top-level
//!   `event_id` (the spool's `<session>:<seq>`, the same key HTTP sends as
//!   `X-Wxagent-Event-Id`); the reference control plane echoes it in the answer frame. A frame
//!   echoing the id of a frame in flight is its answer. For a server that echoes nothing, the
//!   first id-less `common_ack` (or other non-task, non-heartbeat ack) after a report frame is
//!   taken as its answer — in order, since only one report is then in flight; such a server
//!   must not push an id-less `common_ack` while a report is unanswered, or that push would be
//!   taken for the answer. Once a server has echoed an id on a connection, id-less frames are always
//!   pushes; until then no heartbeat is sent while a report is unanswered, so a heartbeat's
//!   answer cannot be taken for a report's.
//! - **Pushed tasks.** A `pull_task_ack` frame carries one task with a `task_id` (a
//!   `report_task_result` follows, through the spool); any other frame that is not an answer
//!   is a push whose `reply_task_list` runs without results (A.5). Both go to the session's task
//!   executor at once. The `reply_task_list` of an answer goes back with the answer to the
//!   delivery task, which hands it on like an HTTP ack's.
//! - **Heartbeats.** `{"action":"heartbeat","appid","wxid","data":{}}` right after connecting
//!   (the server learns which account the socket is for) and then every `heartbeat_interval`.
//!   Answers (`heartbeat_ack`, or frames whose action is spelt `atcion`) only show liveness: a
//!   server that has answered heartbeats and then sends nothing for three intervals (at least
//!   the request timeout) is taken as gone, and the socket is reopened.
//! - **HTTP whenever the socket is not open.** If the upgrade is refused or the socket cannot
//!   be opened, or drops, reports and `pull_task` polling go over HTTP at once, and the link
//!   keeps trying to reopen the socket with jittered backoff (0.5 s doubling to 60 s; reset
//!   once a connection stayed up for a heartbeat interval). When it opens, reports move back to
//!   it and polling pauses. `login`, `logout` and uploads always use HTTP: `login` is what
//!   offers the socket, `logout` ends it and its answer decides whether the worker exits, and
//!   uploads are multipart.
//! - **Address policy.** `ws_url` must be `ws://` or `wss://` (`http://`/`https://` are read
//!   as those) with a host, like the callback URL (http or https, LAN allowed). With
//!   `sign_requests` on, plain `ws://` is accepted only for loopback hosts; see signing.
//! - **Signing (B.6).** Frames are not signed one by one: the upgrade request is. It is a GET
//!   without a body, so its `X-Wxagent-Signature` covers `timestamp + "." + <path and query of
//!   ws_url>`. Everything after the handshake travels on that one authenticated connection,
//!   and because signing clients only use `wss://` (TLS) off loopback, nobody else can inject or
//!   alter frames on it — what per-request HMACs give plain HTTP posts. A per-frame HMAC would
//!   need a canonical form of the JSON on both sides, which stock WeHub frames do not have.
//! - **TLS.** `wss://` uses rustls with the system's root certificates, like the HTTP client.

use crate::backoff::Backoff;
use crate::control::client::ControlClient;
use crate::control::envelope::{Ack, RawTask, WebSocketExtension, action};
use crate::control::signature::{SIGNATURE_HEADER, TIMESTAMP_HEADER};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use url::{Host, Url};

/// Frames larger than this are refused (an ack is a few kilobytes).
const MAX_FRAME: usize = 8 * 1024 * 1024;
/// Read buffer and write batch of a worker's socket.
const WS_BUFFER: usize = 8 * 1024;

/// Why the socket could not be used. Messages never contain the URL (its query may carry a
/// token) or a signature.
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    /// `ws_url` breaks the address policy; the session stays on HTTP.
    #[error("websocket url refused: {reason}")]
    Url { reason: String },
    /// The upgrade failed: refused (HTTP status), unreachable, TLS.
    #[error("websocket connect failed")]
    Connect {
        #[source]
        source: tungstenite::Error,
    },
    #[error("websocket connect took longer than {after:?}")]
    ConnectTimeout { after: Duration },
    /// No socket is open right now.
    #[error("the websocket is not open")]
    NotOpen,
    /// The socket closed or broke before the answer came.
    #[error("the websocket closed before the answer: {detail}")]
    Closed { detail: String },
    #[error("{action}: no answer on the websocket within {after:?}")]
    Timeout { action: String, after: Duration },
}

/// Where the link stands. The delivery task and the `pull_task` poller look at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// Opening the socket (the first time, or again after a failure).
    Connecting { attempt: u32 },
    /// The socket is open; reports go over it and polling pauses.
    Open { connection: u32 },
    /// Not open; HTTP is used until a retry after `retry_in` succeeds.
    Down { error: String, retry_in: Duration },
    /// The session stopped the link.
    Stopped,
}

/// Reconnect timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsPolicy {
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
}

impl Default for WsPolicy {
    /// 0.5 s doubling (with jitter) up to 60 s.
    fn default() -> Self {
        WsPolicy {
            reconnect_min: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(60),
        }
    }
}

/// A task that arrived over the socket: `(task_id, task)`, with an id only for a
/// `pull_task_ack` (then a `report_task_result` is due). The same shape the `pull_task` poller
/// hands to the executor.
pub type PushedTask = (Option<String>, RawTask);

/// Most report frames a link lets wait for their answers at once (the largest
/// `[control] ws_window`).
pub const MAX_WINDOW: usize = 1024;

/// One report frame waiting for its turn and its answer.
struct Outbound {
    action: String,
    event_id: String,
    text: String,
    /// The connection the sender saw open: a frame queued for one connection never goes out
    /// on the next, where it could overtake the resent reports before it.
    connection: u32,
    reply: oneshot::Sender<Result<Ack, WsError>>,
}

/// The sending side of a link, for the delivery task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct WsSender {
    requests: mpsc::Sender<Outbound>,
    state: watch::Receiver<LinkState>,
    /// The last connection on which the server echoed an `event_id` (0: none yet).
    echoed: Arc<AtomicU32>,
    timeout: Duration,
    control: ControlClient,
}

/// The answer to a frame sent by [`WsSender::submit`], to be awaited later.
#[derive(Debug)]
pub struct PendingAnswer {
    action: String,
    reply: oneshot::Receiver<Result<Ack, WsError>>,
    deadline: Instant,
    timeout: Duration,
}

impl PendingAnswer {
    /// Waits for the answer, at most the control-plane timeout after the frame was queued.
    pub async fn answer(self) -> Result<Ack, WsError> {
        match tokio::time::timeout_at(self.deadline, self.reply).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(WsError::Closed {
                detail: "the link stopped".to_owned(),
            }),
            Err(_) => Err(WsError::Timeout {
                action: self.action,
                after: self.timeout,
            }),
        }
    }
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("action", &self.action)
            .field("event_id", &self.event_id)
            .finish_non_exhaustive()
    }
}

impl WsSender {
    pub fn is_open(&self) -> bool {
        self.open_connection().is_some()
    }

    fn open_connection(&self) -> Option<u32> {
        match *self.state.borrow() {
            LinkState::Open { connection } => Some(connection),
            _ => None,
        }
    }

    /// The open connection, if its server has echoed an `event_id` on it: then answers are
    /// matched by id, not by order, and frames may be sent ahead of their answers. `None`:
    /// one report in flight at a time.
    pub fn pipelining(&self) -> Option<u32> {
        self.open_connection()
            .filter(|&c| self.echoed.load(Ordering::Acquire) == c)
    }

    /// Sends one report as a frame and waits for its answer (bounded by the control-plane
    /// timeout). [`WsError::NotOpen`] at once when the socket is not open: use HTTP.
    pub async fn request(
        &self,
        act: &str,
        wxid: &str,
        data: Value,
        event_id: &str,
    ) -> Result<Ack, WsError> {
        self.submit(act, wxid, data, event_id).await?.answer().await
    }

    /// Queues one report frame and returns at once with its answer to come. Frames go out in
    /// the order they were submitted, all on the connection open now; one submitted for a
    /// connection that has since closed is answered with an error, never sent on the next.
    /// The link sends the next frame before the previous one is answered only while
    /// [`pipelining`](Self::pipelining) (the caller decides how many to submit).
    pub async fn submit(
        &self,
        act: &str,
        wxid: &str,
        data: Value,
        event_id: &str,
    ) -> Result<PendingAnswer, WsError> {
        let Some(connection) = self.open_connection() else {
            return Err(WsError::NotOpen);
        };
        let mut envelope = self.control.envelope(act, wxid, data);
        envelope.event_id = Some(event_id.to_owned());
        // Serialised JSON is UTF-8; the lossy path is only a guard.
        let text = String::from_utf8(envelope.to_body())
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        tracing::trace!(action = act, frame = %text, "control-plane frame");
        let (tx, rx) = oneshot::channel();
        let outbound = Outbound {
            action: act.to_owned(),
            event_id: event_id.to_owned(),
            text,
            connection,
            reply: tx,
        };
        let deadline = Instant::now() + self.timeout;
        match tokio::time::timeout_at(deadline, self.requests.send(outbound)).await {
            Ok(Ok(())) => Ok(PendingAnswer {
                action: act.to_owned(),
                reply: rx,
                deadline,
                timeout: self.timeout,
            }),
            Ok(Err(_)) => Err(WsError::NotOpen),
            Err(_) => Err(WsError::Timeout {
                action: act.to_owned(),
                after: self.timeout,
            }),
        }
    }
}

/// The running link of one account; stops with its cancellation token.
#[derive(Debug)]
pub struct WsLink {
    sender: WsSender,
    task: JoinHandle<()>,
}

impl WsLink {
    /// Checks `ext.ws_url` against the address policy and starts connecting. Pushed tasks go
    /// to `tasks`. An error means the URL was refused: stay on HTTP.
    pub fn start(
        control: ControlClient,
        ext: &WebSocketExtension,
        wxid: String,
        tasks: mpsc::Sender<PushedTask>,
        cancel: CancellationToken,
        policy: WsPolicy,
    ) -> Result<WsLink, WsError> {
        let url = ws_url(&ext.ws_url, control.signs_requests())?;
        let (state_tx, state_rx) = watch::channel(LinkState::Connecting { attempt: 1 });
        // Room for a whole window: the delivery task bounds what it submits.
        let (req_tx, req_rx) = mpsc::channel(MAX_WINDOW);
        let echoed = Arc::new(AtomicU32::new(0));
        let sender = WsSender {
            requests: req_tx,
            state: state_rx,
            echoed: echoed.clone(),
            timeout: control.timeout(),
            control: control.clone(),
        };
        let runner = Runner {
            control,
            url,
            heartbeat: ext.heartbeat_interval.max(Duration::from_secs(1)),
            wxid,
            tasks,
            state: state_tx,
            echoed,
            cancel,
            policy,
        };
        let task = tokio::spawn(runner.run(req_rx).instrument(tracing::Span::current()));
        Ok(WsLink { sender, task })
    }

    pub fn sender(&self) -> WsSender {
        self.sender.clone()
    }

    /// Changes of [`LinkState`] (the `pull_task` poller pauses while open).
    pub fn state(&self) -> watch::Receiver<LinkState> {
        self.sender.state.clone()
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// Checks `raw` against the address policy (see the module doc); returns the URL to open.
pub fn ws_url(raw: &str, signing: bool) -> Result<Url, WsError> {
    let refuse = |reason: &str| WsError::Url {
        reason: reason.to_owned(),
    };
    let mut url = Url::parse(raw.trim()).map_err(|e| WsError::Url {
        reason: format!("not a URL ({e})"),
    })?;
    let scheme = match url.scheme() {
        "ws" | "http" => "ws",
        "wss" | "https" => "wss",
        _ => return Err(refuse("must be a ws:// or wss:// URL")),
    };
    if url.scheme() != scheme {
        url.set_scheme(scheme)
            .map_err(|()| refuse("cannot be read as a ws:// or wss:// URL"))?;
    }
    let loopback = match url.host() {
        None => return Err(refuse("has no host")),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
    };
    if signing && scheme == "ws" && !loopback {
        return Err(refuse(
            "plain ws:// is accepted only for loopback hosts while sign_requests is on (frames are covered by the signed handshake only over TLS)",
        ));
    }
    Ok(url)
}

/// The path and query of `url`: the signed text of the upgrade request.
pub fn handshake_target(url: &Url) -> String {
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Runner {
    control: ControlClient,
    url: Url,
    heartbeat: Duration,
    wxid: String,
    tasks: mpsc::Sender<PushedTask>,
    state: watch::Sender<LinkState>,
    echoed: Arc<AtomicU32>,
    cancel: CancellationToken,
    policy: WsPolicy,
}

impl Runner {
    async fn run(self, mut requests: mpsc::Receiver<Outbound>) {
        let mut backoff = Backoff::new(self.policy.reconnect_min, self.policy.reconnect_max);
        let mut attempt: u32 = 0;
        let mut connections: u32 = 0;
        // One WARN per outage; the retries of a refused or unreachable socket log at DEBUG.
        let mut warned = false;
        loop {
            attempt += 1;
            self.state.send_replace(LinkState::Connecting { attempt });
            let opened = tokio::select! {
                biased;
                () = self.cancel.cancelled() => break,
                r = self.connect() => r,
            };
            let error = match opened {
                Ok(socket) => {
                    connections += 1;
                    attempt = 0;
                    tracing::info!(
                        connection = connections,
                        "control-plane websocket open; reports go over it"
                    );
                    self.state.send_replace(LinkState::Open {
                        connection: connections,
                    });
                    let since = Instant::now();
                    let why = self.serve(socket, connections, &mut requests).await;
                    if self.cancel.is_cancelled() {
                        break;
                    }
                    if since.elapsed() >= self.heartbeat {
                        backoff.reset();
                    }
                    tracing::warn!(error = %why, "control-plane websocket lost; using HTTP until it reopens");
                    warned = true;
                    why
                }
                Err(e) => {
                    let why = crate::control::error::chain(&e);
                    if warned {
                        tracing::debug!(attempt, error = %why, "control-plane websocket still cannot be opened");
                    } else {
                        tracing::warn!(error = %why, "control-plane websocket cannot be opened; using HTTP until it can");
                        warned = true;
                    }
                    why
                }
            };
            let retry_in = backoff.next_delay();
            self.state.send_replace(LinkState::Down { error, retry_in });
            // A report that slipped in as the socket went down is answered at once, so the
            // delivery task retries it (over HTTP) without waiting for its timeout.
            while let Ok(stale) = requests.try_recv() {
                let _ = stale.reply.send(Err(WsError::NotOpen));
            }
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => break,
                () = tokio::time::sleep(retry_in) => {}
            }
        }
        self.state.send_replace(LinkState::Stopped);
        tracing::debug!("control-plane websocket link stopped");
    }

    async fn connect(&self) -> Result<Socket, WsError> {
        let mut request = self
            .url
            .as_str()
            .into_client_request()
            .map_err(|source| WsError::Connect { source })?;
        if let Some(headers) = self.control.sign(handshake_target(&self.url).as_bytes()) {
            let h = request.headers_mut();
            for (name, value) in [
                (TIMESTAMP_HEADER, headers.timestamp),
                (SIGNATURE_HEADER, headers.signature),
            ] {
                if let Ok(value) = HeaderValue::from_str(&value) {
                    h.insert(name, value);
                }
            }
        }
        // Small buffers: hundreds of workers each hold a socket whose frames are a few KiB
        // (the defaults are 128 KiB each way). Frames are flushed in runs anyway.
        let config = WebSocketConfig::default()
            .read_buffer_size(WS_BUFFER)
            .write_buffer_size(WS_BUFFER)
            .max_message_size(Some(MAX_FRAME))
            .max_frame_size(Some(MAX_FRAME));
        let after = self.control.timeout().min(Duration::from_secs(10));
        let connect =
            tokio_tungstenite::connect_async_tls_with_config(request, Some(config), true, None);
        match tokio::time::timeout(after, connect).await {
            Ok(Ok((socket, _response))) => Ok(socket),
            Ok(Err(source)) => Err(WsError::Connect { source }),
            Err(_) => Err(WsError::ConnectTimeout { after }),
        }
    }

    fn heartbeat_frame(&self) -> Message {
        let envelope = self.control.envelope(
            action::HEARTBEAT,
            &self.wxid,
            Value::Object(Default::default()),
        );
        Message::text(String::from_utf8_lossy(&envelope.to_body()).into_owned())
    }

    /// Runs one open socket (connection number `connection`) until it fails or the link is
    /// cancelled; returns why it ended.
    async fn serve(
        &self,
        socket: Socket,
        connection: u32,
        requests: &mut mpsc::Receiver<Outbound>,
    ) -> String {
        let (mut sink, mut stream) = socket.split();
        let mut heartbeat = tokio::time::interval(self.heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Frames sent and not yet answered, oldest first (more than one only while `echoes`).
        let mut pending: VecDeque<(Outbound, Instant)> = VecDeque::new();
        // Whether this server echoes event ids (then id-less frames are always pushes).
        let mut echoes = false;
        // A server that answers heartbeats and then falls silent for three intervals (at least
        // the request timeout) is gone
        // (a half-open TCP connection shows no error until a write times out much later).
        let mut answers_heartbeats = false;
        let mut last_seen = Instant::now();
        let silence_limit = (self.heartbeat * 3).max(self.control.timeout());
        let why = loop {
            // The oldest frame is the first to run out of time.
            let deadline = pending
                .front()
                .map(|(_, sent)| *sent + self.control.timeout());
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => {
                    let _ = sink.send(Message::Close(None)).await;
                    break "stopped".to_owned();
                }
                incoming = stream.next() => {
                    let text = match incoming {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Close(frame))) => {
                            break match frame {
                                Some(f) => format!("closed by the server ({} {})", f.code, f.reason),
                                None => "closed by the server".to_owned(),
                            };
                        }
                        Some(Ok(_)) => {
                            last_seen = Instant::now();
                            continue;
                        }
                        Some(Err(e)) => break format!("read failed: {e}"),
                        None => break "the connection ended".to_owned(),
                    };
                    last_seen = Instant::now();
                    let Some(frame) = Frame::read(text.as_str()) else {
                        tracing::debug!(bytes = text.len(), "control-plane frame is not a JSON object; ignored");
                        continue;
                    };
                    if !echoes && frame.ack.event_id.is_some() {
                        echoes = true;
                        // From now on the delivery task may send ahead of the answers.
                        self.echoed.store(connection, Ordering::Release);
                    }
                    let position = |id: &str| pending.iter().position(|(o, _)| o.event_id == id);
                    match frame.classify(|id| position(id).is_some(), !pending.is_empty(), echoes) {
                        Kind::Answer => {
                            // By id when echoed; an id-less answer is the only frame in flight.
                            let at = frame.ack.event_id.as_deref().and_then(position).unwrap_or(0);
                            if let Some((outbound, _)) = pending.remove(at) {
                                tracing::trace!(event_id = %outbound.event_id, action = %outbound.action, "report answered on the websocket");
                                let _ = outbound.reply.send(Ok(frame.ack));
                            }
                        }
                        Kind::Liveness => answers_heartbeats = true,
                        Kind::Push => {
                            for task in frame.tasks() {
                                if self.tasks.send(task).await.is_err() {
                                    tracing::debug!("task executor gone; pushed task dropped");
                                }
                            }
                        }
                    }
                }
                _ = heartbeat.tick() => {
                    if answers_heartbeats && last_seen.elapsed() > silence_limit {
                        break "the server stopped answering heartbeats".to_owned();
                    }
                    // A server that answers in order might answer a heartbeat with an id-less
                    // common_ack: never let one cross a report's answer.
                    if !pending.is_empty() && !echoes {
                        continue;
                    }
                    if let Err(e) = sink.send(self.heartbeat_frame()).await {
                        break format!("heartbeat failed: {e}");
                    }
                }
                () = sleep_until(deadline) => {
                    if let Some((outbound, _)) = pending.pop_front() {
                        let after = self.control.timeout();
                        let _ = outbound.reply.send(Err(WsError::Timeout { action: outbound.action, after }));
                    }
                    break "a report got no answer in time".to_owned();
                }
                next = requests.recv(), if pending.is_empty() || echoes => {
                    let Some(first) = next else { break "stopped".to_owned() };
                    // Whatever else is queued goes out in the same write, while the server
                    // matches answers by id.
                    let mut batch = vec![first];
                    while echoes && let Ok(more) = requests.try_recv() {
                        batch.push(more);
                    }
                    if let Err(why) = self.send_frames(&mut sink, connection, batch, &mut pending).await {
                        break why;
                    }
                }
            }
        };
        for (outbound, _) in pending {
            let _ = outbound.reply.send(Err(WsError::Closed {
                detail: why.clone(),
            }));
        }
        why
    }

    /// Writes `batch` (in order, one flush) and records the frames as pending; an error ends
    /// the connection.
    async fn send_frames(
        &self,
        sink: &mut futures::stream::SplitSink<Socket, Message>,
        connection: u32,
        batch: Vec<Outbound>,
        pending: &mut VecDeque<(Outbound, Instant)>,
    ) -> Result<(), String> {
        let mut written = Vec::with_capacity(batch.len());
        for mut outbound in batch {
            // The caller gave up (timeout) while it waited in the queue.
            if outbound.reply.is_closed() {
                continue;
            }
            if outbound.connection != connection {
                let _ = outbound.reply.send(Err(WsError::Closed {
                    detail: "queued for an earlier connection".to_owned(),
                }));
                continue;
            }
            // Sent once and never again: a resend is a new submit.
            let text = std::mem::take(&mut outbound.text);
            if let Err(e) = sink.feed(Message::text(text)).await {
                let _ = outbound.reply.send(Err(WsError::Closed {
                    detail: format!("send failed: {e}"),
                }));
                fail_all(written, &format!("send failed: {e}"));
                return Err(format!("send failed: {e}"));
            }
            written.push(outbound);
        }
        if let Err(e) = sink.flush().await {
            fail_all(written, &format!("send failed: {e}"));
            return Err(format!("send failed: {e}"));
        }
        let now = Instant::now();
        pending.extend(written.into_iter().map(|o| (o, now)));
        Ok(())
    }
}

/// Answers frames that will never be answered with why.
fn fail_all(frames: Vec<Outbound>, why: &str) {
    for outbound in frames {
        let _ = outbound.reply.send(Err(WsError::Closed {
            detail: why.to_owned(),
        }));
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// One frame the server sent.
struct Frame {
    ack: Ack,
    /// `action`/`atcion` when the server sent a request-shaped frame (e.g. its own heartbeat).
    action: Option<String>,
}

/// What a frame is to the link.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    /// The answer to a report frame in flight.
    Answer,
    /// A heartbeat answer or the server's own heartbeat.
    Liveness,
    /// Tasks the server pushed (possibly none).
    Push,
}

impl Frame {
    fn read(text: &str) -> Option<Frame> {
        let value: Value = serde_json::from_str(text).ok()?;
        let object = value.as_object()?;
        let action = ["action", "atcion"]
            .iter()
            .find_map(|k| object.get(*k).and_then(Value::as_str))
            .map(str::to_owned);
        Some(Frame {
            ack: Ack::from_value(&value),
            action,
        })
    }

    /// `in_flight` tells whether an id is that of a frame awaiting its answer; `waiting`
    /// whether any is.
    fn classify(&self, in_flight: impl Fn(&str) -> bool, waiting: bool, echoes: bool) -> Kind {
        let heartbeat = self
            .action
            .as_deref()
            .is_some_and(|a| a.eq_ignore_ascii_case(action::HEARTBEAT))
            || self.ack.ack_type.to_ascii_lowercase().contains("heartbeat");
        match &self.ack.event_id {
            Some(id) if in_flight(id) => Kind::Answer,
            _ if heartbeat => Kind::Liveness,
            Some(_) => Kind::Push,
            None if self.ack.pulled_task().is_some() => Kind::Push,
            None if waiting && !echoes => Kind::Answer,
            None => Kind::Push,
        }
    }

    fn tasks(&self) -> Vec<PushedTask> {
        if let Some((id, task)) = self.ack.pulled_task() {
            return vec![((!id.is_empty()).then_some(id), task)];
        }
        self.ack
            .reply_tasks()
            .into_iter()
            .map(|t| (None, t))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn frame(v: Value) -> Frame {
        Frame::read(&v.to_string()).expect("an object")
    }

    #[test]
    fn url_policy() {
        assert_eq!(
            ws_url("ws://127.0.0.1:9/wehub/ws", true).unwrap().as_str(),
            "ws://127.0.0.1:9/wehub/ws"
        );
        assert_eq!(
            ws_url("https://cp.example.com/ws?t=1", true)
                .unwrap()
                .as_str(),
            "wss://cp.example.com/ws?t=1"
        );
        assert!(ws_url("ws://cp.example.com/ws", false).is_ok());
        let err = ws_url("ws://cp.example.com/ws?token=abc", true).unwrap_err();
        assert!(err.to_string().contains("loopback"), "{err}");
        assert!(!err.to_string().contains("abc"), "{err}");
        assert!(ws_url("ftp://127.0.0.1/", false).is_err());
        assert!(ws_url("not a url", false).is_err());
        assert_eq!(
            handshake_target(&Url::parse("ws://h/a/b?x=1&y=2").unwrap()),
            "/a/b?x=1&y=2"
        );
        assert_eq!(handshake_target(&Url::parse("ws://h").unwrap()), "/");
    }

    fn client() -> ControlClient {
        let cfg = crate::config::ControlConfig {
            callback_url: Some(Url::parse("http://127.0.0.1:9/cb").unwrap()),
            upload_url: None,
            appid: "app".into(),
            secret_key: None,
            poll_interval: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
            sign_requests: false,
            ws_window: 64,
            http_batch: 64,
        };
        ControlClient::new(&cfg, "m".into()).unwrap()
    }

    /// `wss://` goes through rustls (a provider must be available in this build): a server
    /// that is not TLS is an error that sends the link to HTTP, never a panic.
    #[tokio::test]
    async fn a_failed_tls_handshake_leaves_the_link_down_and_retrying() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            while let Ok((mut conn, _)) = listener.accept().await {
                let _ = conn.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            }
        });
        let (tasks, _rx) = mpsc::channel(4);
        let cancel = CancellationToken::new();
        let ext = WebSocketExtension {
            ws_url: format!("wss://127.0.0.1:{port}/ws"),
            heartbeat_interval: Duration::from_secs(30),
        };
        let link = WsLink::start(
            client(),
            &ext,
            "w".into(),
            tasks,
            cancel.clone(),
            WsPolicy::default(),
        )
        .expect("a loopback wss url is accepted");
        let mut state = link.state();
        let down = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                if let LinkState::Down { error, .. } = &*state.borrow_and_update() {
                    return error.clone();
                }
                state.changed().await.expect("the link runs");
            }
        })
        .await
        .expect("down in time");
        assert!(down.contains("websocket connect failed"), "{down}");
        assert!(!link.sender().is_open());
        let err = link
            .sender()
            .request("report_new_msg", "w", Value::Null, "s:1")
            .await
            .unwrap_err();
        assert!(matches!(err, WsError::NotOpen), "{err}");
        assert!(!link.is_finished(), "the link keeps retrying");
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(10), async {
            while !link.is_finished() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("stops when cancelled");
        server.abort();
    }

    async fn wait_state(
        state: &mut watch::Receiver<LinkState>,
        pred: impl Fn(&LinkState) -> bool,
    ) -> LinkState {
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let now = state.borrow_and_update().clone();
                if pred(&now) {
                    return now;
                }
                state.changed().await.expect("the link runs");
            }
        })
        .await
        .expect("the state in time")
    }

    /// A stock-like server: answers report frames in order with id-less `common_ack`s, ignores
    /// heartbeats, pushes a `pull_task_ack` after the first report, and drops the first
    /// connection after it. The link answers reports, hands on the push, and reconnects.
    #[tokio::test]
    async fn in_order_answers_pushes_and_reconnects() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let mut connection = 0;
            while let Ok((tcp, _)) = listener.accept().await {
                connection += 1;
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    continue;
                };
                while let Some(Ok(Message::Text(text))) = ws.next().await {
                    let frame: Value = serde_json::from_str(text.as_str()).unwrap();
                    if frame["action"] == "heartbeat" {
                        continue;
                    }
                    let answer = serde_json::json!({"error_code": 0, "ack_type": "common_ack",
                        "data": {"reply_task_list": [{"task_type": 8, "task_dict": {"n": frame["data"]["n"].clone()}}]}});
                    ws.send(Message::text(answer.to_string())).await.unwrap();
                    if connection == 1 {
                        let push = serde_json::json!({"ack_type": "pull_task_ack",
                            "data": {"task_id": "t-1", "task_data": {"task_type": 1, "task_dict": {}}}});
                        ws.send(Message::text(push.to_string())).await.unwrap();
                        break;
                    }
                }
            }
        });
        let (tasks, mut pushed) = mpsc::channel(4);
        let cancel = CancellationToken::new();
        let ext = WebSocketExtension {
            ws_url: format!("ws://127.0.0.1:{port}/ws"),
            heartbeat_interval: Duration::from_secs(1),
        };
        let policy = WsPolicy {
            reconnect_min: Duration::from_millis(10),
            reconnect_max: Duration::from_millis(50),
        };
        let link = WsLink::start(client(), &ext, "w".into(), tasks, cancel.clone(), policy)
            .expect("a loopback url");
        let mut state = link.state();
        wait_state(&mut state, |s| {
            matches!(s, LinkState::Open { connection: 1 })
        })
        .await;
        let ack = link
            .sender()
            .request("report_new_msg", "w", serde_json::json!({"n": 1}), "s:1")
            .await
            .expect("answered in order");
        assert!(ack.parsed && ack.is_ok());
        assert_eq!(ack.reply_tasks()[0].value()["task_dict"]["n"], 1);
        let (id, task) = tokio::time::timeout(Duration::from_secs(20), pushed.recv())
            .await
            .expect("the push in time")
            .expect("a pushed task");
        assert_eq!(id.as_deref(), Some("t-1"));
        assert_eq!(task.task_type(), Some(1));
        wait_state(&mut state, |s| {
            matches!(s, LinkState::Open { connection: 2 })
        })
        .await;
        let ack = link
            .sender()
            .request("report_new_msg", "w", serde_json::json!({"n": 2}), "s:2")
            .await
            .expect("answered on the second connection");
        assert_eq!(ack.reply_tasks()[0].value()["task_dict"]["n"], 2);
        cancel.cancel();
        wait_state(&mut state, |s| *s == LinkState::Stopped).await;
        server.abort();
    }

    #[test]
    fn frames_are_matched_by_echoed_id_then_in_order() {
        let only = |current: &'static str| move |id: &str| !current.is_empty() && id == current;
        let answer = frame(json!({"ack_type":"common_ack","event_id":"s:1","data":{}}));
        assert_eq!(answer.classify(only("s:1"), true, true), Kind::Answer);
        assert_eq!(answer.classify(only("s:2"), true, true), Kind::Push);
        assert_eq!(answer.classify(only(""), false, true), Kind::Push);
        // Several in flight: any of them, not only the oldest.
        let window = |id: &str| ["s:1", "s:2", "s:3"].contains(&id);
        assert_eq!(answer.classify(window, true, true), Kind::Answer);

        let bare =
            frame(json!({"ack_type":"common_ack","data":{"reply_task_list":[{"task_type":1}]}}));
        // A server that never echoes ids answers in order.
        assert_eq!(bare.classify(only("s:1"), true, false), Kind::Answer);
        // One that does: an id-less frame is a push.
        assert_eq!(bare.classify(only("s:1"), true, true), Kind::Push);
        assert_eq!(bare.classify(only(""), false, false), Kind::Push);
        assert_eq!(bare.tasks().len(), 1);
        assert_eq!(bare.tasks()[0].0, None);

        let pulled = frame(
            json!({"ack_type":"pull_task_ack","data":{"task_id":"t-9","task_data":{"task_type":1,"task_dict":{}}}}),
        );
        assert_eq!(pulled.classify(only("s:1"), true, false), Kind::Push);
        assert_eq!(pulled.tasks()[0].0.as_deref(), Some("t-9"));

        let hb = frame(json!({"ack_type":"heartbeat_ack"}));
        assert_eq!(hb.classify(only("s:1"), true, false), Kind::Liveness);
        let vendor_hb = frame(json!({"atcion":"heartbeat","data":{}}));
        assert_eq!(vendor_hb.classify(only("s:1"), true, false), Kind::Liveness);
        assert!(Frame::read("[1]").is_none());
        assert!(Frame::read("nope").is_none());
    }
}
