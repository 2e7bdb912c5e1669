//! Benchmark: webhook-bridge against RabbitMQ's own limit for persistent, confirmed publishes.
//!
//! One run measures, against the local broker on 127.0.0.1:
//! 1. the raw baseline: lapin publishing the bridge's own envelope (same bytes, same AMQP
//!    properties, persistent, mandatory, confirmed) with 64 concurrent publishers over 4 channels;
//! 2. the bridge (release build, spawned with a generated config) driven over HTTP by 64
//!    keep-alive connections with signed WeGoCOD webhooks, then with isendu batches of 50;
//! 3. both again open-loop at 50% of the bridge's full-load rate, latency measured from the
//!    scheduled send time (no coordinated omission).
//!
//! After every phase it checks that the queue holds exactly the acknowledged events. The raw
//! and bridge full-load phases alternate for a few rounds and the ratio reported is the median
//! of the per-round ratios, so a neighbour's CPU burst on a shared machine skews one round, not
//! the verdict.
//!
//! See docs/BENCHMARKS.md for the command and the figures.

mod client;
mod load;
mod split;
mod sys;
mod wire;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use webhook_bridge::auth;
use webhook_bridge::auth::AuthConfig;
use webhook_bridge::config::Config;
use webhook_bridge::secret::Secret;
use webhook_bridge::envelope;
use webhook_bridge::message::Message;
use webhook_bridge::providers::{Inbound, Parsed};

use crate::load::{Op, PhaseResult};
use crate::sys::{CpuSnapshot, ProcWatch};

const WEGOCOD_SECRET: &str = "bench-wegocod-secret";
const ISENDU_TOKEN: &str = "bench-isendu-path-token";
/// The WeGoCOD endpoint's name in the generated config (its `endpoint` label in metrics).
const WEGOCOD_ENDPOINT: &str = "wegocod-bench";

#[derive(Parser, Debug, Clone)]
#[command(about = "webhook-bridge vs raw RabbitMQ confirmed publishes")]
struct Args {
    /// Short phases (whole run under a minute once built).
    #[arg(long)]
    quick: bool,
    /// Measured seconds per phase (default 20, or 5 with --quick).
    #[arg(long)]
    duration: Option<f64>,
    /// Warm-up seconds per phase, not measured (default 2, or 1 with --quick).
    #[arg(long)]
    warmup: Option<f64>,
    /// Concurrent publishers / HTTP connections.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Confirm channels, for the raw baseline and the bridge's `[amqp] channels`.
    #[arg(long, default_value_t = 4)]
    channels: usize,
    /// Elements per isendu batch.
    #[arg(long, default_value_t = 50)]
    batch: usize,
    /// Open-loop rate as a fraction of the bridge's full-load single-event rate.
    #[arg(long, default_value_t = 0.5)]
    load_fraction: f64,
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp_url: String,
    /// Use this bridge binary instead of building target/release/webhook-bridge.
    #[arg(long)]
    bridge_bin: Option<PathBuf>,
    /// Skip `cargo build --release` of the bridge.
    #[arg(long)]
    no_build: bool,
    /// RUST_LOG for the bridge (production default: info, one line per request).
    #[arg(long, default_value = "info")]
    bridge_log: String,
    /// Only run the raw baseline and the bridge's single-event full-load phase.
    #[arg(long)]
    only_full: bool,
    /// Only delete the queues and exchanges an interrupted run left behind, by the tag it
    /// printed (`bench-<pid>-<hex>`), then exit.
    #[arg(long, num_args = 1..)]
    cleanup_only: Vec<String>,
    /// Also measure the HTTP path alone (`GET /healthz` on the admin port), the ceiling the load
    /// generator and hyper put on webhook rates.
    #[arg(long)]
    http_ceiling: bool,
    /// The load generator's HTTP client: `wire` (one write per request, httparse; default) or
    /// `hyper` (hyper's connection-level client, which costs the shared cores more per request).
    #[arg(long, value_enum, default_value_t = client::Kind::Wire)]
    client: client::Kind,
    /// Also run the bridge's publisher module inside the bench (no HTTP, no bridge process),
    /// alternating with raw lapin: the publish path's own share of the gap.
    #[arg(long)]
    publisher_phase: bool,
    /// Also run raw lapin with one `GET /healthz` to the bridge before each publish, alternating
    /// with plain raw: what pacing publishes by HTTP round trips costs by itself.
    #[arg(long)]
    coupled_phase: bool,
    /// Skip the unmeasured broker warm-up (raw, then bridge) before the first round.
    #[arg(long)]
    no_broker_warmup: bool,
    /// Alternating raw / bridge full-load rounds (default 3, or 2 with --quick).
    #[arg(long)]
    rounds: Option<usize>,
}

impl Args {
    /// Measured time of an open-loop or isendu phase.
    fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration.unwrap_or(if self.quick { 5.0 } else { 15.0 }))
    }
    /// Measured time of one full-load round (raw or bridge).
    fn round_duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration.unwrap_or(if self.quick { 3.0 } else { 8.0 }))
    }
    fn rounds(&self) -> usize {
        self.rounds.unwrap_or(if self.quick { 2 } else { 3 }).max(1)
    }
    fn warmup(&self) -> Duration {
        Duration::from_secs_f64(self.warmup.unwrap_or(if self.quick { 1.0 } else { 2.0 }))
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow!("bench crate has no parent directory"))?
        .to_path_buf();
    if !args.cleanup_only.is_empty() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        return runtime.block_on(cleanup_leftovers(&args.amqp_url, &args.cleanup_only));
    }
    let bin = match &args.bridge_bin {
        Some(b) => b.clone(),
        None => {
            if !args.no_build {
                eprintln!(
                    "building the bridge: cargo build --release (in {})",
                    root.display()
                );
                let status =
                    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                        .args(["build", "--release", "--bin", "webhook-bridge"])
                        .current_dir(&root)
                        .status()
                        .context("running cargo build --release")?;
                if !status.success() {
                    bail!("cargo build --release failed");
                }
            }
            root.join("target/release/webhook-bridge")
        }
    };
    if !bin.exists() {
        bail!("bridge binary {} not found", bin.display());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        tokio::select! {
            r = run(args, bin) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
        }
    })
}

/// Names created by this run, deleted at the end whatever happened.
#[derive(Default)]
struct Created {
    queues: Vec<String>,
    exchanges: Vec<String>,
}

/// The bridge process; killed (by pid) when dropped, so also on error or panic.
struct BridgeProcess {
    child: Child,
    port: u16,
    admin_port: u16,
    log: PathBuf,
}

impl BridgeProcess {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for BridgeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn run(args: Args, bin: PathBuf) -> Result<()> {
    let tag = format!("bench-{}-{:06x}", std::process::id(), nanos() & 0xff_ffff);
    eprintln!("run tag {tag} (exchanges and queues are named after it)");
    let dir = tempfile::tempdir()?;
    let amqp = Connection::connect(&args.amqp_url, ConnectionProperties::default()).await?;
    let admin_ch = amqp.create_channel().await?;
    let mut created = Created::default();
    let result = run_phases(
        &args,
        &bin,
        &tag,
        dir.path(),
        &amqp,
        &admin_ch,
        &mut created,
    )
    .await;
    // Clean up whatever was created, also after an error (on a fresh connection if the broker
    // dropped ours, e.g. because it was restarted mid-run).
    if let Err(e) = cleanup(&args.amqp_url, &admin_ch, &created).await {
        eprintln!(
            "cleanup failed ({e}); left behind: {:?} {:?}",
            created.queues, created.exchanges
        );
    }
    let _ = amqp.close(200, "bench done".into()).await;
    result
}

async fn cleanup(url: &str, ch: &Channel, created: &Created) -> Result<()> {
    let fresh;
    let ch = if ch.status().connected() {
        ch
    } else {
        let mut conn = None;
        for _ in 0..20 {
            match Connection::connect(url, ConnectionProperties::default()).await {
                Ok(c) => {
                    conn = Some(c);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
        let conn = conn.ok_or_else(|| anyhow!("broker unreachable"))?;
        fresh = conn.create_channel().await?;
        &fresh
    };
    for q in &created.queues {
        ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await?;
    }
    for e in &created.exchanges {
        ch.exchange_delete(e.as_str().into(), ExchangeDeleteOptions::default())
            .await?;
    }
    Ok(())
}

/// Delete what an earlier, interrupted run with tag `tag` left behind (`--cleanup-only`).
async fn cleanup_leftovers(url: &str, tags: &[String]) -> Result<()> {
    let mut created = Created::default();
    for t in tags {
        for q in ["raw-q", "bridge-q", "bridge.unrouted"] {
            created.queues.push(format!("{t}-{q}"));
        }
        for e in ["raw", "bridge", "bridge.unrouted"] {
            created.exchanges.push(format!("{t}-{e}"));
        }
    }
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    // Deleting what does not exist is fine: queue.delete and exchange.delete are idempotent.
    let result = cleanup(url, &ch, &created).await;
    let _ = conn.close(200, "cleanup done".into()).await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn run_phases(
    args: &Args,
    bin: &Path,
    tag: &str,
    dir: &Path,
    amqp: &Connection,
    admin_ch: &Channel,
    created: &mut Created,
) -> Result<()> {
    let conc = args.concurrency;
    let (warmup, duration) = (args.warmup(), args.duration());
    let broker_pid = sys::find_broker_pid();
    print_machine(broker_pid);
    println!(
        "phases: warm-up {:.0}s each; {} rounds of {:.0}s raw + {:.0}s bridge (full load, then 50% \
         open loop); isendu {:.0}s; concurrency {conc}; {} channels; isendu batch {}",
        warmup.as_secs_f64(),
        args.rounds(),
        args.round_duration().as_secs_f64(),
        args.round_duration().as_secs_f64(),
        duration.as_secs_f64(),
        args.channels,
        args.batch
    );

    // The bridge, with its own exchange; a queue bound to everything on it.
    let bridge_exchange = format!("{tag}-bridge");
    let bridge_queue = format!("{tag}-bridge-q");
    let config_path = write_config(dir, &args.amqp_url, &bridge_exchange, args.channels)?;
    let config = Config::load(&config_path).map_err(|e| anyhow!("bench config: {e}"))?;
    created.exchanges.push(bridge_exchange.clone());
    created
        .exchanges
        .push(format!("{bridge_exchange}.unrouted"));
    created.queues.push(format!("{bridge_exchange}.unrouted"));
    let bridge = spawn_bridge(bin, &config_path, dir, &config, &args.bridge_log)?;
    println!("bridge pid {} on 127.0.0.1:{}", bridge.pid(), bridge.port);
    wait_ready(bridge.admin_port, Duration::from_secs(30), &bridge).await?;
    created.queues.push(bridge_queue.clone());
    declare_queue(admin_ch, &bridge_queue, &bridge_exchange).await?;

    // The raw baseline's exchange and queue, shaped like the bridge's.
    let raw_exchange = format!("{tag}-raw");
    let raw_queue = format!("{tag}-raw-q");
    created.exchanges.push(raw_exchange.clone());
    created.queues.push(raw_queue.clone());
    admin_ch
        .exchange_declare(
            raw_exchange.as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    declare_queue(admin_ch, &raw_queue, &raw_exchange).await?;

    // The exact envelope and properties the bridge publishes for the WeGoCOD sample.
    let template = wegocod_message(&config)?;
    println!(
        "message: {} bytes of CloudEvent JSON (WeGoCOD sample envelope), delivery_mode 2, mandatory",
        template.body.len()
    );
    let raw = RawPublisher::new(amqp, args.channels, &raw_exchange, &template).await?;
    let http = HttpDriver::new(&config, bridge.port, args.batch, tag, args.client);

    let mut watch = ProcWatch::new(bridge.pid(), broker_pid);
    let mut rows: Vec<Row> = Vec::new();
    let mut checks: Vec<String> = Vec::new();

    // 0. Warm the broker up. A broker that has idled confirms its first ~10 s of load markedly
    // slower (raw lapin measured 10.4k/s in a first round and 14.5k/s two rounds later, on an
    // otherwise idle machine), which would flatter whatever is measured first. Raw and bridge
    // both, unmeasured, into their queues; the queue checks still count every message.
    let round = args.round_duration();
    if !args.no_broker_warmup {
        let w = round;
        let r = load::closed_loop(conc, Duration::ZERO, w, raw.op()).await;
        checks
            .push(check_queue(admin_ch, &raw_queue, r.acked_events, "broker warm-up, raw").await?);
        let b = load::closed_loop(conc, Duration::ZERO, w, http.wegocod_op()).await;
        checks.push(
            check_queue(
                admin_ch,
                &bridge_queue,
                b.acked_events,
                "broker warm-up, bridge",
            )
            .await?,
        );
        println!(
            "broker warm-up ({:.0}s each, not measured): raw {:.0}/s, bridge {:.0}/s",
            w.as_secs_f64(),
            r.events_per_sec(),
            b.events_per_sec()
        );
    }

    // 1+2. Full load, closed loop: raw and bridge alternate, `rounds` times each.
    let mut raw_rounds = Vec::new();
    let mut br_rounds = Vec::new();
    let mut rss_single = 0;
    let mut splits = Vec::new();
    let (mut raw_cpu, mut br_cpu) = (sys::CpuDelta::default(), sys::CpuDelta::default());
    for i in 0..args.rounds() {
        let cpu = CpuSnapshot::take(&watch);
        let r = load::closed_loop(conc, warmup, round, raw.op()).await;
        raw_cpu.add(cpu.since(&watch));
        checks.push(
            check_queue(
                admin_ch,
                &raw_queue,
                r.acked_events,
                &format!("raw c={conc} round {}", i + 1),
            )
            .await?,
        );
        raw_rounds.push(r);

        let sampler = watch.start_rss_sampler();
        let before = split::Snapshot::scrape(bridge.admin_port, WEGOCOD_ENDPOINT).await;
        let cpu = CpuSnapshot::take(&watch);
        let b = load::closed_loop(conc, warmup, round, http.wegocod_op()).await;
        br_cpu.add(cpu.since(&watch));
        let after = split::Snapshot::scrape(bridge.admin_port, WEGOCOD_ENDPOINT).await;
        if let (Some(before), Some(after)) = (before, after) {
            splits.push(after.since(&before));
        }
        rss_single = rss_single.max(sampler.stop().await);
        checks.push(
            check_queue(
                admin_ch,
                &bridge_queue,
                b.acked_events,
                &format!("bridge wegocod c={conc} round {}", i + 1),
            )
            .await?,
        );
        println!(
            "round {}: raw {:.0}/s, bridge {:.0}/s, ratio {:.2}",
            i + 1,
            raw_rounds[i].events_per_sec(),
            b.events_per_sec(),
            b.events_per_sec() / raw_rounds[i].events_per_sec().max(1.0)
        );
        br_rounds.push(b);
    }
    let mut ratios: Vec<f64> = raw_rounds
        .iter()
        .zip(&br_rounds)
        .map(|(r, b)| b.events_per_sec() / r.events_per_sec().max(1.0))
        .collect();
    let median_ratio = median(&mut ratios);
    let raw_full = PhaseResult::combine(raw_rounds);
    let br_full = PhaseResult::combine(br_rounds);
    print_split(&split::Split::combine(&splits), &br_full, &raw_full);
    rows.push(Row::new(
        &format!("raw lapin publish+confirm, c={conc}"),
        &raw_full,
        raw_cpu,
        None,
    ));
    rows.push(Row::new(
        &format!("bridge WeGoCOD webhooks, c={conc}"),
        &br_full,
        br_cpu,
        Some(rss_single),
    ));

    // The diagnostics alternate raw lapin with another way of publishing into the raw queue.
    let side = Side {
        conc,
        warmup,
        round,
        rounds: args.rounds(),
        admin_ch,
        queue: &raw_queue,
    };
    if args.publisher_phase {
        // The bridge's own publisher module (same code, same config, same message), driven from
        // this process with no HTTP in front: how much of the gap is the publish path itself.
        let (_stop, stop_rx) = tokio::sync::watch::channel(false);
        let mut amqp_cfg = config.amqp.clone();
        amqp_cfg.exchange = raw_exchange.clone();
        amqp_cfg.declare_topology = false;
        let publisher = webhook_bridge::publisher::Publisher::start(
            amqp_cfg,
            webhook_bridge::metrics::Metrics::new()?,
            stop_rx,
        );
        if !publisher.wait_connected(Duration::from_secs(10)).await {
            bail!("the in-process publisher did not connect");
        }
        let (p, _) = side
            .against_raw(
                &raw,
                publisher_op(&publisher, &template),
                "webhook_bridge::publisher in-process",
                &mut checks,
            )
            .await?;
        rows.push(Row::new(
            &format!("bridge's publisher in-process (no HTTP), c={conc}"),
            &p,
            sys::CpuDelta::default(),
            None,
        ));
    }
    let mut coupled_ratio = None;
    if args.coupled_phase {
        // Raw lapin, but each publish waits for one trivial HTTP exchange first (`GET /healthz`
        // on the bridge's admin port, same client): the ceiling of *any* publisher whose
        // publishes are paced by HTTP round trips, with none of the bridge's request work.
        let hop = http.healthz_op(bridge.admin_port);
        let publish = raw.op();
        let coupled: Op = Arc::new(move |w: usize, q: u64| {
            let (hop, publish) = (Arc::clone(&hop), Arc::clone(&publish));
            Box::pin(async move {
                hop(w, q).await?;
                publish(w, q).await
            })
        });
        let (c, mut ratios) = side
            .against_raw(&raw, coupled, "raw behind one HTTP round trip", &mut checks)
            .await?;
        coupled_ratio = Some(median(&mut ratios));
        rows.push(Row::new(
            &format!("raw lapin, each publish behind one GET /healthz, c={conc}"),
            &c,
            sys::CpuDelta::default(),
            None,
        ));
    }
    if args.http_ceiling {
        // The HTTP path alone, same client and concurrency: what is left for everything else.
        let cpu = CpuSnapshot::take(&watch);
        let h = load::closed_loop(conc, warmup, round, http.healthz_op(bridge.admin_port)).await;
        let cpu = cpu.since(&watch);
        println!(
            "HTTP ceiling (GET /healthz on the admin port, c={conc}): {:.0} requests/s, p50 {}, \
             p99 {}; CPU µs/request bridge {:.0}, load gen {:.0}",
            h.ops_per_sec(),
            fmt_us(h.p(0.5)),
            fmt_us(h.p(0.99)),
            cpu.bridge_us.unwrap_or(0) as f64 / h.acked_ops.max(1) as f64,
            cpu.self_us as f64 / h.acked_ops.max(1) as f64
        );
    }
    let mut isendu_row = None;
    let mut open_rows = None;
    if !args.only_full {
        // 3. Bridge, isendu batches, closed loop.
        let sampler = watch.start_rss_sampler();
        let cpu = CpuSnapshot::take(&watch);
        let br_batch = load::closed_loop(conc, warmup, duration, http.isendu_op()).await;
        let cpu = cpu.since(&watch);
        let rss_batch = sampler.stop().await;
        checks.push(
            check_queue(
                admin_ch,
                &bridge_queue,
                br_batch.acked_events,
                &format!("bridge isendu c={conc}"),
            )
            .await?,
        );
        rows.push(Row::new(
            &format!("bridge isendu batches of {}, c={conc}", args.batch),
            &br_batch,
            cpu,
            Some(rss_batch),
        ));
        isendu_row = Some(br_batch);

        // 4. Open loop at a fraction of the bridge's full-load rate; raw and bridge alternate.
        let rate = (br_full.ops_per_sec() * args.load_fraction).max(1.0);
        let (mut raw_parts, mut br_parts) = (Vec::new(), Vec::new());
        let (mut raw_cpu, mut br_cpu) = (sys::CpuDelta::default(), sys::CpuDelta::default());
        let mut rss_open = 0;
        for i in 0..args.rounds() {
            let cpu = CpuSnapshot::take(&watch);
            let r = load::open_loop(rate, conc, warmup, round, raw.op()).await;
            raw_cpu.add(cpu.since(&watch));
            let what = format!("raw open loop round {}", i + 1);
            checks.push(check_queue(admin_ch, &raw_queue, r.acked_events, &what).await?);

            let sampler = watch.start_rss_sampler();
            let cpu = CpuSnapshot::take(&watch);
            let b = load::open_loop(rate, conc, warmup, round, http.wegocod_op()).await;
            br_cpu.add(cpu.since(&watch));
            rss_open = rss_open.max(sampler.stop().await);
            let what = format!("bridge open loop round {}", i + 1);
            checks.push(check_queue(admin_ch, &bridge_queue, b.acked_events, &what).await?);
            println!(
                "open-loop round {} at {rate:.0}/s: p99 raw {}, bridge {}",
                i + 1,
                fmt_us(r.p(0.99)),
                fmt_us(b.p(0.99))
            );
            raw_parts.push(r);
            br_parts.push(b);
        }
        let raw_open = PhaseResult::combine(raw_parts);
        let br_open = PhaseResult::combine(br_parts);
        rows.push(Row::new(
            &format!("raw, open loop {rate:.0}/s"),
            &raw_open,
            raw_cpu,
            None,
        ));
        rows.push(Row::new(
            &format!("bridge WeGoCOD, open loop {rate:.0}/s"),
            &br_open,
            br_cpu,
            Some(rss_open),
        ));
        open_rows = Some((rate, raw_open, br_open));
    }
    let hwm = sys::read_status_kib(bridge.pid(), "VmHWM:").unwrap_or(0);
    drop(bridge);

    println!();
    print_table(&rows);
    println!();
    println!("queue checks (messages in the queue vs events acknowledged):");
    for c in &checks {
        println!("  {c}");
    }
    println!(
        "bridge VmHWM over the whole run: {:.1} MiB",
        hwm as f64 / 1024.0
    );
    println!();
    println!("goals (ratios from this run):");
    verdict(
        &format!(
            "single-event webhooks / raw = {median_ratio:.2} (median of {} rounds: {}; goal >= 0.90)",
            ratios.len(),
            ratios
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        median_ratio >= 0.9,
    );
    if let Some(c) = coupled_ratio {
        println!(
            "  (for reference: raw behind one HTTP round trip / raw = {c:.2}, the ceiling of any \
             HTTP front end here; single-event webhooks / that = {:.2})",
            median_ratio / c.max(f64::MIN_POSITIVE)
        );
    }
    if let Some(b) = &isendu_row {
        let r2 = b.events_per_sec() / raw_full.events_per_sec();
        let per_req = b.acked_events as f64 / b.acked_ops.max(1) as f64;
        verdict(
            &format!(
                "isendu batch events/s / raw = {r2:.2} (goal >= 0.90; {per_req:.1} events per request)"
            ),
            r2 >= 0.9,
        );
    }
    if let Some((rate, raw_open, br_open)) = &open_rows {
        let (b, r) = (br_open.p(0.99), raw_open.p(0.99));
        verdict(
            &format!(
                "p99 at {rate:.0}/s: bridge {} vs raw {} = {:.2}x (goal <= 2x)",
                fmt_us(b),
                fmt_us(r),
                b as f64 / r.max(1) as f64
            ),
            b <= 2 * r,
        );
    }
    let peak = rows
        .iter()
        .filter_map(|r| r.rss_kib)
        .max()
        .unwrap_or(0)
        .max(hwm);
    verdict(
        &format!(
            "bridge peak RSS {:.1} MiB (goal < 50 MiB)",
            peak as f64 / 1024.0
        ),
        peak < 50 * 1024,
    );
    if checks.iter().any(|c| c.starts_with("MISMATCH")) {
        bail!("the queue did not receive exactly the acknowledged events");
    }
    Ok(())
}

/// The median of `v` (sorted in place); 0 for an empty slice.
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The bridge's full-load request time, split by its own histograms (means over the rounds).
fn print_split(split: &split::Split, bridge: &PhaseResult, raw: &PhaseResult) {
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
         the confirm wait + confirm wait {confirm_ms:.2} ms; raw publish+confirm {:.2} ms",
        client_ms - handler_ms,
        (handler_ms - confirm_ms) * 1000.0,
        raw.hist.mean() / 1000.0,
    );
}

fn verdict(text: &str, ok: bool) {
    println!("  [{}] {text}", if ok { "met" } else { "NOT met" });
}

fn nanos() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
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

fn write_config(dir: &Path, url: &str, exchange: &str, channels: usize) -> Result<PathBuf> {
    let port = free_port()?;
    let admin = free_port()?;
    let spool = dir.join("spool");
    let text = format!(
        r#"listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"

[amqp]
urls = ["{url}"]
exchange = "{exchange}"
channels = {channels}

[spool]
dir = "{spool}"

[[endpoint]]
name = "{WEGOCOD_ENDPOINT}"
provider = "wegocod"
path = "/webhooks/wegocod"
secret = "{WEGOCOD_SECRET}"

[[endpoint]]
name = "isendu-bench"
provider = "isendu"
path = "/webhooks/isendu"
secret = "{ISENDU_TOKEN}"
"#,
        spool = spool.display()
    );
    let path = dir.join("bridge.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn spawn_bridge(
    bin: &Path,
    config_path: &Path,
    dir: &Path,
    config: &Config,
    rust_log: &str,
) -> Result<BridgeProcess> {
    let log = dir.join("bridge.log");
    let child = Command::new(bin)
        .args(["--log-format", "json", "serve", "--config"])
        .arg(config_path)
        .env("RUST_LOG", rust_log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("spawning {}", bin.display()))?;
    Ok(BridgeProcess {
        child,
        port: config.listen.port(),
        admin_port: config.admin_listen.port(),
        log,
    })
}

async fn wait_ready(admin_port: u16, timeout: Duration, bridge: &BridgeProcess) -> Result<()> {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        let uri: http::Uri = format!("http://127.0.0.1:{admin_port}/readyz").parse()?;
        if let Ok(r) = client.get(uri).await
            && r.status() == 200
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = std::fs::read_to_string(&bridge.log).unwrap_or_default();
    bail!("bridge not ready after {timeout:?}; log:\n{log}")
}

async fn declare_queue(ch: &Channel, queue: &str, exchange: &str) -> Result<()> {
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    ch.queue_bind(
        queue.into(),
        exchange.into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    Ok(())
}

/// Compare the queue's depth with the events acknowledged in the phase, then purge it.
async fn check_queue(ch: &Channel, queue: &str, acked: u64, what: &str) -> Result<String> {
    if !ch.status().connected() {
        bail!(
            "lost the broker connection during {what} (was RabbitMQ restarted mid-run?); the \
             figures of this run are void, run it again"
        );
    }
    // Confirms are in when the phase ends; give the queue process a moment to report them.
    let mut count = 0;
    for _ in 0..20 {
        let q = ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        count = u64::from(q.message_count());
        if count == acked {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ch.queue_purge(queue.into(), QueuePurgeOptions::default())
        .await?;
    Ok(if count == acked {
        format!("ok: {what}: {count} messages = {acked} acknowledged events")
    } else {
        format!("MISMATCH: {what}: {count} messages in the queue, {acked} acknowledged events")
    })
}

/// Build the message the bridge would publish for the WeGoCOD sample, through its own code.
fn wegocod_message(config: &Config) -> Result<Message> {
    let ep = config
        .endpoints
        .iter()
        .find(|e| e.provider.name == "wegocod")
        .ok_or_else(|| anyhow!("no wegocod endpoint"))?;
    let headers = http::HeaderMap::new();
    let inbound = Inbound {
        options: &ep.options,
        headers: &headers,
        body: webhook_bridge::providers::wegocod::DELIVERED,
    };
    let Ok(Parsed::Events(events)) = ep.provider.parse(&inbound) else {
        bail!("the WeGoCOD sample did not parse into events");
    };
    let event = events
        .first()
        .ok_or_else(|| anyhow!("no event in sample"))?;
    Ok(envelope::encode(ep, event, chrono::Utc::now())?)
}

// --- raw baseline -------------------------------------------------------------------------

/// lapin publishing the bridge's message over `channels` confirm channels; publisher `i` uses
/// channel `i % channels`, as the bridge spreads requests round-robin.
struct RawPublisher {
    channels: Arc<Vec<Channel>>,
    exchange: ShortString,
    routing_key: ShortString,
    body: Arc<Vec<u8>>,
    props: BasicProperties,
}

impl RawPublisher {
    async fn new(conn: &Connection, n: usize, exchange: &str, msg: &Message) -> Result<Self> {
        let mut channels = Vec::with_capacity(n);
        for _ in 0..n {
            let ch = conn.create_channel().await?;
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
            channels.push(ch);
        }
        Ok(Self {
            channels: Arc::new(channels),
            exchange: exchange.into(),
            routing_key: msg.routing_key.as_str().into(),
            body: Arc::new(msg.body.clone()),
            props: webhook_bridge::publisher::properties(msg),
        })
    }

    fn op(&self) -> Op {
        let channels = Arc::clone(&self.channels);
        let (exchange, rk) = (self.exchange.clone(), self.routing_key.clone());
        let (body, props) = (Arc::clone(&self.body), self.props.clone());
        Arc::new(move |worker: usize, _seq: u64| {
            let ch = channels[worker % channels.len()].clone();
            let (exchange, rk, body, props) = (
                exchange.clone(),
                rk.clone(),
                Arc::clone(&body),
                props.clone(),
            );
            Box::pin(async move {
                let confirm = ch
                    .basic_publish(
                        exchange,
                        rk,
                        BasicPublishOptions {
                            mandatory: true,
                            ..Default::default()
                        },
                        &body,
                        props,
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                match confirm.await.map_err(|e| e.to_string())? {
                    Confirmation::Ack(None) => Ok(1),
                    other => Err(format!("not acked: {other:?}")),
                }
            })
        })
    }
}

/// What a diagnostic phase needs to alternate raw lapin with another way of publishing into the
/// raw queue, round by round.
struct Side<'a> {
    conc: usize,
    warmup: Duration,
    round: Duration,
    rounds: usize,
    admin_ch: &'a Channel,
    queue: &'a str,
}

impl Side<'_> {
    /// `rounds` × (raw, then `op`), each checked against the queue; prints the per-round ratios
    /// and returns `op`'s rounds combined.
    async fn against_raw(
        &self,
        raw: &RawPublisher,
        op: Op,
        name: &str,
        checks: &mut Vec<String>,
    ) -> Result<(PhaseResult, Vec<f64>)> {
        let mut parts = Vec::new();
        let mut ratios = Vec::new();
        for i in 0..self.rounds {
            let r = load::closed_loop(self.conc, self.warmup, self.round, raw.op()).await;
            let what = format!("raw (vs {name}) round {}", i + 1);
            checks.push(check_queue(self.admin_ch, self.queue, r.acked_events, &what).await?);
            let p = load::closed_loop(self.conc, self.warmup, self.round, Arc::clone(&op)).await;
            let what = format!("{name} round {}", i + 1);
            checks.push(check_queue(self.admin_ch, self.queue, p.acked_events, &what).await?);
            println!(
                "{name} round {}: raw {:.0}/s, {name} {:.0}/s, ratio {:.2}",
                i + 1,
                r.events_per_sec(),
                p.events_per_sec(),
                p.events_per_sec() / r.events_per_sec().max(1.0)
            );
            ratios.push(p.events_per_sec() / r.events_per_sec().max(1.0));
            parts.push(p);
        }
        Ok((PhaseResult::combine(parts), ratios))
    }
}

/// One message per call through `webhook_bridge::publisher::Publisher::publish`, as the
/// request path calls it (persistent, mandatory, confirmed, with the request's deadline).
fn publisher_op(publisher: &Arc<webhook_bridge::publisher::Publisher>, msg: &Message) -> Op {
    let publisher = Arc::clone(publisher);
    let msgs = Arc::new(vec![msg.clone()]);
    Arc::new(move |_worker: usize, _seq: u64| {
        let (publisher, msgs) = (Arc::clone(&publisher), Arc::clone(&msgs));
        Box::pin(async move {
            publisher
                .publish(&msgs, Instant::now() + Duration::from_secs(5))
                .await
                .map_err(|e| e.to_string())?;
            Ok(1)
        })
    })
}

// --- HTTP driver --------------------------------------------------------------------------

/// Sends signed webhooks to the bridge over a pool of keep-alive connections.
struct HttpDriver {
    client: Arc<client::Pool>,
    kind: client::Kind,
    wegocod_uri: http::Uri,
    wegocod_auth: AuthConfig,
    isendu_uri: http::Uri,
    batch: usize,
    run: String,
    seq: Arc<AtomicU64>,
}

impl HttpDriver {
    fn new(config: &Config, port: u16, batch: usize, tag: &str, kind: client::Kind) -> Self {
        let client = Arc::new(client::Pool::new(
            SocketAddr::from(([127, 0, 0, 1], port)),
            kind,
        ));
        let isendu = config
            .endpoints
            .iter()
            .find(|e| e.provider.name == "isendu");
        let isendu_path = isendu.map_or("/webhooks/isendu".to_string(), |e| e.path.clone());
        let signed = auth::sign(
            &AuthConfig::PathToken,
            &Secret::new(ISENDU_TOKEN),
            b"",
            SystemTime::now(),
            "",
        );
        let token = signed.path_suffix.unwrap_or_default();
        Self {
            client,
            kind,
            wegocod_uri: format!("http://127.0.0.1:{port}/webhooks/wegocod")
                .parse()
                .unwrap_or_default(),
            wegocod_auth: (webhook_bridge::providers::wegocod::PROVIDER.default_auth)()
                .unwrap_or(AuthConfig::PathToken),
            isendu_uri: format!("http://127.0.0.1:{port}{isendu_path}/{token}")
                .parse()
                .unwrap_or_default(),
            batch,
            run: tag.to_string(),
            seq: Arc::new(AtomicU64::new(0)),
        }
    }

    /// One signed WeGoCOD webhook per call, each with its own `order.reference`.
    fn wegocod_op(&self) -> Op {
        let sample = std::str::from_utf8(webhook_bridge::providers::wegocod::DELIVERED).unwrap_or_default();
        let (head, tail) = sample.split_once("ORD-000129").unwrap_or((sample, ""));
        let (head, tail) = (Arc::new(head.to_string()), Arc::new(tail.to_string()));
        let client = self.client.clone();
        let uri = self.wegocod_uri.clone();
        let auth_cfg = Arc::new(self.wegocod_auth.clone());
        let secret = Arc::new(Secret::new(WEGOCOD_SECRET));
        let run = Arc::new(self.run.clone());
        let seq = Arc::clone(&self.seq);
        Arc::new(move |_worker: usize, _seq: u64| {
            let n = seq.fetch_add(1, Ordering::Relaxed);
            let body = format!("{head}{run}-{n}{tail}");
            let now = SystemTime::now();
            let signed = auth::sign(&auth_cfg, &secret, body.as_bytes(), now, "");
            let ts = now
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let mut req = http::Request::post(uri.clone())
                .header(http::header::CONTENT_TYPE, "application/json")
                .header("x-webhook-event", "order.status_updated")
                .header("x-webhook-timestamp", ts.to_string());
            for (name, value) in signed.headers {
                req = req.header(name, value);
            }
            let req = req.body(Full::new(Bytes::from(body)));
            let client = Arc::clone(&client);
            Box::pin(async move { send(&client, req.map_err(|e| e.to_string())?).await })
        })
    }

    /// `GET /healthz` on the admin port: the HTTP path alone (client, kernel, hyper server),
    /// no auth, no parsing, no broker. Its rate is the ceiling the load generator and hyper
    /// put on any webhook rate.
    fn healthz_op(&self, admin_port: u16) -> Op {
        let client = Arc::new(client::Pool::new(
            SocketAddr::from(([127, 0, 0, 1], admin_port)),
            self.kind,
        ));
        let uri: http::Uri = format!("http://127.0.0.1:{admin_port}/healthz")
            .parse()
            .unwrap_or_default();
        Arc::new(move |_worker: usize, _seq: u64| {
            let client = Arc::clone(&client);
            let req = http::Request::get(uri.clone()).body(Full::new(Bytes::new()));
            Box::pin(async move {
                let (status, _) = client.send(req.map_err(|e| e.to_string())?).await?;
                if status == http::StatusCode::OK {
                    Ok(0)
                } else {
                    Err(format!("healthz: HTTP {status}"))
                }
            })
        })
    }

    /// One isendu batch `{"order":[],"tracking":[…]}` of `batch` distinct elements per call.
    fn isendu_op(&self) -> Op {
        let client = self.client.clone();
        let uri = self.isendu_uri.clone();
        let batch = self.batch;
        let run = Arc::new(self.run.clone());
        let seq = Arc::clone(&self.seq);
        Arc::new(move |_worker: usize, _seq: u64| {
            let n = seq.fetch_add(1, Ordering::Relaxed);
            let body = isendu_batch(&run, n, batch);
            let req = http::Request::post(uri.clone())
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body)));
            let client = Arc::clone(&client);
            Box::pin(async move { send(&client, req.map_err(|e| e.to_string())?).await })
        })
    }
}

/// A tracking batch shaped like the isendu sample, every element with its own uuid.
fn isendu_batch(run: &str, n: u64, batch: usize) -> String {
    let h = run
        .bytes()
        .fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)));
    let elements: Vec<String> = (0..batch)
        .map(|i| {
            format!(
                r#"{{"uuid":"{h:08x}-{:04x}-4{:03x}-8{:03x}-{n:012x}","status":"IN_TRANSIT","trackingNumber":"1Z999AA1{n:010}","trackingUrl":"https://tracking.example.com/1Z999AA1{n:010}","delivered":false,"steps":[{{"datetime":"2026-05-09 10:15:00","timestamp":"2026-05-09T08:15:00Z","timezone":"Europe/Rome","description":"Parcel departed the sorting centre","location":"Milano","status":"IN_TRANSIT","error":{{"code":"","message":""}}}}]}}"#,
                (n >> 48) & 0xffff,
                i >> 12,
                i & 0xfff
            )
        })
        .collect();
    format!(r#"{{"order":[],"tracking":[{}]}}"#, elements.join(","))
}

/// Send one request; Ok(events acknowledged) for `200 {"accepted": n}`.
async fn send(client: &client::Pool, req: http::Request<Full<Bytes>>) -> Result<u64, String> {
    let (status, body) = client.send(req).await?;
    if status != http::StatusCode::OK {
        return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)));
    }
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    match v.get("accepted").and_then(|n| n.as_u64()) {
        Some(n) => Ok(n),
        None => Err(format!("200 without accepted: {v}")),
    }
}

// --- report -------------------------------------------------------------------------------

struct Row {
    name: String,
    events_per_sec: f64,
    ops_per_sec: f64,
    p50: u64,
    p99: u64,
    p999: u64,
    errors: u64,
    cpu: sys::CpuDelta,
    events: u64,
    rss_kib: Option<u64>,
}

impl Row {
    fn new(name: &str, r: &PhaseResult, cpu: sys::CpuDelta, rss_kib: Option<u64>) -> Self {
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

fn fmt_us(us: u64) -> String {
    if us >= 10_000 {
        format!("{:.0} ms", us as f64 / 1000.0)
    } else {
        format!("{:.2} ms", us as f64 / 1000.0)
    }
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
