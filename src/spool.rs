//! The local durable fallback (SPEC §6): when the broker cannot confirm a request in time, its
//! messages are appended to an on-disk log and fsync'd before the provider gets its 200; a
//! drainer publishes them, in order and with confirms, once the broker is back.
//!
//! On disk the spool is a directory of append-only segment files `<id>.seg` (ids increase) and a
//! `cursor` file naming the first record not yet confirmed. A record is
//! `len: u32 LE | crc32(payload): u32 LE | payload`, so a tail torn by a crash is detected and
//! ignored: only whole, checksummed records count, and a record is only acknowledged after the
//! fsync that covers it.
//!
//! **Invariants:**
//! - `append` returns `Ok` only after the records are written and `fdatasync`'d.
//! - The cursor never moves past a record the broker has not confirmed; a segment is deleted only
//!   when every record in it was confirmed and it is no longer written to. A stale cursor (lost
//!   on a crash) only means some records are published twice, with the same `message_id`.
//! - One writer thread owns the active segment; the drainer only reads, and deletes segments the
//!   writer has left.
//!
//! Group commit: requests send their encoded records to the writer over a channel; the writer
//! takes everything queued, writes it with one `write` and one `fdatasync`, then answers every
//! waiter. Under load, many requests share one fsync.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, oneshot, watch};
use tracing::{error, info, warn};

use crate::config::SpoolConfig;
use crate::message::Message;
use crate::metrics::Metrics;
use crate::publisher::{PublishError, Publisher};

/// A segment is closed (and a new one started) once it is this large.
const SEGMENT_MAX: u64 = 16 * 1024 * 1024;
/// Records larger than this are considered corrupt when read back.
const RECORD_MAX: u32 = 64 * 1024 * 1024;
/// Most records the writer commits with one fsync.
const GROUP_MAX: usize = 4096;
/// Most messages (and bytes) the drainer publishes in one confirmed batch.
const DRAIN_BATCH: usize = 256;
const DRAIN_BATCH_BYTES: u64 = 1024 * 1024;
/// How long the drainer waits for the confirms of one batch.
const DRAIN_CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER: u64 = 8;
const FORMAT_VERSION: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool is full ({max_bytes} bytes)")]
    Full { max_bytes: u64 },
    #[error("spool I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("spool writer has stopped")]
    Stopped,
    #[error("spool directory is in use by another process")]
    Locked,
    #[error("an event of {bytes} bytes does not fit in a spool record")]
    TooLarge { bytes: usize },
}

/// One request's records on their way to the writer.
struct Append {
    bytes: Vec<u8>,
    events: u64,
    reply: oneshot::Sender<Result<(), SpoolError>>,
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    /// Bytes of whole, valid, fsync'd records.
    len: u64,
}

/// Position of the first unconfirmed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    segment: u64,
    offset: u64,
}

struct State {
    segments: BTreeMap<u64, Segment>,
    /// Segment the writer appends to.
    active: u64,
    cursor: Cursor,
    /// Records (and their bytes) not yet confirmed by the broker. `max_bytes` bounds
    /// `pending_bytes`; confirmed records still on disk (at most one segment, deleted as soon as
    /// the writer moves on) are not counted.
    pending_events: u64,
    pending_bytes: u64,
    /// An append was refused for lack of room, and nothing was drained since.
    full: bool,
    /// Group commits (write + fsync) done since start.
    commits: u64,
    /// The writer is running (it stops on shutdown or a fatal error).
    writer_alive: bool,
}

struct Shared {
    dir: PathBuf,
    max_bytes: u64,
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
            .spool_events
            .set(i64::try_from(st.pending_events).unwrap_or(i64::MAX));
        self.metrics
            .spool_bytes
            .set(i64::try_from(st.pending_bytes).unwrap_or(i64::MAX));
    }
}

/// Handle to the spool: appends from the request path, the drainer in the background.
pub struct Spool {
    tx: mpsc::UnboundedSender<Append>,
    shared: Arc<Shared>,
    /// Exclusive lock on `<dir>/lock` for the life of the process: two writers would interleave
    /// records. The kernel releases it when the process dies, even by SIGKILL.
    _lock: File,
}

impl Spool {
    /// Open (or create) the spool directory, recover what is on disk and start the writer
    /// thread. Blocking; call once at startup.
    pub fn open(cfg: &SpoolConfig, metrics: Metrics) -> Result<Arc<Self>, SpoolError> {
        metrics
            .spool_max_bytes
            .set(i64::try_from(cfg.max_bytes).unwrap_or(i64::MAX));
        fs::create_dir_all(&cfg.dir)?;
        let dir = cfg.dir.clone();
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
        let mut segments = BTreeMap::new();
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let (len, events, file_len) = scan_segment(&entry.path())?;
            if len < file_len {
                warn!(
                    segment = id,
                    valid = len,
                    file = file_len,
                    "spool segment has a torn or corrupt tail; ignoring it"
                );
            }
            segments.insert(id, (Segment { len }, events));
        }
        let first = segments.keys().next().copied();
        let mut cursor = read_cursor(&dir)
            .filter(|c| {
                segments
                    .get(&c.segment)
                    .is_some_and(|(s, _)| c.offset <= s.len)
            })
            .unwrap_or(Cursor {
                segment: first.unwrap_or(0),
                offset: 0,
            });
        // Segments before the cursor were confirmed entirely; a crash kept them.
        let stale: Vec<u64> = segments.range(..cursor.segment).map(|(&k, _)| k).collect();
        for id in stale {
            segments.remove(&id);
            let _ = fs::remove_file(segment_path(&dir, id));
        }
        // Count what is still to be drained.
        let mut pending_events = 0;
        let mut pending_bytes = 0;
        for (&id, (seg, events)) in &segments {
            if id == cursor.segment && cursor.offset > 0 {
                let (skipped, skipped_events) =
                    count_records(&segment_path(&dir, id), cursor.offset)?;
                pending_bytes += seg.len - skipped;
                pending_events += events - skipped_events;
            } else {
                pending_bytes += seg.len;
                pending_events += events;
            }
        }
        // New appends always go to a fresh segment: never append after a possibly torn tail.
        let active = segments.keys().next_back().map_or(1, |k| k + 1);
        let file = create_segment(&dir, active)?;
        if segments.is_empty() {
            cursor = Cursor {
                segment: active,
                offset: 0,
            };
        }
        let mut segs: BTreeMap<u64, Segment> =
            segments.into_iter().map(|(k, (s, _))| (k, s)).collect();
        segs.insert(active, Segment { len: 0 });
        let state = State {
            segments: segs,
            active,
            cursor,
            pending_events,
            pending_bytes,
            writer_alive: true,
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
            state: Mutex::new(state),
            appended: Notify::new(),
            metrics,
        });
        shared.publish_gauges(&shared.lock());
        let (tx, rx) = mpsc::unbounded_channel();
        let writer_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || writer(writer_shared, rx, file))?;
        Ok(Arc::new(Self {
            tx,
            shared,
            _lock: lock,
        }))
    }

    /// Append `messages` as one contiguous run of records and return once they are fsync'd.
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
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Append {
                bytes,
                events: messages.len() as u64,
                reply,
            })
            .map_err(|_| SpoolError::Stopped)?;
        rx.await.map_err(|_| SpoolError::Stopped)?
    }

    /// The spool can take more events: its writer runs and it is not full.
    pub fn accepting(&self) -> bool {
        let st = self.shared.lock();
        st.writer_alive && !st.full && st.pending_bytes < self.shared.max_bytes
    }

    /// Group commits (one write + one fsync each) since start.
    pub fn commits(&self) -> u64 {
        self.shared.lock().commits
    }

    /// Events waiting to be published.
    pub fn pending_events(&self) -> u64 {
        self.shared.lock().pending_events
    }

    /// Start the drainer: publishes spooled records in order whenever the broker is connected,
    /// until `shutdown` turns true.
    pub fn start_drainer(
        self: &Arc<Self>,
        publisher: Arc<Publisher>,
        shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(drain(Arc::clone(&self.shared), publisher, shutdown))
    }
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn create_segment(dir: &Path, id: u64) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(segment_path(dir, id))?;
    sync_dir(dir)?;
    Ok(file)
}

fn read_cursor(dir: &Path) -> Option<Cursor> {
    let text = fs::read_to_string(dir.join("cursor")).ok()?;
    let (seg, off) = text.trim().split_once(' ')?;
    Some(Cursor {
        segment: seg.parse().ok()?,
        offset: off.parse().ok()?,
    })
}

/// Replace the cursor file atomically (write, fsync, rename). Not fsync'ing the directory is
/// deliberate: a cursor lost on a crash only causes duplicates, never loss.
fn write_cursor(dir: &Path, c: Cursor) -> std::io::Result<()> {
    let tmp = dir.join("cursor.tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(format!("{} {}\n", c.segment, c.offset).as_bytes())?;
    f.sync_data()?;
    fs::rename(tmp, dir.join("cursor"))
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    let n = u16::try_from(b.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&b[..usize::from(n)]);
}

/// `m` can be written as a record that reads back whole: every string within its `u16` length
/// and the payload within [`RECORD_MAX`].
fn fits_in_record(m: &Message) -> bool {
    let strings = [&m.id, &m.routing_key, &m.source];
    strings.iter().all(|s| s.len() <= usize::from(u16::MAX))
        && 1 + strings.iter().map(|s| 2 + s.len()).sum::<usize>() + 8 + 4 + m.body.len()
            <= RECORD_MAX as usize
}

/// Append one record (header + payload) for `m` to `out`.
fn encode_record(m: &Message, out: &mut Vec<u8>) {
    let mut payload = Vec::with_capacity(m.body.len() + m.id.len() + m.routing_key.len() + 64);
    payload.push(FORMAT_VERSION);
    put_str(&mut payload, &m.id);
    put_str(&mut payload, &m.routing_key);
    put_str(&mut payload, &m.source);
    payload.extend_from_slice(&m.timestamp.to_le_bytes());
    payload.extend_from_slice(&(m.body.len() as u32).to_le_bytes());
    payload.extend_from_slice(&m.body);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
}

fn decode_payload(p: &[u8]) -> Option<Message> {
    fn take<'a>(p: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if p.len() < n {
            return None;
        }
        let (a, b) = p.split_at(n);
        *p = b;
        Some(a)
    }
    fn string(p: &mut &[u8]) -> Option<String> {
        let n = u16::from_le_bytes(take(p, 2)?.try_into().ok()?);
        String::from_utf8(take(p, usize::from(n))?.to_vec()).ok()
    }
    let mut p = p;
    if take(&mut p, 1)? != [FORMAT_VERSION] {
        return None;
    }
    let id = string(&mut p)?;
    let routing_key = string(&mut p)?;
    let source = string(&mut p)?;
    let timestamp = u64::from_le_bytes(take(&mut p, 8)?.try_into().ok()?);
    let n = u32::from_le_bytes(take(&mut p, 4)?.try_into().ok()?) as usize;
    let body = take(&mut p, n)?.to_vec();
    Some(Message {
        id,
        routing_key,
        source,
        timestamp,
        body,
    })
}

/// Split whole, checksummed records off the front of `buf`; stops at the first incomplete or
/// corrupt one. Returns the messages with the size of each record.
fn decode_records(buf: &[u8]) -> Vec<(Message, u64)> {
    let mut out = Vec::new();
    let mut rest = buf;
    while rest.len() as u64 >= HEADER {
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if len > RECORD_MAX || rest.len() < HEADER as usize + len as usize {
            break;
        }
        let payload = &rest[HEADER as usize..HEADER as usize + len as usize];
        if crc32fast::hash(payload) != crc {
            break;
        }
        let Some(m) = decode_payload(payload) else {
            break;
        };
        out.push((m, HEADER + u64::from(len)));
        rest = &rest[HEADER as usize + len as usize..];
    }
    out
}

/// Valid length, record count and file length of a segment.
fn scan_segment(path: &Path) -> std::io::Result<(u64, u64, u64)> {
    let buf = fs::read(path)?;
    let records = decode_records(&buf);
    let len = records.iter().map(|(_, n)| n).sum();
    Ok((len, records.len() as u64, buf.len() as u64))
}

/// Bytes and records in the first `upto` bytes of a segment.
fn count_records(path: &Path, upto: u64) -> std::io::Result<(u64, u64)> {
    let buf = fs::read(path)?;
    let end = usize::try_from(upto).unwrap_or(usize::MAX).min(buf.len());
    let records = decode_records(&buf[..end]);
    Ok((records.iter().map(|(_, n)| n).sum(), records.len() as u64))
}

/// Read up to a batch of records of segment `id` from `offset`, not beyond `len`.
fn read_batch(dir: &Path, id: u64, offset: u64, len: u64) -> std::io::Result<Vec<(Message, u64)>> {
    let mut f = File::open(segment_path(dir, id))?;
    f.seek(SeekFrom::Start(offset))?;
    let want = (len - offset).min(DRAIN_BATCH_BYTES);
    let mut buf = vec![0; usize::try_from(want).unwrap_or(0)];
    f.read_exact(&mut buf)?;
    let mut records = decode_records(&buf);
    if records.is_empty() && len > offset {
        // One record larger than the batch window: read exactly that record.
        let mut header = [0u8; 8];
        f.seek(SeekFrom::Start(offset))?;
        f.read_exact(&mut header)?;
        let rec = HEADER
            + u64::from(u32::from_le_bytes([
                header[0], header[1], header[2], header[3],
            ]));
        if rec <= len - offset {
            let mut buf = vec![0; usize::try_from(rec).unwrap_or(0)];
            f.seek(SeekFrom::Start(offset))?;
            f.read_exact(&mut buf)?;
            records = decode_records(&buf);
        }
    }
    records.truncate(DRAIN_BATCH);
    Ok(records)
}

/// The writer thread: group commit over everything queued, one fsync per group.
fn writer(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Append>, mut file: File) {
    let mut file_len: u64 = 0;
    // After a failed write the active file may hold garbage: start a new segment next time.
    let mut must_rotate = false;
    while let Some(first) = rx.blocking_recv() {
        let mut group = vec![first];
        while group.len() < GROUP_MAX {
            match rx.try_recv() {
                Ok(a) => group.push(a),
                Err(_) => break,
            }
        }
        // Admit what fits under max_bytes, in arrival order.
        let mut buf = Vec::new();
        let mut events = 0;
        let mut waiters = Vec::with_capacity(group.len());
        {
            let mut st = shared.lock();
            for a in group {
                if st.pending_bytes + (buf.len() + a.bytes.len()) as u64 > shared.max_bytes {
                    st.full = true;
                    let _ = a.reply.send(Err(SpoolError::Full {
                        max_bytes: shared.max_bytes,
                    }));
                    continue;
                }
                buf.extend_from_slice(&a.bytes);
                events += a.events;
                waiters.push(a.reply);
            }
        }
        if waiters.is_empty() {
            continue;
        }
        let rotate = {
            let st = shared.lock();
            must_rotate
                || file_len >= SEGMENT_MAX
                || (file_len > 0
                    && st.cursor
                        == Cursor {
                            segment: st.active,
                            offset: file_len,
                        })
        };
        let result = (|| -> std::io::Result<()> {
            if rotate {
                // A file a failed rotation left behind (created, then the directory fsync
                // failed) would make `create_new` fail forever: step over it.
                let mut next = shared.lock().active + 1;
                while segment_path(&shared.dir, next).exists() {
                    next += 1;
                }
                file = create_segment(&shared.dir, next)?;
                file_len = 0;
                must_rotate = false;
                let mut st = shared.lock();
                st.segments.insert(next, Segment { len: 0 });
                st.active = next;
            }
            file.write_all(&buf)?;
            file.sync_data()
        })();
        match result {
            Ok(()) => {
                file_len += buf.len() as u64;
                let mut st = shared.lock();
                let active = st.active;
                if let Some(seg) = st.segments.get_mut(&active) {
                    seg.len = file_len;
                }
                st.pending_bytes += buf.len() as u64;
                st.pending_events += events;
                st.commits += 1;
                shared.publish_gauges(&st);
                drop(st);
                shared.appended.notify_one();
                for w in waiters {
                    let _ = w.send(Ok(()));
                }
            }
            Err(e) => {
                error!(error = %e, "spool write failed");
                must_rotate = true;
                for w in waiters {
                    let _ = w.send(Err(SpoolError::Io(std::io::Error::new(
                        e.kind(),
                        e.to_string(),
                    ))));
                }
            }
        }
    }
    shared.lock().writer_alive = false;
}

enum Step {
    /// Publish these records of segment `id` starting at `offset`.
    Batch { id: u64, offset: u64, len: u64 },
    /// Segment `id` is fully confirmed and closed: delete it.
    Delete(u64),
    /// The cursor names a segment that is gone: continue at the start of segment `id`.
    MoveTo(u64),
    /// Nothing to drain right now.
    Idle,
}

async fn drain(
    shared: Arc<Shared>,
    publisher: Arc<Publisher>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut failures: u32 = 0;
    // After a batch with a returned (unroutable, unparkable) message: one record at a time up to
    // the end of that batch, so the records before the stuck one are confirmed and passed, and
    // only that one is retried (each record of the batch is published once more, no more).
    let mut single_until: Option<(u64, u64)> = None;
    loop {
        if *shutdown.borrow() {
            break;
        }
        let step = {
            let st = shared.lock();
            let c = st.cursor;
            match st.segments.get(&c.segment) {
                Some(seg) if c.offset < seg.len => Step::Batch {
                    id: c.segment,
                    offset: c.offset,
                    len: seg.len,
                },
                Some(_) if c.segment != st.active => Step::Delete(c.segment),
                Some(_) => Step::Idle,
                // The cursor names a segment that is gone: move to the next one.
                None => match st.segments.range(c.segment..).next() {
                    Some((&id, _)) => Step::MoveTo(id),
                    None => Step::Idle,
                },
            }
        };
        match step {
            Step::MoveTo(id) => {
                shared.lock().cursor = Cursor {
                    segment: id,
                    offset: 0,
                };
            }
            Step::Idle => {
                tokio::select! {
                    _ = shutdown.changed() => {},
                    _ = shared.appended.notified() => {},
                    // Belt and braces: re-check now and then.
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {},
                }
            }
            Step::Delete(id) => {
                let dir = shared.dir.clone();
                let removed = tokio::task::spawn_blocking(move || {
                    fs::remove_file(segment_path(&dir, id))?;
                    sync_dir(&dir)
                })
                .await;
                if !matches!(removed, Ok(Ok(()))) {
                    warn!(segment = id, "could not delete a drained spool segment");
                }
                let mut st = shared.lock();
                st.segments.remove(&id);
                let next = st.segments.range(id..).next().map(|(&k, _)| k);
                st.cursor = Cursor {
                    segment: next.unwrap_or(st.active),
                    offset: 0,
                };
            }
            Step::Batch { id, offset, len } => {
                if !publisher.is_connected() {
                    tokio::select! {
                        _ = shutdown.changed() => {},
                        _ = publisher.wait_connected(Duration::from_secs(3600)) => {},
                    }
                    continue;
                }
                if publisher.is_blocked() {
                    // A resource alarm: the broker reads no publishes until it lifts.
                    tokio::select! {
                        _ = shutdown.changed() => {},
                        _ = tokio::time::sleep(Duration::from_millis(250)) => {},
                    }
                    continue;
                }
                let dir = shared.dir.clone();
                let read =
                    tokio::task::spawn_blocking(move || read_batch(&dir, id, offset, len)).await;
                let records = match read {
                    Ok(Ok(r)) if !r.is_empty() => r,
                    Ok(Ok(_)) => {
                        // Bytes that checksummed when written no longer do (the disk changed
                        // under us): skip the rest of the segment rather than block forever.
                        error!(
                            segment = id,
                            offset, "spool segment corrupt; skipping its remainder"
                        );
                        let mut st = shared.lock();
                        st.cursor.offset = len;
                        st.pending_bytes = st.pending_bytes.saturating_sub(len - offset);
                        shared.publish_gauges(&st);
                        continue;
                    }
                    other => {
                        // An I/O error may pass (file descriptors, a busy disk): retry.
                        let error = match other {
                            Ok(Err(e)) => e.to_string(),
                            Err(e) => e.to_string(),
                            Ok(Ok(_)) => String::new(),
                        };
                        warn!(segment = id, offset, %error, "cannot read the spool; retrying");
                        tokio::select! {
                            _ = shutdown.changed() => {},
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {},
                        }
                        continue;
                    }
                };
                let mut records = records;
                if single_until.is_some_and(|until| (id, offset) < until) {
                    records.truncate(1);
                } else {
                    single_until = None;
                }
                let messages: Vec<Message> = records.iter().map(|(m, _)| m.clone()).collect();
                let started = Instant::now();
                match publisher
                    .publish(&messages, Instant::now() + DRAIN_CONFIRM_TIMEOUT)
                    .await
                {
                    Ok(()) => {
                        failures = 0;
                        let bytes: u64 = records.iter().map(|(_, n)| n).sum();
                        let cursor = Cursor {
                            segment: id,
                            offset: offset + bytes,
                        };
                        let dir = shared.dir.clone();
                        let _ =
                            tokio::task::spawn_blocking(move || write_cursor(&dir, cursor)).await;
                        let mut st = shared.lock();
                        st.cursor = cursor;
                        st.pending_events = st.pending_events.saturating_sub(messages.len() as u64);
                        st.pending_bytes = st.pending_bytes.saturating_sub(bytes);
                        st.full = false;
                        shared.publish_gauges(&st);
                        tracing::debug!(
                            events = messages.len(),
                            ms = started.elapsed().as_millis() as u64,
                            "drained spooled events"
                        );
                    }
                    Err(PublishError::Returned) if messages.len() > 1 => {
                        // Find the record at fault without waiting: the others go through.
                        let bytes: u64 = records.iter().map(|(_, n)| n).sum();
                        single_until = Some((id, offset + bytes));
                    }
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        warn!(error = %e, events = messages.len(), "publishing spooled events failed; will retry");
                        let delay = crate::publisher::backoff(failures, Duration::from_secs(5));
                        tokio::select! {
                            _ = shutdown.changed() => {},
                            _ = tokio::time::sleep(delay) => {},
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(i: usize) -> Message {
        Message {
            id: format!("id-{i}"),
            routing_key: "p.order.status_changed".into(),
            source: "webhook-bridge/p/e".into(),
            timestamp: 1_700_000_000 + i as u64,
            body: format!("{{\"n\":{i}}}").into_bytes(),
        }
    }

    fn config(dir: &Path, max_bytes: u64) -> SpoolConfig {
        SpoolConfig {
            dir: dir.to_path_buf(),
            max_bytes,
            ..SpoolConfig::default()
        }
    }

    #[tokio::test]
    async fn appended_events_are_found_again_after_reopening_and_dir_is_locked() {
        let tmp = tempfile::tempdir().unwrap();
        let metrics = Metrics::new().unwrap();
        let spool = Spool::open(&config(tmp.path(), 1 << 20), metrics.clone()).unwrap();
        let batch: Vec<Message> = (0..5).map(msg).collect();
        spool.append(&batch[..2]).await.unwrap();
        spool.append(&batch[2..]).await.unwrap();
        assert_eq!(spool.pending_events(), 5);
        assert!(matches!(
            Spool::open(&config(tmp.path(), 1 << 20), metrics.clone()),
            Err(SpoolError::Locked)
        ));
        drop(spool);
        // The writer thread holds the shared state until its channel closes; give it a moment.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let again = Spool::open(&config(tmp.path(), 1 << 20), metrics.clone()).unwrap();
        assert_eq!(again.pending_events(), 5);
        assert_eq!(metrics.spool_events.get(), 5);
    }

    #[tokio::test]
    async fn a_segment_file_left_by_a_failed_rotation_does_not_stop_the_writer() {
        let tmp = tempfile::tempdir().unwrap();
        let spool = Spool::open(&config(tmp.path(), 1 << 20), Metrics::new().unwrap()).unwrap();
        spool.append(&[msg(0)]).await.unwrap();
        // The drainer has caught up with the active segment, so the next write rotates; a file
        // with the next id is already there.
        let active = {
            let mut st = spool.shared.lock();
            let active = st.active;
            let len = st.segments.get(&active).map_or(0, |s| s.len);
            st.cursor = Cursor {
                segment: active,
                offset: len,
            };
            active
        };
        File::create(segment_path(tmp.path(), active + 1)).unwrap();
        spool.append(&[msg(1)]).await.unwrap();
        spool.append(&[msg(2)]).await.unwrap();
        assert_eq!(spool.shared.lock().active, active + 2);
    }

    #[tokio::test]
    async fn an_event_too_large_for_a_record_is_refused_before_anything_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        let metrics = Metrics::new().unwrap();
        let spool = Spool::open(&config(tmp.path(), 1 << 30), metrics).unwrap();
        let mut big = msg(1);
        big.body = vec![b'x'; RECORD_MAX as usize];
        let batch = vec![msg(0), big];
        assert!(matches!(
            spool.append(&batch).await,
            Err(SpoolError::TooLarge { .. })
        ));
        assert_eq!(
            spool.pending_events(),
            0,
            "nothing of the batch was written"
        );
        let mut long_key = msg(2);
        long_key.routing_key = "k".repeat(70_000);
        assert!(spool.append(&[long_key]).await.is_err());
        // The largest body that fits is written and read back.
        let mut largest = msg(3);
        largest.body =
            vec![b'y'; RECORD_MAX as usize - 64 - largest.id.len() - largest.source.len()];
        assert!(fits_in_record(&largest));
        spool.append(&[largest]).await.unwrap();
        assert_eq!(spool.pending_events(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_share_fsyncs() {
        let tmp = tempfile::tempdir().unwrap();
        let spool = Spool::open(&config(tmp.path(), 1 << 30), Metrics::new().unwrap()).unwrap();
        let n = 400;
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let spool = Arc::clone(&spool);
                tokio::spawn(async move { spool.append(&[msg(i)]).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let commits = spool.commits();
        eprintln!("{n} concurrent appends, {commits} fsyncs");
        assert_eq!(spool.pending_events(), n as u64);
        assert!(commits < n as u64, "{commits} fsyncs for {n} appends");
    }

    #[tokio::test]
    async fn full_spool_refuses_and_is_not_accepting() {
        let tmp = tempfile::tempdir().unwrap();
        let spool = Spool::open(&config(tmp.path(), 4096), Metrics::new().unwrap()).unwrap();
        let mut refused = false;
        for i in 0..100 {
            match spool.append(&[msg(i)]).await {
                Ok(()) => {}
                Err(SpoolError::Full { .. }) => {
                    refused = true;
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!(refused);
        assert!(!spool.accepting());
    }

    #[test]
    fn records_round_trip_and_torn_tail_is_ignored() {
        let mut buf = Vec::new();
        for i in 0..3 {
            encode_record(&msg(i), &mut buf);
        }
        let whole = decode_records(&buf);
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[2].0.id, "id-2");
        assert_eq!(whole[1].0.body, msg(1).body);
        // Cut inside the last record: only the first two survive.
        let torn = decode_records(&buf[..buf.len() - 3]);
        assert_eq!(torn.len(), 2);
        // A flipped byte in the second record stops the scan there.
        let first_len = whole[0].1 as usize;
        let mut bad = buf.clone();
        bad[first_len + 12] ^= 0xff;
        assert_eq!(decode_records(&bad).len(), 1);
    }
}
