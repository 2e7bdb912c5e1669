//! Where log lines go: a bounded buffer in front of stderr, written by a thread of its own.
//!
//! A request thread never waits for stderr. In a container, stderr is a pipe drained by the
//! runtime's log collector; when the collector stalls (node under pressure, log volume full),
//! a synchronous `write(2)` blocks the runtime thread that made it, and with it every request
//! that thread was serving — webhooks would time out for want of a log line. Here a line is
//! appended to a shared buffer instead; when [`BUFFERED_LINES`] lines are already waiting, the
//! new line is dropped and counted (`webhook_bridge_log_lines_dropped_total`), and the webhook
//! is answered as usual. At exit, buffered lines are flushed (for at most about a second if
//! stderr is stuck).
//!
//! The writer thread is woken only by the first line of a burst, then gathers for [`GATHER`]
//! before writing everything buffered with one `write`: at thousands of requests a second that
//! is a few hundred wake-ups of the thread instead of one per line, which would otherwise cost
//! a context switch on the cores the requests run on. A line therefore reaches stderr at most
//! about [`GATHER`] after it was logged.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, mpsc};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// Lines that may wait for the writer thread: at ~300 bytes a request line, about 2.5 MB at most,
/// and at 10,000 requests/s nearly a second of a stalled collector absorbed without a loss.
pub const BUFFERED_LINES: usize = 8192;

/// How long the writer thread, once woken by a line, lets more lines gather before it writes.
pub const GATHER: Duration = Duration::from_millis(5);

/// The buffer kept between writes; a larger one (after a burst or a stall) is given back.
const KEEP_BUFFER: usize = 64 * 1024;

/// How long the guard waits at exit for buffered lines to be written.
const FLUSH_AT_EXIT: Duration = Duration::from_secs(1);

static DROPPED: OnceLock<Arc<Shared>> = OnceLock::new();

#[derive(Default)]
struct Buffered {
    bytes: Vec<u8>,
    lines: usize,
    closing: bool,
}

#[derive(Default)]
struct Shared {
    buffered: Mutex<Buffered>,
    /// Signalled by the first line into an empty buffer, and at exit.
    wake: Condvar,
    dropped: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Buffered> {
        self.buffered.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Append one line, or drop and count it when [`BUFFERED_LINES`] are waiting.
    fn push(&self, line: &[u8]) {
        let mut b = self.lock();
        if b.lines >= BUFFERED_LINES {
            drop(b);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let first = b.lines == 0;
        b.bytes.extend_from_slice(line);
        b.lines += 1;
        drop(b);
        if first {
            self.wake.notify_one();
        }
    }
}

/// The tracing subscriber's writer: each formatted line is appended to the shared buffer.
#[derive(Clone)]
pub struct LogWriter(Arc<Shared>);

/// One line's writer, made per event by [`LogWriter`].
pub struct LineWriter<'a>(&'a Shared);

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> LineWriter<'a> {
        LineWriter(&self.0)
    }
}

impl Write for LineWriter<'_> {
    /// The formatter writes each event as one call: one call, one line.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Flushes the buffered lines when dropped (keep it until the end of `main`).
pub struct LogGuard {
    shared: Arc<Shared>,
    done: mpsc::Receiver<()>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
        let _ = self.done.recv_timeout(FLUSH_AT_EXIT);
    }
}

/// The stderr writer for the tracing subscriber, and the guard that flushes it on drop.
pub fn stderr_writer() -> (LogWriter, LogGuard) {
    writer_to(std::io::stderr())
}

fn writer_to<W: Write + Send + 'static>(out: W) -> (LogWriter, LogGuard) {
    let shared = Arc::new(Shared::default());
    let (done_tx, done) = mpsc::channel();
    let thread = Arc::clone(&shared);
    let spawned = std::thread::Builder::new()
        .name("webhook-bridge-log".into())
        .spawn(move || {
            write_lines(&thread, out);
            let _ = done_tx.send(());
        });
    if spawned.is_err() {
        // No writer thread: nothing will drain the buffer, so every line beyond it is dropped
        // and counted, as with a stalled stderr.
        eprintln!("cannot start the log writer thread; logging to the buffer only");
    }
    let _ = DROPPED.set(Arc::clone(&shared));
    (LogWriter(Arc::clone(&shared)), LogGuard { shared, done })
}

/// The writer thread: wait for a first line, let a burst gather, write it all, and again; at
/// exit, write what is left.
fn write_lines<W: Write>(shared: &Shared, mut out: W) {
    let mut spare = Vec::new();
    loop {
        let mut b = shared.lock();
        while b.lines == 0 && !b.closing {
            b = shared.wake.wait(b).unwrap_or_else(|p| p.into_inner());
        }
        if !b.closing {
            drop(b);
            std::thread::sleep(GATHER);
            b = shared.lock();
        }
        let closing = b.closing;
        let mut bytes = std::mem::replace(&mut b.bytes, std::mem::take(&mut spare));
        b.lines = 0;
        drop(b);
        if !bytes.is_empty() {
            // Nothing useful can be done about a failed write to stderr.
            let _ = out.write_all(&bytes).and_then(|()| out.flush());
        }
        if closing {
            return;
        }
        bytes.clear();
        if bytes.capacity() > KEEP_BUFFER {
            bytes = Vec::new();
        }
        spare = bytes;
    }
}

/// Log lines dropped so far because [`BUFFERED_LINES`] were already waiting; 0 when logging
/// does not go through [`stderr_writer`] (tests of the library, say).
pub fn dropped_lines() -> u64 {
    DROPPED
        .get()
        .map_or(0, |s| s.dropped.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Write` whose bytes the test can read, and that can be made to block.
    #[derive(Clone, Default)]
    struct Sink {
        bytes: Arc<Mutex<Vec<u8>>>,
        gate: Arc<Mutex<()>>,
    }

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _open = self.gate.lock().unwrap();
            self.bytes.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_are_written_in_order_and_flushed_at_exit() {
        let sink = Sink::default();
        let (writer, guard) = writer_to(sink.clone());
        for i in 0..1000 {
            writeln!(writer.make_writer(), "line {i}").unwrap();
        }
        drop(guard);
        let text = String::from_utf8(sink.bytes.lock().unwrap().clone()).unwrap();
        let expected: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(text, expected);
    }

    #[test]
    fn a_stuck_output_drops_and_counts_lines_beyond_the_buffer() {
        let sink = Sink::default();
        let stuck = sink.gate.lock().unwrap();
        let (writer, guard) = writer_to(sink.clone());
        // The first line is taken by the writer thread, which then blocks on the output.
        writeln!(writer.make_writer(), "first").unwrap();
        std::thread::sleep(GATHER * 10);
        for _ in 0..BUFFERED_LINES + 100 {
            writeln!(writer.make_writer(), "more").unwrap();
        }
        assert_eq!(writer.0.dropped.load(Ordering::Relaxed), 100);
        drop(stuck);
        drop(guard);
        let lines = sink.bytes.lock().unwrap().split(|&b| b == b'\n').count() - 1;
        assert_eq!(lines, 1 + BUFFERED_LINES);
    }
}
