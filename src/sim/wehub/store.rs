//! The records and queues behind the control plane, each with a memory cap (oldest dropped first).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

use super::mode::Mode;

/// Callback requests kept for `/__cp/requests`.
pub const MAX_REQUESTS: usize = 100_000;
/// Total body bytes of the kept callback requests (their parsed JSON takes a small multiple).
pub const MAX_REQUEST_BYTES: usize = 256 << 20;
/// Largest callback body accepted (a full `report_contact` of a big account fits).
pub const MAX_CALLBACK_BODY: usize = 16 << 20;
/// Largest upload body accepted.
pub const MAX_UPLOAD_BODY: usize = 32 << 20;
/// Total bytes of stored media files.
pub const MAX_MEDIA_BYTES: usize = 256 << 20;
/// Upload records kept for `/__cp/uploads`.
pub const MAX_UPLOAD_RECORDS: usize = 100_000;
/// QR sessions kept (each with its latest PNG only).
pub const MAX_QR_SESSIONS: usize = 10_000;
/// Status-history entries kept per QR session.
pub const MAX_QR_HISTORY: usize = 1_000;
/// Task records (bookkeeping) and task results kept.
pub const MAX_TASK_RECORDS: usize = 100_000;
/// Tasks waiting in one wxid's pull queue or reply queue; more is refused.
pub const MAX_QUEUED_PER_WXID: usize = 100_000;
/// Message ids / event ids remembered for de-duplication.
pub const MAX_SEEN_KEYS: usize = 100_000;

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// How a request reached the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// `POST /wehub/callback`.
    Http,
    /// A text frame on `GET /wehub/ws` (spec A.8).
    Websocket,
}

/// One callback request as received (`/__cp/requests`).
#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    pub index: u64,
    pub time_ms: u64,
    pub transport: Transport,
    /// Arrival on the simulator's monotonic clock (`crate::sim::clock`), for `wxagent bench`.
    pub mono_us: u64,
    pub action: String,
    pub appid: String,
    pub wxid: String,
    pub client_session: Option<String>,
    pub data: Value,
    pub event_id: Option<String>,
    pub timestamp: Option<String>,
    pub signature: Option<String>,
    pub signature_ok: Option<bool>,
    /// The HTTP status answered (503 while `down`, 400 for an unreadable body).
    pub status: u16,
    /// The event id (or, for `report_new_msg`, the msg_id) was seen before for this wxid.
    pub duplicate: bool,
    /// Why the body could not be read, when it could not.
    pub error: Option<String>,
    /// For a report that came in a `report_batch` post: how many reports that post carried
    /// (each is recorded as a request of its own). 0: it came alone.
    pub batch: usize,
    #[serde(skip)]
    pub body_len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// Delivered alone in a `pull_task_ack`; a `report_task_result` is expected.
    Pull,
    /// Delivered in a `common_ack.data.reply_task_list`; no result is reported.
    Reply,
}

/// A task waiting for delivery.
#[derive(Debug, Clone)]
pub struct QueuedTask {
    pub task_id: String,
    pub task_type: i64,
    pub task_dict: Value,
}

impl QueuedTask {
    /// The wire shape `{"task_type": N, "task_dict": {...}}` (spec A.5).
    pub fn wire(&self) -> Value {
        serde_json::json!({"task_type": self.task_type, "task_dict": self.task_dict})
    }
}

/// Bookkeeping for a task the server issued (`/__cp/tasks`).
#[derive(Debug, Clone, Serialize)]
pub struct TaskRecord {
    pub task_id: String,
    pub wxid: String,
    pub via: Via,
    pub task_type: i64,
    pub task_dict: Value,
    /// Made by the auto-reply rule rather than queued through `/__cp/tasks`.
    pub auto: bool,
    pub queued_ms: u64,
    pub delivered_ms: Option<u64>,
    /// When a `pull_task_ack` (or `common_ack`) handed it out, on the simulator's monotonic clock.
    pub delivered_us: Option<u64>,
}

/// The latest `report_task_result` for a task id.
#[derive(Debug, Clone, Serialize)]
pub struct TaskResult {
    pub task_id: String,
    pub wxid: String,
    pub task_result: Option<i64>,
    pub error_reason: String,
    pub time_ms: u64,
    /// How many results arrived for this id (more than one: a retried report).
    pub reports: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct QrStatusEntry {
    pub status: String,
    pub reason: Option<String>,
    pub qr_count: Option<i64>,
    pub machine_id: String,
    pub time_ms: u64,
}

/// One QR login session (spec A.9, B.2).
#[derive(Debug, Clone, Serialize)]
pub struct QrSession {
    pub qr_session_id: String,
    pub machine_id: String,
    /// PNG uploads received (each replaces the previous image).
    pub uploads: u64,
    /// The latest reported status; before any report: `requested` (task 200 queued) or
    /// `uploaded` (a PNG arrived).
    pub status: String,
    pub status_history: Vec<QrStatusEntry>,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub last_upload_ms: Option<u64>,
    /// Set when a `login` names this session.
    pub wxid: Option<String>,
    #[serde(skip)]
    pub png: Option<Bytes>,
}

impl QrSession {
    fn new(qr_session_id: &str, status: &str, now: u64) -> Self {
        QrSession {
            qr_session_id: qr_session_id.to_owned(),
            machine_id: String::new(),
            uploads: 0,
            status: status.to_owned(),
            status_history: Vec::new(),
            created_ms: now,
            updated_ms: now,
            last_upload_ms: None,
            wxid: None,
            png: None,
        }
    }

    /// Still waiting for someone to scan: no login yet and not given up.
    pub fn awaiting_scan(&self) -> bool {
        self.wxid.is_none() && !matches!(self.status.as_str(), "confirmed" | "abandoned" | "failed")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UploadKind {
    Qr,
    Media,
}

#[derive(Debug, Clone, Serialize)]
pub struct UploadRecord {
    pub kind: UploadKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qr_session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_index: Option<String>,
    pub machine_id: Option<String>,
    pub file_name: Option<String>,
    pub content_type: Option<String>,
    pub size: usize,
    pub time_ms: u64,
    /// Arrival on the simulator's monotonic clock (`crate::sim::clock`), for `wxagent bench`.
    pub mono_us: u64,
    pub signature_ok: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct MediaFile {
    pub file_name: Option<String>,
    pub content_type: Option<String>,
    pub bytes: Bytes,
}

/// Where an account stands, as far as the server has been told.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum AccountState {
    Online {
        since_ms: u64,
    },
    Offline {
        since_ms: u64,
        reason: Option<String>,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct Account {
    pub wxid: String,
    pub nickname: Option<String>,
    pub machine_id: Option<String>,
    pub qr_session_id: Option<String>,
    pub logins: u64,
    #[serde(flatten)]
    pub state: AccountState,
}

/// A FIFO-evicting set for de-duplication.
#[derive(Debug, Default)]
struct SeenKeys {
    keys: HashSet<String>,
    order: VecDeque<String>,
}

impl SeenKeys {
    /// Remembers `key`; true when it was already known.
    fn check_and_insert(&mut self, key: String) -> bool {
        if self.keys.contains(&key) {
            return true;
        }
        self.keys.insert(key.clone());
        self.order.push_back(key);
        while self.order.len() > MAX_SEEN_KEYS {
            if let Some(old) = self.order.pop_front() {
                self.keys.remove(&old);
            }
        }
        false
    }
}

/// A queue refused a task.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("task queue for wxid {wxid:?} is full ({MAX_QUEUED_PER_WXID} tasks)")]
pub struct QueueFull {
    pub wxid: String,
}

/// Everything the server remembers.
#[derive(Debug, Default)]
pub struct Store {
    pub mode: Mode,
    next_index: u64,
    requests: VecDeque<RequestRecord>,
    request_bytes: usize,
    next_task: u64,
    pull_queues: HashMap<String, VecDeque<QueuedTask>>,
    reply_queues: HashMap<String, VecDeque<QueuedTask>>,
    tasks: HashMap<String, TaskRecord>,
    task_order: VecDeque<String>,
    results: HashMap<String, TaskResult>,
    result_order: VecDeque<String>,
    qr_sessions: HashMap<String, QrSession>,
    qr_order: VecDeque<String>,
    uploads: VecDeque<UploadRecord>,
    media: HashMap<String, MediaFile>,
    media_order: VecDeque<String>,
    media_bytes: usize,
    accounts: HashMap<String, Account>,
    seen_events: SeenKeys,
    seen_messages: SeenKeys,
    /// WebSocket connections (spec A.8); kept across a reset, like open sockets are.
    pub ws: super::ws::Registry,
    /// Accepted (200) requests per action and wxid since the last reset, kept apart from the
    /// bounded request ring so that polling traffic cannot push a login out of the count.
    counts: HashMap<String, HashMap<String, u64>>,
}

impl Store {
    /// Forgets every record and queued task; the mode stays.
    pub fn reset(&mut self) {
        let mode = std::mem::take(&mut self.mode);
        let ws = std::mem::take(&mut self.ws);
        let next_index = self.next_index;
        let next_task = self.next_task;
        *self = Store {
            mode,
            ws,
            next_index,
            next_task,
            ..Store::default()
        };
    }

    // ---- requests ----

    /// Stores a request record, assigning its index.
    pub fn record_request(&mut self, mut record: RequestRecord) -> u64 {
        record.index = self.next_index;
        self.next_index += 1;
        if record.status == 200 {
            *self
                .counts
                .entry(record.action.clone())
                .or_default()
                .entry(record.wxid.clone())
                .or_default() += 1;
        }
        self.request_bytes += record.body_len;
        self.requests.push_back(record);
        while self.requests.len() > MAX_REQUESTS
            || (self.request_bytes > MAX_REQUEST_BYTES && self.requests.len() > 1)
        {
            if let Some(old) = self.requests.pop_front() {
                self.request_bytes -= old.body_len;
            }
        }
        self.next_index - 1
    }

    /// Counts an accepted `report_batch` post of `wxid` (its reports are recorded, and
    /// counted, one by one).
    pub fn count_batch(&mut self, wxid: &str) {
        *self
            .counts
            .entry("report_batch".to_owned())
            .or_default()
            .entry(wxid.to_owned())
            .or_default() += 1;
    }

    /// Accepted requests per action and wxid since the last reset (not bounded by the ring).
    pub fn counts(&self) -> &HashMap<String, HashMap<String, u64>> {
        &self.counts
    }

    /// The index the next request will get.
    pub fn next_request_index(&self) -> u64 {
        self.next_index
    }

    pub fn requests(&self) -> impl Iterator<Item = &RequestRecord> {
        self.requests.iter()
    }

    /// The requests with index `since` or later still in the ring, without walking the older
    /// ones (indexes are consecutive, so the first wanted one is found by arithmetic).
    pub fn requests_from(&self, since: u64) -> impl Iterator<Item = &RequestRecord> {
        let first = self.next_index - self.requests.len() as u64;
        let skip = usize::try_from(since.saturating_sub(first)).unwrap_or(usize::MAX);
        self.requests.iter().skip(skip)
    }

    /// True when this (wxid, key) pair was seen before; remembers it.
    pub fn seen_event(&mut self, wxid: &str, event_id: &str) -> bool {
        self.seen_events
            .check_and_insert(format!("{wxid}\u{0}{event_id}"))
    }

    /// True when this (wxid, msg_id) pair was seen before; remembers it.
    pub fn seen_message(&mut self, wxid: &str, msg_id: &str) -> bool {
        self.seen_messages
            .check_and_insert(format!("{wxid}\u{0}{msg_id}"))
    }

    // ---- tasks ----

    /// Queues a task for `wxid` ("" = the agent) and returns its id.
    pub fn queue_task(
        &mut self,
        wxid: &str,
        via: Via,
        task_type: i64,
        task_dict: Value,
        auto: bool,
    ) -> Result<String, QueueFull> {
        let queues = match via {
            Via::Pull => &mut self.pull_queues,
            Via::Reply => &mut self.reply_queues,
        };
        let queue = queues.entry(wxid.to_owned()).or_default();
        if queue.len() >= MAX_QUEUED_PER_WXID {
            return Err(QueueFull {
                wxid: wxid.to_owned(),
            });
        }
        self.next_task += 1;
        let task_id = format!("task-{}", self.next_task);
        queue.push_back(QueuedTask {
            task_id: task_id.clone(),
            task_type,
            task_dict: task_dict.clone(),
        });
        let now = now_ms();
        if task_type == 200 {
            self.note_requested_qr_session(&task_dict, now);
        }
        self.tasks.insert(
            task_id.clone(),
            TaskRecord {
                task_id: task_id.clone(),
                wxid: wxid.to_owned(),
                via,
                task_type,
                task_dict,
                auto,
                queued_ms: now,
                delivered_ms: None,
                delivered_us: None,
            },
        );
        self.task_order.push_back(task_id.clone());
        while self.task_order.len() > MAX_TASK_RECORDS {
            if let Some(old) = self.task_order.pop_front() {
                self.tasks.remove(&old);
            }
        }
        Ok(task_id)
    }

    /// Task 200 names the QR session the server chose; list it before its first PNG arrives.
    fn note_requested_qr_session(&mut self, task_dict: &Value, now: u64) {
        let id = task_dict
            .get("qrcode_session_id")
            .or_else(|| task_dict.get("qr_session_id"))
            .and_then(Value::as_str);
        if let Some(id) = id.filter(|id| !id.is_empty()) {
            self.qr_session_mut(id, "requested", now);
        }
    }

    /// The next pull task for `wxid`, marked delivered.
    pub fn pop_pull(&mut self, wxid: &str) -> Option<QueuedTask> {
        let task = self.pull_queues.get_mut(wxid)?.pop_front()?;
        self.mark_delivered(&task.task_id);
        Some(task)
    }

    /// Every reply task queued for `wxid`, marked delivered and removed.
    pub fn drain_replies(&mut self, wxid: &str) -> Vec<QueuedTask> {
        let tasks: Vec<QueuedTask> = self
            .reply_queues
            .get_mut(wxid)
            .map(|queue| queue.drain(..).collect())
            .unwrap_or_default();
        for task in &tasks {
            self.mark_delivered(&task.task_id);
        }
        tasks
    }

    fn mark_delivered(&mut self, task_id: &str) {
        if let Some(record) = self.tasks.get_mut(task_id) {
            record.delivered_ms = Some(now_ms());
            record.delivered_us = Some(crate::sim::clock::mono_us());
        }
    }

    pub fn tasks(&self) -> Vec<&TaskRecord> {
        self.task_order
            .iter()
            .filter_map(|id| self.tasks.get(id))
            .collect()
    }

    pub fn record_result(
        &mut self,
        task_id: &str,
        wxid: &str,
        task_result: Option<i64>,
        error_reason: String,
    ) {
        let now = now_ms();
        let reports = match self.results.get(task_id) {
            Some(previous) => previous.reports + 1,
            None => {
                self.result_order.push_back(task_id.to_owned());
                1
            }
        };
        self.results.insert(
            task_id.to_owned(),
            TaskResult {
                task_id: task_id.to_owned(),
                wxid: wxid.to_owned(),
                task_result,
                error_reason,
                time_ms: now,
                reports,
            },
        );
        while self.result_order.len() > MAX_TASK_RECORDS {
            if let Some(old) = self.result_order.pop_front() {
                self.results.remove(&old);
            }
        }
    }

    pub fn results(&self) -> &HashMap<String, TaskResult> {
        &self.results
    }

    // ---- QR sessions ----

    fn qr_session_mut(&mut self, id: &str, initial_status: &str, now: u64) -> &mut QrSession {
        if !self.qr_sessions.contains_key(id) {
            self.qr_order.push_back(id.to_owned());
            while self.qr_order.len() > MAX_QR_SESSIONS {
                if let Some(old) = self.qr_order.pop_front() {
                    self.qr_sessions.remove(&old);
                }
            }
        }
        self.qr_sessions
            .entry(id.to_owned())
            .or_insert_with(|| QrSession::new(id, initial_status, now))
    }

    pub fn qr_upload(&mut self, id: &str, machine_id: &str, png: Bytes, record: UploadRecord) {
        let now = record.time_ms;
        let session = self.qr_session_mut(id, "uploaded", now);
        if session.status == "requested" {
            session.status = "uploaded".to_owned();
        }
        session.machine_id = machine_id.to_owned();
        session.uploads += 1;
        session.png = Some(png);
        session.updated_ms = now;
        session.last_upload_ms = Some(now);
        self.push_upload(record);
    }

    pub fn qr_status(&mut self, id: &str, entry: QrStatusEntry) {
        let session = self.qr_session_mut(id, &entry.status, entry.time_ms);
        session.status = entry.status.clone();
        if !entry.machine_id.is_empty() {
            session.machine_id = entry.machine_id.clone();
        }
        session.updated_ms = entry.time_ms;
        session.status_history.push(entry);
        if session.status_history.len() > MAX_QR_HISTORY {
            session.status_history.remove(0);
        }
    }

    pub fn qr_sessions(&self) -> Vec<&QrSession> {
        self.qr_order
            .iter()
            .filter_map(|id| self.qr_sessions.get(id))
            .collect()
    }

    pub fn qr_png(&self, id: &str) -> Option<Bytes> {
        self.qr_sessions.get(id)?.png.clone()
    }

    // ---- media ----

    pub fn media_upload(&mut self, file_index: &str, file: MediaFile, record: UploadRecord) {
        if let Some(old) = self.media.remove(file_index) {
            self.media_bytes -= old.bytes.len();
            self.media_order.retain(|key| key != file_index);
        }
        self.media_bytes += file.bytes.len();
        self.media.insert(file_index.to_owned(), file);
        self.media_order.push_back(file_index.to_owned());
        while self.media_bytes > MAX_MEDIA_BYTES && self.media_order.len() > 1 {
            if let Some(old) = self.media_order.pop_front()
                && let Some(file) = self.media.remove(&old)
            {
                self.media_bytes -= file.bytes.len();
            }
        }
        self.push_upload(record);
    }

    pub fn media(&self, file_index: &str) -> Option<&MediaFile> {
        self.media.get(file_index)
    }

    fn push_upload(&mut self, record: UploadRecord) {
        self.uploads.push_back(record);
        while self.uploads.len() > MAX_UPLOAD_RECORDS {
            self.uploads.pop_front();
        }
    }

    pub fn uploads(&self) -> impl Iterator<Item = &UploadRecord> {
        self.uploads.iter()
    }

    // ---- accounts ----

    pub fn account_login(
        &mut self,
        wxid: &str,
        nickname: Option<String>,
        machine_id: Option<String>,
        qr_session_id: Option<String>,
    ) {
        let now = now_ms();
        if let Some(id) = qr_session_id.as_deref().filter(|id| !id.is_empty()) {
            let session = self.qr_session_mut(id, "uploaded", now);
            session.wxid = Some(wxid.to_owned());
            session.updated_ms = now;
        }
        let account = self
            .accounts
            .entry(wxid.to_owned())
            .or_insert_with(|| Account {
                wxid: wxid.to_owned(),
                nickname: None,
                machine_id: None,
                qr_session_id: None,
                logins: 0,
                state: AccountState::Online { since_ms: now },
            });
        account.logins += 1;
        account.state = AccountState::Online { since_ms: now };
        account.nickname = nickname.or(account.nickname.take());
        account.machine_id = machine_id.or(account.machine_id.take());
        account.qr_session_id = qr_session_id.or(account.qr_session_id.take());
    }

    pub fn account_logout(&mut self, wxid: &str, reason: Option<String>) {
        if let Some(account) = self.accounts.get_mut(wxid) {
            account.state = AccountState::Offline {
                since_ms: now_ms(),
                reason,
            };
        }
    }

    pub fn accounts(&self) -> Vec<&Account> {
        let mut accounts: Vec<&Account> = self.accounts.values().collect();
        accounts.sort_by(|a, b| a.wxid.cmp(&b.wxid));
        accounts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(body_len: usize) -> RequestRecord {
        RequestRecord {
            index: 0,
            time_ms: 0,
            transport: Transport::Http,
            mono_us: 0,
            action: "report_new_msg".into(),
            appid: String::new(),
            wxid: "w".into(),
            client_session: None,
            data: json!({}),
            event_id: None,
            timestamp: None,
            signature: None,
            signature_ok: None,
            status: 200,
            duplicate: false,
            error: None,
            batch: 0,
            body_len,
        }
    }

    #[test]
    fn request_cap_drops_oldest_and_keeps_indices() {
        let mut store = Store::default();
        for _ in 0..MAX_REQUESTS + 5 {
            store.record_request(request(1));
        }
        assert_eq!(store.requests().count(), MAX_REQUESTS);
        assert_eq!(
            store.counts()["report_new_msg"]["w"],
            (MAX_REQUESTS + 5) as u64,
            "counts outlive the ring"
        );
        assert_eq!(store.requests().next().map(|r| r.index), Some(5));
        assert_eq!(store.next_request_index(), (MAX_REQUESTS + 5) as u64);
        // Reading from an index finds it without the ones before (or the ring's start).
        let from = |since: u64| -> Vec<u64> {
            store
                .requests_from(since)
                .map(|r| r.index)
                .take(3)
                .collect()
        };
        assert_eq!(from(0), [5, 6, 7]);
        let last = (MAX_REQUESTS + 3) as u64;
        assert_eq!(from(last), [last, last + 1]);
        assert!(from(u64::MAX).is_empty());
    }

    #[test]
    fn request_byte_cap_drops_oldest() {
        let mut store = Store::default();
        store.record_request(request(MAX_REQUEST_BYTES / 2));
        store.record_request(request(MAX_REQUEST_BYTES / 2));
        store.record_request(request(10));
        assert_eq!(
            store.requests().map(|r| r.index).collect::<Vec<_>>(),
            vec![1, 2]
        );
    }

    #[test]
    fn media_cap_evicts_oldest_file() {
        let mut store = Store::default();
        let file = |n: usize| MediaFile {
            file_name: None,
            content_type: None,
            bytes: Bytes::from(vec![0u8; n]),
        };
        let record = || UploadRecord {
            kind: UploadKind::Media,
            qr_session_id: None,
            file_index: None,
            machine_id: None,
            file_name: None,
            content_type: None,
            size: 0,
            time_ms: 0,
            mono_us: 0,
            signature_ok: None,
        };
        store.media_upload("a", file(MAX_MEDIA_BYTES / 2), record());
        store.media_upload("b", file(MAX_MEDIA_BYTES / 2), record());
        assert!(store.media("a").is_some());
        store.media_upload("c", file(1), record());
        assert!(store.media("a").is_none());
        assert!(store.media("b").is_some() && store.media("c").is_some());
        // Re-uploading a key replaces it without double counting.
        store.media_upload("c", file(2), record());
        assert_eq!(store.media_bytes, MAX_MEDIA_BYTES / 2 + 2);
    }

    #[test]
    fn queues_are_per_wxid_and_fifo() {
        let mut store = Store::default();
        let a = store
            .queue_task("w", Via::Pull, 1, json!({}), false)
            .expect("queued");
        let b = store
            .queue_task("w", Via::Pull, 2, json!({}), false)
            .expect("queued");
        assert_ne!(a, b);
        assert!(store.pop_pull("").is_none());
        assert_eq!(store.pop_pull("w").map(|t| t.task_id), Some(a));
        assert_eq!(store.pop_pull("w").map(|t| t.task_id), Some(b));
        assert!(store.pop_pull("w").is_none());
    }

    #[test]
    fn seen_keys_forget_oldest() {
        let mut seen = SeenKeys::default();
        assert!(!seen.check_and_insert("first".into()));
        assert!(seen.check_and_insert("first".into()));
        for i in 0..MAX_SEEN_KEYS {
            seen.check_and_insert(i.to_string());
        }
        assert!(!seen.check_and_insert("first".into()));
    }
}
