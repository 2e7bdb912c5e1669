//! A minimal HTTP/1.1 keep-alive client, the load generator's default: each request is
//! serialised into one buffer and written with one `write`, the answer is read into a reused
//! buffer and parsed with `httparse` (the parser hyper itself uses), and the connection goes back
//! to the pool unless the bridge asked to close it.
//!
//! Why not hyper's client: in production the providers' HTTP clients run on their own machines,
//! but here the load generator shares two cores with the bridge and the broker, and every
//! microsecond it spends is taken from them. hyper's connection machinery costs the load
//! generator about as much CPU per request as the bridge's own HTTP handling; this client does
//! the same exchange on the wire (one request, `Content-Length` body, keep-alive) for a fraction
//! of it. `--client hyper` keeps hyper's client for comparison.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Conn {
    stream: TcpStream,
    /// Bytes read past the previous answer (none with a well-behaved server) and read space.
    buf: BytesMut,
    since: Instant,
}

/// Keep-alive connections to one address.
pub struct Pool {
    addr: SocketAddr,
    host: String,
    idle: Mutex<Vec<Conn>>,
}

/// See `client::MAX_IDLE`: the bridge closes connections idle for its header timeout.
const MAX_IDLE: Duration = Duration::from_secs(2);

/// Response heads larger than this are an error (the bridge's are a few hundred bytes).
const MAX_HEAD: usize = 16 * 1024;

impl Pool {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            host: addr.to_string(),
            idle: Mutex::new(Vec::new()),
        }
    }

    fn take(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(c) = idle.pop() {
            if c.since.elapsed() < MAX_IDLE {
                return Some(c);
            }
        }
        None
    }

    async fn connect(&self) -> Result<Conn, String> {
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect {}: {e}", self.addr))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        Ok(Conn {
            stream,
            buf: BytesMut::with_capacity(4096),
            since: Instant::now(),
        })
    }

    /// Send `method path` with `headers` and `body`; read the whole answer.
    pub async fn send(
        &self,
        method: &http::Method,
        path: &str,
        headers: &http::HeaderMap,
        body: &[u8],
    ) -> Result<(http::StatusCode, Bytes), String> {
        let mut out = Vec::with_capacity(512 + body.len());
        let _ = write!(
            out,
            "{method} {path} HTTP/1.1\r\nhost: {}\r\ncontent-length: {}\r\n",
            self.host,
            body.len()
        );
        for (name, value) in headers {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
        let mut conn = match self.take() {
            Some(c) => c,
            None => self.connect().await?,
        };
        conn.stream
            .write_all(&out)
            .await
            .map_err(|e| format!("write: {e}"))?;
        let (status, answer, keep) = read_response(&mut conn).await?;
        if keep {
            conn.since = Instant::now();
            self.idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(conn);
        }
        Ok((status, answer))
    }
}

/// Read one answer with a `Content-Length` body: (status, body, connection reusable).
async fn read_response(conn: &mut Conn) -> Result<(http::StatusCode, Bytes, bool), String> {
    loop {
        if let Some((head_len, status, body_len, keep)) = parse_head(&conn.buf)? {
            while conn.buf.len() < head_len + body_len {
                fill(conn).await?;
            }
            let mut answer = conn.buf.split_to(head_len + body_len);
            let body = answer.split_off(head_len).freeze();
            return Ok((status, body, keep));
        }
        if conn.buf.len() > MAX_HEAD {
            return Err("response head too large".into());
        }
        fill(conn).await?;
    }
}

async fn fill(conn: &mut Conn) -> Result<(), String> {
    conn.buf.reserve(4096);
    match conn.stream.read_buf(&mut conn.buf).await {
        Ok(0) => Err("connection closed".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("read: {e}")),
    }
}

/// `Some((head length, status, body length, keep-alive))` once the head is complete.
fn parse_head(buf: &[u8]) -> Result<Option<(usize, http::StatusCode, usize, bool)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("bad response: {e}")),
    };
    let status = resp
        .code
        .and_then(|c| http::StatusCode::from_u16(c).ok())
        .ok_or("response without a status")?;
    let mut body_len = None;
    let mut keep = resp.version == Some(1);
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or("bad content-length")?;
            body_len = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("chunked answers are not supported by the bench client".into());
        } else if h.name.eq_ignore_ascii_case("connection") {
            keep = !h.value.eq_ignore_ascii_case(b"close");
        }
    }
    Ok(Some((head_len, status, body_len.unwrap_or(0), keep)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_complete_head_and_waits_for_a_partial_one() {
        let full = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 14\r\n\r\n{\"accepted\":1}";
        let (head, status, len, keep) = parse_head(full).unwrap().unwrap();
        assert_eq!(status, http::StatusCode::OK);
        assert_eq!(len, 14);
        assert_eq!(&full[head..], b"{\"accepted\":1}");
        assert!(keep);
        assert!(parse_head(&full[..20]).unwrap().is_none());
    }

    #[test]
    fn connection_close_is_not_kept_and_chunked_is_refused() {
        let close =
            b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\ncontent-length: 0\r\n\r\n";
        let (_, status, _, keep) = parse_head(close).unwrap().unwrap();
        assert_eq!(status, http::StatusCode::SERVICE_UNAVAILABLE);
        assert!(!keep);
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        assert!(parse_head(chunked).is_err());
    }
}
