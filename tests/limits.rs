//! Protective limits of the provider listener, driven by raw TCP clients that misbehave on
//! purpose: slow headers, trickled bodies, idle keep-alive, huge chunked bodies, too many
//! connections, too many requests at once. While one client misbehaves, a normal request must
//! still get its 200 promptly. A connection hyper ends before a request is handled (head too
//! large, malformed, stalled) is counted in `connection_errors_total` and logged; an idle one is
//! not.

use crate::common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

const QUIET: Duration = Duration::from_millis(700);

fn limits(tables: &str) -> BridgeOptions {
    BridgeOptions {
        tables: tables.to_string(),
        ..BridgeOptions::default()
    }
}

/// Request head of an authenticated Peddler POST, without the final blank line.
fn peddler_head(extra: &str) -> String {
    format!(
        "POST /webhooks/peddler HTTP/1.1\r\nhost: 127.0.0.1\r\n\
         x-webhook-shared-token: {PEDDLER_SECRET}\r\ncontent-type: application/json\r\n{extra}"
    )
}

async fn connect(bridge: &Bridge) -> TcpStream {
    TcpStream::connect(("127.0.0.1", bridge.port))
        .await
        .expect("connect")
}

/// Read until EOF or error (or `limit`); what was read and when the connection ended.
async fn read_to_close(reader: &mut OwnedReadHalf, limit: Duration) -> (Vec<u8>, Option<Instant>) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let end = Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(end.into(), reader.read(&mut buf)).await {
            Err(_) => return (out, None),
            Ok(Ok(0)) | Ok(Err(_)) => return (out, Some(Instant::now())),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Read one response (head + Content-Length body) and return the head and body as text.
async fn read_response(reader: &mut OwnedReadHalf, limit: Duration) -> (String, String) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let end = Instant::now() + limit;
    loop {
        let text = String::from_utf8_lossy(&out).to_string();
        if let Some(split) = text.find("\r\n\r\n") {
            let head = text[..split].to_string();
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if out.len() >= split + 4 + len {
                return (head, text[split + 4..split + 4 + len].to_string());
            }
        }
        match tokio::time::timeout_at(end.into(), reader.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            other => panic!(
                "no complete response ({other:?}); got {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
}

/// Every `reason` of `webhook_bridge_connection_errors_total`.
const CONNECTION_ERROR_REASONS: [&str; 4] =
    ["header_too_large", "malformed", "header_timeout", "io"];

/// Sent inside every misbehaving request: it must not come back out in the logs.
const MARKER: &str = "leak-check-5e1f";

/// `webhook_bridge_connection_errors_total` as scraped, by reason (a reason not exported is
/// missing).
async fn connection_errors(bridge: &Bridge) -> BTreeMap<String, u64> {
    bridge
        .metrics()
        .await
        .lines()
        .filter_map(|l| l.strip_prefix("webhook_bridge_connection_errors_total{reason=\""))
        .filter_map(|rest| {
            let (reason, value) = rest.split_once("\"} ")?;
            Some((reason.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// A bridge with a 1 s header timeout, a consumer on its exchange, and one raw connection to the
/// provider port from `peer`.
struct OneConnection {
    bridge: Bridge,
    q: Consumer,
    peer: SocketAddr,
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
}

impl OneConnection {
    async fn open() -> Self {
        broker_available().await;
        let bridge = Bridge::start_with(limits("[limits]\nheader_read_timeout = \"1s\"\n")).await;
        let q = bridge.consumer("#").await;
        let stream = connect(&bridge).await;
        let peer = stream.local_addr().expect("local address");
        let (reader, writer) = stream.into_split();
        Self {
            bridge,
            q,
            peer,
            reader,
            writer,
        }
    }

    /// After the bridge closed the connection: nothing (more) was published, and
    /// `connection_errors_total` holds `reason` once and every other reason at 0 (all at 0 for
    /// `None`), with one `connection error` log line for it that names neither the client's
    /// address nor anything it sent. Cleans up the bridge.
    async fn expect_connection_error(mut self, reason: Option<&str>) {
        self.q.expect_none(QUIET).await;
        let expected: BTreeMap<String, u64> = CONNECTION_ERROR_REASONS
            .iter()
            .map(|r| (r.to_string(), u64::from(Some(*r) == reason)))
            .collect();
        assert_eq!(connection_errors(&self.bridge).await, expected);
        let logs = self.bridge.logs();
        let lines: Vec<Value> = logs
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["message"] == "connection error")
            .collect();
        match reason {
            Some(reason) => {
                assert_eq!(lines.len(), 1, "{logs}");
                assert_eq!(lines[0]["level"], "INFO", "{logs}");
                assert_eq!(lines[0]["reason"], reason, "{logs}");
                assert!(lines[0].get("peer").is_none(), "{logs}");
            }
            None => assert!(lines.is_empty(), "{logs}"),
        }
        assert!(!logs.contains(MARKER), "request bytes logged:\n{logs}");
        let port = format!(":{}", self.peer.port());
        assert!(!logs.contains(&port), "client address logged:\n{logs}");
        self.bridge.cleanup().await;
    }
}

/// Send `bytes` on a new connection and read until the bridge closes it, then check it was
/// counted and logged once under `reason` and nothing was published. What the bridge answered,
/// and how long after the send it closed.
async fn connection_error_is_counted_and_logged(bytes: &[u8], reason: &str) -> (String, Duration) {
    let mut c = OneConnection::open().await;
    c.writer.write_all(bytes).await.expect("send");
    let sent = Instant::now();
    let (got, closed) = read_to_close(&mut c.reader, Duration::from_secs(5)).await;
    let closed = closed.expect("connection still open after 5 s");
    c.expect_connection_error(Some(reason)).await;
    (String::from_utf8_lossy(&got).into_owned(), closed - sent)
}

/// A normal, signed Peddler request from a well-behaved client; asserts a prompt 200.
async fn normal_request_is_served_promptly(bridge: &Bridge) {
    let started = Instant::now();
    let resp = bridge
        .post_signed(
            "peddler",
            "/webhooks/peddler",
            PEDDLER_SECRET,
            webhook_bridge::providers::peddler::CONFIRMED,
        )
        .await;
    let took = started.elapsed();
    assert_eq!(resp.status(), 200);
    assert!(
        took < Duration::from_millis(600),
        "a normal request took {took:?} while another client misbehaved"
    );
}

#[tokio::test]
async fn slowloris_headers_are_cut_off_while_others_are_served() {
    broker_available().await;
    let bridge = Bridge::start_with(limits("[limits]\nheader_read_timeout = \"1s\"\n")).await;
    let mut q = bridge.consumer("#").await;
    let (mut reader, mut writer) = connect(&bridge).await.into_split();
    let started = Instant::now();
    // One header byte every 50 ms, for up to 10 s: never a complete head.
    let trickle = tokio::spawn(async move {
        let head = format!("{}x-slow: {}", peddler_head(""), "a".repeat(200));
        for b in head.bytes() {
            if writer.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    normal_request_is_served_promptly(&bridge).await;
    let (got, closed) = read_to_close(&mut reader, Duration::from_secs(5)).await;
    let closed = closed.expect("slow client still connected after 5 s");
    let after = closed - started;
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_millis(2500),
        "closed after {after:?}"
    );
    assert!(!String::from_utf8_lossy(&got).contains(" 200 "), "{got:?}");
    trickle.abort();
    // Only the normal request was published.
    assert_eq!(q.take(1, Duration::from_secs(5)).await.len(), 1);
    q.expect_none(QUIET).await;
    bridge.cleanup().await;
}

#[tokio::test]
async fn trickled_body_gets_408_and_is_closed_while_others_are_served() {
    broker_available().await;
    let bridge = Bridge::start_with(limits("[limits]\nbody_read_timeout = \"1s\"\n")).await;
    let mut q = bridge.consumer("#").await;
    let (mut reader, mut writer) = connect(&bridge).await.into_split();
    let body = webhook_bridge::providers::peddler::CONFIRMED.to_vec();
    writer
        .write_all(format!("{}content-length: {}\r\n\r\n", peddler_head(""), body.len()).as_bytes())
        .await
        .unwrap();
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        for b in body {
            if writer.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    normal_request_is_served_promptly(&bridge).await;
    let (head, _) = read_response(&mut reader, Duration::from_secs(5)).await;
    let answered = started.elapsed();
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(
        answered >= Duration::from_millis(900) && answered < Duration::from_millis(2000),
        "answered after {answered:?}"
    );
    let (_, closed) = read_to_close(&mut reader, Duration::from_secs(2)).await;
    assert!(closed.is_some(), "connection left open after 408");
    trickle.abort();
    assert_eq!(q.take(1, Duration::from_secs(5)).await.len(), 1);
    q.expect_none(QUIET).await;
    bridge.cleanup().await;
}

#[tokio::test]
async fn body_read_is_capped_by_the_ack_deadline() {
    broker_available().await;
    // body_read_timeout longer than ack_deadline: the deadline wins.
    let bridge = Bridge::start_with(BridgeOptions {
        top: "ack_deadline = \"1s\"".into(),
        tables: "[limits]\nbody_read_timeout = \"30s\"\n".into(),
        ..BridgeOptions::default()
    })
    .await;
    let (mut reader, mut writer) = connect(&bridge).await.into_split();
    writer
        .write_all(format!("{}content-length: 100\r\n\r\n{{", peddler_head("")).as_bytes())
        .await
        .unwrap();
    let started = Instant::now();
    let (head, _) = read_response(&mut reader, Duration::from_secs(5)).await;
    let took = started.elapsed();
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(took < Duration::from_secs(1), "answered after {took:?}");
    bridge.cleanup().await;
}

#[tokio::test]
async fn head_over_32_kib_gets_431_and_counts_header_too_large() {
    let head = format!(
        "{}x-big: {MARKER}{}\r\n\r\n",
        peddler_head(""),
        "a".repeat(40 * 1024)
    );
    let (answer, _) =
        connection_error_is_counted_and_logged(head.as_bytes(), "header_too_large").await;
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
}

#[tokio::test]
async fn garbage_request_line_gets_400_and_counts_malformed() {
    // What a TLS client sends first when pointed at the plain HTTP port.
    let garbage = [
        b"\x16\x03\x01\x02\x00\x01 ".as_slice(),
        MARKER.as_bytes(),
        b"\r\n\r\n",
    ]
    .concat();
    let (answer, _) = connection_error_is_counted_and_logged(&garbage, "malformed").await;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
}

#[tokio::test]
async fn partial_head_then_silence_is_closed_at_the_header_timeout_and_counted() {
    let head = peddler_head(&format!("x-marker: {MARKER}\r\n"));
    let (answer, after) =
        connection_error_is_counted_and_logged(head.as_bytes(), "header_timeout").await;
    assert!(answer.is_empty(), "{answer}");
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_millis(2500),
        "closed after {after:?}"
    );
}

#[tokio::test]
async fn client_closing_mid_head_counts_io() {
    let mut c = OneConnection::open().await;
    let head = peddler_head(&format!("x-marker: {MARKER}\r\n"));
    c.writer.write_all(head.as_bytes()).await.unwrap();
    c.writer.shutdown().await.unwrap();
    let (got, closed) = read_to_close(&mut c.reader, Duration::from_secs(5)).await;
    assert!(closed.is_some(), "connection still open after 5 s");
    assert!(got.is_empty(), "{got:?}");
    c.expect_connection_error(Some("io")).await;
}

#[tokio::test]
async fn idle_keep_alive_connection_is_closed_after_the_header_timeout_and_not_counted() {
    let mut c = OneConnection::open().await;
    let body = webhook_bridge::providers::peddler::CONFIRMED;
    c.writer
        .write_all(format!("{}content-length: {}\r\n\r\n", peddler_head(""), body.len()).as_bytes())
        .await
        .unwrap();
    c.writer.write_all(body).await.unwrap();
    let (head, _) = read_response(&mut c.reader, Duration::from_secs(5)).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let idle_since = Instant::now();
    let (got, closed) = read_to_close(&mut c.reader, Duration::from_secs(5)).await;
    let closed = closed.expect("idle keep-alive connection still open after 5 s");
    let idle = closed - idle_since;
    assert!(got.is_empty(), "{got:?}");
    assert!(
        idle >= Duration::from_millis(800) && idle < Duration::from_millis(2500),
        "closed after {idle:?} idle"
    );
    // Closing an idle connection is routine, not a connection error.
    assert_eq!(c.q.take(1, Duration::from_secs(5)).await.len(), 1);
    c.expect_connection_error(None).await;
}

#[tokio::test]
async fn fifty_megabyte_chunked_body_is_refused_without_being_read() {
    broker_available().await;
    let bridge = Bridge::start().await; // max_body 1 MiB
    let mut q = bridge.consumer("#").await;
    let (mut reader, mut writer) = connect(&bridge).await.into_split();
    writer
        .write_all(format!("{}transfer-encoding: chunked\r\n\r\n", peddler_head("")).as_bytes())
        .await
        .unwrap();
    const TOTAL: usize = 50 * 1024 * 1024;
    let started = Instant::now();
    let sender = tokio::spawn(async move {
        let chunk = vec![b' '; 64 * 1024];
        let frame = [
            format!("{:x}\r\n", chunk.len()).into_bytes(),
            chunk,
            b"\r\n".to_vec(),
        ]
        .concat();
        let mut sent = 0usize;
        while sent < TOTAL {
            match tokio::time::timeout(Duration::from_secs(10), writer.write_all(&frame)).await {
                Ok(Ok(())) => sent += 64 * 1024,
                _ => return (sent, false),
            }
        }
        let done = writer.write_all(b"0\r\n\r\n").await.is_ok();
        (sent, done)
    });
    let (head, _) = read_response(&mut reader, Duration::from_secs(10)).await;
    let answered = started.elapsed();
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(answered < Duration::from_secs(2), "413 took {answered:?}");
    let (_, closed) = read_to_close(&mut reader, Duration::from_secs(5)).await;
    assert!(closed.is_some(), "connection left open after 413");
    let (sent, completed) = sender.await.unwrap();
    eprintln!("413 after {answered:?}; client got {sent} bytes out before the connection died");
    assert!(!completed, "the server accepted the whole 50 MB body");
    assert!(
        sent < 16 * 1024 * 1024,
        "server kept reading: {sent} bytes accepted"
    );
    q.expect_none(QUIET).await;
    bridge.cleanup().await;
}

#[tokio::test]
async fn connections_over_max_connections_get_503_with_retry_after() {
    broker_available().await;
    let bridge = Bridge::start_with(limits(
        "[limits]\nmax_connections = 2\nheader_read_timeout = \"10s\"\n",
    ))
    .await;
    let mut q = bridge.consumer("#").await;
    // Two connections hold every slot, each halfway through its headers.
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut s = connect(&bridge).await;
        s.write_all(b"POST /webhooks/peddler HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        holders.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let resp = bridge
        .post_signed(
            "peddler",
            "/webhooks/peddler",
            PEDDLER_SECRET,
            webhook_bridge::providers::peddler::CONFIRMED,
        )
        .await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert!(started.elapsed() < Duration::from_millis(500));
    q.expect_none(QUIET).await;
    // Slots free again once the holders leave.
    drop(holders);
    tokio::time::sleep(Duration::from_millis(200)).await;
    normal_request_is_served_promptly(&bridge).await;
    assert_eq!(q.take(1, Duration::from_secs(5)).await.len(), 1);
    let m = bridge.metrics().await;
    assert!(
        m.contains(r#"webhook_bridge_requests_total{endpoint="none",outcome="overloaded",provider="none"} 1"#),
        "{m}"
    );
    bridge.cleanup().await;
}

#[tokio::test]
async fn requests_over_max_in_flight_get_503_with_retry_after() {
    broker_available().await;
    let bridge = Bridge::start_with(limits(
        "[limits]\nmax_in_flight = 2\nbody_read_timeout = \"3s\"\n",
    ))
    .await;
    let mut q = bridge.consumer("#").await;
    // Two requests in progress, each waiting for the rest of its body.
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut s = connect(&bridge).await;
        s.write_all(format!("{}content-length: 100\r\n\r\n{{", peddler_head("")).as_bytes())
            .await
            .unwrap();
        holders.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = bridge.metrics().await;
    assert!(m.contains("webhook_bridge_in_flight_requests 2"), "{m}");
    let started = Instant::now();
    let resp = bridge
        .post_signed(
            "peddler",
            "/webhooks/peddler",
            PEDDLER_SECRET,
            webhook_bridge::providers::peddler::CONFIRMED,
        )
        .await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_eq!(
        resp.text().await.unwrap(),
        r#"{"error":"temporarily unavailable"}"#
    );
    assert!(started.elapsed() < Duration::from_millis(500));
    q.expect_none(QUIET).await;
    drop(holders);
    tokio::time::sleep(Duration::from_millis(300)).await;
    normal_request_is_served_promptly(&bridge).await;
    assert_eq!(q.take(1, Duration::from_secs(5)).await.len(), 1);
    let m = bridge.metrics().await;
    assert!(
        m.contains(r#"webhook_bridge_requests_total{endpoint="peddler-nl",outcome="overloaded",provider="peddler"} 1"#),
        "{m}"
    );
    assert!(m.contains("webhook_bridge_in_flight_requests 0"), "{m}");
    bridge.cleanup().await;
}

/// A TCP proxy to the real broker that can be frozen: bytes stop flowing in both directions,
/// the connection stays open — a network cut without RST, the worst case for confirms.
struct FreezableProxy {
    port: u16,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl FreezableProxy {
    async fn start() -> Self {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = Arc::new(AtomicBool::new(false));
        let f = Arc::clone(&frozen);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(broker) = TcpStream::connect("127.0.0.1:5672").await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (br, bw) = broker.into_split();
                for (mut from, mut to) in [(cr, bw), (br, cw)] {
                    let f = Arc::clone(&f);
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match from.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            while f.load(Ordering::SeqCst) {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            if to.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            }
        });
        Self { port, frozen, task }
    }

    fn freeze(&self) {
        self.frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for FreezableProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn a_frozen_broker_still_gets_every_provider_answered_before_the_deadline() {
    broker_available().await;
    let proxy = FreezableProxy::start().await;
    let bridge = Bridge::start_with(BridgeOptions {
        top: "ack_deadline = \"1500ms\"".into(),
        amqp_urls: vec![format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port)],
        tables: "[spool]\nenabled = false\n".into(),
        ..BridgeOptions::default()
    })
    .await;
    normal_request_is_served_promptly(&bridge).await;
    proxy.freeze();
    let mut answers = Vec::new();
    for _ in 0..3 {
        let client = bridge.client.clone();
        let (path, headers) = signed_request(
            "peddler",
            "/webhooks/peddler",
            PEDDLER_SECRET,
            webhook_bridge::providers::peddler::OUT_FOR_DELIVERY,
        );
        let url = bridge.url(&path);
        answers.push(tokio::spawn(async move {
            let started = Instant::now();
            let mut req = client
                .post(url)
                .body(webhook_bridge::providers::peddler::OUT_FOR_DELIVERY);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            let resp = req.send().await.expect("answer");
            (
                resp.status().as_u16(),
                resp.headers().contains_key("retry-after"),
                started.elapsed(),
            )
        }));
    }
    for a in answers {
        let (status, retry_after, took) = a.await.unwrap();
        eprintln!("frozen broker: {status} after {took:?}");
        assert_eq!(status, 503);
        assert!(retry_after);
        assert!(
            took < Duration::from_millis(1500),
            "answered after {took:?}"
        );
    }
    // The cause is in the log.
    let logs = bridge.logs();
    assert!(
        logs.contains("publish failed") && logs.contains("did not confirm"),
        "{logs}"
    );
    drop(proxy);
    bridge.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_body_is_set_per_endpoint() {
    broker_available().await;
    let mut bridge = Bridge::start_with(BridgeOptions {
        top: "max_body = \"4KiB\"\n".into(),
        endpoints: standard_endpoints().replace(
            "name = \"isendu-it\"\n",
            "name = \"isendu-it\"\nmax_body = \"64KiB\"\n",
        ),
        ..BridgeOptions::default()
    })
    .await;
    let padding = "x".repeat(8 * 1024);
    let body = format!("{{\"order\":[{{\"uuid\":\"big-order\",\"note\":\"{padding}\"}}]}}");
    // 8 KiB: over the top-level limit, within isendu's own.
    let resp = bridge
        .post_signed("isendu", "/webhooks/isendu", ISENDU_TOKEN, body.as_bytes())
        .await;
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    let resp = bridge
        .post_signed(
            "wegocod",
            "/webhooks/wegocod",
            WEGOCOD_SECRET,
            body.as_bytes(),
        )
        .await;
    assert_eq!(resp.status(), 413);
    let bigger = format!(
        "{{\"order\":[{{\"uuid\":\"o\",\"note\":\"{}\"}}]}}",
        "x".repeat(70 * 1024)
    );
    let resp = bridge
        .post_signed(
            "isendu",
            "/webhooks/isendu",
            ISENDU_TOKEN,
            bigger.as_bytes(),
        )
        .await;
    assert_eq!(resp.status(), 413);
    bridge.cleanup().await;
    bridge.terminate();
}
