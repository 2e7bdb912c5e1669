//! The raw baseline: what RabbitMQ itself confirms when lapin publishes, with nothing in front,
//! the very message the bridge publishes for a WeGoCOD webhook. The message is built by the
//! bridge's own parser, envelope and AMQP properties, so the baseline differs from the bridge
//! only by what the bridge does around the publish.

use std::sync::Arc;

use anyhow::{Result, anyhow, bail};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use webhook_bridge::config::Config;
use webhook_bridge::envelope;
use webhook_bridge::message::Message;
use webhook_bridge::providers::{Inbound, Parsed, wegocod};

use crate::bridge;
use crate::load::Op;

/// The message the bridge would publish for the WeGoCOD sample, through its own code.
pub fn wegocod_message(config: &Config) -> Result<Message> {
    let ep = bridge::endpoint(config, &wegocod::PROVIDER)?;
    let headers = http::HeaderMap::new();
    let inbound = Inbound {
        options: &ep.options,
        headers: &headers,
        body: wegocod::DELIVERED,
    };
    let Ok(Parsed::Events(events)) = ep.provider.parse(&inbound) else {
        bail!("the WeGoCOD sample did not parse into events");
    };
    let event = events
        .first()
        .ok_or_else(|| anyhow!("no event in sample"))?;
    Ok(envelope::encode(ep, event, chrono::Utc::now())?)
}

/// lapin publishing the bridge's message over `channels` confirm channels; publisher `i` uses
/// channel `i % channels`, as the bridge spreads requests round-robin.
pub struct RawPublisher {
    channels: Arc<Vec<Channel>>,
    exchange: ShortString,
    routing_key: ShortString,
    body: Arc<Vec<u8>>,
    props: BasicProperties,
}

impl RawPublisher {
    pub async fn new(conn: &Connection, n: usize, exchange: &str, msg: &Message) -> Result<Self> {
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

    /// One persistent, mandatory publish per call, done when the broker confirms it.
    pub fn op(&self) -> Op {
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
