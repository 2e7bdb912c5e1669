//! Everything in place before the first phase: the bridge running on its own exchange, the raw
//! baseline's exchange declared with the same topology, a queue on each that the checks count,
//! and the two ways of publishing (raw lapin, webhooks over HTTP) ready to be driven.

use std::path::Path;
use std::time::Duration;

use anyhow::{Result, anyhow};
use webhook_bridge::config::{AmqpConfig, Config};
use webhook_bridge::message::Message;

use crate::bridge::{self, BridgeProcess};
use crate::broker::{self, Broker};
use crate::cli::Args;
use crate::raw::{self, RawPublisher};
use crate::webhooks::HttpDriver;

/// Built once per run; every phase drives the same bridge, publishers and queues.
pub struct Setup {
    pub bridge: BridgeProcess,
    /// The bridge's `[amqp]` settings pointed at the raw exchange, for anything that publishes
    /// there through the bridge's own code.
    pub raw_amqp: AmqpConfig,
    pub raw_queue: String,
    pub bridge_queue: String,
    /// The exact envelope and properties the bridge publishes for the WeGoCOD sample.
    pub message: Message,
    pub raw: RawPublisher,
    pub http: HttpDriver,
}

impl Setup {
    /// Every exchange and queue is recorded in `broker.created` as soon as it may exist, so an
    /// error half-way still leaves nothing behind.
    pub async fn start(
        args: &Args,
        bin: &Path,
        tag: &str,
        dir: &Path,
        broker: &mut Broker,
    ) -> Result<Self> {
        let (bridge, config, bridge_queue) = start_bridge(args, bin, tag, dir, broker).await?;

        // The raw baseline's exchange, declared by the bridge's own code, so it is shaped like
        // the bridge's (same alternate exchange and unrouted queue).
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
        broker::declare_queue(&broker.admin, &raw_queue, &raw_amqp.exchange).await?;

        let message = raw::wegocod_message(&config)?;
        println!(
            "message: {} bytes of CloudEvent JSON (WeGoCOD sample envelope), delivery_mode 2, mandatory",
            message.body.len()
        );
        // Enough channels for every shape the raw-shapes phase tries.
        let raw_channels = args.channels.max(4);
        let raw =
            RawPublisher::new(broker.conn(), raw_channels, &raw_amqp.exchange, &message).await?;
        let http = HttpDriver::new(&config, args.batch, tag, args.client)?;
        Ok(Self {
            bridge,
            raw_amqp,
            raw_queue,
            bridge_queue,
            message,
            raw,
            http,
        })
    }
}

/// The bridge on its own exchange (which it declares itself, with its alternate exchange and
/// unrouted queue), and the bench's queue bound to everything on it.
async fn start_bridge(
    args: &Args,
    bin: &Path,
    tag: &str,
    dir: &Path,
    broker: &mut Broker,
) -> Result<(BridgeProcess, Config, String)> {
    let bridge_exchange = format!("{tag}-bridge");
    let bridge_queue = format!("{tag}-bridge-q");
    let config_path = bridge::write_config(dir, &args.amqp_url, &bridge_exchange, args.channels)?;
    let config = Config::load(&config_path).map_err(|e| anyhow!("bench config: {e}"))?;
    let created = &mut broker.created;
    created.exchanges.push(bridge_exchange.clone());
    created.exchanges.push(config.amqp.alternate_exchange());
    created.queues.push(config.amqp.unrouted_queue());
    let bridge = BridgeProcess::spawn(bin, &config_path, dir, &config, &args.bridge_log)?;
    println!("bridge pid {} on 127.0.0.1:{}", bridge.pid(), bridge.port);
    bridge.wait_ready(Duration::from_secs(30)).await?;
    broker.created.queues.push(bridge_queue.clone());
    broker::declare_queue(&broker.admin, &bridge_queue, &bridge_exchange).await?;
    Ok((bridge, config, bridge_queue))
}
