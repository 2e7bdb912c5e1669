//! `--request-path`: the bridge's own work on one single-event webhook, in this process, with no
//! HTTP, broker, log line or metrics: the steps of a served request that are pure CPU (routing,
//! the head's checks, the signature, parsing, the envelope), timed step by step over the same
//! signed WeGoCOD bodies the load phases send. No sockets and no other process take part, so
//! two builds compare to within a few percent on a machine where the load phases move ±20%
//! between rounds: the way to A/B a change to those steps before the full run.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use anyhow::{Result, bail};
use http::{HeaderMap, HeaderValue, Method};
use webhook_bridge::auth::{self, Credentials};
use webhook_bridge::config::Config;
use webhook_bridge::envelope;
use webhook_bridge::http::{Prepared, Router, offline};
use webhook_bridge::providers::json::Doc;
use webhook_bridge::providers::{Inbound, Parsed, isendu, wegocod};

use crate::{bridge, webhooks};

/// Distinct bodies, cycled: more than fit the caches of the machine's cores together with the
/// rest, fewer than take long to sign.
const BODIES: usize = 4096;

/// One signed request, as the load phases send it.
struct Request {
    headers: HeaderMap,
    body: Vec<u8>,
}

/// Run every step `iterations` times per round, `rounds` rounds, and print the median ns per
/// request of each.
pub fn run(iterations: usize, rounds: usize, batch: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = bridge::write_config(dir.path(), "amqp://127.0.0.1:1/%2f", "request-path", 1)?;
    let config = Config::load(&path)?;
    let endpoint = bridge::endpoint(&config, &wegocod::PROVIDER)?;
    let secret = bridge::secret(endpoint)?;
    let router = Router::new(&config.endpoints);
    let peer: SocketAddr = ([127, 0, 0, 1], 40000).into();
    let now = SystemTime::now();
    let requests = bodies(endpoint, secret, now)?;
    let whole = |r: &Request| {
        offline(
            &config,
            &router,
            peer,
            &Method::POST,
            &endpoint.path,
            &r.headers,
            &r.body,
        )
    };
    let first = &requests[0];
    match whole(first) {
        Ok(Prepared::Messages(m)) if m.len() == 1 => {}
        other => bail!("the bench's WeGoCOD request is not accepted offline: {other:?}"),
    }
    let received = chrono::Utc::now();
    let events = |r: &Request| {
        let inbound = Inbound {
            options: &endpoint.options,
            headers: &r.headers,
            body: &r.body,
        };
        match endpoint.provider.parse(&inbound) {
            Ok(Parsed::Events(events)) => events,
            _ => Vec::new(),
        }
    };
    let parsed: Vec<_> = requests.iter().map(events).collect();
    // isendu batches as the isendu phase sends them (`--batch` elements): the batch path's parse.
    let isendu = bridge::endpoint(&config, &isendu::PROVIDER)?;
    let batches: Vec<Vec<u8>> = (0..64)
        .map(|n| webhooks::isendu_batch("request-path", n, batch).into_bytes())
        .collect();
    let no_headers = HeaderMap::new();
    let batch_events = |i: usize| {
        let inbound = Inbound {
            options: &isendu.options,
            headers: &no_headers,
            body: &batches[i % batches.len()],
        };
        match isendu.provider.parse(&inbound) {
            Ok(Parsed::Events(events)) => events.len(),
            _ => 0,
        }
    };
    if batch_events(0) != batch {
        bail!("the bench's isendu batch does not parse into {batch} events");
    }

    println!(
        "request path, in process (no HTTP, broker, log line or metrics): {} distinct signed \
         WeGoCOD bodies of {} bytes, {iterations} requests per round, median of {rounds} rounds",
        requests.len(),
        first.body.len()
    );
    let isendu_name = format!("isendu batch of {batch}, whole (isendu::parse; ÷{batch} per event)");
    let steps: [(&str, &dyn Fn(usize) -> usize); 6] = [
        (
            "whole (route → head → signature → parse → envelope)",
            &|i| match whole(&requests[i % requests.len()]) {
                Ok(Prepared::Messages(m)) => m.len(),
                _ => 0,
            },
        ),
        ("signature (HMAC over the body)", &|i| {
            let r = &requests[i % requests.len()];
            let creds = Credentials {
                headers: &r.headers,
                path_token: None,
                body: &r.body,
                now,
            };
            usize::from(auth::verify(&endpoint.auth, &endpoint.secrets, &creds).is_ok())
        }),
        ("provider parse (wegocod::parse)", &|i| {
            events(&requests[i % requests.len()]).len()
        }),
        ("  of which the document check and cut (Doc::parse)", &|i| {
            Doc::parse(&requests[i % requests.len()].body).map_or(0, |d| usize::from(d.is_object()))
        }),
        ("envelope (envelope::encode)", &|i| {
            parsed[i % parsed.len()]
                .iter()
                .filter_map(|e| envelope::encode(endpoint, e, received).ok())
                .map(|m| m.body.len())
                .sum()
        }),
        (&isendu_name, &batch_events),
    ];
    for (name, step) in steps {
        // A batch is `batch` events' work: as many events per round as the other steps take.
        let iterations = if std::ptr::eq(name, isendu_name.as_str()) {
            (iterations / batch.max(1)).max(1)
        } else {
            iterations
        };
        let mut per_round = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let started = Instant::now();
            let mut sink = 0usize;
            for i in 0..iterations {
                sink = sink.wrapping_add(black_box(step(black_box(i))));
            }
            black_box(sink);
            per_round.push(started.elapsed().as_nanos() as f64 / iterations as f64);
        }
        per_round.sort_by(f64::total_cmp);
        let median = per_round[per_round.len() / 2];
        let (lo, hi) = (per_round[0], per_round[per_round.len() - 1]);
        println!("  {name}: {median:.0} ns per request (rounds {lo:.0}–{hi:.0})");
    }
    Ok(())
}

/// Signed WeGoCOD bodies as [`crate::webhooks::HttpDriver::wegocod_op`] sends them, each with its
/// own order reference.
fn bodies(
    endpoint: &webhook_bridge::config::EndpointConfig,
    secret: &webhook_bridge::secret::Secret,
    now: SystemTime,
) -> Result<Vec<Request>> {
    let sample = std::str::from_utf8(wegocod::DELIVERED)?;
    let Some((head, tail)) = sample.split_once("ORD-000129") else {
        bail!("the WeGoCOD sample has no ORD-000129");
    };
    let ts = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    (0..BODIES)
        .map(|n| {
            let body = format!("{head}request-path-{n}{tail}").into_bytes();
            let signed = auth::sign(&endpoint.auth, secret, &body, now, "");
            let mut headers = HeaderMap::new();
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            headers.insert(
                "x-webhook-event",
                HeaderValue::from_static("order.status_updated"),
            );
            headers.insert("x-webhook-timestamp", HeaderValue::from(ts));
            headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
            for (name, value) in signed.headers {
                headers.insert(name, value);
            }
            Ok(Request { headers, body })
        })
        .collect()
}
