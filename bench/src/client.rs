//! The load generator's HTTP/1.1 clients: [`Pool`] picks the lean wire client (default, see
//! `wire.rs`) or hyper's connection-level client (`--client hyper`), below.
//!
//! hyper's: a pool of keep-alive connections, each driven by the task that sends on it.
//! `hyper_util`'s pooled client runs every connection in a task of its own and hands each
//! request and response across tasks (two extra task wake-ups per request, which on a
//! two-core machine shared with the broker and the bridge cost real microseconds of
//! scheduling delay and are charged to the bridge's latency). Here a request takes an idle
//! connection, polls the connection and the request in the same task, and puts it back: what
//! the bench adds to each request is one syscall pair, as a provider's own client would.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

type Conn = Pin<Box<Connection<TokioIo<TcpStream>, Full<Bytes>>>>;

struct Idle {
    sender: SendRequest<Full<Bytes>>,
    conn: Conn,
    since: Instant,
}

/// Which HTTP client the load generator uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// One buffer written per request, the answer parsed with httparse (`wire.rs`).
    Wire,
    /// hyper's HTTP/1.1 connection-level client.
    Hyper,
}

/// Keep-alive connections to one address, through the chosen client.
pub enum Pool {
    Wire(crate::wire::Pool),
    Hyper(HyperPool),
}

impl Pool {
    pub fn new(addr: SocketAddr, kind: Kind) -> Self {
        match kind {
            Kind::Wire => Self::Wire(crate::wire::Pool::new(addr)),
            Kind::Hyper => Self::Hyper(HyperPool::new(addr)),
        }
    }

    /// Send `req` (its URI's path and query are used; `Host` is set) and read the whole answer.
    pub async fn send(
        &self,
        req: http::Request<Full<Bytes>>,
    ) -> Result<(http::StatusCode, Bytes), String> {
        match self {
            Self::Hyper(pool) => pool.send(req).await,
            Self::Wire(pool) => {
                let (parts, body) = req.into_parts();
                // A `Full` body is ready at once; its error type is `Infallible`.
                let body = body
                    .collect()
                    .await
                    .map(|c| c.to_bytes())
                    .unwrap_or_default();
                let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                pool.send(&parts.method, path, &parts.headers, &body).await
            }
        }
    }
}

/// hyper's keep-alive connections to one address.
pub struct HyperPool {
    addr: SocketAddr,
    host: http::HeaderValue,
    idle: Mutex<Vec<Idle>>,
}

/// The bridge closes a keep-alive connection idle for `header_read_timeout` (5 s by default):
/// never reuse one that has been idle nearly that long.
const MAX_IDLE: Duration = Duration::from_secs(2);

impl HyperPool {
    pub fn new(addr: SocketAddr) -> Self {
        let host = http::HeaderValue::from_str(&addr.to_string())
            .unwrap_or_else(|_| http::HeaderValue::from_static("localhost"));
        Self {
            addr,
            host,
            idle: Mutex::new(Vec::new()),
        }
    }

    async fn connect(&self) -> Result<(SendRequest<Full<Bytes>>, Conn), String> {
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect {}: {e}", self.addr))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        Ok((sender, Box::pin(conn)))
    }

    fn take(&self) -> Option<(SendRequest<Full<Bytes>>, Conn)> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(c) = idle.pop() {
            if c.since.elapsed() < MAX_IDLE {
                return Some((c.sender, c.conn));
            }
        }
        None
    }

    async fn send(
        &self,
        mut req: http::Request<Full<Bytes>>,
    ) -> Result<(http::StatusCode, Bytes), String> {
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse::<http::Uri>()
            .map_err(|e| e.to_string())?;
        *req.uri_mut() = path;
        req.headers_mut()
            .insert(http::header::HOST, self.host.clone());
        let (mut sender, mut conn) = match self.take() {
            Some(c) => c,
            None => self.connect().await?,
        };
        let exchange = async {
            sender.ready().await.map_err(|e| e.to_string())?;
            let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok::<_, String>((status, body))
        };
        let result = tokio::select! {
            biased;
            r = exchange => r,
            r = &mut conn => Err(match r {
                Ok(()) => "connection closed".to_string(),
                Err(e) => e.to_string(),
            }),
        };
        if result.is_ok() && !sender.is_closed() {
            self.idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Idle {
                    sender,
                    conn,
                    since: Instant::now(),
                });
        }
        result
    }
}
