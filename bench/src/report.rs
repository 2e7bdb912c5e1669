//! What a run prints: the header that says on what and how it ran, the lines the phases print as
//! they go, and at the end the table, the queue checks and the verdicts against the goals. The
//! table's columns and the verdict lines are what docs/BENCHMARKS.md quotes, so their format is
//! kept stable from one revision to the next.

use std::process::{Command, Stdio};

use crate::cli::Args;
use crate::load::PhaseResult;
use crate::raw::RawShape;
use crate::split::Split;
use crate::sys::CpuDelta;

/// One line of the final table.
pub struct Row {
    name: String,
    events_per_sec: f64,
    ops_per_sec: f64,
    p50: u64,
    p99: u64,
    p999: u64,
    errors: u64,
    cpu: CpuDelta,
    events: u64,
    rss_kib: Option<u64>,
}

impl Row {
    pub fn new(name: &str, r: &PhaseResult, cpu: CpuDelta, rss_kib: Option<u64>) -> Self {
        Self {
            name: name.to_string(),
            events_per_sec: r.events_per_sec(),
            ops_per_sec: r.ops_per_sec(),
            p50: r.p(0.5),
            p99: r.p(0.99),
            p999: r.p(0.999),
            errors: r.errors,
            cpu,
            events: r.acked_events,
            rss_kib,
        }
    }
}

/// One raw shape as the raw-shapes phase measured it.
pub struct ShapeRow {
    pub shape: RawShape,
    /// Events/s, one per pass.
    pub rates: Vec<f64>,
    pub median: f64,
    /// The load generator's (i.e. raw lapin's) CPU per confirmed publish.
    pub client_us_per_event: f64,
}

/// The open-loop phase's outcome: the rate both sides were driven at and their latencies.
pub struct OpenLoop {
    pub rate: f64,
    pub raw: PhaseResult,
    pub bridge: PhaseResult,
}

/// Everything the phases leave for the end of the run.
#[derive(Default)]
pub struct Report {
    pub rows: Vec<Row>,
    /// One line per queue check, `ok: …` or `MISMATCH: …`.
    pub checks: Vec<String>,
    /// The full-load rounds' bridge/raw ratios, sorted (as the median left them).
    pub ratios: Vec<f64>,
    pub median_ratio: f64,
    /// Raw lapin's full-load rate.
    pub raw_events_per_sec: f64,
    /// The median coupled/raw ratio, with `--coupled-phase`.
    pub coupled_ratio: Option<f64>,
    pub isendu: Option<PhaseResult>,
    /// The isendu rounds' events/s over the alternating raw rounds', sorted, and their median.
    pub isendu_ratios: Vec<f64>,
    pub isendu_ratio: Option<f64>,
    pub open_loop: Option<OpenLoop>,
    /// Every raw shape tried, when the run searched for the fastest.
    pub raw_shapes: Vec<ShapeRow>,
    /// The shape "raw" was driven in.
    pub raw_shape: Option<RawShape>,
    /// Full load: raw lapin's CPU per confirmed publish (the bench process) and the bridge's
    /// CPU per single-event webhook, in µs.
    pub raw_client_us_per_event: Option<f64>,
    pub bridge_us_per_event: Option<f64>,
    /// Heap allocations of the bridge per single-event request at full load, when it counts them.
    pub allocations_per_request: Option<f64>,
    /// The bridge's context switches per single-event request at full load (all its threads):
    /// how often a hand-off between threads put one to sleep and woke it.
    pub bridge_switches_per_request: Option<f64>,
}

impl Report {
    /// The table, the queue checks and the verdicts; `hwm` is the bridge's VmHWM in KiB.
    pub fn print(&self, hwm: u64) {
        println!();
        self.print_shapes();
        print_table(&self.rows);
        println!();
        println!("queue checks (messages in the queue vs events acknowledged):");
        for c in &self.checks {
            println!("  {c}");
        }
        println!(
            "bridge VmHWM over the whole run: {:.1} MiB",
            hwm as f64 / 1024.0
        );
        println!();
        println!("goals (ratios from this run):");
        self.print_ratio_goals();
        self.print_latency_and_memory_goals(hwm);
    }

    /// Whether every phase's queue held exactly the events acknowledged in it.
    pub fn all_matched(&self) -> bool {
        !self.checks.iter().any(|c| c.starts_with("MISMATCH"))
    }

    /// The raw shapes tried, fastest first, when the run searched.
    fn print_shapes(&self) {
        if self.raw_shapes.is_empty() {
            return;
        }
        println!("| raw shape | events/s per pass | median | raw client CPU µs/event |");
        println!("|---|---|---:|---:|");
        let mut rows: Vec<&ShapeRow> = self.raw_shapes.iter().collect();
        rows.sort_by(|a, b| b.median.total_cmp(&a.median));
        for r in rows {
            let rates: Vec<String> = r.rates.iter().map(|x| format!("{x:.0}")).collect();
            println!(
                "| {} | {} | {:.0} | {:.1} |",
                r.shape.name(),
                rates.join(", "),
                r.median,
                r.client_us_per_event
            );
        }
        println!();
    }

    fn print_ratio_goals(&self) {
        let median_ratio = self.median_ratio;
        let shape = self.raw_shape.map_or("?".into(), |s| s.name());
        println!(
            "  raw = {shape}; single-event webhooks / raw = {median_ratio:.2} (median of {} rounds: {})",
            self.ratios.len(),
            self.ratios
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if let (Some(raw), Some(bridge)) = (self.raw_client_us_per_event, self.bridge_us_per_event)
        {
            let x = bridge / raw.max(f64::MIN_POSITIVE);
            let mut line = format!(
                "bridge CPU per single-event webhook {bridge:.1} µs / raw client CPU per event \
                 {raw:.1} µs = {x:.2}x"
            );
            // The fastest shapes are often within a fraction of a percent of each other while
            // their clients' CPU differs by a third: the verdict is taken against the cheapest
            // client the shape search measured, so it does not depend on which shape won by a hair.
            let mut strictest = x;
            let cheapest = self
                .raw_shapes
                .iter()
                .min_by(|a, b| a.client_us_per_event.total_cmp(&b.client_us_per_event));
            if let Some(c) = cheapest.filter(|c| c.client_us_per_event < raw) {
                let y = bridge / c.client_us_per_event.max(f64::MIN_POSITIVE);
                line.push_str(&format!(
                    "; against the cheapest raw client ({}, {:.1} µs/event in the shape search) \
                     {y:.2}x",
                    c.shape.name(),
                    c.client_us_per_event
                ));
                strictest = strictest.max(y);
            }
            verdict(&format!("{line} (goal <= 2x)"), strictest <= 2.0);
        }
        match self.coupled_ratio {
            Some(c) => {
                let x = median_ratio / c.max(f64::MIN_POSITIVE);
                verdict(
                    &format!(
                        "single-event webhooks / coupled ceiling = {x:.2} (raw behind one GET \
                         /healthz / raw = {c:.2}; goal >= 0.95)"
                    ),
                    x >= 0.95,
                );
            }
            None => println!("  coupled ceiling not measured (--skip-coupled)"),
        }
        if let (Some(b), Some(r2)) = (&self.isendu, self.isendu_ratio) {
            let per_req = b.acked_events as f64 / b.acked_ops.max(1) as f64;
            let rounds: Vec<String> = self
                .isendu_ratios
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect();
            verdict(
                &format!(
                    "isendu batch events/s / raw = {r2:.2} (median of {} rounds: {}; goal >= 1.0; \
                     {per_req:.1} events per request)",
                    rounds.len(),
                    rounds.join(", ")
                ),
                r2 >= 1.0,
            );
        }
        match self.allocations_per_request {
            Some(a) if a > 0.0 => println!(
                "  allocations per single-event request (whole bridge process, full load): {a:.0}"
            ),
            _ => println!("  allocations per request: not counted by this bridge binary"),
        }
        if let Some(cs) = self.bridge_switches_per_request {
            println!(
                "  context switches per single-event request (whole bridge process, full load): \
                 {cs:.2}"
            );
        }
    }

    fn print_latency_and_memory_goals(&self, hwm: u64) {
        if let Some(OpenLoop { rate, raw, bridge }) = &self.open_loop {
            let (b, r) = (bridge.p(0.99), raw.p(0.99));
            let x = b as f64 / r.max(1) as f64;
            verdict(
                &format!(
                    "p99 at {rate:.0}/s: bridge {} vs raw {} = {x:.2}x (goal <= 1.2x)",
                    fmt_us(b),
                    fmt_us(r),
                ),
                x <= 1.2,
            );
        }
        let peak = self
            .rows
            .iter()
            .filter_map(|r| r.rss_kib)
            .max()
            .unwrap_or(0)
            .max(hwm);
        verdict(
            &format!(
                "bridge peak RSS {:.1} MiB over the whole run (goal < 32 MiB)",
                peak as f64 / 1024.0
            ),
            peak < 32 * 1024,
        );
    }
}

/// The machine and the plan, first, so a pasted output says what it was measured on.
pub fn print_header(args: &Args, broker_pid: Option<u32>) {
    print_machine(broker_pid);
    println!(
        "phases: warm-up {:.0}s each; {} rounds of {:.0}s raw + {:.0}s bridge (full load, then 50% \
         open loop, isendu batches); concurrency {}; bridge [amqp] channels {}; isendu batch {}",
        args.warmup().as_secs_f64(),
        args.rounds(),
        args.round_duration().as_secs_f64(),
        args.round_duration().as_secs_f64(),
        args.concurrency,
        args.channels,
        args.batch
    );
}

fn print_machine(broker_pid: Option<u32>) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let ncpu = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let version = Command::new("rabbitmqctl")
        .arg("version")
        .stderr(Stdio::null())
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!(
        "machine: {ncpu} CPUs, {cpu}; RabbitMQ {version} (beam pid {})",
        broker_pid.map_or("?".into(), |p| p.to_string())
    );
}

/// The bridge's full-load request time, split by its own histograms (means over the rounds):
/// the client's mean latency against the handler's time and the broker's confirm wait says
/// whether the gap is work in the bridge or waiting around it.
pub fn print_split(split: &Split, bridge: &PhaseResult, raw: &PhaseResult) {
    if split.requests <= 0.0 {
        println!("time split: the bridge's /metrics could not be read");
        return;
    }
    let client_ms = bridge.hist.mean() / 1000.0;
    let handler_ms = split.handler * 1000.0;
    let confirm_ms = split.confirm_wait * 1000.0;
    println!(
        "time split, bridge full load (means): client {client_ms:.2} ms = outside the handler \
         {:.2} ms (sockets, hyper, waiting for a CPU, load generator) + handler {:.0} µs besides \
         the confirm wait + confirm wait {confirm_ms:.2} ms; raw publish+confirm {:.2} ms; \
         {:.0} allocations per request",
        client_ms - handler_ms,
        (handler_ms - confirm_ms) * 1000.0,
        raw.hist.mean() / 1000.0,
        split.allocations,
    );
}

fn print_table(rows: &[Row]) {
    println!(
        "| phase | events/s | requests/s | p50 | p99 | p99.9 | errors | CPU µs/event bridge / broker / load gen | machine busy | bridge RSS peak |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---|---:|---:|");
    for r in rows {
        let per = |cpu_us: Option<u64>| {
            cpu_us.map_or("-".to_string(), |c| {
                format!("{:.0}", c as f64 / r.events.max(1) as f64)
            })
        };
        println!(
            "| {} | {:.0} | {:.0} | {} | {} | {} | {} | {} / {} / {} | {:.0}% | {} |",
            r.name,
            r.events_per_sec,
            r.ops_per_sec,
            fmt_us(r.p50),
            fmt_us(r.p99),
            fmt_us(r.p999),
            r.errors,
            per(r.cpu.bridge_us),
            per(r.cpu.broker_us),
            per(Some(r.cpu.self_us)),
            r.cpu.machine_busy * 100.0,
            r.rss_kib
                .map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
        );
    }
}

fn verdict(text: &str, ok: bool) {
    println!("  [{}] {text}", if ok { "met" } else { "NOT met" });
}

/// Microseconds as milliseconds, with two decimals below 10 ms where they still mean something.
pub fn fmt_us(us: u64) -> String {
    if us >= 10_000 {
        format!("{:.0} ms", us as f64 / 1000.0)
    } else {
        format!("{:.2} ms", us as f64 / 1000.0)
    }
}

/// The median of `v` (sorted in place); 0 for an empty slice. Per-round ratios are summarised
/// by their median so that one round hit by a neighbour's CPU burst does not move the verdict.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_even_and_empty_slices() {
        assert_eq!(median(&mut [0.9, 0.7, 0.8]), 0.8);
        assert!((median(&mut [0.9, 0.7, 0.8, 0.6]) - 0.75).abs() < 1e-12);
        assert_eq!(median(&mut []), 0.0);
    }
}
