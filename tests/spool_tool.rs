//! `webhook-bridge spool status|list|export` through the binary, on the spool of a running bridge
//! whose broker is unreachable: what it reports matches what was spooled, and it changes nothing
//! in the directory.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::{Bridge, BridgeOptions, WEGOCOD_SECRET};

/// Every file in `dir` (recursively) with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).expect("read spool dir") {
        let entry = entry.expect("entry");
        let path = entry.path();
        let name = path.display().to_string();
        if path.is_dir() {
            out.extend(snapshot(&path));
            out.insert(name, Vec::new());
        } else {
            out.insert(name, std::fs::read(&path).expect("read spool file"));
        }
    }
    out
}

fn spool_tool(cmd: &str, dir: &Path) -> String {
    spool_tool_with(cmd, "--dir", dir)
}

/// `webhook-bridge spool CMD FLAG PATH`, FLAG being `--dir` or `--config`.
fn spool_tool_with(cmd: &str, flag: &str, path: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_webhook-bridge"))
        .args(["spool", cmd, flag])
        .arg(path)
        .output()
        .expect("run webhook-bridge spool");
    assert!(
        out.status.success(),
        "spool {cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

#[tokio::test]
async fn spool_tool_reports_the_spooled_events_of_a_running_bridge_and_changes_nothing() {
    let bridge = Bridge::start_with(BridgeOptions {
        amqp_urls: vec!["amqp://guest:guest@127.0.0.1:1/%2f".into()],
        wait_broker: false,
        ..BridgeOptions::default()
    })
    .await;
    let n = 4;
    let references: Vec<String> = (0..n).map(|i| format!("ORD-SPT-{i}")).collect();
    let sample = String::from_utf8(webhook_bridge::providers::wegocod::DELIVERED.to_vec()).unwrap();
    for reference in &references {
        let body = sample.replace("ORD-000129", reference);
        let resp = bridge
            .post_signed(
                "wegocod",
                "/webhooks/wegocod",
                WEGOCOD_SECRET,
                body.as_bytes(),
            )
            .await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.unwrap(), r#"{"spooled":1}"#);
    }
    let dir = bridge.dir.path().join("spool");
    let before = snapshot(&dir);
    assert!(before.keys().any(|k| k.ends_with(".seg")), "{before:?}");

    let status = spool_tool("status", &dir);
    assert!(
        status.contains(&format!("pending events: {n}\n")),
        "{status}"
    );
    assert!(status.contains("format: 2\n"), "{status}");
    assert!(status.contains("damaged segments: 0\n"), "{status}");
    assert!(
        status.contains("damaged regions: 0 (0 records lost)\n"),
        "{status}"
    );
    assert!(status.contains("routing keys: 1\n"), "{status}");
    assert!(
        status.contains(&format!("  wegocod.order.status_changed {n}\n")),
        "{status}"
    );
    let bytes: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("pending bytes: "))
        .and_then(|b| b.parse().ok())
        .expect("pending bytes");
    let on_disk: u64 = before
        .iter()
        .filter(|(k, _)| k.ends_with(".seg"))
        .map(|(_, v)| v.len() as u64)
        .sum();
    assert_eq!(bytes, on_disk, "{status}");
    let age: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("oldest pending: "))
        .and_then(|l| l.split_once("s ago"))
        .and_then(|(s, _)| s.parse().ok())
        .expect("oldest pending age");
    assert!(age < 120, "{status}");

    let list = spool_tool("list", &dir);
    let listed: Vec<Vec<&str>> = list.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(listed.len(), n, "{list}");
    for fields in &listed {
        assert_eq!(fields.len(), 5, "{list}");
        chrono::DateTime::parse_from_rfc3339(fields[2]).expect("RFC 3339 time");
        assert_eq!(fields[3], "wegocod.order.status_changed");
    }

    let export = spool_tool("export", &dir);
    assert_eq!(
        spool_tool_with("export", "--config", &bridge.config_path),
        export,
        "--config reads the config's [spool] dir"
    );
    let lines: Vec<serde_json::Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), n, "{export}");
    for (i, (line, reference)) in lines.iter().zip(&references).enumerate() {
        let id = line["id"].as_str().expect("id");
        assert_eq!(line["body"]["id"], id, "body is the CloudEvent: {line}");
        assert_eq!(line["routing_key"], "wegocod.order.status_changed");
        assert_eq!(line["body"]["type"], "wegocod.order.status_changed");
        assert!(line["source"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(
            line["body"].to_string().contains(reference.as_str()),
            "event {i} is the one sent with {reference}: {line}"
        );
        assert_eq!(listed[i][4], id, "list and export agree");
    }

    assert_eq!(snapshot(&dir), before, "the tool changed the spool");
    assert!(
        bridge.logs().lines().all(|l| !l.contains("ERROR")),
        "{}",
        bridge.logs()
    );
}
