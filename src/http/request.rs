//! One provider request, top to bottom: route → method → IP → declared length → credentials
//! in the head (token schemes are decided here) → body budget → read the body (bounded in size
//! and time) → signature over the body (off the async workers when large) → parse → encode →
//! deliver → answer. Each step is a function returning `Result<_, Refusal>`; [`super::answer`]
//! maps the result to a status code.
//!
//! **Architecture invariant:** nothing here talks to lapin or the spool; messages go to
//! [`crate::delivery::Delivery`], which answers with what became of them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, error, info, warn};

use super::answer::{Answer, Refusal, Resp};
use super::guard::{GuardError, guard_margin, guarded};
use super::router::Route;
use super::{AppState, SMALL_BODY_MAX};
use crate::auth::{self, Credentials, HeadCheck};
use crate::config::{Config, EndpointConfig};
use crate::envelope;
use crate::message::Message;
use crate::metrics::labels::EventOutcome;
use crate::providers::{Event, Inbound, ParseError, Parsed};

/// Serve one provider request. Never answers 2xx before the events are durable; always answers
/// before `ack_deadline`, whatever happens inside (see [`guarded`]).
///
/// Deadline precedence, all measured from the moment the request head was parsed:
/// 1. the body must arrive within `body_read_timeout`, capped at the work deadline → 408;
/// 2. the work deadline (`ack_deadline` − 2 × margin) is what delivery gets: confirms not back by
///    then → spool or 503;
/// 3. the safety net (`ack_deadline` − margin) answers 503 + `Retry-After` if anything is still
///    running, and aborts it.
pub async fn handle(state: Arc<AppState>, peer: SocketAddr, req: Request<Incoming>) -> Resp {
    let started = Instant::now();
    let margin = guard_margin(state.config.ack_deadline);
    let answer_by = started + state.config.ack_deadline - margin;
    let work_until = answer_by - margin;
    let rid = request_id(req.headers());
    let trace = Trace::new();
    // Routed before the in-flight check, so a refused request is still counted on its endpoint.
    let route = state.router.route(req.uri().path());
    if let Some(route) = &route {
        trace.endpoint.store(route.endpoint, Ordering::Relaxed);
    }
    let gauge = InFlightGauge::enter(&state.metrics.in_flight_requests);
    let answer = match state.in_flight.try_acquire() {
        Ok(_permit) => {
            // Boxed: the request future is a few KiB; moved by pointer, not copied into each
            // wrapper (guard, timeout, task).
            let work = Box::pin(process(&state, peer, req, route, work_until, &trace));
            match guarded(answer_by, work).await {
                Ok(answer) => answer,
                Err(GuardError::Panicked) => {
                    error!(request_id = %rid, "request handler panicked; answering 500");
                    Refusal::Panicked.into()
                }
                Err(GuardError::Overran) => {
                    warn!(request_id = %rid, "request still running at the ack deadline; answering 503");
                    Refusal::Overran.into()
                }
            }
        }
        Err(_) => Refusal::Overloaded.into(),
    };
    drop(gauge);
    finish(&state, &rid, &trace, answer, started)
}

async fn process(
    state: &AppState,
    peer: SocketAddr,
    req: Request<Incoming>,
    route: Option<Route>,
    deadline: Instant,
    trace: &Trace,
) -> Answer {
    match steps(state, peer, req, route, deadline, trace).await {
        Ok(answer) => answer,
        Err(refusal) => refusal.into(),
    }
}

async fn steps(
    state: &AppState,
    peer: SocketAddr,
    req: Request<Incoming>,
    route: Option<Route>,
    deadline: Instant,
    trace: &Trace,
) -> Result<Answer, Refusal> {
    let config = &state.config;
    let route = route.ok_or(Refusal::NotFound)?;
    let path = req.uri().path();
    let admitted = admit(config, &route, req.method(), path, peer, req.headers())?;
    let endpoint = admitted.endpoint;
    let _budget = reserve_body_bytes(state, admitted.declared, endpoint.max_body)?;
    let (parts, body) = req.into_parts();
    let body = read_body(body, endpoint.max_body, config, deadline).await?;
    if admitted.head == HeadCheck::BodyRequired {
        let token = route.token(parts.uri.path());
        authenticate_body(&state.config, route.endpoint, &parts.headers, token, &body).await?;
    }
    let messages = match prepare(endpoint, &parts.headers, &body, chrono::Utc::now())? {
        Prepared::Messages(messages) => messages,
        Prepared::Reply(reply) => return Ok(Answer::Handshake(reply)),
    };
    trace.events.store(messages.len(), Ordering::Relaxed);
    let provider = endpoint.provider_name();
    state
        .metrics
        .batch_size
        .with_label_values(&[provider])
        .observe(messages.len() as f64);
    // Only the encoded messages live on while the broker confirms: the body and the request
    // head are freed now rather than held across the wait (the parsed events already are).
    drop(body);
    drop(parts);
    let delivered = state.delivery.deliver(&messages, deadline).await;
    count_events(state, endpoint, &messages, &delivered.events);
    Ok(delivered.outcome.into())
}

/// What the request head let through: its endpoint, the declared body length, and whether the
/// body still has to be authenticated.
struct Admitted<'c> {
    endpoint: &'c EndpointConfig,
    declared: Option<usize>,
    head: HeadCheck,
}

/// Everything decided from the head: endpoint → method → IP → declared length → credentials in
/// the head (a wrong token costs no body read).
fn admit<'c>(
    config: &'c Config,
    route: &Route,
    method: &Method,
    path: &str,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<Admitted<'c>, Refusal> {
    let endpoint = config
        .endpoints
        .get(route.endpoint)
        .ok_or(Refusal::NotFound)?;
    if method != Method::POST {
        return Err(Refusal::MethodNotAllowed);
    }
    check_ip(endpoint, peer, headers)?;
    let declared = check_declared_length(headers, endpoint.max_body)?;
    let head = authenticate_head(endpoint, headers, route.token(path))?;
    Ok(Admitted {
        endpoint,
        declared,
        head,
    })
}

/// What an authenticated body becomes: the messages handed to delivery, or a protocol reply.
#[derive(Debug)]
pub enum Prepared {
    Messages(Vec<Message>),
    Reply(Vec<u8>),
}

/// Parse → encode. The parsed events are dropped here; only the messages go on.
fn prepare(
    endpoint: &EndpointConfig,
    headers: &HeaderMap,
    body: &[u8],
    received: chrono::DateTime<chrono::Utc>,
) -> Result<Prepared, Refusal> {
    let events = match parse(endpoint, headers, body)? {
        Parsed::Events(events) => events,
        Parsed::Reply(reply) => return Ok(Prepared::Reply(reply)),
    };
    encode(endpoint, &events, received).map(Prepared::Messages)
}

/// One request through the same steps as [`handle`], with no I/O: routing, method, IP, declared
/// length, credentials, the body's size limit and signature, parse and encode, ending in what
/// would be handed to delivery. What it leaves out: the in-flight and body-byte budgets, reading
/// the body (given whole here) and the time limits, delivery itself, and the large-body hashing
/// off the async workers (the same check, run inline). For the fuzz target `request`.
pub fn offline(
    config: &Config,
    router: &super::Router,
    peer: SocketAddr,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Prepared, Refusal> {
    let route = router.route(path).ok_or(Refusal::NotFound)?;
    let admitted = admit(config, &route, method, path, peer, headers)?;
    let endpoint = admitted.endpoint;
    if body.len() > endpoint.max_body || admitted.declared.is_some_and(|n| n != body.len()) {
        // Over the limit, or not the length declared: hyper would not hand this body over.
        return Err(if body.len() > endpoint.max_body {
            Refusal::TooLarge
        } else {
            Refusal::BodyUnreadable
        });
    }
    if admitted.head == HeadCheck::BodyRequired {
        authenticate(endpoint, headers, route.token(path), body)?;
    }
    prepare(endpoint, headers, body, chrono::Utc::now())
}

fn check_ip(
    endpoint: &EndpointConfig,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<(), Refusal> {
    auth::check_ip(
        &endpoint.allow_ips,
        &endpoint.trusted_proxies,
        peer,
        headers,
    )
    .map_err(|e| {
        debug!(endpoint = %endpoint.name, reason = e.reason(), "request refused");
        Refusal::Forbidden
    })
}

/// A declared length over the limit is refused before a byte of the body is read; the declared
/// length, if any, is what the body may take.
fn check_declared_length(headers: &HeaderMap, max_body: usize) -> Result<Option<usize>, Refusal> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > max_body as u64 => Err(Refusal::TooLarge),
        Some(n) => Ok(Some(usize::try_from(n).unwrap_or(max_body))),
        None => Ok(None),
    }
}

/// Take the body's bytes from the body budget for as long as the request runs, or refuse it
/// (503) before reading anything: many slow clients with large bodies cannot add up past the
/// budget. A body that declares at most [`SMALL_BODY_MAX`] bytes may fall back on the reserve
/// kept for small bodies, so such clients cannot turn away the small webhooks either.
fn reserve_body_bytes(
    state: &AppState,
    declared: Option<usize>,
    max_body: usize,
) -> Result<OwnedSemaphorePermit, Refusal> {
    let bytes = declared.unwrap_or(max_body);
    let permits = u32::try_from(bytes.max(1)).unwrap_or(u32::MAX);
    Arc::clone(&state.body_budget)
        .try_acquire_many_owned(permits)
        .or_else(|e| match declared {
            Some(n) if n <= SMALL_BODY_MAX => {
                Arc::clone(&state.small_body_reserve).try_acquire_many_owned(permits)
            }
            _ => Err(e),
        })
        .map_err(|_| Refusal::BodyBudget)
}

/// The whole body, at most `max_body` bytes, within `body_read_timeout` (and the deadline).
async fn read_body(
    body: Incoming,
    max_body: usize,
    config: &Config,
    deadline: Instant,
) -> Result<Bytes, Refusal> {
    let read_until = (Instant::now() + config.limits.body_read_timeout).min(deadline);
    let read = Limited::new(body, max_body).collect();
    match tokio::time::timeout_at(read_until.into(), read).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(Refusal::TooLarge),
        Ok(Err(_)) => Err(Refusal::BodyUnreadable),
        Err(_) => Err(Refusal::BodyTimeout),
    }
}

/// What the request head alone says of the credentials (see [`auth::verify_head`]).
fn authenticate_head(
    endpoint: &EndpointConfig,
    headers: &HeaderMap,
    path_token: Option<&str>,
) -> Result<HeadCheck, Refusal> {
    auth::verify_head(
        &endpoint.auth,
        &endpoint.secrets,
        headers,
        path_token,
        SystemTime::now(),
    )
    .map_err(|e| {
        debug!(endpoint = %endpoint.name, reason = e.reason(), "authentication failed");
        Refusal::Unauthorized
    })
}

/// Bodies up to this size are hashed on the async worker: a MAC over 64 KiB takes well under a
/// millisecond in a release build, less than handing the work to another thread costs.
const INLINE_MAC_MAX: usize = 64 * 1024;

/// The signature over the body. A larger body is hashed on the blocking pool
/// (`spawn_blocking`), so one MAC per secret over a megabyte never holds an async worker, and
/// `/healthz` and other requests keep being served while many clients send large forged bodies.
/// `spawn_blocking` rather than `block_in_place`: the request's future stays a future, so the
/// deadline guard can still answer it and a current-thread runtime works too.
async fn authenticate_body(
    config: &Arc<Config>,
    index: usize,
    headers: &HeaderMap,
    path_token: Option<&str>,
    body: &Bytes,
) -> Result<(), Refusal> {
    let endpoint = config.endpoints.get(index).ok_or(Refusal::NotFound)?;
    if body.len() <= INLINE_MAC_MAX {
        return authenticate(endpoint, headers, path_token, body);
    }
    let config = Arc::clone(config);
    let headers = headers.clone();
    let path_token = path_token.map(str::to_owned);
    let body = body.clone();
    tokio::task::spawn_blocking(move || {
        let endpoint = config.endpoints.get(index).ok_or(Refusal::NotFound)?;
        authenticate(endpoint, &headers, path_token.as_deref(), &body)
    })
    .await
    .map_err(|e| {
        error!(error = %e, "signature check task failed");
        Refusal::Panicked
    })?
}

/// The full check, over the body, for schemes that sign it.
fn authenticate(
    endpoint: &EndpointConfig,
    headers: &HeaderMap,
    path_token: Option<&str>,
    body: &[u8],
) -> Result<(), Refusal> {
    let creds = Credentials {
        headers,
        path_token,
        body,
        now: SystemTime::now(),
    };
    auth::verify(&endpoint.auth, &endpoint.secrets, &creds).map_err(|e| {
        debug!(endpoint = %endpoint.name, reason = e.reason(), "authentication failed");
        Refusal::Unauthorized
    })
}

fn parse(endpoint: &EndpointConfig, headers: &HeaderMap, body: &[u8]) -> Result<Parsed, Refusal> {
    let inbound = Inbound {
        options: &endpoint.options,
        headers,
        body,
    };
    endpoint.provider.parse(&inbound).map_err(|e| match e {
        ParseError::HandshakeRefused => Refusal::Unauthorized,
        ParseError::NotJson(_) => Refusal::NotJson,
        ParseError::TooManyEvents(_) => Refusal::TooManyEvents,
    })
}

fn encode(
    endpoint: &EndpointConfig,
    events: &[Event],
    received: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<Message>, Refusal> {
    events
        .iter()
        .map(|event| {
            envelope::encode(endpoint, event, received).map_err(|e| {
                warn!(endpoint = %endpoint.name, error = %e, "event could not be encoded");
                Refusal::Unencodable
            })
        })
        .collect()
}

fn count_events(
    state: &AppState,
    endpoint: &EndpointConfig,
    messages: &[Message],
    verdicts: &[EventOutcome],
) {
    let prefix = endpoint.provider_name();
    for (m, verdict) in messages.iter().zip(verdicts) {
        let kind = endpoint
            .provider
            .metric_type(&endpoint.options, prefix, &m.routing_key);
        state
            .metrics
            .events_total
            .with_label_values(&[prefix, &kind, verdict.label()])
            .inc();
    }
}

/// Count, time and log a finished request: the one log line per request. It carries no path,
/// query, header, body or client address (see README, "Logs").
pub(super) fn finish(
    state: &AppState,
    rid: &str,
    trace: &Trace,
    answer: Answer,
    started: Instant,
) -> Resp {
    let outcome = answer.outcome();
    let mut resp = answer.into_response();
    if let Ok(v) = HeaderValue::from_str(rid) {
        resp.headers_mut().insert("x-request-id", v);
    }
    let elapsed = started.elapsed();
    let routed = trace.endpoint();
    let (endpoint, provider) = match routed.and_then(|i| state.config.endpoints.get(i)) {
        Some(ep) => (ep.name.as_str(), ep.provider_name()),
        None => ("none", "none"),
    };
    state
        .metrics
        .requests_total
        .with_label_values(&[endpoint, provider, outcome.label()])
        .inc();
    if routed.is_some() {
        state
            .metrics
            .request_duration_seconds
            .with_label_values(&[endpoint, provider])
            .observe(elapsed.as_secs_f64());
    }
    info!(
        request_id = %rid,
        endpoint,
        provider,
        outcome = outcome.label(),
        status = resp.status().as_u16(),
        events = trace.events.load(Ordering::Relaxed),
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        "request"
    );
    resp
}

/// A request id: the caller's `X-Request-Id` when it is short and printable, else a fresh one.
pub(super) fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        })
        .map(str::to_string)
        .unwrap_or_else(|| format!("{:016x}", fastrand::u64(..)))
}

/// Per-request facts gathered on the way, logged once at the end. Shared with the handler task
/// so that they survive a panic or an overrun of the deadline.
pub(super) struct Trace {
    /// Index of the routed endpoint, `usize::MAX` until routed.
    endpoint: AtomicUsize,
    events: AtomicUsize,
}

impl Trace {
    pub(super) fn new() -> Self {
        Self {
            endpoint: AtomicUsize::new(usize::MAX),
            events: AtomicUsize::new(0),
        }
    }

    fn endpoint(&self) -> Option<usize> {
        Some(self.endpoint.load(Ordering::Relaxed)).filter(|&i| i != usize::MAX)
    }
}

/// Keeps `in_flight_requests` right even if a request future is dropped half-way.
struct InFlightGauge(prometheus::IntGauge);

impl InFlightGauge {
    fn enter(gauge: &prometheus::IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for InFlightGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}
