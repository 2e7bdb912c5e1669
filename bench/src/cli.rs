//! The command line. Every default here is part of what a figure in docs/BENCHMARKS.md means,
//! so changing one changes what the published numbers compare against.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::client;
use crate::raw::RawShape;

#[derive(Parser, Debug, Clone)]
#[command(about = "webhook-bridge vs raw RabbitMQ confirmed publishes")]
pub struct Args {
    /// Short phases (whole run under a minute once built).
    #[arg(long)]
    pub quick: bool,
    /// Measured seconds per round of every phase (default 8, or 3 with --quick).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Warm-up seconds per phase, not measured (default 2, or 1 with --quick).
    #[arg(long)]
    pub warmup: Option<f64>,
    /// Concurrent publishers / HTTP connections.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// The bridge's `[amqp] channels` (confirm channels). The raw baseline picks its own: see
    /// `--raw-shape`.
    #[arg(long, default_value_t = 4)]
    pub channels: usize,
    /// Drive raw lapin this way instead of measuring every shape first and taking the fastest:
    /// `tasks/Nch` (one task per publisher, each awaiting its confirm) or `window/Nch` (one task
    /// keeping `--concurrency` publishes in flight), N = 1, 2 or 4 confirm channels.
    #[arg(long, value_parser = RawShape::parse)]
    pub raw_shape: Option<RawShape>,
    /// Elements per isendu batch.
    #[arg(long, default_value_t = 50)]
    pub batch: usize,
    /// Open-loop rate as a fraction of the bridge's full-load single-event rate.
    #[arg(long, default_value_t = 0.5)]
    pub load_fraction: f64,
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub amqp_url: String,
    /// Use this bridge binary instead of building target/release/webhook-bridge.
    #[arg(long)]
    pub bridge_bin: Option<PathBuf>,
    /// Skip `cargo build --release` of the bridge.
    #[arg(long)]
    pub no_build: bool,
    /// RUST_LOG for the bridge (production default: info, one line per request).
    #[arg(long, default_value = "info")]
    pub bridge_log: String,
    /// Only run the raw baseline and the bridge's single-event full-load phase.
    #[arg(long)]
    pub only_full: bool,
    /// Only delete the queues and exchanges an interrupted run left behind, by the tag it
    /// printed (`bench-<pid>-<hex>`), then exit.
    #[arg(long, num_args = 1..)]
    pub cleanup_only: Vec<String>,
    /// Also measure the HTTP path alone (`GET /healthz` on the admin port), the ceiling the load
    /// generator and hyper put on webhook rates.
    #[arg(long)]
    pub http_ceiling: bool,
    /// The load generator's HTTP client: `wire` (one write per request, httparse; default) or
    /// `hyper` (hyper's connection-level client, which costs the shared cores more per request).
    #[arg(long, value_enum, default_value_t = client::Kind::Wire)]
    pub client: client::Kind,
    /// Also run the bridge's publisher module inside the bench (no HTTP, no bridge process),
    /// alternating with raw lapin: the publish path's own share of the gap.
    #[arg(long)]
    pub publisher_phase: bool,
    /// Also run a confirm publisher driven by the runtime's own workers (no I/O thread; see
    /// `native.rs`), alternating with raw lapin: what lapin's hand-offs cost a publish.
    #[arg(long)]
    pub native_phase: bool,
    /// Skip the coupled ceiling: raw lapin with one `GET /healthz` to the bridge before each
    /// publish, alternating with plain raw (what pacing publishes by HTTP round trips costs by
    /// itself). It runs by default: a target is stated against it.
    #[arg(long)]
    pub skip_coupled: bool,
    /// Accepted for older command lines; the coupled ceiling now runs by default.
    #[arg(long, hide = true)]
    pub coupled_phase: bool,
    /// Only time the bridge's own steps on single-event webhooks in this process (routing, the
    /// head's checks, the signature, parsing, the envelope; no HTTP, broker, log line or
    /// metrics), this many requests per round, and exit: a quiet A/B of those steps.
    #[arg(long, value_name = "REQUESTS")]
    pub request_path: Option<usize>,
    /// Skip the unmeasured broker warm-up (raw, then bridge) before the first round.
    #[arg(long)]
    pub no_broker_warmup: bool,
    /// Alternating raw / bridge full-load rounds (default 3, or 2 with --quick).
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Run against the three-node cluster of `scripts/cluster` instead of the local broker:
    /// quorum queues, the bridge given every node's URL (bench/src/cluster.rs).
    #[arg(long)]
    pub cluster: bool,
    /// With `--cluster`: the nodes' URLs, the bench's and the bridge's first.
    #[arg(long = "cluster-url", default_values_t = [
        "amqp://guest:guest@127.0.0.1:5681/%2f".to_string(),
        "amqp://guest:guest@127.0.0.1:5682/%2f".to_string(),
        "amqp://guest:guest@127.0.0.1:5683/%2f".to_string(),
    ])]
    pub cluster_urls: Vec<String>,
}

impl Args {
    /// Measured time of one round (raw or bridge, full load or open loop): short, because each
    /// phase is repeated and the ratios are taken round by round.
    pub fn round_duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration.unwrap_or(if self.quick { 3.0 } else { 8.0 }))
    }
    /// At least one, so there is always a ratio to take the median of.
    pub fn rounds(&self) -> usize {
        self.rounds.unwrap_or(if self.quick { 2 } else { 3 }).max(1)
    }
    /// Unmeasured time at the start of every round: connections opened and the first, slower
    /// requests are not counted.
    pub fn warmup(&self) -> Duration {
        Duration::from_secs_f64(self.warmup.unwrap_or(if self.quick { 1.0 } else { 2.0 }))
    }
}
