//! The local durable fallback (docs/contract.md §6.3): when the broker cannot confirm a request
//! in time, its messages are appended to an on-disk log and fsync'd before the provider gets its
//! 200. This module is storage only: it knows nothing of the broker. The drainer that publishes
//! spooled records (`delivery::drainer`) reads them through [`Spool::next_batch`] and
//! [`Spool::confirm`].
//!
//! - [`record`]: the record format (length, CRC, versioned payload);
//! - [`files`]: segment files, the cursor file, reading records back;
//! - [`writer`]: the group-commit writer thread;
//! - [`reader`]: batches for the drainer, in order, and deleting what was confirmed.
//!
//! **Invariants:**
//! - `append` returns `Ok` only after the records are written and `fdatasync`'d.
//! - The cursor never moves past a record the broker has not confirmed; a segment is deleted only
//!   when every record in it was confirmed and it is no longer written to. A stale cursor (lost
//!   on a crash) only means some records are published twice, with the same `message_id`.
//! - One writer thread owns the active segment; the reader only reads, and deletes segments the
//!   writer has left.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, mpsc, oneshot};
use tracing::{info, warn};

use crate::config::SpoolConfig;
use crate::message::Message;
use crate::metrics::Metrics;

mod files;
mod reader;
mod record;
mod writer;

pub use self::files::Cursor;
use self::files::{count_records, create_segment, read_cursor, scan_segment, segment_path};
pub use self::reader::Batch;
use self::record::{encode_record, fits_in_record};

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
pub(super) struct Append {
    bytes: Vec<u8>,
    events: u64,
    reply: oneshot::Sender<Result<(), SpoolError>>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Segment {
    /// Bytes of whole, valid, fsync'd records.
    len: u64,
}

pub(super) struct State {
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

pub(super) struct Shared {
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
            .spawn(move || writer::writer(writer_shared, rx, file))?;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::time::Duration;

    use super::record::RECORD_MAX;

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
}
