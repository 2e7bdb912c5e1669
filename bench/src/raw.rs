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

/// How the raw baseline drives lapin: the publishing pattern and the number of confirm channels.
/// The run measures every shape in [`RawShape::CANDIDATES`] first and takes the fastest as
/// "raw" (phases/raw_shapes.rs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawShape {
    /// `false`: one task per publisher, each awaiting its own confirm before publishing again
    /// (`load::closed_loop`); `true`: one task keeping all the publishes in flight
    /// (`load::pipelined`).
    pub pipelined: bool,
    pub channels: usize,
}

impl RawShape {
    pub const CANDIDATES: [RawShape; 6] = [
        RawShape {
            pipelined: false,
            channels: 1,
        },
        RawShape {
            pipelined: false,
            channels: 2,
        },
        RawShape {
            pipelined: false,
            channels: 4,
        },
        RawShape {
            pipelined: true,
            channels: 1,
        },
        RawShape {
            pipelined: true,
            channels: 2,
        },
        RawShape {
            pipelined: true,
            channels: 4,
        },
    ];

    /// `tasks/4ch` or `window/1ch`: how `--raw-shape` takes it and the report prints it.
    pub fn name(&self) -> String {
        let how = if self.pipelined { "window" } else { "tasks" };
        format!("{how}/{}ch", self.channels)
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        RawShape::CANDIDATES
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| {
                let names: Vec<String> = RawShape::CANDIDATES.iter().map(|c| c.name()).collect();
                format!("unknown raw shape {s:?}; one of {}", names.join(", "))
            })
    }

    /// In words, for the report.
    pub fn describe(&self, conc: usize) -> String {
        if self.pipelined {
            format!(
                "one task keeping {conc} publishes in flight over {} channel(s)",
                self.channels
            )
        } else {
            format!(
                "{conc} publishers each awaiting its confirm, over {} channel(s)",
                self.channels
            )
        }
    }
}

/// lapin publishing the bridge's message over up to `channels` confirm channels; with `k` in
/// use, publisher (or window slot) `i` uses channel `i % k`, as the bridge spreads requests
/// round-robin.
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

    /// Confirm channels opened (the most any shape uses).
    pub fn channels(&self) -> usize {
        self.channels.len()
    }

    /// One persistent, mandatory publish per call, done when the broker confirms it, over the
    /// first `k` channels.
    pub fn op(&self, k: usize) -> Op {
        let k = k.clamp(1, self.channels.len());
        let channels = Arc::new(self.channels[..k].to_vec());
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
