//! Command line: parse, load config, dispatch; and what only the binary sets up for the whole
//! process: the allocator and the threads' scheduling policy.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use webhook_bridge::config::{Config, ThreadScheduling};
use webhook_bridge::secret::redact_url;
use webhook_bridge::send;
use webhook_bridge::tools::{spool, tail, unrouted};

/// jemalloc rather than the C library's malloc. The release image is a static musl binary, and
/// musl's allocator made the bridge spend 70 µs of CPU per event instead of 40 and cut isendu
/// batch throughput by a quarter (docs/BENCHMARKS.md); jemalloc gives the musl and glibc builds
/// the same cost.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its first allocation (`_RJEM_MALLOC_CONF` in the environment
/// overrides them): background threads hand freed memory back to the OS after 100 ms, so the
/// resident size follows the load down instead of staying at its peak; one arena rather than
/// four per CPU, so freed pages are reused by every thread instead of idling in another
/// thread's arena. Together they took the bench's peak RSS from 32.8–34.2 to 27.3 MiB at the
/// same CPU per webhook (docs/BENCHMARKS.md, "A/B runs of 1 Dec").
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: MallocConf =
    MallocConf(c"background_thread:true,narenas:1,dirty_decay_ms:100,muzzy_decay_ms:0".as_ptr());

/// A C string pointer jemalloc reads at start-up.
#[repr(transparent)]
struct MallocConf(*const std::ffi::c_char);

// SAFETY: it points at a `'static`, immutable C string literal.
unsafe impl Sync for MallocConf {}

/// Allocations made so far by the whole process: jemalloc's small and large allocation requests
/// summed over all arenas (`MALLCTL_ARENAS_ALL` = 4096), after advancing the stats epoch.
/// Thread caches report their requests to the arenas when they flush, so the count lags by at
/// most what the caches hold: nothing over a benchmark's thousands of requests. Read at scrape
/// time (`webhook_bridge_allocations_total`).
fn jemalloc_allocations() -> Option<u64> {
    tikv_jemalloc_ctl::epoch::advance().ok()?;
    // SAFETY: both are `uint64_t` statistics (jemalloc is built with `stats`).
    let small: u64 =
        unsafe { tikv_jemalloc_ctl::raw::read(b"stats.arenas.4096.small.nrequests\0") }.ok()?;
    // SAFETY: as above.
    let large: u64 =
        unsafe { tikv_jemalloc_ctl::raw::read(b"stats.arenas.4096.large.nrequests\0") }.ok()?;
    Some(small + large)
}

/// Put every thread of the process under `policy`: those already running (the log writer,
/// jemalloc's background thread, this one), and through this one every thread started later —
/// the async workers, the blocking pool, the AMQP client's I/O threads — since a new thread
/// inherits its creator's policy. `SCHED_BATCH` and `SCHED_OTHER` need no privilege.
#[cfg(target_os = "linux")]
fn set_thread_scheduling(policy: ThreadScheduling) -> std::io::Result<()> {
    let policy = match policy {
        ThreadScheduling::Batch => libc::SCHED_BATCH,
        ThreadScheduling::Normal => libc::SCHED_OTHER,
    };
    let param = libc::sched_param { sched_priority: 0 };
    for entry in std::fs::read_dir("/proc/self/task")? {
        let Some(tid) = entry?.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        // SAFETY: a plain system call on a thread id of this process, with a valid parameter
        // that outlives it; a thread that has exited since the listing fails with ESRCH.
        if unsafe { libc::sched_setscheduler(tid, policy, &param) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(e);
            }
        }
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn set_thread_scheduling(_: ThreadScheduling) -> std::io::Result<()> {
    Ok(())
}

#[derive(Parser)]
#[command(
    name = "webhook-bridge",
    version,
    about = "Provider webhooks → confirmed RabbitMQ CloudEvents"
)]
struct Cli {
    /// Log format: json for Kubernetes, text for a terminal.
    #[arg(
        long,
        global = true,
        env = "WEBHOOK_BRIDGE_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Serve {
        #[arg(
            long,
            env = "WEBHOOK_BRIDGE_CONFIG",
            default_value = "webhook-bridge.toml"
        )]
        config: PathBuf,
    },
    /// Validate the configuration and print endpoints and routes, secrets redacted.
    CheckConfig {
        #[arg(
            long,
            env = "WEBHOOK_BRIDGE_CONFIG",
            default_value = "webhook-bridge.toml"
        )]
        config: PathBuf,
    },
    /// Sign a sample (or a file) the way the endpoint's provider would and POST it.
    Send {
        #[arg(
            long,
            env = "WEBHOOK_BRIDGE_CONFIG",
            default_value = "webhook-bridge.toml"
        )]
        config: PathBuf,
        /// Endpoint name from the config.
        #[arg(long)]
        endpoint: String,
        /// Bundled sample of the endpoint's provider (default: its first event sample).
        #[arg(long, conflicts_with = "body")]
        sample: Option<String>,
        /// Send this file's bytes instead of a sample.
        #[arg(long)]
        body: Option<PathBuf>,
        /// http://host:port (the endpoint path is appended) or a full URL; default: `listen`.
        #[arg(long)]
        url: Option<String>,
        /// Extra header, `Name: value`; repeatable (e.g. a generic endpoint's event header).
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
    },
    /// Print the messages published to the exchange as they pass, from a temporary queue of its
    /// own, until Ctrl-C or SIGTERM.
    Tail {
        #[arg(
            long,
            env = "WEBHOOK_BRIDGE_CONFIG",
            default_value = "webhook-bridge.toml"
        )]
        config: PathBuf,
        /// Topic binding pattern (`*.order.status_changed`, `mailship.#`); repeatable; at least
        /// one. While `tail` runs, a matching message no other queue is bound for goes to `tail`
        /// only, not to `<exchange>.unrouted`: watch what consumers bind, not `#`, in production.
        #[arg(long = "routing-key", value_name = "PATTERN", required = true)]
        routing_keys: Vec<String>,
        /// Print each message's JSON body on one line instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Read a spool directory, safely next to a running bridge: takes no lock, changes nothing.
    Spool {
        #[command(subcommand)]
        command: SpoolCommand,
    },
    /// The queue `<exchange>.unrouted`, where messages no queue was bound for are kept.
    Unrouted {
        #[command(subcommand)]
        command: UnroutedCommand,
    },
}

/// Which spool directory a `spool` command reads.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct SpoolDir {
    /// The spool directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// A bridge config file: its `[spool] dir` (the secrets it names must resolve).
    #[arg(long)]
    config: Option<PathBuf>,
}

impl SpoolDir {
    fn resolve(self) -> anyhow::Result<PathBuf> {
        match (self.dir, self.config) {
            (Some(dir), _) => Ok(dir),
            (None, Some(config)) => Ok(Config::load(&config)?.spool.dir),
            (None, None) => anyhow::bail!("give --dir or --config"),
        }
    }
}

#[derive(Subcommand)]
enum SpoolCommand {
    /// Pending events and bytes, the oldest pending event's age, counts per routing key, damaged
    /// segments and regions, the spool format.
    Status {
        #[command(flatten)]
        spool: SpoolDir,
    },
    /// One line per pending record: segment, offset, time (RFC 3339), routing key, message id.
    List {
        #[command(flatten)]
        spool: SpoolDir,
    },
    /// JSON lines, one per pending record: id, routing_key, source, timestamp, body (the
    /// CloudEvent).
    Export {
        #[command(flatten)]
        spool: SpoolDir,
    },
}

#[derive(Subcommand)]
enum UnroutedCommand {
    /// Move the messages in `<exchange>.unrouted` back to the exchange (one pass); those still
    /// unroutable stay.
    Replay {
        #[arg(
            long,
            env = "WEBHOOK_BRIDGE_CONFIG",
            default_value = "webhook-bridge.toml"
        )]
        config: PathBuf,
        /// Count the messages per routing key; move nothing.
        #[arg(long)]
        dry_run: bool,
        /// Examine at most N messages.
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
    },
}

/// Targets whose verbose output can quote what the bridge must never log, capped here whatever
/// `RUST_LOG` says: at `trace`, lapin prints incoming AMQP frames with `Debug` (a returned
/// message's body — the provider payload with its PII — as bytes) and connection state, and
/// amq-protocol-tcp prints the broker URI with its password. hyper and rustls are capped too, so
/// that enabling their optional logging later cannot leak headers or handshake secrets.
const LOG_CAPS: &[(&str, tracing::Level)] = &[
    ("lapin", tracing::Level::DEBUG),
    // Logs the whole returned message, payload included, at WARN.
    ("lapin::returned_messages", tracing::Level::ERROR),
    ("amq_protocol", tracing::Level::INFO),
    ("amq_protocol_tcp", tracing::Level::INFO),
    ("amq_protocol_uri", tracing::Level::INFO),
    ("amq_protocol_types", tracing::Level::INFO),
    ("hyper", tracing::Level::INFO),
    ("hyper_util", tracing::Level::INFO),
    ("rustls", tracing::Level::INFO),
];

/// Install the subscriber; the returned guard flushes the log writer when dropped.
fn init_logging(format: LogFormat) -> webhook_bridge::logging::LogGuard {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let caps = LOG_CAPS.iter().fold(
        tracing_subscriber::filter::Targets::new().with_default(tracing::Level::TRACE),
        |t, &(target, level)| t.with_target(target, level),
    );
    let (writer, guard) = webhook_bridge::logging::stderr_writer();
    let output = match format {
        // `.json()` for its field formatter (span fields); the line itself is `JsonLine`'s.
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .event_format(webhook_bridge::logging::json::JsonLine::new())
            .with_writer(writer)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(writer)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(output.with_filter(filter).with_filter(caps))
        .init();
    // The default hook prints the panic message, which can quote request data (a failed slice
    // shows the string). Log where it happened, not what it said.
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(%location, "panic (message withheld: it may quote request data)");
    }));
    guard
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Dropped when `main` returns: queued log lines are written before the process exits.
    let _log_writer = init_logging(cli.log_format);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { config } => {
            let config = Config::load(&config)?;
            webhook_bridge::metrics::count_allocations_with(jemalloc_allocations);
            if let Err(e) = set_thread_scheduling(config.thread_scheduling) {
                // A seccomp profile may refuse the call: the bridge works the same without it.
                tracing::warn!(
                    thread_scheduling = config.thread_scheduling.as_str(),
                    error = %e,
                    "thread scheduling policy not applied to every thread; those it failed on keep the policy they started with"
                );
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(config.worker_threads)
                .enable_all()
                .build()?;
            runtime.block_on(webhook_bridge::serve(config))?;
            Ok(())
        }
        Command::CheckConfig { config } => {
            let cfg = Config::load(&config)?;
            print_config(&cfg);
            Ok(())
        }
        Command::Send {
            config,
            endpoint,
            sample,
            body,
            url,
            headers,
        } => {
            let cfg = Config::load(&config)?;
            let opts = send::SendOptions {
                endpoint,
                sample,
                body,
                url,
                headers,
            };
            let prepared = send::prepare(&cfg, &opts, std::time::SystemTime::now())?;
            for note in &prepared.notes {
                eprintln!("note: {note}");
            }
            println!(
                "POST {} ({} bytes)",
                prepared.display_url,
                prepared.body.len()
            );
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let answer = runtime.block_on(send::post(&prepared))?;
            println!(
                "{} in {:.1} ms",
                answer.status,
                answer.latency.as_secs_f64() * 1000.0
            );
            println!("{}", answer.printable_body());
            if !answer.is_success() {
                anyhow::bail!("the endpoint answered {}", answer.status);
            }
            Ok(())
        }
        Command::Tail {
            config,
            routing_keys,
            json,
        } => {
            let cfg = Config::load(&config)?;
            let opts = tail::TailOptions {
                patterns: routing_keys,
                json,
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(tail::run(&cfg.amqp, &opts, std::io::stdout()))?;
            Ok(())
        }
        Command::Spool { command } => {
            let stdout = std::io::stdout().lock();
            match command {
                SpoolCommand::Status { spool } => spool::status(&spool.resolve()?, stdout)?,
                SpoolCommand::List { spool } => spool::list(&spool.resolve()?, stdout)?,
                SpoolCommand::Export { spool } => spool::export(&spool.resolve()?, stdout)?,
            }
            Ok(())
        }
        Command::Unrouted {
            command:
                UnroutedCommand::Replay {
                    config,
                    dry_run,
                    limit,
                },
        } => {
            let cfg = Config::load(&config)?;
            let opts = unrouted::ReplayOptions { dry_run, limit };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let report = runtime.block_on(unrouted::replay(&cfg.amqp, opts))?;
            println!("{report}");
            Ok(())
        }
    }
}

fn print_config(cfg: &Config) {
    println!("config OK");
    println!(
        "listen {}  admin {}  ack_deadline {:?}  max_body {}B  worker_threads {}  thread_scheduling {}",
        cfg.listen,
        cfg.admin_listen,
        cfg.ack_deadline,
        cfg.max_body,
        cfg.worker_threads,
        cfg.thread_scheduling.as_str()
    );
    for url in &cfg.amqp.urls {
        println!("amqp {}", redact_url(url.expose()));
    }
    println!(
        "exchange {}  (alternate {} → queue {})",
        cfg.amqp.exchange,
        cfg.amqp.alternate_exchange(),
        cfg.amqp.unrouted_queue()
    );
    for w in &cfg.warnings {
        println!("warning: {w}");
    }
    for ep in &cfg.endpoints {
        let sources: Vec<String> = ep.secret_sources.iter().map(|s| s.to_string()).collect();
        let path = if matches!(ep.auth, webhook_bridge::auth::AuthConfig::PathToken) {
            format!("{}/<token>", ep.path)
        } else {
            ep.path.clone()
        };
        println!(
            "endpoint {:<20} POST {:<32} provider={} auth={} secret=*** ({})",
            ep.name,
            path,
            ep.provider.name,
            ep.auth.kind_name(),
            sources.join(", ")
        );
        println!("  routes: {}", ep.routing_keys().join(", "));
    }
}

#[cfg(test)]
mod tests {
    /// The options above are the ones jemalloc runs with (a misspelt symbol would be ignored
    /// silently).
    #[test]
    fn jemalloc_runs_with_background_purging() {
        assert!(tikv_jemalloc_ctl::opt::background_thread::read().unwrap());
        // SAFETY: `opt.dirty_decay_ms` is an `ssize_t` option.
        let decay: isize =
            unsafe { tikv_jemalloc_ctl::raw::read(b"opt.dirty_decay_ms\0") }.unwrap();
        assert_eq!(decay, 100);
        // SAFETY: `opt.narenas` is an `unsigned` option.
        let arenas: u32 = unsafe { tikv_jemalloc_ctl::raw::read(b"opt.narenas\0") }.unwrap();
        assert_eq!(arenas, 1);
    }

    /// The allocation count behind `webhook_bridge_allocations_total` moves with allocations.
    #[test]
    fn jemalloc_counts_allocations() {
        let before = super::jemalloc_allocations().expect("jemalloc stats");
        let boxes: Vec<Box<[u8; 64]>> = (0..10_000).map(|_| Box::new([0u8; 64])).collect();
        drop(boxes);
        let after = super::jemalloc_allocations().unwrap();
        // The thread cache reports its requests whenever it refills from the arena, so all but
        // the last refill's worth (at most a few hundred) are counted already.
        assert!(after >= before + 9_000, "{before} -> {after}");
    }
}
