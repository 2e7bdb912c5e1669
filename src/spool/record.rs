//! The record format: `len: u32 LE | crc32(payload): u32 LE | payload`, the payload being a
//! version byte, the message id, routing key and source (each `u16` length + UTF-8), the
//! timestamp (`u64` LE) and the body (`u32` length + bytes). Only whole, checksummed records
//! count: a tail torn by a crash reads as the end of the segment.

use crate::message::Message;

/// Records larger than this are considered corrupt when read back.
pub(super) const RECORD_MAX: u32 = 64 * 1024 * 1024;
/// Bytes before a record's payload: its length and checksum.
pub(super) const HEADER: u64 = 8;
/// The payload's first byte; a reader meets an unknown version as the end of the segment.
pub(super) const FORMAT_VERSION: u8 = 1;

fn put_str(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    let n = u16::try_from(b.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&b[..usize::from(n)]);
}

/// `m` can be written as a record that reads back whole: every string within its `u16` length
/// and the payload within [`RECORD_MAX`].
pub(super) fn fits_in_record(m: &Message) -> bool {
    let strings = [&m.id, &m.routing_key, &m.source];
    strings.iter().all(|s| s.len() <= usize::from(u16::MAX))
        && 1 + strings.iter().map(|s| 2 + s.len()).sum::<usize>() + 8 + 4 + m.body.len()
            <= RECORD_MAX as usize
}

/// Append one record (header + payload) for `m` to `out`.
pub(super) fn encode_record(m: &Message, out: &mut Vec<u8>) {
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
pub(super) fn decode_records(buf: &[u8]) -> Vec<(Message, u64)> {
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
