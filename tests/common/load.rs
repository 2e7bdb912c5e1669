//! Load for the fault tests: many distinct signed WeGoCOD webhooks sent concurrently, every
//! answer recorded; and counting what arrived by order reference.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::types::ShortString;
use lapin::{Connection, ConnectionProperties};

use super::{AMQP_URL, Bridge, Consumer, WEGOCOD_SECRET};

/// The documented WeGoCOD sample with its order reference replaced: a distinct event.
pub fn wegocod_body(reference: &str) -> Vec<u8> {
    String::from_utf8_lossy(webhook_bridge::providers::wegocod::DELIVERED)
        .replace("ORD-000129", reference)
        .into_bytes()
}

/// One answered (or failed) request.
#[derive(Debug, Clone)]
pub struct Answer {
    pub reference: String,
    /// HTTP status, or `None` when the request itself failed (connection refused…).
    pub status: Option<u16>,
    pub body: String,
    pub retry_after: bool,
    pub latency: Duration,
}

/// What a load run saw.
#[derive(Debug, Default)]
pub struct Report {
    pub answers: Vec<Answer>,
}

impl Report {
    pub fn count(&self, f: impl Fn(&Answer) -> bool) -> usize {
        self.answers.iter().filter(|a| f(a)).count()
    }
    pub fn ok(&self) -> usize {
        self.count(|a| a.status.is_some_and(|s| (200..300).contains(&s)))
    }
    pub fn spooled(&self) -> usize {
        self.count(|a| a.body.contains("\"spooled\""))
    }
    pub fn server_errors(&self) -> usize {
        self.count(|a| a.status.is_some_and(|s| s >= 500))
    }
    pub fn max_latency(&self) -> Duration {
        self.answers
            .iter()
            .filter(|a| a.status.is_some())
            .map(|a| a.latency)
            .max()
            .unwrap_or_default()
    }
    /// References answered 2xx: these must all arrive.
    pub fn acknowledged(&self) -> HashSet<String> {
        self.answers
            .iter()
            .filter(|a| a.status.is_some_and(|s| (200..300).contains(&s)))
            .map(|a| a.reference.clone())
            .collect()
    }
    pub fn summary(&self) -> String {
        format!(
            "requests={} 2xx={} spooled={} 5xx={} failed={} max_latency={:?}",
            self.answers.len(),
            self.ok(),
            self.spooled(),
            self.server_errors(),
            self.count(|a| a.status.is_none()),
            self.max_latency()
        )
    }
}

/// Send `n` distinct webhooks (references `{tag}-{i}`) with `concurrency` in flight, request
/// `i` not before `i × interval` (zero: as fast as answers come). `progress` counts answers as
/// they come, so a test can break things mid-load.
pub async fn run(
    bridge: &Bridge,
    tag: &str,
    n: usize,
    concurrency: usize,
    interval: Duration,
    progress: Arc<AtomicUsize>,
) -> Report {
    let t0 = tokio::time::Instant::now();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .pool_max_idle_per_host(concurrency)
        .build()
        .expect("client");
    let url = bridge.url("/webhooks/wegocod");
    let answers = futures_util::stream::iter(0..n)
        .map(|i| {
            let client = client.clone();
            let url = url.clone();
            let progress = Arc::clone(&progress);
            let reference = format!("{tag}-{i}");
            async move {
                tokio::time::sleep_until(t0 + interval * i as u32).await;
                let body = wegocod_body(&reference);
                let (_, headers) =
                    super::signed_request("wegocod", "/webhooks/wegocod", WEGOCOD_SECRET, &body);
                let mut req = client.post(&url).body(body);
                for (k, v) in &headers {
                    req = req.header(k, v);
                }
                let started = Instant::now();
                let answer = match req.send().await {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        let retry_after = resp.headers().contains_key("retry-after");
                        let body = resp.text().await.unwrap_or_default();
                        Answer {
                            reference,
                            status: Some(status),
                            body,
                            retry_after,
                            latency: started.elapsed(),
                        }
                    }
                    Err(_) => Answer {
                        reference,
                        status: None,
                        body: String::new(),
                        retry_after: false,
                        latency: started.elapsed(),
                    },
                };
                progress.fetch_add(1, Ordering::Relaxed);
                answer
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await;
    Report { answers }
}

/// Receive until every reference in `expected` was seen (or `idle_timeout` passes with nothing
/// new); returns the distinct references seen and the number of messages (duplicates included).
pub async fn collect(
    consumer: &mut Consumer,
    expected: &HashSet<String>,
    idle_timeout: Duration,
) -> (HashSet<String>, usize) {
    let mut seen = HashSet::new();
    let messages = collect_into(consumer, expected, &mut seen, idle_timeout).await;
    (seen, messages)
}

/// Like [`collect`], adding to references already `seen`; returns the messages received.
pub async fn collect_into(
    consumer: &mut Consumer,
    expected: &HashSet<String>,
    seen: &mut HashSet<String>,
    idle_timeout: Duration,
) -> usize {
    let mut messages = 0;
    while !expected.is_subset(seen) {
        let Some(m) = consumer.next(idle_timeout).await else {
            break;
        };
        messages += 1;
        if let Some(r) = m.body.pointer("/data/entity_id").and_then(|v| v.as_str()) {
            seen.insert(r.to_string());
        }
    }
    messages
}

/// Declare `exchange` as the bridge does (its own topology code: durable topic exchange, its
/// alternate exchange and the unrouted queue), so a test can bind its consumer before the bridge
/// has ever reached the broker.
pub async fn declare_exchange(exchange: &str) {
    let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    let cfg = topology(AMQP_URL, exchange);
    webhook_bridge::publisher::declare_topology(&ch, &cfg)
        .await
        .expect("declare the bridge's exchanges");
    webhook_bridge::publisher::declare_unrouted_queue(&conn, &cfg)
        .await
        .expect("declare the bridge's unrouted queue");
    let _ = conn.close(200, ShortString::from("bye")).await;
}

/// Value of an unlabelled metric line such as `webhook_bridge_spool_events 12`.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Poll the bridge's `/metrics` until `name` equals `value`; fails the test after `timeout`.
pub async fn wait_metric(bridge: &Bridge, name: &str, value: f64, timeout: Duration) {
    let end = Instant::now() + timeout;
    loop {
        let m = bridge.metrics().await;
        if metric(&m, name) == Some(value) {
            return;
        }
        assert!(Instant::now() < end, "{name} never reached {value}:\n{m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `[amqp]` settings the bridge declares `exchange`'s topology with, reached through `url`.
pub fn topology(url: &str, exchange: &str) -> webhook_bridge::config::AmqpConfig {
    webhook_bridge::config::AmqpConfig {
        urls: vec![webhook_bridge::secret::Secret::new(url)],
        exchange: exchange.to_string(),
        declare_topology: true,
        channels: 1,
        connect_timeout: Duration::from_secs(3),
        reconnect_backoff_max: Duration::from_secs(1),
        unrouted_queue_type: webhook_bridge::config::QueueType::default(),
        tls: webhook_bridge::config::TlsFiles::default(),
        auth_mechanism: webhook_bridge::config::AuthMechanism::default(),
        publish_client: webhook_bridge::config::PublishClient::default(),
    }
}
