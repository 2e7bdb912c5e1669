//! Reading the spool back for the drainer, in order: [`Spool::next_batch`] hands out the records
//! after the cursor (deleting segments that were fully confirmed on the way), and
//! [`Spool::confirm`] moves the cursor past them once the broker confirmed them. What the drainer
//! does between the two — publishing, retrying — is delivery policy, not storage.

use std::fs;
use std::time::Duration;

use tracing::{error, warn};

use super::files::{Cursor, read_batch, segment_path, sync_dir, write_cursor};
use super::{Spool, SpoolError};
use crate::message::Message;

/// Records read from the spool, starting at [`Batch::start`], each with its size on disk.
#[derive(Debug)]
pub struct Batch {
    start: Cursor,
    records: Vec<(Message, u64)>,
}

impl Batch {
    /// Where the first record starts.
    pub fn start(&self) -> Cursor {
        self.start
    }

    /// Just after the last record.
    pub fn end(&self) -> Cursor {
        Cursor {
            segment: self.start.segment,
            offset: self.start.offset + self.bytes(),
        }
    }

    fn bytes(&self) -> u64 {
        self.records.iter().map(|(_, n)| n).sum()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Keep only the first `n` records.
    pub fn truncate(&mut self, n: usize) {
        self.records.truncate(n);
    }

    /// The messages, to publish.
    pub fn messages(&self) -> Vec<Message> {
        self.records.iter().map(|(m, _)| m.clone()).collect()
    }
}

/// What the cursor's position calls for.
enum Step {
    /// Read the records of segment `id` from `offset`, up to `len`.
    Read { id: u64, offset: u64, len: u64 },
    /// Segment `id` is fully confirmed and closed: delete it.
    Delete(u64),
    /// The cursor names a segment that is gone: continue at the start of segment `id`.
    MoveTo(u64),
    /// Nothing to read right now.
    Idle,
}

impl Spool {
    /// Records are waiting to be confirmed (the drainer then needs the broker).
    pub fn has_unconfirmed(&self) -> bool {
        self.shared.lock().pending_events > 0
    }

    /// Resolve after the next append, or after a second at most.
    pub async fn appended(&self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.shared.appended.notified()).await;
    }

    /// The next records to publish, in order, or `None` when there is nothing to read. Fully
    /// confirmed segments the writer has left are deleted on the way. Records that checksummed
    /// when written and no longer do (the disk changed under us) are skipped with an error log
    /// rather than blocking the spool forever.
    pub async fn next_batch(&self) -> Result<Option<Batch>, SpoolError> {
        loop {
            match self.step() {
                Step::Idle => return Ok(None),
                Step::MoveTo(id) => {
                    self.shared.lock().cursor = Cursor {
                        segment: id,
                        offset: 0,
                    };
                }
                Step::Delete(id) => self.delete(id).await,
                Step::Read { id, offset, len } => {
                    let dir = self.shared.dir.clone();
                    let records =
                        tokio::task::spawn_blocking(move || read_batch(&dir, id, offset, len))
                            .await
                            .map_err(|e| SpoolError::Io(std::io::Error::other(e.to_string())))??;
                    if !records.is_empty() {
                        let start = Cursor {
                            segment: id,
                            offset,
                        };
                        return Ok(Some(Batch { start, records }));
                    }
                    error!(
                        segment = id,
                        offset, "spool segment corrupt; skipping its remainder"
                    );
                    let mut st = self.shared.lock();
                    st.cursor.offset = len;
                    st.pending_bytes = st.pending_bytes.saturating_sub(len - offset);
                    self.shared.publish_gauges(&st);
                }
            }
        }
    }

    /// The broker confirmed `batch`: move the cursor past it (the cursor file is replaced and
    /// fsync'd) and free its room.
    pub async fn confirm(&self, batch: &Batch) {
        let cursor = batch.end();
        let dir = self.shared.dir.clone();
        let _ = tokio::task::spawn_blocking(move || write_cursor(&dir, cursor)).await;
        let mut st = self.shared.lock();
        st.cursor = cursor;
        st.pending_events = st.pending_events.saturating_sub(batch.len() as u64);
        st.pending_bytes = st.pending_bytes.saturating_sub(batch.bytes());
        st.full = false;
        self.shared.publish_gauges(&st);
    }

    fn step(&self) -> Step {
        let st = self.shared.lock();
        let c = st.cursor;
        match st.segments.get(&c.segment) {
            Some(seg) if c.offset < seg.len => Step::Read {
                id: c.segment,
                offset: c.offset,
                len: seg.len,
            },
            Some(_) if c.segment != st.active => Step::Delete(c.segment),
            Some(_) => Step::Idle,
            None => match st.segments.range(c.segment..).next() {
                Some((&id, _)) => Step::MoveTo(id),
                None => Step::Idle,
            },
        }
    }

    async fn delete(&self, id: u64) {
        let dir = self.shared.dir.clone();
        let removed = tokio::task::spawn_blocking(move || {
            fs::remove_file(segment_path(&dir, id))?;
            sync_dir(&dir)
        })
        .await;
        if !matches!(removed, Ok(Ok(()))) {
            warn!(segment = id, "could not delete a drained spool segment");
        }
        let mut st = self.shared.lock();
        st.segments.remove(&id);
        let next = st.segments.range(id..).next().map(|(&k, _)| k);
        st.cursor = Cursor {
            segment: next.unwrap_or(st.active),
            offset: 0,
        };
    }
}
