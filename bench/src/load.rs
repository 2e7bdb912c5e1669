//! Load drivers: a closed loop (N workers, each waits for its answer before sending again) and
//! an open loop (sends on a fixed schedule; latency counted from the scheduled time, so a stall
//! is charged to every request it delayed — no coordinated omission).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// One unit of work (a publish+confirm, or an HTTP request): `Ok(events acknowledged)`.
pub type Op = Arc<
    dyn Fn(usize, u64) -> Pin<Box<dyn Future<Output = Result<u64, String>> + Send>> + Send + Sync,
>;

/// Latencies in microseconds, 1 µs to 60 s, 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

#[derive(Debug)]
pub struct PhaseResult {
    pub hist: Histogram<u64>,
    /// Completed in the measured window.
    pub measured_ops: u64,
    pub measured_events: u64,
    pub window: Duration,
    /// Everything acknowledged in the phase, warm-up included (what the queue must hold).
    pub acked_ops: u64,
    pub acked_events: u64,
    pub errors: u64,
    pub first_error: Option<String>,
}

impl PhaseResult {
    fn new(window: Duration) -> Self {
        Self {
            hist: histogram(),
            measured_ops: 0,
            measured_events: 0,
            window,
            acked_ops: 0,
            acked_events: 0,
            errors: 0,
            first_error: None,
        }
    }

    /// Several phases as one: counts and histograms added, windows summed.
    pub fn combine(parts: Vec<PhaseResult>) -> PhaseResult {
        let window = parts.iter().map(|p| p.window).sum();
        let mut total = PhaseResult::new(window);
        for p in parts {
            total.merge(p);
        }
        total
    }

    fn merge(&mut self, o: PhaseResult) {
        let _ = self.hist.add(&o.hist);
        self.measured_ops += o.measured_ops;
        self.measured_events += o.measured_events;
        self.acked_ops += o.acked_ops;
        self.acked_events += o.acked_events;
        self.errors += o.errors;
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
    }

    fn record(&mut self, result: Result<u64, String>, latency: Duration, measured: bool) {
        match result {
            Ok(n) => {
                self.acked_ops += 1;
                self.acked_events += n;
                if measured {
                    self.measured_ops += 1;
                    self.measured_events += n;
                    let _ = self.hist.record((latency.as_micros() as u64).max(1));
                }
            }
            Err(e) => {
                self.errors += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(e);
                }
            }
        }
    }

    pub fn events_per_sec(&self) -> f64 {
        self.measured_events as f64 / self.window.as_secs_f64()
    }

    pub fn ops_per_sec(&self) -> f64 {
        self.measured_ops as f64 / self.window.as_secs_f64()
    }

    /// Latency quantile in microseconds.
    pub fn p(&self, q: f64) -> u64 {
        self.hist.value_at_quantile(q)
    }
}

/// `conc` workers send back to back for `warmup + duration`; only answers that arrive inside
/// the measured window count towards rates and latencies.
pub async fn closed_loop(conc: usize, warmup: Duration, duration: Duration, op: Op) -> PhaseResult {
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let mut set = JoinSet::new();
    for worker in 0..conc {
        let op = Arc::clone(&op);
        set.spawn(async move {
            let mut r = PhaseResult::new(duration);
            let mut seq = 0u64;
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let result = op(worker, seq).await;
                seq += 1;
                let t1 = Instant::now();
                let failed = result.is_err();
                r.record(result, t1 - t0, t0 >= measure_from && t1 <= end);
                if failed {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            r
        });
    }
    let mut total = PhaseResult::new(duration);
    while let Some(r) = set.join_next().await {
        if let Ok(r) = r {
            total.merge(r);
        }
    }
    report_errors("closed loop", &total);
    total
}

/// `window` operations kept in flight by **one** task (no task per worker): each time one
/// completes, the next starts in its slot. With lapin, publishes started this way leave in
/// bursts and their confirms come back as multiple-acks that resolve many futures in one wake-up
/// of this task; with `window` closed-loop workers, each confirm wakes a task of its own.
/// Measured like [`closed_loop`]: only completions inside the window count.
pub async fn pipelined(window: usize, warmup: Duration, duration: Duration, op: Op) -> PhaseResult {
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let mut r = PhaseResult::new(duration);
    let mut in_flight = FuturesUnordered::new();
    let start_op = |slot: usize, seq: u64| {
        let fut = op(slot, seq);
        async move {
            let t0 = Instant::now();
            let result = fut.await;
            (slot, t0, result)
        }
    };
    let mut seq = 0u64;
    for slot in 0..window {
        in_flight.push(start_op(slot, seq));
        seq += 1;
    }
    while let Some((slot, t0, result)) = in_flight.next().await {
        let t1 = Instant::now();
        let failed = result.is_err();
        r.record(result, t1 - t0, t0 >= measure_from && t1 <= end);
        if failed {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if t1 < end {
            in_flight.push(start_op(slot, seq));
            seq += 1;
        }
    }
    report_errors("pipelined", &r);
    r
}

/// Send at `rate` per second for `warmup + duration`, at most `cap` outstanding (requests past
/// the cap wait, and their wait counts). Latency runs from the scheduled send time.
pub async fn open_loop(
    rate: f64,
    cap: usize,
    warmup: Duration,
    duration: Duration,
    op: Op,
) -> PhaseResult {
    let start = Instant::now();
    let total_ops = ((warmup + duration).as_secs_f64() * rate) as u64;
    let warm_ops = (warmup.as_secs_f64() * rate) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let permits = Arc::new(Semaphore::new(cap));
    let shared = Arc::new(Mutex::new(PhaseResult::new(duration)));
    let mut set = JoinSet::new();
    for i in 0..total_ops {
        let scheduled = start + interval.mul_f64(i as f64);
        if scheduled > Instant::now() {
            tokio::time::sleep_until(scheduled.into()).await;
        }
        let (op, permits, shared) = (Arc::clone(&op), Arc::clone(&permits), Arc::clone(&shared));
        set.spawn(async move {
            let Ok(_permit) = permits.acquire().await else {
                return;
            };
            let result = op((i % cap as u64) as usize, i).await;
            let latency = scheduled.elapsed();
            if let Ok(mut r) = shared.lock() {
                r.record(result, latency, i >= warm_ops);
            }
        });
        // Reap finished tasks as we go so the set stays small.
        while set.try_join_next().is_some() {}
    }
    while set.join_next().await.is_some() {}
    let result = match Arc::try_unwrap(shared) {
        Ok(m) => m.into_inner().unwrap_or_else(|p| p.into_inner()),
        Err(_) => PhaseResult::new(duration),
    };
    report_errors("open loop", &result);
    result
}

fn report_errors(what: &str, r: &PhaseResult) {
    if r.errors > 0 {
        eprintln!(
            "{what}: {} errors; first: {}",
            r.errors,
            r.first_error.as_deref().unwrap_or("?")
        );
    }
}
