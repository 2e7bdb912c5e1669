//! The spool directory: segment files `<id>.seg` (ids increase), the `cursor` file naming the
//! first record not yet confirmed, and reading records back from them.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::record::{HEADER, decode_records};
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

/// Valid length, record count and file length of a segment.
pub(super) fn scan_segment(path: &Path) -> std::io::Result<(u64, u64, u64)> {
    let buf = fs::read(path)?;
    let records = decode_records(&buf);
    let len = records.iter().map(|(_, n)| n).sum();
    Ok((len, records.len() as u64, buf.len() as u64))
}

/// Bytes and records in the first `upto` bytes of a segment.
pub(super) fn count_records(path: &Path, upto: u64) -> std::io::Result<(u64, u64)> {
    let buf = fs::read(path)?;
    let end = usize::try_from(upto).unwrap_or(usize::MAX).min(buf.len());
    let records = decode_records(&buf[..end]);
    Ok((records.iter().map(|(_, n)| n).sum(), records.len() as u64))
}

/// Read up to a batch of records of segment `id` from `offset`, not beyond `len`.
pub(super) fn read_batch(
    dir: &Path,
    id: u64,
    offset: u64,
    len: u64,
) -> std::io::Result<Vec<(Message, u64)>> {
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
