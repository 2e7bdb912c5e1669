//! The bad-input matrix: every refusal row of docs/contract.md §6.1 (bad auth, IP, method, path, size, not
//! JSON, too slow) for every provider, plus the nasty variants — duplicate credential headers,
//! a valid signature over a tampered body, truncated and deeply nested JSON, invalid UTF-8,
//! odd content types, huge isendu batches. Each case checks the status, and a consumer bound to
//! `#` checks that nothing was published.
//!
//! Content types are not checked by the bridge (some providers send JSON as `text/plain`); the
//! body is judged, so a valid body under any content type is accepted and an invalid one refused.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use http::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use webhook_bridge::auth::AuthConfig;
use webhook_bridge::providers::MAX_EVENTS_PER_REQUEST;

const QUIET: Duration = Duration::from_millis(500);
const MAX_BODY: usize = 256 * 1024;

/// One provider endpoint of the standard harness config.
#[derive(Clone)]
struct Provider {
    kind: &'static str,
    path: &'static str,
    secret: &'static str,
    sample: &'static [u8],
    /// Header carrying the credential; `None` for path-token endpoints.
    auth_header: Option<String>,
}

/// The standard endpoints (`fixtures/endpoints.rs`), each with its provider's first sample that
/// publishes events, and the header its default scheme reads.
fn providers() -> Vec<Provider> {
    fixtures::FIXTURES
        .iter()
        .map(|f| {
            let provider = webhook_bridge::providers::find(f.provider).expect("known provider");
            let sample = provider
                .samples
                .iter()
                .find(|s| s.name != "handshake")
                .expect("a sample with events")
                .body;
            let auth_header = match (provider.default_auth)().expect("a default scheme") {
                AuthConfig::Bearer | AuthConfig::Basic { .. } => Some("authorization".into()),
                AuthConfig::Header { header } | AuthConfig::Hmac { header, .. } => Some(header),
                AuthConfig::PathToken => None,
                AuthConfig::StandardWebhooks { .. } => Some("webhook-signature".into()),
            };
            Provider {
                kind: f.provider,
                path: f.path,
                secret: f.secret,
                sample,
                auth_header,
            }
        })
        .collect()
}

impl Provider {
    fn name(&self) -> &'static str {
        self.kind
    }

    /// Path and headers as the provider would send `body`, signed with `secret`.
    fn signed_with(&self, secret: &str, body: &[u8]) -> (String, Vec<(String, String)>) {
        signed_request(self.kind, self.path, secret, body)
    }

    fn signed(&self, body: &[u8]) -> (String, Vec<(String, String)>) {
        self.signed_with(self.secret, body)
    }
}

/// The standard endpoints again under `/locked/…`, reachable only from 203.0.113.0/24.
fn locked_endpoints() -> String {
    standard_endpoints()
        .replace("name = \"", "name = \"locked-")
        .replace("path = \"/webhooks/", "path = \"/locked/")
        .replace(
            "\nsecret = ",
            "\nallow_ips = [\"203.0.113.0/24\"]\nsecret = ",
        )
}

struct Case {
    name: String,
    method: Method,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Send the body chunked, without Content-Length.
    chunked: bool,
    expect: u16,
}

fn case(
    name: impl Into<String>,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    expect: u16,
) -> Case {
    Case {
        name: name.into(),
        method: Method::POST,
        path,
        headers,
        body,
        chunked: false,
        expect,
    }
}

fn deep(open: &str, close: &str, depth: usize) -> Vec<u8> {
    let mut s = open.repeat(depth);
    s.push('1');
    s.push_str(&close.repeat(depth));
    s.into_bytes()
}

/// Bodies that are not acceptable JSON, each sent properly authenticated.
fn not_json_bodies(sample: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let text = String::from_utf8_lossy(sample).trim_end().to_string();
    let sample = text.as_bytes();
    let mut invalid_utf8 = sample.to_vec();
    // Replace the first letter inside the first string value with a byte that is never UTF-8.
    if let Some(i) = sample.iter().position(|&b| b == b'"') {
        invalid_utf8[i + 1] = 0xff;
    }
    vec![
        ("plain text", b"not json at all".to_vec()),
        ("empty body", Vec::new()),
        ("whitespace only", b" \r\n\t ".to_vec()),
        ("truncated JSON", sample[..sample.len() / 2].to_vec()),
        ("truncated by one byte", sample[..sample.len() - 1].to_vec()),
        ("trailing garbage", format!("{text} trailing").into_bytes()),
        ("two documents", format!("{text}{text}").into_bytes()),
        ("invalid UTF-8 in a string", invalid_utf8),
        ("UTF-16 encoded", {
            let mut v = vec![0xff, 0xfe];
            v.extend(text.encode_utf16().flat_map(|u| u.to_le_bytes()));
            v
        }),
        ("NUL bytes", b"{\"a\":\0}".to_vec()),
        ("100k nested arrays", deep("[", "]", 100_000)),
        ("100k unclosed arrays", b"[".repeat(100_000)),
        ("40k nested objects", deep("{\"a\":", "}", 40_000)),
        ("number out of range", b"{\"id\": 1e999999}".to_vec()),
        ("single quotes", b"{'id': 'x'}".to_vec()),
        ("form encoded", b"id=1&status=delivered".to_vec()),
    ]
}

/// Every refusal case for `p`.
fn cases_for(p: &Provider) -> Vec<Case> {
    let (path, good) = p.signed(p.sample);
    let mut cases = Vec::new();

    // Bad authentication: 401, generic.
    match p.auth_header.as_deref() {
        Some(header) => {
            let without: Vec<_> = good
                .iter()
                .filter(|(k, _)| !k.eq_ignore_ascii_case(header))
                .cloned()
                .collect();
            cases.push(case(
                "no credentials",
                path.clone(),
                without.clone(),
                p.sample.to_vec(),
                401,
            ));
            let value = good
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(header))
                .map(|(_, v)| v.clone())
                .expect("credential header");
            let (_, wrong) = p.signed_with("wrong-secret", p.sample);
            let wrong_value = wrong
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(header))
                .map(|(_, v)| v.clone())
                .expect("credential header");
            cases.push(case(
                "wrong secret",
                path.clone(),
                wrong.clone(),
                p.sample.to_vec(),
                401,
            ));
            let mut dup = good.clone();
            dup.push((header.to_string(), wrong_value.clone()));
            cases.push(case(
                "duplicate credential header, valid first",
                path.clone(),
                dup,
                p.sample.to_vec(),
                401,
            ));
            let mut dup = wrong.clone();
            dup.push((header.to_string(), value.clone()));
            cases.push(case(
                "duplicate credential header, valid second",
                path.clone(),
                dup,
                p.sample.to_vec(),
                401,
            ));
            let mut dup = good.clone();
            dup.push((header.to_string(), value.clone()));
            cases.push(case(
                "same credential header twice",
                path.clone(),
                dup,
                p.sample.to_vec(),
                401,
            ));
            let mut empty = without.clone();
            empty.push((header.to_string(), String::new()));
            cases.push(case(
                "empty credential",
                path.clone(),
                empty,
                p.sample.to_vec(),
                401,
            ));
            let mut prefix = without.clone();
            prefix.push((header.to_string(), value[..value.len() / 2].to_string()));
            cases.push(case(
                "credential prefix",
                path.clone(),
                prefix,
                p.sample.to_vec(),
                401,
            ));
            let mut upper = without.clone();
            upper.push((header.to_uppercase(), format!("{value}x")));
            cases.push(case(
                "credential with a byte appended",
                path.clone(),
                upper,
                p.sample.to_vec(),
                401,
            ));
        }
        None => {
            cases.push(case(
                "no token",
                p.path.to_string(),
                vec![],
                p.sample.to_vec(),
                401,
            ));
            cases.push(case(
                "empty token",
                format!("{}/", p.path),
                vec![],
                p.sample.to_vec(),
                401,
            ));
            cases.push(case(
                "wrong token",
                format!("{}/wrong-token", p.path),
                vec![],
                p.sample.to_vec(),
                401,
            ));
            cases.push(case(
                "token prefix",
                format!("{}/{}", p.path, &p.secret[..p.secret.len() - 1]),
                vec![],
                p.sample.to_vec(),
                401,
            ));
            cases.push(case(
                "token with a byte appended",
                format!("{}/{}x", p.path, p.secret),
                vec![],
                p.sample.to_vec(),
                401,
            ));
            cases.push(case(
                "token in a header instead",
                p.path.to_string(),
                vec![("authorization".into(), format!("Bearer {}", p.secret))],
                p.sample.to_vec(),
                401,
            ));
            cases.push(case(
                "token twice",
                format!("{}/{}/{}", p.path, p.secret, p.secret),
                vec![],
                p.sample.to_vec(),
                404,
            ));
        }
    }
    // Another provider's secret is no good here.
    let other = if p.kind == "peddler" {
        WEGOCOD_SECRET
    } else {
        PEDDLER_SECRET
    };
    let (other_path, other_headers) = p.signed_with(other, p.sample);
    cases.push(case(
        "another endpoint's secret",
        other_path,
        other_headers,
        p.sample.to_vec(),
        401,
    ));

    // A valid signature over a tampered body: only signature schemes cover the body.
    if p.kind == "wegocod" {
        let tampered = String::from_utf8_lossy(p.sample).replace("delivered\"", "cancelled\"");
        assert_ne!(tampered.as_bytes(), p.sample);
        cases.push(case(
            "valid signature, tampered body",
            path.clone(),
            good.clone(),
            tampered.into_bytes(),
            401,
        ));
        let mut appended = p.sample.to_vec();
        appended.extend_from_slice(b" ");
        cases.push(case(
            "valid signature, body with a byte appended",
            path.clone(),
            good.clone(),
            appended,
            401,
        ));
        cases.push(case(
            "valid signature, truncated body",
            path.clone(),
            good.clone(),
            p.sample[..p.sample.len() - 1].to_vec(),
            401,
        ));
    }

    // Source address not allowed (valid credentials): 403.
    let (locked_path, locked_headers) = signed_request(
        p.kind,
        &p.path.replace("/webhooks/", "/locked/"),
        p.secret,
        p.sample,
    );
    cases.push(case(
        "IP not allowed",
        locked_path,
        locked_headers,
        p.sample.to_vec(),
        403,
    ));

    // Wrong method, valid credentials: 405.
    for method in [
        Method::GET,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
    ] {
        let mut c = case(
            format!("method {method}"),
            path.clone(),
            good.clone(),
            p.sample.to_vec(),
            405,
        );
        c.method = method;
        cases.push(c);
    }

    // Unknown paths: 404.
    let suffix = path.strip_prefix(p.path).unwrap_or_default().to_string();
    for bad in [
        format!("{}x{suffix}", p.path),
        format!("{}{suffix}", p.path.to_uppercase()),
        format!("/{}{suffix}", p.path),
        format!("{}/x{suffix}", p.path),
        format!("/webhooks{suffix}"),
    ] {
        cases.push(case(
            format!("unknown path {bad}"),
            bad,
            good.clone(),
            p.sample.to_vec(),
            404,
        ));
    }

    // Too large, declared or streamed, properly signed: 413.
    let big = format!("{{\"pad\":\"{}\"}}", "a".repeat(MAX_BODY + 10)).into_bytes();
    let (big_path, big_headers) = p.signed(&big);
    cases.push(case(
        "body over max_body",
        big_path.clone(),
        big_headers.clone(),
        big.clone(),
        413,
    ));
    let mut chunked = case(
        "chunked body over max_body",
        big_path,
        big_headers,
        big,
        413,
    );
    chunked.chunked = true;
    cases.push(chunked);

    // Not JSON, properly signed: 400. The content type does not rescue it.
    for (what, body) in not_json_bodies(p.sample) {
        let (path, headers) = p.signed(&body);
        cases.push(case(format!("not JSON: {what}"), path, headers, body, 400));
    }
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let body = b"a=1&b=2".to_vec();
        let (path, mut headers) = p.signed(&body);
        headers.retain(|(k, _)| !k.eq_ignore_ascii_case("content-type"));
        headers.push(("content-type".into(), ct.into()));
        cases.push(case(format!("not JSON as {ct}"), path, headers, body, 400));
    }
    cases
}

async fn send(bridge: &Bridge, c: &Case) -> reqwest::Response {
    let mut req = bridge.client.request(c.method.clone(), bridge.url(&c.path));
    for (k, v) in &c.headers {
        req = req.header(k, v);
    }
    req = if c.chunked {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            c.body.chunks(8192).map(|ch| Ok(ch.to_vec())).collect();
        req.body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
    } else {
        req.body(c.body.clone())
    };
    req.send().await.expect("request")
}

#[tokio::test]
async fn every_bad_input_for_every_provider_is_refused_and_nothing_published() {
    broker_available().await;
    let bridge = Bridge::start_with(BridgeOptions {
        top: format!("max_body = {MAX_BODY}"),
        endpoints: format!("{}\n{}", standard_endpoints(), locked_endpoints()),
        ..BridgeOptions::default()
    })
    .await;
    let mut q = bridge.consumer("#").await;
    let mut failures = Vec::new();
    let mut total = 0;
    for p in &providers() {
        for c in cases_for(p) {
            total += 1;
            let started = Instant::now();
            let resp = send(&bridge, &c).await;
            let status = resp.status().as_u16();
            let took = started.elapsed();
            let body = resp.text().await.unwrap_or_default();
            if status != c.expect {
                failures.push(format!(
                    "{} / {}: expected {}, got {status} {body}",
                    p.name(),
                    c.name,
                    c.expect
                ));
            }
            if took > Duration::from_secs(2) {
                failures.push(format!("{} / {}: took {took:?}", p.name(), c.name));
            }
            if status == 401 && body != r#"{"error":"unauthorized"}"# {
                failures.push(format!("{} / {}: 401 body {body}", p.name(), c.name));
            }
        }
        if let Some(m) = q.next(QUIET).await {
            failures.push(format!(
                "{}: published {} {}",
                p.name(),
                m.routing_key,
                String::from_utf8_lossy(&m.raw)
            ));
        }
    }
    assert!(total > 150, "{total} cases");
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The process survived all of it and still works.
    let peddler = providers().swap_remove(2);
    let (path, headers) = peddler.signed(peddler.sample);
    assert_eq!(
        bridge.post(&path, &headers, peddler.sample).await.status(),
        200
    );
    assert!(q.next(Duration::from_secs(5)).await.is_some());
    q.expect_none(QUIET).await;
    bridge.cleanup().await;
}

#[tokio::test]
async fn any_content_type_is_accepted_when_the_body_is_valid() {
    broker_available().await;
    let bridge = Bridge::start().await;
    let mut q = bridge.consumer("#").await;
    for p in &providers() {
        let (path, mut headers) = p.signed(p.sample);
        headers.retain(|(k, _)| !k.eq_ignore_ascii_case("content-type"));
        headers.push(("content-type".into(), "text/plain; charset=utf-8".into()));
        let resp = bridge.post(&path, &headers, p.sample).await;
        assert_eq!(resp.status(), 200, "{}", p.name());
        let m = q.next(Duration::from_secs(5)).await.expect("published");
        assert!(
            m.routing_key.starts_with(&format!("{}.", p.name())),
            "{}",
            m.routing_key
        );
        while q.next(Duration::from_millis(300)).await.is_some() {}
    }
    // WeGoCOD with no content type and a form content type (different orders, so both publish).
    let text = String::from_utf8_lossy(webhook_bridge::providers::wegocod::DELIVERED).to_string();
    for (i, ct) in [None, Some("application/x-www-form-urlencoded")]
        .into_iter()
        .enumerate()
    {
        let body = text.replace("ORD-000129", &format!("ORD-CT-{i}"));
        let (path, mut headers) = providers().swap_remove(1).signed(body.as_bytes());
        headers.retain(|(k, _)| !k.eq_ignore_ascii_case("content-type"));
        if let Some(ct) = ct {
            headers.push(("content-type".into(), ct.into()));
        }
        let resp = bridge.post(&path, &headers, body.as_bytes()).await;
        assert_eq!(resp.status(), 200);
        let m = q.next(Duration::from_secs(5)).await.expect("published");
        assert_eq!(m.body["data"]["entity_id"], format!("ORD-CT-{i}"));
    }
    q.expect_none(QUIET).await;
    bridge.cleanup().await;
}

#[tokio::test]
async fn slow_bodies_are_cut_off_for_every_provider() {
    broker_available().await;
    let bridge = Bridge::start_with(BridgeOptions {
        tables: "[limits]\nbody_read_timeout = \"1s\"\n".into(),
        ..BridgeOptions::default()
    })
    .await;
    let mut q = bridge.consumer("#").await;
    let mut tasks = Vec::new();
    for p in &providers() {
        let (path, headers) = p.signed(p.sample);
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: {}\r\n",
            p.sample.len()
        );
        for (k, v) in &headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let body = p.sample;
        let port = bridge.port;
        let name = p.name();
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect");
            let (mut reader, mut writer) = stream.into_split();
            writer.write_all(head.as_bytes()).await.expect("head");
            let trickle = tokio::spawn(async move {
                for b in body {
                    if writer.write_all(&[*b]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
            let started = Instant::now();
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            loop {
                match tokio::time::timeout(Duration::from_secs(5), reader.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                    Err(_) => panic!("{name}: connection still open after 5 s"),
                }
            }
            trickle.abort();
            let text = String::from_utf8_lossy(&got).to_string();
            assert!(text.starts_with("HTTP/1.1 408"), "{name}: {text}");
            assert!(started.elapsed() < Duration::from_secs(3), "{name}");
        }));
    }
    for t in tasks {
        t.await.expect("slow client task");
    }
    q.expect_none(QUIET).await;
    bridge.cleanup().await;
}

/// An isendu batch of `n` minimal tracking elements.
fn isendu_batch(n: usize) -> Vec<u8> {
    let element = r#"{"uuid":"u","status":"IN_TRANSIT"}"#;
    format!(
        "{{\"order\":[],\"tracking\":[{}]}}",
        vec![element; n].join(",")
    )
    .into_bytes()
}

#[tokio::test]
async fn isendu_batch_larger_than_max_body_is_413_and_nothing_published() {
    broker_available().await;
    let bridge = Bridge::start().await; // max_body 1 MiB
    let mut q = bridge.consumer("#").await;
    let body = isendu_batch(40_000);
    assert!(body.len() > 1024 * 1024);
    // The head alone: the bridge answers from the declared length, before any of the body is
    // sent (a client still writing a refused body may see its connection reset first).
    let mut s = TcpStream::connect(("127.0.0.1", bridge.port))
        .await
        .expect("connect");
    let head = format!(
        "POST /webhooks/isendu/{ISENDU_TOKEN} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("head");
    let mut answer = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut answer))
        .await
        .expect("answered before the body")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    q.expect_none(QUIET).await;
    bridge.cleanup().await;
}

#[tokio::test]
async fn isendu_batch_over_the_event_limit_is_refused_and_nothing_published() {
    broker_available().await;
    let bridge = Bridge::start().await;
    let mut q = bridge.consumer("#").await;
    let body = isendu_batch(MAX_EVENTS_PER_REQUEST + 1);
    assert!(
        body.len() < 1024 * 1024,
        "under max_body: the event limit decides"
    );
    let resp = bridge
        .post_signed("isendu", "/webhooks/isendu", ISENDU_TOKEN, &body)
        .await;
    assert!(
        [400, 413].contains(&resp.status().as_u16()),
        "{}",
        resp.status()
    );
    q.expect_none(QUIET).await;
    bridge.cleanup().await;
}

#[tokio::test]
async fn oversized_or_too_many_headers_are_refused_and_nothing_published() {
    broker_available().await;
    let bridge = Bridge::start().await;
    let mut q = bridge.consumer("#").await;
    let p = providers().swap_remove(2);
    let (path, headers) = p.signed(p.sample);
    let mut huge = headers.clone();
    huge.push(("x-padding".into(), "a".repeat(100 * 1024)));
    let mut many = headers.clone();
    for i in 0..200 {
        many.push((format!("x-extra-{i}"), "1".into()));
    }
    for (name, h) in [("one 100 KiB header", huge), ("200 headers", many)] {
        let status = match bridge
            .client
            .post(bridge.url(&path))
            .headers(
                h.iter()
                    .map(|(k, v)| {
                        (
                            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                            http::HeaderValue::from_str(v).unwrap(),
                        )
                    })
                    .collect(),
            )
            .body(p.sample)
            .send()
            .await
        {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0, // connection closed without an answer is acceptable too
        };
        assert!([431, 0].contains(&status), "{name}: {status}");
    }
    q.expect_none(QUIET).await;
    // Still serving.
    assert_eq!(bridge.post(&path, &headers, p.sample).await.status(), 200);
    bridge.cleanup().await;
}

/// Bytes allocated on the calling thread: the parse tests below measure a parse's peak with it.
mod peak {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static NOW: Cell<isize> = const { Cell::new(0) };
        static PEAK: Cell<isize> = const { Cell::new(0) };
        static CALLS: Cell<usize> = const { Cell::new(0) };
        static TOTAL: Cell<usize> = const { Cell::new(0) };
    }

    /// The system allocator, counting what each thread holds and its peak.
    pub struct Counting;

    // SAFETY: every call is forwarded to `System` unchanged; only thread-local counters are
    // updated besides (const-initialised `Cell`s, which never allocate).
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let p = unsafe { System.alloc(layout) };
            if !p.is_null() {
                count(layout.size());
                add(layout.size() as isize);
            }
            p
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { System.dealloc(ptr, layout) };
            add(-(layout.size() as isize));
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let p = unsafe { System.realloc(ptr, layout, new_size) };
            if !p.is_null() {
                count(new_size.saturating_sub(layout.size()));
                add(new_size as isize - layout.size() as isize);
            }
            p
        }
    }

    /// One allocation (or growth) of `bytes` more.
    fn count(bytes: usize) {
        let _ = CALLS.try_with(|c| c.set(c.get() + 1));
        let _ = TOTAL.try_with(|t| t.set(t.get() + bytes));
    }

    fn add(n: isize) {
        let _ = NOW.try_with(|now| {
            let v = now.get() + n;
            now.set(v);
            let _ = PEAK.try_with(|peak| peak.set(peak.get().max(v)));
        });
    }

    /// What `f` returns, and the most bytes it held allocated at once on this thread (on top of
    /// what was allocated before).
    pub fn measure<T>(f: impl FnOnce() -> T) -> (T, usize) {
        let (out, cost) = cost(f);
        (out, cost.peak)
    }

    /// What one call of a function allocates.
    #[derive(Debug, Clone, Copy)]
    pub struct Cost {
        /// The most bytes held at once, on top of what was allocated before.
        pub peak: usize,
        /// Allocations and reallocations.
        pub allocations: usize,
        /// Bytes allocated in all, freed or not (a growth counts what it added).
        pub bytes: usize,
    }

    /// What `f` returns, and what it allocated on this thread.
    pub fn cost<T>(f: impl FnOnce() -> T) -> (T, Cost) {
        let base = NOW.with(Cell::get);
        PEAK.with(|p| p.set(base));
        let calls = CALLS.with(Cell::get);
        let total = TOTAL.with(Cell::get);
        let out = f();
        let top = PEAK.with(Cell::get);
        let cost = Cost {
            peak: usize::try_from(top - base).unwrap_or(0),
            allocations: CALLS.with(Cell::get) - calls,
            bytes: TOTAL.with(Cell::get) - total,
        };
        (out, cost)
    }
}

#[global_allocator]
static ALLOCATOR: peak::Counting = peak::Counting;

/// A tracking element of about 200 bytes, as isendu sends them.
fn tracking_element(i: usize) -> String {
    format!(
        r#"{{"uuid":"0e6b2f93-7c1a-4d8e-a5f2-{i:012}","trackingNumber":"1Z999AA1{i:010}","status":"IN_TRANSIT","steps":[{{"timestamp":"2026-05-09T08:15:00Z","status":"IN_TRANSIT","location":"Milano"}}]}}"#
    )
}

/// Elements joined as an isendu batch of tracking updates, and as a generic split body.
fn batch_bodies(elements: &[String]) -> (Vec<u8>, Vec<u8>) {
    let joined = elements.join(",");
    (
        format!(r#"{{"order":[],"tracking":[{joined}]}}"#).into_bytes(),
        format!(r#"{{"kind":"parcel.scan","events":[{joined}]}}"#).into_bytes(),
    )
}

/// Peak bytes allocated while parsing `body` for `endpoint`, then also encoding every event into
/// its message (what a request holds at once before delivery), and the outcome.
fn parse_peak(
    endpoint: &webhook_bridge::config::EndpointConfig,
    body: &[u8],
) -> (
    Result<usize, webhook_bridge::providers::ParseError>,
    usize,
    usize,
) {
    use webhook_bridge::providers::{Inbound, Parsed};
    let headers = http::HeaderMap::new();
    let inbound = Inbound {
        options: &endpoint.options,
        headers: &headers,
        body,
    };
    let count = |parsed: Result<Parsed, _>| {
        parsed.map(|p| match p {
            Parsed::Events(e) => e.len(),
            Parsed::Reply(_) => 0,
        })
    };
    let (outcome, parse) = peak::measure(|| count(endpoint.provider.parse(&inbound)));
    let (_, with_messages) = peak::measure(|| {
        if let Ok(Parsed::Events(events)) = endpoint.provider.parse(&inbound) {
            let now = chrono::Utc::now();
            let messages: Vec<_> = events
                .iter()
                .map(|e| webhook_bridge::envelope::encode(endpoint, e, now).expect("encodes"))
                .collect();
            drop(events);
            drop(messages);
        }
    });
    (outcome, parse, with_messages)
}

fn parse_config() -> webhook_bridge::config::Config {
    let text = format!(
        "[amqp]\nurls = [\"amqp://127.0.0.1\"]\n{}\n{}",
        standard_endpoints(),
        r#"
[[endpoint]]
name = "generic-split"
provider = "generic"
path = "/g"
secret = "test-generic-split-secret"
auth = { kind = "bearer" }
[endpoint.generic]
event_pointer = "/kind"
split_pointer = "/events"
entity_id_pointer = "/uuid"

[[endpoint]]
name = "generic-single"
provider = "generic"
path = "/g1"
secret = "test-generic-single-secret"
auth = { kind = "bearer" }
[endpoint.generic]
event_pointer = "/type"
event_header = "x-github-event"
entity_id_pointer = "/data/id"
id_pointer = "/head_commit/id"
"#
    );
    webhook_bridge::config::Config::from_toml(&text).expect("config")
}

/// Batches (isendu, generic `split_pointer`) are counted while they are read, each element kept
/// as a slice of the body and parsed alone: a 1 MiB batch never becomes one tree of the whole
/// body, and one over the event limit is refused having built next to nothing. The figures are
/// printed (`--nocapture`) for docs/SECURITY.md.
#[test]
fn batches_are_parsed_without_a_tree_of_the_whole_body() {
    let config = parse_config();
    let endpoint = |provider: &str| {
        config
            .endpoints
            .iter()
            .find(|e| e.provider.name == provider)
            .expect("endpoint")
    };
    const MIB: usize = 1024 * 1024;
    let fit = MIB / (tracking_element(0).len() + 1) - 1;
    let elements: Vec<String> = (0..fit).map(tracking_element).collect();
    let (isendu, generic) = batch_bodies(&elements);
    // Elements of small numbers cost the most as a tree (a 32-byte `Value` per 2-byte number).
    let numbers = |n: usize| format!("[{}0]", "0,".repeat(n));
    let dense: Vec<String> = vec![format!("{{\"a\":{}}}", numbers(45)); 9_000];
    let over: Vec<String> = vec![numbers(48); MAX_EVENTS_PER_REQUEST + 1];
    let (dense_isendu, dense_generic) = batch_bodies(&dense);
    let (over_isendu, over_generic) = batch_bodies(&over);
    let kib = |n: usize| n / 1024;
    for (name, provider, body, events) in [
        (
            "isendu, 1 MiB of 200-byte elements",
            "isendu",
            &isendu,
            Some(fit),
        ),
        (
            "generic split, 200-byte elements",
            "generic",
            &generic,
            Some(fit),
        ),
        (
            "isendu, 9,000 elements of numbers",
            "isendu",
            &dense_isendu,
            Some(dense.len()),
        ),
        (
            "generic split, same elements",
            "generic",
            &dense_generic,
            Some(dense.len()),
        ),
        (
            "isendu, 10,001 elements of numbers",
            "isendu",
            &over_isendu,
            None,
        ),
        (
            "generic split, same elements",
            "generic",
            &over_generic,
            None,
        ),
    ] {
        assert!(body.len() <= MIB, "{name}: {} bytes", body.len());
        let (outcome, parse, with_messages) = parse_peak(endpoint(provider), body);
        println!(
            "{name}: body {} KiB, peak {} KiB parsing, {} KiB with the messages",
            kib(body.len()),
            kib(parse),
            kib(with_messages)
        );
        match events {
            Some(n) => {
                assert_eq!(outcome, Ok(n), "{name}");
                // What remains is the events (a copy of each element, keys, fields: about half a
                // KiB each besides the element) and the body's text; a tree of the whole body
                // would add ten times the body on top.
                let bound = 2 * body.len() + 512 * n;
                assert!(parse < bound, "{name}: {parse} bytes, over {bound}");
            }
            None => {
                assert!(
                    matches!(
                        outcome,
                        Err(webhook_bridge::providers::ParseError::TooManyEvents(_))
                    ),
                    "{name}: {outcome:?}"
                );
                // The slices of the elements read so far (16 bytes each), nothing of them.
                assert!(
                    parse < body.len() / 3,
                    "{name}: refused after {parse} bytes"
                );
            }
        }
    }
}

/// Every bundled sample of the providers that take one event per body, with the endpoint (of
/// [`parse_config`]) and the headers it is sent with.
fn single_event_samples(
    config: &webhook_bridge::config::Config,
) -> Vec<(
    String,
    &webhook_bridge::config::EndpointConfig,
    http::HeaderMap,
    &'static [u8],
)> {
    let mut out = Vec::new();
    for (provider, endpoint) in [
        ("modexpress", "modexpress-main"),
        ("wegocod", "wegocod-ma"),
        ("peddler", "peddler-nl"),
        ("mailship", "mailship-cz"),
        ("generic", "generic-single"),
    ] {
        let endpoint = config
            .endpoints
            .iter()
            .find(|e| e.name == endpoint)
            .expect("endpoint");
        for sample in webhook_bridge::providers::find(provider)
            .expect("provider")
            .samples
        {
            let mut headers = http::HeaderMap::new();
            if sample.name == "github_push" {
                headers.insert("x-github-event", http::HeaderValue::from_static("push"));
            }
            out.push((
                format!("{provider}/{}", sample.name),
                endpoint,
                headers,
                sample.body,
            ));
        }
    }
    out
}

/// The number of events of one parse, and what it allocated.
fn parse_cost(
    endpoint: &webhook_bridge::config::EndpointConfig,
    headers: &http::HeaderMap,
    body: &[u8],
) -> (
    Result<Vec<webhook_bridge::providers::Event>, webhook_bridge::providers::ParseError>,
    peak::Cost,
) {
    use webhook_bridge::providers::{Inbound, Parsed};
    let inbound = Inbound {
        options: &endpoint.options,
        headers,
        body,
    };
    let (parsed, cost) = peak::cost(|| {
        endpoint.provider.parse(&inbound).map(|p| match p {
            Parsed::Events(events) => events,
            Parsed::Reply(_) => Vec::new(),
        })
    });
    (parsed, cost)
}

/// A single-event body (modexpress, WeGoCOD, Peddler, Mailship, generic without
/// `split_pointer`) is not parsed into a tree either: each bundled sample, grown to 1 MiB by a
/// field of small numbers (the costliest shape as a tree), is parsed with the body's text as the
/// payload and little else. The figures are printed (`--nocapture`) for docs/SECURITY.md.
#[test]
fn single_event_bodies_are_parsed_without_a_tree() {
    const MIB: usize = 1024 * 1024;
    let config = parse_config();
    let kib = |n: usize| n / 1024;
    let mut over = Vec::new();
    for (name, endpoint, headers, sample) in single_event_samples(&config) {
        let text = std::str::from_utf8(sample).expect("UTF-8 sample");
        let open = text.find('{').expect("an object");
        let room = MIB - text.len() - r#""padding":[0],"#.len();
        let body = format!(
            "{}{{\"padding\":[{}0],{}",
            &text[..open],
            "0,".repeat(room / 2),
            &text[open + 1..]
        );
        assert!(
            body.len() <= MIB && body.len() > MIB - 4,
            "{name}: {}",
            body.len()
        );
        let (small, _) = parse_cost(endpoint, &headers, sample);
        let (large, cost) = parse_cost(endpoint, &headers, body.as_bytes());
        println!(
            "{name}: body {} KiB, peak {} KiB parsing ({:.1}x the body), {} allocations",
            kib(body.len()),
            kib(cost.peak),
            cost.peak as f64 / body.len() as f64,
            cost.allocations
        );
        let (small, large) = (small.expect("sample parses"), large.expect("body parses"));
        assert_eq!(large.len(), 1, "{name}");
        assert_eq!(
            large[0].kind, small[0].kind,
            "{name}: same event as the sample"
        );
        assert_eq!(large[0].entity_id, small[0].entity_id, "{name}");
        assert_eq!(
            large[0].payload.get(),
            body.trim(),
            "{name}: the body is the payload"
        );
        // The payload is a copy of the body; a tree of it would add 16 times the body.
        if cost.peak >= 2 * body.len() {
            over.push(format!("{name}: {} bytes for {}", cost.peak, body.len()));
        }
    }
    // A body of nothing but top-level keys: they are not all kept either.
    let mailship = config
        .endpoints
        .iter()
        .find(|e| e.name == "mailship-cz")
        .expect("endpoint");
    let head = r#"{"id":"m1","orderNumber":"o1","status":"delivered","#;
    let fill = |entry: &dyn Fn(usize) -> String| {
        let mut body = head.to_string();
        let mut i = 0;
        while body.len() + entry(i).len() + 8 < MIB {
            body.push_str(&entry(i));
            i += 1;
        }
        body.push_str(r#""end":0}"#);
        body
    };
    for (name, body) in [
        (
            "mailship, distinct keys",
            fill(&|i| format!(r#""k{i}":0,"#)),
        ),
        (
            "mailship, one key repeated",
            fill(&|_| r#""":0,"#.to_string()),
        ),
    ] {
        let (events, cost) = parse_cost(mailship, &http::HeaderMap::new(), body.as_bytes());
        println!(
            "{name}: body {} KiB, peak {} KiB parsing ({:.1}x the body), {} allocations",
            kib(body.len()),
            kib(cost.peak),
            cost.peak as f64 / body.len() as f64,
            cost.allocations
        );
        let events = events.expect("body parses");
        assert_eq!(events[0].kind, "order.status_changed", "{name}");
        assert_eq!(events[0].entity_id.as_deref(), Some("o1"), "{name}");
        if cost.peak >= 2 * body.len() {
            over.push(format!("{name}: {} bytes for {}", cost.peak, body.len()));
        }
    }
    assert!(over.is_empty(), "peak over twice the body: {over:?}");
}

/// Allocations and bytes of one parse of each bundled single-event sample, and the mean time of
/// a parse (meaningful in a release build), for docs/BENCHMARKS.md: `cargo nextest run
/// --cargo-profile release --test suite bad_input::single_event_samples_parse_cost --run-ignored only
/// --no-capture`.
#[test]
#[ignore = "prints figures for the docs"]
fn single_event_samples_parse_cost() {
    let config = parse_config();
    const ROUNDS: u32 = 20_000;
    let mut all = (0, 0, 0.0);
    let samples = single_event_samples(&config);
    for (name, endpoint, headers, body) in &samples {
        // Once first, so that nothing initialised on the first call is counted.
        let _ = parse_cost(endpoint, headers, body);
        let (parsed, cost) = parse_cost(endpoint, headers, body);
        let events = parsed.expect("sample parses");
        assert_eq!(events.len(), 1, "{name}");
        let start = std::time::Instant::now();
        for _ in 0..ROUNDS {
            let _ = std::hint::black_box(parse_cost(endpoint, headers, std::hint::black_box(body)));
        }
        let micros = start.elapsed().as_secs_f64() * 1e6 / f64::from(ROUNDS);
        println!(
            "{name:28} {:>5} bytes: {:>3} allocations, {:>6} bytes allocated, peak {:>6} bytes, \
             {micros:.2} µs",
            body.len(),
            cost.allocations,
            cost.bytes,
            cost.peak
        );
        all = (all.0 + cost.allocations, all.1 + cost.bytes, all.2 + micros);
    }
    let n = samples.len() as f64;
    println!(
        "mean over {} samples: {:.1} allocations, {:.0} bytes allocated, {:.2} µs per parse",
        samples.len(),
        all.0 as f64 / n,
        all.1 as f64 / n,
        all.2 / n
    );
}
