//! The simulator's shared state: configuration, accounts, web sessions with their event logs,
//! pending QR logins and tickets.
//!
//! Locking: every lock here is a short `std::sync` lock never held across an `.await`. Lookups by
//! uin, sid and uuid are hash-map reads. When two locks nest, the order is always
//! account → session (never the reverse); the global maps are only held for the lookup itself.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::accounts::{Account, AccountInner};
use super::content::{self, Message};
use super::faults::{Faults, Stats};
use super::ids::{self, MsgIds};

/// Runtime-tunable behaviour (`POST /__sim/config`).
#[derive(Debug, Clone)]
pub(crate) struct SimConfig {
    /// How long synccheck and the login poll hold when nothing happens.
    pub hold: Duration,
    /// Lifetime of a fresh QR uuid before it answers 400.
    pub qr_ttl: Duration,
    /// Whether messages this web client sends come back through webwxsync.
    pub echo_sent: bool,
    /// Contacts per webwxgetcontact page.
    pub contact_page_size: usize,
    /// Events per webwxsync answer.
    pub sync_batch: usize,
    /// How long after sending a message may still be revoked.
    pub revoke_window: Duration,
}

impl SimConfig {
    pub(crate) fn new(hold: Duration) -> Self {
        SimConfig {
            hold,
            qr_ttl: Duration::from_secs(300),
            echo_sent: false,
            contact_page_size: 200,
            sync_batch: 100,
            revoke_window: Duration::from_secs(120),
        }
    }

    pub(crate) fn to_json(&self) -> Value {
        json!({
            "hold_ms": self.hold.as_millis() as u64,
            "qr_ttl_ms": self.qr_ttl.as_millis() as u64,
            "echo_sent": self.echo_sent,
            "contact_page_size": self.contact_page_size,
            "sync_batch": self.sync_batch,
            "revoke_window_ms": self.revoke_window.as_millis() as u64,
        })
    }
}

/// Events kept per session; older ones are forgotten (a client that far behind loses them).
pub(crate) const EVENT_LOG_CAP: usize = 10_000;

/// What an event in a session's log is, which decides the synccheck selector and the webwxsync
/// list it lands in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventKind {
    /// An AddMsgList entry; `phone_notify` marks a StatusNotify that only reflects phone activity
    /// (selector 7 when nothing else is pending).
    Message { phone_notify: bool },
    /// A ModContactList entry for a contact that was added.
    ContactAdded,
    /// A ModContactList entry for a changed contact.
    ContactChanged,
    /// A DelContactList entry.
    ContactDeleted,
}

#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub kind: EventKind,
    pub body: Value,
}

/// A session's ordered event stream. Position `p` means "events with sequence < p were seen".
#[derive(Debug)]
pub(crate) struct EventLog {
    first_seq: u64,
    events: VecDeque<Event>,
}

impl EventLog {
    fn new() -> Self {
        EventLog {
            first_seq: 0,
            events: VecDeque::new(),
        }
    }

    pub(crate) fn push(&mut self, ev: Event) {
        if self.events.len() == EVENT_LOG_CAP {
            self.events.pop_front();
            self.first_seq += 1;
        }
        self.events.push_back(ev);
    }

    pub(crate) fn end(&self) -> u64 {
        self.first_seq + self.events.len() as u64
    }

    fn slice_from(&self, pos: u64) -> impl Iterator<Item = &Event> {
        let skip = pos.saturating_sub(self.first_seq) as usize;
        self.events.iter().skip(skip)
    }

    /// The synccheck selector for a client at `pos`: 0 when caught up; 2 when messages wait; 6
    /// for added/removed contacts; 4 for changed contacts; 7 for phone-activity notifies only.
    pub(crate) fn selector_after(&self, pos: u64, scan: usize) -> u32 {
        let mut sel = 0;
        for ev in self.slice_from(pos).take(scan) {
            let s = match ev.kind {
                EventKind::Message {
                    phone_notify: false,
                } => return 2,
                EventKind::ContactAdded | EventKind::ContactDeleted => 6,
                EventKind::ContactChanged => 4,
                EventKind::Message { phone_notify: true } => 7,
            };
            sel = match (sel, s) {
                (0, s) => s,
                (6, _) | (_, 6) => 6,
                (4, _) | (_, 4) => 4,
                (a, _) => a,
            };
        }
        sel
    }

    /// Up to `max` events from `pos`, the position after them and whether more remain.
    pub(crate) fn batch(&self, pos: u64, max: usize) -> (Vec<Event>, u64, bool) {
        let start = pos.max(self.first_seq).min(self.end());
        let out: Vec<Event> = self.slice_from(start).take(max).cloned().collect();
        let next = start + out.len() as u64;
        (out, next, next < self.end())
    }
}

/// Why a web session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeathReason {
    Logout,
    Kicked,
    /// A newer login of the same account replaced it.
    Replaced,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Life {
    Alive,
    Dead { retcode: u32, reason: DeathReason },
}

#[derive(Debug)]
pub(crate) struct SessionInner {
    pub life: Life,
    pub log: EventLog,
    pub rate_limited: bool,
    pub inits: u64,
    pub died_at: Option<Instant>,
}

/// One web login of an account (what a ticket exchange creates).
pub(crate) struct Session {
    pub uin: u64,
    pub sid: String,
    pub skey: String,
    pub pass_ticket: String,
    pub data_ticket: String,
    pub login_unix: u64,
    /// Random offset that SyncKey values are built on, so keys of different sessions differ.
    pub key_base: u64,
    pub inner: Mutex<SessionInner>,
    /// Bumped on every change so long polls wake at once.
    pub wake: watch::Sender<u64>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Credentials stay out of Debug output.
        f.debug_struct("Session")
            .field("uin", &self.uin)
            .finish_non_exhaustive()
    }
}

impl Session {
    pub(crate) fn new(uin: u64) -> Self {
        Session {
            uin,
            sid: ids::wxsid(),
            skey: ids::skey(),
            pass_ticket: ids::pass_ticket(),
            data_ticket: ids::data_ticket(),
            login_unix: ids::unix_now(),
            key_base: rand::random_range(600_000_000..700_000_000u64),
            inner: Mutex::new(SessionInner {
                life: Life::Alive,
                log: EventLog::new(),
                rate_limited: false,
                inits: 0,
                died_at: None,
            }),
            wake: watch::channel(0).0,
        }
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, SessionInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.wake.send_modify(|v| *v = v.wrapping_add(1));
    }

    pub(crate) fn life(&self) -> Life {
        self.lock().life
    }

    pub(crate) fn is_alive(&self) -> bool {
        self.life() == Life::Alive
    }

    /// Appends an event if the session is alive; returns whether it was queued.
    pub(crate) fn push(&self, kind: EventKind, body: Value) -> bool {
        let queued = {
            let mut g = self.lock();
            if g.life == Life::Alive {
                g.log.push(Event { kind, body });
                true
            } else {
                false
            }
        };
        if queued {
            self.bump();
        }
        queued
    }

    pub(crate) fn push_message(&self, m: &Message) -> bool {
        self.push(
            EventKind::Message {
                phone_notify: m.msg_type == 51 && m.status_notify_code != 4,
            },
            m.to_json(),
        )
    }

    /// Ends the session; later requests answer `retcode`. A dead session stays dead.
    pub(crate) fn kill(&self, retcode: u32, reason: DeathReason) {
        {
            let mut g = self.lock();
            if g.life != Life::Alive {
                return;
            }
            g.life = Life::Dead { retcode, reason };
            g.died_at = Some(Instant::now());
        }
        self.bump();
    }

    /// The SyncKey object at position `pos`: keys 1,2,3,1000 before the first webwxsync, seven
    /// keys after. Only key 1 carries the position; the others just move along with it.
    pub(crate) fn sync_key(&self, pos: u64, full: bool) -> Value {
        let b = self.key_base + pos;
        let mut list = vec![
            json!({"Key": 1, "Val": b}),
            json!({"Key": 2, "Val": b + 4}),
            json!({"Key": 3, "Val": b.saturating_sub(54)}),
        ];
        if full {
            list.push(json!({"Key": 11, "Val": b.saturating_sub(2697)}));
            list.push(json!({"Key": 201, "Val": ids::unix_now()}));
        }
        list.push(json!({"Key": 1000, "Val": self.login_unix}));
        if full {
            list.push(json!({"Key": 1001, "Val": self.login_unix + 73}));
        }
        json!({"Count": list.len(), "List": list})
    }

    /// Reads the position out of a presented key-1 value. Values from another session or from
    /// the future map to 0, so everything retained is delivered again (at-least-once).
    pub(crate) fn position_of(&self, key1: Option<u64>, end: u64) -> u64 {
        match key1.and_then(|v| v.checked_sub(self.key_base)) {
            Some(p) if p <= end => p,
            _ => 0,
        }
    }
}

/// A credential string whose Debug output is redacted.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A QR login in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum QrState {
    Waiting,
    Scanned { uin: u64 },
    Confirmed { uin: u64, ticket: Secret },
    Expired,
}

impl QrState {
    pub(crate) fn label(&self) -> &'static str {
        match self {
            QrState::Waiting => "waiting",
            QrState::Scanned { .. } => "scanned",
            QrState::Confirmed { .. } => "confirmed",
            QrState::Expired => "expired",
        }
    }
}

#[derive(Debug)]
pub(crate) struct QrInner {
    pub state: QrState,
    /// A poll has already answered 201 for the current scan.
    pub scan_reported: bool,
    /// A poll has answered the final 200/400 (the uuid then drops out of the pending list).
    pub finished: bool,
    pub expires_at: Instant,
}

pub(crate) struct Qr {
    pub uuid: String,
    pub desktop: bool,
    /// Set for uuids created by webwxpushloginurl: only this account can confirm.
    pub push_uin: Option<u64>,
    pub created: Instant,
    pub created_ms: u64,
    pub inner: Mutex<QrInner>,
    pub wake: watch::Sender<u64>,
}

impl Qr {
    pub(crate) fn new(desktop: bool, push_uin: Option<u64>, ttl: Duration) -> Self {
        let now = Instant::now();
        Qr {
            uuid: ids::uuid(),
            desktop,
            push_uin,
            created: now,
            created_ms: ids::unix_ms_now(),
            inner: Mutex::new(QrInner {
                state: QrState::Waiting,
                scan_reported: false,
                finished: false,
                expires_at: now + ttl,
            }),
            wake: watch::channel(0).0,
        }
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, QrInner> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        // Unconfirmed QRs run out by themselves.
        if matches!(g.state, QrState::Waiting | QrState::Scanned { .. })
            && Instant::now() >= g.expires_at
        {
            g.state = QrState::Expired;
        }
        g
    }

    pub(crate) fn bump(&self) {
        self.wake.send_modify(|v| *v = v.wrapping_add(1));
    }
}

/// A confirmed login waiting to be exchanged at webwxnewloginpage (single use).
#[derive(Debug, Clone)]
pub(crate) struct Ticket {
    pub uin: u64,
    pub desktop: bool,
    pub created: Instant,
}

pub(crate) struct Sim {
    pub config: RwLock<SimConfig>,
    pub accounts: RwLock<HashMap<u64, Arc<Account>>>,
    pub sessions: RwLock<HashMap<String, Arc<Session>>>,
    pub qrs: RwLock<HashMap<String, Arc<Qr>>>,
    pub tickets: Mutex<HashMap<String, Ticket>>,
    pub faults: RwLock<Faults>,
    pub stats: Stats,
    pub msg_ids: MsgIds,
    /// Every credential handed to a client (kind, value), for tests that check none leaks
    /// into logs (`GET /__sim/credentials`).
    pub issued: Mutex<Vec<(&'static str, String)>>,
    /// Cancelled at shutdown so held long polls answer at once.
    pub shutdown: CancellationToken,
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

impl Sim {
    pub(crate) fn new(hold: Duration) -> Self {
        Sim {
            config: RwLock::new(SimConfig::new(hold)),
            accounts: RwLock::new(HashMap::new()),
            sessions: RwLock::new(HashMap::new()),
            qrs: RwLock::new(HashMap::new()),
            tickets: Mutex::new(HashMap::new()),
            faults: RwLock::new(Faults::default()),
            stats: Stats::default(),
            msg_ids: MsgIds::new(),
            issued: Mutex::new(Vec::new()),
            shutdown: CancellationToken::new(),
        }
    }

    pub(crate) fn config(&self) -> SimConfig {
        read(&self.config).clone()
    }

    pub(crate) fn update_config(&self, f: impl FnOnce(&mut SimConfig)) -> SimConfig {
        let mut g = write(&self.config);
        f(&mut g);
        g.clone()
    }

    pub(crate) fn account(&self, uin: u64) -> Option<Arc<Account>> {
        read(&self.accounts).get(&uin).cloned()
    }

    pub(crate) fn all_accounts(&self) -> Vec<Arc<Account>> {
        let mut v: Vec<_> = read(&self.accounts).values().cloned().collect();
        v.sort_by_key(|a| a.uin);
        v
    }

    /// Adds an account; `None` when the uin is taken.
    pub(crate) fn add_account(&self, uin: Option<u64>, inner: AccountInner) -> Option<u64> {
        let mut map = write(&self.accounts);
        let uin = match uin {
            Some(u) if map.contains_key(&u) => return None,
            Some(u) => u,
            None => loop {
                let u = rand::random_range(100_000_000..4_000_000_000u64);
                if !map.contains_key(&u) {
                    break u;
                }
            },
        };
        map.insert(
            uin,
            Arc::new(Account {
                uin,
                inner: Mutex::new(inner),
            }),
        );
        Some(uin)
    }

    pub(crate) fn session_by_sid(&self, sid: &str) -> Option<Arc<Session>> {
        read(&self.sessions).get(sid).cloned()
    }

    pub(crate) fn qr(&self, uuid: &str) -> Option<Arc<Qr>> {
        read(&self.qrs).get(uuid).cloned()
    }

    pub(crate) fn all_qrs(&self) -> Vec<Arc<Qr>> {
        let mut v: Vec<_> = read(&self.qrs).values().cloned().collect();
        v.sort_by_key(|q| q.created);
        v
    }

    pub(crate) fn new_qr(&self, desktop: bool, push_uin: Option<u64>) -> Arc<Qr> {
        let ttl = self.config().qr_ttl;
        let qr = Arc::new(Qr::new(desktop, push_uin, ttl));
        write(&self.qrs).insert(qr.uuid.clone(), qr.clone());
        qr
    }

    /// Records a credential value handed to a client.
    pub(crate) fn record_issued(&self, kind: &'static str, value: &str) {
        self.issued
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((kind, value.to_owned()));
    }

    pub(crate) fn issued(&self) -> Vec<(&'static str, String)> {
        self.issued
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn issue_ticket(&self, uin: u64, desktop: bool) -> String {
        let t = ids::login_ticket();
        self.record_issued("ticket", &t);
        self.tickets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                t.clone(),
                Ticket {
                    uin,
                    desktop,
                    created: Instant::now(),
                },
            );
        t
    }

    pub(crate) fn take_ticket(&self, ticket: &str) -> Option<Ticket> {
        self.tickets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(ticket)
    }

    /// Creates a fresh web session for `account`, killing its previous one (1101), and queues
    /// the login StatusNotify (MsgType 51, code 4) so the first synccheck reports selector 2.
    pub(crate) fn open_session(&self, account: &Account) -> Arc<Session> {
        let session = {
            let mut a = account.inner.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(old) = a.session.take() {
                old.kill(1101, DeathReason::Replaced);
            }
            a.logins += 1;
            let s = Arc::new(Session::new(account.uin));
            self.record_issued("wxsid", &s.sid);
            self.record_issued("skey", &s.skey);
            self.record_issued("pass_ticket", &s.pass_ticket);
            self.record_issued("webwx_data_ticket", &s.data_ticket);
            let recent = a.recent_chats(20);
            let wxids: Vec<String> = recent.iter().map(|c| c.wxid.clone()).collect();
            let names: Vec<String> = recent.iter().map(|c| c.user_name.clone()).collect();
            let mut m = Message::new(
                self.msg_ids.next(),
                &a.me,
                &a.me,
                51,
                content::escape_content(&content::init_notify_xml(&wxids)),
            );
            m.status_notify_code = 4;
            m.status_notify_user_name = names.join(",");
            s.push_message(&m);
            a.session = Some(s.clone());
            s
        };
        write(&self.sessions).insert(session.sid.clone(), session.clone());
        session
    }

    /// Forgets QRs, tickets and dead sessions nobody can use any more.
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        write(&self.qrs).retain(|_, q| {
            let g = q.lock();
            let done = matches!(g.state, QrState::Expired | QrState::Confirmed { .. });
            !(done && now.duration_since(q.created) > Duration::from_secs(600))
                && now < g.expires_at + Duration::from_secs(600)
        });
        self.tickets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, t| now.duration_since(t.created) < Duration::from_secs(600));
        write(&self.sessions).retain(|_, s| {
            s.lock()
                .died_at
                .is_none_or(|d| now.duration_since(d) < Duration::from_secs(3600))
        });
    }

    pub(crate) fn sessions_alive(&self) -> usize {
        read(&self.accounts)
            .values()
            .filter(|a| {
                a.inner
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .session
                    .as_ref()
                    .is_some_and(|s| s.is_alive())
            })
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: u64) -> Event {
        Event {
            kind: EventKind::Message {
                phone_notify: false,
            },
            body: json!(n),
        }
    }

    #[test]
    fn event_log_batches_and_selectors() {
        let mut log = EventLog::new();
        assert_eq!(log.selector_after(0, 100), 0);
        log.push(Event {
            kind: EventKind::ContactChanged,
            body: json!("c"),
        });
        assert_eq!(log.selector_after(0, 100), 4);
        log.push(msg(1));
        assert_eq!(log.selector_after(0, 100), 2);
        assert_eq!(log.selector_after(1, 100), 2);
        assert_eq!(log.selector_after(2, 100), 0);
        let (evs, next, more) = log.batch(0, 1);
        assert_eq!(evs.len(), 1);
        assert_eq!(next, 1);
        assert!(more);
        let (evs, next, more) = log.batch(1, 10);
        assert_eq!((evs.len(), next, more), (1, 2, false));
    }

    #[test]
    fn event_log_is_bounded() {
        let mut log = EventLog::new();
        for i in 0..(EVENT_LOG_CAP as u64 + 5) {
            log.push(msg(i));
        }
        assert_eq!(log.end(), EVENT_LOG_CAP as u64 + 5);
        let (evs, next, _) = log.batch(0, 1);
        assert_eq!(evs[0].body, json!(5));
        assert_eq!(next, 6);
    }

    #[test]
    fn sync_keys_encode_position_in_key_one() {
        let s = Session::new(1);
        let k = s.sync_key(7, false);
        assert_eq!(k["Count"], 4);
        let k1 = k["List"][0]["Val"].as_u64();
        assert_eq!(s.position_of(k1, 10), 7);
        assert_eq!(s.position_of(k1, 5), 0, "future key re-delivers");
        assert_eq!(s.position_of(Some(3), 5), 0, "foreign key re-delivers");
        assert_eq!(s.sync_key(0, true)["Count"], 7);
    }
}
