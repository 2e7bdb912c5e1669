//! The writer thread: group commit. Requests send their encoded records over a channel; the
//! writer takes everything queued (up to [`GROUP_MAX`] requests), writes it with one `write` and
//! one `fdatasync`, then answers every waiter. Under load, many requests share one fsync.
//!
//! An append whose request gave up before the writer took it (its reply receiver is gone) is
//! dropped, not written. After a failed write or fsync the spool stops accepting
//! (`write_failed`, `/readyz` false without the broker) until a write succeeds again: the next
//! attempt goes to a new segment once, later ones retry that segment after truncating it back to
//! its last good length, so a full or failing disk does not fill up with new segment files.
//! While failed and idle, the writer probes the disk every [`PROBE_EVERY`].

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use tracing::{debug, error, info};

use super::files::{Cursor, segment_path, sync_dir};
use super::{Append, Segment, Shared, SpoolError};

/// A segment is closed (and a new one started) once it is this large.
const SEGMENT_MAX: u64 = 16 * 1024 * 1024;
/// Most requests the writer commits with one fsync.
const GROUP_MAX: usize = 4096;
/// How often a failed writer with nothing to write checks whether the disk works again.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// Bytes the probe writes (and truncates away again) at the end of the active segment.
const PROBE_BYTES: usize = 4096;

/// Marks the writer stopped however its thread ends, a panic included.
struct Alive(Arc<Shared>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.lock().writer_alive = false;
    }
}

/// The active segment as the writer sees it.
struct Active {
    file: File,
    /// Bytes of whole, fsync'd records in it.
    len: u64,
    /// The file may hold bytes past `len` (a write or fsync failed): truncate before writing.
    dirty: bool,
    /// A write failed and none has succeeded since.
    failed: bool,
    /// Since the failure, a new segment was started already.
    rotated_since_failure: bool,
    /// A segment created by a rotation whose directory fsync failed: finish that one next time
    /// rather than create another.
    created: Option<(u64, File)>,
}

impl Active {
    fn rotate(&mut self, shared: &Shared) -> std::io::Result<()> {
        let (id, file) = match self.created.take() {
            Some((id, file)) => (id, file),
            None => {
                // A file left by someone else under the next id would make `create_new` fail
                // forever: step over it.
                let mut next = shared.lock().active + 1;
                while segment_path(&shared.dir, next).exists() {
                    next += 1;
                }
                let file = OpenOptions::new()
                    .create_new(true)
                    .append(true)
                    .open(segment_path(&shared.dir, next))?;
                (next, file)
            }
        };
        if let Err(e) = sync_dir(&shared.dir) {
            self.created = Some((id, file));
            return Err(e);
        }
        if self.dirty {
            // Leave the old segment clean for the next start; its readable length is known.
            let _ = self.file.set_len(self.len);
        }
        self.file = file;
        self.len = 0;
        self.dirty = false;
        if self.failed {
            self.rotated_since_failure = true;
        }
        let mut st = shared.lock();
        st.segments.insert(id, Segment::empty());
        st.active = id;
        Ok(())
    }

    /// Write `buf` at the end of the segment (rotating first if asked) and fsync it.
    fn commit(&mut self, shared: &Shared, buf: &[u8], rotate: bool) -> std::io::Result<()> {
        if rotate {
            self.rotate(shared)?;
        }
        if self.dirty {
            self.file.set_len(self.len)?;
            self.dirty = false;
        }
        self.dirty = true;
        self.file.write_all(buf)?;
        self.file.sync_data()?;
        self.dirty = false;
        Ok(())
    }

    /// Whether the disk takes a write at the end of the segment again; what it wrote is
    /// truncated away (a crash in between leaves zeros, which a scan takes for a torn tail).
    fn probe(&mut self) -> std::io::Result<()> {
        if self.dirty {
            self.file.set_len(self.len)?;
            self.dirty = false;
        }
        self.dirty = true;
        self.file.write_all(&[0; PROBE_BYTES])?;
        self.file.sync_data()?;
        self.file.set_len(self.len)?;
        self.file.sync_data()?;
        self.dirty = false;
        Ok(())
    }

    fn recovered(&mut self, shared: &Shared) {
        if self.failed {
            info!("spool writes work again");
        }
        self.failed = false;
        self.rotated_since_failure = false;
        shared.lock().write_failed = false;
    }

    fn failed(&mut self, shared: &Shared, e: &std::io::Error) {
        shared.metrics.spool_write_errors_total.inc();
        if self.failed {
            debug!(error = %e, "spool write failed again");
        } else {
            error!(error = %e, "spool write failed; the spool refuses events until a write succeeds again");
        }
        self.failed = true;
        shared.lock().write_failed = true;
    }
}

/// The writer thread: group commit over everything queued, one fsync per group.
pub(super) fn writer(shared: Arc<Shared>, rx: Receiver<Append>, file: File) {
    let _alive = Alive(Arc::clone(&shared));
    let mut active = Active {
        file,
        len: 0,
        dirty: false,
        failed: false,
        rotated_since_failure: false,
        created: None,
    };
    loop {
        let first = if active.failed {
            match rx.recv_timeout(PROBE_EVERY) {
                Ok(a) => a,
                Err(RecvTimeoutError::Timeout) => {
                    match active.probe() {
                        Ok(()) => active.recovered(&shared),
                        Err(e) => active.failed(&shared, &e),
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match rx.recv() {
                Ok(a) => a,
                Err(_) => break,
            }
        };
        let mut group = vec![first];
        while group.len() < GROUP_MAX {
            match rx.try_recv() {
                Ok(a) => group.push(a),
                Err(_) => break,
            }
        }
        let taken: u64 = group.iter().map(|a| a.bytes.len() as u64).sum();
        shared.queued.fetch_sub(taken, Ordering::SeqCst);
        // Admit what fits under max_bytes, in arrival order; drop what nobody waits for.
        let mut buf = Vec::new();
        let mut events = 0;
        let mut first_timestamp = None;
        let mut waiters = Vec::with_capacity(group.len());
        {
            let mut st = shared.lock();
            for a in group {
                if st.released {
                    let _ = a.reply.send(Err(SpoolError::Stopped));
                    continue;
                }
                if a.reply.is_closed() {
                    // Its request was answered already (503): writing it now would only publish
                    // an event the provider is retrying anyway.
                    continue;
                }
                if st.pending_bytes + (buf.len() + a.bytes.len()) as u64 > shared.max_bytes {
                    st.full = true;
                    let _ = a.reply.send(Err(SpoolError::Full {
                        max_bytes: shared.max_bytes,
                    }));
                    continue;
                }
                buf.extend_from_slice(&a.bytes);
                events += a.events;
                first_timestamp = first_timestamp.or(Some(a.first_timestamp));
                waiters.push(a.reply);
            }
            st.committing = !waiters.is_empty();
        }
        if waiters.is_empty() {
            continue;
        }
        let rotate = {
            let st = shared.lock();
            (active.failed && !active.rotated_since_failure)
                || active.len >= SEGMENT_MAX
                || (active.len > 0
                    && st.cursor
                        == Cursor {
                            segment: st.active,
                            offset: active.len,
                        })
        };
        match active.commit(&shared, &buf, rotate) {
            Ok(()) => {
                active.recovered(&shared);
                active.len += buf.len() as u64;
                let bytes = buf.len() as u64;
                let mut st = shared.lock();
                let id = st.active;
                if let Some(seg) = st.segments.get_mut(&id) {
                    seg.len = active.len;
                    seg.pending_events += events;
                    seg.pending_bytes += bytes;
                }
                if st.pending_events == 0 {
                    // The spool was empty: the first record written is the oldest pending.
                    st.oldest = first_timestamp;
                }
                st.pending_bytes += bytes;
                st.pending_events += events;
                st.commits += 1;
                st.committing = false;
                shared.publish_gauges(&st);
                drop(st);
                shared.appended.notify_one();
                for w in waiters {
                    let _ = w.send(Ok(()));
                }
            }
            Err(e) => {
                active.failed(&shared, &e);
                shared.lock().committing = false;
                for w in waiters {
                    let _ = w.send(Err(SpoolError::Io(std::io::Error::new(
                        e.kind(),
                        e.to_string(),
                    ))));
                }
            }
        }
    }
}
