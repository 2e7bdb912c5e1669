//! The admin listener: `/healthz` (alive), `/readyz` (can accept webhooks), `/metrics`. Never
//! exposed to providers.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use super::AppState;
use super::answer::{Resp, error, json};

/// Open admin connections at most: probes and a scraper or two need a handful; one more is
/// closed at once, so a flood on the admin port costs a file descriptor for a moment, no task.
pub const ADMIN_MAX_CONNECTIONS: usize = 32;

/// How long an admin client may take to send a request head, and stay idle between requests.
const ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Admin listener: `/healthz` (alive), `/readyz` (can accept webhooks), `/metrics`.
pub async fn serve_admin(
    listener: TcpListener,
    state: Arc<AppState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let connections = Arc::new(Semaphore::new(ADMIN_MAX_CONNECTIONS));
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue; }
            },
        };
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            continue; // dropping the stream closes it
        };
        let st = Arc::clone(&state);
        let svc = service_fn(move |req: Request<Incoming>| {
            let st = Arc::clone(&st);
            async move { Ok::<_, Infallible>(admin(&st, &req)) }
        });
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(ADMIN_HEADER_TIMEOUT)
                .max_buf_size(16 * 1024)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
            drop(permit);
        });
    }
}

fn admin(state: &AppState, req: &Request<Incoming>) -> Resp {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
    match req.uri().path() {
        "/healthz" => json(StatusCode::OK, "{\"status\":\"ok\"}"),
        "/readyz" => {
            if state.delivery.ready() {
                json(StatusCode::OK, "{\"status\":\"ready\"}")
            } else {
                error(StatusCode::SERVICE_UNAVAILABLE, "not ready")
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
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
}
