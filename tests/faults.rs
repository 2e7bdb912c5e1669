//! Faults between the bridge and the broker, counted end to end: every request is answered
//! before `ack_deadline`, and every event answered 2xx arrives in a consumer queue (duplicates
//! allowed). The bridge talks to RabbitMQ through a test proxy that can be cut or frozen.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::load::{self, metric, wait_metric};
use common::proxy::{Mode, Proxy};
use common::*;

const ACK_DEADLINE: Duration = Duration::from_secs(4);

fn options(proxy: &Proxy, tables: &str) -> BridgeOptions {
    BridgeOptions {
        top: "ack_deadline = \"4s\"".into(),
        amqp_urls: vec![proxy.amqp_url()],
        amqp_extra: "reconnect_backoff_max = \"1s\"\nconnect_timeout = \"1s\"".into(),
        tables: tables.into(),
        ..BridgeOptions::default()
    }
}

async fn wait_progress(progress: &AtomicUsize, at_least: usize) {
    let end = Instant::now() + Duration::from_secs(60);
    while progress.load(Ordering::Relaxed) < at_least && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Load with the link to the broker broken for `outage` in the middle: cut (connections
/// dropped, new ones refused) or frozen (nothing forwarded, nothing closed).
async fn load_across_outage(
    tag: &str,
    n: usize,
    concurrency: usize,
    interval: Duration,
    freeze: bool,
    outage: Duration,
) {
    broker_available().await;
    let proxy = Proxy::start("127.0.0.1:5672", Mode::Open).await;
    let bridge = Bridge::start_with(options(&proxy, "")).await;
    let mut consumer = bridge.consumer("wegocod.#").await;
    let progress = Arc::new(AtomicUsize::new(0));

    let breaker = {
        let progress = Arc::clone(&progress);
        let proxy = &proxy;
        let bridge = &bridge;
        async move {
            wait_progress(&progress, n / 4).await;
            if freeze {
                proxy.freeze();
            } else {
                proxy.cut();
            }
            let broken_at = progress.load(Ordering::Relaxed);
            tokio::time::sleep(outage).await;
            // Before restoring: the bridge must have noticed by itself.
            let during = bridge.metrics().await;
            proxy.restore();
            (
                broken_at,
                progress.load(Ordering::Relaxed),
                metric(&during, "webhook_bridge_amqp_connected"),
            )
        }
    };
    let (report, (broken_at, restored_at, connected_during)) = tokio::join!(
        load::run(
            &bridge,
            tag,
            n,
            concurrency,
            interval,
            Arc::clone(&progress)
        ),
        breaker
    );
    let acked = report.acknowledged();
    let started = Instant::now();
    let (seen, messages) = load::collect(&mut consumer, &acked, Duration::from_secs(20)).await;
    let missing: Vec<_> = acked.difference(&seen).take(5).collect();
    let metrics = bridge.metrics().await;
    eprintln!(
        "{tag}: {} | link broken after {broken_at} answers, restored after {restored_at} | \
         arrived distinct={} messages={} (drain finished {:?} after load) | reconnects={:?}",
        report.summary(),
        seen.len(),
        messages,
        started.elapsed(),
        metric(&metrics, "webhook_bridge_amqp_reconnects_total"),
    );

    assert_eq!(report.answers.len(), n);
    assert_eq!(
        report.count(|a| a.status.is_none()),
        0,
        "every request answered"
    );
    assert_eq!(report.server_errors(), 0, "no 5xx while the spool has room");
    assert_eq!(report.ok(), n, "every request 2xx");
    assert!(
        report.max_latency() < ACK_DEADLINE,
        "answered before ack_deadline: {:?}",
        report.max_latency()
    );
    assert!(
        restored_at < n,
        "the outage must fall inside the load (restored after {restored_at} of {n})"
    );
    assert!(
        report.spooled() > 0,
        "the outage must have sent some events to the spool"
    );
    assert_eq!(
        connected_during,
        Some(0.0),
        "amqp_connected must drop to 0 during the outage"
    );
    assert!(
        restored_at > broken_at + concurrency,
        "requests kept being answered during the outage ({broken_at} → {restored_at})"
    );
    assert!(
        missing.is_empty(),
        "acknowledged events lost, e.g. {missing:?}"
    );
    assert!(
        metric(&metrics, "webhook_bridge_amqp_reconnects_total").unwrap_or(0.0) >= 1.0,
        "{metrics}"
    );
    // The spool empties once drained.
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let m = bridge.metrics().await;
        if metric(&m, "webhook_bridge_spool_events") == Some(0.0) {
            assert_eq!(metric(&m, "webhook_bridge_amqp_connected"), Some(1.0));
            break;
        }
        assert!(Instant::now() < end, "spool did not drain:\n{m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bridge.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proxy_cut_mid_load_every_acked_event_arrives() {
    // 3000 requests paced over ~6 s, so the 3 s cut falls in the middle.
    load_across_outage(
        "cut",
        3000,
        32,
        Duration::from_millis(2),
        false,
        Duration::from_secs(3),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn silent_network_freeze_mid_load_is_detected_and_every_acked_event_arrives() {
    // Long enough for the dead link to be noticed (a publish times out, no confirm for 2 s)
    // and for requests to be spooled at once afterwards.
    load_across_outage(
        "freeze",
        3000,
        32,
        Duration::from_millis(3),
        true,
        Duration::from_secs(6),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_spool_answers_503_with_retry_after_and_loses_nothing() {
    broker_available().await;
    let proxy = Proxy::start("127.0.0.1:5672", Mode::Cut).await;
    // With its own `[spool]` table the harness adds no `dir`: give one.
    let dir = tempfile::tempdir().unwrap();
    let tables = format!(
        "[spool]\ndir = \"{}\"\nmax_bytes = \"16KiB\"\n",
        dir.path().join("spool").display()
    );
    let bridge = Bridge::start_with(BridgeOptions {
        wait_broker: false,
        ..options(&proxy, &tables)
    })
    .await;
    load::declare_exchange(&bridge.exchange).await;
    let mut consumer = bridge.consumer("wegocod.#").await;

    let progress = Arc::new(AtomicUsize::new(0));
    let report = load::run(&bridge, "full", 40, 1, Duration::ZERO, progress).await;
    eprintln!("spool full: {}", report.summary());
    let spooled = report.spooled();
    let unavailable: Vec<_> = report
        .answers
        .iter()
        .filter(|a| a.status == Some(503))
        .collect();
    assert!(spooled > 0, "some requests spooled before the spool filled");
    assert!(!unavailable.is_empty(), "a full spool must refuse");
    assert!(
        unavailable.iter().all(|a| a.retry_after),
        "503 carries Retry-After"
    );
    assert_eq!(spooled + unavailable.len(), 40, "{}", report.summary());
    assert!(report.max_latency() < ACK_DEADLINE);
    // Neither broker nor spool: not ready.
    let ready = bridge
        .client
        .get(bridge.admin_url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);

    proxy.restore();
    let acked = report.acknowledged();
    let (seen, messages) = load::collect(&mut consumer, &acked, Duration::from_secs(20)).await;
    eprintln!(
        "spool full: acknowledged={} arrived distinct={} messages={messages}",
        acked.len(),
        seen.len()
    );
    assert!(
        acked.is_subset(&seen),
        "every 200 arrives once the broker is back"
    );
    let refused: std::collections::HashSet<String> =
        unavailable.iter().map(|a| a.reference.clone()).collect();
    assert!(
        seen.is_disjoint(&refused),
        "a 503'd event is never published"
    );
    bridge.cleanup().await;
}

/// Stops the RabbitMQ app and always starts it again: on drop, so also when the test panics.
struct BrokerStopped;

impl BrokerStopped {
    fn stop() -> BrokerStopped {
        let guard = BrokerStopped;
        let status = std::process::Command::new("rabbitmqctl")
            .arg("stop_app")
            .status()
            .expect("rabbitmqctl");
        assert!(status.success(), "rabbitmqctl stop_app failed");
        guard
    }
}

impl Drop for BrokerStopped {
    fn drop(&mut self) {
        for _ in 0..3 {
            let ok = std::process::Command::new("rabbitmqctl")
                .arg("start_app")
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                let _ = std::process::Command::new("rabbitmqctl")
                    .arg("await_startup")
                    .status();
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// Disturbs everyone using the local broker, so it is run on its own, in a serial step:
/// `cargo test --test suite -- --ignored faults::broker_restart`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "stops and starts the shared RabbitMQ app; run serially"]
async fn broker_restart_mid_load_every_acked_event_arrives() {
    use lapin::options::{QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions};
    use lapin::types::{FieldTable, ShortString};
    use lapin::{Connection, ConnectionProperties};

    broker_available().await;
    let bridge = Bridge::start_with(BridgeOptions {
        amqp_extra: "reconnect_backoff_max = \"1s\"\nconnect_timeout = \"1s\"".into(),
        ..BridgeOptions::default()
    })
    .await;
    // A durable queue: it outlives the broker restart (an exclusive one would not).
    let queue = unique("wbt-restart");
    {
        let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        ch.queue_declare(
            ShortString::from(queue.as_str()),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.queue_bind(
            ShortString::from(queue.as_str()),
            ShortString::from(bridge.exchange.as_str()),
            ShortString::from("wegocod.#"),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let _ = conn.close(200, ShortString::from("bye")).await;
    }

    // Paced over ~10 s so that, usually, the load continues after the broker is back.
    let n = 2500;
    let progress = Arc::new(AtomicUsize::new(0));
    let restarter = {
        let progress = Arc::clone(&progress);
        async move {
            wait_progress(&progress, n / 4).await;
            let guard = tokio::task::spawn_blocking(BrokerStopped::stop)
                .await
                .unwrap();
            let stopped_at = progress.load(Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(2)).await;
            tokio::task::spawn_blocking(move || drop(guard))
                .await
                .unwrap();
            (stopped_at, progress.load(Ordering::Relaxed))
        }
    };
    let (report, (stopped_at, started_at)) = tokio::join!(
        load::run(
            &bridge,
            "restart",
            n,
            16,
            Duration::from_millis(4),
            Arc::clone(&progress)
        ),
        restarter
    );
    broker_available().await;
    // Reconnected by itself: the next request is confirmed by the broker again.
    bridge.wait_connected(Duration::from_secs(30)).await;
    let resp = bridge
        .post_signed(
            "wegocod",
            "/webhooks/wegocod",
            WEGOCOD_SECRET,
            &load::wegocod_body("restart-after"),
        )
        .await;
    assert_eq!(resp.text().await.unwrap(), r#"{"accepted":1}"#);
    let mut consumer = Consumer::existing(&queue).await;
    let acked = report.acknowledged();
    let (seen, messages) = load::collect(&mut consumer, &acked, Duration::from_secs(30)).await;
    eprintln!(
        "broker restart: {} | stopped after {stopped_at} answers, started after {started_at} | \
         arrived distinct={} messages={messages}",
        report.summary(),
        seen.len()
    );
    if let Ok(conn) = Connection::connect(AMQP_URL, ConnectionProperties::default()).await
        && let Ok(c) = conn.create_channel().await
    {
        let _ = c
            .queue_delete(
                ShortString::from(queue.as_str()),
                QueueDeleteOptions::default(),
            )
            .await;
    }
    assert_eq!(report.server_errors(), 0, "no 5xx while the spool has room");
    assert!(report.max_latency() < ACK_DEADLINE);
    assert!(
        report.spooled() > 0,
        "the restart must have sent events to the spool"
    );
    let missing: Vec<_> = acked.difference(&seen).take(5).collect();
    assert!(
        missing.is_empty(),
        "acknowledged events lost, e.g. {missing:?}"
    );
    bridge.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fails_over_to_the_next_url_when_the_first_is_cut() {
    broker_available().await;
    let first = Proxy::start("127.0.0.1:5672", Mode::Open).await;
    let second = Proxy::start("127.0.0.1:5672", Mode::Open).await;
    let bridge = Bridge::start_with(BridgeOptions {
        amqp_urls: vec![first.amqp_url(), second.amqp_url()],
        amqp_extra: "reconnect_backoff_max = \"1s\"\nconnect_timeout = \"1s\"".into(),
        ..BridgeOptions::default()
    })
    .await;
    let mut consumer = bridge.consumer("wegocod.#").await;
    assert_eq!(second.accepted(), 0, "the first URL is preferred");
    let before = load::run(
        &bridge,
        "fo-a",
        50,
        4,
        Duration::ZERO,
        Arc::new(AtomicUsize::new(0)),
    )
    .await;
    assert_eq!(before.count(|a| a.body.contains("\"accepted\"")), 50);

    first.cut();
    let end = Instant::now() + Duration::from_secs(10);
    while second.accepted() == 0
        || bridge
            .metrics()
            .await
            .lines()
            .all(|l| l != "webhook_bridge_amqp_connected 1")
    {
        assert!(Instant::now() < end, "no failover to the second URL");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = load::run(
        &bridge,
        "fo-b",
        50,
        4,
        Duration::ZERO,
        Arc::new(AtomicUsize::new(0)),
    )
    .await;
    eprintln!(
        "failover: before {} | after {}",
        before.summary(),
        after.summary()
    );
    assert_eq!(
        after.count(|a| a.body.contains("\"accepted\"")),
        50,
        "{}",
        after.summary()
    );
    let mut acked = before.acknowledged();
    acked.extend(after.acknowledged());
    let (seen, _) = load::collect(&mut consumer, &acked, Duration::from_secs(10)).await;
    assert!(acked.is_subset(&seen));
    bridge.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn channel_error_is_recovered_without_restart_and_the_event_is_kept() {
    use lapin::options::ExchangeDeleteOptions;
    use lapin::types::ShortString;
    use lapin::{Connection, ConnectionProperties};

    broker_available().await;
    let bridge = Bridge::start().await;
    // Delete the exchange under the bridge: its next publish gets a channel error (404).
    let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.exchange_delete(
        ShortString::from(bridge.exchange.as_str()),
        ExchangeDeleteOptions::default(),
    )
    .await
    .unwrap();
    let _ = conn.close(200, ShortString::from("bye")).await;
    // Its unrouted queue survives; the bridge re-declares the exchange when it reconnects, and
    // with no binding left the spooled event lands there through the alternate exchange.
    let mut unrouted = Consumer::existing(&format!("{}.unrouted", bridge.exchange)).await;

    let body = load::wegocod_body("chan-err");
    let resp = bridge
        .post_signed("wegocod", "/webhooks/wegocod", WEGOCOD_SECRET, &body)
        .await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert_eq!(
        text, r#"{"spooled":1}"#,
        "a channel error is not a 2xx from the broker"
    );
    let got = unrouted
        .next(Duration::from_secs(10))
        .await
        .expect("the spooled event is published after recovery");
    assert_eq!(got.body["data"]["entity_id"], "chan-err");

    // Same process, recovered: the next request is confirmed normally.
    bridge.wait_connected(Duration::from_secs(10)).await;
    let mut consumer = bridge.consumer("wegocod.#").await;
    let body = load::wegocod_body("chan-ok");
    let resp = bridge
        .post_signed("wegocod", "/webhooks/wegocod", WEGOCOD_SECRET, &body)
        .await;
    assert_eq!(resp.text().await.unwrap(), r#"{"accepted":1}"#);
    let got = consumer
        .next(Duration::from_secs(5))
        .await
        .expect("arrives");
    assert_eq!(got.body["data"]["entity_id"], "chan-ok");
    let m = bridge.metrics().await;
    assert!(
        metric(&m, "webhook_bridge_amqp_reconnects_total").unwrap_or(0.0) >= 1.0,
        "{m}"
    );
    bridge.cleanup().await;
}

/// Sets RabbitMQ's memory high watermark to 0, which raises the memory alarm at once: the
/// broker sends `connection.blocked` to publishing connections and stops reading their
/// publishes. Restores the previous watermark on drop, so also when the test panics.
struct MemoryAlarm {
    previous: String,
}

impl MemoryAlarm {
    fn raise() -> MemoryAlarm {
        let out = std::process::Command::new("rabbitmqctl")
            .args(["eval", "vm_memory_monitor:get_vm_memory_high_watermark()."])
            .output()
            .expect("rabbitmqctl");
        let previous = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            previous.parse::<f64>().is_ok_and(|w| w > 0.0),
            "unexpected watermark {previous:?}"
        );
        let alarm = MemoryAlarm { previous };
        alarm.set("0");
        alarm
    }

    fn set(&self, value: &str) {
        let status = std::process::Command::new("rabbitmqctl")
            .args(["set_vm_memory_high_watermark", value])
            .status()
            .expect("rabbitmqctl");
        assert!(status.success(), "set_vm_memory_high_watermark {value}");
    }
}

impl Drop for MemoryAlarm {
    fn drop(&mut self) {
        self.set(&self.previous);
    }
}

/// A broker resource alarm (`connection.blocked`) is not a dead link: every webhook is still
/// answered 200 at once from the spool instead of waiting out its deadline, the bridge does
/// not reconnect, and when the alarm clears the spool drains and every acknowledged event
/// arrives. Disturbs every publisher on the local broker, so it runs in the serial step.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "raises the shared RabbitMQ's memory alarm; run serially"]
async fn broker_memory_alarm_spools_at_once_and_drains_after() {
    broker_available().await;
    let bridge = Bridge::start().await;
    let mut consumer = bridge.consumer("wegocod.#").await;
    let before = load::run(&bridge, "alarm-a", 20, 4, Duration::ZERO, Arc::default()).await;
    assert_eq!(before.count(|a| a.body.contains("\"accepted\"")), 20);

    let alarm = tokio::task::spawn_blocking(MemoryAlarm::raise)
        .await
        .unwrap();
    let during = load::run(&bridge, "alarm-b", 300, 8, Duration::ZERO, Arc::default()).await;
    let m = bridge.metrics().await;
    eprintln!("memory alarm: {}", during.summary());
    assert_eq!(during.ok(), 300, "{}", during.summary());
    assert_eq!(during.spooled(), 300, "nothing confirmed while blocked");
    assert_eq!(metric(&m, "webhook_bridge_amqp_blocked"), Some(1.0), "{m}");
    // Only the requests in flight when the block arrived waited for it; the rest were spooled
    // without touching the broker.
    let slow = during.count(|a| a.latency > Duration::from_millis(500));
    assert!(
        slow <= 8,
        "{slow} requests took over 500 ms: {}",
        during.summary()
    );
    assert!(
        during.max_latency() < Duration::from_secs(2),
        "{}",
        during.summary()
    );

    tokio::task::spawn_blocking(move || drop(alarm))
        .await
        .unwrap();
    wait_metric(
        &bridge,
        "webhook_bridge_amqp_blocked",
        0.0,
        Duration::from_secs(20),
    )
    .await;
    wait_metric(
        &bridge,
        "webhook_bridge_spool_events",
        0.0,
        Duration::from_secs(30),
    )
    .await;
    let after = load::run(&bridge, "alarm-c", 20, 4, Duration::ZERO, Arc::default()).await;
    assert_eq!(after.count(|a| a.body.contains("\"accepted\"")), 20);

    let acked: std::collections::HashSet<String> = [&before, &during, &after]
        .iter()
        .flat_map(|r| r.acknowledged())
        .collect();
    let (seen, messages) = load::collect(&mut consumer, &acked, Duration::from_secs(10)).await;
    let missing: Vec<_> = acked.difference(&seen).take(5).collect();
    assert!(
        missing.is_empty(),
        "acknowledged events lost, e.g. {missing:?}"
    );
    eprintln!(
        "memory alarm: {} acknowledged, {messages} messages arrived",
        acked.len()
    );
    let m = bridge.metrics().await;
    assert_eq!(
        metric(&m, "webhook_bridge_amqp_reconnects_total"),
        Some(0.0),
        "a blocked connection is not a dead one:\n{m}"
    );
    bridge.cleanup().await;
}
