//! The local durable fallback (docs/contract.md §6.3): when the broker cannot confirm a request
//! in time, its messages are appended to an on-disk log and fsync'd before the provider gets its
//! 200. This module is storage only: it knows nothing of the broker. The drainer that publishes
//! spooled records (`delivery::drainer`) reads them through [`Spool::next_batch`] and
//! [`Spool::confirm`].
//!
//! - [`record`]: the record format (magic, length, CRC, versioned payload) and the scan that
//!   sorts a segment into records, damaged regions and a torn tail;
//! - [`files`]: segment files, the cursor and format files, reading records back;
//! - [`writer`]: the group-commit writer thread;
//! - [`reader`]: batches for the drainer, in order, and retiring what was confirmed;
//! - [`mod@inspect`]: reading a directory read-only, next to a running bridge (`webhook-bridge spool`).
//!
//! **Invariants:**
//! - `append` returns `Ok` only after the records are written and `fdatasync`'d.
//! - The cursor never moves past a record the broker has not confirmed; a segment is retired
//!   only when every record in it was confirmed and it is no longer written to. A stale cursor
//!   (lost on a crash) only means some records are published twice, with the same `message_id`;
//!   a cursor that names no record boundary is not trusted (replay, never skip).
//! - Damage loses the damaged records only: reading resumes at the next whole record, and a
//!   segment that had damage is renamed `<id>.seg.damaged` when retired, never deleted.
//! - Segment ids only grow, past every id on disk and the one the cursor file names.
//! - One writer thread owns the active segment; the reader only reads, and retires segments the
//!   writer has left.
//! - A spool directory carries its format number ([`FORMAT`], in the `format` file); a newer
//!   one than this release reads is refused before anything in the directory is touched.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};

use tokio::sync::{Notify, oneshot};
use tracing::{error, info, warn};

use crate::config::SpoolConfig;
use crate::message::Message;
use crate::metrics::Metrics;

mod files;
mod inspect;
mod reader;
pub mod record;
mod writer;

pub use self::files::Cursor;
use self::files::{
    Entry, classify, create_segment, damaged_path, read_cursor, read_segment, segment_path,
    sync_dir, write_durably,
};
pub use self::inspect::{Inspection, PendingRecord, SegmentReport, inspect};
pub use self::reader::Batch;
use self::record::{Damage, Scan, encode_record, fits_in_record};

/// The spool format this release writes: record format 2 in new segments. It reads every
/// format up to this one (format 1: records without a magic, spools without a `format` file).
pub const FORMAT: u32 = 2;

/// A directory named like segment 0, which releases before format 2 (that know no `format`
/// file) cannot read as a segment: they refuse to start on the spool instead of taking its
/// format-2 segments for corrupt ones and deleting them.
const OLD_RELEASE_GUARD: &str = "00000000000000000000.seg";

const OLD_RELEASE_GUARD_README: &str = "\
This spool directory holds records in spool format 2 or newer (see the file `format`).
webhook-bridge releases that read only format 1 (they write no `format` file) would take its
segments for corrupt ones: this directory makes them refuse to start instead
(\"Is a directory\"). Drain the spool with a release that reads its format, or see
docs/deploy.md, \"Upgrades and rollbacks\".
";

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool is full ({max_bytes} bytes)")]
    Full { max_bytes: u64 },
    #[error("spool writer is busy ({queued} bytes queued, at most {max_bytes})")]
    Busy { queued: u64, max_bytes: u64 },
    #[error("spool I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("spool writer has stopped")]
    Stopped,
    #[error("spool directory is in use by another process")]
    Locked,
    #[error("an event of {bytes} bytes does not fit in a spool record")]
    TooLarge { bytes: usize },
    #[error(
        "the spool is in format {found}, newer than this release reads (formats up to \
         {supported}); nothing in it was changed. Run a release that reads format {found} until \
         the spool is drained (docs/deploy.md, \"Upgrades and rollbacks\")"
    )]
    NewerFormat { found: u32, supported: u32 },
    #[error(
        "the spool's `format` file does not hold a format number ({content:?}); nothing in the spool was changed"
    )]
    BadFormatFile { content: String },
}

/// One request's records on their way to the writer.
pub(super) struct Append {
    bytes: Vec<u8>,
    events: u64,
    /// Timestamp of its first message.
    first_timestamp: u64,
    reply: oneshot::Sender<Result<(), SpoolError>>,
}

#[derive(Debug, Clone)]
pub(super) struct Segment {
    /// End of the last whole record or damaged region (for the active segment: of the last
    /// fsync'd record). Reads stop here.
    len: u64,
    /// Record version of the segment (1 for segments of a format-1 spool).
    version: u8,
    /// Regions that held no valid record; reads step over them.
    damaged: Vec<Damage>,
    /// Records (and their bytes) of this segment not yet confirmed.
    pending_events: u64,
    pending_bytes: u64,
}

impl Segment {
    fn empty() -> Self {
        Self {
            len: 0,
            version: record::VERSION,
            damaged: Vec::new(),
            pending_events: 0,
            pending_bytes: 0,
        }
    }
}

pub(super) struct State {
    segments: BTreeMap<u64, Segment>,
    /// Segment the writer appends to.
    active: u64,
    cursor: Cursor,
    /// Records (and their bytes) not yet confirmed by the broker, over all segments. `max_bytes`
    /// bounds `pending_bytes`; confirmed records still on disk (at most one segment, retired as
    /// soon as the writer moves on) are not counted.
    pending_events: u64,
    pending_bytes: u64,
    /// Timestamp of the first pending record (the one at the cursor), or, between a confirm and
    /// the next read, of the last record confirmed (which is no later); meaningful only while
    /// `pending_events > 0`.
    oldest: Option<u64>,
    /// An append was refused for lack of room, and nothing was drained since.
    full: bool,
    /// Group commits (write + fsync) done since start.
    commits: u64,
    /// The writer is running (it stops on shutdown, or if it panicked).
    writer_alive: bool,
    /// The last write or fsync failed and none has succeeded since.
    write_failed: bool,
    /// The writer has admitted records it has not counted yet (writing and fsync'ing them).
    committing: bool,
    /// [`Spool::release_if_drained`] emptied the directory: nothing is written any more.
    released: bool,
}

pub(super) struct Shared {
    dir: PathBuf,
    max_bytes: u64,
    /// Bytes of appends sent to the writer and not taken by it yet, and their bound.
    queued: AtomicU64,
    queue_max_bytes: u64,
    state: Mutex<State>,
    /// Wakes the drainer after an append.
    appended: Notify,
    metrics: Metrics,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a panic elsewhere while holding it; the state itself is only
        // changed by whole assignments, so keep going with it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish_gauges(&self, st: &State) {
        self.metrics
            .set_spool_oldest_timestamp(st.oldest.filter(|_| st.pending_events > 0));
        self.metrics
            .spool_events
            .set(i64::try_from(st.pending_events).unwrap_or(i64::MAX));
        self.metrics
            .spool_bytes
            .set(i64::try_from(st.pending_bytes).unwrap_or(i64::MAX));
    }
}

/// Handle to the spool: appends from the request path, the drainer in the background.
pub struct Spool {
    tx: mpsc::Sender<Append>,
    shared: Arc<Shared>,
    /// Exclusive lock on `<dir>/lock` for the life of the process: two writers would interleave
    /// records. The kernel releases it when the process dies, even by SIGKILL.
    _lock: File,
}

/// The format number in `dir`'s `format` file; `None` when there is none (a new spool, or one
/// of format 1).
fn read_format(dir: &Path) -> Result<Option<u32>, SpoolError> {
    match fs::read_to_string(dir.join("format")) {
        Ok(text) => {
            let found = text
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<u32>().ok())
                .ok_or_else(|| SpoolError::BadFormatFile {
                    content: text.chars().take(40).collect(),
                })?;
            if found > FORMAT {
                return Err(SpoolError::NewerFormat {
                    found,
                    supported: FORMAT,
                });
            }
            Ok(Some(found))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SpoolError::Io(e)),
    }
}

/// What was found on disk at start.
struct Recovered {
    segments: BTreeMap<u64, Segment>,
    cursor: Cursor,
    /// Timestamp of the first pending record.
    oldest: Option<u64>,
    /// Highest segment id on disk (set-aside ones included) or named by the cursor file.
    max_id: u64,
}

/// Where reading resumes for a cursor file naming `c`: `None` when it cannot be trusted.
fn resolve_cursor(c: Cursor, scans: &BTreeMap<u64, Scan>) -> Option<Cursor> {
    let scan = scans.get(&c.segment)?;
    if c.offset == scan.end()
        || scan
            .records
            .binary_search_by_key(&c.offset, |r| r.offset)
            .is_ok()
    {
        return Some(c);
    }
    // Into a damaged region: the records in it are lost, the ones after it are pending.
    scan.damaged
        .iter()
        .find(|d| d.start <= c.offset && c.offset < d.end)
        .map(|d| Cursor {
            segment: c.segment,
            offset: d.end,
        })
}

/// Retire a segment that holds nothing to drain: delete it, or set it aside when it had damage.
fn retire_file(dir: &Path, id: u64, damaged: bool, metrics: &Metrics) {
    let done = if damaged {
        fs::rename(segment_path(dir, id), damaged_path(dir, id)).and_then(|()| sync_dir(dir))
    } else {
        fs::remove_file(segment_path(dir, id)).and_then(|()| sync_dir(dir))
    };
    match done {
        Ok(()) if damaged => {
            metrics.spool_damaged_segments_total.inc();
            error!(
                segment = id,
                file = %damaged_path(dir, id).display(),
                "spool segment had damage: set aside (kept, never deleted) once its readable \
                 records were drained"
            );
        }
        Ok(()) => {}
        Err(e) => warn!(segment = id, error = %e, "could not retire a drained spool segment"),
    }
}

/// Scan the directory: every segment's records and damage, the cursor, and the segments the
/// cursor has passed (retired here).
fn recover(dir: &Path, metrics: &Metrics) -> Result<Recovered, SpoolError> {
    let mut scans = BTreeMap::new();
    let mut max_id = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        match classify(name) {
            Entry::Segment(id) if entry.file_type()?.is_file() => {
                max_id = max_id.max(id);
                let buf = read_segment(&entry.path(), None)?;
                let scan = record::scan(&buf);
                if scan.torn > 0 {
                    warn!(
                        segment = id,
                        valid = scan.end(),
                        file = buf.len(),
                        "spool segment has a torn tail (a write a crash cut short, never \
                         acknowledged); ignoring it"
                    );
                }
                for d in &scan.damaged {
                    error!(
                        segment = id,
                        start = d.start,
                        end = d.end,
                        records = d.records,
                        "spool segment is damaged: the records in this region are lost; \
                         reading resumes after it"
                    );
                }
                metrics
                    .spool_damaged_records_total
                    .inc_by(scan.damaged_records());
                scans.insert(id, scan);
            }
            Entry::Segment(id) | Entry::Damaged(id) => max_id = max_id.max(id),
            Entry::Other => {}
        }
    }
    let first = scans.keys().next().copied().unwrap_or(0);
    let stored = read_cursor(dir);
    if let Some(c) = stored {
        max_id = max_id.max(c.segment);
    }
    let cursor = match stored {
        Some(c) => resolve_cursor(c, &scans).unwrap_or_else(|| {
            if scans.contains_key(&c.segment) {
                warn!(
                    segment = c.segment,
                    offset = c.offset,
                    "the cursor file names no record boundary; reading the spool again from its \
                     first segment (duplicates, never loss)"
                );
            }
            Cursor {
                segment: first,
                offset: 0,
            }
        }),
        None => Cursor {
            segment: first,
            offset: 0,
        },
    };
    // Segments before the cursor were confirmed entirely; a crash kept them.
    let stale: Vec<u64> = scans.range(..cursor.segment).map(|(&k, _)| k).collect();
    for id in stale {
        if let Some(scan) = scans.remove(&id) {
            retire_file(dir, id, !scan.damaged.is_empty(), metrics);
        }
    }
    let oldest = scans.iter().find_map(|(&id, scan)| {
        let from = if id == cursor.segment {
            cursor.offset
        } else {
            0
        };
        scan.records
            .iter()
            .find(|r| r.offset >= from)
            .map(|r| r.timestamp)
    });
    let segments = scans
        .into_iter()
        .map(|(id, scan)| {
            let from = if id == cursor.segment {
                cursor.offset
            } else {
                0
            };
            let pending = scan.records.iter().filter(|r| r.offset >= from);
            let seg = Segment {
                len: scan.end(),
                version: scan.version,
                pending_events: pending.clone().count() as u64,
                pending_bytes: pending.map(|r| r.size).sum(),
                damaged: scan.damaged,
            };
            (id, seg)
        })
        .collect();
    Ok(Recovered {
        segments,
        cursor,
        oldest,
        max_id,
    })
}

/// Mark `dir` as a spool of [`FORMAT`]: the `format` file, and the guard directory that stops
/// releases older than format numbers.
fn mark_format(dir: &Path, found: Option<u32>, has_segments: bool) -> std::io::Result<()> {
    if found != Some(FORMAT) {
        // A spool without a `format` file but with segments is of format 1.
        if let Some(old) = found.or(has_segments.then_some(1)) {
            info!(
                from = old,
                to = FORMAT,
                "spool format upgraded: segments already there are read as they are, new ones \
                 are written in the new format"
            );
        }
        write_durably(dir, "format", format!("{FORMAT}\n").as_bytes())?;
    }
    let guard = dir.join(OLD_RELEASE_GUARD);
    if !guard.is_dir() {
        fs::create_dir_all(&guard)?;
        write_durably(&guard, "README", OLD_RELEASE_GUARD_README.as_bytes())?;
        sync_dir(dir)?;
    }
    Ok(())
}

impl Spool {
    /// Open (or create) the spool directory, recover what is on disk and start the writer
    /// thread. Blocking; call once at startup. A spool of a newer format is refused before
    /// anything in its directory is created or changed.
    pub fn open(cfg: &SpoolConfig, metrics: Metrics) -> Result<Arc<Self>, SpoolError> {
        metrics
            .spool_max_bytes
            .set(i64::try_from(cfg.max_bytes).unwrap_or(i64::MAX));
        let dir = cfg.dir.clone();
        if dir.is_dir() {
            read_format(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(SpoolError::Locked),
            Err(fs::TryLockError::Error(e)) => return Err(SpoolError::Io(e)),
        }
        // Again under the lock: another process may have written it meanwhile.
        let found = read_format(&dir)?;
        let Recovered {
            mut segments,
            mut cursor,
            oldest,
            max_id,
        } = recover(&dir, &metrics)?;
        mark_format(&dir, found, !segments.is_empty())?;
        // New appends always go to a fresh segment: never append after a possibly torn tail.
        // Its id is past every id on disk and the cursor file's, so a stale cursor never names a
        // segment written later.
        let active = max_id + 1;
        let file = create_segment(&dir, active)?;
        if segments.is_empty() {
            cursor = Cursor {
                segment: active,
                offset: 0,
            };
        }
        segments.insert(active, Segment::empty());
        let pending_events = segments.values().map(|s| s.pending_events).sum();
        let pending_bytes = segments.values().map(|s| s.pending_bytes).sum();
        let state = State {
            segments,
            active,
            cursor,
            pending_events,
            pending_bytes,
            oldest,
            writer_alive: true,
            write_failed: false,
            committing: false,
            released: false,
            full: false,
            commits: 0,
        };
        if pending_events > 0 {
            info!(
                events = pending_events,
                bytes = pending_bytes,
                "spool holds events from a previous run; they will be drained"
            );
        }
        let shared = Arc::new(Shared {
            dir,
            max_bytes: cfg.max_bytes,
            queued: AtomicU64::new(0),
            queue_max_bytes: cfg.queue_max_bytes,
            state: Mutex::new(state),
            appended: Notify::new(),
            metrics,
        });
        shared.publish_gauges(&shared.lock());
        let (tx, rx) = mpsc::channel();
        let writer_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || writer::writer(writer_shared, rx, file))?;
        Ok(Arc::new(Self {
            tx,
            shared,
            _lock: lock,
        }))
    }

    /// Append `messages` as one contiguous run of records and return once they are fsync'd.
    /// Refused at once when the writer's queue is over its byte budget. Dropping the returned
    /// future before it resolves withdraws the append if the writer has not taken it yet: a
    /// request that gave up is not written later.
    pub async fn append(&self, messages: &[Message]) -> Result<(), SpoolError> {
        // Refused before anything is written: a record the drainer could not read back would be
        // skipped as corrupt after the provider was told it is safe.
        if let Some(m) = messages.iter().find(|m| !fits_in_record(m)) {
            return Err(SpoolError::TooLarge {
                bytes: m.body.len(),
            });
        }
        let mut bytes = Vec::new();
        for m in messages {
            encode_record(m, &mut bytes);
        }
        let n = bytes.len() as u64;
        let queued = self.shared.queued.fetch_add(n, Ordering::SeqCst);
        if queued > 0 && queued + n > self.shared.queue_max_bytes {
            self.shared.queued.fetch_sub(n, Ordering::SeqCst);
            return Err(SpoolError::Busy {
                queued,
                max_bytes: self.shared.queue_max_bytes,
            });
        }
        let (reply, rx) = oneshot::channel();
        let sent = self.tx.send(Append {
            bytes,
            events: messages.len() as u64,
            first_timestamp: messages.first().map_or(0, |m| m.timestamp),
            reply,
        });
        if sent.is_err() {
            self.shared.queued.fetch_sub(n, Ordering::SeqCst);
            return Err(SpoolError::Stopped);
        }
        rx.await.map_err(|_| SpoolError::Stopped)?
    }

    /// The spool can take more events: its writer runs, its last write succeeded and it is not
    /// full.
    pub fn accepting(&self) -> bool {
        let st = self.shared.lock();
        st.writer_alive && !st.write_failed && !st.full && st.pending_bytes < self.shared.max_bytes
    }

    /// Group commits (one write + one fsync each) since start.
    pub fn commits(&self) -> u64 {
        self.shared.lock().commits
    }

    /// Events waiting to be published.
    pub fn pending_events(&self) -> u64 {
        self.shared.lock().pending_events
    }

    /// At exit, when nothing is pending: empty the directory (the segments hold confirmed
    /// records only; the cursor, the `format` file and the guard for older releases go too), so
    /// that any release, an older one included, starts on it. Segments set aside after damage
    /// stay. Appends after it are refused. Returns whether it did.
    pub fn release_if_drained(&self) -> Result<bool, SpoolError> {
        {
            let mut st = self.shared.lock();
            if st.pending_events > 0
                || st.committing
                || self.shared.queued.load(Ordering::SeqCst) > 0
            {
                return Ok(false);
            }
            st.released = true;
        }
        let dir = &self.shared.dir;
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            match (classify(name), name) {
                (Entry::Segment(_), _) if entry.file_type()?.is_file() => {
                    fs::remove_file(entry.path())?
                }
                (_, "cursor" | "format") => fs::remove_file(entry.path())?,
                (_, OLD_RELEASE_GUARD) => fs::remove_dir_all(entry.path())?,
                _ => {}
            }
        }
        sync_dir(dir)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests;
