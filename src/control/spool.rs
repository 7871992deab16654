//! The durable per-session report spool (DESIGN §3.3, spec B.5): every report is appended and
//! synced to disk before it is sent, handed out oldest first, and kept until the control plane
//! acknowledges it, so a crash at any instant loses nothing already appended (at-least-once).
//! File-level and synchronous; [`delivery`](super::delivery) sends what it holds.
//!
//! # On-disk format, version 2
//!
//! A spool is one directory (mode 0700; files 0600) holding:
//!
//! - `LOCK`: empty; held with an exclusive advisory lock while a [`Spool`] is open, so two
//!   processes never write one spool.
//! - Segments `NNNNNNNNNNNNNNNNNNNN.seg` (20-digit segment number, increasing): an append-only
//!   log. The last segment is the active one; every write goes to its end.
//!
//! All integers are little-endian. A segment starts with a header:
//!
//! | bytes | field |
//! |---|---|
//! | 8 | magic `WXSPOOL\0` |
//! | 4 | format version (u32) = 2 (version 1 segments are read too) |
//! | 8 | base seq (u64): no entry in this segment has a smaller seq |
//! | 2 | session id length `n` (u16) |
//! | n | session id (UTF-8; visible ASCII) |
//! | 4 | CRC-32 (IEEE) of everything above |
//!
//! followed by records:
//!
//! | bytes | field |
//! |---|---|
//! | 2 | magic `wr` |
//! | 1 | kind: 1 = entry, 2 = ack |
//! | 1 | flags: 1 = written over an unsynced write (see below); 0 in a version 1 segment |
//! | 4 | payload length `L` (u32) |
//! | 8 | seq (u64): an entry's own seq; for an ack, every entry with seq ≤ it is acknowledged |
//! | 4 | CRC-32 of bytes 2..16 of this record followed by the payload |
//! | L | payload: entry = action length (u32), action, wxid length (u32), wxid, `data` as JSON; ack = empty |
//!
//! Entry seqs start at 1 and increase by one per append; the event id of an entry is
//! `<session_id>:<seq>` (the `X-Wxagent-Event-Id` header, B.5), so it is the same on every
//! retry and after any restart. Acks are always for the oldest pending entry, so the ack
//! records form one increasing cursor. A file of a later version is refused
//! ([`SpoolError::UnsupportedVersion`]); a new layout gets a new version number. Version 1
//! differs only in having no record flags; a version 1 active segment is left for a new one
//! at the first append.
//!
//! # Durability and recovery
//!
//! An append or ack returns only after its bytes are written and `fdatasync`ed; a batch
//! ([`Spool::append_batch`]) is one write and one sync (group commit). The unsynced forms
//! ([`Spool::append_unsynced`], [`Spool::append_batch_unsynced`]) return once the bytes are
//! written, with an [`Unsynced`] whose [`sync`](Unsynced::sync) makes them durable: the caller
//! runs it without the spool's lock, so the report can be read back and sent while the disk
//! works. A report is safe once its sync returned or the control plane acknowledged it
//! (at-least-once either way); whatever depends on it being safe (the SyncKey) waits for one of
//! the two, and a write the control plane acknowledges soon enough is not synced on its own
//! at all (`DeliveryHandle::commit` in `control::delivery`). A write does not wait for the
//! sync of an earlier one: it goes to the file at once, and its records carry a flag (version 2: [`FLAG_OVER_UNSYNCED`]) saying that an earlier
//! write may not have reached the disk yet. A sync makes everything written before it durable,
//! so a record written with no sync pending proves that all before it was on disk. A rotation
//! syncs the segment it leaves, so after a machine crash damage can only be a torn stretch at
//! the end of the active segment: writes none of which had been synced, each either
//! acknowledged by the control plane or not yet confirmed to the caller. A new segment's header
//! is synced, and then its directory, before anything is written to it. On open:
//!
//! - The acknowledged cursor is the largest ack record found, or (when the records that said so
//!   were compacted away) one below the first remaining segment's base seq.
//! - A bad record (incomplete, wrong magic or checksum) in the active segment that only flagged
//!   records follow, or none, is a torn tail: writes never synced. It is cut off (the file is
//!   truncated, so later appends stay readable) and reported in [`Recovery`].
//! - A bad record anywhere else, or one followed by an unflagged valid record (in a version 1
//!   segment, any valid record), means data that had reached the disk is damaged:
//!   [`SpoolError::Corrupt`], naming the file and offset. Nothing is dropped silently; an
//!   operator decides (e.g. moves the file aside).
//! - An active segment holding no more than a partial header is the remains of an interrupted
//!   rotation: it held nothing and is removed.
//!
//! # Bounded disk and memory
//!
//! The active segment is rotated (a new one begins) once it is past 1 MiB, before the next
//! append, or when everything is acknowledged. A segment none of whose entries is pending is
//! deleted, oldest first, syncing the directory after each deletion so the segments on disk are
//! always a contiguous run. Disk use is therefore the pending reports plus at most about two
//! segments. Memory holds 8 bytes per pending entry (offset and length) and a few bytes per
//! segment; reports are read back from disk by [`Spool::front`].

use crate::config::SpoolConfig;
use serde_json::Value;
use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The format version this build writes; it reads this one and every earlier one.
pub const FORMAT_VERSION: u32 = 2;
/// Record flag (the byte after the kind, version 2): the record was written while an earlier
/// write to its segment was not yet known to be synced. See "Durability and recovery".
const FLAG_OVER_UNSYNCED: u8 = 1;

const SEGMENT_MAGIC: &[u8; 8] = b"WXSPOOL\0";
const RECORD_MAGIC: &[u8; 2] = b"wr";
const KIND_ENTRY: u8 = 1;
const KIND_ACK: u8 = 2;
const RECORD_HEADER: usize = 20;
/// Magic, version, base seq and the session id length: what precedes the session id.
const SEGMENT_HEADER_FIXED: usize = 22;
const MAX_SESSION_ID: usize = 256;
/// A single report's payload above this is refused: reports carry text and URLs, not media.
const MAX_PAYLOAD: u32 = 16 * 1024 * 1024;
/// The active segment is rotated before the next append once it is this large.
const SEGMENT_TARGET: u64 = 1024 * 1024;
/// Offsets are kept as `u32`; no write may end past this in one segment.
const SEGMENT_HARD_LIMIT: u64 = u32::MAX as u64;
const LOCK_FILE: &str = "LOCK";
const SEGMENT_SUFFIX: &str = ".seg";

/// How much a spool may hold before appends are refused with [`SpoolError::Full`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolLimits {
    /// Bytes of pending records (headers included).
    pub max_bytes: u64,
    /// Pending reports.
    pub max_events: u64,
}

impl From<&SpoolConfig> for SpoolLimits {
    fn from(cfg: &SpoolConfig) -> Self {
        SpoolLimits {
            max_bytes: cfg.max_bytes,
            max_events: cfg.max_events,
        }
    }
}

/// One report in the spool.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// `<session_id>:<seq>`, sent as `X-Wxagent-Event-Id`.
    pub event_id: String,
    pub seq: u64,
    pub action: String,
    pub wxid: String,
    pub data: Value,
}

/// Counters for the admin API and metrics. Totals count since this [`Spool`] was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Reports appended and not yet acknowledged.
    pub pending: u64,
    /// Bytes of their records.
    pub bytes: u64,
    pub appended_total: u64,
    pub acked_total: u64,
    /// Appends refused because a limit was reached (the "spool full" metric).
    pub full_rejections: u64,
}

/// What [`Spool::open`] found on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Segment files read.
    pub segments: usize,
    /// Reports that were pending (appended, never acknowledged).
    pub pending: u64,
    /// The seq the next append gets.
    pub next_seq: u64,
    /// Bytes of a torn tail cut off the active segment (0: none).
    pub torn_bytes: u64,
    /// Whether a segment with only a partial header (an interrupted rotation) was removed.
    pub removed_partial_segment: bool,
}

/// Why a spool operation failed. Messages name the file or the limit involved.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {}: cannot {op}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A limit is reached; nothing was appended (earlier reports are untouched).
    #[error(
        "spool full: the [spool] max_{what} limit of {limit} {what} is reached; the report was not appended"
    )]
    Full { what: &'static str, limit: u64 },
    /// One report alone is larger than the spool may hold.
    #[error("report of {size} bytes is larger than the spool accepts ({limit} bytes)")]
    TooLarge { size: u64, limit: u64 },
    #[error(
        "spool {}: format version {found} is not supported (this build reads versions 1 to {supported})",
        path.display()
    )]
    UnsupportedVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    /// Data that was once confirmed as written is damaged or missing.
    #[error("spool {}: corrupt at byte {offset}: {detail}", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        detail: String,
    },
    #[error("spool {}: belongs to session {found:?}, not {expected:?}", path.display())]
    SessionMismatch {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("spool {}: in use by another process", path.display())]
    Locked { path: PathBuf },
    #[error("invalid spool session id {id:?}: {why}")]
    InvalidSession { id: String, why: &'static str },
    /// [`Spool::ack`] was given something other than the oldest pending report.
    #[error("cannot acknowledge {event_id}: the oldest pending report is {}", front.as_deref().unwrap_or("none"))]
    NotFront {
        event_id: String,
        front: Option<String>,
    },
    /// A failed write could not be rolled back, so the file's end is unknown; reopen the spool.
    #[error("spool {}: unusable after a failed write that could not be undone; reopen it", path.display())]
    Broken { path: PathBuf },
}

fn io_err<'p>(op: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> SpoolError + 'p {
    move |source| SpoolError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Where one pending entry's record is in its segment.
#[derive(Debug, Clone, Copy)]
struct Slot {
    offset: u32,
    len: u32,
}

#[derive(Debug)]
struct Segment {
    number: u64,
    path: PathBuf,
    /// The format version in its header (what its records may carry).
    version: u32,
    /// The seq of `slots[0]`; the pending entries of a segment have consecutive seqs.
    first_seq: u64,
    slots: VecDeque<Slot>,
    /// Its file opened for reading, once a report was read from it while it was not the active
    /// segment (delivery behind by a segment or more reads every report from it in turn).
    reader: std::sync::OnceLock<File>,
}

impl Segment {
    fn new(number: u64, path: PathBuf, version: u32) -> Segment {
        Segment {
            number,
            path,
            version,
            first_seq: 0,
            slots: VecDeque::new(),
            reader: std::sync::OnceLock::new(),
        }
    }

    fn push(&mut self, seq: u64, slot: Slot) {
        if self.slots.is_empty() {
            self.first_seq = seq;
        }
        self.slots.push_back(slot);
    }

    /// Forgets entries with seq ≤ `cursor`.
    fn drop_through(&mut self, cursor: u64) {
        while !self.slots.is_empty() && self.first_seq <= cursor {
            self.slots.pop_front();
            self.first_seq += 1;
        }
    }
}

/// A per-session spool of reports not yet acknowledged by the control plane. See the module
/// doc for the format and the guarantees.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    session_id: String,
    limits: SpoolLimits,
    _lock: File,
    /// Oldest first; never empty; the last is the active segment.
    segments: VecDeque<Segment>,
    /// The active segment, opened for reading and appending (shared with [`Unsynced`]).
    active: Arc<File>,
    /// Numbers the writes: the latest one, and (shared with [`Unsynced`]) the latest one known
    /// to be synced. They differ while one write waits for its sync.
    written: u64,
    synced: Arc<AtomicU64>,
    active_len: u64,
    next_seq: u64,
    pending: u64,
    pending_bytes: u64,
    appended_total: u64,
    acked_total: u64,
    full_rejections: u64,
    /// Set after a full rejection, cleared by the next append: logs "full" once per episode.
    full_logged: bool,
    /// The newest entry acknowledged by [`ack_deferred`](Self::ack_deferred) whose ack record
    /// is not yet on disk, and how many such acks there are.
    unsynced_ack: Option<u64>,
    unsynced_acks: u64,
    /// A write could not be undone or synced; shared with [`Unsynced`].
    broken: Arc<AtomicBool>,
    recovery: Recovery,
}

/// Writes the deferred acks as [`Spool::sync_acks`] does, but syncs them without holding the
/// lock (the sync also covers any earlier write still unsynced).
pub fn sync_acks_unlocked(spool: &std::sync::Mutex<Spool>) -> Result<(), SpoolError> {
    let written = spool
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .write_acks()?;
    written.map_or(Ok(()), Unsynced::sync)
}

/// Records written to the spool but not yet synced: [`sync`](Self::sync) makes them durable.
/// It needs no lock on the spool, so readers and the sender go on meanwhile.
#[derive(Debug)]
#[must_use = "the records are not durable until synced"]
pub struct Unsynced {
    file: Arc<File>,
    path: PathBuf,
    write: u64,
    synced: Arc<AtomicU64>,
    broken: Arc<AtomicBool>,
}

impl Unsynced {
    /// `fdatasync`s the segment the records went to. On failure the spool refuses further
    /// writes until it is reopened (after a failed sync the kernel's copy of the file cannot be
    /// trusted to reach the disk), and the records must count as not spooled.
    pub fn sync(self) -> Result<(), SpoolError> {
        match self.file.sync_data() {
            Ok(()) => {
                self.synced.fetch_max(self.write, Ordering::AcqRel);
                Ok(())
            }
            Err(e) => {
                tracing::error!(segment = %self.path.display(), error = %e, "cannot sync the spool; it must be reopened");
                self.broken.store(true, Ordering::Release);
                Err(io_err("sync", &self.path)(e))
            }
        }
    }
}

impl Spool {
    /// Opens (creating) the spool in `dir` (0700) with its files (0600). Recovers after a
    /// crash: a torn last record is dropped (it was never confirmed as appended), everything
    /// complete is kept; [`recovery`](Self::recovery) reports what was found.
    pub fn open(dir: &Path, session_id: &str, limits: SpoolLimits) -> Result<Spool, SpoolError> {
        check_session_id(session_id)?;
        create_private_dir(dir).map_err(io_err("create the directory", dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = private_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io_err("open the lock file", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(SpoolError::Locked {
                    path: dir.to_path_buf(),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_err("lock", &lock_path)(e)),
        }

        let found = list_segments(dir)?;
        let mut recovery = Recovery::default();
        let mut segments: VecDeque<Segment> = VecDeque::new();
        let mut cursor = 0u64;
        let mut last_seq = 0u64;
        let mut max_base = 0u64;
        let mut first_base = None;
        let count = found.len();
        for (i, (number, path)) in found.into_iter().enumerate() {
            let is_last = i + 1 == count;
            let mut file = File::open(&path).map_err(io_err("open a segment", &path))?;
            let file_len = file
                .metadata()
                .map_err(io_err("read the size of a segment", &path))?
                .len();
            let (base, header_len, version) = match read_header(
                &mut file, &path, session_id, file_len,
            )? {
                Header::Valid { base, len, version } => (base, len, version),
                Header::Partial if is_last => {
                    tracing::warn!(
                        segment = %path.display(),
                        "removing a spool segment with a partial header (an interrupted rotation; it held nothing)"
                    );
                    drop(file);
                    fs::remove_file(&path).map_err(io_err("remove a partial segment", &path))?;
                    sync_dir(dir).map_err(io_err("sync the directory", dir))?;
                    recovery.removed_partial_segment = true;
                    continue;
                }
                Header::Partial => {
                    return Err(SpoolError::Corrupt {
                        path,
                        offset: 0,
                        detail: "segment header is incomplete or damaged".to_owned(),
                    });
                }
            };
            first_base.get_or_insert(base);
            max_base = max_base.max(base);
            recovery.segments += 1;
            let mut segment = Segment::new(number, path.clone(), version);
            let scan = scan_records(
                file,
                &path,
                header_len,
                file_len,
                (base, version),
                &mut last_seq,
            )?;
            for item in scan.items {
                match item {
                    Scanned::Entry(seq, slot) => segment.push(seq, slot),
                    Scanned::Ack(seq) => cursor = cursor.max(seq),
                }
            }
            // Pruned per segment, so memory holds the pending entries plus one segment's.
            for s in segments.iter_mut().chain(std::iter::once(&mut segment)) {
                s.drop_through(cursor);
            }
            if let Some(bad) = scan.bad {
                if !is_last {
                    return Err(SpoolError::Corrupt {
                        path,
                        offset: bad.offset,
                        detail: format!("{} in a segment that is not the last", bad.detail),
                    });
                }
                if let Some(valid) = confirmed_after(&path, bad.offset, file_len, version)? {
                    return Err(SpoolError::Corrupt {
                        path,
                        offset: bad.offset,
                        detail: format!(
                            "{}, yet a record written after it was synced follows at byte {valid}",
                            bad.detail
                        ),
                    });
                }
                let torn = file_len - bad.offset;
                tracing::warn!(
                    segment = %path.display(),
                    offset = bad.offset,
                    bytes = torn,
                    problem = %bad.detail,
                    "cutting off torn records at the end of the spool (writes that were never synced)"
                );
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err("open a segment to cut its torn tail", &path))?;
                f.set_len(bad.offset)
                    .map_err(io_err("cut a torn tail", &path))?;
                f.sync_all().map_err(io_err("sync a segment", &path))?;
                recovery.torn_bytes = torn;
            }
            segments.push_back(segment);
        }

        // Segments are deleted only when fully acknowledged, so everything below the first
        // remaining one was acknowledged even if the ack records went with it.
        if let Some(base) = first_base {
            cursor = cursor.max(base.saturating_sub(1));
        }
        for s in segments.iter_mut() {
            s.drop_through(cursor);
        }
        let mut expected = cursor + 1;
        let mut pending = 0u64;
        let mut pending_bytes = 0u64;
        for s in &segments {
            if s.slots.is_empty() {
                continue;
            }
            if s.first_seq != expected {
                return Err(SpoolError::Corrupt {
                    path: s.path.clone(),
                    offset: s.slots[0].offset.into(),
                    detail: format!(
                        "pending reports {expected} to {} are missing",
                        s.first_seq - 1
                    ),
                });
            }
            expected += s.slots.len() as u64;
            pending += s.slots.len() as u64;
            pending_bytes += s.slots.iter().map(|x| u64::from(x.len)).sum::<u64>();
        }
        let next_seq = expected.max(last_seq + 1).max(max_base).max(1);

        let (active, active_len) = match segments.back() {
            Some(last) => {
                let file = open_active(&last.path)?;
                let len = file
                    .metadata()
                    .map_err(io_err("read the size of a segment", &last.path))?
                    .len();
                (file, len)
            }
            None => {
                let number = 1;
                let (segment, file, len) = create_segment(dir, number, next_seq, session_id)?;
                segments.push_back(segment);
                (file, len)
            }
        };
        recovery.pending = pending;
        recovery.next_seq = next_seq;
        let active = Arc::new(active);

        let mut spool = Spool {
            dir: dir.to_path_buf(),
            session_id: session_id.to_owned(),
            limits,
            _lock: lock,
            segments,
            active,
            active_len,
            written: 0,
            synced: Arc::new(AtomicU64::new(0)),
            next_seq,
            pending,
            pending_bytes,
            appended_total: 0,
            acked_total: 0,
            full_rejections: 0,
            full_logged: false,
            unsynced_ack: None,
            unsynced_acks: 0,
            broken: Arc::new(AtomicBool::new(false)),
            recovery,
        };
        spool.compact();
        spool.rotate_if_idle();
        if spool.pending > 0 {
            tracing::info!(
                dir = %spool.dir.display(),
                pending = spool.pending,
                bytes = spool.pending_bytes,
                next_seq = spool.next_seq,
                "spool holds reports from an earlier run; they will be delivered first"
            );
        } else {
            tracing::debug!(dir = %spool.dir.display(), next_seq = spool.next_seq, "spool opened");
        }
        Ok(spool)
    }

    /// What [`open`](Self::open) recovered.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// The directory of this spool.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The event id of the entry with `seq`.
    pub fn event_id(&self, seq: u64) -> String {
        format!("{}:{seq}", self.session_id)
    }

    /// Appends one report and makes it durable (fdatasync) before returning it with its event
    /// id. [`SpoolError::Full`] when a limit would be exceeded.
    pub fn append(&mut self, action: &str, wxid: &str, data: &Value) -> Result<Entry, SpoolError> {
        let (entry, unsynced) = self.append_unsynced(action, wxid, data)?;
        unsynced.sync()?;
        Ok(entry)
    }

    /// [`append`](Self::append) without the sync: the report can be read and sent at once, and
    /// is durable once the returned [`Unsynced`] is synced.
    pub fn append_unsynced(
        &mut self,
        action: &str,
        wxid: &str,
        data: &Value,
    ) -> Result<(Entry, Unsynced), SpoolError> {
        let mut buf = Vec::new();
        let len = encode_entry(&mut buf, self.next_seq, action, wxid, data);
        let unsynced = self.write_entries(buf, &[len])?;
        let entry = Entry {
            event_id: self.event_id(self.next_seq - 1),
            seq: self.next_seq - 1,
            action: action.to_owned(),
            wxid: wxid.to_owned(),
            data: data.clone(),
        };
        Ok((entry, unsynced))
    }

    /// Appends several reports `(action, wxid, data)` with one write and one sync (group
    /// commit): all of them or, on any error, none.
    pub fn append_batch(
        &mut self,
        items: &[(String, String, Value)],
    ) -> Result<Vec<Entry>, SpoolError> {
        let first = self.next_seq;
        if let Some((_, u)) = self.append_batch_unsynced(items)? {
            u.sync()?;
        }
        Ok(items
            .iter()
            .enumerate()
            .map(|(i, (action, wxid, data))| Entry {
                event_id: self.event_id(first + i as u64),
                seq: first + i as u64,
                action: action.clone(),
                wxid: wxid.clone(),
                data: data.clone(),
            })
            .collect())
    }

    /// [`append_batch`](Self::append_batch) without the sync: see
    /// [`append_unsynced`](Self::append_unsynced). Returns the seq of the last report written
    /// and the write (`None` for no items); the reports are not copied back (a worker appends
    /// every message this way, and needs only the seqs).
    pub fn append_batch_unsynced(
        &mut self,
        items: &[(String, String, Value)],
    ) -> Result<Option<(u64, Unsynced)>, SpoolError> {
        if items.is_empty() {
            return Ok(None);
        }
        let first = self.next_seq;
        let mut buf = Vec::new();
        let mut lens = Vec::with_capacity(items.len());
        for (i, (action, wxid, data)) in items.iter().enumerate() {
            lens.push(encode_entry(&mut buf, first + i as u64, action, wxid, data));
        }
        let unsynced = self.write_entries(buf, &lens)?;
        Ok(Some((first + items.len() as u64 - 1, unsynced)))
    }

    /// The oldest report not yet acknowledged, read back from disk.
    pub fn front(&self) -> Result<Option<Entry>, SpoolError> {
        let Some((segment, slot, seq)) = self.front_slot() else {
            return Ok(None);
        };
        let file = self.reader(segment)?;
        self.read_slot(file, segment, slot, seq).map(Some)
    }

    /// Up to `max` pending reports after the one with seq `after` (0: from the front), oldest
    /// first, read back from disk with the same checks as [`front`](Self::front). A pipelined
    /// sender reads the reports behind those it already sent with it.
    pub fn peek_after(&self, after: u64, max: usize) -> Result<Vec<Entry>, SpoolError> {
        let mut out = Vec::with_capacity(max.min(self.pending as usize));
        for segment in &self.segments {
            if out.len() >= max {
                break;
            }
            let last = segment.first_seq + segment.slots.len() as u64;
            if segment.slots.is_empty() || last <= after + 1 {
                continue;
            }
            let file = self.reader(segment)?;
            let skip = (after + 1).saturating_sub(segment.first_seq) as usize;
            for (i, slot) in segment.slots.iter().enumerate().skip(skip) {
                if out.len() >= max {
                    break;
                }
                let seq = segment.first_seq + i as u64;
                out.push(self.read_slot(file, segment, *slot, seq)?);
            }
        }
        Ok(out)
    }

    /// [`peek_after`](Self::peek_after) from the front.
    pub fn peek(&self, max: usize) -> Result<Vec<Entry>, SpoolError> {
        self.peek_after(0, max)
    }

    /// Up to `max` pending reports from the front whose records take at most `max_bytes` in
    /// all, but always the front one (when there is one), however large: what one request may
    /// carry. Read with the same checks as [`front`](Self::front); a damaged record behind the
    /// front ends the list before it, so the reports ahead of it still go out.
    pub fn peek_batch(&self, max: usize, max_bytes: u64) -> Result<Vec<Entry>, SpoolError> {
        let mut out = Vec::with_capacity(max.min(self.pending as usize).min(64));
        let mut bytes = 0u64;
        'segments: for segment in &self.segments {
            if segment.slots.is_empty() {
                continue;
            }
            let file = match self.reader(segment) {
                Ok(file) => file,
                Err(e) if out.is_empty() => return Err(e),
                Err(_) => break,
            };
            for (i, slot) in segment.slots.iter().enumerate() {
                bytes += u64::from(slot.len);
                if out.len() >= max || (!out.is_empty() && bytes > max_bytes) {
                    break 'segments;
                }
                let seq = segment.first_seq + i as u64;
                match self.read_slot(file, segment, *slot, seq) {
                    Ok(entry) => out.push(entry),
                    Err(e) if out.is_empty() => return Err(e),
                    Err(_) => break 'segments,
                }
            }
        }
        Ok(out)
    }

    /// The file to read `segment`'s records from: the active one is open already, another is
    /// opened at its first read and kept open until it is deleted.
    fn reader<'a>(&'a self, segment: &'a Segment) -> Result<&'a File, SpoolError> {
        if self.is_active(segment) {
            return Ok(&self.active);
        }
        if let Some(file) = segment.reader.get() {
            return Ok(file);
        }
        let file =
            File::open(&segment.path).map_err(io_err("read a pending report", &segment.path))?;
        Ok(segment.reader.get_or_init(|| file))
    }

    /// Reads and checks the record of pending report `seq` at `slot`.
    fn read_slot(
        &self,
        file: &File,
        segment: &Segment,
        slot: Slot,
        seq: u64,
    ) -> Result<Entry, SpoolError> {
        let mut buf = vec![0u8; slot.len as usize];
        let offset = u64::from(slot.offset);
        read_exact_at(file, &mut buf, offset)
            .map_err(io_err("read a pending report", &segment.path))?;
        let corrupt = |detail: String| SpoolError::Corrupt {
            path: segment.path.clone(),
            offset,
            detail,
        };
        let record = parse_record(&buf, segment.version).map_err(|p| corrupt(p.to_owned()))?;
        if record.kind != KIND_ENTRY || record.seq != seq || record.total != buf.len() {
            return Err(corrupt(format!("expected the record of report {seq} here")));
        }
        let (action, wxid, data) = decode_entry(record.payload).map_err(corrupt)?;
        Ok(Entry {
            event_id: self.event_id(seq),
            seq,
            action,
            wxid,
            data,
        })
    }

    /// Marks the oldest pending report as delivered, durably. `event_id` must be that report's.
    pub fn ack(&mut self, event_id: &str) -> Result<(), SpoolError> {
        self.ack_deferred(event_id)?;
        self.sync_acks()
    }

    /// Marks the oldest pending report as delivered in memory only; its ack record is written
    /// by the next [`sync_acks`](Self::sync_acks) or append (whichever comes first, in the same
    /// write and sync). Losing it in a crash only sends the report again, which the control
    /// plane dedupes by event id (at-least-once), so a delivery run needs one sync, not one per
    /// report. `event_id` must be the oldest pending report's. Returns its seq.
    pub fn ack_deferred(&mut self, event_id: &str) -> Result<u64, SpoolError> {
        let front = self.front_slot().map(|(_, _, seq)| seq);
        self.check_usable()?;
        let Some(seq) = front.filter(|&seq| self.event_id(seq) == event_id) else {
            return Err(SpoolError::NotFront {
                event_id: event_id.to_owned(),
                front: front.map(|seq| self.event_id(seq)),
            });
        };
        let segment = self
            .segments
            .iter_mut()
            .find(|s| !s.slots.is_empty())
            .expect("the front slot was found in a segment");
        let slot = segment.slots.pop_front().expect("the front slot exists");
        segment.first_seq += 1;
        self.pending -= 1;
        self.pending_bytes -= u64::from(slot.len);
        self.acked_total += 1;
        self.unsynced_ack = Some(seq);
        self.unsynced_acks += 1;
        // The worker's status line carries the depth.
        crate::stats::changed();
        Ok(seq)
    }

    /// Acks made by [`ack_deferred`](Self::ack_deferred) and not yet on disk.
    pub fn unsynced_acks(&self) -> u64 {
        self.unsynced_acks
    }

    /// Writes the acks made by [`ack_deferred`](Self::ack_deferred) as one ack record and syncs
    /// it; then drops segments nothing pending is left in.
    pub fn sync_acks(&mut self) -> Result<(), SpoolError> {
        match self.write_acks()? {
            Some(u) => u.sync(),
            None => Ok(()),
        }
    }

    /// [`sync_acks`](Self::sync_acks) without the sync of the ack record (`None`: there was
    /// nothing to write).
    fn write_acks(&mut self) -> Result<Option<Unsynced>, SpoolError> {
        let mut unsynced = None;
        if let Some(seq) = self.unsynced_ack {
            let mut buf = Vec::with_capacity(RECORD_HEADER);
            encode_record(&mut buf, KIND_ACK, seq, &[]);
            unsynced = Some(self.write_unsynced(&mut buf)?);
            self.unsynced_ack = None;
            self.unsynced_acks = 0;
        }
        self.compact();
        self.rotate_if_idle();
        Ok(unsynced)
    }

    /// Whether every write has been synced.
    #[cfg(test)]
    pub(crate) fn all_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire) >= self.written
    }

    /// The latest write, when its sync has not been seen yet.
    #[cfg(test)]
    fn unsynced_write(&self) -> Option<Unsynced> {
        (self.synced.load(Ordering::Acquire) < self.written).then(|| self.unsynced_tail())
    }

    /// Reports pending.
    pub fn len(&self) -> u64 {
        self.pending
    }

    /// Bytes of the pending reports' records.
    pub fn bytes(&self) -> u64 {
        self.pending_bytes
    }

    pub fn is_empty(&self) -> bool {
        self.pending == 0
    }

    pub fn stats(&self) -> SpoolStats {
        SpoolStats {
            pending: self.pending,
            bytes: self.pending_bytes,
            appended_total: self.appended_total,
            acked_total: self.acked_total,
            full_rejections: self.full_rejections,
        }
    }

    /// Bytes of all segment files (what the spool uses on disk, less the lock file).
    pub fn disk_bytes(&self) -> u64 {
        self.segments
            .iter()
            .filter(|s| !self.is_active(s))
            .filter_map(|s| fs::metadata(&s.path).ok())
            .map(|m| m.len())
            .sum::<u64>()
            + self.active_len
    }

    fn front_slot(&self) -> Option<(&Segment, Slot, u64)> {
        self.segments
            .iter()
            .find(|s| !s.slots.is_empty())
            .map(|s| (s, s.slots[0], s.first_seq))
    }

    fn is_active(&self, segment: &Segment) -> bool {
        self.segments
            .back()
            .is_some_and(|a| a.number == segment.number)
    }

    /// Checks the limits, writes `buf` (records of consecutive entries from `next_seq`, whose
    /// lengths are `lens`) and indexes them; the caller syncs them.
    fn write_entries(&mut self, buf: Vec<u8>, lens: &[u32]) -> Result<Unsynced, SpoolError> {
        self.check_usable()?;
        let total = buf.len() as u64;
        let count = lens.len() as u64;
        let single_limit = self.limits.max_bytes.min(u64::from(MAX_PAYLOAD));
        if let Some(&big) = lens.iter().find(|&&l| u64::from(l) > single_limit) {
            return Err(SpoolError::TooLarge {
                size: big.into(),
                limit: single_limit,
            });
        }
        let over = if self.pending + count > self.limits.max_events {
            Some(("events", self.limits.max_events))
        } else if self.pending_bytes + total > self.limits.max_bytes {
            Some(("bytes", self.limits.max_bytes))
        } else {
            None
        };
        if let Some((what, limit)) = over {
            self.full_rejections += 1;
            crate::stats::changed();
            if !self.full_logged {
                self.full_logged = true;
                tracing::error!(
                    dir = %self.dir.display(),
                    pending = self.pending,
                    bytes = self.pending_bytes,
                    limit_kind = what,
                    limit,
                    "report spool is full; new reports are refused until the control plane accepts the pending ones"
                );
            }
            return Err(SpoolError::Full { what, limit });
        }
        // A segment of an earlier format is left at the first append: its records carry no
        // flags, so every write to it would wait for the sync of the one before.
        if self.active_len >= SEGMENT_TARGET
            || self.active_len + total > SEGMENT_HARD_LIMIT
            || self.active_version() < FORMAT_VERSION
        {
            match self.rotate() {
                Ok(()) => self.compact(),
                // A segment past its target size is still a good place for the report.
                Err(e) if self.active_len + total <= SEGMENT_HARD_LIMIT => {
                    tracing::warn!(error = %e, "cannot start a new spool segment; appending to the current one");
                }
                Err(e) => return Err(e),
            }
        }
        // Deferred acks ride along in the same write and sync.
        let mut buf = buf;
        let mut acked = 0;
        if let Some(seq) = self.unsynced_ack {
            let mut ack = Vec::with_capacity(RECORD_HEADER + buf.len());
            encode_record(&mut ack, KIND_ACK, seq, &[]);
            acked = ack.len() as u64;
            ack.extend_from_slice(&buf);
            buf = ack;
        }
        let start = self.active_len + acked;
        if start + total > SEGMENT_HARD_LIMIT {
            return Err(SpoolError::TooLarge {
                size: total,
                limit: SEGMENT_HARD_LIMIT - start,
            });
        }
        let unsynced = self.write_unsynced(&mut buf)?;
        if acked > 0 {
            self.unsynced_ack = None;
            self.unsynced_acks = 0;
        }
        let segment = self
            .segments
            .back_mut()
            .expect("there is an active segment");
        let mut offset = start;
        for &len in lens {
            let slot = Slot {
                offset: u32::try_from(offset).expect("segment offsets fit in u32"),
                len,
            };
            segment.push(self.next_seq, slot);
            self.next_seq += 1;
            offset += u64::from(len);
        }
        self.pending += count;
        self.pending_bytes += total;
        self.appended_total += count;
        self.full_logged = false;
        crate::stats::changed();
        Ok(unsynced)
    }

    /// Syncs the last write if its own sync has not been seen yet.
    fn sync_earlier_write(&mut self) -> Result<(), SpoolError> {
        if self.synced.load(Ordering::Acquire) >= self.written {
            return Ok(());
        }
        self.unsynced_tail().sync()
    }

    /// An [`Unsynced`] for the latest write, which went to the active segment (a rotation
    /// syncs the segment it leaves).
    fn unsynced_tail(&self) -> Unsynced {
        Unsynced {
            file: self.active.clone(),
            path: self
                .segments
                .back()
                .expect("there is an active segment")
                .path
                .clone(),
            write: self.written,
            synced: self.synced.clone(),
            broken: self.broken.clone(),
        }
    }

    /// Appends `buf` (whole records) to the active segment. When an earlier write may not be
    /// synced yet, the records are flagged as written over it ([`FLAG_OVER_UNSYNCED`]), so
    /// recovery can tell a crash that tore both from damage; a version 1 segment has no flags,
    /// and there the earlier write is synced first. On failure the segment is cut back to where
    /// it was, so a partial write never sits before later records.
    fn write_unsynced(&mut self, buf: &mut [u8]) -> Result<Unsynced, SpoolError> {
        self.check_usable()?;
        if self.synced.load(Ordering::Acquire) < self.written {
            if self.active_version() >= 2 {
                mark_over_unsynced(buf);
            } else {
                self.sync_earlier_write()?;
            }
        }
        let written = (&*self.active).write_all(buf);
        match written {
            Ok(()) => {
                self.active_len += buf.len() as u64;
                self.written += 1;
                Ok(self.unsynced_tail())
            }
            Err(e) => {
                let path = &self
                    .segments
                    .back()
                    .expect("there is an active segment")
                    .path;
                let undone = self
                    .active
                    .set_len(self.active_len)
                    .and_then(|()| self.active.sync_data());
                if let Err(undo) = undone {
                    tracing::error!(segment = %path.display(), error = %undo, "cannot undo a failed spool write; the spool must be reopened");
                    self.broken.store(true, Ordering::Release);
                }
                Err(io_err("write", path)(e))
            }
        }
    }

    /// Whether the next append may wait for the disk: it starts a new segment first (which
    /// syncs the one it leaves, the new header and the directory). Otherwise an append only
    /// copies its bytes into the page cache, quick enough to run on an async thread.
    pub fn append_may_block(&self) -> bool {
        self.active_len >= SEGMENT_TARGET || self.active_version() < FORMAT_VERSION
    }

    fn active_version(&self) -> u32 {
        self.segments
            .back()
            .expect("there is an active segment")
            .version
    }

    /// Starts a new active segment whose base is the next seq.
    fn rotate(&mut self) -> Result<(), SpoolError> {
        // The segment left behind must be whole on disk before anything follows it.
        self.sync_earlier_write()?;
        let number = self.segments.back().map_or(1, |s| s.number + 1);
        let (segment, file, len) =
            create_segment(&self.dir, number, self.next_seq, &self.session_id)?;
        self.segments.push_back(segment);
        self.active = Arc::new(file);
        self.active_len = len;
        Ok(())
    }

    /// With nothing pending, a full active segment is replaced by an empty one so the old one
    /// can go. Best effort: a failed rotation is tried again after the next ack.
    fn rotate_if_idle(&mut self) {
        if self.pending > 0 || self.active_len < SEGMENT_TARGET || self.is_broken() {
            return;
        }
        match self.rotate() {
            Ok(()) => self.compact(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start a new spool segment; keeping the current one")
            }
        }
    }

    /// After a write that could not be undone the active segment's end is unknown: nothing
    /// more may be written (nor a new segment started after it) until the spool is reopened,
    /// when recovery cuts the damage off as a torn tail.
    fn check_usable(&self) -> Result<(), SpoolError> {
        if self.is_broken() {
            let path = self.segments.back().expect("there is an active segment");
            return Err(SpoolError::Broken {
                path: path.path.clone(),
            });
        }
        Ok(())
    }

    fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }

    /// Deletes the oldest segments that hold no pending entry (never the active one).
    fn compact(&mut self) {
        while self.segments.len() > 1 && self.segments[0].slots.is_empty() {
            let path = self.segments[0].path.clone();
            let removed = fs::remove_file(&path).or_else(|e| match e.kind() {
                io::ErrorKind::NotFound => Ok(()),
                _ => Err(e),
            });
            // The directory is synced after each deletion so that a crash never leaves a
            // newer segment deleted and an older one present.
            if let Err(e) = removed.and_then(|()| sync_dir(&self.dir)) {
                tracing::warn!(segment = %path.display(), error = %e, "cannot delete an acknowledged spool segment; will retry");
                return;
            }
            self.segments.pop_front();
        }
    }
}

fn check_session_id(id: &str) -> Result<(), SpoolError> {
    let why = if id.is_empty() {
        "empty"
    } else if id.len() > MAX_SESSION_ID {
        "longer than 256 bytes"
    } else if !id.bytes().all(|b| b.is_ascii_graphic()) {
        // It travels in the X-Wxagent-Event-Id header.
        "only visible ASCII characters are allowed"
    } else {
        return Ok(());
    };
    Err(SpoolError::InvalidSession {
        id: id.to_owned(),
        why,
    })
}

// ---------------------------------------------------------------------------------------------
// Files and directories
// ---------------------------------------------------------------------------------------------

fn private_options() -> OpenOptions {
    #[allow(unused_mut)]
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    let existed = dir.is_dir();
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    #[cfg(not(unix))]
    fs::create_dir_all(dir)?;
    if !existed && let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Makes creations, renames and deletions in `dir` durable (no-op where directories cannot
/// be opened).
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        })?
        .sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
    }
    #[cfg(windows)]
    {
        let mut done = 0;
        while done < buf.len() {
            match std::os::windows::fs::FileExt::seek_read(
                file,
                &mut buf[done..],
                offset + done as u64,
            )? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => done += n,
            }
        }
        Ok(())
    }
}

fn segment_name(number: u64) -> String {
    format!("{number:020}{SEGMENT_SUFFIX}")
}

/// The segment files in `dir`, by number. Other files are ignored.
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, SpoolError> {
    let mut found = Vec::new();
    let entries = fs::read_dir(dir).map_err(io_err("list the directory", dir))?;
    for entry in entries {
        let entry = entry.map_err(io_err("list the directory", dir))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(SEGMENT_SUFFIX)) else {
            continue;
        };
        if stem.len() == 20
            && stem.bytes().all(|b| b.is_ascii_digit())
            && let Ok(number) = stem.parse::<u64>()
        {
            found.push((number, entry.path()));
        }
    }
    found.sort_unstable_by_key(|(n, _)| *n);
    Ok(found)
}

fn open_active(path: &Path) -> Result<File, SpoolError> {
    private_options()
        .read(true)
        .append(true)
        .open(path)
        .map_err(io_err("open the active segment", path))
}

/// Creates segment `number` with its header, synced along with the directory.
fn create_segment(
    dir: &Path,
    number: u64,
    base: u64,
    session_id: &str,
) -> Result<(Segment, File, u64), SpoolError> {
    let path = dir.join(segment_name(number));
    let mut file = private_options()
        .read(true)
        .append(true)
        .create_new(true)
        .open(&path)
        .map_err(io_err("create a segment", &path))?;
    let header = encode_header(base, session_id);
    let written = file
        .write_all(&header)
        .and_then(|()| file.sync_all())
        .map_err(io_err("write a segment header", &path))
        .and_then(|()| sync_dir(dir).map_err(io_err("sync the directory", dir)));
    if let Err(e) = written {
        // Leaving it would block the next attempt (the number is taken); it holds nothing.
        drop(file);
        let _ = fs::remove_file(&path);
        return Err(e);
    }
    Ok((
        Segment::new(number, path, FORMAT_VERSION),
        file,
        header.len() as u64,
    ))
}

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

fn encode_header(base: u64, session_id: &str) -> Vec<u8> {
    let mut h = Vec::with_capacity(SEGMENT_HEADER_FIXED + session_id.len() + 4);
    h.extend_from_slice(SEGMENT_MAGIC);
    h.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    h.extend_from_slice(&base.to_le_bytes());
    let n = u16::try_from(session_id.len()).expect("session ids are checked to be short");
    h.extend_from_slice(&n.to_le_bytes());
    h.extend_from_slice(session_id.as_bytes());
    let crc = crc32fast::hash(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    h
}

enum Header {
    Valid {
        base: u64,
        len: u64,
        version: u32,
    },
    /// Shorter than a header, or damaged, in a file no longer than a header could be.
    Partial,
}

fn read_header(
    file: &mut File,
    path: &Path,
    session_id: &str,
    file_len: u64,
) -> Result<Header, SpoolError> {
    let max = (SEGMENT_HEADER_FIXED + MAX_SESSION_ID + 4) as u64;
    let ours = (SEGMENT_HEADER_FIXED + session_id.len() + 4) as u64;
    let mut h = Vec::new();
    file.take(max)
        .read_to_end(&mut h)
        .map_err(io_err("read a segment header", path))?;
    let corrupt = |detail: &str| SpoolError::Corrupt {
        path: path.to_path_buf(),
        offset: 0,
        detail: detail.to_owned(),
    };
    // The version is checked before anything a later version may have laid out differently.
    if h.len() >= 12 && &h[..8] == SEGMENT_MAGIC {
        let version = u32::from_le_bytes(h[8..12].try_into().expect("4 bytes"));
        if !(1..=FORMAT_VERSION).contains(&version) {
            return Err(SpoolError::UnsupportedVersion {
                path: path.to_path_buf(),
                found: version,
                supported: FORMAT_VERSION,
            });
        }
    }
    let parsed = (|| {
        if h.len() < SEGMENT_HEADER_FIXED || &h[..8] != SEGMENT_MAGIC {
            return None;
        }
        let base = u64::from_le_bytes(h[12..20].try_into().expect("8 bytes"));
        let n = usize::from(u16::from_le_bytes(h[20..22].try_into().expect("2 bytes")));
        let end = SEGMENT_HEADER_FIXED + n;
        if n > MAX_SESSION_ID || h.len() < end + 4 {
            return None;
        }
        let crc = u32::from_le_bytes(h[end..end + 4].try_into().expect("4 bytes"));
        if crc != crc32fast::hash(&h[..end]) {
            return None;
        }
        Some((base, &h[SEGMENT_HEADER_FIXED..end], (end + 4) as u64))
    })();
    let Some((base, sid, len)) = parsed else {
        // Nothing is written after a header until the header is synced: a file no longer
        // than our header with a bad header is an interrupted creation, anything longer damage.
        return if file_len <= ours {
            Ok(Header::Partial)
        } else {
            Err(corrupt("segment header is damaged"))
        };
    };
    if sid != session_id.as_bytes() {
        return Err(SpoolError::SessionMismatch {
            path: path.to_path_buf(),
            found: String::from_utf8_lossy(sid).into_owned(),
            expected: session_id.to_owned(),
        });
    }
    if base == 0 {
        return Err(corrupt("segment base seq is 0"));
    }
    let version = u32::from_le_bytes(h[8..12].try_into().expect("4 bytes"));
    Ok(Header::Valid { base, len, version })
}

/// Appends one record; returns its total length.
fn encode_record(buf: &mut Vec<u8>, kind: u8, seq: u64, payload: &[u8]) -> u32 {
    let start = buf.len();
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    buf.extend_from_slice(RECORD_MAGIC);
    buf.push(kind);
    buf.push(0);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&buf[start + 2..start + 16]);
    crc.update(payload);
    buf.extend_from_slice(&crc.finalize().to_le_bytes());
    buf.extend_from_slice(payload);
    u32::try_from(buf.len() - start).unwrap_or(u32::MAX)
}

/// Appends an entry record; returns its total length (`u32::MAX` when it is too large to
/// store, which the size checks then refuse).
fn encode_entry(buf: &mut Vec<u8>, seq: u64, action: &str, wxid: &str, data: &Value) -> u32 {
    let mut payload = Vec::with_capacity(64);
    payload.extend_from_slice(&(action.len() as u32).to_le_bytes());
    payload.extend_from_slice(action.as_bytes());
    payload.extend_from_slice(&(wxid.len() as u32).to_le_bytes());
    payload.extend_from_slice(wxid.as_bytes());
    serde_json::to_writer(&mut payload, data).expect("a JSON value serialises into memory");
    encode_record(buf, KIND_ENTRY, seq, &payload)
}

fn decode_entry(payload: &[u8]) -> Result<(String, String, Value), String> {
    fn field(rest: &mut &[u8], name: &str) -> Result<String, String> {
        let short = || format!("entry {name} is cut short");
        let n = rest.get(..4).ok_or_else(short)?;
        let n = u32::from_le_bytes(n.try_into().expect("4 bytes")) as usize;
        let bytes = rest.get(4..4 + n).ok_or_else(short)?;
        let s = std::str::from_utf8(bytes)
            .map_err(|_| format!("entry {name} is not UTF-8"))?
            .to_owned();
        *rest = &rest[4 + n..];
        Ok(s)
    }
    let mut rest = payload;
    let action = field(&mut rest, "action")?;
    let wxid = field(&mut rest, "wxid")?;
    let data = serde_json::from_slice(rest).map_err(|e| format!("entry data is not JSON: {e}"))?;
    Ok((action, wxid, data))
}

struct Record<'a> {
    kind: u8,
    flags: u8,
    seq: u64,
    payload: &'a [u8],
    total: usize,
}

/// Parses the record at the start of `buf` (which may extend past it), in a segment of format
/// `version`.
fn parse_record(buf: &[u8], version: u32) -> Result<Record<'_>, &'static str> {
    let h = buf
        .get(..RECORD_HEADER)
        .ok_or("record header is incomplete")?;
    check_record_header(h, version)?;
    let len = u32::from_le_bytes(h[4..8].try_into().expect("4 bytes")) as usize;
    let payload = buf
        .get(RECORD_HEADER..RECORD_HEADER + len)
        .ok_or("record is incomplete")?;
    if record_crc(h, payload) != u32::from_le_bytes(h[16..20].try_into().expect("4 bytes")) {
        return Err("record checksum mismatch");
    }
    Ok(Record {
        kind: h[2],
        flags: h[3],
        seq: u64::from_le_bytes(h[8..16].try_into().expect("8 bytes")),
        payload,
        total: RECORD_HEADER + len,
    })
}

fn check_record_header(h: &[u8], version: u32) -> Result<(), &'static str> {
    if &h[..2] != RECORD_MAGIC {
        return Err("record magic is wrong");
    }
    if !matches!(h[2], KIND_ENTRY | KIND_ACK) {
        return Err("record kind is unknown");
    }
    let known_flags = if version >= 2 { FLAG_OVER_UNSYNCED } else { 0 };
    if h[3] & !known_flags != 0 {
        return Err("record flags are unknown");
    }
    let len = u32::from_le_bytes(h[4..8].try_into().expect("4 bytes"));
    if len > MAX_PAYLOAD || (h[2] == KIND_ACK && len != 0) {
        return Err("record length is impossible");
    }
    Ok(())
}

fn record_crc(header: &[u8], payload: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header[2..16]);
    crc.update(payload);
    crc.finalize()
}

// ---------------------------------------------------------------------------------------------
// Recovery scan
// ---------------------------------------------------------------------------------------------

enum Scanned {
    Entry(u64, Slot),
    Ack(u64),
}

struct BadRecord {
    offset: u64,
    detail: &'static str,
}

struct Scan {
    items: Vec<Scanned>,
    /// The first record that is not valid; nothing after it was read.
    bad: Option<BadRecord>,
}

/// Reads the records of one segment after its header. `last_seq` is the largest entry seq
/// seen so far (across segments); entries must continue it.
fn scan_records(
    file: File,
    path: &Path,
    header_len: u64,
    file_len: u64,
    (base, version): (u64, u32),
    last_seq: &mut u64,
) -> Result<Scan, SpoolError> {
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    reader
        .seek(SeekFrom::Start(header_len))
        .map_err(io_err("read a segment", path))?;
    let mut items = Vec::new();
    let mut prev_in_segment: Option<u64> = None;
    let mut offset = header_len;
    let mut header = [0u8; RECORD_HEADER];
    let mut payload = Vec::new();
    let bad = loop {
        if offset == file_len {
            break None;
        }
        let fail = |detail| Some(BadRecord { offset, detail });
        if file_len - offset < RECORD_HEADER as u64 {
            break fail("record header is incomplete");
        }
        reader
            .read_exact(&mut header)
            .map_err(io_err("read a segment", path))?;
        if let Err(detail) = check_record_header(&header, version) {
            break fail(detail);
        }
        let len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        let total = RECORD_HEADER as u64 + u64::from(len);
        if file_len - offset < total {
            break fail("record is incomplete");
        }
        payload.resize(len as usize, 0);
        reader
            .read_exact(&mut payload)
            .map_err(io_err("read a segment", path))?;
        if record_crc(&header, &payload)
            != u32::from_le_bytes(header[16..20].try_into().expect("4 bytes"))
        {
            break fail("record checksum mismatch");
        }
        let seq = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
        let corrupt = |detail: String| SpoolError::Corrupt {
            path: path.to_path_buf(),
            offset,
            detail,
        };
        if header[2] == KIND_ENTRY {
            if seq < base || seq <= *last_seq {
                return Err(corrupt(format!(
                    "report seq {seq} is out of order (after {}, segment base {base})",
                    *last_seq
                )));
            }
            if let Some(prev) = prev_in_segment
                && seq != prev + 1
            {
                return Err(corrupt(format!("report seq {seq} does not follow {prev}")));
            }
            prev_in_segment = Some(seq);
            *last_seq = seq;
            let slot = Slot {
                offset: u32::try_from(offset)
                    .map_err(|_| corrupt("segment is larger than 4 GiB".to_owned()))?,
                len: u32::try_from(total).expect("records are at most 16 MiB"),
            };
            items.push(Scanned::Entry(seq, slot));
        } else {
            items.push(Scanned::Ack(seq));
        }
        offset += total;
    };
    Ok(Scan { items, bad })
}

/// Tells a torn tail from damage in the middle of the active segment: the offset of the first
/// valid record after `bad` that was written when everything before it was synced (`None`:
/// there is none). Such a record proves the bytes at `bad` had reached the disk, so they were
/// damaged later; without one, every write from `bad` on was still unsynced at the crash, and
/// none of them was let past the SyncKey unless the control plane had it. A version 1 segment
/// carries no flags:
/// any valid record after `bad` counts.
fn confirmed_after(
    path: &Path,
    bad: u64,
    file_len: u64,
    version: u32,
) -> Result<Option<u64>, SpoolError> {
    let mut file = File::open(path).map_err(io_err("open a segment", path))?;
    let mut rest = Vec::new();
    file.seek(SeekFrom::Start(bad + 1))
        .and_then(|_| file.take(file_len - bad - 1).read_to_end(&mut rest))
        .map_err(io_err("read a segment", path))?;
    let mut i = 0;
    while i + RECORD_MAGIC.len() <= rest.len() {
        if rest[i..].starts_with(RECORD_MAGIC)
            && let Ok(record) = parse_record(&rest[i..], version)
        {
            if record.flags & FLAG_OVER_UNSYNCED == 0 {
                return Ok(Some(bad + 1 + i as u64));
            }
            i += record.total;
        } else {
            i += 1;
        }
    }
    Ok(None)
}

/// Sets [`FLAG_OVER_UNSYNCED`] on every record in `buf` (whole records, as encoded) and
/// renews their checksums.
fn mark_over_unsynced(buf: &mut [u8]) {
    let mut at = 0;
    while at + RECORD_HEADER <= buf.len() {
        let len = u32::from_le_bytes(buf[at + 4..at + 8].try_into().expect("4 bytes")) as usize;
        let end = at + RECORD_HEADER + len;
        buf[at + 3] |= FLAG_OVER_UNSYNCED;
        let crc = record_crc(&buf[at..at + RECORD_HEADER], &buf[at + RECORD_HEADER..end]);
        buf[at + 16..at + 20].copy_from_slice(&crc.to_le_bytes());
        at = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const BIG: SpoolLimits = SpoolLimits {
        max_bytes: 1 << 30,
        max_events: 10_000_000,
    };

    fn open(dir: &Path) -> Spool {
        Spool::open(dir, "s1", BIG).unwrap()
    }

    fn data(i: u64) -> Value {
        json!({"msg": [{"msg_id": format!("m{i}"), "text": "hello"}]})
    }

    fn fill(spool: &mut Spool, n: u64) -> Vec<Entry> {
        (0..n)
            .map(|i| spool.append("report_new_msg", "1001", &data(i)).unwrap())
            .collect()
    }

    fn only_segment(dir: &Path) -> PathBuf {
        let segs = list_segments(dir).unwrap();
        assert_eq!(segs.len(), 1, "{segs:?}");
        segs[0].1.clone()
    }

    /// The event ids of every pending entry, from the index (without acking anything).
    fn pending_ids(spool: &Spool) -> Vec<String> {
        let mut ids = Vec::new();
        for s in &spool.segments {
            for i in 0..s.slots.len() as u64 {
                ids.push(spool.event_id(s.first_seq + i));
            }
        }
        ids
    }

    #[test]
    fn append_front_ack_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = open(dir.path());
        assert!(spool.is_empty());
        assert_eq!(spool.front().unwrap(), None);
        let a = spool.append("report_new_msg", "1001", &data(1)).unwrap();
        let b = spool.append("report_contact", "1001", &json!({})).unwrap();
        assert_eq!((a.seq, a.event_id.as_str()), (1, "s1:1"));
        assert_eq!((b.seq, b.event_id.as_str()), (2, "s1:2"));
        assert_eq!(spool.len(), 2);
        assert!(spool.bytes() > 0);
        assert_eq!(spool.front().unwrap().unwrap(), a);

        let err = spool.ack("s1:2").unwrap_err();
        assert!(
            matches!(&err, SpoolError::NotFront { front: Some(f), .. } if f == "s1:1"),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "cannot acknowledge s1:2: the oldest pending report is s1:1"
        );
        assert_eq!(spool.len(), 2);

        spool.ack("s1:1").unwrap();
        assert_eq!(spool.front().unwrap().unwrap(), b);
        spool.ack("s1:2").unwrap();
        assert!(spool.is_empty());
        assert_eq!(spool.bytes(), 0);
        assert_eq!(spool.front().unwrap(), None);
        assert!(matches!(
            spool.ack("s1:3"),
            Err(SpoolError::NotFront { front: None, .. })
        ));
        let stats = spool.stats();
        assert_eq!(
            (stats.pending, stats.appended_total, stats.acked_total),
            (0, 2, 2)
        );
    }

    #[test]
    fn deferred_acks_are_written_by_sync_or_the_next_append() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut spool = open(dir.path());
            fill(&mut spool, 3);
            spool.ack_deferred("s1:1").unwrap();
            spool.ack_deferred("s1:2").unwrap();
            assert!(matches!(
                spool.ack_deferred("s1:1"),
                Err(SpoolError::NotFront { .. })
            ));
            assert_eq!((spool.len(), spool.unsynced_acks()), (1, 2));
            assert_eq!(spool.front().unwrap().unwrap().event_id, "s1:3");
        }
        // Never written: both come back (sent again, deduped by event id).
        {
            let mut spool = open(dir.path());
            assert_eq!(pending_ids(&spool), ["s1:1", "s1:2", "s1:3"]);
            spool.ack_deferred("s1:1").unwrap();
            spool.sync_acks().unwrap();
            assert_eq!(spool.unsynced_acks(), 0);
            spool.ack_deferred("s1:2").unwrap();
            // The append carries the deferred ack in its own write.
            spool.append("report_new_msg", "1001", &data(4)).unwrap();
            assert_eq!(spool.unsynced_acks(), 0);
        }
        let spool = open(dir.path());
        assert_eq!(pending_ids(&spool), ["s1:3", "s1:4"]);
        assert_eq!(spool.recovery().torn_bytes, 0);
    }

    /// (kind, seq, flags) of every record in the active segment, read from the file.
    fn records_on_disk(spool: &Spool) -> Vec<(u8, u64, u8)> {
        let bytes = std::fs::read(&spool.segments.back().unwrap().path).unwrap();
        let mut at = bytes
            .windows(2)
            .position(|w| w == RECORD_MAGIC)
            .expect("a record");
        let mut found = Vec::new();
        while at < bytes.len() {
            let r = parse_record(&bytes[at..], FORMAT_VERSION).unwrap();
            found.push((r.kind, r.seq, r.flags));
            at += r.total;
        }
        found
    }

    #[test]
    fn unsynced_appends_are_readable_at_once_and_later_writes_do_not_wait_for_their_sync() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = open(dir.path());
        assert!(spool.unsynced_write().is_none());
        let (a, first) = spool
            .append_unsynced("report_new_msg", "1001", &data(1))
            .unwrap();
        // Readable and sendable before it is synced.
        assert_eq!(spool.front().unwrap().unwrap().event_id, a.event_id);
        assert_eq!(
            spool.unsynced_write().map(|u| u.write),
            Some(first.write),
            "the append waits for its sync"
        );
        // The next write goes to the file without that sync; its records say so.
        let items = vec![
            ("report_new_msg".to_owned(), "1001".to_owned(), data(2)),
            ("report_new_msg".to_owned(), "1001".to_owned(), data(3)),
        ];
        let (last, second) = spool
            .append_batch_unsynced(&items)
            .unwrap()
            .expect("a batch of two was written");
        assert_eq!(last, 3);
        assert!(spool.synced.load(Ordering::Acquire) < first.write);
        assert_eq!(
            records_on_disk(&spool),
            [
                (KIND_ENTRY, 1, 0),
                (KIND_ENTRY, 2, FLAG_OVER_UNSYNCED),
                (KIND_ENTRY, 3, FLAG_OVER_UNSYNCED)
            ]
        );
        // Either sync may finish first; the later one covers both.
        second.sync().unwrap();
        assert!(spool.unsynced_write().is_none());
        first.sync().unwrap();
        assert!(spool.unsynced_write().is_none());
        // Nothing is pending a sync now, so the next write is not flagged.
        spool.append("report_new_msg", "1001", &data(4)).unwrap();
        assert_eq!(records_on_disk(&spool)[3], (KIND_ENTRY, 4, 0));

        // Acks too: written under the lock, synced outside it.
        spool.ack_deferred("s1:1").unwrap();
        spool.ack_deferred("s1:2").unwrap();
        let shared = std::sync::Mutex::new(spool);
        sync_acks_unlocked(&shared).unwrap();
        let spool = shared.into_inner().unwrap();
        assert_eq!(spool.unsynced_acks(), 0);
        assert!(spool.unsynced_write().is_none());
        drop(spool);
        let spool = open(dir.path());
        assert_eq!(pending_ids(&spool), ["s1:3", "s1:4"]);
        assert_eq!(spool.recovery().torn_bytes, 0);
    }

    /// Flips a byte in the payload of the record of entry `seq` of the active segment, as a
    /// write that never reached the disk would leave it.
    fn tear(spool: &Spool, seq: u64) -> u64 {
        let segment = spool.segments.back().unwrap();
        let slot = segment.slots[(seq - segment.first_seq) as usize];
        flip(&segment.path, u64::from(slot.offset) + RECORD_HEADER as u64);
        u64::from(slot.offset)
    }

    #[test]
    fn a_crash_that_tears_writes_no_sync_had_covered_cuts_them_off() {
        let dir = tempfile::tempdir().unwrap();
        let (offset, len) = {
            let mut spool = open(dir.path());
            spool.append("report_new_msg", "1001", &data(1)).unwrap();
            // Two writes in flight at the crash: the first never reached the disk, the
            // second (written over it, so flagged) did.
            let (_, first) = spool
                .append_unsynced("report_new_msg", "1001", &data(2))
                .unwrap();
            let (_, second) = spool
                .append_unsynced("report_new_msg", "1001", &data(3))
                .unwrap();
            drop((first, second));
            let offset = tear(&spool, 2);
            (
                offset,
                std::fs::metadata(&spool.segments.back().unwrap().path)
                    .unwrap()
                    .len(),
            )
        };
        let spool = open(dir.path());
        assert_eq!(pending_ids(&spool), ["s1:1"]);
        assert_eq!(spool.recovery().torn_bytes, len - offset);
    }

    #[test]
    fn a_damaged_record_that_a_synced_write_followed_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let offset = {
            let mut spool = open(dir.path());
            spool.append("report_new_msg", "1001", &data(1)).unwrap();
            let (_, first) = spool
                .append_unsynced("report_new_msg", "1001", &data(2))
                .unwrap();
            // Flagged, but the unflagged one after it proves the bytes before it were on
            // disk: 2 was damaged afterwards.
            spool.append("report_new_msg", "1001", &data(3)).unwrap();
            drop(first);
            spool.append("report_new_msg", "1001", &data(4)).unwrap();
            assert_eq!(
                records_on_disk(&spool)
                    .iter()
                    .map(|r| r.2)
                    .collect::<Vec<_>>(),
                [0, 0, FLAG_OVER_UNSYNCED, 0]
            );
            tear(&spool, 2)
        };
        let e = Spool::open(dir.path(), "s1", BIG).unwrap_err();
        assert!(
            matches!(&e, SpoolError::Corrupt { offset: o, detail, .. }
                if *o == offset && detail.contains("a record written after it was synced follows")),
            "{e}"
        );
    }

    /// Rewrites the version in the header of segment `path` (and the header's checksum).
    fn set_version(path: &Path, session_id: &str, version: u32) {
        let mut bytes = std::fs::read(path).unwrap();
        bytes[8..12].copy_from_slice(&version.to_le_bytes());
        let end = SEGMENT_HEADER_FIXED + session_id.len();
        let crc = crc32fast::hash(&bytes[..end]);
        bytes[end..end + 4].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn a_version_1_spool_is_read_and_left_for_a_version_2_segment_at_the_first_append() {
        let dir = tempfile::tempdir().unwrap();
        let old = {
            let mut spool = open(dir.path());
            spool.append("report_new_msg", "1001", &data(1)).unwrap();
            spool.append("report_new_msg", "1001", &data(2)).unwrap();
            spool.segments.back().unwrap().path.clone()
        };
        set_version(&old, "s1", 1);
        let mut spool = open(dir.path());
        assert_eq!(pending_ids(&spool), ["s1:1", "s1:2"]);
        assert_eq!(spool.active_version(), 1);
        let (_, u) = spool
            .append_unsynced("report_new_msg", "1001", &data(3))
            .unwrap();
        drop(u);
        assert_eq!(spool.active_version(), FORMAT_VERSION);
        assert_ne!(spool.segments.back().unwrap().path, old);
        // Flags are version 2's: in a version 1 segment one is damage, not a torn write.
        let mut bytes = std::fs::read(&old).unwrap();
        let at = bytes.windows(2).position(|w| w == RECORD_MAGIC).unwrap();
        mark_over_unsynced(&mut bytes[at..]);
        assert_eq!(
            check_record_header(&bytes[at..at + RECORD_HEADER], 1),
            Err("record flags are unknown")
        );
        assert!(check_record_header(&bytes[at..at + RECORD_HEADER], 2).is_ok());
        drop(spool);
        let spool = open(dir.path());
        assert_eq!(pending_ids(&spool), ["s1:1", "s1:2", "s1:3"]);
    }

    #[test]
    fn batch_is_one_group_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = open(dir.path());
        spool
            .append("report_contact", "1001", &json!({"a": 1}))
            .unwrap();
        let items: Vec<_> = (0..5)
            .map(|i| ("report_new_msg".to_owned(), "1001".to_owned(), data(i)))
            .collect();
        let entries = spool.append_batch(&items).unwrap();
        assert_eq!(
            entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![2, 3, 4, 5, 6]
        );
        assert_eq!(entries[4].data, data(4));
        assert!(spool.append_batch(&[]).unwrap().is_empty());
        assert_eq!(spool.len(), 6);
        spool.ack("s1:1").unwrap();
        for e in &entries {
            assert_eq!(&spool.front().unwrap().unwrap(), e);
            spool.ack(&e.event_id).unwrap();
        }
        assert!(spool.is_empty());
    }

    #[test]
    fn reopen_keeps_unacked_entries_ids_and_continues_seq() {
        let dir = tempfile::tempdir().unwrap();
        let entries = {
            let mut spool = open(dir.path());
            let entries = fill(&mut spool, 5);
            spool.ack("s1:1").unwrap();
            spool.ack("s1:2").unwrap();
            entries
        };
        let mut spool = open(dir.path());
        assert_eq!(spool.len(), 3);
        assert_eq!(spool.recovery().pending, 3);
        assert_eq!(spool.recovery().next_seq, 6);
        assert_eq!(spool.recovery().torn_bytes, 0);
        assert_eq!(pending_ids(&spool), vec!["s1:3", "s1:4", "s1:5"]);
        assert_eq!(spool.front().unwrap().unwrap(), entries[2]);
        let next = spool.append("report_new_msg", "1001", &data(9)).unwrap();
        assert_eq!(next.event_id, "s1:6");
        drop(spool);

        // Everything acknowledged: the seq still continues after a restart.
        let mut spool = open(dir.path());
        for id in ["s1:3", "s1:4", "s1:5", "s1:6"] {
            spool.ack(id).unwrap();
        }
        drop(spool);
        let mut spool = open(dir.path());
        assert!(spool.is_empty());
        assert_eq!(
            spool.append("a", "w", &json!(null)).unwrap().event_id,
            "s1:7"
        );
    }

    #[test]
    fn torn_tail_is_cut_and_complete_records_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut spool = open(dir.path());
            fill(&mut spool, 5);
        }
        let seg = only_segment(dir.path());
        let len = fs::metadata(&seg).unwrap().len();
        // Cut the last record in half and add garbage, as a crash mid-write might leave it.
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(len - 10).unwrap();
        drop(f);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[0xAB; 37]).unwrap();
        drop(f);

        let mut spool = open(dir.path());
        assert_eq!(spool.len(), 4);
        let torn = spool.recovery().torn_bytes;
        assert!(torn > 37, "{torn}");
        assert_eq!(pending_ids(&spool), vec!["s1:1", "s1:2", "s1:3", "s1:4"]);
        // The torn record was never confirmed, so its seq is given again.
        let e = spool.append("report_new_msg", "1001", &data(5)).unwrap();
        assert_eq!(e.seq, 5);
        drop(spool);
        // The tail was cut, so the record written after it is readable.
        let mut spool = open(dir.path());
        assert_eq!(spool.len(), 5);
        assert_eq!(spool.recovery().torn_bytes, 0);
        for i in 1..=5 {
            let front = spool.front().unwrap().unwrap();
            assert_eq!(front.seq, i);
            spool.ack(&front.event_id).unwrap();
        }
    }

    #[test]
    fn garbage_after_complete_records_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut spool = open(dir.path());
            fill(&mut spool, 3);
        }
        let seg = only_segment(dir.path());
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(b"wr\x01\0garbage").unwrap();
        drop(f);
        let spool = open(dir.path());
        assert_eq!(spool.len(), 3);
        assert_eq!(spool.recovery().torn_bytes, 11);
    }

    /// Flips one byte at `offset` in `path`.
    fn flip(path: &Path, offset: u64) {
        let mut bytes = fs::read(path).unwrap();
        bytes[offset as usize] ^= 0x40;
        fs::write(path, bytes).unwrap();
    }

    /// A spool in `dir` holding reports 1..=n, open, with the record of report `damaged` (1
    /// based) then damaged on disk (its checksum no longer matches).
    fn filled_then_damaged(dir: &Path, n: u64, damaged: usize) -> Spool {
        let mut spool = open(dir);
        fill(&mut spool, n);
        let slot = spool.segments[0].slots[damaged - 1];
        flip(
            &only_segment(dir),
            u64::from(slot.offset) + RECORD_HEADER as u64 + 2,
        );
        spool
    }

    #[test]
    fn checksum_mismatch_before_valid_records_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let slot = {
            let mut spool = open(dir.path());
            fill(&mut spool, 5);
            spool.segments[0].slots[1]
        };
        let seg = only_segment(dir.path());
        // A byte inside the payload of the second record.
        flip(&seg, u64::from(slot.offset) + RECORD_HEADER as u64 + 3);
        let err = Spool::open(dir.path(), "s1", BIG).unwrap_err();
        match &err {
            SpoolError::Corrupt { offset, detail, .. } => {
                assert_eq!(*offset, u64::from(slot.offset));
                assert!(detail.contains("checksum mismatch"), "{detail}");
                assert!(
                    detail.contains("a record written after it was synced follows"),
                    "{detail}"
                );
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        assert!(err.to_string().contains("corrupt at byte"), "{err}");
        // Refusing must not have changed the file.
        assert!(Spool::open(dir.path(), "s1", BIG).is_err());
    }

    #[test]
    fn checksum_mismatch_in_the_last_record_is_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let slot = {
            let mut spool = open(dir.path());
            fill(&mut spool, 3);
            spool.segments[0].slots[2]
        };
        let seg = only_segment(dir.path());
        flip(&seg, u64::from(slot.offset) + RECORD_HEADER as u64 + 1);
        let spool = open(dir.path());
        assert_eq!(spool.len(), 2);
        assert_eq!(spool.recovery().torn_bytes, u64::from(slot.len));
    }

    #[test]
    fn front_detects_damage_after_open() {
        let dir = tempfile::tempdir().unwrap();
        let spool = filled_then_damaged(dir.path(), 2, 1);
        let err = spool.front().unwrap_err();
        assert!(
            matches!(&err, SpoolError::Corrupt { detail, .. } if detail.contains("checksum")),
            "{err:?}"
        );
    }

    #[test]
    fn peek_reads_from_the_front_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = open(dir.path());
        assert!(spool.peek(4).unwrap().is_empty());
        let appended = fill(&mut spool, 5);
        assert_eq!(spool.peek(3).unwrap(), appended[..3].to_vec());
        assert_eq!(spool.peek(99).unwrap(), appended);
        assert!(spool.peek(0).unwrap().is_empty());
        assert_eq!(spool.peek_after(2, 2).unwrap(), appended[2..4].to_vec());
        assert_eq!(spool.peek_after(4, 9).unwrap(), appended[4..].to_vec());
        assert!(spool.peek_after(5, 9).unwrap().is_empty());
        spool.ack_deferred(&appended[0].event_id).unwrap();
        spool.ack_deferred(&appended[1].event_id).unwrap();
        // Acked reports are gone from the view; an `after` behind the front reads the front.
        assert_eq!(spool.peek(2).unwrap(), appended[2..4].to_vec());
        assert_eq!(spool.peek_after(1, 1).unwrap(), appended[2..3].to_vec());
        assert_eq!(spool.front().unwrap().as_ref(), Some(&appended[2]));
    }

    #[test]
    fn peek_crosses_segments() {
        let dir = scratch_dir();
        let items: Vec<_> = (0..1000)
            .map(|i| ("report_new_msg".to_owned(), "1001".to_owned(), data(i)))
            .collect();
        let mut spool = open(dir.path());
        for _ in 0..15 {
            spool.append_batch(&items).unwrap();
        }
        assert!(spool.segments.len() >= 2, "{}", spool.segments.len());
        let boundary = spool.segments[0].slots.len() as u64;
        let around = spool.peek_after(boundary - 3, 6).unwrap();
        let seqs: Vec<u64> = around.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (boundary - 2..=boundary + 3).collect::<Vec<_>>());
        assert_eq!(around[3].data, data((boundary) % 1000));
        assert_eq!(spool.peek(15_000).unwrap().len(), 15_000);
    }

    #[test]
    fn peek_detects_damage_like_front() {
        let dir = tempfile::tempdir().unwrap();
        let spool = filled_then_damaged(dir.path(), 4, 3);
        assert_eq!(
            spool.peek(2).unwrap().len(),
            2,
            "the damage is behind these"
        );
        for err in [
            spool.peek(3).unwrap_err(),
            spool.peek_after(2, 1).unwrap_err(),
        ] {
            assert!(
                matches!(&err, SpoolError::Corrupt { detail, .. } if detail.contains("checksum")),
                "{err:?}"
            );
        }
    }

    #[test]
    fn a_batch_is_bounded_by_count_and_bytes_but_holds_the_front() {
        let dir = scratch_dir();
        let items: Vec<_> = (0..1000)
            .map(|i| ("report_new_msg".to_owned(), "1001".to_owned(), data(i)))
            .collect();
        let mut spool = open(dir.path());
        assert!(spool.peek_batch(8, 1 << 20).unwrap().is_empty());
        for _ in 0..15 {
            spool.append_batch(&items).unwrap();
        }
        assert!(spool.segments.len() >= 2, "{}", spool.segments.len());
        let record = u64::from(spool.segments[0].slots[0].len);
        let seqs = |batch: Vec<Entry>| batch.iter().map(|e| e.seq).collect::<Vec<_>>();
        assert_eq!(
            seqs(spool.peek_batch(5, 1 << 20).unwrap()),
            vec![1, 2, 3, 4, 5]
        );
        // Three records fit in three records' bytes (they are all the same size), not four.
        assert_eq!(
            seqs(spool.peek_batch(64, 3 * record).unwrap()),
            vec![1, 2, 3]
        );
        assert_eq!(
            seqs(spool.peek_batch(64, 3 * record + 1).unwrap()),
            vec![1, 2, 3]
        );
        // The front goes out even when it alone is over the byte limit.
        assert_eq!(seqs(spool.peek_batch(64, 1).unwrap()), vec![1]);
        // Across a segment boundary, in order.
        let boundary = spool.segments[0].slots.len() as u64;
        let front: Vec<String> = spool
            .peek(boundary as usize - 2)
            .unwrap()
            .into_iter()
            .map(|e| e.event_id)
            .collect();
        for id in &front {
            spool.ack_deferred(id).unwrap();
        }
        assert_eq!(
            seqs(spool.peek_batch(5, 1 << 20).unwrap()),
            (boundary - 1..=boundary + 3).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_batch_stops_before_damage_behind_the_front() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = filled_then_damaged(dir.path(), 4, 3);
        let batch = spool.peek_batch(8, 1 << 20).unwrap();
        assert_eq!(batch.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
        for e in &batch {
            spool.ack_deferred(&e.event_id).unwrap();
        }
        let err = spool.peek_batch(8, 1 << 20).unwrap_err();
        assert!(
            matches!(&err, SpoolError::Corrupt { detail, .. } if detail.contains("checksum")),
            "{err:?}"
        );
    }

    #[test]
    fn limits_refuse_with_a_clear_error_and_keep_everything() {
        let dir = tempfile::tempdir().unwrap();
        let limits = SpoolLimits {
            max_bytes: 1 << 20,
            max_events: 3,
        };
        let mut spool = Spool::open(dir.path(), "s1", limits).unwrap();
        fill(&mut spool, 3);
        let err = spool
            .append("report_new_msg", "1001", &data(4))
            .unwrap_err();
        assert!(
            matches!(
                err,
                SpoolError::Full {
                    what: "events",
                    limit: 3
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "spool full: the [spool] max_events limit of 3 events is reached; the report was not appended"
        );
        let batch = vec![("a".to_owned(), "w".to_owned(), json!(1))];
        assert!(matches!(
            spool.append_batch(&batch),
            Err(SpoolError::Full { .. })
        ));
        assert_eq!(spool.stats().full_rejections, 2);
        assert_eq!(spool.len(), 3);
        spool.ack("s1:1").unwrap();
        assert_eq!(
            spool
                .append("report_new_msg", "1001", &data(4))
                .unwrap()
                .event_id,
            "s1:4"
        );
        drop(spool);
        let spool = Spool::open(dir.path(), "s1", limits).unwrap();
        assert_eq!(spool.len(), 3);

        // Bytes: a batch that does not fit is refused whole.
        let dir = tempfile::tempdir().unwrap();
        let limits = SpoolLimits {
            max_bytes: 1000,
            max_events: 100,
        };
        let mut spool = Spool::open(dir.path(), "s1", limits).unwrap();
        let items: Vec<_> = (0..5)
            .map(|_| ("a".to_owned(), "w".to_owned(), json!("x".repeat(150))))
            .collect();
        spool.append_batch(&items).unwrap();
        let before = spool.bytes();
        assert!(before <= 1000);
        let err = spool.append_batch(&items).unwrap_err();
        assert!(
            matches!(
                err,
                SpoolError::Full {
                    what: "bytes",
                    limit: 1000
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("max_bytes"), "{err}");
        assert_eq!((spool.len(), spool.bytes()), (5, before));
        let err = spool
            .append("a", "w", &json!("y".repeat(2000)))
            .unwrap_err();
        assert!(
            matches!(err, SpoolError::TooLarge { limit: 1000, .. }),
            "{err:?}"
        );
        drop(spool);
        assert_eq!(Spool::open(dir.path(), "s1", limits).unwrap().len(), 5);
    }

    /// A directory on tmpfs when there is one: this test is about disk use, not sync latency,
    /// and 100 000 acks each with an fdatasync would take minutes on a real disk.
    fn scratch_dir() -> tempfile::TempDir {
        let shm = Path::new("/dev/shm");
        if shm.is_dir()
            && let Ok(dir) = tempfile::tempdir_in(shm)
        {
            return dir;
        }
        tempfile::tempdir().unwrap()
    }

    fn dir_size(dir: &Path) -> u64 {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum()
    }

    #[test]
    fn rotation_and_compaction_keep_disk_bounded() {
        let dir = scratch_dir();
        let mut spool = open(dir.path());
        let mut max_size = 0;
        let mut max_segments = 0;
        let items: Vec<_> = (0..100)
            .map(|i| ("report_new_msg".to_owned(), "1001".to_owned(), data(i)))
            .collect();
        for round in 0..1000u64 {
            let entries = spool.append_batch(&items).unwrap();
            assert_eq!(entries[0].seq, round * 100 + 1);
            for e in &entries {
                spool.ack(&e.event_id).unwrap();
            }
            if round % 50 == 0 {
                max_size = max_size.max(dir_size(dir.path()));
                max_segments = max_segments.max(list_segments(dir.path()).unwrap().len());
            }
        }
        assert!(spool.is_empty());
        assert_eq!(spool.stats().acked_total, 100_000);
        // 100 000 entries of ~90 bytes plus their acks is ≈ 11 MB; the directory stays near
        // two segments.
        assert!(max_size <= 3 * SEGMENT_TARGET, "{max_size}");
        assert!(max_segments <= 2, "{max_segments}");
        assert!(dir_size(dir.path()) <= 3 * SEGMENT_TARGET);
        assert_eq!(spool.disk_bytes(), dir_size(dir.path()));
        drop(spool);
        let mut spool = open(dir.path());
        assert!(spool.is_empty());
        assert_eq!(spool.append("a", "w", &json!(1)).unwrap().seq, 100_001);
    }

    #[test]
    fn pending_entries_span_segments_across_restarts() {
        let dir = scratch_dir();
        let items: Vec<_> = (0..1000)
            .map(|i| ("report_new_msg".to_owned(), "1001".to_owned(), data(i)))
            .collect();
        {
            let mut spool = open(dir.path());
            for _ in 0..30 {
                spool.append_batch(&items).unwrap();
            }
            assert!(spool.segments.len() >= 3, "{}", spool.segments.len());
            // Ack across the first segment boundary.
            let first_segment = spool.segments[0].slots.len() as u64;
            for seq in 1..=first_segment + 10 {
                spool.ack(&format!("s1:{seq}")).unwrap();
            }
            assert_eq!(spool.len(), 30_000 - first_segment - 10);
        }
        let mut spool = open(dir.path());
        let pending = spool.len();
        let mut expected = 30_000 - pending + 1;
        while let Some(front) = spool.front().unwrap() {
            assert_eq!(front.seq, expected);
            assert_eq!(front.data, data((expected - 1) % 1000));
            spool.ack(&front.event_id).unwrap();
            expected += 1;
        }
        assert_eq!(expected, 30_001);
        assert!(list_segments(dir.path()).unwrap().len() <= 2);
    }

    #[test]
    fn unknown_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut spool = open(dir.path());
            fill(&mut spool, 2);
        }
        let seg = only_segment(dir.path());
        // Refused before its checksum is looked at, and so is version 0.
        for bad in [0u32, 7] {
            let mut bytes = fs::read(&seg).unwrap();
            bytes[8..12].copy_from_slice(&bad.to_le_bytes());
            fs::write(&seg, bytes).unwrap();
            let err = Spool::open(dir.path(), "s1", BIG).unwrap_err();
            assert!(
                matches!(err, SpoolError::UnsupportedVersion { found, .. } if found == bad),
                "{err:?}"
            );
        }
        let err = Spool::open(dir.path(), "s1", BIG).unwrap_err();
        assert!(
            matches!(
                err,
                SpoolError::UnsupportedVersion {
                    found: 7,
                    supported: 2,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .ends_with("format version 7 is not supported (this build reads versions 1 to 2)"),
            "{err}"
        );
    }

    #[test]
    fn another_session_and_a_second_opener_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(dir.path());
        assert!(matches!(
            Spool::open(dir.path(), "s1", BIG),
            Err(SpoolError::Locked { .. })
        ));
        drop(spool);
        let err = Spool::open(dir.path(), "s2", BIG).unwrap_err();
        assert!(
            matches!(&err, SpoolError::SessionMismatch { found, .. } if found == "s1"),
            "{err:?}"
        );
        for bad in ["", "a b", "x\ny", "é"] {
            assert!(
                matches!(
                    Spool::open(dir.path(), bad, BIG),
                    Err(SpoolError::InvalidSession { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn interrupted_rotation_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut spool = open(dir.path());
            fill(&mut spool, 3);
        }
        // A newer segment that got only part of its header before a crash.
        let partial = dir.path().join(segment_name(2));
        fs::write(&partial, &encode_header(4, "s1")[..15]).unwrap();
        let mut spool = open(dir.path());
        assert!(spool.recovery().removed_partial_segment);
        assert!(!partial.exists());
        assert_eq!(spool.len(), 3);
        assert_eq!(spool.append("a", "w", &json!(1)).unwrap().seq, 4);
    }

    #[test]
    fn a_damaged_header_before_records_is_corruption_not_a_partial_segment() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut spool = open(dir.path());
            fill(&mut spool, 2);
        }
        let seg = only_segment(dir.path());
        flip(&seg, 14); // inside the base seq, under the header checksum
        let err = Spool::open(dir.path(), "s1", BIG).unwrap_err();
        assert!(
            matches!(&err, SpoolError::Corrupt { offset: 0, detail, .. } if detail.contains("header")),
            "{err:?}"
        );
        assert!(seg.exists());
    }

    #[test]
    fn a_missing_segment_with_pending_reports_is_corruption() {
        let dir = scratch_dir();
        let items: Vec<_> = (0..1000)
            .map(|i| ("report_new_msg".to_owned(), "1001".to_owned(), data(i)))
            .collect();
        {
            let mut spool = open(dir.path());
            for _ in 0..30 {
                spool.append_batch(&items).unwrap();
            }
            assert!(spool.segments.len() >= 3);
        }
        let segs = list_segments(dir.path()).unwrap();
        fs::remove_file(&segs[1].1).unwrap();
        let err = Spool::open(dir.path(), "s1", BIG).unwrap_err();
        assert!(
            matches!(&err, SpoolError::Corrupt { detail, .. } if detail.contains("missing")),
            "{err:?}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn directory_and_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("sessions").join("s1").join("spool");
        let mut spool = open(&dir);
        fill(&mut spool, 1);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        for entry in fs::read_dir(&dir).unwrap() {
            assert_eq!(mode(&entry.unwrap().path()), 0o600);
        }
    }
}
