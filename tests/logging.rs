//! Logs: one structured line per request, and never a body, secret, signature, token or PII —
//! even with `RUST_LOG=trace`, which also turns on the AMQP client's own logging.

use crate::common;

use std::time::Duration;

use common::load::metric;
use common::*;
use serde_json::Value;

/// Strings that were sent to the bridge and must not come back out in its logs.
fn forbidden(signature: &str) -> Vec<String> {
    [
        // PII of the WeGoCOD sample.
        "Karim Mansouri",
        "Mansouri",
        "+212661234567",
        "212661234567",
        "123 Bd Mohammed V",
        "Mohammed V",
        "Call before delivery",
        // Secrets and tokens.
        MODEXPRESS_SECRET,
        WEGOCOD_SECRET,
        PEDDLER_SECRET,
        ISENDU_TOKEN,
        ISENDU_API_SECRET,
        MAILSHIP_TOKEN,
        // Query string of the unknown path.
        "sk_live_FAKE_0000",
        "hunter2-fake",
        // The broker password as it appears in the URL.
        "guest:guest",
        ":guest@",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([signature.to_string()])
    .collect()
}

/// Send the traffic whose secrets and PII must stay out of the logs; returns the valid WeGoCOD
/// signature that was sent.
async fn send_sensitive_traffic(bridge: &Bridge) -> String {
    let (path, headers) = signed_request(
        "wegocod",
        "/webhooks/wegocod",
        WEGOCOD_SECRET,
        webhook_bridge::providers::wegocod::DELIVERED,
    );
    let signature = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("x-webhook-signature"))
        .map(|(_, v)| v.clone())
        .expect("signature header");
    let resp = bridge
        .post(
            &path,
            &headers,
            webhook_bridge::providers::wegocod::DELIVERED,
        )
        .await;
    assert_eq!(resp.status(), 200);

    let resp = bridge
        .post_signed(
            "modexpress",
            "/webhooks/modexpress",
            MODEXPRESS_SECRET,
            webhook_bridge::providers::modexpress::IN_PROGRESS,
        )
        .await;
    assert_eq!(resp.status(), 200);

    // Valid signature, tampered body that still carries the PII.
    let tampered =
        String::from_utf8_lossy(webhook_bridge::providers::wegocod::DELIVERED).replace("1799", "1");
    let resp = bridge.post(&path, &headers, tampered.as_bytes()).await;
    assert_eq!(resp.status(), 401);

    let resp = bridge
        .post_signed(
            "peddler",
            "/webhooks/peddler",
            PEDDLER_SECRET,
            webhook_bridge::providers::peddler::CONFIRMED,
        )
        .await;
    assert_eq!(resp.status(), 200);

    // Path tokens: right and wrong.
    let resp = bridge
        .post_signed(
            "isendu",
            "/webhooks/isendu",
            ISENDU_TOKEN,
            webhook_bridge::providers::isendu::BATCH,
        )
        .await;
    assert_eq!(resp.status(), 200);
    let resp = bridge
        .post(
            &format!("/webhooks/mailship/{MAILSHIP_TOKEN}-wrong"),
            &[],
            webhook_bridge::providers::mailship::EXPEDITION_STATUS,
        )
        .await;
    assert_eq!(resp.status(), 401);

    let resp = bridge
        .post(
            "/webhooks/nope?token=sk_live_FAKE_0000&password=hunter2-fake",
            &[(
                "authorization".into(),
                format!("Bearer {MODEXPRESS_SECRET}"),
            )],
            webhook_bridge::providers::wegocod::DELIVERED,
        )
        .await;
    assert_eq!(resp.status(), 404);
    signature
}

#[tokio::test]
async fn trace_level_logs_carry_no_bodies_secrets_signatures_or_pii() {
    broker_available().await;
    let bridge = Bridge::start_with(BridgeOptions {
        env: vec![("RUST_LOG".into(), "trace".into())],
        ..BridgeOptions::default()
    })
    .await;
    let mut q = bridge.consumer("#").await;
    let signature = send_sensitive_traffic(&bridge).await;
    // Every accepted event went through the broker (and so through lapin's logging).
    let got = q.take(4, Duration::from_secs(10)).await;
    assert!(
        got.iter()
            .any(|m| m.raw.windows(14).any(|w| w == b"Karim Mansouri")),
        "the PII is in the published payload, as it should be"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs = bridge.logs();
    // The filter really was at trace: debug lines of the bridge and of lapin are there.
    assert!(logs.contains("\"level\":\"DEBUG\""), "{logs}");
    assert!(logs.contains("authentication failed"), "{logs}");
    assert!(
        logs.contains("\"target\":\"lapin"),
        "lapin logs captured:\n{logs}"
    );
    for s in forbidden(&signature) {
        assert!(!logs.contains(&s), "log leaks {s:?}:\n{logs}");
    }
    // The broker credentials appear only in redacted form.
    assert_eq!(
        logs.matches("guest").count(),
        logs.matches("guest:***@").count(),
        "{logs}"
    );
    // lapin's trace output prints incoming AMQP frames with `Debug`, which for a returned
    // message is its body (the provider payload) as bytes: it must be capped below trace.
    let lapin_trace = logs
        .lines()
        .filter(|l| l.contains("\"level\":\"TRACE\"") && l.contains("\"target\":\"lapin"))
        .count();
    assert_eq!(lapin_trace, 0, "lapin trace lines were logged:\n{logs}");
    // No raw request bytes either: nothing that looks like the sample's JSON.
    assert!(
        !logs.contains("order.status_updated\\\",\\\"timestamp"),
        "{logs}"
    );
    assert!(!logs.contains("\"customer\""), "{logs}");
    bridge.cleanup().await;
}

#[tokio::test]
async fn one_json_line_per_request_with_id_endpoint_provider_outcome_events_latency() {
    broker_available().await;
    let bridge = Bridge::start().await;
    let _signature = send_sensitive_traffic(&bridge).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs = bridge.logs();
    let lines: Vec<Value> = logs
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|v| v["message"] == "request")
        .collect();
    let summary: Vec<(String, String, String, u64)> = lines
        .iter()
        .map(|v| {
            assert!(
                v["request_id"].as_str().is_some_and(|s| s.len() >= 8),
                "{v}"
            );
            assert!(v["latency_ms"].as_f64().is_some(), "{v}");
            assert_eq!(v["level"], "INFO", "{v}");
            (
                v["endpoint"].as_str().unwrap_or_default().to_string(),
                v["provider"].as_str().unwrap_or_default().to_string(),
                v["outcome"].as_str().unwrap_or_default().to_string(),
                v["events"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect();
    let isendu_events = summary
        .iter()
        .find(|s| s.0 == "isendu-it")
        .map(|s| s.3)
        .unwrap_or(0);
    assert!(isendu_events >= 1, "{summary:?}");
    let s = |e: &str, p: &str, o: &str, n: u64| (e.to_string(), p.to_string(), o.to_string(), n);
    assert_eq!(
        summary,
        vec![
            s("wegocod-ma", "wegocod", "accepted", 1),
            s("modexpress-main", "modexpress", "accepted", 1),
            s("wegocod-ma", "wegocod", "unauthorized", 0),
            s("peddler-nl", "peddler", "accepted", 1),
            s("isendu-it", "isendu", "accepted", isendu_events),
            s("mailship-cz", "mailship", "unauthorized", 0),
            s("none", "none", "not_found", 0),
        ]
    );
    // The caller's request id is kept (and echoed) when it is sane.
    let resp = bridge
        .client
        .post(bridge.url("/webhooks/nope"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "abc-123");
    bridge.cleanup().await;
}

#[tokio::test]
async fn text_format_is_human_readable_and_also_clean() {
    broker_available().await;
    let bridge = Bridge::start_with(BridgeOptions {
        log_format: "text",
        env: vec![("RUST_LOG".into(), "trace".into())],
        ..BridgeOptions::default()
    })
    .await;
    let signature = send_sensitive_traffic(&bridge).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs = bridge.logs();
    assert!(
        logs.lines().all(|l| !l.starts_with('{')),
        "text, not JSON:\n{logs}"
    );
    assert!(
        logs.lines().any(|l| l.contains("request")
            && l.contains("endpoint=\"wegocod-ma\"")
            && l.contains("outcome=\"accepted\"")),
        "{logs}"
    );
    for s in forbidden(&signature) {
        assert!(!logs.contains(&s), "log leaks {s:?}:\n{logs}");
    }
    bridge.cleanup().await;
}

/// A log collector that stops reading (stderr a pipe nobody drains, as when a node's log agent
/// stalls) must not stall webhooks: request threads never write to stderr themselves, lines
/// beyond the log writer's queue are dropped and counted, every request is still answered, a
/// webhook is still confirmed, and SIGTERM still exits promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_log_reader_costs_log_lines_never_requests() {
    use futures_util::StreamExt;

    broker_available().await;
    let mut bridge = Bridge::start_with(BridgeOptions {
        stderr_unread: true,
        ..BridgeOptions::default()
    })
    .await;
    // One log line each: more than the pipe (64 KiB, a few hundred lines) and the writer's
    // queue hold together.
    let requests = webhook_bridge::logging::BUFFERED_LINES + 4000;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let url = bridge.url("/no-such-endpoint");
    let started = std::time::Instant::now();
    let answered = futures_util::stream::iter(0..requests)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            async move { client.get(url).send().await.map(|r| r.status().as_u16()) }
        })
        .buffer_unordered(32)
        .fold(0usize, |n, r| async move {
            assert_eq!(r.ok(), Some(404), "every request is answered");
            n + 1
        })
        .await;
    assert_eq!(answered, requests);
    let elapsed = started.elapsed();

    let mut q = bridge.consumer("#").await;
    let r = bridge.post_wegocod_sample().await;
    assert_eq!(r.status(), 200);
    assert!(q.next(Duration::from_secs(5)).await.is_some(), "published");

    let metrics = bridge.metrics().await;
    let dropped = metric(&metrics, "webhook_bridge_log_lines_dropped_total").unwrap_or(0.0);
    assert!(
        dropped >= 1000.0 && dropped <= requests as f64 + 10.0,
        "dropped {dropped} of {requests} lines in {elapsed:?}"
    );

    let stopping = std::time::Instant::now();
    let status = bridge.terminate();
    assert!(status.success(), "{status:?}");
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "exit took {:?} with stderr stuck",
        stopping.elapsed()
    );
    bridge.cleanup().await;
}
