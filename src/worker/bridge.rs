//! The bridge between one session and the control plane (control-plane spec A.3–A.9, B.1–B.4):
//! QR uploads and QR status, the `login` handshake with its signature check, contacts and
//! messages as reports, tasks pulled for the account or handed back in acks, and `logout` with
//! the reason. Tasks run on their own task so a slow send never stalls the event flow.
//!
//! Every report after `login`, task results included, goes through the session's spool. When
//! `login_ack` offers WebSocket mode (A.8) the bridge starts a [`WsLink`] for the account and
//! routes delivery over it; tasks pushed on the socket join the pulled ones, and `pull_task`
//! polling pauses while the socket is open (see `crate::control::ws`). When supervised, the
//! supervisor does the polling once it agrees (`crate::worker::pull`).

use super::events::{
    Account, AccountOp, MentionStyle, OpResult, OutgoingMedia, WorkerCommand, WorkerEvent,
};
use super::fetch::Fetcher;
use super::ipc::WorkerMessage;
use super::pacing::{DailyKind, Pacer};
use super::reports::{self, Ids};
use super::state::{LogoutReason, Outcome};
use crate::control::delivery::DeliveryHandle;
use crate::control::envelope::{Ack, ExitFlags, RawTask, action};
use crate::control::reports::{
    ContactUpdate, ContactUpdateEntry, FriendRemoved, LoginData, LogoutData, MemberChange,
    NewFriend, NewMsg, NewRoom, QrStatus, QrStatusReport, Report, RoomMemberChange, RoomRemoved,
    TaskResult, UserUpdate,
};
use crate::control::reports::{RoomData, RoomMemberInfo, UserInfoReport};
use crate::control::retry::RetryPolicy;
use crate::control::signature::new_nonce;
use crate::control::spool::{Spool, SpoolError, Unsynced};
use crate::control::tasks::{AtStyle, InviteMethod, PushUnit, Task};
use crate::control::ws::{LinkState, WsLink, WsPolicy};
use crate::control::{ControlClient, ControlError};
use crate::wechat::contact::{ContactBook, ContactKind};
use crate::worker::pull::PullDelegate;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Where the bridge sends what the supervisor must hear (a line on stdout when supervised).
pub type Ipc = Arc<dyn Fn(WorkerMessage) + Send + Sync>;

#[derive(Clone)]
pub struct BridgeSettings {
    pub qr_session_id: String,
    pub machine_id: String,
    pub poll_interval: Duration,
    /// When supervised: the supervisor polls `pull_task` for the account once it agrees
    /// (`crate::worker::pull`).
    pub pull: Option<Arc<PullDelegate>>,
    /// How long contact changes are batched before one `report_contact_update`.
    pub contact_batch: Duration,
    /// The account's send pacing (shared with the driver, which notes rate limiting).
    pub pacer: Arc<Pacer>,
    /// Fetches the URLs of media tasks (guarded against private addresses).
    pub fetcher: Arc<Fetcher>,
}

/// The durable side of reporting: every report is appended to the session's spool before it is
/// sent; the delivery task sends the spool in order until the control plane acknowledges each.
pub struct Outbox {
    pub spool: Arc<std::sync::Mutex<Spool>>,
    pub wake: Arc<tokio::sync::Notify>,
    pub delivery: Arc<DeliveryHandle>,
}

/// What the control plane said about ending, once the session is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BridgeEnd {
    pub exit_flags: Option<ExitFlags>,
}

/// The account as the control plane knows it, once `login` was accepted.
struct LoggedIn {
    account: Account,
    /// Stops the executor, the `pull_task` poller and the WebSocket link.
    stop_tasks: CancellationToken,
    /// WebSocket mode (spec A.8), when the control plane offered it.
    websocket: Option<WsLink>,
}

pub struct Bridge {
    control: ControlClient,
    outbox: Outbox,
    /// A report could not be spooled since the last barrier: the driver must not move past it.
    unspooled: std::sync::atomic::AtomicBool,
    /// Messages spooled since the last confirmed barrier. After a refusal the server sends the
    /// batch again; these are queued already, and skipping them lets a batch larger than the
    /// spool get through in parts instead of refilling the spool with copies every time.
    held: std::collections::HashSet<String>,
    settings: BridgeSettings,
    commands: mpsc::Sender<WorkerCommand>,
    ipc: Ipc,
    logged_in: Option<LoggedIn>,
    refused: bool,
    /// QR codes shown so far (for `qr_count`).
    qr_count: u32,
    updates: Vec<ContactUpdateEntry>,
    tasks: mpsc::Sender<(Option<String>, RawTask)>,
    tasks_rx: Option<mpsc::Receiver<(Option<String>, RawTask)>>,
    cancel: CancellationToken,
    /// Message reports not yet spooled: a run of message events is appended with one write
    /// (group commit; at most one sync, see `commit_batch`) once no event is waiting, or
    /// before anything else is handled.
    batch: Vec<Queued>,
}

/// A message report waiting for the next group commit.
struct Queued {
    action: String,
    wxid: String,
    data: serde_json::Value,
    /// The message it reports, in `held` until it is known to be spooled.
    msg_id: Option<String>,
}

fn queued<R: Report>(r: &R) -> (&'static str, serde_json::Value) {
    (R::ACTION, r.to_data())
}

/// Sleeps until `deadline`; never ends without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Message reports gathered before a group commit is forced (bounds memory and the time the
/// first of them waits).
const MAX_BATCH: usize = 256;

impl Bridge {
    pub fn new(
        control: ControlClient,
        outbox: Outbox,
        settings: BridgeSettings,
        commands: mpsc::Sender<WorkerCommand>,
        ipc: Ipc,
        cancel: CancellationToken,
    ) -> Bridge {
        let (tasks, tasks_rx) = mpsc::channel(256);
        Bridge {
            control,
            outbox,
            unspooled: std::sync::atomic::AtomicBool::new(false),
            held: std::collections::HashSet::new(),
            settings,
            commands,
            ipc,
            logged_in: None,
            refused: false,
            qr_count: 0,
            updates: Vec::new(),
            tasks,
            tasks_rx: Some(tasks_rx),
            cancel,
            batch: Vec::new(),
        }
    }

    fn wxid(&self) -> &str {
        self.logged_in
            .as_ref()
            .map(|l| l.account.wxid.as_str())
            .unwrap_or("")
    }

    /// Consumes the session's events until it ends.
    pub async fn run(
        mut self,
        mut events: mpsc::Receiver<WorkerEvent>,
        acks: Arc<tokio::sync::Mutex<mpsc::Receiver<Ack>>>,
    ) -> BridgeEnd {
        // The delivery task outlives one login; this login takes its acks while it runs.
        let mut acks = acks.lock().await;
        // Armed only while contact changes wait for their batch: an idle session keeps no
        // timer (with a thousand workers on a machine every periodic wake-up costs).
        let mut flush_at: Option<tokio::time::Instant> = None;
        let mut end = BridgeEnd::default();
        loop {
            tokio::select! {
                ev = events.recv() => {
                    let Some(ev) = ev else { break };
                    if let Some(flags) = self.event(ev).await {
                        end.exit_flags = Some(flags);
                    }
                    // Messages queued while more events wait are committed together. A
                    // sender that used up its scheduling budget mid-round (tokio makes a task
                    // yield after about 128 channel operations) leaves the queue empty for a
                    // moment: one yield lets it go on first, so a round of messages is one
                    // write and one post, not two.
                    if !self.batch.is_empty() && events.is_empty() && self.batch.len() < MAX_BATCH {
                        tokio::task::yield_now().await;
                    }
                    if events.is_empty() || self.batch.len() >= MAX_BATCH {
                        self.commit_batch().await;
                    }
                }
                () = sleep_until(flush_at), if flush_at.is_some() => {
                    flush_at = None;
                    self.commit_batch().await;
                    self.flush_updates().await;
                }
                Some(ack) = acks.recv() => {
                    // Reply tasks of delivered reports run without a result (spec A.5).
                    for t in ack.reply_tasks() {
                        let _ = self.tasks.send((None, t)).await;
                    }
                }
            }
            flush_at = match flush_at {
                _ if self.updates.is_empty() => None,
                None => Some(tokio::time::Instant::now() + self.settings.contact_batch),
                armed => armed,
            };
        }
        self.commit_batch().await;
        if self.logged_in.is_some() {
            self.stop_session_tasks();
        }
        self.logged_in = None;
        end
    }

    /// Appends the queued message reports to the spool with one write, and waits until the
    /// write is safe (synced, or acknowledged: [`DeliveryHandle::commit`]). When the
    /// spool cannot take them all, as many as fit go in one by one (so a batch larger than the
    /// spool still gets through in parts); the rest count as not spooled, like a refused report.
    async fn commit_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        let items: Vec<(String, String, serde_json::Value)> = batch
            .iter()
            .map(|q| (q.action.clone(), q.wxid.clone(), q.data.clone()))
            .collect();
        // Written here when that cannot wait for the disk: a trip to the blocking pool and
        // back is two thread wake-ups on the way from WeChat to the control plane.
        let inline = {
            let spool = self.outbox.spool.try_lock().ok();
            spool
                .filter(|s| !s.append_may_block())
                .map(|mut s| append_locked(&mut s, &items))
        };
        let r = match inline {
            Some(appended) => {
                if appended.unsynced.is_some() {
                    self.outbox.wake.notify_one();
                }
                Ok((batch, appended))
            }
            None => {
                let (spool, wake) = (self.outbox.spool.clone(), self.outbox.wake.clone());
                tokio::task::spawn_blocking(move || (batch, append(&spool, &wake, &items))).await
            }
        };
        let (batch, appended) = match r {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "spool task failed");
                self.unspooled
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                // Which were appended is unknown; the batch comes again and duplicates are
                // better than a gap.
                return;
            }
        };
        let (mut done, mut error) = (appended.done, appended.error.map(|e| e.to_string()));
        if let Some((unsynced, last)) = appended.unsynced
            && let Err(e) = self
                .outbox
                .delivery
                .commit(unsynced, last + 1 - done as u64, last)
                .await
        {
            done = 0;
            error = Some(e);
        }
        if let Some(e) = error {
            let unspooled = &batch[done..];
            tracing::error!(action = %unspooled[0].action, reports = unspooled.len(), error = %e, "reports not spooled");
            self.unspooled
                .store(true, std::sync::atomic::Ordering::SeqCst);
            for q in unspooled {
                if let Some(id) = &q.msg_id {
                    self.held.remove(id);
                }
            }
        }
    }

    /// Stops the executor, the poller and the WebSocket link; reports go back to HTTP, one per
    /// post (what is still spooled goes out that way, or as the next login's server allows).
    fn stop_session_tasks(&self) {
        self.outbox.delivery.batch_over_http(None);
        if let Some(l) = &self.logged_in {
            l.stop_tasks.cancel();
            if l.websocket.is_some() {
                self.outbox.delivery.route_over(None);
            }
        }
    }

    async fn report<R: Report>(&self, wxid: &str, r: &R) -> Option<Ack> {
        self.post(R::ACTION, wxid, r.to_data()).await
    }

    /// One report: appended durably to the spool (delivery sends it). A report that cannot be
    /// spooled (the spool is full) is logged and blocks the next barrier, so the SyncKey does not
    /// move past it.
    async fn post(&self, act: &str, wxid: &str, data: serde_json::Value) -> Option<Ack> {
        let (spool, wake) = (self.outbox.spool.clone(), self.outbox.wake.clone());
        let item = [(act.to_owned(), wxid.to_owned(), data)];
        let r = tokio::task::spawn_blocking(move || match append_then_sync(&spool, &wake, &item) {
            (_, Some(e)) => Err(e),
            _ => Ok(()),
        })
        .await;
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(action = act, error = %e, "report not spooled");
                self.unspooled
                    .store(true, std::sync::atomic::Ordering::SeqCst);
            }
            Err(e) => {
                tracing::error!(action = act, error = %e, "spool task failed");
                self.unspooled
                    .store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        None
    }

    async fn qr_status(&self, status: QrStatus, qr_count: u32, reason: Option<String>) {
        let r = QrStatusReport {
            qr_session_id: self.settings.qr_session_id.clone(),
            machine_id: self.settings.machine_id.clone(),
            status,
            reason,
            qr_count,
        };
        let wxid = self.wxid().to_owned();
        self.report(&wxid, &r).await;
    }

    /// Handles one event; returns the exit flags of a `logout` when it sent one.
    async fn event(&mut self, ev: WorkerEvent) -> Option<ExitFlags> {
        if !matches!(ev, WorkerEvent::Message { .. }) {
            // Whatever this event does comes after the messages before it (and a barrier
            // must see them spooled).
            self.commit_batch().await;
        }
        let added = matches!(ev, WorkerEvent::ContactAdded(_));
        if self.refused && !matches!(ev, WorkerEvent::Ended(_) | WorkerEvent::Barrier(_)) {
            return None;
        }
        match ev {
            WorkerEvent::State(_) | WorkerEvent::ScanCancelled => {}
            // Every earlier event has been handled (reported) by now.
            WorkerEvent::Barrier(b) => {
                if self
                    .unspooled
                    .swap(false, std::sync::atomic::Ordering::SeqCst)
                {
                    // Dropping the barrier tells the driver these events are not safe.
                    drop(b);
                } else {
                    self.held.clear();
                    b.release();
                }
            }
            WorkerEvent::Qr { png, refresh, .. } => {
                self.qr_count = refresh;
                (self.ipc)(WorkerMessage::Qr { refresh });
                if self.control.can_upload() {
                    let policy = RetryPolicy::until(Duration::from_secs(30));
                    let r = crate::control::retry::with_retry(
                        "upload_qr",
                        &policy,
                        &self.cancel,
                        || {
                            self.control.upload_qr(
                                &self.settings.qr_session_id,
                                png.to_vec(),
                                &self.settings.machine_id,
                            )
                        },
                    )
                    .await;
                    match r {
                        Ok(()) => tracing::info!(refresh, "QR code uploaded"),
                        Err(e) => tracing::error!(error = %e, "QR upload failed"),
                    }
                }
                self.qr_status(QrStatus::Uploaded, refresh, None).await;
            }
            WorkerEvent::QrExpired { refresh } => {
                self.qr_status(QrStatus::Expired, refresh, None).await
            }
            WorkerEvent::ResumeStep { step, ok, detail } => {
                let status = if ok {
                    QrStatus::Confirmed
                } else {
                    QrStatus::Failed
                };
                self.qr_status(status, 0, Some(format!("resume {step}: {detail}")))
                    .await;
            }
            WorkerEvent::PushLogin { .. } => {
                self.qr_status(
                    QrStatus::Scanned,
                    0,
                    Some("push login sent to the phone".into()),
                )
                .await;
            }
            WorkerEvent::Scanned => self.qr_status(QrStatus::Scanned, self.qr_count, None).await,
            WorkerEvent::Online { account, contacts } => self.online(account, contacts).await,
            WorkerEvent::Message { message, .. } => {
                let Some(l) = &self.logged_in else {
                    return None;
                };
                // A report of this batch was refused, so the whole batch comes again with the
                // old SyncKey; spooling later messages now would put them ahead of the refused
                // one (order per session, B.5). One spooled in an earlier try is queued already.
                if self.unspooled.load(std::sync::atomic::Ordering::SeqCst)
                    || self.held.contains(&message.msg_id)
                {
                    return None;
                }
                let ids = Ids {
                    wxid: &l.account.wxid,
                    user_name: &l.account.user_name,
                };
                let wxid = l.account.wxid.clone();
                let report = if let Some(req) = reports::friend_request(&message) {
                    Some(queued(&req))
                } else {
                    reports::msg_unit(&message, &ids).map(|unit| queued(&NewMsg { msg: unit }))
                };
                let msg_id = (!message.msg_id.is_empty()).then(|| message.msg_id.clone());
                if let Some(id) = &msg_id {
                    self.held.insert(id.clone());
                }
                if let Some((action, data)) = report {
                    self.batch.push(Queued {
                        action: action.to_owned(),
                        wxid,
                        data,
                        msg_id,
                    });
                }
            }
            WorkerEvent::ContactAdded(c) | WorkerEvent::ContactChanged(c) => {
                let Some(l) = &self.logged_in else {
                    return None;
                };
                let ids = Ids {
                    wxid: &l.account.wxid,
                    user_name: &l.account.user_name,
                };
                let wxid = l.account.wxid.clone();
                let entry = match c.kind {
                    ContactKind::Group => ContactUpdateEntry::Group(reports::group_info(&c, &ids)),
                    kind => ContactUpdateEntry::User(UserUpdate {
                        user: reports::user_info(&c),
                        is_friend: kind == ContactKind::Friend,
                    }),
                };
                if added {
                    match c.kind {
                        ContactKind::Friend => {
                            let u = reports::user_info(&c);
                            let nf = NewFriend {
                                fans_wxid: u.wxid,
                                nickname: u.nickname,
                                wx_alias: u.wx_alias,
                                head_img: u.head_img,
                                notice_word: String::new(),
                                sourceusername: String::new(),
                                sourcenickname: String::new(),
                            };
                            self.report(&wxid, &nf).await;
                        }
                        ContactKind::Group => {
                            let g = reports::group_info(&c, &ids);
                            let room = NewRoom {
                                wxid: g.wxid,
                                name: g.name,
                                owner_wxid: g.owner_wxid,
                                head_img: g.head_img,
                                member_info_list: c
                                    .members
                                    .iter()
                                    .map(|m| reports::member_info(m, &ids))
                                    .collect(),
                            };
                            self.report(&wxid, &room).await;
                        }
                        _ => {}
                    }
                }
                self.updates.push(entry);
            }
            WorkerEvent::MembersChanged {
                room,
                owner,
                added,
                removed,
            } => {
                let Some(l) = &self.logged_in else {
                    return None;
                };
                let ids = Ids {
                    wxid: &l.account.wxid,
                    user_name: &l.account.user_name,
                };
                let wxid = l.account.wxid.clone();
                let owner_wxid = if owner.is_empty() {
                    String::new()
                } else {
                    ids.of(&owner)
                };
                for (list, flag) in [
                    (added, MemberChange::Added),
                    (removed, MemberChange::Removed),
                ] {
                    if list.is_empty() {
                        continue;
                    }
                    let change = RoomMemberChange {
                        room_wxid: room.clone(),
                        owner_wxid: owner_wxid.clone(),
                        wxid_list: list.iter().map(|m| ids.of(m)).collect(),
                        flag,
                    };
                    self.report(&wxid, &change).await;
                }
            }
            WorkerEvent::ContactRemoved { user_name } => {
                let wxid = self.wxid().to_owned();
                if wxid.is_empty() {
                    return None;
                }
                if user_name.starts_with("@@") {
                    self.report(
                        &wxid,
                        &RoomRemoved {
                            wxid_removed: user_name,
                        },
                    )
                    .await;
                } else {
                    self.report(
                        &wxid,
                        &FriendRemoved {
                            wxid_removed: user_name,
                        },
                    )
                    .await;
                }
            }
            // The driver keeps the book; a second copy here would double a worker's memory.
            WorkerEvent::ContactsReloaded(_) => {}
            WorkerEvent::Ended(outcome) => return self.ended(outcome).await,
        }
        None
    }

    async fn online(&mut self, account: Account, contacts: Arc<ContactBook>) {
        self.qr_status(QrStatus::Confirmed, self.qr_count, None)
            .await;
        // `login` is sent directly (its answer decides everything); what was spooled before it
        // goes first, so the control plane sees the session's reports in order.
        if !self.outbox.delivery.drained(Duration::from_secs(10)).await {
            tracing::warn!("QR status reports still pending; logging in anyway");
        }
        let data = LoginData {
            nickname: account.nickname.clone(),
            wx_alias: account.alias.clone(),
            head_img: reports::head_img(&account.head_img_url),
            client_version: env!("CARGO_PKG_VERSION").to_owned(),
            nonce: new_nonce(),
            local_ip: String::new(),
            machine_id: self.settings.machine_id.clone(),
            qr_session_id: Some(self.settings.qr_session_id.clone()),
        };
        // An unreachable control plane is waited out (the account stays logged in and its
        // messages queue up behind the login); only a refusal or a bad signature stops it.
        let policy = RetryPolicy {
            max_attempts: usize::MAX,
            deadline: None,
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
        };
        let r = crate::control::retry::with_retry(action::LOGIN, &policy, &self.cancel, || {
            self.control.login(&account.wxid, &data)
        })
        .await;
        let ack = match r {
            Ok(ack) => ack,
            Err(e) => {
                // A refusal, a bad signature, or an answer that cannot be a login_ack: the
                // account must not run unreported, so the session stops here.
                let why = match e {
                    ControlError::LoginRefused { .. } | ControlError::SignatureFailed { .. } => {
                        "the control plane refused the account"
                    }
                    _ => "the login report failed",
                };
                tracing::error!(error = %e, "{why}; stopping without reporting");
                self.refused = true;
                let _ = self
                    .commands
                    .send(WorkerCommand::Refused {
                        detail: e.to_string(),
                    })
                    .await;
                return;
            }
        };
        tracing::info!(wxid = %account.wxid, "control plane accepted the account");
        for t in ack.ack.reply_tasks() {
            let _ = self.tasks.send((None, t)).await;
        }
        let ids = Ids {
            wxid: &account.wxid,
            user_name: &account.user_name,
        };
        // Reports waiting in the spool (this one too) go out in batches from here on, if the
        // server offered them.
        self.outbox.delivery.batch_over_http(ack.report_batch);
        if let Some(most) = ack.report_batch {
            tracing::info!(most, "control plane takes report batches");
        }
        let report = reports::contact_report(&contacts, &ids, ack.flag_report_contact);
        self.report(&account.wxid, &report).await;
        let stop_tasks = self.cancel.child_token();
        let websocket = ack.websocket.as_ref().and_then(|ext| {
            let link = WsLink::start(
                self.control.clone(),
                ext,
                account.wxid.clone(),
                self.tasks.clone(),
                stop_tasks.clone(),
                WsPolicy::default(),
            );
            match link {
                Ok(link) => {
                    tracing::info!(heartbeat = ?ext.heartbeat_interval, "control plane offered WebSocket mode");
                    self.outbox.delivery.route_over(Some(link.sender()));
                    Some(link)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "control plane offered WebSocket mode; staying on HTTP");
                    None
                }
            }
        });
        if let Some(rx) = self.tasks_rx.take() {
            let exec = Executor {
                spool: self.outbox.spool.clone(),
                wake: self.outbox.wake.clone(),
                control: self.control.clone(),
                commands: self.commands.clone(),
                ipc: self.ipc.clone(),
                wxid: account.wxid.clone(),
                user_name: account.user_name.clone(),
                pacer: self.settings.pacer.clone(),
                fetcher: self.settings.fetcher.clone(),
                flag_report_contact: ack.flag_report_contact,
            };
            tokio::spawn(exec.run(rx, stop_tasks.clone()));
            tokio::spawn(poll_tasks(
                self.control.clone(),
                account.wxid.clone(),
                self.settings.poll_interval,
                self.tasks.clone(),
                websocket.as_ref().map(WsLink::state),
                self.settings.pull.clone(),
                stop_tasks.clone(),
            ));
        }
        self.logged_in = Some(LoggedIn {
            account,
            stop_tasks,
            websocket,
        });
    }

    async fn flush_updates(&mut self) {
        if self.updates.is_empty() || self.logged_in.is_none() {
            return;
        }
        let update = ContactUpdate {
            update_list: std::mem::take(&mut self.updates),
        };
        let wxid = self.wxid().to_owned();
        self.report(&wxid, &update).await;
    }

    async fn ended(&mut self, outcome: Outcome) -> Option<ExitFlags> {
        match &outcome {
            Outcome::Abandoned { qr_count } => {
                self.qr_status(QrStatus::Abandoned, *qr_count, Some(outcome.to_string()))
                    .await;
                return None;
            }
            Outcome::Stopped => {
                self.qr_status(
                    QrStatus::Failed,
                    0,
                    Some("stopped before login (the agent is shutting down)".into()),
                )
                .await;
                return None;
            }
            Outcome::LoginFailed { detail } => {
                self.qr_status(QrStatus::Failed, 0, Some(detail.clone()))
                    .await;
                return None;
            }
            Outcome::LoggedOut(LogoutReason::WebForbidden { message })
                if self.logged_in.is_none() =>
            {
                self.qr_status(
                    QrStatus::Failed,
                    0,
                    Some(format!("web login refused (1203): {message}")),
                )
                .await;
            }
            _ => {}
        }
        if self.refused {
            return None;
        }
        self.flush_updates().await;
        let Outcome::LoggedOut(reason) = &outcome else {
            return None;
        };
        if *reason == LogoutReason::Shutdown {
            // The supervised runner told the control plane before stopping the session.
            self.stop_session_tasks();
            return None;
        }
        let wxid = self.wxid().to_owned();
        let data = LogoutData {
            client_version: env!("CARGO_PKG_VERSION").to_owned(),
            machine_id: self.settings.machine_id.clone(),
            reason: reason.as_str().to_owned(),
            retcode: reason.retcode(),
        };
        self.stop_session_tasks();
        // No poll for the account after its logout: the supervisor confirms it stopped.
        if let Some(pull) = &self.settings.pull {
            pull.release();
            if !pull.released(Duration::from_secs(5)).await {
                tracing::debug!("the supervisor did not confirm it stopped polling");
            }
        }
        // Everything reported before the logout goes first (order per session).
        if !self.outbox.delivery.drained(Duration::from_secs(15)).await {
            tracing::warn!(
                "reports still pending in the spool at logout; they go out on the next start"
            );
        }
        match self.control.logout(&wxid, &data).await {
            Ok(flags) => Some(flags),
            Err(e) => {
                tracing::warn!(error = %e, "logout report failed");
                None
            }
        }
    }
}

/// Polls `pull_task` for the account; a task found means "ask again at once". Pauses while the
/// WebSocket is open (the server pushes tasks then, spec A.8). When supervised, it first asks the
/// supervisor to poll instead and, once the supervisor agreed, only waits; it polls itself again
/// only if the supervisor lets go.
async fn poll_tasks(
    control: ControlClient,
    wxid: String,
    every: Duration,
    tasks: mpsc::Sender<(Option<String>, RawTask)>,
    mut websocket: Option<tokio::sync::watch::Receiver<LinkState>>,
    pull: Option<Arc<PullDelegate>>,
    stop: CancellationToken,
) {
    if every.is_zero() {
        return;
    }
    // The supervisor stops polling for us when we stop (session over or tasks stopped).
    let _release = pull.clone().map(Release);
    let mut pulling = pull.as_ref().map(|p| p.subscribe());
    // One wake-up per interval however tokio's timer wheel would round it (crate::alarm).
    let mut alarm = crate::alarm::Alarm::new();
    let mut asked_at: Option<tokio::time::Instant> = None;
    loop {
        if let Some(state) = &mut websocket
            && matches!(*state.borrow_and_update(), LinkState::Open { .. })
        {
            if let Some(p) = &pull {
                p.release();
                asked_at = None;
            }
            tokio::select! {
                changed = state.changed() => {
                    if changed.is_err() {
                        websocket = None;
                    }
                }
                () = stop.cancelled() => return,
            }
            continue;
        }
        if let (Some(p), Some(rx)) = (&pull, &mut pulling) {
            if asked_at.is_none() {
                p.request(&wxid, &tasks);
                asked_at = Some(tokio::time::Instant::now());
            }
            rx.borrow_and_update();
            // Asked and not yet answered: give the supervisor up to one interval before
            // polling ourselves; once it polls, only the socket, a let-go or the end wake us.
            let answered = p.pulls_for(&wxid);
            let waited = asked_at.is_some_and(|t| t.elapsed() >= every);
            if answered || !waited {
                // Resolves to whether the link is gone for good (then it is forgotten, so this
                // never spins on a closed channel).
                let socket = async {
                    match &mut websocket {
                        Some(state) => state.changed().await.is_err(),
                        None => std::future::pending().await,
                    }
                };
                let give_up = async {
                    if answered {
                        std::future::pending::<()>().await
                    } else if let Some(t) = asked_at {
                        tokio::time::sleep_until(t + every).await
                    }
                };
                tokio::select! {
                    gone = socket => {
                        if gone {
                            websocket = None;
                        }
                    }
                    changed = rx.changed() => {
                        if changed.is_err() {
                            pulling = None;
                        }
                    }
                    () = give_up => {}
                    () = stop.cancelled() => return,
                }
                continue;
            }
        }
        let found = tokio::select! {
            r = control.pull_task(&wxid, serde_json::json!({})) => r,
            () = stop.cancelled() => return,
        };
        let wait = match found {
            Ok(Some((id, raw))) => {
                let id = (!id.is_empty()).then_some(id);
                if tasks.send((id, raw)).await.is_err() {
                    return;
                }
                Duration::ZERO
            }
            Ok(None) => every,
            Err(e) => {
                tracing::warn!(error = %e, "pull_task failed");
                every
            }
        };
        if wait.is_zero() {
            continue;
        }
        tokio::select! {
            () = alarm.sleep(wait) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Asks the supervisor to stop polling when the poller ends, however it ends.
struct Release(Arc<PullDelegate>);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// What [`append`] wrote.
struct Appended {
    /// How many of the items went in (the first `done`).
    done: usize,
    /// What stopped the rest.
    error: Option<SpoolError>,
    /// The write, until it is synced, and the spool seq of the last report in it.
    unsynced: Option<(Unsynced, u64)>,
}

/// Appends reports `(action, wxid, data)` to the spool (blocking: run it on the blocking pool)
/// without syncing them. They are written under the spool's lock and `wake` is notified, so
/// delivery can send them at once; the caller syncs them with the lock released, so the sync
/// holds up neither the send nor the next read or write. A batch the spool cannot take whole
/// goes in one by one as far as it fits.
fn append(
    spool: &std::sync::Mutex<Spool>,
    wake: &tokio::sync::Notify,
    items: &[(String, String, serde_json::Value)],
) -> Appended {
    let mut g = spool.lock().unwrap_or_else(|p| p.into_inner());
    let appended = append_locked(&mut g, items);
    drop(g);
    if appended.unsynced.is_some() {
        wake.notify_one();
    }
    appended
}

/// [`append`] into a spool already locked, without the wake.
fn append_locked(g: &mut Spool, items: &[(String, String, serde_json::Value)]) -> Appended {
    crate::worker::memory::note_activity();
    let (done, error, unsynced) = match g.append_batch_unsynced(items) {
        Ok(written) => (items.len(), None, written.map(|(last, u)| (u, last))),
        // Too big together: as many as fit, one by one.
        Err(_) if items.len() > 1 => {
            let (mut done, mut error, mut last) = (0, None, None);
            for (action, wxid, data) in items {
                match g.append_unsynced(action, wxid, data) {
                    Ok((entry, u)) => {
                        done += 1;
                        last = Some((u, entry.seq));
                    }
                    Err(e) => {
                        error = Some(e);
                        break;
                    }
                }
            }
            (done, error, last)
        }
        Err(e) => (0, Some(e), None),
    };
    Appended {
        done,
        error,
        unsynced,
    }
}

/// [`append`], then the sync, and returns how many went in and the error that stopped the
/// rest. A failed sync counts them all as not spooled (the barrier must not let the SyncKey
/// pass them; delivery may still send them, and a repeat is better than a gap).
fn append_then_sync(
    spool: &std::sync::Mutex<Spool>,
    wake: &tokio::sync::Notify,
    items: &[(String, String, serde_json::Value)],
) -> (usize, Option<SpoolError>) {
    let mut a = append(spool, wake, items);
    if let Some((u, _)) = a.unsynced.take()
        && let Err(e) = u.sync()
    {
        a.done = 0;
        a.error = Some(e);
    }
    (a.done, a.error)
}

/// Runs the account's tasks one after another and reports results for those with an id. Its
/// reports go through the session's spool, like every other report, so they are durable and
/// travel over whichever transport delivery uses (HTTP or the WebSocket).
struct Executor {
    spool: Arc<std::sync::Mutex<Spool>>,
    wake: Arc<tokio::sync::Notify>,
    control: ControlClient,
    commands: mpsc::Sender<WorkerCommand>,
    ipc: Ipc,
    wxid: String,
    user_name: String,
    flag_report_contact: u32,
    pacer: Arc<Pacer>,
    fetcher: Arc<Fetcher>,
}

impl Executor {
    async fn run(self, mut rx: mpsc::Receiver<(Option<String>, RawTask)>, stop: CancellationToken) {
        loop {
            let next = tokio::select! {
                t = rx.recv() => t,
                () = stop.cancelled() => return,
            };
            let Some((task_id, raw)) = next else { return };
            let result = match raw.parse() {
                Ok(task) => {
                    tracing::info!(task = %task.describe(), task_id = task_id.as_deref().unwrap_or(""), "running task");
                    self.execute(task, task_id.as_deref()).await
                }
                Err(e) => Err(e.to_string()),
            };
            if let Err(reason) = &result {
                tracing::warn!(
                    task_id = task_id.as_deref().unwrap_or(""),
                    "task failed: {reason}"
                );
            }
            // Task 200 is answered by the supervisor (spec B.4); everything else here.
            if let (Some(id), Some(result)) = (task_id, result.transpose()) {
                let report = match result {
                    Ok(()) => TaskResult::ok(&id),
                    Err(r) => TaskResult::failed(&id, &r),
                };
                if let Err(e) = self.send_report(&report).await {
                    tracing::error!(task_id = id, error = %e, "could not report the task result");
                }
            }
        }
    }

    /// Runs one task. `Ok(None)` means someone else reports the result.
    async fn execute(&self, task: Task, task_id: Option<&str>) -> Result<Option<()>, String> {
        // The strictly limited operations count against the daily caps (spec §8).
        let daily = match &task {
            Task::AddRoomMemberAsFriend { .. } | Task::AcceptFriendRequest { .. } => {
                Some(DailyKind::FriendAdd)
            }
            Task::CreateRoom { .. } => Some(DailyKind::GroupCreate),
            _ => None,
        };
        if let Some(kind) = daily {
            self.pacer.take_daily(kind).map_err(|e| e.to_string())?;
        }
        match task {
            Task::SendMessages {
                to,
                at_list,
                at_style,
                msg_list,
            } => {
                let style = match at_style {
                    AtStyle::Prefix => MentionStyle::Prefix,
                    AtStyle::Placeholder => MentionStyle::Placeholder,
                };
                for (i, unit) in msg_list.into_iter().enumerate() {
                    match unit {
                        PushUnit::Text { text } => {
                            let mentions = if i == 0 { at_list.clone() } else { Vec::new() };
                            self.send_text(&to, text, mentions, style)
                                .await
                                .map_err(|e| format!("msg_list[{i}]: {e}"))?;
                        }
                        other => {
                            let media = self
                                .outgoing(other)
                                .await
                                .map_err(|e| format!("msg_list[{i}]: {e}"))?;
                            self.pacer
                                .acquire()
                                .await
                                .map_err(|e| format!("msg_list[{i}]: {e}"))?;
                            self.op(AccountOp::SendMedia {
                                to: self.user(to.clone()),
                                media,
                            })
                            .await
                            .map_err(|e| format!("msg_list[{i}]: {e}"))?;
                        }
                    }
                }
                Ok(Some(()))
            }
            Task::StartQrSession { qr_session_id } => {
                (self.ipc)(WorkerMessage::StartSession {
                    qr_session_id,
                    task_id: task_id.map(str::to_owned),
                });
                Ok(None)
            }
            Task::RemoveRoomMember { room_wxid, wxid } => self
                .op(AccountOp::RemoveMember {
                    room: room_wxid,
                    member: self.user(wxid),
                })
                .await
                .map(|_| Some(())),
            Task::InviteToRoom {
                room_wxid,
                wxid,
                method,
            } => {
                let direct = method.map(|m| m == InviteMethod::Direct);
                self.op(AccountOp::AddMember {
                    room: room_wxid,
                    member: self.user(wxid),
                    direct,
                })
                .await
                .map(|_| Some(()))
            }
            Task::ReportRoomMembers { room_wxid_list } => {
                let OpResult::Contacts(groups, _) = self
                    .op(AccountOp::GroupDetails {
                        rooms: room_wxid_list,
                    })
                    .await?
                else {
                    return Err("unexpected answer to a group refresh".into());
                };
                let ids = Ids {
                    wxid: &self.wxid,
                    user_name: &self.user_name,
                };
                let report = RoomMemberInfo {
                    room_data_list: groups
                        .iter()
                        .filter(|g| g.kind == ContactKind::Group)
                        .map(|g| RoomData {
                            room_wxid: g.user_name.to_string(),
                            name: g.nick_name.to_string(),
                            owner_wxid: if g.owner_user_name.is_empty() {
                                String::new()
                            } else {
                                ids.of(&g.owner_user_name)
                            },
                            head_img: g.head_img_url(),
                            member_count: u32::try_from(g.members.len()).unwrap_or(u32::MAX),
                            member_info_list: g
                                .members
                                .iter()
                                .map(|m| reports::member_info(m, &ids))
                                .collect(),
                        })
                        .collect(),
                };
                self.send_report(&report).await.map(|_| Some(()))
            }
            Task::AddRoomMemberAsFriend {
                room_wxid: _,
                wxid,
                msg,
            } => self
                .op(AccountOp::AddFriend {
                    user: wxid,
                    greeting: msg,
                })
                .await
                .map(|_| Some(())),
            Task::SetRemark { wxid, remark_name } => self
                .op(AccountOp::SetRemark {
                    user: self.user(wxid),
                    remark: remark_name,
                })
                .await
                .map(|_| Some(())),
            Task::AcceptFriendRequest { v1, v2 } => self
                .op(AccountOp::AcceptFriend {
                    user: v1,
                    ticket: v2,
                })
                .await
                .map(|_| Some(())),
            Task::ReportContacts {
                flag_report_contact,
            } => {
                let OpResult::Book(book) = self.op(AccountOp::Contacts).await? else {
                    return Err("unexpected answer to a contact request".into());
                };
                let ids = Ids {
                    wxid: &self.wxid,
                    user_name: &self.user_name,
                };
                let report = reports::contact_report(
                    &book,
                    &ids,
                    flag_report_contact.unwrap_or(self.flag_report_contact),
                );
                self.send_report(&report).await.map(|_| Some(()))
            }
            Task::ReportUserInfo { wxid } => {
                let OpResult::Contacts(found, book) = self
                    .op(AccountOp::UserDetails {
                        user: self.user(wxid),
                    })
                    .await?
                else {
                    return Err("unexpected answer to a user refresh".into());
                };
                let c = found.into_iter().next().ok_or("no such contact")?;
                let u = reports::user_info(&c);
                let report = UserInfoReport {
                    wxid: u.wxid,
                    wx_alias: u.wx_alias,
                    nickname: u.nickname,
                    remark_name: u.remark_name,
                    head_img: u.head_img,
                    head_img_data: None,
                    sex: u.sex,
                    country: u.country,
                    province: u.province,
                    city: u.city,
                    is_friend: c.kind == ContactKind::Friend,
                    room_list: book
                        .groups()
                        .filter(|g| g.members.iter().any(|m| m.user_name == c.user_name))
                        .map(|g| g.user_name.to_string())
                        .collect(),
                    uin: u.uin,
                };
                self.send_report(&report).await.map(|_| Some(()))
            }
            Task::CreateRoom { member_list } => {
                let members = member_list.into_iter().map(|m| self.user(m)).collect();
                self.op(AccountOp::CreateGroup {
                    members,
                    topic: String::new(),
                })
                .await
                .map(|_| Some(()))
            }
            Task::RenameRoom {
                room_wxid,
                room_name,
            } => self
                .op(AccountOp::RenameGroup {
                    room: room_wxid,
                    name: room_name,
                })
                .await
                .map(|_| Some(())),
            Task::UploadFile { file_index } => {
                let OpResult::File {
                    bytes,
                    name,
                    content_type,
                } = self
                    .op(AccountOp::Download {
                        file_index: file_index.clone(),
                    })
                    .await?
                else {
                    return Err("unexpected answer to a download".into());
                };
                if !self.control.can_upload() {
                    return Err("no [control] upload_url is configured".into());
                }
                self.control
                    .upload_file(&file_index, &name, &content_type, bytes)
                    .await
                    .map(|_| Some(()))
                    .map_err(|e| format!("upload: {e}"))
            }
            other => Err(unsupported(&other)),
        }
    }

    /// Turns a media push unit into an outgoing message: fetch the URL through the guarded
    /// fetcher, sniff what it really is, and choose how the web protocol can send it.
    async fn outgoing(&self, unit: PushUnit) -> Result<OutgoingMedia, String> {
        use super::media::{SendPlan, plan_image_send, plan_video_send, sniff};
        let fetch =
            |url: String| async move { self.fetcher.fetch(&url).await.map_err(|e| e.to_string()) };
        let as_file = |f: &super::fetch::Fetched| OutgoingMedia::File {
            bytes: f.bytes.to_vec(),
            name: f.file_name_or_default(),
            content_type: f.content_type.clone(),
        };
        match unit {
            PushUnit::Image { url } | PushUnit::Gif { url } => {
                let f = fetch(url).await?;
                let sniffed = sniff(&f.bytes);
                Ok(match plan_image_send(&sniffed) {
                    SendPlan::Image => OutgoingMedia::Image {
                        bytes: f.bytes.to_vec(),
                        name: f.file_name_or_default(),
                        content_type: sniffed.content_type.to_owned(),
                    },
                    SendPlan::Gif => OutgoingMedia::Gif {
                        bytes: f.bytes.to_vec(),
                        name: f.file_name_or_default(),
                    },
                    _ => as_file(&f),
                })
            }
            PushUnit::Video { url } => {
                let f = fetch(url).await?;
                Ok(match plan_video_send(&sniff(&f.bytes)) {
                    SendPlan::Video => OutgoingMedia::Video {
                        bytes: f.bytes.to_vec(),
                        name: f.file_name_or_default(),
                    },
                    _ => as_file(&f),
                })
            }
            PushUnit::File { url } => Ok(as_file(&fetch(url).await?)),
            PushUnit::Link {
                url,
                title,
                desc,
                img_url,
            } => Ok(OutgoingMedia::Link {
                title,
                desc,
                url,
                thumb_url: img_url,
            }),
            PushUnit::MiniProgram { raw_msg, .. } => Ok(OutgoingMedia::AppXml { xml: raw_msg }),
            PushUnit::Card { .. } => Err(
                "push unit card (msg_type 42): the web protocol cannot send contact cards".into(),
            ),
            PushUnit::Text { .. } => Err("a text is not a media message".into()),
            PushUnit::Unknown { msg_type, .. } => {
                Err(format!("push unit msg_type {msg_type} is unknown"))
            }
        }
    }

    /// The own wxid in a task means the own UserName.
    fn user(&self, wxid: String) -> String {
        if wxid == self.wxid {
            self.user_name.clone()
        } else {
            wxid
        }
    }

    async fn op(&self, op: AccountOp) -> Result<OpResult, String> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(WorkerCommand::Op { op, reply: tx })
            .await
            .map_err(|_| "the session has ended".to_owned())?;
        rx.await
            .map_err(|_| "the session ended before the operation finished".to_owned())?
    }

    /// Appends a report to the spool; delivery sends it.
    async fn send_report<R: Report>(&self, r: &R) -> Result<(), String> {
        let (spool, wake) = (self.spool.clone(), self.wake.clone());
        let item = [(R::ACTION.to_owned(), self.wxid.clone(), r.to_data())];
        let appended =
            tokio::task::spawn_blocking(move || match append_then_sync(&spool, &wake, &item) {
                (_, Some(e)) => Err(e),
                _ => Ok(()),
            })
            .await;
        match appended {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("{}: not spooled: {e}", R::ACTION)),
            Err(e) => Err(format!("{}: spool task failed: {e}", R::ACTION)),
        }
    }

    async fn send_text(
        &self,
        to: &str,
        text: String,
        mentions: Vec<String>,
        style: MentionStyle,
    ) -> Result<(), String> {
        self.pacer.acquire().await.map_err(|e| e.to_string())?;
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(WorkerCommand::SendText {
                to: to.to_owned(),
                text,
                mentions,
                style,
                reply: tx,
            })
            .await
            .map_err(|_| "the session has ended".to_owned())?;
        let receipt = rx
            .await
            .map_err(|_| "the session ended before the send".to_owned())??;
        tracing::debug!(msg_id = %receipt.msg_id, "sent");
        Ok(())
    }
}

/// Why a task cannot be done over the web protocol (spec A.5: answered, never silently).
fn unsupported(task: &Task) -> String {
    let why = match task {
        Task::SetRoomNickname { .. } => {
            "the web protocol has no call to set one's nickname in a group"
        }
        Task::LeaveRoom { .. } => "the web protocol has no call to leave a group",
        Task::RoomAnnouncement { .. } => "the web protocol cannot post group announcements",
        Task::AcceptTransfer { .. } => "money transfers can only be accepted on the phone",
        Task::DeleteFriend { .. } => "the web protocol has no call to delete a friend",
        Task::CheckZombie { .. } => "the web protocol cannot check whether a friend still has us",
        Task::AcceptRoomInvite { .. } => "group invitation links can only be accepted on the phone",
        Task::SetTag { .. } | Task::RenameTag { .. } => {
            "contact tags are not available over the web protocol"
        }
        Task::Unknown { .. } => "unknown task type",
        _ => "not available over the web protocol",
    };
    format!("task {} ({}): {why}", task.type_number(), task.describe())
}
