//! The session state machine: QR login → ticket exchange → init → contacts → sync loop, with
//! commands (sends, logout) served while the long poll is outstanding. Everything the session
//! learns goes out as [`WorkerEvent`]s; how it ended is the returned [`Outcome`].

use super::events::{
    Account, AccountOp, Barrier, MentionStyle, OpResult, OutgoingMedia, SendReceipt, WorkerCommand,
    WorkerEvent, compose_mentions,
};
use super::pacing::{Pacer, is_rate_limit_notice};
use super::persist;
use super::qr;
use super::saver::Saver;
use super::state::{LogoutReason, Outcome, SessionState};
use crate::backoff::Backoff;
use crate::config::Config;
use crate::wechat::client::{ClientSettings, InitData, SyncData, WebClient};
use crate::wechat::contact::{Contact, ContactBook, ContactKind, RawContact, Upsert};
use crate::wechat::error::WechatError;
use crate::wechat::login::{LoginEnd, LoginEvent, LoginObserver, QrBounds, qr_login};
use crate::wechat::message::{Chat, Message, MessageKind, parse_message};
use crate::wechat::sync::{SyncLoop, SyncSettings, SyncStep};
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// What the owner wants from this session.
#[derive(Clone)]
pub struct SessionSpec {
    pub session_id: String,
    /// On shutdown, log the account out (foreground Ctrl-C) or keep it for a resume (drain).
    pub logout_on_shutdown: bool,
    /// Send pacing shared with whoever issues sends (the task executor, the console).
    pub pacer: Arc<Pacer>,
}

/// Runs one session to its end.
pub async fn run(
    config: &Config,
    spec: SessionSpec,
    events: mpsc::Sender<WorkerEvent>,
    commands: mpsc::Receiver<WorkerCommand>,
    shutdown: CancellationToken,
) -> Outcome {
    let settings = ClientSettings {
        login: config.wechat.login_url.clone(),
        desktop_mode: config.wechat.desktop_mode,
        request_timeout: config.wechat.request_timeout,
        longpoll_timeout: config.wechat.longpoll_timeout,
    };
    let client = match WebClient::new(settings.clone()) {
        Ok(c) => c,
        Err(e) => {
            return Outcome::LoginFailed {
                detail: e.to_string(),
            };
        }
    };
    // One span per session; `wxid` is filled in once the account is known.
    let span = tracing::info_span!("session", session = %spec.session_id, pid = std::process::id(), wxid = tracing::field::Empty);
    let spec_id = spec.session_id.clone();
    let mut session = Session {
        config,
        spec,
        client,
        events,
        commands,
        shutdown,
        book: None,
        recent: RecentIds::new(4096),
        media: super::ops::MediaIndex::new(10_000),
        saver: Saver::new(persist::session_dir(&config.agent.state_dir, &spec_id)),
        settings,
        logged_out_remote: false,
    };
    async move {
        let outcome = session.run().await;
        tracing::info!(exit = outcome.exit().code(), "session ended: {outcome}");
        session.emit(WorkerEvent::Ended(outcome.clone())).await;
        outcome
    }
    .instrument(span)
    .await
}

struct Session<'a> {
    config: &'a Config,
    spec: SessionSpec,
    client: WebClient,
    events: mpsc::Sender<WorkerEvent>,
    commands: mpsc::Receiver<WorkerCommand>,
    shutdown: CancellationToken,
    book: Option<ContactBook>,
    recent: RecentIds,
    media: super::ops::MediaIndex,
    settings: ClientSettings,
    /// Writes `state_dir/sessions/<id>/session.json`.
    saver: Saver,
    /// webwxlogout was sent: the saved session is worthless.
    logged_out_remote: bool,
}

impl Session<'_> {
    async fn emit(&self, ev: WorkerEvent) {
        // The receiver only goes away when the owner is shutting down; nothing left to tell then.
        let _ = self.events.send(ev).await;
    }

    async fn state(&self, s: SessionState) {
        tracing::info!(state = s.name(), "session state");
        self.emit(WorkerEvent::State(s)).await;
    }

    async fn run(&mut self) -> Outcome {
        self.state(SessionState::Starting).await;
        let init = match self.resume_or_login().await {
            Ok(init) => init,
            Err(outcome) => return outcome,
        };
        if let Err(e) = self.client.status_notify().await {
            tracing::warn!(error = %e, "webwxstatusnotify failed; continuing");
        }
        // Consumed here: the raw webwxinit answer (hundreds of KiB with its member lists) must
        // not live on in this future for the whole session.
        let InitData { user, contacts, .. } = init;
        let me = user.user_name.clone();
        let mut book = ContactBook::new(Contact::from_raw(user, &me));
        Self::merge_init(&mut book, contacts);
        match self
            .retrying("webwxgetcontact", async |c: &WebClient| {
                c.get_contacts().await
            })
            .await
        {
            Ok(list) => {
                let me = book.self_user().user_name.clone();
                book.upsert_all(list.into_iter().map(|raw| Contact::from_raw(raw, &me)));
            }
            Err(out) => return out,
        }
        self.load_group_members(&mut book, None).await;
        self.renew_connections();
        let me = book.self_user();
        let account = Account {
            wxid: self.client.uin(),
            user_name: me.user_name.to_string(),
            nickname: me.display_name().to_owned(),
            alias: me.alias.to_string(),
            head_img_url: me.head_img_url(),
        };
        tracing::Span::current().record("wxid", account.wxid.as_str());
        tracing::info!(
            friends = book.friends().count(),
            groups = book.groups().count(),
            "online"
        );
        self.state(SessionState::Online {
            wxid: account.wxid.clone(),
            nickname: account.nickname.clone(),
        })
        .await;
        let snapshot = Arc::new(book.clone());
        self.book = Some(book);
        self.emit(WorkerEvent::Online {
            account,
            contacts: snapshot,
        })
        .await;
        self.save();
        let outcome = self.sync_until_end().await;
        self.settle(&outcome);
        outcome
    }

    /// Resume first (DESIGN §3.3): the saved session via webwxinit, then push login, then a
    /// fresh QR code for the same session id. Each step is logged and reported.
    async fn resume_or_login(&mut self) -> Result<InitData, Outcome> {
        match persist::load(self.saver.dir()) {
            Ok(Some(saved)) => match self.resume(saved).await {
                Ok(init) => return Ok(init),
                Err(Some(outcome)) => return Err(outcome),
                Err(None) => {}
            },
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "ignoring the saved session");
                if matches!(e, persist::PersistError::Corrupt { .. }) {
                    let _ = persist::delete(self.saver.dir());
                }
            }
        }
        self.qr_flow().await
    }

    async fn step(&self, step: &'static str, ok: bool, detail: String) {
        if ok {
            tracing::info!(step, "resume: {detail}");
        } else {
            tracing::info!(step, "resume step failed: {detail}");
        }
        self.emit(WorkerEvent::ResumeStep { step, ok, detail })
            .await;
    }

    /// `Err(None)`: fall back to a fresh QR code; `Err(Some)`: the session ends (e.g. the
    /// network is down — the saved session is kept for the next try).
    async fn resume(&mut self, saved: persist::SavedSession) -> Result<InitData, Option<Outcome>> {
        tracing::info!(wxid = %saved.wxid, "found a saved session; resuming");
        self.client = match WebClient::with_session(self.settings.clone(), saved.web) {
            Ok(c) => c,
            Err(e) => {
                self.step("webwxinit", false, format!("saved session unusable: {e}"))
                    .await;
                return Err(None);
            }
        };
        self.state(SessionState::LoggingIn).await;
        match self
            .retrying("webwxinit", async |c: &WebClient| c.init(true).await)
            .await
        {
            Ok(init) => {
                self.step("webwxinit", true, "saved session accepted".into())
                    .await;
                return Ok(init);
            }
            Err(out @ Outcome::LoggedOut(LogoutReason::Network { .. })) => return Err(Some(out)),
            Err(out @ Outcome::LoginFailed { .. }) => return Err(Some(out)),
            Err(out) => {
                self.step(
                    "webwxinit",
                    false,
                    format!("saved session rejected ({out})"),
                )
                .await
            }
        }
        match self.push_flow().await {
            Ok(init) => {
                self.step("push_login", true, "confirmed on the phone".into())
                    .await;
                return Ok(init);
            }
            Err(detail) => self.step("push_login", false, detail).await,
        }
        if let Err(e) = persist::delete(self.saver.dir()) {
            tracing::warn!(error = %e, "could not delete the rejected session");
        }
        self.client = match WebClient::new(self.settings.clone()) {
            Ok(c) => c,
            Err(e) => {
                return Err(Some(Outcome::LoginFailed {
                    detail: e.to_string(),
                }));
            }
        };
        self.step("qr", true, "falling back to a new QR code".into())
            .await;
        Err(None)
    }

    /// Push login (spec §3.20): the phone is asked to confirm; bounded by `[qr] max_wait`.
    async fn push_flow(&mut self) -> Result<InitData, String> {
        let uuid = self.client.push_login().await.map_err(|e| e.to_string())?;
        self.emit(WorkerEvent::PushLogin { uuid: uuid.clone() })
            .await;
        let deadline = tokio::time::Instant::now() + self.config.qr.max_wait;
        let mut first = true;
        let redirect = loop {
            let poll = tokio::select! {
                r = self.client.poll_login(&uuid, first) => r,
                () = tokio::time::sleep_until(deadline) => return Err("nobody confirmed the push login in time".into()),
                () = self.shutdown.cancelled() => return Err("stopped".into()),
            };
            first = false;
            match poll {
                Ok(crate::wechat::parse::LoginPoll::Confirmed { redirect_uri }) => {
                    break redirect_uri;
                }
                Ok(
                    crate::wechat::parse::LoginPoll::Waiting
                    | crate::wechat::parse::LoginPoll::Scanned { .. },
                ) => {}
                Ok(other) => return Err(format!("push login ended: {other:?}")),
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, "push login poll failed; retrying")
                }
                Err(e) => return Err(e.to_string()),
            }
        };
        self.client
            .new_login_page(&redirect)
            .await
            .map_err(|e| e.to_string())?;
        self.client.init(false).await.map_err(|e| e.to_string())
    }

    /// A fresh QR login through to webwxinit.
    async fn qr_flow(&mut self) -> Result<InitData, Outcome> {
        let bounds = QrBounds {
            max_refreshes: self.config.qr.max_refreshes,
            max_wait: self.config.qr.max_wait,
        };
        let mut forward = QrForwarder {
            events: self.events.clone(),
        };
        let end = qr_login(&self.client, bounds, &self.shutdown, &mut forward).await;
        let redirect_uri = match end {
            Ok(LoginEnd::Confirmed { redirect_uri }) => redirect_uri,
            Ok(LoginEnd::Abandoned { qr_count }) => return Err(Outcome::Abandoned { qr_count }),
            Ok(LoginEnd::Cancelled) => return Err(Outcome::Stopped),
            Err(e) => {
                return Err(Outcome::LoginFailed {
                    detail: e.to_string(),
                });
            }
        };
        self.state(SessionState::LoggingIn).await;
        match self.client.new_login_page(&redirect_uri).await {
            Ok(()) => {}
            Err(WechatError::LoginRefused { ret: 1203, message }) => {
                tracing::error!(%message, "web login refused (1203)");
                return Err(Outcome::LoggedOut(LogoutReason::WebForbidden { message }));
            }
            Err(e) => {
                return Err(Outcome::LoginFailed {
                    detail: e.to_string(),
                });
            }
        }
        self.retrying("webwxinit", async |c: &WebClient| c.init(false).await)
            .await
    }

    /// Saves the session (credentials, cookies, keys) for a resume, now.
    fn save(&mut self) {
        if let Some(saved) = self.saved() {
            self.saver.write(saved);
        }
    }

    fn saved(&self) -> Option<persist::SavedSession> {
        let book = self.book.as_ref()?;
        Some(persist::SavedSession {
            version: persist::FORMAT_VERSION,
            session_id: self.spec.session_id.clone(),
            saved_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            wxid: self.client.uin(),
            nickname: book.self_user().nick_name.to_string(),
            web: self.client.session(),
        })
    }

    /// Keeps the saved session only when the account may still be logged in (a drain or a
    /// network outage); deletes it after any logout, so it never breaks the next start.
    fn settle(&mut self, outcome: &Outcome) {
        let keep = !self.logged_out_remote
            && matches!(
                outcome,
                Outcome::LoggedOut(LogoutReason::Shutdown | LogoutReason::Network { .. })
            );
        if keep {
            // Also the keys a deferred save still held back.
            self.save();
        } else {
            self.saver.forget();
            if let Err(e) = persist::delete(self.saver.dir()) {
                tracing::warn!(error = %e, "could not delete the saved session");
            }
        }
    }

    /// Retries transient failures of a login-time call with backoff until `network_give_up`;
    /// a retcode that ends sessions ends this one.
    async fn retrying<T>(
        &self,
        what: &'static str,
        f: impl AsyncFn(&WebClient) -> Result<T, WechatError>,
    ) -> Result<T, Outcome> {
        let started = Instant::now();
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(15));
        loop {
            let r = tokio::select! {
                r = f(&self.client) => r,
                () = self.shutdown.cancelled() => return Err(Outcome::Stopped),
            };
            match r {
                Ok(v) => return Ok(v),
                Err(e) => {
                    if let Some(reason) = e.ret().and_then(LogoutReason::from_retcode) {
                        return Err(Outcome::LoggedOut(reason));
                    }
                    if !e.is_transient() {
                        return Err(Outcome::LoggedOut(LogoutReason::ExpiredSession {
                            detail: e.to_string(),
                        }));
                    }
                    if started.elapsed() >= self.config.wechat.network_give_up {
                        return Err(Outcome::LoggedOut(LogoutReason::Network {
                            detail: e.to_string(),
                        }));
                    }
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "{what} failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.shutdown.cancelled() => return Err(Outcome::Stopped),
                    }
                }
            }
        }
    }

    fn merge_init(book: &mut ContactBook, contacts: Vec<RawContact>) {
        let me = book.self_user().user_name.to_string();
        book.upsert_all(
            contacts
                .into_iter()
                .filter(|raw| raw.user_name != me)
                .map(|raw| Contact::from_raw(raw, &me)),
        );
    }

    /// After the contact lists are read: lets go of the connections whose read buffers grew
    /// to fit them ([`WebClient::renew_connections`]).
    fn renew_connections(&self) {
        if let Err(e) = self.client.renew_connections() {
            tracing::warn!(error = %e, "could not renew the HTTP client; keeping the old one");
        }
    }

    /// Fetches full member lists for groups that lack them, 50 groups per request. `only`
    /// restricts it to the named groups (e.g. one a message came from). Failures are logged:
    /// a group without members still works, its senders just show as ids.
    async fn load_group_members(&self, book: &mut ContactBook, only: Option<&[String]>) {
        let wanted: Vec<String> = match only {
            Some(names) => names.to_vec(),
            None => book.groups_needing_members(),
        };
        for chunk in wanted.chunks(50) {
            if let Err(e) = super::ops::refresh(&self.client, book, chunk).await {
                tracing::warn!(error = %e, groups = chunk.len(), "could not load group members");
            }
        }
    }

    async fn sync_until_end(&mut self) -> Outcome {
        let mut sync = SyncLoop::new(SyncSettings::new(
            self.config.wechat.network_give_up,
            self.config.wechat.deaf_after,
        ));
        loop {
            let step = {
                let fut = sync.next(&self.client, &self.shutdown);
                tokio::pin!(fut);
                loop {
                    let save_due = self.saver.due();
                    tokio::select! {
                        step = &mut fut => break step,
                        // A deferred save, written while the next long poll waits: a quiet
                        // session keeps its newest key on disk too.
                        () = tokio::time::sleep_until(save_due.unwrap_or_else(Instant::now)), if save_due.is_some() => {
                            if let Some(saved) = self.saved() {
                                self.saver.write_behind(saved);
                            } else {
                                self.saver.forget();
                            }
                        }
                        Some(cmd) = self.commands.recv() => {
                            if let Some(outcome) = Self::command(&self.client, &self.spec.pacer, self.book.as_mut(), &self.media, &self.events, &mut self.recent, cmd).await {
                                // Logout and refusal both sent webwxlogout.
                                self.logged_out_remote = true;
                                return outcome;
                            }
                        }
                    }
                }
            };
            match step {
                SyncStep::Data(data, keys) => {
                    crate::worker::memory::note_activity();
                    let (fresh, rollback) = self.apply(data).await;
                    // Move the key past these events only once the owner has them safe
                    // (spooled): a crash before that re-fetches them instead of losing them.
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    self.emit(WorkerEvent::Barrier(Barrier(tx))).await;
                    if rx.await.is_err() {
                        // Not spooled (the spool is full): keep the key so nothing is skipped,
                        // and do not spin on the same batch. The batch comes again with the old
                        // key; it must not be dropped then as already seen.
                        for id in &fresh {
                            self.recent.forget(id);
                        }
                        // Likewise the contact changes: with the book as it was, they are
                        // changes again when the batch comes back, and reported then.
                        if let Some(book) = rollback {
                            self.book = Some(book);
                        }
                        tracing::warn!(
                            "events were not confirmed safe; keeping the old sync key and retrying in 5 s"
                        );
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_secs(5)) => {}
                            () = self.shutdown.cancelled() => {}
                        }
                        continue;
                    }
                    self.client.commit_sync_keys(keys);
                    // Written at once when more than the keys moved, else within
                    // KEY_SAVE_INTERVAL (the branch on `save_due` above).
                    if let Some(saved) = self.saved() {
                        self.saver.after_sync(saved);
                    }
                }
                SyncStep::Reinit(init) => {
                    crate::worker::memory::note_activity();
                    self.renew_connections();
                    if let Some(mut book) = self.book.take() {
                        Self::merge_init(&mut book, init.contacts);
                        let snapshot = Arc::new(book.clone());
                        self.book = Some(book);
                        self.emit(WorkerEvent::ContactsReloaded(snapshot)).await;
                    }
                    self.save();
                }
                SyncStep::LoggedOut(reason) => {
                    tracing::info!(reason = reason.as_str(), "logged out: {reason}");
                    return Outcome::LoggedOut(reason);
                }
                SyncStep::Cancelled => {
                    self.state(SessionState::Stopping).await;
                    if self.spec.logout_on_shutdown {
                        self.logged_out_remote = true;
                        if let Err(e) = self.client.logout().await {
                            tracing::warn!(error = %e, "webwxlogout failed");
                        }
                    }
                    return Outcome::LoggedOut(LogoutReason::Shutdown);
                }
            }
        }
    }

    /// Serves one command. Returns an outcome when the command ends the session.
    async fn command(
        client: &WebClient,
        pacer: &Pacer,
        mut book: Option<&mut ContactBook>,
        media: &super::ops::MediaIndex,
        events: &mpsc::Sender<WorkerEvent>,
        recent: &mut RecentIds,
        cmd: WorkerCommand,
    ) -> Option<Outcome> {
        match cmd {
            WorkerCommand::Op { op, reply } => {
                // What a media send looks like as a message, to report it like a received one.
                let sent_kind = match &op {
                    AccountOp::SendMedia { media: m, .. } => Some(sent_media_kind(m)),
                    _ => None,
                };
                let result = match book.as_deref_mut() {
                    Some(b) => super::ops::perform(client, b, media, op).await,
                    None => Err("not logged in yet".into()),
                };
                let result = result.map_err(|e| note_rate_limit(pacer, e));
                if let (Ok(OpResult::Sent(r)), Some((msg_type, kind)), Some(b)) =
                    (&result, sent_kind, book.as_deref())
                {
                    // Own messages are reported too; remembering the id drops a server echo.
                    recent.insert(&r.msg_id);
                    let mut m = sent_message(client, &r.to, "", &r.msg_id);
                    m.msg_type = msg_type;
                    m.app_msg_type = match &kind {
                        MessageKind::File { .. } => 6,
                        MessageKind::Link { app_type, .. } | MessageKind::App { app_type, .. } => {
                            *app_type
                        }
                        _ => 0,
                    };
                    m.kind = kind;
                    let line = m.one_line(b);
                    let _ = events
                        .send(WorkerEvent::Message {
                            message: Box::new(m),
                            line,
                        })
                        .await;
                }
                // A group created here is in the book already (the op fetched it), so the
                // server's ModContactList for it will not look new: announce it now. If the
                // fetch failed, that ModContactList adds and announces it instead.
                if let (Ok(OpResult::Group(room)), Some(b)) = (&result, book.as_deref())
                    && let Some(g) = b.get(room)
                {
                    let _ = events
                        .send(WorkerEvent::ContactAdded(Box::new(g.clone())))
                        .await;
                }
                let _ = reply.send(result);
                None
            }
            WorkerCommand::SendText {
                to,
                text,
                mentions,
                style,
                reply,
            } => {
                let book = book.as_deref();
                let target = match book {
                    Some(b) => super::ops::resolve(client, b, &to),
                    None => Err("not logged in yet".to_owned()),
                };
                let sent = match target {
                    Ok(user_name) => {
                        let content =
                            with_mentions(client, book, &user_name, &text, &mentions, style);
                        client
                            .send_text(&user_name, &content)
                            .await
                            .map(|s| (user_name, content, s))
                            .map_err(|e| note_rate_limit(pacer, e.to_string()))
                    }
                    Err(e) => Err(e),
                };
                let result = match sent {
                    Ok((user_name, content, s)) => {
                        // Own messages are reported too (both directions); remembering the id
                        // drops the copy a server may echo back through webwxsync.
                        recent.insert(&s.msg_id);
                        if let Some(book) = book {
                            let m = sent_message(client, &user_name, &content, &s.msg_id);
                            let line = m.one_line(book);
                            let _ = events
                                .send(WorkerEvent::Message {
                                    message: Box::new(m),
                                    line,
                                })
                                .await;
                        }
                        Ok(SendReceipt {
                            to: user_name,
                            msg_id: s.msg_id,
                            local_id: s.local_id,
                        })
                    }
                    Err(e) => Err(e),
                };
                let _ = reply.send(result);
                None
            }
            WorkerCommand::Logout { reason } => {
                if let Err(e) = client.logout().await {
                    tracing::warn!(error = %e, "webwxlogout failed");
                }
                Some(Outcome::LoggedOut(reason))
            }
            WorkerCommand::Refused { detail } => {
                if let Err(e) = client.logout().await {
                    tracing::warn!(error = %e, "webwxlogout failed");
                }
                Some(Outcome::ControlRefused { detail })
            }
        }
    }

    /// Applies one webwxsync: contact changes first (so messages see the newest names), then
    /// messages, each reported once. Returns the ids of the messages it passed on and, when the
    /// batch changed contacts, the book as it was before, to put back if the batch is not
    /// confirmed safe.
    async fn apply(&mut self, data: SyncData) -> (Vec<String>, Option<ContactBook>) {
        let mut fresh = Vec::new();
        let Some(mut book) = self.book.take() else {
            return (fresh, None);
        };
        let changes_contacts = !(data.mod_contacts.is_empty()
            && data.mod_chatroom_members.is_empty()
            && data.del_contacts.is_empty());
        let before = changes_contacts.then(|| book.clone());
        let me = book.self_user().user_name.clone();
        for raw in data
            .mod_contacts
            .into_iter()
            .chain(data.mod_chatroom_members)
        {
            self.upsert_and_emit(&mut book, raw, &me).await;
        }
        for name in data.del_contacts {
            if book.remove(&name).is_some() {
                self.emit(WorkerEvent::ContactRemoved { user_name: name })
                    .await;
            }
        }
        // Groups we hear from but do not know (not saved to contacts) or whose member list
        // lacks the sender: one batch fetch before the messages are parsed.
        let mut missing: Vec<String> = Vec::new();
        for raw in &data.messages {
            for room in [&raw.from_user_name, &raw.to_user_name] {
                if !room.starts_with("@@") || missing.contains(room) {
                    continue;
                }
                let unknown = match book.get(room) {
                    None => true,
                    Some(g) if g.members.is_empty() => true,
                    Some(_) => {
                        *room == raw.from_user_name
                            && group_sender(&raw.content)
                                .is_some_and(|s| book.group_member(room, s).is_none())
                    }
                };
                if unknown {
                    missing.push(room.clone());
                }
            }
        }
        if !missing.is_empty() {
            self.load_group_members(&mut book, Some(&missing)).await;
        }
        for raw in data.messages {
            if !self.recent.insert(&raw.msg_id) {
                tracing::debug!(msg_id = %raw.msg_id, "duplicate message skipped");
                continue;
            }
            fresh.push(raw.msg_id.clone());
            let message = parse_message(raw, &book);
            if let Some(r) = super::media::MediaRef::from_message(&message) {
                self.media.insert(super::reports::file_index(&message), r);
            }
            if let MessageKind::System { text } = &message.kind
                && is_rate_limit_notice(text)
            {
                let pause = self.spec.pacer.rate_limited();
                tracing::warn!(
                    pause_s = pause.as_secs(),
                    "the server says we send too often; pausing sends"
                );
            }
            let line = message.one_line(&book);
            if let Chat::Group { .. } = message.chat {
                tracing::trace!(msg_id = %message.msg_id, "group message");
            }
            self.emit(WorkerEvent::Message {
                message: Box::new(message),
                line,
            })
            .await;
        }
        self.book = Some(book);
        (fresh, before)
    }

    async fn upsert_and_emit(&self, book: &mut ContactBook, raw: RawContact, me: &str) {
        let c = Contact::from_raw(raw, me);
        if c.kind == ContactKind::SelfUser {
            return;
        }
        let before: Option<HashSet<String>> = book
            .get(&c.user_name)
            .filter(|g| g.is_group())
            .map(|g| g.members.iter().map(|m| m.user_name.to_string()).collect());
        let name = c.user_name.to_string();
        let copy = c.clone();
        match book.upsert(c) {
            Upsert::Added => self.emit(WorkerEvent::ContactAdded(Box::new(copy))).await,
            Upsert::Changed => {
                self.emit(WorkerEvent::ContactChanged(Box::new(copy))).await;
                if let (Some(before), Some(g)) = (before, book.get(&name)) {
                    let after: HashSet<String> =
                        g.members.iter().map(|m| m.user_name.to_string()).collect();
                    let mut added: Vec<String> = after.difference(&before).cloned().collect();
                    let mut removed: Vec<String> = before.difference(&after).cloned().collect();
                    if !added.is_empty() || !removed.is_empty() {
                        added.sort();
                        removed.sort();
                        let owner = g.owner_user_name.to_string();
                        self.emit(WorkerEvent::MembersChanged {
                            room: name,
                            owner,
                            added,
                            removed,
                        })
                        .await;
                    }
                }
            }
            Upsert::Unchanged | Upsert::Ignored => {}
        }
    }
}

/// Turns login events into worker events (rendering each QR code as PNG).
struct QrForwarder {
    events: mpsc::Sender<WorkerEvent>,
}

impl LoginObserver for QrForwarder {
    async fn on_event(&mut self, ev: LoginEvent) {
        let out = match ev {
            LoginEvent::Qr {
                uuid,
                content,
                refresh,
            } => {
                tracing::info!(refresh, "new QR code");
                let png = qr::render_png(&content).unwrap_or_else(|e| {
                    tracing::error!(error = %e, "could not render the QR code");
                    Vec::new()
                });
                let _ = self
                    .events
                    .send(WorkerEvent::State(SessionState::WaitingForScan {
                        uuid: uuid.clone(),
                        refresh,
                    }))
                    .await;
                WorkerEvent::Qr {
                    uuid,
                    content,
                    png: Arc::new(png),
                    refresh,
                }
            }
            LoginEvent::Scanned { .. } => {
                let _ = self
                    .events
                    .send(WorkerEvent::State(SessionState::Scanned))
                    .await;
                WorkerEvent::Scanned
            }
            LoginEvent::Cancelled => WorkerEvent::ScanCancelled,
            LoginEvent::Expired { refresh } => WorkerEvent::QrExpired { refresh },
        };
        let _ = self.events.send(out).await;
    }
}

/// The `@member` of a group message's `@member:<br/>` prefix.
fn group_sender(content: &str) -> Option<&str> {
    let (sender, _) = content.split_once(":<br/>")?;
    sender.starts_with('@').then_some(sender)
}

/// A send answered Ret 1205 pauses every send of the account (spec §8).
fn note_rate_limit(pacer: &Pacer, e: String) -> String {
    if e.contains("Ret 1205") {
        let pause = pacer.rate_limited();
        format!(
            "{e} (rate limited: sending paused for {} s)",
            pause.as_secs()
        )
    } else {
        e
    }
}

/// The message type and kind of a media message this client sent.
fn sent_media_kind(m: &OutgoingMedia) -> (i64, MessageKind) {
    match m {
        OutgoingMedia::Image { .. } => (
            3,
            MessageKind::Image {
                media_id: String::new(),
                width: 0,
                height: 0,
            },
        ),
        OutgoingMedia::Gif { .. } => (
            47,
            MessageKind::Emoticon {
                md5: None,
                cdn_url: None,
            },
        ),
        OutgoingMedia::Video { .. } => (
            43,
            MessageKind::Video {
                play_length: 0,
                micro: false,
            },
        ),
        OutgoingMedia::File { bytes, name, .. } => (
            49,
            MessageKind::File {
                name: name.clone(),
                size: bytes.len() as u64,
                media_id: String::new(),
                ext: name
                    .rsplit_once('.')
                    .map(|(_, e)| e.to_owned())
                    .unwrap_or_default(),
            },
        ),
        OutgoingMedia::Link {
            title,
            desc,
            url,
            thumb_url,
        } => (
            49,
            MessageKind::Link {
                title: title.clone(),
                desc: desc.clone(),
                url: url.clone(),
                thumb_url: thumb_url.clone(),
                app_type: 5,
            },
        ),
        OutgoingMedia::AppXml { .. } => (
            49,
            MessageKind::MiniProgram {
                title: String::new(),
                url: String::new(),
                app_id: String::new(),
            },
        ),
    }
}

/// The typed message for a text this client sent, as the server would echo it.
fn sent_message(client: &WebClient, to: &str, content: &str, msg_id: &str) -> Message {
    let me = client.self_user_name();
    let chat = if to.starts_with("@@") {
        Chat::Group {
            room: to.to_owned(),
            sender: Some(me.clone()),
        }
    } else {
        Chat::Private {
            peer: to.to_owned(),
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    Message {
        msg_id: msg_id.to_owned(),
        new_msg_id: msg_id.parse().unwrap_or(0),
        create_time: now,
        msg_type: 1,
        app_msg_type: 0,
        from: me,
        to: to.to_owned(),
        chat,
        outgoing: true,
        kind: MessageKind::Text {
            text: content.to_owned(),
            mentions: Vec::new(),
            mentions_me: false,
        },
        raw_content: content.to_owned(),
    }
}

/// The text with its mentions written out, each as the name the group shows: the member's
/// group nickname, else their nickname (the own wxid counts as the own UserName).
fn with_mentions(
    client: &WebClient,
    book: Option<&ContactBook>,
    room: &str,
    text: &str,
    mentions: &[String],
    style: MentionStyle,
) -> String {
    if mentions.is_empty() {
        return text.to_owned();
    }
    let me = client.self_user_name();
    let names: Vec<String> = mentions
        .iter()
        .map(|m| {
            let user = if *m == client.uin() {
                me.as_str()
            } else {
                m.as_str()
            };
            let member = book.and_then(|b| b.group_member(room, user));
            match (member, book.and_then(|b| b.get(user))) {
                (Some(gm), _) if !gm.display_name.is_empty() => gm.display_name.to_string(),
                (Some(gm), _) if !gm.nick_name.is_empty() => gm.nick_name.to_string(),
                (_, Some(c)) if !c.nick_name.is_empty() => c.nick_name.to_string(),
                _ if user == me => book
                    .map(|b| b.self_user().nick_name.to_string())
                    .unwrap_or_default(),
                _ => user.to_owned(),
            }
        })
        .collect();
    compose_mentions(text, &names, style)
}

/// The last N message ids, to drop re-deliveries (the server re-sends after a stale key).
/// Starts empty and grows with the ids seen (an idle session sees few), up to `cap`; each id is
/// stored once, shared by the set and the order.
struct RecentIds {
    cap: usize,
    order: VecDeque<Arc<str>>,
    set: HashSet<Arc<str>>,
}

impl RecentIds {
    fn new(cap: usize) -> RecentIds {
        RecentIds {
            cap,
            order: VecDeque::new(),
            set: HashSet::new(),
        }
    }

    /// True when the id is new.
    fn insert(&mut self, id: &str) -> bool {
        if id.is_empty() {
            return true;
        }
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() >= self.cap
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        let id: Arc<str> = Arc::from(id);
        self.order.push_back(id.clone());
        self.set.insert(id);
        true
    }

    /// Makes `id` count as new again (its events were not kept).
    fn forget(&mut self, id: &str) {
        if self.set.remove(id) {
            self.order.retain(|o| &**o != id);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_ids_dedupe_within_window() {
        let mut r = RecentIds::new(2);
        assert!(r.insert("1"));
        assert!(!r.insert("1"));
        assert!(r.insert("2"));
        assert!(r.insert("3"));
        assert!(r.insert("1"), "evicted ids count as new again");
        assert!(r.insert(""));
        assert!(r.insert(""));
        assert!(!r.insert("3"));
        r.forget("3");
        assert!(r.insert("3"), "a forgotten id is new again");
        r.forget("never seen");
        assert!(!r.insert("1"));
    }

    #[test]
    fn recent_ids_stay_within_the_bound() {
        let mut r = RecentIds::new(100);
        assert_eq!(r.len(), 0);
        for i in 0..1000 {
            assert!(r.insert(&i.to_string()));
            assert_eq!(r.len(), (i + 1).min(100));
            assert_eq!(r.set.len(), r.len(), "set and order hold the same ids");
        }
        // The newest 100 are remembered, the older ones forgotten.
        assert!(!r.insert("999"));
        assert!(!r.insert("900"));
        assert!(r.insert("899"));
        assert_eq!(r.len(), 100);
        assert!(
            r.set.capacity() < 1000,
            "grows only as far as the bound needs"
        );
    }

    #[test]
    fn group_sender_prefix() {
        assert_eq!(group_sender("@abc:<br/>hi"), Some("@abc"));
        assert_eq!(group_sender("hi there"), None);
        assert_eq!(group_sender("x:<br/>y"), None);
    }
}
