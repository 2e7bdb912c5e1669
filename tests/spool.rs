//! The spool across crashes, and the dedup window: events answered `{"spooled": n}` survive a
//! SIGKILL (before or during the drain, and a torn tail), are drained in order, and a repeat of
//! an event already made durable is answered 200 without being published again.

use crate::common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use common::load::{self, metric, wait_metric};
use common::proxy::cut_off;
use common::*;

fn segments(bridge: &Bridge) -> Vec<std::path::PathBuf> {
    let mut segs: Vec<_> = std::fs::read_dir(bridge.dir.path().join("spool"))
        .expect("spool dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    segs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spooled_events_survive_sigkill_and_torn_tail_and_drain_in_order() {
    let (proxy, opts, mut bridge, mut consumer) = cut_off(|_| {}).await;

    // Sequential, so the spool order is the send order.
    let n = 300;
    let report = load::run(
        &bridge,
        "kill",
        n,
        1,
        Duration::ZERO,
        Arc::new(AtomicUsize::new(0)),
    )
    .await;
    eprintln!("before SIGKILL: {}", report.summary());
    assert_eq!(report.spooled(), n, "{}", report.summary());
    let m = bridge.metrics().await;
    assert_eq!(metric(&m, "webhook_bridge_spool_events"), Some(n as f64));
    assert!(metric(&m, "webhook_bridge_spool_bytes").unwrap_or(0.0) > 0.0);

    // A retry of a spooled event is a duplicate.
    let body = load::wegocod_body("kill-0");
    let resp = bridge
        .post_signed("wegocod", "/webhooks/wegocod", WEGOCOD_SECRET, &body)
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.text().await.unwrap(),
        r#"{"accepted":0,"duplicates":1}"#
    );

    // Crash, and leave half a record at the end of the spool, as a crash mid-write would.
    bridge.child.kill().unwrap();
    bridge.child.wait().unwrap();
    let last = segments(&bridge)
        .into_iter()
        .rfind(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0) > 0)
        .expect("a segment with data");
    let mut torn = std::fs::read(&last).unwrap();
    torn.truncate(300);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&last)
        .unwrap();
    std::io::Write::write_all(&mut f, &torn).unwrap();
    drop(f);

    // Restart with the broker still unreachable: the gauges come from what is on disk.
    bridge.restart(&opts).await;
    let m = bridge.metrics().await;
    let at_start = metric(&m, "webhook_bridge_spool_events").unwrap_or(-1.0);
    assert_eq!(
        at_start, n as f64,
        "spool_events on restart counts the whole records only"
    );
    assert!(metric(&m, "webhook_bridge_spool_bytes").unwrap_or(0.0) > 0.0);
    proxy.restore();

    let mut order = Vec::new();
    let mut seen = HashSet::new();
    while seen.len() < n {
        let Some(msg) = consumer.next(Duration::from_secs(20)).await else {
            break;
        };
        let r = msg.body["data"]["entity_id"].as_str().unwrap().to_string();
        if seen.insert(r.clone()) {
            order.push(r);
        }
    }
    eprintln!(
        "after restart: spool_events at start={at_start}, arrived distinct={}",
        seen.len()
    );
    let expected: Vec<String> = (0..n).map(|i| format!("kill-{i}")).collect();
    assert_eq!(order, expected, "every spooled event arrives, in order");
    wait_metric(
        &bridge,
        "webhook_bridge_spool_events",
        0.0,
        Duration::from_secs(10),
    )
    .await;
    assert!(
        bridge.logs().contains("torn tail"),
        "the torn tail is noticed"
    );
    bridge.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_drain_loses_nothing() {
    let (proxy, opts, mut bridge, mut consumer) = cut_off(|_| {}).await;

    let n = 2000;
    let report = load::run(
        &bridge,
        "drain",
        n,
        16,
        Duration::ZERO,
        Arc::new(AtomicUsize::new(0)),
    )
    .await;
    eprintln!("spooled: {}", report.summary());
    assert_eq!(report.spooled(), n, "{}", report.summary());

    // Broker back: the drain starts; kill the bridge once part of it has arrived.
    let restored = Instant::now();
    proxy.restore();
    let mut seen = HashSet::new();
    let mut messages = 0;
    while seen.len() < n / 5 {
        let msg = consumer
            .next(Duration::from_secs(20))
            .await
            .expect("the drain starts");
        messages += 1;
        seen.insert(msg.body["data"]["entity_id"].as_str().unwrap().to_string());
    }
    eprintln!(
        "{} arrived {:?} after the broker came back",
        seen.len(),
        restored.elapsed()
    );
    bridge.child.kill().unwrap();
    bridge.child.wait().unwrap();
    let before_kill = seen.len();
    let restarted = Instant::now();
    bridge.restart(&opts).await;
    let acked = report.acknowledged();
    messages += load::collect_into(&mut consumer, &acked, &mut seen, Duration::from_secs(20)).await;
    eprintln!(
        "killed after {before_kill} arrived; in the end distinct={} messages={messages} \
         ({:?} from restart to the last event)",
        seen.len(),
        restarted.elapsed()
    );
    assert!(acked.is_subset(&seen), "every spooled event arrives");
    wait_metric(
        &bridge,
        "webhook_bridge_spool_events",
        0.0,
        Duration::from_secs(10),
    )
    .await;
    bridge.cleanup().await;
}

#[tokio::test]
async fn duplicate_of_confirmed_event_is_answered_200_and_published_once() {
    broker_available().await;
    let bridge = Bridge::start().await;
    let mut consumer = bridge.consumer("#").await;
    let mut bodies = Vec::new();
    for _ in 0..2 {
        let resp = bridge.post_wegocod_sample().await;
        assert_eq!(resp.status(), 200);
        bodies.push(resp.text().await.unwrap());
    }
    assert_eq!(bodies[0], r#"{"accepted":1}"#);
    assert_eq!(bodies[1], r#"{"accepted":0,"duplicates":1}"#);
    consumer.take(1, Duration::from_secs(5)).await;
    consumer.expect_none(Duration::from_millis(700)).await;
    let m = bridge.metrics().await;
    assert!(
        m.contains(r#"webhook_bridge_events_total{outcome="duplicate",provider="wegocod",type="wegocod.order.status_changed"} 1"#),
        "{m}"
    );
    bridge.cleanup().await;
}

#[tokio::test]
async fn dedup_disabled_publishes_every_retry() {
    broker_available().await;
    let bridge = Bridge::start_with(BridgeOptions {
        tables: "[dedup]\nenabled = false\n".into(),
        ..BridgeOptions::default()
    })
    .await;
    let mut consumer = bridge.consumer("#").await;
    for _ in 0..2 {
        let resp = bridge.post_wegocod_sample().await;
        assert_eq!(resp.text().await.unwrap(), r#"{"accepted":1}"#);
    }
    let got = consumer.take(2, Duration::from_secs(5)).await;
    assert_eq!(got[0].message_id, got[1].message_id, "same message_id");
    bridge.cleanup().await;
}
