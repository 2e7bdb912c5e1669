//! Reading the spool back for the drainer, in order: [`Spool::next_batch`] hands out the records
//! after the cursor (retiring segments that were fully confirmed on the way, and stepping over
//! damaged regions), and [`Spool::confirm`] moves the cursor past them once the broker confirmed
//! them. What the drainer does between the two — publishing, retrying — is delivery policy, not
//! storage.

use std::time::Duration;

use tracing::{error, warn};

use super::files::{self, Cursor, read_batch, read_segment, segment_path, write_cursor};
use super::record::{self, Damage};
use super::{Spool, SpoolError, retire_file};
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
    /// Read the records of segment `id` (of record `version`) from `offset`, up to `end`.
    Read {
        id: u64,
        version: u8,
        offset: u64,
        end: u64,
    },
    /// The cursor is in a damaged region: continue at its end.
    Skip(u64),
    /// Segment `id` is fully confirmed and closed: delete it, or set it aside if it had damage.
    Retire(u64),
    /// The cursor names a segment that is gone: continue at the start of segment `id`.
    MoveTo(u64),
    /// Nothing to read right now.
    Idle,
}

fn io_error(e: impl std::fmt::Display) -> SpoolError {
    SpoolError::Io(std::io::Error::other(e.to_string()))
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
    /// confirmed segments the writer has left are retired on the way. Damage found on the way
    /// (records that checksummed when written and no longer do) loses those records only:
    /// the segment is scanned again and reading resumes at the next whole record.
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
                Step::Skip(to) => self.shared.lock().cursor.offset = to,
                Step::Retire(id) => self.retire(id).await,
                Step::Read {
                    id,
                    version,
                    offset,
                    end,
                } => {
                    let dir = self.shared.dir.clone();
                    let read = tokio::task::spawn_blocking(move || {
                        read_batch(&dir, id, version, offset, end)
                    })
                    .await
                    .map_err(io_error)??;
                    match read {
                        files::ReadOutcome::Records(records) => {
                            let start = Cursor {
                                segment: id,
                                offset,
                            };
                            if let Some((first, _)) = records.first() {
                                // The batch starts at the cursor: its first record is the
                                // oldest pending one.
                                let mut st = self.shared.lock();
                                if st.cursor == start {
                                    st.oldest = Some(first.timestamp);
                                    self.shared.publish_gauges(&st);
                                }
                            }
                            return Ok(Some(Batch { start, records }));
                        }
                        files::ReadOutcome::Damaged => self.rescan(id, offset).await?,
                    }
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
        let (events, bytes) = (batch.len() as u64, batch.bytes());
        let mut st = self.shared.lock();
        st.cursor = cursor;
        if let Some(seg) = st.segments.get_mut(&cursor.segment) {
            seg.pending_events = seg.pending_events.saturating_sub(events);
            seg.pending_bytes = seg.pending_bytes.saturating_sub(bytes);
        }
        st.pending_events = st.pending_events.saturating_sub(events);
        st.pending_bytes = st.pending_bytes.saturating_sub(bytes);
        // The next record is read with the next batch; until then the last one confirmed is
        // the closest known timestamp, and no later than the next record's.
        if let Some((last, _)) = batch.records.last() {
            st.oldest = Some(last.timestamp);
        }
        st.full = false;
        self.shared.publish_gauges(&st);
    }

    fn step(&self) -> Step {
        let st = self.shared.lock();
        let c = st.cursor;
        match st.segments.get(&c.segment) {
            Some(seg) => {
                if let Some(d) = seg
                    .damaged
                    .iter()
                    .find(|d| d.start <= c.offset && c.offset < d.end)
                {
                    return Step::Skip(d.end);
                }
                if c.offset < seg.len {
                    // Up to the next damaged region, if any.
                    let end = seg
                        .damaged
                        .iter()
                        .map(|d| d.start)
                        .filter(|&s| s > c.offset)
                        .min()
                        .unwrap_or(seg.len)
                        .min(seg.len);
                    return Step::Read {
                        id: c.segment,
                        version: seg.version,
                        offset: c.offset,
                        end,
                    };
                }
                if c.segment != st.active {
                    Step::Retire(c.segment)
                } else {
                    Step::Idle
                }
            }
            None => match st.segments.range(c.segment..).next() {
                Some((&id, _)) => Step::MoveTo(id),
                None => Step::Idle,
            },
        }
    }

    /// Reading segment `id` at `at` found no whole record where one was written: scan the
    /// segment again and step over what is damaged from now on.
    async fn rescan(&self, id: u64, at: u64) -> Result<(), SpoolError> {
        let Some(len) = self.shared.lock().segments.get(&id).map(|s| s.len) else {
            return Ok(());
        };
        let path = segment_path(&self.shared.dir, id);
        let buf = tokio::task::spawn_blocking(move || read_segment(&path, Some(len)))
            .await
            .map_err(io_error)??;
        let mut scan = record::scan(&buf);
        // Every byte up to `len` was a whole, fsync'd record: a torn tail (or a file shorter
        // than that) there is damage too.
        let end = scan.end();
        if end < len {
            scan.damaged.push(Damage {
                start: end,
                end: len,
                records: 1,
            });
        }
        if !scan.damaged.iter().any(|d| d.start <= at && at < d.end) {
            // Read again, the bytes are fine: a passing read error. The drainer retries.
            return Err(io_error(format!(
                "spool segment {id} read inconsistently at offset {at}"
            )));
        }
        let mut st = self.shared.lock();
        let from = if st.cursor.segment == id {
            st.cursor.offset
        } else {
            0
        };
        let Some(seg) = st.segments.get_mut(&id) else {
            return Ok(());
        };
        let known = std::mem::take(&mut seg.damaged);
        let new: Vec<Damage> = scan
            .damaged
            .iter()
            .filter(|d| !known.iter().any(|k| k.start < d.end && d.start < k.end))
            .copied()
            .collect();
        seg.damaged = scan.damaged;
        seg.version = scan.version;
        // The damaged records were counted as pending when written: they are lost instead.
        let (mut events, mut bytes) = (0, 0);
        for d in new.iter().filter(|d| d.end > from) {
            let size = d.end - d.start.max(from);
            error!(
                segment = id,
                start = d.start,
                end = d.end,
                records = d.records,
                "spool segment is damaged: the records in this region are lost; reading resumes \
                 after it"
            );
            self.shared
                .metrics
                .spool_damaged_records_total
                .inc_by(d.records);
            events += d.records.min(seg.pending_events - events);
            bytes += size.min(seg.pending_bytes - bytes);
        }
        seg.pending_events -= events;
        seg.pending_bytes -= bytes;
        st.pending_events = st.pending_events.saturating_sub(events);
        st.pending_bytes = st.pending_bytes.saturating_sub(bytes);
        self.shared.publish_gauges(&st);
        Ok(())
    }

    /// Retire segment `id`, which the cursor has passed and the writer has left.
    async fn retire(&self, id: u64) {
        let Some(damaged) = self
            .shared
            .lock()
            .segments
            .get(&id)
            .map(|s| !s.damaged.is_empty())
        else {
            return;
        };
        let dir = self.shared.dir.clone();
        let metrics = self.shared.metrics.clone();
        let retired =
            tokio::task::spawn_blocking(move || retire_file(&dir, id, damaged, &metrics)).await;
        if retired.is_err() {
            warn!(segment = id, "could not retire a drained spool segment");
        }
        let mut st = self.shared.lock();
        if let Some(seg) = st.segments.remove(&id)
            && seg.pending_events > 0
        {
            // Records counted when written that damage took since: no longer pending.
            st.pending_events = st.pending_events.saturating_sub(seg.pending_events);
            st.pending_bytes = st.pending_bytes.saturating_sub(seg.pending_bytes);
            self.shared.publish_gauges(&st);
        }
        let next = st.segments.range(id..).next().map(|(&k, _)| k);
        st.cursor = Cursor {
            segment: next.unwrap_or(st.active),
            offset: 0,
        };
    }
}
