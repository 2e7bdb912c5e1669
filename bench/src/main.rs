//! Benchmark: webhook-bridge against RabbitMQ's own limit for persistent, confirmed publishes.
//!
//! One run measures, against the local broker on 127.0.0.1:
//! 1. the raw baseline: lapin publishing the bridge's own envelope (same bytes, same AMQP
//!    properties, persistent, mandatory, confirmed), 64 publishes in flight, in the fastest of
//!    six shapes measured first (64 tasks or one pipelining task, over 1, 2 or 4 channels);
//! 2. the bridge (release build, spawned with a generated config) driven over HTTP by 64
//!    keep-alive connections with signed WeGoCOD webhooks, then with isendu batches of 50;
//! 3. raw behind one `GET /healthz` per publish: the coupled ceiling of any HTTP front end;
//! 4. both again open-loop at 50% of the bridge's full-load rate, latency measured from the
//!    scheduled send time (no coordinated omission).
//!
//! After every phase it checks that the queue holds exactly the acknowledged events. The raw
//! and bridge full-load phases alternate for a few rounds and the ratio reported is the median
//! of the per-round ratios, so a neighbour's CPU burst on a shared machine skews one round, not
//! the verdict.
//!
//! See docs/BENCHMARKS.md for the command and the figures.

mod bridge;
mod broker;
mod cli;
mod client;
mod cluster;
mod load;
mod native;
mod phases;
mod raw;
mod report;
mod request_path;
mod setup;
mod split;
mod sys;
mod webhooks;
mod wire;

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow, bail};
use clap::Parser;

use crate::broker::Broker;
use crate::cli::Args;
use crate::phases::Bench;
use crate::setup::Setup;

fn main() -> Result<()> {
    let args = Args::parse();
    if !args.cleanup_only.is_empty() {
        return runtime()?.block_on(broker::cleanup_leftovers(
            &args.amqp_url,
            &args.cleanup_only,
        ));
    }
    if let Some(requests) = args.request_path {
        return request_path::run(requests, args.rounds.unwrap_or(5), args.batch);
    }
    let bin = bridge::binary(&args)?;
    runtime()?.block_on(async move {
        tokio::select! {
            r = run(args, bin) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
        }
    })
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// The run, then the cleanup of whatever it created on the broker, whether it succeeded or not.
async fn run(args: Args, bin: PathBuf) -> Result<()> {
    let tag = broker::run_tag();
    eprintln!("run tag {tag} (exchanges and queues are named after it)");
    let dir = tempfile::tempdir()?;
    let url = if args.cluster {
        args.cluster_urls.first().cloned().unwrap_or_default()
    } else {
        args.amqp_url.clone()
    };
    let mut broker = Broker::connect(&url).await.map_err(|e| {
        if args.cluster {
            e.context("connecting to node 1 of the cluster: is it up (scripts/cluster up)?")
        } else {
            e
        }
    })?;
    let result = if args.cluster {
        cluster::bench(&args, &bin, &tag, dir.path(), &mut broker).await
    } else {
        bench(&args, &bin, &tag, dir.path(), &mut broker).await
    };
    broker.clean_up_and_close(&url).await;
    result
}

/// The phases in the order docs/BENCHMARKS.md describes them. The bridge's VmHWM is read just
/// before it is stopped: its peak over the whole run, next to the per-phase samples.
async fn bench(args: &Args, bin: &Path, tag: &str, dir: &Path, broker: &mut Broker) -> Result<()> {
    let broker_pid = sys::find_broker_pid();
    report::print_header(args, broker_pid);
    let setup = Setup::start(args, bin, tag, dir, broker).await?;
    let mut b = Bench::new(args, &setup, &broker.admin, broker_pid);

    if !args.no_broker_warmup {
        phases::warmup::run(&mut b).await?;
    }
    if args.raw_shape.is_none() {
        phases::raw_shapes::run(&mut b).await?;
    }
    let bridge_rate = phases::full_load::run(&mut b).await?;
    if args.publisher_phase {
        phases::publisher::run(&mut b).await?;
    }
    if args.native_phase {
        phases::native::run(&mut b).await?;
    }
    if !args.skip_coupled {
        phases::coupled::run(&mut b).await?;
    }
    if args.http_ceiling {
        phases::http_ceiling::run(&b).await;
    }
    if !args.only_full {
        phases::isendu::run(&mut b).await?;
        phases::open_loop::run(&mut b, bridge_rate).await?;
    }

    let report = b.report;
    let hwm = sys::read_status_kib(setup.bridge.pid(), "VmHWM:").unwrap_or(0);
    drop(setup.bridge);
    report.print(hwm);
    if !report.all_matched() {
        bail!("the queue did not receive exactly the acknowledged events");
    }
    Ok(())
}
