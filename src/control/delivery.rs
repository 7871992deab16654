//! Delivers a session's report spool to the control plane: oldest first, each report retried
//! with capped, jittered backoff until the control plane acknowledges it (HTTP 2xx and a JSON
//! object, spec B.5), and only then acknowledged in the spool. No report is dropped:
//! a failure that retrying soon will not fix (a 4xx, an unreadable spool) is logged at ERROR and
//! retried on a slower schedule.
//!
//! Locking: the spool is shared as `Arc<std::sync::Mutex<Spool>>`. Its operations are
//! synchronous file I/O (an ack waits for `fdatasync`), so this task runs them on the blocking
//! pool and never holds the lock across an `.await`; appenders should do the same and then call
//! `wake.notify_one()`. A poisoned lock is used anyway: the spool changes its in-memory state
//! only after the disk write it mirrors has succeeded, so a panic elsewhere leaves it consistent.
//!
//! A delivered report's [`Ack`] goes out on the channel [`start`] returns (the worker runs its
//! `reply_task_list`); it is sent after the spool ack, so a crash in between may lose those
//! reply tasks but never the report.
//!
//! Transport: while a WebSocket route is set ([`DeliveryHandle::route_over`], spec A.8) and its
//! socket is open, reports go out as frames and an answer frame counts as the ack; otherwise
//! as HTTP posts. The choice is made per attempt, so a switch either way keeps order and loses
//! nothing (see [`crate::control::ws`]).
//!
//! How many reports are in flight: over HTTP, and on a socket whose server has not echoed an
//! `event_id`, one request — WeHub carries one report per request and promises order per
//! session, and a non-echoing server's answers can only be matched by order. A server whose
//! `login_ack` offers `report_batch` ([`DeliveryHandle::batch_over_http`], wxagent's extension)
//! takes several reports in one post: `{"action": "report_batch", "wxid", "appid", "data":
//! {"report_list": [{"action", "event_id", "data"}, ...]}}`, at most `[control] http_batch`
//! and at most what it offered, all of one `wxid`, in spool order, about
//! [`MAX_BATCH_BYTES`] at most. A batch is made only of reports already waiting (nothing waits
//! to fill one), so a report that finds the spool empty still goes alone as a plain post, and
//! the server's answer acknowledges the whole batch (its `reply_task_list` runs once). A
//! failed batch is sent again whole; the server dedupes by each report's `event_id`. Once the server has echoed an
//! id on the open connection, up to `ws_window` frames are sent ahead of their answers: frames
//! on one socket arrive in order, so the control plane still first sees every report in spool
//! order, and a round trip per report no longer bounds throughput. Answers are taken front
//! first and acked in spool order (the spool acks only its front). Any failure in the window
//! (socket closed, timeout, an unreadable answer) drops the whole window: nothing behind the
//! first unanswered report is acked, and the next attempt starts from it — its repeats and
//! those of the reports after it are deduped by event id (B.5), and no report can be first
//! seen out of order, since each was sent only after all before it.

use crate::backoff::Backoff;
use crate::control::client::{ControlClient, PostOptions};
use crate::control::envelope::{Ack, action};
use crate::control::error::{ControlError, chain};
use crate::control::spool::{Entry, Spool, SpoolError, Unsynced};
use crate::control::ws::{MAX_WINDOW, PendingAnswer, WsSender};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Retry delays and queue size of a delivery task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryPolicy {
    /// First delay after a retryable failure (network, timeout, 5xx, 429, a non-JSON answer);
    /// doubles with jitter up to `max_delay`.
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// The slow schedule, for failures retrying soon will not fix (4xx, spool errors).
    pub slow_min_delay: Duration,
    pub slow_max_delay: Duration,
    /// Acks that may wait for the worker before delivery pauses.
    pub ack_queue: usize,
    /// Report frames sent ahead of their answers on a WebSocket whose server echoes event
    /// ids (`[control] ws_window`); 1 sends one at a time there too.
    pub ws_window: usize,
    /// The most reports one HTTP post carries when the server offers batches
    /// (`[control] http_batch`); 1 never batches.
    pub http_batch: usize,
}

/// Deferred acks written at the latest after this many deliveries in one run (a run's acks
/// are otherwise written with the next append, or once the spool stayed empty for
/// [`ACK_IDLE`]).
const MAX_UNSYNCED_ACKS: u64 = 1024;

/// Acks that may wait for the worker before delivery pauses (the default
/// [`DeliveryPolicy::ack_queue`]). A worker waits for a whole write to be acknowledged
/// ([`DeliveryHandle::commit`]) before it reads this channel again, and one write holds up to
/// 256 reports (a sync round's messages), each acked on its own over plain HTTP and WebSocket:
/// a queue shorter than that would stall delivery until the commit gave up waiting and synced.
/// Acks are small and the queue's memory is taken only while they wait.
pub const ACK_QUEUE: usize = 1024;

/// How long the spool must stay empty after a run of deliveries before the run's acks are
/// written on their own (synced in the background: delivery does not wait for it). A report
/// appended sooner carries them in its own write, so a session that receives a message more
/// often than this costs no sync of its own for acks; a crash before they are on disk only
/// sends those reports again.
const ACK_IDLE: Duration = Duration::from_secs(1);

impl Default for DeliveryPolicy {
    /// 200 ms → 30 s; slow 30 s → 5 min; 1,024 acks; a window of 64 frames; batches of 256.
    fn default() -> Self {
        DeliveryPolicy {
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(30),
            slow_min_delay: Duration::from_secs(30),
            slow_max_delay: Duration::from_secs(5 * 60),
            ack_queue: ACK_QUEUE,
            ws_window: crate::config::DEFAULT_WS_WINDOW,
            http_batch: crate::config::DEFAULT_HTTP_BATCH,
        }
    }
}

/// About the most bytes of spool records one `report_batch` post carries (a single report
/// larger than this still goes out, alone): well under the 1 MiB request limit common in
/// front of web servers.
pub const MAX_BATCH_BYTES: u64 = 512 * 1024;

/// How long a write whose reports went out at once waits for the control plane's answers
/// before it is synced ([`DeliveryHandle::commit`]). A loopback round trip takes well under a
/// millisecond; a busy machine's tail, a few.
pub const ACK_GRACE: Duration = Duration::from_millis(20);

/// How long after a sync [`DeliveryHandle::commit`] may skip the next one: at most about this
/// much of what the control plane already has is reported again after a power loss, as a
/// resume re-reports at most [`crate::worker::saver::KEY_SAVE_INTERVAL`] of messages.
pub const SYNC_MAX_AGE: Duration = Duration::from_secs(5);

/// How a write became safe ([`DeliveryHandle::commit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// Synced to disk before the control plane answered.
    Synced,
    /// Acknowledged by the control plane; the sync was not needed, or goes on behind.
    Acked,
}

/// Counters for the admin API and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryStats {
    /// Reports acknowledged by the control plane and removed from the spool.
    pub delivered: u64,
    /// Failed attempts (each one is retried).
    pub retries: u64,
    /// Failed attempts since the last delivery (0: healthy).
    pub consecutive_failures: u64,
    /// The most recent failure, kept after later successes.
    pub last_error: Option<String>,
}

/// The running delivery task.
#[derive(Debug)]
pub struct DeliveryHandle {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    spool: Arc<Mutex<Spool>>,
    /// Notified after every delivery and whenever the task finds the spool empty.
    progress: Notify,
    stats: Mutex<DeliveryStats>,
    /// The session's WebSocket link, while it has one.
    websocket: Mutex<Option<WsSender>>,
    /// The most reports the server takes in one `report_batch` post (0: it offered none).
    batch_offer: AtomicUsize,
    /// The seq of the newest report the control plane acknowledged (0: none yet).
    acked: watch::Sender<u64>,
    /// When the newest sync [`DeliveryHandle::commit`] asked for began (everything written
    /// before it is on disk); `None` before the first.
    synced_at: Mutex<Option<Instant>>,
}

/// Starts delivering `spool` with the default [`DeliveryPolicy`] until `cancel`. `wake` is
/// notified by whoever appends, so a new report goes out at once.
pub fn start(
    spool: Arc<Mutex<Spool>>,
    control: ControlClient,
    wake: Arc<Notify>,
    cancel: CancellationToken,
) -> (DeliveryHandle, mpsc::Receiver<Ack>) {
    start_with(spool, control, wake, cancel, DeliveryPolicy::default())
}

/// [`start`] with another policy (tests use milliseconds).
pub fn start_with(
    spool: Arc<Mutex<Spool>>,
    control: ControlClient,
    wake: Arc<Notify>,
    cancel: CancellationToken,
    policy: DeliveryPolicy,
) -> (DeliveryHandle, mpsc::Receiver<Ack>) {
    let (tx, rx) = mpsc::channel(policy.ack_queue.max(1));
    let shared = Arc::new(Shared {
        spool,
        progress: Notify::new(),
        stats: Mutex::new(DeliveryStats::default()),
        websocket: Mutex::new(None),
        batch_offer: AtomicUsize::new(0),
        acked: watch::Sender::new(0),
        synced_at: Mutex::new(None),
    });
    let delivery = Delivery {
        shared: shared.clone(),
        control,
        wake,
        cancel,
        acks: tx,
        policy,
        behind: Mutex::new(Vec::new()),
    };
    // Logs of the task carry the caller's span (the session's).
    let task = tokio::spawn(delivery.run().instrument(tracing::Span::current()));
    (DeliveryHandle { shared, task }, rx)
}

impl DeliveryHandle {
    /// Waits until the spool is empty; `false` when `timeout` passed first.
    pub async fn drained(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let progressed = self.shared.progress.notified();
            tokio::pin!(progressed);
            progressed.as_mut().enable();
            if lock(&self.shared.spool).is_empty() {
                self.sync_acks().await;
                return true;
            }
            tokio::select! {
                _ = progressed => {}
                _ = tokio::time::sleep_until(deadline) => {
                    self.sync_acks().await;
                    return lock(&self.shared.spool).is_empty();
                }
            }
        }
    }

    pub fn stats(&self) -> DeliveryStats {
        lock(&self.shared.stats).clone()
    }

    /// Whether the control plane has acknowledged every report up to spool seq `seq`.
    pub fn is_acked(&self, seq: u64) -> bool {
        *self.shared.acked.borrow() >= seq
    }

    /// Waits until the control plane has acknowledged every report up to spool seq `seq`
    /// (reports are acknowledged in spool order). Never ends if they are not delivered.
    pub async fn acked(&self, seq: u64) {
        let mut rx = self.shared.acked.subscribe();
        if rx.wait_for(|&acked| acked >= seq).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Waits until the write `unsynced`, holding the reports with spool seqs `first..=last`,
    /// is safe: on disk, or acknowledged by the control plane (reports are acknowledged in
    /// order), whichever comes first. `Err` when the sync failed and the control plane does not
    /// have them all.
    ///
    /// When every earlier report is acknowledged and delivery is healthy, the reports went out
    /// at once, and their answers usually come back well before a sync would end. The write
    /// then waits up to [`ACK_GRACE`] for them before it asks for a sync, and an answer in time
    /// makes the sync needless: the reports are at the control plane. The write reaches the
    /// disk with a later sync: the next one not skipped, or the ack record's once the spool
    /// stays empty. Until then a power loss can only take reports the control plane already
    /// has, and their ack records with them, so at worst they are sent again; to keep that to
    /// the last few seconds, a sync is skipped only within [`SYNC_MAX_AGE`] of the last one.
    pub async fn commit(
        &self,
        unsynced: Unsynced,
        first: u64,
        last: u64,
    ) -> Result<Commit, String> {
        self.commit_within(ACK_GRACE, unsynced, first, last).await
    }

    /// [`commit`](Self::commit) with a grace of `grace`.
    async fn commit_within(
        &self,
        grace: Duration,
        unsynced: Unsynced,
        first: u64,
        last: u64,
    ) -> Result<Commit, String> {
        let caught_up = self.is_acked(first.saturating_sub(1))
            && lock(&self.shared.stats).consecutive_failures == 0;
        let synced_lately =
            lock(&self.shared.synced_at).is_some_and(|at| at.elapsed() < SYNC_MAX_AGE);
        if caught_up && synced_lately && tokio::time::timeout(grace, self.acked(last)).await.is_ok()
        {
            return Ok(Commit::Acked);
        }
        let shared = self.shared.clone();
        let mut sync = tokio::task::spawn_blocking(move || {
            let began = Instant::now();
            let synced = unsynced.sync();
            if synced.is_ok() {
                let mut at = lock(&shared.synced_at);
                *at = Some(at.map_or(began, |at| at.max(began)));
            }
            synced
        });
        tokio::select! {
            synced = &mut sync => match synced {
                Ok(Ok(())) => Ok(Commit::Synced),
                _ if self.is_acked(last) => Ok(Commit::Acked),
                Ok(Err(e)) => Err(chain(&e)),
                Err(e) => Err(format!("the spool's sync task failed: {e}")),
            },
            // The sync goes on in the background.
            () = self.acked(last) => Ok(Commit::Acked),
        }
    }

    /// Writes the acks of delivered reports to the spool now (they are otherwise written when
    /// a delivery run ends), so a stop right after a drain sends nothing twice.
    async fn sync_acks(&self) {
        let spool = self.shared.spool.clone();
        let synced =
            tokio::task::spawn_blocking(move || crate::control::spool::sync_acks_unlocked(&spool))
                .await;
        if let Ok(Err(e)) = synced {
            tracing::warn!(error = %chain(&e), "cannot record deliveries in the spool; they may be sent again after a restart");
        }
    }

    /// Sends reports over this WebSocket link whenever it is open (`None`: HTTP only). Takes
    /// effect from the next attempt; reports in flight finish where they started.
    pub fn route_over(&self, websocket: Option<WsSender>) {
        *lock(&self.shared.websocket) = websocket;
    }

    /// Sends several reports per HTTP post, up to `most` (what the server's `login_ack`
    /// offered) and `[control] http_batch`, or one per post (`None`, as WeHub). Takes effect
    /// from the next post.
    pub fn batch_over_http(&self, most: Option<usize>) {
        self.shared
            .batch_offer
            .store(most.unwrap_or(0), Ordering::Release);
    }

    /// Whether the task has ended (it ends only when cancelled).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits for the task to end after its cancellation token fired. A report in flight is
    /// abandoned unacknowledged, to be sent again after the next start.
    pub async fn join(self) {
        if let Err(e) = self.task.await
            && e.is_panic()
        {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

/// What a post of `action` came to: the ack, or a failure on the schedule that suits it
/// (`kept` says what is kept for the slow one).
fn judge_post(posted: Result<Ack, ControlError>, action: &str, kept: &str) -> Result<Ack, Failure> {
    match posted {
        Ok(ack) if ack.parsed => Ok(ack),
        Ok(_) => Err(Failure::Transient(format!(
            "{action}: the control plane's answer is not a JSON object"
        ))),
        Err(e) if e.is_retryable() => Err(Failure::Transient(chain(&e))),
        Err(e @ ControlError::Status { .. }) => Err(Failure::Persistent(format!(
            "{}; {kept} and retried on the slow schedule",
            chain(&e)
        ))),
        Err(e) => Err(Failure::Persistent(chain(&e))),
    }
}

/// The front of `entries` that one `report_batch` may carry: reports of the first one's
/// account (a batch has one `wxid`).
fn same_account(mut entries: Vec<Entry>) -> Vec<Entry> {
    let Some(first) = entries.first() else {
        return entries;
    };
    let wxid = first.wxid.clone();
    let keep = entries
        .iter()
        .take_while(|e| e.wxid == wxid && e.action.starts_with("report_"))
        .count()
        .max(1);
    entries.truncate(keep);
    entries
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How a pass of the pipelined path ended.
enum Window {
    /// Nothing is pending.
    Empty,
    /// Look again (the link changed, or a failure has had its backoff).
    Again,
    Stopped,
}

/// What the delivery loop does after handling an answer.
enum Step {
    Done,
    Retry,
    Stopped,
}

/// A report frame sent on a pipelining connection, awaiting its answer.
struct InFlight {
    seq: u64,
    event_id: String,
    action: String,
    answer: PendingAnswer,
}

/// Why an attempt failed, and which schedule retries it.
enum Failure {
    /// Likely to pass soon: the fast schedule.
    Transient(String),
    /// Unlikely to pass soon (a 4xx, the spool): the slow schedule, logged at ERROR.
    Persistent(String),
}

impl Failure {
    /// The same failure with its message changed by `f`.
    fn map(self, f: impl FnOnce(String) -> String) -> Failure {
        match self {
            Failure::Transient(m) => Failure::Transient(f(m)),
            Failure::Persistent(m) => Failure::Persistent(f(m)),
        }
    }
}

struct Delivery {
    shared: Arc<Shared>,
    control: ControlClient,
    wake: Arc<Notify>,
    cancel: CancellationToken,
    acks: mpsc::Sender<Ack>,
    policy: DeliveryPolicy,
    /// Ack syncs running in the background ([`sync_acks_behind`](Self::sync_acks_behind)).
    behind: Mutex<Vec<JoinHandle<()>>>,
}

impl Delivery {
    async fn run(self) {
        self.deliver().await;
        // Once the task has ended nothing of it holds the spool.
        let behind = std::mem::take(&mut *lock(&self.behind));
        for task in behind {
            let _ = task.await;
        }
        // Acks not yet on disk would only mean repeats after a restart; written while we can.
        if let Some(Err(e)) = self
            .with_shared_spool(crate::control::spool::sync_acks_unlocked)
            .await
        {
            tracing::warn!(error = %chain(&e), "cannot record the last deliveries in the spool; they will be sent again");
        }
    }

    async fn deliver(&self) {
        let mut fast = Backoff::new(self.policy.min_delay, self.policy.max_delay);
        let mut slow = Backoff::new(self.policy.slow_min_delay, self.policy.slow_max_delay);
        loop {
            // Registered before looking, so an append between the look and the wait still wakes.
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let window = self.policy.ws_window.min(MAX_WINDOW);
            let pipelined = lock(&self.shared.websocket)
                .clone()
                .and_then(|ws| Some((ws.pipelining()?, ws)))
                .filter(|_| window > 1);
            let front = match pipelined {
                Some((connection, ws)) => {
                    match self
                        .deliver_window(&ws, connection, window, &mut fast, &mut slow)
                        .await
                    {
                        Window::Stopped => return,
                        Window::Again => continue,
                        Window::Empty => Ok(Vec::new()),
                    }
                }
                None => {
                    let most = self.batch_size();
                    let read = if most > 1 {
                        self.with_spool_quick(move |s| s.peek_batch(most, MAX_BATCH_BYTES))
                            .await
                    } else {
                        self.with_spool_quick(|s| Ok(s.front()?.into_iter().collect()))
                            .await
                    };
                    match read {
                        Some(entries) => entries.map(same_account),
                        None => return,
                    }
                }
            };
            let mut entries = match front {
                Ok(entries) if !entries.is_empty() => entries,
                Ok(_) => {
                    self.shared.progress.notify_waiters();
                    // A run of deliveries is over: its acks go to disk with one sync once
                    // nothing new came for ACK_IDLE.
                    if lock(&self.shared.spool).unsynced_acks() > 0 {
                        tokio::select! {
                            biased;
                            _ = self.cancel.cancelled() => return,
                            _ = woken.as_mut() => continue,
                            _ = tokio::time::sleep(ACK_IDLE) => self.sync_acks_behind(),
                        }
                    }
                    tokio::select! {
                        biased;
                        _ = self.cancel.cancelled() => return,
                        _ = woken => continue,
                    }
                }
                Err(e) => {
                    let failure = Failure::Persistent(format!(
                        "cannot read the next report from the spool: {}",
                        chain(&e)
                    ));
                    if !self.failed(failure, None, slow.next_delay()).await {
                        return;
                    }
                    continue;
                }
            };
            let (event_ids, action, outcome) = if entries.len() == 1 {
                let entry = entries.pop().expect("one entry");
                let (event_ids, action) = (vec![entry.event_id.clone()], entry.action.clone());
                let outcome = tokio::select! {
                    biased;
                    _ = self.cancel.cancelled() => return,
                    sent = self.send(entry) => sent,
                };
                (event_ids, action, outcome)
            } else {
                let event_ids: Vec<String> = entries.iter().map(|e| e.event_id.clone()).collect();
                let outcome = tokio::select! {
                    biased;
                    _ = self.cancel.cancelled() => return,
                    sent = self.send_batch(entries) => sent,
                };
                (event_ids, action::REPORT_BATCH.to_owned(), outcome)
            };
            let event_id = &event_ids[0];
            let ack = match outcome {
                Ok(ack) => ack,
                Err(failure) => {
                    let delay = match failure {
                        Failure::Transient(_) => fast.next_delay(),
                        Failure::Persistent(_) => slow.next_delay(),
                    };
                    if !self.failed(failure, Some((event_id, &action)), delay).await {
                        return;
                    }
                    continue;
                }
            };
            match self
                .delivered_all(event_ids, &action, ack, &mut fast, &mut slow)
                .await
            {
                Step::Done => {}
                Step::Retry => continue,
                Step::Stopped => return,
            }
        }
    }

    /// Sends the spool through a pipelining WebSocket connection: up to `window` frames
    /// ahead of their answers, refilled in batches as answers come. Answers are taken in
    /// spool order (the server answers in order; one that comes early waits in its slot), so
    /// acks reach the spool and the `acks` channel front first. The first failure abandons the
    /// window: nothing behind the failed report is acked, and the next attempt starts from it.
    async fn deliver_window(
        &self,
        ws: &WsSender,
        connection: u32,
        window: usize,
        fast: &mut Backoff,
        slow: &mut Backoff,
    ) -> Window {
        let mut in_flight: VecDeque<InFlight> = VecDeque::with_capacity(window);
        // After a refill error the window only drains; the next pass looks again.
        let mut refill = true;
        let mut delivered = false;
        loop {
            // Half a window at a time, so frames go out in batches (one write each).
            let room = window - in_flight.len();
            if refill && room >= window.div_ceil(2) && ws.pipelining() == Some(connection) {
                let after = in_flight.back().map_or(0, |f| f.seq);
                let mut read = self
                    .with_spool_quick(move |s| s.peek_after(after, room))
                    .await;
                if matches!(read, Some(Err(_))) {
                    // Damage somewhere in the range: what precedes it still goes out, one
                    // report per pass, as the one-at-a-time path would send it.
                    refill = false;
                    read = self.with_spool_quick(move |s| s.peek_after(after, 1)).await;
                }
                let entries = match read {
                    None => return Window::Stopped,
                    Some(Ok(entries)) => entries,
                    Some(Err(e)) if in_flight.is_empty() => {
                        let failure = Failure::Persistent(format!(
                            "cannot read the next report from the spool: {}",
                            chain(&e)
                        ));
                        return self.abandon(failure, None, slow.next_delay()).await;
                    }
                    Some(Err(_)) => Vec::new(),
                };
                for entry in entries {
                    let (seq, event_id, action) = (entry.seq, entry.event_id, entry.action);
                    match ws.submit(&action, &entry.wxid, entry.data, &event_id).await {
                        Ok(answer) => in_flight.push_back(InFlight {
                            seq,
                            event_id,
                            action,
                            answer,
                        }),
                        // Those already submitted still get their answers (or fail).
                        Err(e) if !in_flight.is_empty() => {
                            tracing::debug!(error = %chain(&e), "websocket window not refilled");
                            refill = false;
                            break;
                        }
                        Err(e) => {
                            let why = format!("{action}: {}", chain(&e));
                            return self.abandon_transient(why, &event_id, &action, fast).await;
                        }
                    }
                }
            }
            let Some(front) = in_flight.pop_front() else {
                // Nothing in flight and nothing read: the spool is empty, unless the link
                // changed or a refill failed (then look again, on whatever transport is up).
                return if refill && !delivered && ws.pipelining() == Some(connection) {
                    Window::Empty
                } else {
                    Window::Again
                };
            };
            let InFlight {
                event_id,
                action,
                answer,
                ..
            } = front;
            let outcome = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return Window::Stopped,
                answer = answer.answer() => answer,
            };
            let ack = match outcome {
                Ok(ack) if ack.parsed => ack,
                Ok(_) => {
                    let why =
                        format!("{action}: the control plane's answer frame is not a JSON object");
                    return self.abandon_transient(why, &event_id, &action, fast).await;
                }
                Err(e) => {
                    let why = format!("{action}: {}", chain(&e));
                    return self.abandon_transient(why, &event_id, &action, fast).await;
                }
            };
            match self.delivered(&event_id, &action, ack, fast, slow).await {
                Step::Done => delivered = true,
                // The window is dropped: what follows the unmarked report is sent again.
                Step::Retry => return Window::Again,
                Step::Stopped => return Window::Stopped,
            }
        }
    }

    /// [`failed`](Self::failed) for the window path: the frames still in flight are dropped
    /// with the caller's queue (their answers, if any come, go nowhere).
    /// [`abandon`](Self::abandon) for a transient failure of report `event_id`, on the fast
    /// schedule.
    async fn abandon_transient(
        &self,
        why: String,
        event_id: &str,
        action: &str,
        fast: &mut Backoff,
    ) -> Window {
        let delay = fast.next_delay();
        self.abandon(Failure::Transient(why), Some((event_id, action)), delay)
            .await
    }

    async fn abandon(
        &self,
        failure: Failure,
        report: Option<(&str, &str)>,
        delay: Duration,
    ) -> Window {
        if self.failed(failure, report, delay).await {
            Window::Again
        } else {
            Window::Stopped
        }
    }

    /// Handles the control plane's answer to the front report: marks it in the spool, counts
    /// it, and hands its ack to the worker.
    async fn delivered(
        &self,
        event_id: &str,
        action: &str,
        ack: Ack,
        fast: &mut Backoff,
        slow: &mut Backoff,
    ) -> Step {
        self.delivered_all(vec![event_id.to_owned()], action, ack, fast, slow)
            .await
    }

    /// Handles the control plane's answer to the reports `event_ids`, the front ones in spool
    /// order (one post, alone or as a batch): marks them in the spool, counts them, and hands
    /// the answer to the worker once.
    async fn delivered_all(
        &self,
        event_ids: Vec<String>,
        action: &str,
        ack: Ack,
        fast: &mut Backoff,
        slow: &mut Backoff,
    ) -> Step {
        let shared = self.shared.clone();
        let count = event_ids.len();
        let first = event_ids[0].clone();
        let acked = self.with_spool_quick(move |s| {
            let mut newest = None;
            for id in &event_ids {
                match s.ack_deferred(id) {
                    Ok(seq) => newest = Some(seq),
                    Err(e) => return Ok((newest, Err(e))),
                }
                // Counted under the spool lock, so whoever sees the spool empty (`drained`)
                // also sees the count.
                let mut stats = lock(&shared.stats);
                stats.delivered += 1;
                stats.consecutive_failures = 0;
            }
            Ok((newest, Ok(s.unsynced_acks())))
        });
        let (newest, marked) = match acked.await {
            None => return Step::Stopped,
            Some(Ok(acked)) => acked,
            Some(Err(never)) => (None, Err(never)),
        };
        if let Some(seq) = newest {
            // What waits for these reports to be safe need not wait for their sync.
            self.shared.acked.send_replace(seq);
        }
        match marked {
            Ok(unsynced) => {
                // Bounds the repeats a crash in a long run can cause.
                if unsynced >= MAX_UNSYNCED_ACKS {
                    self.sync_acks().await;
                }
            }
            Err(e) => {
                // The control plane has them; sending them again gives duplicates it dedupes
                // by event id, which is better than losing track of the spool.
                let failure = Failure::Persistent(format!(
                    "delivered, but cannot mark it in the spool (it will be sent again): {}",
                    chain(&e)
                ));
                return if self
                    .failed(failure, Some((&first, action)), slow.next_delay())
                    .await
                {
                    Step::Retry
                } else {
                    Step::Stopped
                };
            }
        }
        fast.reset();
        slow.reset();
        self.shared.progress.notify_waiters();
        tracing::debug!(event_id = %first, action, reports = count, "report delivered");
        if !ack.is_ok() {
            tracing::warn!(
                event_id = %first,
                action,
                reports = count,
                error_code = ack.error_code,
                error_reason = %ack.error_reason,
                "control plane acknowledged a report with an error"
            );
        }
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => Step::Stopped,
            // A closed channel only means nobody runs reply tasks any more.
            _ = self.acks.send(ack) => Step::Done,
        }
    }

    /// [`sync_acks`](Self::sync_acks) on the blocking pool, not waited for: a report appended
    /// meanwhile goes out at once (the ack record's sync, on a busy disk, took long enough to
    /// show in the inject → report latency).
    fn sync_acks_behind(&self) {
        let spool = self.shared.spool.clone();
        let span = tracing::Span::current();
        let task = tokio::task::spawn_blocking(move || {
            if let Err(e) = crate::control::spool::sync_acks_unlocked(&spool) {
                let _entered = span.enter();
                tracing::warn!(error = %chain(&e), "cannot record deliveries in the spool yet; retrying with the next write");
            }
        });
        let mut behind = lock(&self.behind);
        behind.retain(|t| !t.is_finished());
        behind.push(task);
    }

    /// Writes the deferred acks (one sync). A failure is only logged: the acks stay in memory
    /// and go out with the next write, and at worst a restart sends those reports again.
    async fn sync_acks(&self) {
        if let Some(Err(e)) = self
            .with_shared_spool(crate::control::spool::sync_acks_unlocked)
            .await
        {
            tracing::warn!(error = %chain(&e), "cannot record deliveries in the spool yet; retrying with the next write");
        }
    }

    /// How many reports the next HTTP post may carry: what the server offered, within
    /// `[control] http_batch`; 1 without an offer, and while the WebSocket is open.
    fn batch_size(&self) -> usize {
        let offer = self.shared.batch_offer.load(Ordering::Acquire);
        if offer < 2
            || lock(&self.shared.websocket)
                .as_ref()
                .is_some_and(WsSender::is_open)
        {
            return 1;
        }
        offer.min(self.policy.http_batch).clamp(1, MAX_WINDOW)
    }

    /// One attempt at the front reports, two or more, in one `report_batch` post.
    async fn send_batch(&self, entries: Vec<Entry>) -> Result<Ack, Failure> {
        let count = entries.len();
        let wxid = entries[0].wxid.clone();
        let list: Vec<serde_json::Value> = entries
            .into_iter()
            .map(
                |e| serde_json::json!({"action": e.action, "event_id": e.event_id, "data": e.data}),
            )
            .collect();
        let data = serde_json::json!({ "report_list": list });
        let posted = self
            .control
            .post(action::REPORT_BATCH, &wxid, data, PostOptions::default())
            .await;
        judge_post(posted, action::REPORT_BATCH, "the reports are kept")
            .map_err(|f| f.map(|m| format!("{m} ({count} reports in one post)")))
    }

    /// One attempt at the front report.
    async fn send(&self, entry: Entry) -> Result<Ack, Failure> {
        let Entry {
            event_id,
            action,
            wxid,
            data,
            ..
        } = entry;
        let websocket = lock(&self.shared.websocket)
            .clone()
            .filter(WsSender::is_open);
        if let Some(ws) = websocket {
            return match ws.request(&action, &wxid, data, &event_id).await {
                Ok(ack) if ack.parsed => Ok(ack),
                Ok(_) => Err(Failure::Transient(format!(
                    "{action}: the control plane's answer frame is not a JSON object"
                ))),
                Err(e) => Err(Failure::Transient(format!("{action}: {}", chain(&e)))),
            };
        }
        let posted = self
            .control
            .post(&action, &wxid, data, PostOptions::event(event_id))
            .await;
        judge_post(posted, &action, "the report is kept")
    }

    /// Records and logs a failed attempt, then waits `delay`; `false` when cancelled meanwhile.
    async fn failed(
        &self,
        failure: Failure,
        report: Option<(&str, &str)>,
        delay: Duration,
    ) -> bool {
        let (event_id, action) = report.unwrap_or_default();
        let message = match &failure {
            Failure::Transient(m) => {
                tracing::warn!(event_id, action, retry_in = ?delay, error = %m, "report not delivered; retrying");
                m
            }
            Failure::Persistent(m) => {
                tracing::error!(event_id, action, retry_in = ?delay, error = %m, "report not delivered; retrying slowly");
                m
            }
        };
        {
            let mut stats = lock(&self.shared.stats);
            stats.retries += 1;
            stats.consecutive_failures += 1;
            stats.last_error = Some(message.clone());
        }
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }

    /// Runs `op` on the spool on the blocking pool; `None` when the runtime is shutting down.
    async fn with_spool<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut Spool) -> Result<T, SpoolError> + Send + 'static,
    ) -> Option<Result<T, SpoolError>> {
        self.with_shared_spool(move |spool| op(&mut lock(spool)))
            .await
    }

    /// Runs `op`, which takes the spool's lock itself, on the blocking pool; `None` when the
    /// runtime is shutting down.
    async fn with_shared_spool<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Mutex<Spool>) -> Result<T, SpoolError> + Send + 'static,
    ) -> Option<Result<T, SpoolError>> {
        let spool = self.shared.spool.clone();
        let span = tracing::Span::current();
        match tokio::task::spawn_blocking(move || span.in_scope(|| op(&spool))).await {
            Ok(result) => Some(result),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => None,
        }
    }

    /// [`with_spool`](Self::with_spool) for an operation that does no sync (a read of a
    /// recent record, an in-memory ack): run in place when the lock is free, which saves two
    /// thread hand-overs per report; on the blocking pool when an appender holds the lock
    /// (it may be waiting for a sync, which must not stall this thread).
    async fn with_spool_quick<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut Spool) -> Result<T, SpoolError> + Send + 'static,
    ) -> Option<Result<T, SpoolError>> {
        let op = {
            let guard = match self.shared.spool.try_lock() {
                Ok(g) => Some(g),
                Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => None,
            };
            match guard {
                Some(mut g) => return Some(op(&mut g)),
                None => op,
            }
        };
        self.with_spool(op).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::spool::SpoolLimits;

    const LIMITS: SpoolLimits = SpoolLimits {
        max_bytes: 1 << 20,
        max_events: 100,
    };

    /// A delivery task for `spool` posting to `url`: its handle, the receiver of its acks
    /// (kept open, as the worker's is), and its wake and cancel handles.
    fn start_on(
        spool: &Arc<Mutex<Spool>>,
        url: &url::Url,
    ) -> (
        DeliveryHandle,
        mpsc::Receiver<Ack>,
        Arc<Notify>,
        CancellationToken,
    ) {
        let (wake, cancel) = (Arc::new(Notify::new()), CancellationToken::new());
        let (handle, acks) = start(spool.clone(), control(url), wake.clone(), cancel.clone());
        (handle, acks, wake, cancel)
    }

    fn control(url: &url::Url) -> ControlClient {
        let mut cfg = crate::control::client::tests::config();
        cfg.callback_url = Some(url.clone());
        ControlClient::new(&cfg, "m".into()).unwrap()
    }

    /// A run's acks are deferred (no sync per delivered report) and, with nothing more to send,
    /// written and synced by the task itself once the spool stayed empty for `ACK_IDLE`: no
    /// `drained()` or shutdown is needed for the delivered reports to stay delivered after a
    /// restart.
    #[tokio::test]
    async fn acks_of_a_finished_run_are_synced_once_the_spool_stays_empty() {
        let server = crate::testutil::http_server(
            "/wehub/callback",
            crate::testutil::COMMON_ACK,
            usize::MAX,
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        let spool = Arc::new(Mutex::new(Spool::open(dir.path(), "s1", LIMITS).unwrap()));
        for n in 0..3 {
            let data = serde_json::json!({"msg": {"msg": format!("m{n}")}});
            lock(&spool)
                .append("report_new_msg", "wxid_me", &data)
                .unwrap();
        }
        let (handle, _acks, wake, cancel) = start_on(&spool, &server.url);
        wake.notify_one();
        // Generous bounds: the property is that it happens without anyone asking, not when.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (delivered, unsynced) = (handle.stats().delivered, lock(&spool).unsynced_acks());
            if delivered == 3 && unsynced == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "delivered {delivered}, unsynced acks {unsynced}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            server.heads.lock().unwrap().len(),
            3,
            "each report sent once"
        );
        // Stopped without drained(): the acks are on disk all the same.
        cancel.cancel();
        handle.join().await;
        drop(spool);
        let reopened = Spool::open(dir.path(), "s1", LIMITS).unwrap();
        assert!(
            reopened.is_empty(),
            "{} reports pending after reopening",
            reopened.len()
        );
    }

    /// A batch holds reports of one account only, and never a non-report; the front goes
    /// out however it starts.
    #[test]
    fn a_batch_is_cut_at_another_account_or_a_non_report() {
        let entry = |seq: u64, action: &str, wxid: &str| Entry {
            event_id: format!("s:{seq}"),
            seq,
            action: action.to_owned(),
            wxid: wxid.to_owned(),
            data: serde_json::json!({}),
        };
        let seqs = |v: Vec<Entry>| v.iter().map(|e| e.seq).collect::<Vec<_>>();
        let mixed = vec![
            entry(1, "report_new_msg", "a"),
            entry(2, "report_contact", "a"),
            entry(3, "report_new_msg", ""),
            entry(4, "report_new_msg", "a"),
        ];
        assert_eq!(seqs(same_account(mixed)), vec![1, 2]);
        let odd = vec![entry(1, "heartbeat", "a"), entry(2, "report_new_msg", "a")];
        assert_eq!(seqs(same_account(odd)), vec![1]);
        let after_odd = vec![entry(1, "report_new_msg", "a"), entry(2, "logout", "a")];
        assert_eq!(seqs(same_account(after_odd)), vec![1]);
        assert!(same_account(Vec::new()).is_empty());
    }

    /// A spool in a temporary directory with a delivery task posting it to a control plane
    /// that answers at once, or (`gated`) one answer per permit added to `gate`.
    struct Rig {
        _dir: tempfile::TempDir,
        spool: Arc<Mutex<Spool>>,
        server: crate::testutil::TestServer,
        gate: Arc<tokio::sync::Semaphore>,
        handle: DeliveryHandle,
        _acks: mpsc::Receiver<Ack>,
        wake: Arc<Notify>,
        cancel: CancellationToken,
    }

    impl Rig {
        async fn start(gated: bool) -> Rig {
            let gate = Arc::new(tokio::sync::Semaphore::new(0));
            let server = crate::testutil::gated_http_server(
                "/wehub/callback",
                crate::testutil::COMMON_ACK,
                usize::MAX,
                gated.then(|| gate.clone()),
            )
            .await;
            let dir = tempfile::tempdir().unwrap();
            let spool = Arc::new(Mutex::new(Spool::open(dir.path(), "s1", LIMITS).unwrap()));
            let (handle, acks, wake, cancel) = start_on(&spool, &server.url);
            Rig {
                _dir: dir,
                spool,
                server,
                gate,
                handle,
                _acks: acks,
                wake,
                cancel,
            }
        }

        /// Appends report `n` without syncing it and wakes delivery: its seq and write.
        fn append(&self, n: u32) -> (u64, Unsynced) {
            let data = serde_json::json!({"msg": {"msg": format!("m{n}")}});
            let (entry, unsynced) = lock(&self.spool)
                .append_unsynced("report_new_msg", "wxid_me", &data)
                .unwrap();
            self.wake.notify_one();
            (entry.seq, unsynced)
        }

        /// Appends report `n` and commits its write with `grace`: its seq and how it became
        /// safe.
        async fn append_and_commit(
            &self,
            n: u32,
            grace: Duration,
        ) -> (u64, Result<Commit, String>) {
            let (seq, unsynced) = self.append(n);
            (
                seq,
                self.handle.commit_within(grace, unsynced, seq, seq).await,
            )
        }

        /// Lets every held answer go, and stops delivery.
        async fn stop(self) {
            self.gate
                .add_permits(tokio::sync::Semaphore::MAX_PERMITS / 2);
            self.cancel.cancel();
            self.handle.join().await;
        }
    }

    /// `acked` (what lets a worker's SyncKey move before a slow sync) follows the control
    /// plane's answers: a report whose answer is held back is not acknowledged, and once the
    /// answers come every report up to the asked seq is.
    #[tokio::test]
    async fn acked_follows_the_answers_in_spool_order() {
        let rig = Rig::start(true).await;
        let seqs: Vec<u64> = (0..2).map(|n| rig.append(n).0).collect();
        // The first report is at the server, its answer held back.
        let deadline = Instant::now() + Duration::from_secs(30);
        while rig.server.heads.lock().unwrap().is_empty() {
            assert!(
                Instant::now() < deadline,
                "the report never reached the server"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!rig.handle.is_acked(seqs[0]));
        rig.gate.add_permits(2);
        tokio::time::timeout(Duration::from_secs(30), rig.handle.acked(seqs[1]))
            .await
            .expect("both reports acknowledged");
        assert!(rig.handle.is_acked(seqs[0]) && rig.handle.is_acked(seqs[1]));
        assert!(!rig.handle.is_acked(seqs[1] + 1));
        rig.stop().await;
    }

    /// A write whose reports the control plane answers within the grace is safe without a
    /// sync: none is made.
    #[tokio::test]
    async fn a_write_answered_within_the_grace_is_not_synced() {
        let rig = Rig::start(false).await;
        // As if a sync had just been made.
        *lock(&rig.handle.shared.synced_at) = Some(Instant::now());
        // A grace no loaded machine outlasts, so the answer always comes within it.
        let (seq, commit) = rig.append_and_commit(0, Duration::from_secs(60)).await;
        assert_eq!(commit, Ok(Commit::Acked));
        assert!(rig.handle.is_acked(seq));
        assert!(
            !lock(&rig.spool).all_synced(),
            "the report reached the control plane; no sync was needed"
        );
        rig.stop().await;
    }

    /// A write of more reports than the default ack queue of old (64) is acknowledged while the
    /// worker waits for it without reading its acks (as the bridge does): delivery does not
    /// stall on a full ack queue until the grace runs out.
    #[tokio::test]
    async fn a_large_write_is_acked_while_its_acks_wait_unread() {
        let rig = Rig::start(false).await;
        *lock(&rig.handle.shared.synced_at) = Some(Instant::now());
        let items: Vec<_> = (0..90)
            .map(|n| {
                let data = serde_json::json!({"msg": {"msg": format!("m{n}")}});
                ("report_new_msg".to_owned(), "wxid_me".to_owned(), data)
            })
            .collect();
        let (last, unsynced) = lock(&rig.spool)
            .append_batch_unsynced(&items)
            .unwrap()
            .expect("written");
        rig.wake.notify_one();
        // Generous: a stalled delivery would wait it out and then sync.
        let commit = rig
            .handle
            .commit_within(Duration::from_secs(30), unsynced, last - 89, last)
            .await;
        assert_eq!(commit, Ok(Commit::Acked));
        assert_eq!(rig.handle.stats().delivered, 90);
        rig.stop().await;
    }

    /// A sync is not skipped when none was made within `SYNC_MAX_AGE` (here: none at all), so a
    /// power loss re-reports only the last few seconds.
    #[tokio::test]
    async fn a_write_is_synced_when_no_sync_was_made_lately() {
        let rig = Rig::start(false).await;
        let (_, commit) = rig.append_and_commit(0, Duration::from_secs(60)).await;
        assert!(commit.is_ok(), "{commit:?}");
        // The answer may come first; the sync it asked for goes on behind it and is not
        // dropped. (Delivery's own sync of its ack record, after a second of quiet, would sync
        // the write as well, but does not count here.)
        let deadline = Instant::now() + Duration::from_secs(30);
        while lock(&rig.handle.shared.synced_at).is_none() {
            assert!(Instant::now() < deadline, "commit never synced the write");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(lock(&rig.spool).all_synced());
        rig.stop().await;
    }

    /// Without an answer within the grace the write is synced, and that makes it safe.
    #[tokio::test]
    async fn a_write_not_answered_within_the_grace_is_synced() {
        let rig = Rig::start(true).await;
        let (seq, commit) = rig.append_and_commit(0, Duration::from_millis(10)).await;
        assert_eq!(commit, Ok(Commit::Synced));
        assert!(!rig.handle.is_acked(seq), "the answer is still held back");
        assert!(lock(&rig.spool).all_synced());
        rig.stop().await;
    }

    /// A write behind reports still unanswered does not wait for the grace (delivery is
    /// behind, so the answer would come late): it is synced at once.
    #[tokio::test]
    async fn a_write_behind_unanswered_reports_is_synced_without_waiting() {
        let rig = Rig::start(true).await;
        let (_, first) = rig.append(0);
        first.sync().unwrap();
        let (seq, unsynced) = rig.append(1);
        // Were the grace waited for, this would outlast the timeout.
        let commit = tokio::time::timeout(
            Duration::from_secs(30),
            rig.handle
                .commit_within(Duration::from_secs(600), unsynced, seq, seq),
        )
        .await
        .expect("synced without waiting for the grace");
        assert_eq!(commit, Ok(Commit::Synced));
        assert!(lock(&rig.spool).all_synced());
        rig.stop().await;
    }
}
