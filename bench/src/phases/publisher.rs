//! `--publisher-phase`: the bridge's own publisher module (same code, same config, same message),
//! driven from this process with no HTTP in front and alternating with raw lapin: how much of
//! the gap is the publish path itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use webhook_bridge::message::Message;
use webhook_bridge::publisher::Publisher;

use super::Bench;
use crate::load::Op;
use crate::report::Row;
use crate::sys::CpuDelta;

pub async fn run(b: &mut Bench<'_>) -> Result<()> {
    // Dropping the sender at the end of the phase stops the publisher.
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    // The raw exchange already exists; the bridge's own setup would only check it.
    let mut cfg = b.setup.raw_amqp.clone();
    cfg.declare_topology = false;
    let publisher = Publisher::start(cfg, webhook_bridge::metrics::Metrics::new()?, stop_rx);
    if !publisher.wait_connected(Duration::from_secs(10)).await {
        bail!("the in-process publisher did not connect");
    }
    let op = publish_op(&publisher, &b.setup.message);
    let (p, _) = b
        .against_raw(op, "webhook_bridge::publisher in-process")
        .await?;
    let conc = b.conc();
    b.report.rows.push(Row::new(
        &format!("bridge's publisher in-process (no HTTP), c={conc}"),
        &p,
        CpuDelta::default(),
        None,
    ));
    Ok(())
}

/// One message per call through `Publisher::publish`, as the request path calls it
/// (persistent, mandatory, confirmed, with the request's deadline).
fn publish_op(publisher: &Arc<Publisher>, msg: &Message) -> Op {
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
