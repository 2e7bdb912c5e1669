//! The spool record decoder. Two properties, on every input:
//! - any bytes, read as a segment: the scan never panics and accounts for every byte, as whole
//!   records, damaged regions and a torn tail, in order and without overlap;
//! - records built from the input (format 2, or format 1 when the first byte is odd), then
//!   damaged where the input says (zeroed, inverted or one bit flipped): every record whose bytes
//!   the damage did not touch is found again, in order, and nothing else is.

use webhook_bridge::message::Message;
use webhook_bridge::spool::record::{Scan, encode_record, encode_record_v1, scan};

/// Records, damage and torn tail tile `len` bytes.
fn check_tiling(s: &Scan, len: usize) {
    let mut pieces: Vec<(u64, u64)> = s
        .records
        .iter()
        .map(|r| (r.offset, r.offset + r.size))
        .chain(s.damaged.iter().map(|d| (d.start, d.end)))
        .collect();
    pieces.sort();
    let mut at = 0;
    for (start, end) in pieces {
        assert_eq!(start, at, "gap or overlap at {at}");
        assert!(end > start);
        at = end;
    }
    assert_eq!(at, s.end());
    assert_eq!(at + s.torn, len as u64, "every byte accounted for");
    assert!(s.damaged.iter().all(|d| d.records >= 1));
}

/// One input.
pub fn run(data: &[u8]) {
    check_tiling(&scan(data), data.len());

    let [ctl, at_hi, at_lo, dlen, rest @ ..] = data else {
        return;
    };
    let messages: Vec<Message> = rest
        .chunks(97)
        .enumerate()
        .map(|(i, chunk)| Message {
            id: format!("id-{i}"),
            routing_key: "fuzz.order.status_changed".into(),
            source: "webhook-bridge/fuzz".into(),
            timestamp: u64::from(*ctl) << 32 | i as u64,
            // Bodies are JSON, so UTF-8, as in the bridge.
            body: String::from_utf8_lossy(chunk).into_owned().into_bytes(),
        })
        .collect();
    let mut buf = Vec::new();
    let mut spans = Vec::new();
    for m in &messages {
        let start = buf.len();
        if ctl & 1 == 1 {
            encode_record_v1(m, &mut buf);
        } else {
            encode_record(m, &mut buf);
        }
        spans.push((start, buf.len(), m.id.clone()));
    }
    let clean = scan(&buf);
    let all: Vec<String> = clean.records.iter().map(|r| r.id.clone()).collect();
    let ids: Vec<String> = spans.iter().map(|(_, _, id)| id.clone()).collect();
    assert_eq!(all, ids, "undamaged records read back");
    assert!(clean.damaged.is_empty() && clean.torn == 0);
    if buf.is_empty() {
        return;
    }

    let at = (usize::from(*at_hi) << 8 | usize::from(*at_lo)) % buf.len();
    let end = (at + 1 + usize::from(*dlen % 64)).min(buf.len());
    match ctl >> 1 & 3 {
        0 => buf[at..end].fill(0),
        1 => buf[at..end].iter_mut().for_each(|b| *b = !*b),
        _ => buf[at] ^= 1 << (ctl >> 3 & 7),
    }
    let damaged = scan(&buf);
    check_tiling(&damaged, buf.len());
    let found: Vec<String> = damaged.records.iter().map(|r| r.id.clone()).collect();
    let untouched: Vec<String> = spans
        .iter()
        .filter(|(s, e, _)| *e <= at || *s >= end)
        .map(|(_, _, id)| id.clone())
        .collect();
    assert!(
        found.iter().all(|id| ids.contains(id)),
        "no record that was not written"
    );
    let kept: Vec<&String> = found.iter().filter(|id| untouched.contains(id)).collect();
    assert_eq!(
        kept.len(),
        untouched.len(),
        "every record the damage did not touch is found: {found:?} vs {untouched:?}"
    );
}
