//! Where log lines go: a bounded buffer in front of stderr, written by a thread of its own.
//!
//! A request thread never waits for stderr. In a container, stderr is a pipe drained by the
//! runtime's log collector; when the collector stalls (node under pressure, log volume full),
//! a synchronous `write(2)` blocks the runtime thread that made it, and with it every request
//! that thread was serving — webhooks would time out for want of a log line. Here a line is
//! appended to a shared buffer instead; when [`BUFFERED_LINES`] lines (or [`BUFFERED_BYTES`])
//! are already waiting, the new line is dropped and counted
//! (`webhook_bridge_log_lines_dropped_total`), and the webhook is answered as usual.
//!
//! **Why a buffer and not a queue of lines.** Handing each line to a sleeping thread costs a
//! `futex` wake-up per line on the request side and a context switch on the writer's: at
//! full load that was 7% of the bridge's CPU on the writer thread (mostly being scheduled) plus
//! 1.6% for the wake-ups (docs/BENCHMARKS.md, "The log writer"). Here the writer is woken by
//! the first line after it went to sleep, then gathers for [`GATHER`] before taking everything
//! with one swap and writing it with one `write`: at most ~100 wake-ups a second, whatever the
//! request rate, and a line appended while the writer is awake costs a lock and a copy.
//!
//! At exit, buffered lines are flushed (for at most about a second if stderr is stuck).

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, mpsc};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

pub mod json;

/// Lines that may wait for the writer thread: at ~300 bytes a request line, about 2.5 MB, and
/// at 10,000 requests/s nearly a second of a stalled collector absorbed without a loss.
pub const BUFFERED_LINES: usize = 8192;

/// Bytes that may wait, whatever the lines' length (a bound on memory, not a target).
pub const BUFFERED_BYTES: usize = 4 * 1024 * 1024;

/// How long the writer gathers lines after being woken, before it writes them.
const GATHER: Duration = Duration::from_millis(10);

/// The writer's spare buffer keeps at most this much capacity between writes: a burst that
/// filled megabytes does not stay resident.
const KEEP_CAPACITY: usize = 256 * 1024;

/// How long the guard waits at exit for buffered lines to be written.
const EXIT_FLUSH: Duration = Duration::from_secs(1);

/// The installed writer's state, read by [`dropped_lines`].
static INSTALLED: OnceLock<Arc<Shared>> = OnceLock::new();

/// The [`MakeWriter`] for the tracing subscriber: appends each line to the shared buffer.
#[derive(Clone)]
pub struct LineWriter(Arc<Shared>);

/// Flushes the buffer and stops the writer thread when dropped (keep it until the end of `main`).
pub struct LogGuard {
    shared: Arc<Shared>,
    exited: mpsc::Receiver<()>,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    dropped: AtomicU64,
}

#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    lines: usize,
    /// The writer waits on `wake`: the next line must notify it (and only that one).
    writer_asleep: bool,
    closing: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding the lock leaves a buffer of whole lines: still usable.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, line: &[u8]) {
        let mut p = self.lock();
        if p.lines >= BUFFERED_LINES || p.buf.len() + line.len() > BUFFERED_BYTES {
            drop(p);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        p.buf.extend_from_slice(line);
        p.lines += 1;
        if p.writer_asleep {
            p.writer_asleep = false;
            drop(p);
            self.wake.notify_one();
        }
    }
}

/// The sink a formatted event is written to: one `write_all` per line.
pub struct Line<'a>(&'a Shared);

impl Write for Line<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LineWriter {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        Line(&self.0)
    }
}

/// The buffered stderr writer for the tracing subscriber, and the guard that flushes it.
pub fn stderr_writer() -> (LineWriter, LogGuard) {
    writer_to(std::io::stderr())
}

fn writer_to(out: impl Write + Send + 'static) -> (LineWriter, LogGuard) {
    let shared = Arc::new(Shared {
        pending: Mutex::new(Pending::default()),
        wake: Condvar::new(),
        dropped: AtomicU64::new(0),
    });
    let _ = INSTALLED.set(Arc::clone(&shared));
    let (exited_tx, exited) = mpsc::channel();
    let for_thread = Arc::clone(&shared);
    let spawned = std::thread::Builder::new()
        .name("webhook-bridge-log".into())
        .spawn(move || {
            write_lines(&for_thread, out);
            let _ = exited_tx.send(());
        });
    if let Err(e) = spawned {
        // No writer thread: lines are buffered up to the bound, then counted as dropped.
        eprintln!("error: log writer thread not started: {e}");
    }
    (LineWriter(Arc::clone(&shared)), LogGuard { shared, exited })
}

/// The writer thread: sleep until a line arrives, gather for [`GATHER`], write all at once.
fn write_lines(shared: &Shared, mut out: impl Write) {
    let mut spare = Vec::new();
    loop {
        let mut p = shared.lock();
        while p.buf.is_empty() && !p.closing {
            p.writer_asleep = true;
            p = shared.wake.wait(p).unwrap_or_else(PoisonError::into_inner);
        }
        p.writer_asleep = false;
        if p.buf.is_empty() {
            return; // closing, and nothing left
        }
        if !p.closing {
            drop(p);
            std::thread::sleep(GATHER);
            p = shared.lock();
        }
        std::mem::swap(&mut p.buf, &mut spare);
        p.lines = 0;
        drop(p);
        // A stuck stderr blocks only this thread; lines meanwhile fill the buffer, then drop.
        let _ = out.write_all(&spare);
        let _ = out.flush();
        spare.clear();
        spare.shrink_to(KEEP_CAPACITY);
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
        let _ = self.exited.recv_timeout(EXIT_FLUSH);
    }
}

/// Log lines dropped so far because the buffer was full; 0 when logging does not go through
/// [`stderr_writer`] (tests of the library, say).
pub fn dropped_lines() -> u64 {
    INSTALLED
        .get()
        .map_or(0, |s| s.dropped.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that records what it was given, and can be made to block.
    #[derive(Clone, Default)]
    struct Sink {
        written: Arc<Mutex<Vec<u8>>>,
        writes: Arc<AtomicU64>,
        gate: Arc<Mutex<()>>,
    }

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _open = self.gate.lock().unwrap_or_else(PoisonError::into_inner);
            self.writes.fetch_add(1, Ordering::Relaxed);
            self.written
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_arrive_whole_in_order_and_in_few_writes() {
        let sink = Sink::default();
        let (writer, guard) = writer_to(sink.clone());
        for i in 0..5000 {
            writer
                .make_writer()
                .write_all(format!("line {i}\n").as_bytes())
                .unwrap();
        }
        drop(guard);
        let written = String::from_utf8(sink.written.lock().unwrap().clone()).unwrap();
        let expected: String = (0..5000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(written, expected);
        let writes = sink.writes.load(Ordering::Relaxed);
        assert!(writes < 100, "{writes} writes for 5000 lines");
    }

    #[test]
    fn a_stuck_sink_costs_lines_not_the_caller() {
        let sink = Sink::default();
        let stuck = sink.gate.lock().unwrap();
        let (writer, guard) = writer_to(sink.clone());
        let shared = Arc::clone(&writer.0);
        let started = std::time::Instant::now();
        for i in 0..(BUFFERED_LINES * 3) {
            writer
                .make_writer()
                .write_all(format!("line {i}\n").as_bytes())
                .unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "callers never wait"
        );
        let dropped = shared.dropped.load(Ordering::Relaxed);
        // The writer took at most one gathered batch before it blocked on the sink.
        assert!(
            dropped >= BUFFERED_LINES as u64 && dropped <= 2 * BUFFERED_LINES as u64,
            "{dropped} dropped"
        );
        let exiting = std::time::Instant::now();
        drop(guard);
        assert!(exiting.elapsed() < EXIT_FLUSH + Duration::from_millis(500));
        drop(stuck);
    }

    #[test]
    fn the_byte_bound_holds_for_long_lines() {
        let sink = Sink::default();
        let stuck = sink.gate.lock().unwrap();
        let (writer, guard) = writer_to(sink.clone());
        let shared = Arc::clone(&writer.0);
        let line = vec![b'x'; 64 * 1024];
        for _ in 0..200 {
            writer.make_writer().write_all(&line).unwrap();
        }
        assert!(shared.lock().buf.len() <= BUFFERED_BYTES);
        assert!(shared.dropped.load(Ordering::Relaxed) >= 200 - 2 * 64);
        drop(stuck);
        drop(guard);
    }
}
