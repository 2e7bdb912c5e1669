//! Reading a spool directory from outside the bridge, next to a running one: the records after
//! the cursor, the damage found, the format. Read-only: the `lock` file is not taken, nothing is
//! written, renamed or deleted. A record being written at the tail reads as the end of its
//! segment (a torn tail), as it does on start.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::files::{Cursor, Entry, classify, read_cursor, read_segment};
use super::record::{self, Damage, Decoded, Scan, decode_at};
use super::{SpoolError, read_format, resolve_cursor};
use crate::message::Message;

/// A record after the cursor, and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRecord {
    pub segment: u64,
    pub offset: u64,
    /// Bytes of the record on disk, header included.
    pub size: u64,
    pub message: Message,
}

/// A segment file as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentReport {
    pub id: u64,
    /// Record version of the segment (1 or 2).
    pub version: u8,
    /// Bytes of the file when read.
    pub bytes: u64,
    /// Damaged regions found in it.
    pub damaged: Vec<Damage>,
    /// Bytes of a torn tail (a record not yet, or never, completely written).
    pub torn: u64,
}

/// What a spool directory holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// The `format` file's number; `None` without one (a spool of format 1, or a new one).
    pub format: Option<u32>,
    /// Where the bridge resumes reading (the cursor file, resolved as on start).
    pub cursor: Cursor,
    /// Segments (`<id>.seg`), in order.
    pub segments: Vec<SegmentReport>,
    /// Segments set aside after damage (`<id>.seg.damaged`).
    pub damaged_files: Vec<PathBuf>,
    /// Records after the cursor, in the order the bridge sends them.
    pub pending: Vec<PendingRecord>,
}

impl Inspection {
    /// Bytes of the pending records.
    pub fn pending_bytes(&self) -> u64 {
        self.pending.iter().map(|r| r.size).sum()
    }

    /// Records lost to the damaged regions found (as far as their headers tell).
    pub fn damaged_records(&self) -> u64 {
        self.segments
            .iter()
            .flat_map(|s| &s.damaged)
            .map(|d| d.records)
            .sum()
    }
}

/// Read the spool in `dir` without changing anything in it. A spool of a newer format than this
/// release reads is refused ([`SpoolError::NewerFormat`]).
pub fn inspect(dir: &Path) -> Result<Inspection, SpoolError> {
    let format = read_format(dir)?;
    let mut bufs = BTreeMap::new();
    let mut scans: BTreeMap<u64, Scan> = BTreeMap::new();
    let mut damaged_files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        match classify(name) {
            Entry::Segment(id) if entry.file_type()?.is_file() => {
                // Retired by the bridge since the directory was listed: nothing pending in it.
                let buf = match read_segment(&entry.path(), None) {
                    Ok(buf) => buf,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e.into()),
                };
                scans.insert(id, record::scan(&buf));
                bufs.insert(id, buf);
            }
            Entry::Damaged(_) if entry.file_type()?.is_file() => damaged_files.push(entry.path()),
            _ => {}
        }
    }
    damaged_files.sort();
    let first = Cursor {
        segment: scans.keys().next().copied().unwrap_or(0),
        offset: 0,
    };
    // As on start: a cursor that names no record boundary of a segment on disk is not trusted.
    let cursor = read_cursor(dir)
        .and_then(|c| resolve_cursor(c, &scans))
        .unwrap_or(first);
    let mut pending = Vec::new();
    for (&id, scan) in scans.range(cursor.segment..) {
        let from = if id == cursor.segment {
            cursor.offset
        } else {
            0
        };
        let buf = &bufs[&id];
        for span in scan.records.iter().filter(|r| r.offset >= from) {
            let at = usize::try_from(span.offset).unwrap_or(usize::MAX);
            if let Decoded::Record(message, _) = decode_at(&buf[at..], scan.version) {
                pending.push(PendingRecord {
                    segment: id,
                    offset: span.offset,
                    size: span.size,
                    message,
                });
            }
        }
    }
    let segments = scans
        .into_iter()
        .map(|(id, scan)| SegmentReport {
            id,
            version: scan.version,
            bytes: bufs[&id].len() as u64,
            damaged: scan.damaged,
            torn: scan.torn,
        })
        .collect();
    Ok(Inspection {
        format,
        cursor,
        segments,
        damaged_files,
        pending,
    })
}

#[cfg(test)]
mod tests {
    use super::super::files::{segment_path, write_cursor};
    use super::super::record::encode_record;
    use super::*;

    fn msg(i: usize) -> Message {
        Message {
            id: format!("id-{i}"),
            routing_key: "p.order.created".into(),
            source: "webhook-bridge/p/e".into(),
            timestamp: 1_700_000_000 + i as u64,
            body: format!("{{\"n\":{i}}}").into_bytes(),
        }
    }

    #[test]
    fn pending_records_skip_damage_and_a_torn_tail_and_follow_the_cursor() {
        let tmp = tempfile::tempdir().unwrap();
        let mut buf = Vec::new();
        let mut starts = Vec::new();
        for i in 0..5 {
            starts.push(buf.len() as u64);
            encode_record(&msg(i), &mut buf);
        }
        // Record 3 damaged, half a record at the tail.
        buf[starts[3] as usize + 14] ^= 0xFF;
        let mut tail = Vec::new();
        encode_record(&msg(5), &mut tail);
        buf.extend_from_slice(&tail[..tail.len() / 2]);
        fs::write(segment_path(tmp.path(), 1), &buf).unwrap();
        fs::write(tmp.path().join("00000000000000000009.seg.damaged"), b"x").unwrap();
        fs::write(tmp.path().join("format"), "2\n").unwrap();
        write_cursor(
            tmp.path(),
            Cursor {
                segment: 1,
                offset: starts[1],
            },
        )
        .unwrap();
        let before: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();

        let ins = inspect(tmp.path()).unwrap();
        let ids: Vec<&str> = ins.pending.iter().map(|r| r.message.id.as_str()).collect();
        assert_eq!(ids, ["id-1", "id-2", "id-4"]);
        assert_eq!(ins.pending[0].offset, starts[1]);
        assert_eq!(ins.format, Some(2));
        assert_eq!(ins.damaged_files.len(), 1);
        assert_eq!(ins.damaged_records(), 1);
        assert_eq!(ins.segments[0].torn, (tail.len() / 2) as u64);
        let after: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(before, after);
        assert_eq!(fs::read(segment_path(tmp.path(), 1)).unwrap(), buf);
    }
}
