//! Where log lines go: a bounded queue in front of stderr, written by a thread of its own.
//!
//! A request thread never waits for stderr. In a container, stderr is a pipe drained by the
//! runtime's log collector; when the collector stalls (node under pressure, log volume full),
//! a synchronous `write(2)` blocks the runtime thread that made it, and with it every request
//! that thread was serving — webhooks would time out for want of a log line. Here a line is
//! handed to the writer thread instead; when [`BUFFERED_LINES`] lines are already waiting,
//! the new line is dropped and counted (`webhook_bridge_log_lines_dropped_total`), and the
//! webhook is answered as usual. The writer drains what is queued and flushes it with one
//! write where it can; at exit, queued lines are flushed (for at most about a second if stderr
//! is stuck).

use std::io::{BufWriter, Stderr};
use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};

/// Lines that may wait for the writer thread: at ~300 bytes a request line, about 2.5 MB at most,
/// and at 10,000 requests/s nearly a second of a stalled collector absorbed without a loss.
pub const BUFFERED_LINES: usize = 8192;

/// The writer thread's buffer: one `write(2)` per drained burst instead of one per line.
const WRITE_BUFFER: usize = 64 * 1024;

static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// The non-blocking stderr writer for the tracing subscriber, and the guard that flushes it on
/// drop (keep it until the end of `main`).
pub fn stderr_writer() -> (NonBlocking, WorkerGuard) {
    let out: BufWriter<Stderr> = BufWriter::with_capacity(WRITE_BUFFER, std::io::stderr());
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(BUFFERED_LINES)
        .thread_name("webhook-bridge-log")
        .finish(out);
    let _ = DROPPED.set(writer.error_counter());
    (writer, guard)
}

/// Log lines dropped so far because [`BUFFERED_LINES`] were already waiting; 0 when logging
/// does not go through [`stderr_writer`] (tests of the library, say).
pub fn dropped_lines() -> u64 {
    DROPPED
        .get()
        .map_or(0, |c| u64::try_from(c.dropped_lines()).unwrap_or(u64::MAX))
}
