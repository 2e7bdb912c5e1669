//! Every metric the bridge exports, defined in one place on one registry (docs/contract.md §7).
//! A family is named once, where it is created and registered; its closed label sets live in
//! [`labels`] and are exported at 0 from the start.

pub mod labels;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use self::labels::{ConnectionError, FailureReason, Task};

/// Buckets for latencies judged against a 5-second provider window: fine below 100 ms where a
/// healthy broker lives, then steps up to and past the ack deadline.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0,
];

/// Events per request: single events, small batches, and up to the parser's hard limit
/// (`providers::MAX_EVENTS_PER_REQUEST`, 10 000).
pub const BATCH_BUCKETS: &[f64] = &[
    0.0, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

/// The bridge's metrics. Cloned handles are cheap; the registry is the only shared state.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Provider requests by endpoint, provider and outcome (`accepted`, `spooled`, `unauthorized`…).
    pub requests_total: IntCounterVec,
    /// Time from request head to answer, for requests routed to an endpoint.
    pub request_duration_seconds: HistogramVec,
    /// Events by provider, routing key and outcome (`published`, `spooled`, `duplicate`, `failed`).
    pub events_total: IntCounterVec,
    /// Events per parsed request, by provider.
    pub batch_size: HistogramVec,
    /// Time from publishing a request's messages to the last confirm; one observation per
    /// confirmed publish call.
    pub publish_confirm_seconds: Histogram,
    /// Publishes not confirmed, by reason ([`FailureReason`]).
    pub publish_failures_total: IntCounterVec,
    /// Provider connections hyper ended before or instead of a request, by reason
    /// ([`ConnectionError`]); an idle keep-alive connection closed at the header timeout is
    /// not one.
    pub connection_errors_total: IntCounterVec,
    pub amqp_connected: IntGauge,
    /// 1 while the broker blocks the connection (`connection.blocked`: a memory or disk alarm).
    pub amqp_blocked: IntGauge,
    pub amqp_reconnects_total: IntCounter,
    pub spool_events: IntGauge,
    pub spool_bytes: IntGauge,
    /// `[spool] max_bytes`; 0 when the spool is off. Alerts divide by it.
    pub spool_max_bytes: IntGauge,
    /// Spooled records found damaged (lost), at least one per damaged region.
    pub spool_damaged_records_total: IntCounter,
    /// Segments that had damage, set aside as `<id>.seg.damaged` once drained.
    pub spool_damaged_segments_total: IntCounter,
    /// Spool writes or fsyncs that failed (each refused the events it carried).
    pub spool_write_errors_total: IntCounter,
    /// Age of the oldest event still in the spool; set at each scrape from
    /// `spool_oldest_timestamp` (see [`Metrics::set_spool_oldest_timestamp`]).
    pub spool_oldest_event_age_seconds: IntGauge,
    /// Receipt time (seconds since the epoch) of the oldest event still in the spool; 0 when
    /// the spool holds none.
    spool_oldest_timestamp: Arc<AtomicU64>,
    /// Background tasks restarted after a panic, by task ([`Task`]).
    pub task_restarts_total: IntCounterVec,
    /// Provider requests between head parsed and answer (including ones refused as overloaded).
    pub in_flight_requests: IntGauge,
    /// Log lines dropped because the log writer was [`crate::logging::BUFFERED_LINES`] behind;
    /// brought up to date from [`crate::logging::dropped_lines`] at each scrape.
    pub log_lines_dropped_total: IntCounter,
    /// Highest dropped-lines count already added to `log_lines_dropped_total`.
    log_lines_dropped_seen: Arc<AtomicU64>,
    /// Heap allocations made by the process since it started, as the allocator counts them
    /// (see [`count_allocations_with`]); brought up to date at each scrape, so counting costs
    /// the request path nothing beyond the allocator's own bookkeeping. Stays 0 where no count
    /// is available (the library's tests).
    pub allocations_total: IntCounter,
    /// Highest allocation count already added to `allocations_total`.
    allocations_seen: Arc<AtomicU64>,
    pub build_info: IntGaugeVec,
}

/// Where [`Metrics::render`] reads the process's allocation count from; set once by the binary,
/// which owns the global allocator.
static ALLOCATION_COUNT: OnceLock<fn() -> Option<u64>> = OnceLock::new();

/// Have `allocations_total` follow `count`: the allocations made so far by the process (the
/// binary passes jemalloc's count). Only the first call has an effect.
pub fn count_allocations_with(count: fn() -> Option<u64>) {
    let _ = ALLOCATION_COUNT.set(count);
}

const PREFIX: &str = "webhook_bridge";

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace(PREFIX)
}

/// Register `metric` on `registry` and hand it back: each family is named once, here.
fn registered<M>(registry: &Registry, metric: M) -> Result<M, prometheus::Error>
where
    M: prometheus::core::Collector + Clone + 'static,
{
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests_total = registered(
            &registry,
            IntCounterVec::new(
                opts(
                    "requests_total",
                    "Provider requests by endpoint, provider and outcome.",
                ),
                &["endpoint", "provider", "outcome"],
            )?,
        )?;
        let request_duration_seconds = registered(
            &registry,
            HistogramVec::new(
                HistogramOpts::new("request_duration_seconds", "Time from request to answer.")
                    .namespace(PREFIX)
                    .buckets(LATENCY_BUCKETS.to_vec()),
                &["endpoint", "provider"],
            )?,
        )?;
        let events_total = registered(
            &registry,
            IntCounterVec::new(
                opts(
                    "events_total",
                    "Events by provider, type (routing key) and outcome.",
                ),
                &["provider", "type", "outcome"],
            )?,
        )?;
        let batch_size = registered(
            &registry,
            HistogramVec::new(
                HistogramOpts::new("batch_size", "Events per provider request.")
                    .namespace(PREFIX)
                    .buckets(BATCH_BUCKETS.to_vec()),
                &["provider"],
            )?,
        )?;
        let publish_confirm_seconds = registered(
            &registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "publish_confirm_seconds",
                    "Time from publishing a request's messages to the last broker confirm.",
                )
                .namespace(PREFIX)
                .buckets(LATENCY_BUCKETS.to_vec()),
            )?,
        )?;
        let publish_failures_total = registered(
            &registry,
            IntCounterVec::new(
                opts(
                    "publish_failures_total",
                    "Publishes not confirmed, by reason.",
                ),
                &["reason"],
            )?,
        )?;
        let connection_errors_total = registered(
            &registry,
            IntCounterVec::new(
                opts(
                    "connection_errors_total",
                    "Provider connections ended in error before a request was handled, by reason.",
                ),
                &["reason"],
            )?,
        )?;
        let amqp_connected = registered(
            &registry,
            IntGauge::with_opts(opts("amqp_connected", "1 when a broker connection is up."))?,
        )?;
        let amqp_blocked = registered(
            &registry,
            IntGauge::with_opts(opts(
                "amqp_blocked",
                "1 while the broker blocks publishing (connection.blocked: memory or disk alarm).",
            ))?,
        )?;
        let amqp_reconnects_total = registered(
            &registry,
            IntCounter::with_opts(opts(
                "amqp_reconnects_total",
                "Broker connections re-established.",
            ))?,
        )?;
        let spool_events = registered(
            &registry,
            IntGauge::with_opts(opts("spool_events", "Events waiting in the local spool."))?,
        )?;
        let spool_bytes = registered(
            &registry,
            IntGauge::with_opts(opts("spool_bytes", "Bytes used by the local spool."))?,
        )?;
        let spool_max_bytes = registered(
            &registry,
            IntGauge::with_opts(opts(
                "spool_max_bytes",
                "Capacity of the local spool ([spool] max_bytes); 0 when the spool is off.",
            ))?,
        )?;
        let spool_damaged_records_total = registered(
            &registry,
            IntCounter::with_opts(opts(
                "spool_damaged_records_total",
                "Spooled records found damaged on disk and lost (at least one per damaged region).",
            ))?,
        )?;
        let spool_damaged_segments_total = registered(
            &registry,
            IntCounter::with_opts(opts(
                "spool_damaged_segments_total",
                "Spool segments that had damage, kept as <id>.seg.damaged once drained.",
            ))?,
        )?;
        let spool_write_errors_total = registered(
            &registry,
            IntCounter::with_opts(opts(
                "spool_write_errors_total",
                "Spool writes or fsyncs that failed.",
            ))?,
        )?;
        let spool_oldest_event_age_seconds = registered(
            &registry,
            IntGauge::with_opts(opts(
                "spool_oldest_event_age_seconds",
                "Age in seconds of the oldest event in the spool not yet confirmed by the broker; 0 when there is none.",
            ))?,
        )?;
        let task_restarts_total = registered(
            &registry,
            IntCounterVec::new(
                opts(
                    "task_restarts_total",
                    "Background tasks restarted after a panic, by task.",
                ),
                &["task"],
            )?,
        )?;
        let in_flight_requests = registered(
            &registry,
            IntGauge::with_opts(opts(
                "in_flight_requests",
                "Provider requests being processed.",
            ))?,
        )?;
        let log_lines_dropped_total = registered(
            &registry,
            IntCounter::with_opts(opts(
                "log_lines_dropped_total",
                "Log lines dropped because the log writer could not keep up (stderr not drained).",
            ))?,
        )?;
        let allocations_total = registered(
            &registry,
            IntCounter::with_opts(opts(
                "allocations_total",
                "Heap allocations made by the process (the allocator's count, read at scrape time).",
            ))?,
        )?;
        let build_info = registered(
            &registry,
            IntGaugeVec::new(
                opts("build_info", "Build information; always 1."),
                &["version"],
            )?,
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        for reason in FailureReason::ALL {
            publish_failures_total
                .with_label_values(&[reason.label()])
                .inc_by(0);
        }
        for reason in ConnectionError::ALL {
            connection_errors_total
                .with_label_values(&[reason.label()])
                .inc_by(0);
        }
        for task in Task::ALL {
            task_restarts_total
                .with_label_values(&[task.label()])
                .inc_by(0);
        }
        Ok(Self {
            registry,
            requests_total,
            request_duration_seconds,
            events_total,
            batch_size,
            publish_confirm_seconds,
            publish_failures_total,
            connection_errors_total,
            amqp_connected,
            amqp_blocked,
            amqp_reconnects_total,
            spool_events,
            spool_bytes,
            spool_max_bytes,
            spool_damaged_records_total,
            spool_damaged_segments_total,
            spool_write_errors_total,
            spool_oldest_event_age_seconds,
            spool_oldest_timestamp: Arc::new(AtomicU64::new(0)),
            task_restarts_total,
            in_flight_requests,
            log_lines_dropped_total,
            log_lines_dropped_seen: Arc::new(AtomicU64::new(0)),
            allocations_total,
            allocations_seen: Arc::new(AtomicU64::new(0)),
            build_info,
        })
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        self.sync_log_lines_dropped(crate::logging::dropped_lines());
        if let Some(count) = ALLOCATION_COUNT.get().and_then(|f| f()) {
            add_since(&self.allocations_total, &self.allocations_seen, count);
        }
        self.sync_spool_oldest_event_age(unix_now());
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }

    /// The spool's oldest pending event was received at `timestamp` (seconds since the epoch),
    /// or it holds none (`None`). The age is computed from it at each scrape.
    pub fn set_spool_oldest_timestamp(&self, timestamp: Option<u64>) {
        self.spool_oldest_timestamp
            .store(timestamp.unwrap_or(0), Ordering::Relaxed);
    }

    /// What [`Metrics::set_spool_oldest_timestamp`] last set.
    pub fn spool_oldest_timestamp(&self) -> Option<u64> {
        Some(self.spool_oldest_timestamp.load(Ordering::Relaxed)).filter(|&t| t > 0)
    }

    /// Set `spool_oldest_event_age_seconds` for the time `now` (seconds since the epoch): 0 when
    /// the spool holds nothing, never negative (a clock set back).
    fn sync_spool_oldest_event_age(&self, now: u64) {
        let oldest = self.spool_oldest_timestamp.load(Ordering::Relaxed);
        let age = if oldest == 0 {
            0
        } else {
            now.saturating_sub(oldest)
        };
        self.spool_oldest_event_age_seconds
            .set(i64::try_from(age).unwrap_or(i64::MAX));
    }

    /// Add to `log_lines_dropped_total` what `dropped` (a running total) has gained since the
    /// last call; concurrent scrapes add each line once.
    fn sync_log_lines_dropped(&self, dropped: u64) {
        add_since(
            &self.log_lines_dropped_total,
            &self.log_lines_dropped_seen,
            dropped,
        );
    }
}

/// Add to `counter` what `total` (a running total read elsewhere) has gained over `seen`, the
/// highest total added so far; concurrent scrapes add each unit once.
fn add_since(counter: &IntCounter, seen: &AtomicU64, total: u64) {
    let before = seen.fetch_max(total, Ordering::Relaxed);
    if total > before {
        counter.inc_by(total - before);
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_reasons_start_at_zero_and_buckets_bracket_the_deadline() {
        let m = Metrics::new().unwrap();
        let text = String::from_utf8(m.render()).unwrap();
        for reason in FailureReason::ALL.iter().map(|r| r.label()) {
            assert!(
                text.contains(&format!(
                    "webhook_bridge_publish_failures_total{{reason=\"{reason}\"}} 0"
                )),
                "{text}"
            );
        }
        for reason in ConnectionError::ALL.iter().map(|r| r.label()) {
            assert!(
                text.contains(&format!(
                    "webhook_bridge_connection_errors_total{{reason=\"{reason}\"}} 0"
                )),
                "{text}"
            );
        }
        // Buckets straddle a 4–5 s ack deadline and resolve a healthy broker's milliseconds.
        for le in [0.005, 0.05, 3.0, 4.0, 5.0] {
            assert!(LATENCY_BUCKETS.contains(&le), "{le}");
        }
    }

    #[test]
    fn dropped_log_lines_are_added_once_each() {
        let m = Metrics::new().unwrap();
        m.sync_log_lines_dropped(0);
        assert_eq!(m.log_lines_dropped_total.get(), 0);
        m.sync_log_lines_dropped(5);
        m.sync_log_lines_dropped(5);
        assert_eq!(m.log_lines_dropped_total.get(), 5);
        m.sync_log_lines_dropped(12);
        // A scrape that read an older total (raced with a newer one) adds nothing.
        m.sync_log_lines_dropped(9);
        assert_eq!(m.log_lines_dropped_total.get(), 12);
        let clone = m.clone();
        clone.sync_log_lines_dropped(12);
        assert_eq!(
            m.log_lines_dropped_total.get(),
            12,
            "clones share what was seen"
        );
    }

    #[test]
    fn spool_oldest_event_age_is_computed_at_scrape_time() {
        let m = Metrics::new().unwrap();
        m.sync_spool_oldest_event_age(1_000);
        assert_eq!(m.spool_oldest_event_age_seconds.get(), 0, "empty spool");
        m.clone().set_spool_oldest_timestamp(Some(900));
        m.sync_spool_oldest_event_age(1_000);
        assert_eq!(m.spool_oldest_event_age_seconds.get(), 100);
        m.sync_spool_oldest_event_age(1_030);
        assert_eq!(m.spool_oldest_event_age_seconds.get(), 130, "grows");
        m.sync_spool_oldest_event_age(800);
        assert_eq!(m.spool_oldest_event_age_seconds.get(), 0, "clock set back");
        m.set_spool_oldest_timestamp(None);
        m.sync_spool_oldest_event_age(1_100);
        assert_eq!(m.spool_oldest_event_age_seconds.get(), 0, "drained");
        // render() computes it from the clock.
        m.set_spool_oldest_timestamp(Some(unix_now() - 50));
        let text = String::from_utf8(m.render()).unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("webhook_bridge_spool_oldest_event_age_seconds "))
            .unwrap();
        let age: i64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!((50..=52).contains(&age), "{line}");
    }
}
