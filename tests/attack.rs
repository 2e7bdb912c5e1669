//! Clients that attack without any secret: what refusing them costs must stay bounded — body
//! bytes held in memory, admin connections, metric series — while legitimate requests are still
//! answered in time.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Open a connection and send a WeGoCOD request head declaring `len` body bytes, then up to
/// `sent` bytes of the body (never the rest). A bridge that refused the request closes the
/// connection, so the body may not all be written.
async fn stalled_body(bridge: &Bridge, len: usize, sent: usize) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", bridge.port))
        .await
        .expect("connect");
    let head = format!(
        "POST /webhooks/wegocod HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         x-webhook-signature: {}\r\ncontent-length: {len}\r\n\r\n",
        "0".repeat(64)
    );
    s.write_all(head.as_bytes()).await.expect("head");
    let chunk = vec![b' '; 64 * 1024];
    let mut left = sent;
    while left > 0 {
        let n = left.min(chunk.len());
        if s.write_all(&chunk[..n]).await.is_err() {
            break;
        }
        left -= n;
    }
    s
}

/// The answer's status line and headers, if one arrives within `limit`.
async fn answer_head(s: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let until = Instant::now() + limit;
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let left = until.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    Some(String::from_utf8_lossy(&buf).to_lowercase())
}

fn rss_mib(pid: u32) -> f64 {
    proc_status_mib(pid, "VmRSS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_byte_budget_are_refused_before_they_are_read() {
    broker_available().await;
    let max_body = 256 * 1024;
    let mut bridge = Bridge::start_with(BridgeOptions {
        top: format!("max_body = {max_body}\n"),
        tables: format!(
            "[limits]\nmax_body_bytes_in_flight = {}\nbody_read_timeout = '3s'\n",
            2 * max_body
        ),
        ..BridgeOptions::default()
    })
    .await;
    // Two clients take the whole budget with bodies they never finish.
    let mut holders = Vec::new();
    for _ in 0..2 {
        holders.push(stalled_body(&bridge, max_body, max_body / 2).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A third is refused at once, without its body being read, and told when to retry.
    let started = Instant::now();
    let mut third = stalled_body(&bridge, max_body, 0).await;
    let head = answer_head(&mut third, Duration::from_secs(2))
        .await
        .expect("an answer before the body was sent");
    assert!(head.starts_with("http/1.1 503"), "{head}");
    assert!(head.contains("retry-after: 1"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    // A small webhook still gets in meanwhile, on the reserve kept for bodies of at most 64 KiB.
    let resp = bridge.post_wegocod_sample().await;
    assert_eq!(
        resp.status(),
        200,
        "a small webhook while the budget is spent"
    );
    // Once the stalled bodies time out (408), the budget is back: a real webhook is accepted.
    for mut h in holders {
        let head = answer_head(&mut h, Duration::from_secs(5))
            .await
            .expect("408");
        assert!(head.starts_with("http/1.1 408"), "{head}");
    }
    let resp = bridge.post_wegocod_sample().await;
    assert_eq!(resp.status(), 200);
    let metrics = bridge.metrics().await;
    assert!(
        metrics.contains(r#"outcome="overloaded",provider="wegocod"} 1"#),
        "{metrics}"
    );
    bridge.cleanup().await;
    bridge.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_stalled_megabyte_bodies_keep_memory_bounded_and_webhooks_answered() {
    broker_available().await;
    let mut bridge = Bridge::start_with(BridgeOptions {
        tables: "[limits]\nbody_read_timeout = '3s'\n".into(),
        ..BridgeOptions::default()
    })
    .await;
    let pid = bridge.child.id();
    let before = rss_mib(pid);
    // The same webhook's answer time without the stalled bodies, for comparison.
    let started = Instant::now();
    assert_eq!(bridge.post_wegocod_sample().await.status(), 200);
    let quiet = started.elapsed();
    let max_body = 1024 * 1024;
    let mut stalled = Vec::new();
    for _ in 0..300 {
        // All but the last bytes of a 1 MiB body, then nothing.
        stalled.push(stalled_body(&bridge, max_body, max_body - 16).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = rss_mib(pid);
    // A legitimate (small) webhook is accepted well within the providers' window: the stalled
    // bodies spend the byte budget, not the reserve kept for small bodies.
    let started = Instant::now();
    let resp = bridge.post_wegocod_sample().await;
    let took = started.elapsed();
    assert_eq!(resp.status(), 200);
    assert!(took < Duration::from_secs(2), "{took:?}");
    eprintln!(
        "RSS {before:.0} MiB idle, {during:.0} MiB with 300 stalled 1 MiB bodies; webhook \
         answered {} in {took:?} ({quiet:?} without them)",
        resp.status()
    );
    // The shipped container limit is 256 MiB; the default budget holds 64 MiB of bodies.
    assert!(during < 200.0, "RSS {during:.0} MiB");
    drop(stalled);
    bridge.cleanup().await;
    bridge.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_caps_its_connections() {
    broker_available().await;
    let mut bridge = Bridge::start().await;
    let mut idle = Vec::new();
    for _ in 0..40 {
        idle.push(
            TcpStream::connect(("127.0.0.1", bridge.admin_port))
                .await
                .expect("connect"),
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Over the cap: the connection is closed without an answer.
    let mut extra = TcpStream::connect(("127.0.0.1", bridge.admin_port))
        .await
        .expect("connect");
    let _ = extra
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await;
    assert_eq!(answer_head(&mut extra, Duration::from_secs(2)).await, None);
    // Webhooks are not affected.
    assert_eq!(bridge.post_wegocod_sample().await.status(), 200);
    drop(idle);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let health = reqwest::get(bridge.admin_url("/healthz"))
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    bridge.cleanup().await;
    bridge.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_chosen_event_names_do_not_create_metric_series() {
    broker_available().await;
    let mut bridge = Bridge::start_with(BridgeOptions {
        endpoints: r#"
[[endpoint]]
name = "acme"
provider = "generic"
path = "/webhooks/acme"
secret = "test-acme-token"
auth = { kind = "bearer" }
[endpoint.generic]
event_pointer = "/type"
known_events = ["invoice.paid"]
"#
        .into(),
        ..BridgeOptions::default()
    })
    .await;
    let send = |name: String| {
        let body = format!("{{\"type\":\"{name}\",\"id\":\"{name}\"}}");
        let headers = vec![(
            "authorization".to_string(),
            "Bearer test-acme-token".to_string(),
        )];
        let bridge = &bridge;
        async move {
            bridge
                .post("/webhooks/acme", &headers, body.as_bytes())
                .await
        }
    };
    assert_eq!(send("invoice.paid".into()).await.status(), 200);
    for i in 0..200 {
        assert_eq!(send(format!("made.up.{i}")).await.status(), 200);
    }
    let metrics = bridge.metrics().await;
    let series: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("webhook_bridge_events_total{"))
        .collect();
    assert_eq!(series.len(), 2, "{series:#?}");
    assert!(
        metrics.contains(r#"webhook_bridge_events_total{outcome="published",provider="acme",type="acme.invoice.paid"} 1"#),
        "{series:#?}"
    );
    assert!(
        metrics.contains(r#"webhook_bridge_events_total{outcome="published",provider="acme",type="acme.other"} 200"#),
        "{series:#?}"
    );
    bridge.cleanup().await;
    bridge.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_refused_before_the_body_is_read() {
    broker_available().await;
    let mut bridge = Bridge::start().await;
    for (path, credential) in [
        (
            "/webhooks/modexpress",
            "authorization: Bearer wrong-token\r\n",
        ),
        (
            "/webhooks/peddler",
            "x-webhook-shared-token: wrong-token\r\n",
        ),
        ("/webhooks/isendu/wrong-token", ""),
    ] {
        let mut s = TcpStream::connect(("127.0.0.1", bridge.port))
            .await
            .expect("connect");
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\n{credential}content-length: 1048576\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.expect("head");
        // No byte of the body is sent: the answer must not wait for it (408 after 3 s).
        let started = Instant::now();
        let answer = answer_head(&mut s, Duration::from_secs(2))
            .await
            .unwrap_or_else(|| panic!("{path}: no answer before the body"));
        assert!(answer.starts_with("http/1.1 401"), "{path}: {answer}");
        assert!(started.elapsed() < Duration::from_secs(1), "{path}");
    }
    bridge.cleanup().await;
    bridge.terminate();
}

/// The slowest and the 99th-percentile of `samples`.
fn max_and_p99(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let max = samples.last().copied().unwrap_or_default();
    let p99 = samples
        .get((samples.len() * 99 / 100).min(samples.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default();
    (max, p99)
}

/// `/healthz` and a legitimate WeGoCOD webhook, one after the other every 50 ms for `run`: the
/// latency of each.
async fn probe(bridge: &Bridge, run: Duration) -> (Vec<Duration>, Vec<Duration>) {
    let mut health = Vec::new();
    let mut webhooks = Vec::new();
    let until = Instant::now() + run;
    while Instant::now() < until {
        let started = Instant::now();
        let status = bridge
            .client
            .get(bridge.admin_url("/healthz"))
            .send()
            .await
            .expect("healthz")
            .status();
        assert_eq!(status, 200);
        health.push(started.elapsed());
        let started = Instant::now();
        assert_eq!(bridge.post_wegocod_sample().await.status(), 200);
        webhooks.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (health, webhooks)
}

/// Clients sending megabyte bodies with forged signatures make the bridge hash each body once
/// per secret — here 8 secrets, a few hundred milliseconds of CPU per request in a debug build.
/// That hashing runs on the blocking pool: `/healthz` and a legitimate small webhook on another
/// endpoint keep answering fast. Hashed on the async workers instead, four such clients keep
/// both workers busy and every other request waits for a hash to finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashing_large_forged_bodies_does_not_stall_other_requests() {
    broker_available().await;
    let secrets: Vec<String> = (0..8)
        .map(|i| format!("\"forged-mac-secret-{i}\""))
        .collect();
    let mut bridge = Bridge::start_with(BridgeOptions {
        endpoints: format!(
            "{}\n[[endpoint]]\nname = \"wegocod-rotating\"\nprovider = \"wegocod\"\npath = \"/webhooks/wegocod-rotating\"\nsecret = [{}]\n",
            standard_endpoints(),
            secrets.join(", ")
        ),
        ..BridgeOptions::default()
    })
    .await;
    let forged = bytes::Bytes::from(vec![b' '; 1024 * 1024]);
    let send_forged = |client: reqwest::Client, url: String, body: bytes::Bytes| async move {
        let started = Instant::now();
        let status = client
            .post(url)
            .header("x-webhook-signature", "0".repeat(64))
            .body(body)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        (status, started.elapsed())
    };
    let url = bridge.url("/webhooks/wegocod-rotating");
    // The same probes without the attack, for comparison.
    let (mut quiet_health, mut quiet_webhooks) = probe(&bridge, Duration::from_secs(2)).await;
    // What one forged request costs alone: the time its hashing takes.
    let mut alone = Duration::MAX;
    for _ in 0..3 {
        let (status, took) = send_forged(bridge.client.clone(), url.clone(), forged.clone()).await;
        assert_eq!(status, 401);
        alone = alone.min(took);
    }

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut attackers = Vec::new();
    for _ in 0..4 {
        let (client, url, body, stop) = (
            reqwest::Client::new(),
            url.clone(),
            forged.clone(),
            stop.clone(),
        );
        attackers.push(tokio::spawn(async move {
            let mut refused = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (status, _) = send_forged(client.clone(), url.clone(), body.clone()).await;
                assert!([401, 503].contains(&status), "forged request: {status}");
                refused += 1;
            }
            refused
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut health, mut webhooks) = probe(&bridge, Duration::from_secs(5)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut refused = 0;
    for a in attackers {
        refused += a.await.expect("attacker");
    }
    let (health_max, health_p99) = max_and_p99(&mut health);
    let (hook_max, hook_p99) = max_and_p99(&mut webhooks);
    let (_, quiet_health_p99) = max_and_p99(&mut quiet_health);
    let (_, quiet_hook_p99) = max_and_p99(&mut quiet_webhooks);
    println!(
        "one forged 1 MiB request alone: {alone:?}; {refused} refused under attack; /healthz \
         p99 {health_p99:?} max {health_max:?} ({} probes; {quiet_health_p99:?} without the \
         attack); legitimate webhook p99 {hook_p99:?} max {hook_max:?} ({quiet_hook_p99:?} \
         without the attack)",
        health.len()
    );
    assert!(refused >= 8, "the attack ran: {refused} forged requests");
    // Generous bounds for a loaded machine, well under the cost of one hash: a request that
    // waited for a worker busy hashing would take about `alone` or more.
    let bound = (alone / 2).max(Duration::from_millis(150));
    assert!(
        health_p99 < bound,
        "/healthz p99 {health_p99:?}, one hash {alone:?}"
    );
    assert!(
        hook_p99 < bound + Duration::from_millis(100),
        "webhook p99 {hook_p99:?}, one hash {alone:?}"
    );
    bridge.cleanup().await;
    bridge.terminate();
}
