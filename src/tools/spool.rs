//! `webhook-bridge spool status|list|export --dir DIR`: what a spool directory holds, read
//! offline and safely next to a running bridge (through [`crate::spool::inspect`], which takes
//! no lock and changes nothing).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use chrono::{DateTime, Utc};

use super::{ToolError, printable};
use crate::message::Message;
use crate::spool::{Inspection, inspect};

/// `timestamp` (seconds since the epoch) in RFC 3339, UTC.
fn rfc3339(timestamp: u64) -> String {
    i64::try_from(timestamp)
        .ok()
        .and_then(|t| DateTime::<Utc>::from_timestamp(t, 0))
        .map_or_else(|| timestamp.to_string(), |t| t.to_rfc3339())
}

/// The summary `spool status` prints; `now` in seconds since the epoch.
pub fn status_report(dir: &Path, ins: &Inspection, now: u64) -> String {
    let mut out = String::new();
    let format = ins
        .format
        .map_or_else(|| "1 (no format file)".to_string(), |f| f.to_string());
    out.push_str(&format!("spool: {}\n", dir.display()));
    out.push_str(&format!("format: {format}\n"));
    out.push_str(&format!(
        "cursor: segment {} offset {}\n",
        ins.cursor.segment, ins.cursor.offset
    ));
    out.push_str(&format!("pending events: {}\n", ins.pending.len()));
    out.push_str(&format!("pending bytes: {}\n", ins.pending_bytes()));
    match ins.pending.iter().map(|r| r.message.timestamp).min() {
        Some(oldest) => out.push_str(&format!(
            "oldest pending: {}s ago ({})\n",
            now.saturating_sub(oldest),
            rfc3339(oldest)
        )),
        None => out.push_str("oldest pending: -\n"),
    }
    let mut keys: BTreeMap<&str, u64> = BTreeMap::new();
    for r in &ins.pending {
        *keys.entry(r.message.routing_key.as_str()).or_default() += 1;
    }
    out.push_str(&format!("segments: {}\n", ins.segments.len()));
    out.push_str(&format!("damaged segments: {}\n", ins.damaged_files.len()));
    for f in &ins.damaged_files {
        out.push_str(&format!("  {}\n", f.display()));
    }
    let regions: usize = ins.segments.iter().map(|s| s.damaged.len()).sum();
    out.push_str(&format!(
        "damaged regions: {regions} ({} records lost)\n",
        ins.damaged_records()
    ));
    for s in &ins.segments {
        for d in &s.damaged {
            out.push_str(&format!(
                "  segment {} bytes {}..{} ({} records)\n",
                s.id, d.start, d.end, d.records
            ));
        }
    }
    out.push_str(&format!("routing keys: {}\n", keys.len()));
    for (key, n) in keys {
        out.push_str(&format!("  {} {n}\n", printable(key)));
    }
    out
}

/// `spool status`: pending events and bytes, the oldest one's age, counts per routing key,
/// damage, the format.
pub fn status(dir: &Path, mut out: impl Write) -> Result<(), ToolError> {
    let ins = inspect(dir)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    out.write_all(status_report(dir, &ins, now).as_bytes())?;
    Ok(())
}

/// `spool list`: one line per pending record: segment, offset, time, routing key, message id.
pub fn list(dir: &Path, mut out: impl Write) -> Result<(), ToolError> {
    let ins = inspect(dir)?;
    for r in &ins.pending {
        writeln!(
            out,
            "{:020} {} {} {} {}",
            r.segment,
            r.offset,
            rfc3339(r.message.timestamp),
            printable(&r.message.routing_key),
            printable(&r.message.id)
        )?;
    }
    Ok(())
}

/// One `spool export` line: the message with its body as JSON (as a string when it is not).
pub fn export_line(m: &Message) -> String {
    let body = serde_json::from_slice::<serde_json::Value>(&m.body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&m.body).into()));
    serde_json::json!({
        "id": m.id,
        "routing_key": m.routing_key,
        "source": m.source,
        "timestamp": rfc3339(m.timestamp),
        "body": body,
    })
    .to_string()
}

/// `spool export`: JSON lines, one per pending record, in the order the bridge sends them.
pub fn export(dir: &Path, mut out: impl Write) -> Result<(), ToolError> {
    let ins = inspect(dir)?;
    for r in &ins.pending {
        writeln!(out, "{}", export_line(&r.message))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(body: &[u8]) -> Message {
        Message {
            id: "id-1".into(),
            routing_key: "p.order.created".into(),
            source: "webhook-bridge/p/e".into(),
            timestamp: 1_700_000_000,
            body: body.to_vec(),
        }
    }

    #[test]
    fn export_parses_a_json_body_and_keeps_any_other_as_a_string() {
        let line: serde_json::Value =
            serde_json::from_str(&export_line(&msg(br#"{"id":"id-1","n":1}"#))).unwrap();
        assert_eq!(line["id"], "id-1");
        assert_eq!(line["timestamp"], "2023-11-14T22:13:20+00:00");
        assert_eq!(line["body"]["n"], 1);
        let line: serde_json::Value =
            serde_json::from_str(&export_line(&msg(b"not json"))).unwrap();
        assert_eq!(line["body"], "not json");
    }
}
