//! The spool directory: segment files `<id>.seg` (ids increase, never reused), segments set
//! aside after damage `<id>.seg.damaged`, the `cursor` file naming the first record not yet
//! confirmed, the `format` file, and reading records back.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::record::{Decoded, decode_at, decode_records};
use crate::message::Message;

/// Most messages (and bytes) one read hands the drainer.
pub(super) const DRAIN_BATCH: usize = 256;
pub(super) const DRAIN_BATCH_BYTES: u64 = 1024 * 1024;

/// Position of a record: segment id and byte offset. Ordered as the records are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    pub segment: u64,
    pub offset: u64,
}

pub(super) fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

pub(super) fn damaged_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg.damaged"))
}

/// What a directory entry's name says it is.
pub(super) enum Entry {
    Segment(u64),
    Damaged(u64),
    Other,
}

pub(super) fn classify(name: &str) -> Entry {
    let id = |n: &str| n.parse::<u64>().ok().filter(|&id| id > 0);
    if let Some(id) = name.strip_suffix(".seg").and_then(id) {
        Entry::Segment(id)
    } else if let Some(id) = name.strip_suffix(".seg.damaged").and_then(id) {
        Entry::Damaged(id)
    } else {
        Entry::Other
    }
}

pub(super) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

pub(super) fn create_segment(dir: &Path, id: u64) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(segment_path(dir, id))?;
    sync_dir(dir)?;
    Ok(file)
}

/// The cursor file's content, when it parses.
pub(super) fn read_cursor(dir: &Path) -> Option<Cursor> {
    let text = fs::read_to_string(dir.join("cursor")).ok()?;
    let (seg, off) = text.trim().split_once(' ')?;
    Some(Cursor {
        segment: seg.parse().ok()?,
        offset: off.parse().ok()?,
    })
}

/// Replace the cursor file atomically (write, fsync, rename). Not fsync'ing the directory is
/// deliberate: a cursor lost on a crash only causes duplicates, never loss.
pub(super) fn write_cursor(dir: &Path, c: Cursor) -> std::io::Result<()> {
    let tmp = dir.join("cursor.tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(format!("{} {}\n", c.segment, c.offset).as_bytes())?;
    f.sync_data()?;
    fs::rename(tmp, dir.join("cursor"))
}

/// Replace `name` in `dir` with `content`, durably (write, fsync, rename, directory fsync).
pub(super) fn write_durably(dir: &Path, name: &str, content: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(content)?;
    f.sync_all()?;
    fs::rename(tmp, dir.join(name))?;
    sync_dir(dir)
}

/// The first `upto` bytes of a segment (all of it when shorter).
pub(super) fn read_segment(path: &Path, upto: Option<u64>) -> std::io::Result<Vec<u8>> {
    let mut buf = fs::read(path)?;
    if let Some(upto) = upto {
        buf.truncate(usize::try_from(upto).unwrap_or(usize::MAX));
    }
    Ok(buf)
}

/// What a read from a segment found.
pub(super) enum ReadOutcome {
    Records(Vec<(Message, u64)>),
    /// No whole record at the offset, though the segment's length says there is one.
    Damaged,
}

/// Read up to a batch of records of `version` from segment `id` at `offset`, not beyond `end`.
pub(super) fn read_batch(
    dir: &Path,
    id: u64,
    version: u8,
    offset: u64,
    end: u64,
) -> std::io::Result<ReadOutcome> {
    let mut f = File::open(segment_path(dir, id))?;
    f.seek(SeekFrom::Start(offset))?;
    let want = end.saturating_sub(offset).min(DRAIN_BATCH_BYTES);
    let mut buf = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
    (&mut f).take(want).read_to_end(&mut buf)?;
    let (mut records, stop) = decode_records(&buf, version);
    if records.is_empty() {
        match stop {
            // One record larger than the batch window: read exactly that record.
            Decoded::Incomplete(Some(size)) if size as u64 <= end - offset => {
                let mut buf = vec![0; size];
                f.seek(SeekFrom::Start(offset))?;
                f.read_exact(&mut buf)?;
                match decode_at(&buf, version) {
                    Decoded::Record(m, size) => records.push((m, size as u64)),
                    _ => return Ok(ReadOutcome::Damaged),
                }
            }
            _ => return Ok(ReadOutcome::Damaged),
        }
    }
    records.truncate(DRAIN_BATCH);
    Ok(ReadOutcome::Records(records))
}
