//! The two listeners. The provider listener owns limits (connections, in-flight requests, header
//! and body read time, body size) and the request path, which reads top to bottom in
//! [`handle`]: route → method → IP → read body (bounded) → authenticate → parse → encode →
//! deliver → answer. The admin listener serves `/healthz`, `/readyz` and `/metrics`.
//!
//! **Architecture invariant:** this module never talks to lapin; it hands messages to
//! [`Delivery`] and maps its [`Outcome`] to a status code. HTTP status codes are decided here
//! and nowhere else.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tracing::{debug, error, info, warn};

use crate::auth::{self, AuthConfig, Credentials};
use crate::config::{Config, EndpointConfig};
use crate::connection::{self, HeadStarted, Watched};
use crate::delivery::{Delivery, Outcome};
use crate::envelope;
use crate::metrics::Metrics;
use crate::providers::{Inbound, ParseError, Parsed};

/// Shared by every connection of the provider and admin listeners.
pub struct AppState {
    pub config: Arc<Config>,
    pub router: Router,
    pub delivery: Arc<Delivery>,
    pub metrics: Metrics,
    /// Bounds requests processed at once; beyond it the answer is an immediate 503.
    in_flight: Arc<Semaphore>,
}

impl AppState {
    pub fn new(config: Arc<Config>, delivery: Arc<Delivery>, metrics: Metrics) -> Self {
        Self {
            router: Router::new(&config.endpoints),
            in_flight: Arc::new(Semaphore::new(config.limits.max_in_flight)),
            config,
            delivery,
            metrics,
        }
    }
}

/// Path → endpoint. Path-token endpoints match `<path>/<token>`; all others match exactly.
pub struct Router {
    exact: HashMap<String, usize>,
    token: HashMap<String, usize>,
}

impl Router {
    pub fn new(endpoints: &[EndpointConfig]) -> Self {
        let mut exact = HashMap::new();
        let mut token = HashMap::new();
        for (i, ep) in endpoints.iter().enumerate() {
            if matches!(ep.auth, AuthConfig::PathToken) {
                token.insert(ep.path.clone(), i);
            } else {
                exact.insert(ep.path.clone(), i);
            }
        }
        Self { exact, token }
    }

    /// The endpoint index and, for path-token endpoints, the token segment (possibly empty).
    pub fn route<'p>(&self, path: &'p str) -> Option<(usize, Option<&'p str>)> {
        if let Some(&i) = self.exact.get(path) {
            return Some((i, None));
        }
        if let Some(&i) = self.token.get(path) {
            return Some((i, Some("")));
        }
        let (prefix, last) = path.rsplit_once('/')?;
        self.token.get(prefix).map(|&i| (i, Some(last)))
    }
}

/// How a request ended, for metrics and logs. The label set is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOutcome {
    Accepted,
    Spooled,
    Handshake,
    Unavailable,
    Overloaded,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    TooLarge,
    BadRequest,
    Timeout,
    /// The handler panicked; answered 500 (the process keeps serving).
    Internal,
}

impl RequestOutcome {
    pub fn label(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Spooled => "spooled",
            Self::Handshake => "handshake",
            Self::Unavailable => "unavailable",
            Self::Overloaded => "overloaded",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::TooLarge => "too_large",
            Self::BadRequest => "bad_request",
            Self::Timeout => "timeout",
            Self::Internal => "internal_error",
        }
    }
}

type Resp = Response<Full<Bytes>>;

fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn error_response(status: StatusCode, message: &'static str) -> Resp {
    json_response(status, format!("{{\"error\":\"{message}\"}}"))
}

fn close_connection(mut resp: Resp) -> Resp {
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

fn unavailable(retry_after: Duration) -> Resp {
    let mut resp = error_response(StatusCode::SERVICE_UNAVAILABLE, "temporarily unavailable");
    if let Ok(v) = HeaderValue::from_str(&retry_after.as_secs().max(1).to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// A request id: the caller's `X-Request-Id` when it is short and printable, else a fresh one.
fn request_id(req: &Request<Incoming>) -> String {
    req.headers()
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
struct Trace {
    /// Index of the routed endpoint, `usize::MAX` until routed.
    endpoint: AtomicUsize,
    events: AtomicUsize,
}

impl Trace {
    fn new() -> Self {
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

/// How much earlier than `ack_deadline` the safety net answers, and how much earlier again the
/// body read and the delivery must give up: a tenth of the deadline, at most 100 ms each.
fn guard_margin(ack_deadline: Duration) -> Duration {
    (ack_deadline / 10).min(Duration::from_millis(100))
}

/// Why a guarded handler produced no answer of its own.
#[derive(Debug, PartialEq, Eq)]
pub enum GuardError {
    /// The handler panicked; the panic was caught.
    Panicked,
    /// The handler was still running at the answer deadline; it was dropped.
    Overran,
}

/// Run `work` until `answer_by`. A panic inside it, or an overrun, becomes an error instead of a
/// lost answer; an overrun is dropped on the spot so it holds no resources past the deadline.
/// The caller already runs in a task of its own per request (see `serve_providers`), so a
/// client hanging up does not cancel the work; this adds no second task.
pub async fn guarded<T, F>(answer_by: Instant, work: F) -> Result<T, GuardError>
where
    F: std::future::Future<Output = T>,
{
    use futures_util::FutureExt;
    let work = std::panic::AssertUnwindSafe(work).catch_unwind();
    match tokio::time::timeout_at(answer_by.into(), work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(_)) => Err(GuardError::Panicked),
        Err(_) => Err(GuardError::Overran),
    }
}

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
    let rid = request_id(&req);
    let trace = Trace::new();
    // Route before the in-flight check, so a refused request is still counted on its endpoint.
    if let Some((index, _)) = state.router.route(req.uri().path()) {
        trace.endpoint.store(index, Ordering::Relaxed);
    }
    let gauge = InFlightGauge::enter(&state.metrics.in_flight_requests);
    let (outcome, resp) = match state.in_flight.try_acquire() {
        Ok(_permit) => {
            // Boxed: the request future is a few KiB; moved by pointer, not copied into each
            // wrapper (guard, timeout, task).
            let work = Box::pin(process(&state, peer, req, work_until, &trace));
            match guarded(answer_by, work).await {
                Ok(answer) => answer,
                Err(GuardError::Panicked) => {
                    error!(request_id = %rid, "request handler panicked; answering 500");
                    (
                        RequestOutcome::Internal,
                        close_connection(error_response(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "internal error",
                        )),
                    )
                }
                Err(GuardError::Overran) => {
                    warn!(request_id = %rid, "request still running at the ack deadline; answering 503");
                    (
                        RequestOutcome::Timeout,
                        close_connection(unavailable(RETRY_AFTER_OVERLOAD)),
                    )
                }
            }
        }
        Err(_) => (
            RequestOutcome::Overloaded,
            unavailable(RETRY_AFTER_OVERLOAD),
        ),
    };
    drop(gauge);
    finish(&state, &rid, &trace, outcome, resp, started)
}

/// What overloaded clients are told to wait before retrying.
const RETRY_AFTER_OVERLOAD: Duration = Duration::from_secs(1);

/// Count, time and log a finished request: the one log line per request. It carries no path,
/// query, header, body or client address (see README, "Logs").
fn finish(
    state: &AppState,
    rid: &str,
    trace: &Trace,
    outcome: RequestOutcome,
    mut resp: Resp,
    started: Instant,
) -> Resp {
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

async fn process(
    state: &AppState,
    peer: SocketAddr,
    req: Request<Incoming>,
    deadline: Instant,
    trace: &Trace,
) -> (RequestOutcome, Resp) {
    let config = &state.config;
    let path = req.uri().path().to_string();
    let Some((index, path_token)) = state.router.route(&path) else {
        return (
            RequestOutcome::NotFound,
            error_response(StatusCode::NOT_FOUND, "not found"),
        );
    };
    trace.endpoint.store(index, Ordering::Relaxed);
    let Some(endpoint) = config.endpoints.get(index) else {
        return (
            RequestOutcome::NotFound,
            error_response(StatusCode::NOT_FOUND, "not found"),
        );
    };
    if req.method() != Method::POST {
        let mut resp = error_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return (RequestOutcome::MethodNotAllowed, resp);
    }
    if let Err(e) = auth::check_ip(
        &endpoint.allow_ips,
        &endpoint.trusted_proxies,
        peer,
        req.headers(),
    ) {
        debug!(endpoint = %endpoint.name, reason = e.reason(), "request refused");
        return (
            RequestOutcome::Forbidden,
            error_response(StatusCode::FORBIDDEN, "forbidden"),
        );
    }

    // Read the body, bounded in size and time. A declared length over the limit is refused
    // before a byte of the body is read.
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > config.max_body as u64) {
        return (
            RequestOutcome::TooLarge,
            close_connection(error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body too large",
            )),
        );
    }
    let (parts, body) = req.into_parts();
    let read_until = (Instant::now() + config.limits.body_read_timeout).min(deadline);
    let body = match tokio::time::timeout_at(
        read_until.into(),
        Limited::new(body, config.max_body).collect(),
    )
    .await
    {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return (
                RequestOutcome::TooLarge,
                close_connection(error_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body too large",
                )),
            );
        }
        Ok(Err(_)) => {
            return (
                RequestOutcome::BadRequest,
                close_connection(error_response(
                    StatusCode::BAD_REQUEST,
                    "body could not be read",
                )),
            );
        }
        Err(_) => {
            return (
                RequestOutcome::Timeout,
                close_connection(error_response(
                    StatusCode::REQUEST_TIMEOUT,
                    "body read timed out",
                )),
            );
        }
    };

    let creds = Credentials {
        headers: &parts.headers,
        path_token,
        body: &body,
        now: SystemTime::now(),
    };
    if let Err(e) = auth::verify(&endpoint.auth, &endpoint.secrets, &creds) {
        debug!(endpoint = %endpoint.name, reason = e.reason(), "authentication failed");
        return (
            RequestOutcome::Unauthorized,
            error_response(StatusCode::UNAUTHORIZED, "unauthorized"),
        );
    }

    let received = chrono::Utc::now();
    let inbound = Inbound {
        options: &endpoint.options,
        headers: &parts.headers,
        body: &body,
    };
    let events = match endpoint.provider.parse(&inbound) {
        Ok(Parsed::Events(events)) => events,
        Ok(Parsed::Reply(reply)) => {
            return (
                RequestOutcome::Handshake,
                json_response(StatusCode::OK, reply),
            );
        }
        Err(ParseError::HandshakeRefused) => {
            return (
                RequestOutcome::Unauthorized,
                error_response(StatusCode::UNAUTHORIZED, "unauthorized"),
            );
        }
        Err(ParseError::NotJson(_)) => {
            return (
                RequestOutcome::BadRequest,
                error_response(StatusCode::BAD_REQUEST, "body is not valid JSON"),
            );
        }
        Err(ParseError::TooManyEvents(_)) => {
            return (
                RequestOutcome::BadRequest,
                error_response(StatusCode::BAD_REQUEST, "too many events in one request"),
            );
        }
    };
    trace.events.store(events.len(), Ordering::Relaxed);
    let provider = endpoint.provider_name();
    state
        .metrics
        .batch_size
        .with_label_values(&[provider])
        .observe(events.len() as f64);
    let mut messages = Vec::with_capacity(events.len());
    for event in &events {
        match envelope::encode(endpoint, event, received) {
            Ok(m) => messages.push(m),
            Err(e) => {
                warn!(endpoint = %endpoint.name, error = %e, "event could not be encoded");
                return (
                    RequestOutcome::BadRequest,
                    error_response(StatusCode::BAD_REQUEST, "event could not be encoded"),
                );
            }
        }
    }

    // Only the encoded messages live on while the broker confirms: the body, the parsed events
    // and the request head are freed now rather than held across the wait.
    drop(events);
    drop(body);
    drop(parts);
    let delivered = state.delivery.deliver(&messages, deadline).await;
    let with_duplicates = |key: &str, n: usize, d: usize| {
        if d == 0 {
            format!("{{\"{key}\":{n}}}")
        } else {
            format!("{{\"{key}\":{n},\"duplicates\":{d}}}")
        }
    };
    let result = match delivered.outcome {
        Outcome::Accepted {
            published,
            duplicates,
        } => (
            RequestOutcome::Accepted,
            json_response(
                StatusCode::OK,
                with_duplicates("accepted", published, duplicates),
            ),
        ),
        Outcome::Spooled {
            spooled,
            duplicates,
        } => (
            RequestOutcome::Spooled,
            json_response(
                StatusCode::OK,
                with_duplicates("spooled", spooled, duplicates),
            ),
        ),
        Outcome::Duplicate(n) => (
            RequestOutcome::Accepted,
            json_response(StatusCode::OK, with_duplicates("accepted", 0, n)),
        ),
        Outcome::Unavailable { retry_after } => {
            (RequestOutcome::Unavailable, unavailable(retry_after))
        }
    };
    for (m, verdict) in messages.iter().zip(&delivered.events) {
        state
            .metrics
            .events_total
            .with_label_values(&[provider, &m.routing_key, verdict.label()])
            .inc();
    }
    result
}

/// Request line plus headers; more is answered 431 and the connection closed. Providers send a
/// few hundred bytes; an ingress adds a few forwarding headers.
const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Connections over `max_connections` that are still read and answered 503 (then closed), so
/// a client learns why; beyond this many more, excess connections are closed unanswered.
const OVERFLOW_CONNECTIONS: usize = 64;

/// Accept provider connections until shutdown, then let in-flight requests finish within
/// `grace`. A connection over `max_connections` gets one `503` with `Retry-After` and is closed.
///
/// Idle keep-alive connections are closed after `header_read_timeout`: hyper restarts the header
/// timer as soon as a response is written, so waiting for the next request counts as reading
/// its headers.
/// A connection hyper ends in error before or instead of a request (431, 400, a stalled head, a
/// reset) is counted and logged by [`connection_ended`]; an idle one closed that way is not.
pub async fn serve_providers(
    listener: TcpListener,
    state: Arc<AppState>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let limits = state.config.limits.clone();
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let overflow = Arc::new(Semaphore::new(OVERFLOW_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(MAX_HEADER_BYTES)
        .max_buf_size(64 * 1024);
    let mut refuse = http1::Builder::new();
    refuse
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout.min(Duration::from_secs(1)))
        .keep_alive(false)
        .max_header_size(MAX_HEADER_BYTES)
        .max_buf_size(64 * 1024);
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            let Ok(permit) = Arc::clone(&overflow).try_acquire_owned() else {
                continue; // dropping the stream closes it
            };
            let st = Arc::clone(&state);
            let svc = service_fn(move |_req: Request<Incoming>| {
                let st = Arc::clone(&st);
                async move {
                    let resp = close_connection(unavailable(RETRY_AFTER_OVERLOAD));
                    let rid = format!("{:016x}", fastrand::u64(..));
                    Ok::<_, Infallible>(finish(
                        &st,
                        &rid,
                        &Trace::new(),
                        RequestOutcome::Overloaded,
                        resp,
                        Instant::now(),
                    ))
                }
            });
            let (stream, head_started) = Watched::new(stream);
            let conn = refuse.serve_connection(TokioIo::new(stream), svc);
            let st = Arc::clone(&state);
            tokio::spawn(async move {
                connection_ended(&st, &head_started, conn.await);
                drop(permit);
            });
            continue;
        };
        let st = Arc::clone(&state);
        let svc = service_fn(move |req| {
            let st = Arc::clone(&st);
            async move {
                // Its own task: a client hanging up mid-request does not cancel a delivery in
                // progress, and the request is still counted and logged.
                let answer = tokio::spawn(handle(st, peer, req))
                    .await
                    .unwrap_or_else(|_| {
                        close_connection(error_response(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "internal error",
                        ))
                    });
                Ok::<_, Infallible>(answer)
            }
        });
        let (stream, head_started) = Watched::new(stream);
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), svc));
        let st = Arc::clone(&state);
        tokio::spawn(async move {
            connection_ended(&st, &head_started, conn.await);
            drop(permit);
        });
    }
    drop(listener);
    info!(
        grace_ms = grace.as_millis() as u64,
        "stopped accepting; draining in-flight requests"
    );
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("grace period over with requests still open");
    }
}

/// Count and log a provider connection that hyper ended in error (see [`ConnectionError`]): one
/// `info` line with the reason and hyper's error (a fixed description, or the socket error);
/// never the client's address (see README, "Logs") nor any byte it sent.
fn connection_ended(state: &AppState, head_started: &HeadStarted, ended: Result<(), hyper::Error>) {
    let Err(e) = ended else { return };
    let Some(reason) = connection::classify(&e, head_started.get()) else {
        debug!(error = %e, "connection closed");
        return;
    };
    state
        .metrics
        .connection_errors_total
        .with_label_values(&[reason.label()])
        .inc();
    info!(reason = reason.label(), error = %e, "connection error");
}

/// Admin listener: `/healthz` (alive), `/readyz` (can accept webhooks), `/metrics`.
pub async fn serve_admin(
    listener: TcpListener,
    state: Arc<AppState>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue; }
            },
        };
        let st = Arc::clone(&state);
        let svc = service_fn(move |req: Request<Incoming>| {
            let st = Arc::clone(&st);
            async move { Ok::<_, Infallible>(admin(&st, &req)) }
        });
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn admin(state: &AppState, req: &Request<Incoming>) -> Resp {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return error_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
    match req.uri().path() {
        "/healthz" => json_response(StatusCode::OK, "{\"status\":\"ok\"}"),
        "/readyz" => {
            if state.delivery.ready() {
                json_response(StatusCode::OK, "{\"status\":\"ready\"}")
            } else {
                error_response(StatusCode::SERVICE_UNAVAILABLE, "not ready")
            }
        }
        "/metrics" => {
            let mut resp = Response::new(Full::new(Bytes::from(state.metrics.render())));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            resp
        }
        _ => error_response(StatusCode::NOT_FOUND, "not found"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::endpoint;

    #[test]
    fn router_matches_exact_and_token_paths() {
        let eps = vec![endpoint("wegocod"), endpoint("isendu")];
        let r = Router::new(&eps);
        assert_eq!(r.route("/webhooks/wegocod"), Some((0, None)));
        assert_eq!(r.route("/webhooks/wegocod/x"), None);
        assert_eq!(r.route("/webhooks/isendu/tok"), Some((1, Some("tok"))));
        assert_eq!(r.route("/webhooks/isendu"), Some((1, Some(""))));
        assert_eq!(r.route("/webhooks/isendu/a/b"), None);
        assert_eq!(r.route("/nope"), None);
    }

    #[tokio::test]
    async fn guarded_turns_a_panic_into_an_error_and_keeps_running() {
        let soon = Instant::now() + Duration::from_secs(5);
        let r = guarded(soon, async {
            let v: Vec<u8> = Vec::new();
            v[std::hint::black_box(3)]
        })
        .await;
        assert_eq!(r, Err(GuardError::Panicked));
        assert_eq!(guarded(soon, async { 7 }).await, Ok(7));
    }

    #[tokio::test]
    async fn guarded_answers_at_the_deadline_and_aborts_the_work() {
        let finished = Arc::new(AtomicUsize::new(0));
        let f = Arc::clone(&finished);
        let started = Instant::now();
        let r = guarded(started + Duration::from_millis(200), async move {
            tokio::time::sleep(Duration::from_millis(600)).await;
            f.store(1, Ordering::SeqCst);
        })
        .await;
        assert_eq!(r, Err(GuardError::Overran));
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(190) && took < Duration::from_millis(400),
            "{took:?}"
        );
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(
            finished.load(Ordering::SeqCst),
            0,
            "overrun work was aborted"
        );
    }

    #[test]
    fn guard_margin_is_a_tenth_capped_at_100ms() {
        assert_eq!(
            guard_margin(Duration::from_secs(4)),
            Duration::from_millis(100)
        );
        assert_eq!(
            guard_margin(Duration::from_millis(500)),
            Duration::from_millis(50)
        );
    }
}
