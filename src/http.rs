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
use tracing::{debug, info, warn};

use crate::auth::{self, Credentials};
use crate::config::{AuthConfig, Config, EndpointConfig};
use crate::delivery::{Delivery, Outcome};
use crate::envelope;
use crate::metrics::Metrics;
use crate::providers::{self, Inbound, ParseError, Parsed};

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

/// Per-request facts gathered on the way, logged once at the end.
struct Trace {
    endpoint: Option<usize>,
    events: usize,
}

/// Serve one provider request. Never panics, never answers 2xx before the events are durable.
pub async fn handle(state: Arc<AppState>, peer: SocketAddr, req: Request<Incoming>) -> Resp {
    let started = Instant::now();
    let deadline = started + state.config.ack_deadline;
    let rid = request_id(&req);
    let mut trace = Trace {
        endpoint: None,
        events: 0,
    };
    state.metrics.in_flight_requests.inc();
    let (outcome, mut resp) = match Arc::clone(&state.in_flight).try_acquire_owned() {
        Ok(_permit) => process(&state, peer, req, deadline, &mut trace).await,
        Err(_) => (
            RequestOutcome::Overloaded,
            unavailable(Duration::from_secs(1)),
        ),
    };
    state.metrics.in_flight_requests.dec();
    if let Ok(v) = HeaderValue::from_str(&rid) {
        resp.headers_mut().insert("x-request-id", v);
    }
    let elapsed = started.elapsed();
    let (endpoint, provider) = match trace.endpoint.and_then(|i| state.config.endpoints.get(i)) {
        Some(ep) => (ep.name.as_str(), providers::provider_name(ep)),
        None => ("none", "none"),
    };
    state
        .metrics
        .requests_total
        .with_label_values(&[endpoint, provider, outcome.label()])
        .inc();
    if trace.endpoint.is_some() {
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
        events = trace.events,
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
    trace: &mut Trace,
) -> (RequestOutcome, Resp) {
    let config = &state.config;
    let path = req.uri().path().to_string();
    let Some((index, path_token)) = state.router.route(&path) else {
        return (
            RequestOutcome::NotFound,
            error_response(StatusCode::NOT_FOUND, "not found"),
        );
    };
    trace.endpoint = Some(index);
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
        endpoint,
        headers: &parts.headers,
        body: &body,
    };
    let events = match providers::parse(&inbound) {
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
    trace.events = events.len();
    let provider = providers::provider_name(endpoint);
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

    let outcome = state.delivery.deliver(&messages, deadline).await;
    let (event_outcome, result) = match outcome {
        Outcome::Accepted(n) => (
            "published",
            (
                RequestOutcome::Accepted,
                json_response(StatusCode::OK, format!("{{\"accepted\":{n}}}")),
            ),
        ),
        Outcome::Spooled(n) => (
            "spooled",
            (
                RequestOutcome::Spooled,
                json_response(StatusCode::OK, format!("{{\"spooled\":{n}}}")),
            ),
        ),
        Outcome::Duplicate(n) => (
            "duplicate",
            (
                RequestOutcome::Accepted,
                json_response(
                    StatusCode::OK,
                    format!("{{\"accepted\":0,\"duplicates\":{n}}}"),
                ),
            ),
        ),
        Outcome::Unavailable { retry_after } => (
            "failed",
            (RequestOutcome::Unavailable, unavailable(retry_after)),
        ),
    };
    for m in &messages {
        state
            .metrics
            .events_total
            .with_label_values(&[provider, &m.routing_key, event_outcome])
            .inc();
    }
    result
}

/// Accept provider connections until shutdown, then let in-flight requests finish within
/// `grace`. Connections beyond `max_connections` wait in the kernel backlog.
pub async fn serve_providers(
    listener: TcpListener,
    state: Arc<AppState>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let limits = state.config.limits.clone();
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(64 * 1024);
    loop {
        let permit = tokio::select! {
            _ = shutdown.changed() => break,
            p = Arc::clone(&connections).acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
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
        let st = Arc::clone(&state);
        let svc = service_fn(move |req| {
            let st = Arc::clone(&st);
            async move { Ok::<_, Infallible>(handle(st, peer, req).await) }
        });
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), svc));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(error = %e, "connection ended with error");
            }
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
    use crate::config::ProviderKind;
    use crate::providers::testing::endpoint;

    #[test]
    fn router_matches_exact_and_token_paths() {
        let eps = vec![
            endpoint(ProviderKind::Wegocod),
            endpoint(ProviderKind::Isendu),
        ];
        let r = Router::new(&eps);
        assert_eq!(r.route("/webhooks/wegocod"), Some((0, None)));
        assert_eq!(r.route("/webhooks/wegocod/x"), None);
        assert_eq!(r.route("/webhooks/isendu/tok"), Some((1, Some("tok"))));
        assert_eq!(r.route("/webhooks/isendu"), Some((1, Some(""))));
        assert_eq!(r.route("/webhooks/isendu/a/b"), None);
        assert_eq!(r.route("/nope"), None);
    }
}
