//! The supervisor's side of polling `pull_task` for its workers' accounts (`crate::worker::pull`
//! has the why). One feed task per worker process owns the worker's stdin: when the worker asks
//! (`WorkerMessage::Pull`), the feed answers `SupervisorMessage::Pulling` and polls `pull_task`
//! for the account every poll interval, at once again after a task, exactly as the worker would
//! have; each task goes down the pipe as a `SupervisorMessage::Task`. A task the worker never
//! confirmed (it ended first, even with the task already in the pipe, or its executor had
//! stopped) is reported failed with `report_task_result`, so the control plane hears of it
//! instead of losing it.
//!
//! The requests are the worker's own, byte for byte: same envelope, same account, same client
//! settings. Polls share a few kept-alive connections ([`LANES`]); an account whose polls hang
//! holds up another's by at most [`LANE_WAIT`], after which that one goes on a new connection.

use super::process::WorkerInput;
use super::registry::Registry;
use crate::control::ControlClient;
use crate::control::{ControlError, RawTask};
use crate::worker::ipc::SupervisorMessage;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How many polls for workers run at once: each needs a connection of its own, and the
/// supervisor's client keeps four alive (one is left for the agent's own poll).
const LANES: usize = 3;

/// How long a poll waits for a lane before it goes out on a connection of its own: an account
/// whose requests hang (up to `[control] timeout`) holds a lane, and must not hold up the
/// others' polls for longer than this.
const LANE_WAIT: Duration = Duration::from_millis(500);

/// The coarsest grid the polls are put on (see [`PullSettings::next_after`]).
const GRID: Duration = Duration::from_millis(250);

/// How the supervisor polls for its workers: its own control-plane client and the configured
/// `[control] poll_interval`.
#[derive(Debug, Clone)]
pub struct PullSettings {
    pub control: ControlClient,
    pub every: Duration,
    /// Kept-alive connections for polls ([`LANES`]; a poll that waits [`LANE_WAIT`] goes
    /// without one).
    lanes: Arc<tokio::sync::Semaphore>,
    /// Where the grid starts.
    epoch: Instant,
}

impl PullSettings {
    pub fn new(control: ControlClient, every: Duration) -> PullSettings {
        PullSettings {
            control,
            every,
            lanes: Arc::new(tokio::sync::Semaphore::new(LANES)),
            epoch: Instant::now(),
        }
    }

    /// When to poll next after an empty answer at `now`: one interval later, rounded up to a
    /// grid of a quarter interval (at most [`GRID`]). Sessions polled on the same grid line
    /// share one wake-up of the supervisor and go out back to back over kept-alive
    /// connections, instead of each waking it on its own.
    fn next_after(&self, now: Instant) -> Instant {
        let grid = (self.every / 4).min(GRID).as_nanos().max(1);
        let due = (now + self.every)
            .saturating_duration_since(self.epoch)
            .as_nanos();
        let on_grid = due.div_ceil(grid).saturating_mul(grid);
        self.epoch + Duration::from_nanos(u64::try_from(on_grid).unwrap_or(u64::MAX))
    }
}

/// What the worker's pipe reader passes on to the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedCommand {
    /// Poll for this account (`Some`), or stop (`None`).
    Pull(Option<String>),
    /// The worker queued a task the feed gave it.
    Taken(String),
    /// The worker could not run a task the feed gave it. (Boxed, as it is rare: the channel
    /// allocates its slots up front, for every session.)
    NotRun(Box<NotRun>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotRun {
    pub task_id: String,
    pub wxid: String,
    pub reason: String,
}

/// A finished poll: the account and what the control plane answered.
type Polled = (String, Result<Option<(String, RawTask)>, ControlError>);

/// Feeds one worker process until `close` fires; holds its stdin open until then (its EOF is the
/// worker's stop sign).
pub async fn feed(
    mut input: WorkerInput,
    settings: Option<PullSettings>,
    mut commands: mpsc::Receiver<FeedCommand>,
    registry: Arc<Registry>,
    session_id: String,
    close: CancellationToken,
) {
    let mut pulling: Option<String> = None;
    let mut next = Instant::now();
    let mut open = true;
    // The worker's stdin is broken: it is exiting.
    let mut gone = false;
    // The poll being sent, and whom it is for. Boxed: a request's state then exists only while
    // it runs, not in every idle feed (inline, it cost the supervisor ~8 KiB per session).
    let mut inflight: Option<Pin<Box<dyn Future<Output = Polled> + Send>>> = None;
    // Tasks written to the worker and not yet queued by it: (account, task id).
    let mut unconfirmed: Vec<(String, String)> = Vec::new();
    loop {
        let due = pulling.is_some() && inflight.is_none() && settings.is_some();
        tokio::select! {
            biased;
            () = close.cancelled() => break,
            // Due: the request starts, and from here it is never dropped for a command (the
            // server may already have handed out a task in its answer).
            () = tokio::time::sleep_until(next), if due => {
                if let (Some(wxid), Some(s)) = (pulling.clone(), settings.clone()) {
                    // The lane first: only polls that go out hold a request's state (the
                    // feeds due on one grid line would otherwise all allocate it at once).
                    let lane = tokio::time::timeout(LANE_WAIT, s.lanes.clone().acquire_owned())
                        .await
                        .ok()
                        .and_then(Result::ok);
                    inflight = Some(Box::pin(async move {
                        let found = s.control.pull_task(&wxid, serde_json::json!({})).await;
                        drop(lane);
                        (wxid, found)
                    }));
                }
            }
            cmd = commands.recv(), if open => match cmd {
                None => open = false,
                Some(FeedCommand::Pull(Some(wxid))) => {
                    // Without a client or with polling off, no answer: the worker keeps its way.
                    if settings.as_ref().is_none_or(|s| s.every.is_zero()) {
                        continue;
                    }
                    let line = SupervisorMessage::Pulling { wxid: wxid.clone() }.to_line();
                    if gone || write_line(&mut input, &line, &close).await.is_err() {
                        gone = true;
                        continue;
                    }
                    tracing::debug!(wxid, "polling pull_task for the worker");
                    pulling = Some(wxid);
                    next = Instant::now();
                    registry.update(&session_id, |s| s.agent_pulls = true);
                }
                Some(FeedCommand::Pull(None)) => {
                    pulling = None;
                    registry.update(&session_id, |s| s.agent_pulls = false);
                    if !gone
                        && write_line(&mut input, &SupervisorMessage::Released.to_line(), &close)
                            .await
                            .is_err()
                    {
                        gone = true;
                    }
                }
                Some(other) => settle(&mut unconfirmed, settings.as_ref(), other).await,
            },
            (wxid, found) = async { inflight.as_mut().expect("guarded").as_mut().await }, if inflight.is_some() => {
                inflight = None;
                let later = || settings.as_ref().map_or_else(Instant::now, |s| s.next_after(Instant::now()));
                match found {
                    Ok(Some((task_id, task))) => {
                        let line = SupervisorMessage::Task { task_id: task_id.clone(), task }.to_line();
                        if write_line(&mut input, &line, &close).await.is_err() {
                            let reason = "the session's worker ended before the task reached it";
                            not_run(settings.as_ref(), &wxid, &task_id, reason).await;
                            // Its last lines may still be on their way: keep reading until close.
                            gone = true;
                            pulling = None;
                            continue;
                        }
                        if !task_id.is_empty() {
                            unconfirmed.push((wxid, task_id));
                        }
                        // Others may be queued behind it.
                        next = Instant::now();
                    }
                    Ok(None) => next = later(),
                    Err(e) => {
                        tracing::warn!(error = %e, "pull_task failed");
                        next = later();
                    }
                }
            }
        }
    }
    registry.update(&session_id, |s| s.agent_pulls = false);
    // The worker's last lines (read to the pipe's end before `close`) settle what it took.
    while let Ok(cmd) = commands.try_recv() {
        settle(&mut unconfirmed, settings.as_ref(), cmd).await;
    }
    for (wxid, task_id) in unconfirmed {
        let reason = "the session's worker ended before it took the task";
        not_run(settings.as_ref(), &wxid, &task_id, reason).await;
    }
}

/// What the worker said of a task the feed gave it: taken, or not run (then reported). A `Pull`
/// needs the feed's state and is not handled here.
async fn settle(
    unconfirmed: &mut Vec<(String, String)>,
    settings: Option<&PullSettings>,
    cmd: FeedCommand,
) {
    match cmd {
        FeedCommand::Taken(task_id) => unconfirmed.retain(|(_, id)| *id != task_id),
        FeedCommand::NotRun(n) => {
            unconfirmed.retain(|(_, id)| *id != n.task_id);
            not_run(settings, &n.wxid, &n.task_id, &n.reason).await;
        }
        FeedCommand::Pull(_) => {}
    }
}

/// Writes one line to the worker; gives up when `close` fires (a worker that stopped reading
/// must not hold the supervisor's stop).
async fn write_line(
    input: &mut WorkerInput,
    line: &str,
    close: &CancellationToken,
) -> std::io::Result<()> {
    let mut bytes = Vec::with_capacity(line.len() + 1);
    bytes.extend_from_slice(line.as_bytes());
    bytes.push(b'\n');
    tokio::select! {
        r = async {
            input.write_all(&bytes).await?;
            input.flush().await
        } => r,
        () = close.cancelled() => Err(std::io::Error::other("the worker is being stopped")),
    }
}

/// Reports a pulled task as failed; tasks without an id have no result to report.
async fn not_run(settings: Option<&PullSettings>, wxid: &str, task_id: &str, reason: &str) {
    tracing::warn!(task_id, "a pulled task was not run: {reason}");
    let Some(s) = settings else { return };
    if task_id.is_empty() {
        return;
    }
    // Boxed, like the poll: the request's state would otherwise sit in every idle feed.
    if let Err(e) = Box::pin(s.control.report_task_result(wxid, task_id, false, reason)).await {
        tracing::warn!(task_id, error = %e, "could not report the task as not run");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_go_on_a_grid_of_a_quarter_interval_at_most_250_ms() {
        let cfg = crate::control::client::tests::config();
        let client = ControlClient::new(&cfg, "host".into()).unwrap();
        let s = PullSettings::new(client.clone(), Duration::from_secs(5));
        let at = |ms: u64| s.epoch + Duration::from_millis(ms);
        assert_eq!(s.next_after(at(0)), at(5_000));
        assert_eq!(s.next_after(at(1)), at(5_250));
        assert_eq!(s.next_after(at(130)), at(5_250));
        assert_eq!(s.next_after(at(250)), at(5_250));
        assert_eq!(s.next_after(at(251)), at(5_500));
        // Never sooner than one interval, never more than a grid step later.
        let short = PullSettings::new(client, Duration::from_millis(200));
        let at = |ms: u64| short.epoch + Duration::from_millis(ms);
        assert_eq!(short.next_after(at(10)), at(250));
        assert_eq!(short.next_after(at(50)), at(250));
        assert_eq!(short.next_after(at(51)), at(300));
    }

    const TASK_ACK: &str = r#"{"error_code":0,"ack_type":"pull_task_ack","data":{"task_id":"t1","task_data":{"task_type":1,"task_dict":{}}}}"#;

    /// A poll whose answer is on its way is not dropped when a command arrives (the answer may
    /// hold the task the control plane just handed out), and after a release no poll follows.
    #[tokio::test]
    async fn a_poll_in_flight_survives_commands_and_a_release() {
        use tokio::io::AsyncBufReadExt;
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let server =
            crate::testutil::gated_http_server("/cb", TASK_ACK, usize::MAX, Some(gate.clone()))
                .await;
        let mut cfg = crate::control::client::tests::config();
        cfg.callback_url = Some(server.url.clone());
        let client = ControlClient::new(&cfg, "host".into()).unwrap();
        let (tx, rx) = mpsc::channel(8);
        let (input, output) = tokio::io::duplex(4096);
        let mut lines = tokio::io::BufReader::new(output).lines();
        let mut next_line = async move || {
            let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
                .await
                .expect("a line from the feed in time")
                .unwrap()
                .unwrap();
            SupervisorMessage::from_line(&line).expect("a supervisor message")
        };
        let close = CancellationToken::new();
        let feed = tokio::spawn(feed(
            Box::new(input),
            Some(PullSettings::new(client, Duration::from_secs(3600))),
            rx,
            Arc::new(Registry::default()),
            "s".into(),
            close.clone(),
        ));
        tx.send(FeedCommand::Pull(Some("42".into()))).await.unwrap();
        assert_eq!(
            next_line().await,
            SupervisorMessage::Pulling { wxid: "42".into() }
        );
        let sent = server.heads.clone();
        tokio::time::timeout(Duration::from_secs(10), async {
            while sent.lock().unwrap().is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the poll reaches the server");
        tx.send(FeedCommand::Taken("other".into())).await.unwrap();
        tx.send(FeedCommand::Pull(None)).await.unwrap();
        assert_eq!(next_line().await, SupervisorMessage::Released);
        gate.add_permits(1);
        match next_line().await {
            SupervisorMessage::Task { task_id, task } => {
                assert_eq!(task_id, "t1");
                assert_eq!(task.task_type(), Some(1));
            }
            other => panic!("expected the task, got {other:?}"),
        }
        tx.send(FeedCommand::Taken("t1".into())).await.unwrap();
        close.cancel();
        feed.await.unwrap();
        let heads = server.heads.lock().unwrap().clone();
        assert_eq!(heads.len(), 1, "no poll after the release: {heads:?}");
    }
}
