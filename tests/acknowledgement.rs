//! docs/contract.md §6.1, row by row: what each situation is answered, and that nothing unauthenticated or
//! malformed is ever published.

use crate::common;

use std::time::Duration;

use common::*;

const QUIET: Duration = Duration::from_millis(700);

/// (name, path, headers, body)
type Case = (&'static str, String, Vec<(String, String)>, Vec<u8>);

fn sig_headers(sig: &str) -> Vec<(String, String)> {
    vec![
        ("x-webhook-signature".into(), sig.into()),
        ("content-type".into(), "application/json".into()),
    ]
}

#[tokio::test]
async fn bad_credentials_get_401_with_generic_body_and_publish_nothing() {
    broker_available().await;
    let bridge = Bridge::start().await;
    let mut q = bridge.consumer("#").await;
    let body = webhook_bridge::providers::wegocod::DELIVERED;
    let (_, good) = signed_request("wegocod", "/webhooks/wegocod", WEGOCOD_SECRET, body);
    let good_sig = good[0].1.clone();
    let tampered = String::from_utf8_lossy(body).replace("1799", "1");
    let cases: Vec<Case> = vec![
        (
            "missing signature",
            "/webhooks/wegocod".into(),
            vec![],
            body.to_vec(),
        ),
        (
            "empty signature",
            "/webhooks/wegocod".into(),
            sig_headers(""),
            body.to_vec(),
        ),
        (
            "garbage signature",
            "/webhooks/wegocod".into(),
            sig_headers("zz-not-hex"),
            body.to_vec(),
        ),
        (
            "truncated signature",
            "/webhooks/wegocod".into(),
            sig_headers(&good_sig[..32]),
            body.to_vec(),
        ),
        (
            "wrong secret",
            "/webhooks/wegocod".into(),
            signed_request("wegocod", "/", "other", body).1,
            body.to_vec(),
        ),
        (
            "valid signature, tampered body",
            "/webhooks/wegocod".into(),
            sig_headers(&good_sig),
            tampered.into_bytes(),
        ),
        (
            "bearer missing",
            "/webhooks/modexpress".into(),
            vec![],
            webhook_bridge::providers::modexpress::IN_PROGRESS.to_vec(),
        ),
        (
            "bearer wrong",
            "/webhooks/modexpress".into(),
            vec![("authorization".into(), "Bearer nope".into())],
            webhook_bridge::providers::modexpress::IN_PROGRESS.to_vec(),
        ),
        (
            "bearer as basic",
            "/webhooks/modexpress".into(),
            vec![("authorization".into(), format!("Basic {MODEXPRESS_SECRET}"))],
            webhook_bridge::providers::modexpress::IN_PROGRESS.to_vec(),
        ),
        (
            "peddler token wrong",
            "/webhooks/peddler".into(),
            vec![("x-webhook-shared-token".into(), "nope".into())],
            webhook_bridge::providers::peddler::CONFIRMED.to_vec(),
        ),
        (
            "peddler token prefix",
            "/webhooks/peddler".into(),
            vec![("x-webhook-shared-token".into(), PEDDLER_SECRET[..5].into())],
            webhook_bridge::providers::peddler::CONFIRMED.to_vec(),
        ),
    ];
    for (name, path, headers, body) in cases {
        let resp = bridge.post(&path, &headers, &body).await;
        assert_eq!(resp.status(), 401, "{name}");
        assert_eq!(
            resp.text().await.unwrap(),
            r#"{"error":"unauthorized"}"#,
            "{name}"
        );
    }
    q.expect_none(QUIET).await;
    let metrics = bridge.metrics().await;
    assert!(
        metrics.contains(r#"webhook_bridge_requests_total{endpoint="wegocod-ma",outcome="unauthorized",provider="wegocod"} 6"#),
        "{metrics}"
    );
    bridge.cleanup().await;
}

#[tokio::test]
async fn ip_outside_allowlist_gets_403() {
    broker_available().await;
    let bridge = Bridge::start_with(BridgeOptions {
        endpoints: format!(
            "[[endpoint]]\nname = \"peddler-locked\"\nprovider = \"peddler\"\npath = \"/webhooks/peddler\"\nsecret = \"{PEDDLER_SECRET}\"\nallow_ips = [\"203.0.113.0/24\"]\n\
             [[endpoint]]\nname = \"peddler-open\"\nprovider = \"peddler\"\npath = \"/webhooks/peddler-local\"\nsecret = \"{PEDDLER_SECRET}\"\nallow_ips = [\"127.0.0.1/32\"]\n"
        ),
        ..BridgeOptions::default()
    })
    .await;
    let mut q = bridge.consumer("#").await;
    // A forged X-Forwarded-For from an untrusted peer must not help.
    let mut headers = signed_request(
        "peddler",
        "/",
        PEDDLER_SECRET,
        webhook_bridge::providers::peddler::CONFIRMED,
    )
    .1;
    headers.push(("x-forwarded-for".into(), "203.0.113.9".into()));
    let resp = bridge
        .post(
            "/webhooks/peddler",
            &headers,
            webhook_bridge::providers::peddler::CONFIRMED,
        )
        .await;
    assert_eq!(resp.status(), 403);
    assert_eq!(
        resp.text().await.unwrap_or_default(),
        r#"{"error":"forbidden"}"#,
        "a generic body: nothing about the rule or the address"
    );
    q.expect_none(QUIET).await;
    let resp = bridge
        .post(
            "/webhooks/peddler-local",
            &headers,
            webhook_bridge::providers::peddler::CONFIRMED,
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert!(q.next(Duration::from_secs(10)).await.is_some());
    bridge.cleanup().await;
}

#[tokio::test]
async fn unknown_path_is_404_and_wrong_method_is_405() {
    broker_available().await;
    let bridge = Bridge::start().await;
    let mut q = bridge.consumer("#").await;
    let resp = bridge.post("/webhooks/nope", &[], b"{}").await;
    assert_eq!(resp.status(), 404);
    let resp = bridge
        .client
        .get(bridge.url("/webhooks/wegocod"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "POST");
    let resp = bridge
        .client
        .put(bridge.url("/webhooks/peddler"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    q.expect_none(QUIET).await;
    bridge.cleanup().await;
}

#[tokio::test]
async fn body_over_max_body_is_413_whether_declared_or_streamed() {
    broker_available().await;
    let bridge = Bridge::start_with(BridgeOptions {
        top: "max_body = \"4KiB\"".into(),
        ..BridgeOptions::default()
    })
    .await;
    let mut q = bridge.consumer("#").await;
    let big = format!(
        "{{\"id\":\"x\",\"status\":\"DELIVERED\",\"pad\":\"{}\"}}",
        "a".repeat(8 * 1024)
    );
    let (path, headers) = signed_request(
        "peddler",
        "/webhooks/peddler",
        PEDDLER_SECRET,
        big.as_bytes(),
    );
    let resp = bridge.post(&path, &headers, big.as_bytes()).await;
    assert_eq!(resp.status(), 413);
    // Chunked: no Content-Length, the limit is enforced while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big
        .as_bytes()
        .chunks(1024)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let mut req = bridge
        .client
        .post(bridge.url(&path))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )));
    for (k, v) in &headers {
        req = req.header(k, v);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 413);
    q.expect_none(QUIET).await;
    bridge.cleanup().await;
}

#[tokio::test]
async fn authenticated_non_json_is_400_and_not_published() {
    broker_available().await;
    let bridge = Bridge::start().await;
    let mut q = bridge.consumer("#").await;
    for body in [&b"not json"[..], b"{\"truncated\": ", b"", b"\xff\xfe{}"] {
        let resp = bridge
            .post_signed("wegocod", "/webhooks/wegocod", WEGOCOD_SECRET, body)
            .await;
        assert_eq!(resp.status(), 400, "{:?}", String::from_utf8_lossy(body));
    }
    q.expect_none(QUIET).await;
    bridge.cleanup().await;
}

#[tokio::test]
async fn broker_unreachable_without_spool_is_503_with_retry_after_within_deadline() {
    let dead = free_port();
    let bridge = Bridge::start_with(BridgeOptions {
        top: "ack_deadline = \"1500ms\"".into(),
        amqp_urls: vec![format!("amqp://guest:guest@127.0.0.1:{dead}/%2f")],
        tables: "[spool]\nenabled = false\n".into(),
        wait_ready: false,
        ..BridgeOptions::default()
    })
    .await;
    let ready = bridge
        .client
        .get(bridge.admin_url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503, "not ready without broker or spool");
    let started = std::time::Instant::now();
    let resp = bridge.post_wegocod_sample().await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "answered within ack_deadline"
    );
    let metrics = bridge.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "webhook_bridge_amqp_connected 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn health_ready_and_metrics_are_served_on_the_admin_port() {
    broker_available().await;
    let bridge = Bridge::start().await;
    let r = bridge
        .client
        .get(bridge.admin_url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = bridge
        .client
        .get(bridge.admin_url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let resp = bridge.post_wegocod_sample().await;
    assert_eq!(resp.status(), 200);
    let m = bridge.metrics().await;
    assert!(
        m.lines().any(|l| l == "webhook_bridge_amqp_connected 1"),
        "{m}"
    );
    assert!(m.contains(&format!(
        "webhook_bridge_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    )));
    assert!(m.contains(r#"webhook_bridge_requests_total{endpoint="wegocod-ma",outcome="accepted",provider="wegocod"} 1"#), "{m}");
    assert!(m.contains(r#"webhook_bridge_events_total{outcome="published",provider="wegocod",type="wegocod.order.status_changed"} 1"#), "{m}");
    assert!(m.contains("webhook_bridge_request_duration_seconds_count{endpoint=\"wegocod-ma\",provider=\"wegocod\"} 1"), "{m}");
    // The provider port does not serve metrics.
    let r = bridge
        .client
        .get(bridge.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    bridge.cleanup().await;
}
