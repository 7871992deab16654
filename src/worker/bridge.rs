//! The bridge between one session and the control plane (control-plane spec A.3–A.9, B.1–B.4):
//! QR uploads and QR status, the `login` handshake with its signature check, contacts and
//! messages as reports, tasks pulled for the account or handed back in acks, and `logout` with
//! the reason. Tasks run on their own task so a slow send never stalls the event flow.

use super::events::{Account, MentionStyle, WorkerCommand, WorkerEvent};
use super::ipc::WorkerMessage;
use super::reports::{self, Ids};
use super::state::{LogoutReason, Outcome};
use crate::control::envelope::{Ack, ExitFlags, RawTask, action};
use crate::control::reports::{
    ContactUpdate, ContactUpdateEntry, FriendRemoved, LoginData, LogoutData, NewFriend, NewMsg,
    QrStatus, QrStatusReport, Report, RoomRemoved, UserUpdate,
};
use crate::control::retry::RetryPolicy;
use crate::control::signature::new_nonce;
use crate::control::tasks::{AtStyle, PushUnit, Task};
use crate::control::{ControlClient, ControlError, PostOptions};
use crate::wechat::contact::{ContactBook, ContactKind};
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
    /// How long contact changes are batched before one `report_contact_update`.
    pub contact_batch: Duration,
}

/// What the control plane said about ending, once the session is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BridgeEnd {
    pub exit_flags: Option<ExitFlags>,
}

/// The account as the control plane knows it, once `login` was accepted.
struct LoggedIn {
    account: Account,
    stop_tasks: CancellationToken,
}

pub struct Bridge {
    control: ControlClient,
    settings: BridgeSettings,
    commands: mpsc::Sender<WorkerCommand>,
    ipc: Ipc,
    logged_in: Option<LoggedIn>,
    refused: bool,
    book: Option<Arc<ContactBook>>,
    updates: Vec<ContactUpdateEntry>,
    tasks: mpsc::Sender<(Option<String>, RawTask)>,
    tasks_rx: Option<mpsc::Receiver<(Option<String>, RawTask)>>,
    cancel: CancellationToken,
}

/// Reports are retried for this long before being given up (the durable spool replaces this).
const REPORT_RETRY: Duration = Duration::from_secs(120);

impl Bridge {
    pub fn new(
        control: ControlClient,
        settings: BridgeSettings,
        commands: mpsc::Sender<WorkerCommand>,
        ipc: Ipc,
        cancel: CancellationToken,
    ) -> Bridge {
        let (tasks, tasks_rx) = mpsc::channel(256);
        Bridge {
            control,
            settings,
            commands,
            ipc,
            logged_in: None,
            refused: false,
            book: None,
            updates: Vec::new(),
            tasks,
            tasks_rx: Some(tasks_rx),
            cancel,
        }
    }

    fn wxid(&self) -> &str {
        self.logged_in
            .as_ref()
            .map(|l| l.account.wxid.as_str())
            .unwrap_or("")
    }

    /// Consumes the session's events until it ends.
    pub async fn run(mut self, mut events: mpsc::Receiver<WorkerEvent>) -> BridgeEnd {
        let mut flush = tokio::time::interval(self.settings.contact_batch);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut end = BridgeEnd::default();
        loop {
            tokio::select! {
                ev = events.recv() => {
                    let Some(ev) = ev else { break };
                    if let Some(flags) = self.event(ev).await {
                        end.exit_flags = Some(flags);
                    }
                }
                _ = flush.tick() => self.flush_updates().await,
            }
        }
        if let Some(l) = self.logged_in.take() {
            l.stop_tasks.cancel();
        }
        end
    }

    async fn report<R: Report>(&self, wxid: &str, r: &R) -> Option<Ack> {
        self.post(R::ACTION, wxid, r.to_data()).await
    }

    /// One report, retried on transient failure; its reply tasks are queued for execution.
    async fn post(&self, act: &str, wxid: &str, data: serde_json::Value) -> Option<Ack> {
        let policy = RetryPolicy::until(REPORT_RETRY);
        match self
            .control
            .post_with_retry(
                act,
                wxid,
                data,
                PostOptions::default(),
                &policy,
                &self.cancel,
            )
            .await
        {
            Ok(ack) => {
                for t in ack.reply_tasks() {
                    let _ = self.tasks.send((None, t)).await;
                }
                Some(ack)
            }
            Err(e) => {
                tracing::error!(action = act, error = %e, "report not delivered");
                None
            }
        }
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
        if self.refused && !matches!(ev, WorkerEvent::Ended(_)) {
            return None;
        }
        match ev {
            WorkerEvent::State(_) | WorkerEvent::ScanCancelled => {}
            WorkerEvent::Qr { png, refresh, .. } => {
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
            WorkerEvent::Scanned => self.qr_status(QrStatus::Scanned, 0, None).await,
            WorkerEvent::Online { account, contacts } => self.online(account, contacts).await,
            WorkerEvent::Message { message, .. } => {
                let Some(l) = &self.logged_in else {
                    return None;
                };
                let ids = Ids {
                    wxid: &l.account.wxid,
                    user_name: &l.account.user_name,
                };
                let wxid = l.account.wxid.clone();
                if let Some(req) = reports::friend_request(&message) {
                    self.report(&wxid, &req).await;
                } else if let Some(unit) = reports::msg_unit(&message, &ids) {
                    self.report(&wxid, &NewMsg { msg: unit }).await;
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
                let entry = match c.kind {
                    ContactKind::Group => ContactUpdateEntry::Group(reports::group_info(&c, &ids)),
                    kind => ContactUpdateEntry::User(UserUpdate {
                        user: reports::user_info(&c),
                        is_friend: kind == ContactKind::Friend,
                    }),
                };
                self.updates.push(entry);
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
            WorkerEvent::ContactsReloaded(book) => self.book = Some(book),
            WorkerEvent::Ended(outcome) => return self.ended(outcome).await,
        }
        None
    }

    async fn online(&mut self, account: Account, contacts: Arc<ContactBook>) {
        self.qr_status(QrStatus::Confirmed, 0, None).await;
        let data = LoginData {
            nickname: account.nickname.clone(),
            wx_alias: account.alias.clone(),
            head_img: account.head_img_url.clone(),
            client_version: env!("CARGO_PKG_VERSION").to_owned(),
            nonce: new_nonce(),
            local_ip: String::new(),
            machine_id: self.settings.machine_id.clone(),
            qr_session_id: Some(self.settings.qr_session_id.clone()),
        };
        let policy = RetryPolicy::until(REPORT_RETRY);
        let r = crate::control::retry::with_retry(action::LOGIN, &policy, &self.cancel, || {
            self.control.login(&account.wxid, &data)
        })
        .await;
        let ack = match r {
            Ok(ack) => ack,
            Err(e @ (ControlError::LoginRefused { .. } | ControlError::SignatureFailed { .. })) => {
                tracing::error!(error = %e, "the control plane refused the account; stopping without reporting");
                self.refused = true;
                let _ = self
                    .commands
                    .send(WorkerCommand::Refused {
                        detail: e.to_string(),
                    })
                    .await;
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "login report failed; stopping");
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
        let report = reports::contact_report(&contacts, &ids, ack.flag_report_contact);
        self.report(&account.wxid, &report).await;
        let stop_tasks = self.cancel.child_token();
        if let Some(rx) = self.tasks_rx.take() {
            let exec = Executor {
                control: self.control.clone(),
                commands: self.commands.clone(),
                ipc: self.ipc.clone(),
                wxid: account.wxid.clone(),
            };
            tokio::spawn(exec.run(rx, stop_tasks.clone()));
            tokio::spawn(poll_tasks(
                self.control.clone(),
                account.wxid.clone(),
                self.settings.poll_interval,
                self.tasks.clone(),
                stop_tasks.clone(),
            ));
        }
        self.book = Some(contacts);
        self.logged_in = Some(LoggedIn {
            account,
            stop_tasks,
        });
    }

    async fn flush_updates(&mut self) {
        if self.updates.is_empty() || self.logged_in.is_none() {
            return;
        }
        let update = ContactUpdate {
            update_list: std::mem::take(&mut self.updates),
        };
        // Friends that just appeared also get their own `report_new_friend`.
        let wxid = self.wxid().to_owned();
        for e in &update.update_list {
            if let ContactUpdateEntry::User(u) = e
                && u.is_friend
                && self
                    .book
                    .as_ref()
                    .is_some_and(|b| b.get(&u.user.wxid).is_none())
            {
                let nf = NewFriend {
                    fans_wxid: u.user.wxid.clone(),
                    nickname: u.user.nickname.clone(),
                    wx_alias: u.user.wx_alias.clone(),
                    head_img: u.user.head_img.clone(),
                    notice_word: String::new(),
                    sourceusername: String::new(),
                    sourcenickname: String::new(),
                };
                self.report(&wxid, &nf).await;
            }
        }
        self.report(&wxid, &update).await;
    }

    async fn ended(&mut self, outcome: Outcome) -> Option<ExitFlags> {
        match &outcome {
            Outcome::Abandoned { qr_count } => {
                self.qr_status(QrStatus::Abandoned, *qr_count, Some(outcome.to_string()))
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
            if let Some(l) = &self.logged_in {
                l.stop_tasks.cancel();
            }
            return None;
        }
        let wxid = self.wxid().to_owned();
        let data = LogoutData {
            client_version: env!("CARGO_PKG_VERSION").to_owned(),
            machine_id: self.settings.machine_id.clone(),
            reason: reason.as_str().to_owned(),
            retcode: reason.retcode(),
        };
        if let Some(l) = &self.logged_in {
            l.stop_tasks.cancel();
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

/// Polls `pull_task` for the account; a task found means "ask again at once".
async fn poll_tasks(
    control: ControlClient,
    wxid: String,
    every: Duration,
    tasks: mpsc::Sender<(Option<String>, RawTask)>,
    stop: CancellationToken,
) {
    if every.is_zero() {
        return;
    }
    loop {
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
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Runs the account's tasks one after another and reports results for those with an id.
struct Executor {
    control: ControlClient,
    commands: mpsc::Sender<WorkerCommand>,
    ipc: Ipc,
    wxid: String,
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
                let (ok, reason) = match result {
                    Ok(()) => (true, String::new()),
                    Err(r) => (false, r),
                };
                if let Err(e) = self
                    .control
                    .report_task_result(&self.wxid, &id, ok, &reason)
                    .await
                {
                    tracing::warn!(task_id = id, error = %e, "could not report the task result");
                }
            }
        }
    }

    /// Runs one task. `Ok(None)` means someone else reports the result.
    async fn execute(&self, task: Task, task_id: Option<&str>) -> Result<Option<()>, String> {
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
                            return Err(format!(
                                "msg_list[{i}]: push unit {} (msg_type {}) is not supported by this agent yet",
                                other.kind(),
                                other.msg_type()
                            ));
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
            other => Err(format!(
                "task {} ({}) is not supported by this agent yet",
                other.type_number(),
                other.describe()
            )),
        }
    }

    async fn send_text(
        &self,
        to: &str,
        text: String,
        mentions: Vec<String>,
        style: MentionStyle,
    ) -> Result<(), String> {
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
