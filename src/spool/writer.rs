//! The writer thread: group commit. Requests send their encoded records over a channel; the
//! writer takes everything queued (up to [`GROUP_MAX`] requests), writes it with one `write` and
//! one `fdatasync`, then answers every waiter. Under load, many requests share one fsync.

use std::fs::File;
use std::io::Write;
use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::error;

use super::files::{Cursor, create_segment, segment_path};
use super::{Append, Segment, Shared, SpoolError};

/// A segment is closed (and a new one started) once it is this large.
const SEGMENT_MAX: u64 = 16 * 1024 * 1024;
/// Most requests the writer commits with one fsync.
const GROUP_MAX: usize = 4096;

/// The writer thread: group commit over everything queued, one fsync per group.
pub(super) fn writer(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Append>, mut file: File) {
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
