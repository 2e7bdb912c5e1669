//! Provider connections that hyper ends before a request reaches [`crate::http::handle`]: a head
//! too large (hyper answers 431), a malformed head (400), a head not complete within
//! `header_read_timeout`, a reset mid-request. Those never show up in `requests_total`, so they
//! are classified here, counted in `connection_errors_total{reason}` and logged by `http.rs`.
//!
//! hyper reports the header timeout the same way (`Error::is_timeout`) whether the client sent
//! part of a head and stalled (slowloris) or sent nothing after the last answer (an idle
//! keep-alive connection, which is normal): it restarts the timer as soon as a response is
//! written and does not say whether any byte of a next request arrived. [`Watched`] tells them
//! apart by watching the socket.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::metrics::labels::ConnectionError;

/// How a connection that hyper ended with `error` is accounted for; `None` for an ending
/// that is no error: the header timeout of an idle connection (`head_started` false: no
/// byte since the last answer, or since accept), or a failed `shutdown` of a connection that
/// was closing anyway. A clean close by either side is not an `Err` at all.
pub fn classify(error: &hyper::Error, head_started: bool) -> Option<ConnectionError> {
    if error.is_parse_too_large() {
        Some(ConnectionError::HeaderTooLarge)
    } else if error.is_parse() {
        Some(ConnectionError::Malformed)
    } else if error.is_timeout() {
        head_started.then_some(ConnectionError::HeaderTimeout)
    } else if error.is_shutdown() {
        None
    } else {
        Some(ConnectionError::Io)
    }
}

/// Whether the client sent any byte of a request head since the bridge last wrote to it:
/// shared between the socket wrapper ([`Watched`]) and the task that awaits the connection.
#[derive(Clone, Default)]
pub struct HeadStarted(Arc<AtomicBool>);

impl HeadStarted {
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Stores only a change, so the common case (no change) leaves the cache line shared.
    fn set(&self, started: bool) {
        if self.get() != started {
            self.0.store(started, Ordering::Relaxed);
        }
    }
}

/// Whether freshly read bytes start (or continue) a request head: anything but the blank lines
/// HTTP/1.1 lets a client send between requests. Stops at the first such byte, usually the first.
fn starts_head(read: &[u8]) -> bool {
    read.iter().any(|&b| b != b'\r' && b != b'\n')
}

/// A socket that keeps [`HeadStarted`] up to date: set by a read that [starts a head](starts_head),
/// cleared by a write (an answer).
/// That costs a relaxed load per read and per write, and no allocation after construction.
///
/// A byte that arrives before the previous answer is written (a pipelined next request) is
/// forgotten by that write; if that next head then stalls, its timeout is taken for idleness.
pub struct Watched<S> {
    inner: S,
    head_started: HeadStarted,
}

impl<S> Watched<S> {
    pub fn new(inner: S) -> (Self, HeadStarted) {
        let head_started = HeadStarted::default();
        let watched = Self {
            inner,
            head_started: head_started.clone(),
        };
        (watched, head_started)
    }
}

impl<S: Unpin> Watched<S> {
    /// Run a write on the inner socket; anything written clears the flag.
    fn write_with(
        &mut self,
        write: impl FnOnce(Pin<&mut S>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        let result = write(Pin::new(&mut self.inner));
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.head_started.set(false);
        }
        result
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if !this.head_started.get() && buf.filled().get(before..).is_some_and(starts_head) {
            this.head_started.set(true);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().write_with(|s| s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .write_with(|s| s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_head_byte_sets_the_flag_and_an_answer_clears_it() {
        let (client, server) = tokio::io::duplex(1024);
        let (mut server, head_started) = Watched::new(server);
        let (mut client_rx, mut client_tx) = tokio::io::split(client);
        let mut buf = [0u8; 64];
        assert!(!head_started.get(), "nothing read yet");

        client_tx.write_all(b"\r\n\r\n").await.unwrap();
        let n = server.read(&mut buf).await.unwrap();
        assert_eq!(n, 4);
        assert!(
            !head_started.get(),
            "blank lines between requests are not a head"
        );

        client_tx.write_all(b"POST / HT").await.unwrap();
        let _ = server.read(&mut buf).await.unwrap();
        assert!(head_started.get());

        server.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        assert!(!head_started.get(), "an answer starts a new wait");
        let _ = client_rx.read(&mut buf).await.unwrap();

        client_tx.shutdown().await.unwrap();
        assert_eq!(server.read(&mut buf).await.unwrap(), 0);
        assert!(!head_started.get(), "EOF is no head");
    }
}
