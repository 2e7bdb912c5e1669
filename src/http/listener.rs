//! The provider listener: accepts connections up to `max_connections` (one more is answered 503
//! and closed), serves HTTP/1.1 with the head size and read-time limits, runs each request in a
//! task of its own ([`super::request::handle`]), and counts connections hyper ends in error.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tracing::{debug, info, warn};

use super::AppState;
use super::answer::Refusal;
use super::connection::{self, HeadStarted, Watched};
use super::request::{Trace, finish, handle, request_id};

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
    let limits = &state.config.limits;
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let overflow = Arc::new(Semaphore::new(OVERFLOW_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    let mut serve = http1::Builder::new();
    serve
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(MAX_HEADER_BYTES)
        .max_buf_size(64 * 1024)
        .writev(false);
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
        match Arc::clone(&connections).try_acquire_owned() {
            Ok(permit) => serve_connection(&state, &serve, &graceful, stream, peer, permit),
            Err(_) => {
                // Beyond the overflow allowance, dropping the stream closes it unanswered.
                if let Ok(permit) = Arc::clone(&overflow).try_acquire_owned() {
                    refuse_connection(&state, &refuse, stream, permit);
                }
            }
        }
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

/// Serve a connection within `max_connections`: each request in a task of its own, so a
/// client hanging up mid-request does not cancel a delivery in progress, and the request is
/// still counted and logged.
fn serve_connection(
    state: &Arc<AppState>,
    builder: &http1::Builder,
    graceful: &GracefulShutdown,
    stream: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
) {
    let st = Arc::clone(state);
    let svc = service_fn(move |req| {
        let st = Arc::clone(&st);
        async move {
            let answer = tokio::spawn(handle(st, peer, req))
                .await
                .unwrap_or_else(|_| Refusal::Panicked.response());
            Ok::<_, Infallible>(answer)
        }
    });
    let (stream, head_started) = Watched::new(stream);
    let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), svc));
    let st = Arc::clone(state);
    tokio::spawn(async move {
        connection_ended(&st, &head_started, conn.await);
        drop(permit);
    });
}

/// A connection over `max_connections`: its first request is answered 503 with `Retry-After`
/// (so the client learns why), then it is closed.
fn refuse_connection(
    state: &Arc<AppState>,
    builder: &http1::Builder,
    stream: TcpStream,
    permit: OwnedSemaphorePermit,
) {
    let st = Arc::clone(state);
    let svc = service_fn(move |req: Request<Incoming>| {
        let st = Arc::clone(&st);
        async move {
            let rid = request_id(req.headers());
            Ok::<_, Infallible>(finish(
                &st,
                &rid,
                &Trace::new(),
                Refusal::TooManyConnections.into(),
                Instant::now(),
            ))
        }
    });
    let (stream, head_started) = Watched::new(stream);
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    let st = Arc::clone(state);
    tokio::spawn(async move {
        connection_ended(&st, &head_started, conn.await);
        drop(permit);
    });
}

/// Count and log a provider connection that hyper ended in error (see [`ConnectionError`](crate::metrics::labels::ConnectionError)): one
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
