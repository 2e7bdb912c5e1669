//! `--cluster`: the same comparison against a three-node RabbitMQ cluster (`scripts/cluster`,
//! 127.0.0.1:5681-5683) with quorum queues, as a clustered deployment runs. Raw lapin publishes
//! the bridge's message to a quorum queue; the bridge is configured with every node's URL and
//! publishes into a quorum queue of its own; both are connected to the first node, where both
//! queues get their leader. Then the single-node run's phases, unchanged: broker warm-up, raw
//! and bridge alternating at full load, isendu batches and the open loop, each checked against
//! its queue. The "broker" CPU column is the first node's (the queues' leader); the two
//! followers' CPU is printed separately.
//!
//! Everything the run creates is named after its tag and deleted at the end, as in the
//! single-node run. The cluster must be up (`scripts/cluster up`); other users of it must not
//! run at the same time (`flock /tmp/wb-cluster.lock …`, docs/BENCHMARKS.md).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use lapin::Channel;
use lapin::options::{QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use webhook_bridge::config::{AmqpConfig, Config};

use crate::bridge::{self, BridgeProcess};
use crate::broker::Broker;
use crate::cli::Args;
use crate::phases::{self, Bench};
use crate::raw::{self, RawPublisher};
use crate::report;
use crate::setup::Setup;
use crate::sys;
use crate::webhooks::HttpDriver;

/// The Erlang node names of `scripts/cluster`, node 1 first.
const NODE_NAMES: [&str; 3] = ["wbc1@localhost", "wbc2@localhost", "wbc3@localhost"];

/// The run in cluster mode, as `main::bench` runs the single-node one.
pub async fn bench(
    args: &Args,
    bin: &Path,
    tag: &str,
    dir: &Path,
    broker: &mut Broker,
) -> Result<()> {
    let pids: Vec<Option<u32>> = NODE_NAMES.iter().map(|n| node_pid(n)).collect();
    if pids.iter().any(Option::is_none) {
        bail!(
            "the three nodes of scripts/cluster are not all running ({pids:?}): \
             `flock /tmp/wb-cluster.lock bash -c 'scripts/cluster up && …; scripts/cluster down'`"
        );
    }
    println!(
        "cluster mode: {} (node pids {pids:?}); raw and bridge publish into quorum queues",
        args.cluster_urls.join(", ")
    );
    report::print_header(args, pids[0]);
    let setup = start(args, bin, tag, dir, broker).await?;
    let mut b = Bench::new(args, &setup, &broker.admin, pids[0]);
    let followers = Followers::start(&pids[1..]);

    if !args.no_broker_warmup {
        phases::warmup::run(&mut b).await?;
    }
    let bridge_rate = phases::full_load::run(&mut b).await?;
    if !args.only_full {
        phases::isendu::run(&mut b).await?;
        phases::open_loop::run(&mut b, bridge_rate).await?;
    }
    followers.print();

    let report = b.report;
    let hwm = sys::read_status_kib(setup.bridge.pid(), "VmHWM:").unwrap_or(0);
    drop(setup.bridge);
    report.print(hwm);
    if !report.all_matched() {
        bail!("the queue did not receive exactly the acknowledged events");
    }
    Ok(())
}

/// `Setup::start` for the cluster: the bridge with every node's URL, the raw exchange declared
/// by the bridge's own code, and a quorum queue bound to everything on each exchange.
async fn start(
    args: &Args,
    bin: &Path,
    tag: &str,
    dir: &Path,
    broker: &mut Broker,
) -> Result<Setup> {
    let bridge_exchange = format!("{tag}-bridge");
    let bridge_queue = format!("{tag}-bridge-q");
    let first = args
        .cluster_urls
        .first()
        .ok_or_else(|| anyhow!("--cluster-url: none given"))?;
    let config_path = bridge::write_config(dir, first, &bridge_exchange, args.channels)?;
    list_every_url(&config_path, first, &args.cluster_urls)?;
    let config = Config::load(&config_path).map_err(|e| anyhow!("bench config: {e}"))?;
    if config.amqp.urls.len() != args.cluster_urls.len() {
        bail!("the bridge's config lists {} URLs", config.amqp.urls.len());
    }
    let created = &mut broker.created;
    created.exchanges.push(bridge_exchange.clone());
    created.exchanges.push(config.amqp.alternate_exchange());
    created.queues.push(config.amqp.unrouted_queue());
    let bridge = BridgeProcess::spawn(bin, &config_path, dir, &config, &args.bridge_log)?;
    println!(
        "bridge pid {} on 127.0.0.1:{}, {} broker URLs",
        bridge.pid(),
        bridge.port,
        config.amqp.urls.len()
    );
    bridge.wait_ready(Duration::from_secs(30)).await?;
    broker.created.queues.push(bridge_queue.clone());
    declare_quorum_queue(&broker.admin, &bridge_queue, &bridge_exchange).await?;

    let raw_amqp = AmqpConfig {
        exchange: format!("{tag}-raw"),
        ..config.amqp.clone()
    };
    let raw_queue = format!("{tag}-raw-q");
    let created = &mut broker.created;
    created.exchanges.push(raw_amqp.exchange.clone());
    created.exchanges.push(raw_amqp.alternate_exchange());
    created.queues.push(raw_amqp.unrouted_queue());
    created.queues.push(raw_queue.clone());
    webhook_bridge::publisher::declare_topology(&broker.admin, &raw_amqp).await?;
    declare_quorum_queue(&broker.admin, &raw_queue, &raw_amqp.exchange).await?;

    let message = raw::wegocod_message(&config)?;
    println!(
        "message: {} bytes of CloudEvent JSON (WeGoCOD sample envelope), delivery_mode 2, mandatory",
        message.body.len()
    );
    let raw = RawPublisher::new(broker.conn(), args.channels, &raw_amqp.exchange, &message).await?;
    let http = HttpDriver::new(&config, args.batch, tag, args.client)?;
    Ok(Setup {
        bridge,
        raw_amqp,
        raw_queue,
        bridge_queue,
        message,
        raw,
        http,
    })
}

/// The generated config names one URL; make it list every node, in the order given.
fn list_every_url(config: &Path, first: &str, urls: &[String]) -> Result<()> {
    let text = std::fs::read_to_string(config)?;
    let one = format!("urls = [\"{first}\"]");
    if !text.contains(&one) {
        bail!("the generated config has no line {one}");
    }
    let quoted: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    let all = format!("urls = [{}]", quoted.join(", "));
    std::fs::write(config, text.replace(&one, &all))?;
    Ok(())
}

/// A durable quorum queue bound to everything on `exchange`.
async fn declare_quorum_queue(ch: &Channel, queue: &str, exchange: &str) -> Result<()> {
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("x-queue-type"),
        AMQPValue::LongString("quorum".into()),
    );
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .with_context(|| format!("declaring quorum queue {queue}"))?;
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

/// The pid of the `beam.smp` whose environment names node `name` (`RABBITMQ_NODENAME`), as
/// `scripts/cluster` finds it: a node's name is not on its command line.
fn node_pid(name: &str) -> Option<u32> {
    let want = format!("RABBITMQ_NODENAME={name}");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() != "beam.smp" {
            continue;
        }
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if environ.split(|&b| b == 0).any(|v| v == want.as_bytes()) {
            return Some(pid);
        }
    }
    None
}

/// The followers' CPU over the measured phases (the table's broker column is the leader's).
struct Followers {
    pids: Vec<u32>,
    start: Vec<u64>,
    since: std::time::Instant,
}

impl Followers {
    fn start(pids: &[Option<u32>]) -> Self {
        let pids: Vec<u32> = pids.iter().flatten().copied().collect();
        let start = pids
            .iter()
            .map(|p| sys::cpu_us(&p.to_string()).unwrap_or(0))
            .collect();
        Self {
            pids,
            start,
            since: std::time::Instant::now(),
        }
    }

    fn print(&self) {
        let secs = self.since.elapsed().as_secs_f64().max(1e-9);
        for (pid, start) in self.pids.iter().zip(&self.start) {
            let used = sys::cpu_us(&pid.to_string()).unwrap_or(*start) - start;
            println!(
                "follower node pid {pid}: {:.0}% of a core over the run's phases",
                used as f64 / 1e6 / secs * 100.0
            );
        }
    }
}
