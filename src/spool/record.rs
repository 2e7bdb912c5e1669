//! The record format, and scanning a segment's bytes back into records.
//!
//! **Format 2** (written since spool format 2):
//! `magic: 4 bytes | len: u32 LE | crc32(len bytes ‖ payload): u32 LE | payload`, the magic being
//! [`MAGIC`] and the payload a version byte (2), the message id, routing key and source (each
//! `u16` length + UTF-8), the timestamp (`u64` LE) and the body (`u32` length + bytes).
//!
//! **Format 1** (read, never written): `len: u32 LE | crc32(payload): u32 LE | payload`, the
//! payload as above with version byte 1.
//!
//! The magic's first byte (0xF5) never occurs in UTF-8, and everything a record carries that a
//! sender can influence (id, routing key, source, the CloudEvent JSON) is UTF-8: a format-2
//! record can never be forged inside another's payload, so after damage the scan resynchronises
//! on the next magic whose record checks. Format-1 records have no magic; after damage in a
//! format-1 segment the scan tries every offset (a CRC must still match).
//!
//! A scan sorts a segment's bytes into whole records, damaged regions (between two records, or
//! at the end when the bytes there were complete but wrong) and a torn tail (a record cut short,
//! or zeros: a write a crash interrupted before its fsync, so never acknowledged).

use crate::message::Message;

/// Records larger than this are considered corrupt when read back.
pub(super) const RECORD_MAX: u32 = 64 * 1024 * 1024;
/// The first bytes of every format-2 record.
pub const MAGIC: [u8; 4] = [0xF5, b'W', b'B', b'R'];
/// The record version this release writes.
pub const VERSION: u8 = 2;
/// The oldest record version this release reads.
pub const OLDEST_VERSION: u8 = 1;
const HEADER_V1: usize = 8;
const HEADER_V2: usize = 12;

fn put_str(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    let n = u16::try_from(b.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&b[..usize::from(n)]);
}

/// Bytes of the payload of `m` (version byte included).
fn payload_len(m: &Message) -> usize {
    1 + [&m.id, &m.routing_key, &m.source]
        .iter()
        .map(|s| 2 + s.len())
        .sum::<usize>()
        + 8
        + 4
        + m.body.len()
}

/// `m` can be written as a record that reads back whole: every string within its `u16` length
/// and the payload within [`RECORD_MAX`].
pub(super) fn fits_in_record(m: &Message) -> bool {
    let strings = [&m.id, &m.routing_key, &m.source];
    strings.iter().all(|s| s.len() <= usize::from(u16::MAX))
        && payload_len(m) <= RECORD_MAX as usize
}

fn payload(m: &Message, version: u8) -> Vec<u8> {
    let mut payload = Vec::with_capacity(payload_len(m));
    payload.push(version);
    put_str(&mut payload, &m.id);
    put_str(&mut payload, &m.routing_key);
    put_str(&mut payload, &m.source);
    payload.extend_from_slice(&m.timestamp.to_le_bytes());
    payload.extend_from_slice(&(m.body.len() as u32).to_le_bytes());
    payload.extend_from_slice(&m.body);
    payload
}

/// Append one record (format 2) for `m` to `out`.
pub fn encode_record(m: &Message, out: &mut Vec<u8>) {
    let payload = payload(m, VERSION);
    let len = (payload.len() as u32).to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len);
    crc.update(&payload);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&payload);
}

/// Append one record in format 1, as releases before format 2 wrote it (tests and fuzzing).
pub fn encode_record_v1(m: &Message, out: &mut Vec<u8>) {
    let payload = payload(m, 1);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
}

fn decode_payload(p: &[u8], version: u8) -> Option<Message> {
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
    if take(&mut p, 1)? != [version] {
        return None;
    }
    let id = string(&mut p)?;
    let routing_key = string(&mut p)?;
    let source = string(&mut p)?;
    let timestamp = u64::from_le_bytes(take(&mut p, 8)?.try_into().ok()?);
    let n = u32::from_le_bytes(take(&mut p, 4)?.try_into().ok()?) as usize;
    let body = take(&mut p, n)?.to_vec();
    if !p.is_empty() {
        return None;
    }
    Some(Message {
        id,
        routing_key,
        source,
        timestamp,
        body,
    })
}

fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

/// What the bytes at a position hold.
#[derive(Debug)]
pub(super) enum Decoded {
    /// A whole record, and its size.
    Record(Message, usize),
    /// The start of a record that goes on past the end of the bytes: its whole size when the
    /// header is complete.
    Incomplete(Option<usize>),
    /// Not a record.
    Invalid,
}

/// Decode the record of `version` at the start of `buf`.
pub(super) fn decode_at(buf: &[u8], version: u8) -> Decoded {
    match version {
        1 => decode_v1(buf),
        _ => decode_v2(buf),
    }
}

fn decode_v2(buf: &[u8]) -> Decoded {
    if buf.len() < MAGIC.len() {
        return if MAGIC.starts_with(buf) {
            Decoded::Incomplete(None)
        } else {
            Decoded::Invalid
        };
    }
    if buf[..MAGIC.len()] != MAGIC {
        return Decoded::Invalid;
    }
    let (Some(len), Some(crc)) = (u32_at(buf, 4), u32_at(buf, 8)) else {
        return Decoded::Incomplete(None);
    };
    if len > RECORD_MAX {
        return Decoded::Invalid;
    }
    let size = HEADER_V2 + len as usize;
    let Some(payload) = buf.get(HEADER_V2..size) else {
        return Decoded::Incomplete(Some(size));
    };
    let mut h = crc32fast::Hasher::new();
    h.update(&buf[4..8]);
    h.update(payload);
    if h.finalize() != crc {
        return Decoded::Invalid;
    }
    match decode_payload(payload, 2) {
        Some(m) => Decoded::Record(m, size),
        None => Decoded::Invalid,
    }
}

fn decode_v1(buf: &[u8]) -> Decoded {
    let (Some(len), Some(crc)) = (u32_at(buf, 0), u32_at(buf, 4)) else {
        return Decoded::Incomplete(None);
    };
    if len > RECORD_MAX {
        return Decoded::Invalid;
    }
    let size = HEADER_V1 + len as usize;
    let Some(payload) = buf.get(HEADER_V1..size) else {
        return Decoded::Incomplete(Some(size));
    };
    // Cheap checks before the CRC: a resynchronising scan tries every offset.
    if payload.first() != Some(&1) || crc32fast::hash(payload) != crc {
        return Decoded::Invalid;
    }
    match decode_payload(payload, 1) {
        Some(m) => Decoded::Record(m, size),
        None => Decoded::Invalid,
    }
}

/// Decode whole records of `version` off the front of `buf`, stopping at the first position that
/// does not hold one. Returns them with their sizes, and how the run ended.
pub(super) fn decode_records(buf: &[u8], version: u8) -> (Vec<(Message, u64)>, Decoded) {
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        if pos == buf.len() {
            return (out, Decoded::Incomplete(None));
        }
        match decode_at(&buf[pos..], version) {
            Decoded::Record(m, size) => {
                out.push((m, size as u64));
                pos += size;
            }
            other => return (out, other),
        }
    }
}

/// A region of a segment that held no valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Damage {
    pub start: u64,
    pub end: u64,
    /// Records lost in it, as far as their headers tell: at least one.
    pub records: u64,
}

/// A whole record found by [`scan`]: where it starts, its size, its message id and its
/// message's timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub offset: u64,
    pub size: u64,
    pub id: String,
    pub timestamp: u64,
}

/// What a segment's bytes hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// Record version of the segment (1 or 2; 2 when it holds no record).
    pub version: u8,
    pub records: Vec<Span>,
    pub damaged: Vec<Damage>,
    /// Bytes of a torn tail: a record cut short, or zeros, after everything else.
    pub torn: u64,
}

impl Scan {
    /// End of the last whole record or damaged region: where reading stops.
    pub fn end(&self) -> u64 {
        let records = self.records.last().map_or(0, |r| r.offset + r.size);
        let damaged = self.damaged.last().map_or(0, |d| d.end);
        records.max(damaged)
    }

    /// Bytes of whole records.
    pub fn record_bytes(&self) -> u64 {
        self.records.iter().map(|r| r.size).sum()
    }

    /// Records lost to damage (an estimate: see [`Damage::records`]).
    pub fn damaged_records(&self) -> u64 {
        self.damaged.iter().map(|d| d.records).sum()
    }
}

/// Sort `buf` (a segment's bytes) into records, damaged regions and a torn tail. The records'
/// version is found from the bytes: format 2 when any format-2 record is there, else format 1.
pub fn scan(buf: &[u8]) -> Scan {
    let v2 = scan_version(buf, VERSION);
    if !v2.records.is_empty() || buf.is_empty() {
        return v2;
    }
    let v1 = scan_version(buf, 1);
    if v1.records.is_empty() { v2 } else { v1 }
}

fn scan_version(buf: &[u8], version: u8) -> Scan {
    let mut out = Scan {
        version,
        ..Scan::default()
    };
    let mut pos = 0;
    while pos < buf.len() {
        let decoded = decode_at(&buf[pos..], version);
        if let Decoded::Record(m, size) = decoded {
            out.records.push(Span {
                offset: pos as u64,
                size: size as u64,
                id: m.id,
                timestamp: m.timestamp,
            });
            pos += size;
            continue;
        }
        match next_record(buf, pos + 1, version) {
            Some(next) => {
                out.damaged.push(Damage {
                    start: pos as u64,
                    end: next as u64,
                    records: lost_records(&buf[pos..next], version),
                });
                pos = next;
            }
            None => {
                let tail = &buf[pos..];
                let torn =
                    matches!(decoded, Decoded::Incomplete(_)) || tail.iter().all(|&b| b == 0);
                if torn {
                    out.torn = tail.len() as u64;
                } else {
                    out.damaged.push(Damage {
                        start: pos as u64,
                        end: buf.len() as u64,
                        records: lost_records(tail, version),
                    });
                }
                break;
            }
        }
    }
    out
}

/// The first position from `from` on where a whole record of `version` starts.
fn next_record(buf: &[u8], from: usize, version: u8) -> Option<usize> {
    let mut pos = from;
    while pos < buf.len() {
        if version >= 2 {
            // Only a magic can start a record.
            let at = buf[pos..].iter().position(|&b| b == MAGIC[0])?;
            pos += at;
        }
        if let Decoded::Record(..) = decode_at(&buf[pos..], version) {
            return Some(pos);
        }
        pos += 1;
    }
    None
}

/// Records a damaged region held, as far as the headers in it say: follow each declared length
/// that stays inside the region; at least one.
fn lost_records(region: &[u8], version: u8) -> u64 {
    let mut count = 0;
    let mut pos = 0;
    while pos < region.len() {
        count += 1;
        let rest = &region[pos..];
        let size = match version {
            1 => u32_at(rest, 0).map(|len| HEADER_V1 + len as usize),
            _ if rest.starts_with(&MAGIC) => u32_at(rest, 4).map(|len| HEADER_V2 + len as usize),
            _ => None,
        };
        match size {
            Some(size) if size < rest.len() => pos += size,
            _ => break,
        }
    }
    count.max(1)
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
            body: format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(200)).into_bytes(),
        }
    }

    fn segment(n: usize, encode: fn(&Message, &mut Vec<u8>)) -> (Vec<u8>, Vec<u64>) {
        let mut buf = Vec::new();
        let mut starts = Vec::new();
        for i in 0..n {
            starts.push(buf.len() as u64);
            encode(&msg(i), &mut buf);
        }
        (buf, starts)
    }

    fn ids(s: &Scan) -> Vec<String> {
        s.records.iter().map(|r| r.id.clone()).collect()
    }

    #[test]
    fn records_round_trip_and_torn_tail_is_ignored() {
        let (buf, _) = segment(3, encode_record);
        let (whole, _) = decode_records(&buf, VERSION);
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[2].0, msg(2));
        let s = scan(&buf);
        assert_eq!((s.version, s.records.len(), s.torn), (2, 3, 0));
        assert!(s.damaged.is_empty());
        // Cut inside the last record: two records and a torn tail, no damage.
        let torn = scan(&buf[..buf.len() - 3]);
        assert_eq!(torn.records.len(), 2);
        assert!(torn.damaged.is_empty());
        assert!(torn.torn > 0);
        // Zeros after the records (a write a crash cut off): torn, not damage.
        let mut zeros = buf.clone();
        zeros.extend_from_slice(&[0; 4096]);
        let z = scan(&zeros);
        assert_eq!((z.records.len(), z.torn, z.damaged.len()), (3, 4096, 0));
    }

    #[test]
    fn a_flipped_bit_loses_that_record_only() {
        let (buf, starts) = segment(10, encode_record);
        for at in [starts[4] + 20, starts[4], starts[4] + 5, starts[4] + 9] {
            let mut bad = buf.clone();
            bad[at as usize] ^= 0x10;
            let s = scan(&bad);
            let mut expected: Vec<String> = (0..10).map(|i| format!("id-{i}")).collect();
            expected.remove(4);
            assert_eq!(ids(&s), expected, "flip at {at}");
            assert_eq!(
                s.damaged,
                vec![Damage {
                    start: starts[4],
                    end: starts[5],
                    records: 1
                }]
            );
            assert_eq!(s.end(), buf.len() as u64);
        }
    }

    #[test]
    fn a_zeroed_block_across_two_records_loses_those_two() {
        let (buf, starts) = segment(10, encode_record);
        let mut bad = buf.clone();
        let at = starts[6] as usize - 30;
        bad[at..at + 64].fill(0);
        let s = scan(&bad);
        assert_eq!(s.records.len(), 8);
        assert_eq!(s.damaged.len(), 1);
        assert_eq!(s.damaged[0].start, starts[5]);
        assert_eq!(s.damaged[0].end, starts[7]);
        assert_eq!(s.damaged_records(), 2);
    }

    #[test]
    fn damage_at_the_end_is_damage_not_a_torn_tail() {
        let (buf, starts) = segment(4, encode_record);
        let mut bad = buf.clone();
        let last = bad.len() - 10;
        bad[last] ^= 1;
        let s = scan(&bad);
        assert_eq!(s.records.len(), 3);
        assert_eq!(s.torn, 0);
        assert_eq!(s.damaged.len(), 1);
        assert_eq!(
            (s.damaged[0].start, s.damaged[0].end),
            (starts[3], buf.len() as u64)
        );
    }

    #[test]
    fn format_1_segments_are_read_and_resynchronised() {
        let (buf, starts) = segment(10, encode_record_v1);
        let s = scan(&buf);
        assert_eq!((s.version, s.records.len()), (1, 10));
        let mut bad = buf.clone();
        let at = starts[3] as usize + 40;
        bad[at..at + 64].fill(0);
        let s = scan(&bad);
        assert_eq!(s.version, 1);
        assert_eq!(s.records.len(), 9);
        assert_eq!(
            (s.damaged[0].start, s.damaged[0].end),
            (starts[3], starts[4])
        );
        // Even when the first record is the damaged one.
        let mut first = buf.clone();
        first[2] = 0xff;
        let s = scan(&first);
        assert_eq!((s.version, s.records.len()), (1, 9));
    }

    #[test]
    fn a_future_record_version_is_not_read_as_a_record() {
        let mut buf = Vec::new();
        encode_record(&msg(0), &mut buf);
        // Rewrite the version byte to 3 and fix the CRC: still not a format-2 record.
        buf[HEADER_V2] = 3;
        let mut h = crc32fast::Hasher::new();
        h.update(&buf[4..8]);
        h.update(&buf[HEADER_V2..]);
        let crc = h.finalize().to_le_bytes();
        buf[8..12].copy_from_slice(&crc);
        let s = scan(&buf);
        assert!(s.records.is_empty());
        assert_eq!(s.damaged.len(), 1);
    }
}
