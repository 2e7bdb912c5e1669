//! A queue worker for webhook-bridge events (lapin, RabbitMQ). Run it with
//! `cargo run --example consumer`; README.md beside this file explains it.
//!
//! - declares its own durable quorum queue and binds only the routing keys it handles;
//! - takes at most `PREFETCH` unacknowledged messages at a time;
//! - processes each event once by its AMQP `message_id` (the CloudEvent id): the bridge delivers
//!   at least once, so a provider retry or a spool replay arrives again with the same id;
//! - acknowledges only after the work is durable;
//! - a message whose processing keeps failing is returned to the queue, and after
//!   `DELIVERY_LIMIT` returns the quorum queue dead-letters it to `QUEUE.dead` instead of
//!   redelivering it forever.
//!
//! The work here stands in for yours: one JSON line per event appended to `STORE`, which is also
//! the record of the message ids already processed. Configuration (environment):
//!
//! | variable | default |
//! |---|---|
//! | `AMQP_URL` | `amqp://guest:guest@localhost:5672/%2f` |
//! | `EXCHANGE` | `webhooks` (the bridge's `[amqp] exchange`; the bridge declares it) |
//! | `QUEUE` | `order-status-worker` |
//! | `BINDINGS` | `*.order.status_changed,*.shipment.status_changed` |
//! | `PREFETCH` | `20` |
//! | `DELIVERY_LIMIT` | `5` |
//! | `STORE` | `processed.jsonl` |

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use serde_json::{Value, json};
use tokio::signal::unix::{SignalKind, signal};

struct Settings {
    amqp_url: String,
    exchange: String,
    queue: String,
    bindings: Vec<String>,
    prefetch: u16,
    delivery_limit: i64,
    store: String,
}

impl Settings {
    fn from_env() -> Result<Settings> {
        let var = |name: &str, default: &str| std::env::var(name).unwrap_or(default.to_string());
        Ok(Settings {
            amqp_url: var("AMQP_URL", "amqp://guest:guest@localhost:5672/%2f"),
            exchange: var("EXCHANGE", "webhooks"),
            queue: var("QUEUE", "order-status-worker"),
            bindings: var(
                "BINDINGS",
                "*.order.status_changed,*.shipment.status_changed",
            )
            .split(',')
            .map(str::trim)
            .filter(|b| !b.is_empty())
            .map(String::from)
            .collect(),
            prefetch: var("PREFETCH", "20").parse().context("PREFETCH")?,
            delivery_limit: var("DELIVERY_LIMIT", "5")
                .parse()
                .context("DELIVERY_LIMIT")?,
            store: var("STORE", "processed.jsonl"),
        })
    }
}

/// The work's durable effect, and the set of message ids already processed.
struct Store {
    file: File,
    done: HashSet<String>,
}

impl Store {
    fn open(path: &str) -> Result<Store> {
        let mut done = HashSet::new();
        if let Ok(existing) = File::open(path) {
            for line in BufReader::new(existing).lines() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                let row: Value = serde_json::from_str(&line)?;
                if let Some(id) = row["message_id"].as_str() {
                    done.insert(id.to_string());
                }
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Store { file, done })
    }

    fn record(&mut self, message_id: &str, mut row: Value) -> Result<()> {
        row["message_id"] = json!(message_id);
        let mut line = serde_json::to_vec(&row)?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.file.sync_data()?;
        self.done.insert(message_id.to_string());
        Ok(())
    }
}

/// Your business logic. An error means "try again later".
fn handle(body: &[u8]) -> Result<Value> {
    let event: Value = serde_json::from_slice(body).context("body is not JSON")?;
    let data = event
        .get("data")
        .filter(|d| d.is_object())
        .ok_or_else(|| anyhow!("no data"))?;
    Ok(json!({
        "routing_key": event["type"],
        "entity_id": data["entity_id"],
        "status": data["status"],
        "provider_status": data["provider_status"],
        "occurred_at": data["occurred_at"],
    }))
}

fn name(s: &str) -> ShortString {
    ShortString::from(s)
}

async fn declare(channel: &Channel, s: &Settings) -> Result<()> {
    // The bridge owns the exchange: only check that it exists.
    channel
        .exchange_declare(
            name(&s.exchange),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                passive: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let dlx = format!("{}.dlx", s.queue);
    let dead = format!("{}.dead", s.queue);
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .exchange_declare(
            name(&dlx),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let mut quorum = FieldTable::default();
    quorum.insert(name("x-queue-type"), AMQPValue::LongString("quorum".into()));
    channel
        .queue_declare(name(&dead), durable, quorum.clone())
        .await?;
    channel
        .queue_bind(
            name(&dead),
            name(&dlx),
            name(""),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut args = quorum;
    args.insert(
        name("x-delivery-limit"),
        AMQPValue::LongLongInt(s.delivery_limit),
    );
    args.insert(
        name("x-dead-letter-exchange"),
        AMQPValue::LongString(dlx.as_str().into()),
    );
    // Dead-letter without losing the message if the broker fails mid-way.
    args.insert(
        name("x-dead-letter-strategy"),
        AMQPValue::LongString("at-least-once".into()),
    );
    args.insert(
        name("x-overflow"),
        AMQPValue::LongString("reject-publish".into()),
    );
    channel.queue_declare(name(&s.queue), durable, args).await?;
    for key in &s.bindings {
        channel
            .queue_bind(
                name(&s.queue),
                name(&s.exchange),
                name(key),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    channel
        .basic_qos(s.prefetch, BasicQosOptions::default())
        .await?;
    Ok(())
}

/// Connect and declare, retrying while the broker (or the bridge's exchange) is not there.
async fn connect(s: &Settings) -> Result<(Connection, Channel)> {
    let mut last = None;
    for attempt in 0..60u64 {
        let attempt_result = async {
            let conn = Connection::connect(&s.amqp_url, ConnectionProperties::default()).await?;
            let channel = conn.create_channel().await?;
            declare(&channel, s).await?;
            anyhow::Ok((conn, channel))
        }
        .await;
        match attempt_result {
            Ok(ok) => return Ok(ok),
            Err(e) => {
                println!("not ready ({e}); retrying");
                last = Some(e);
                tokio::time::sleep(Duration::from_secs((1 + attempt).min(5))).await;
            }
        }
    }
    Err(last.unwrap_or_else(|| anyhow!("broker not available")))
}

/// Times this message was delivered before, as the quorum queue counts them.
fn returns(delivery: &Delivery) -> i64 {
    let count = delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(&name("x-delivery-count")).cloned());
    match count {
        Some(AMQPValue::LongLongInt(n)) => n,
        Some(AMQPValue::LongInt(n)) => n.into(),
        Some(AMQPValue::LongUInt(n)) => n.into(),
        Some(AMQPValue::ShortInt(n)) => n.into(),
        _ => 0,
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let settings = Settings::from_env()?;
    let mut store = Store::open(&settings.store)?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (conn, channel) = connect(&settings).await?;
    let tag = format!("worker-{}", std::process::id());
    let mut deliveries = channel
        .basic_consume(
            name(&settings.queue),
            name(&tag),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    println!(
        "ready queue={} bindings={}",
        settings.queue,
        settings.bindings.join(",")
    );
    loop {
        let delivery = tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            next = deliveries.next() => match next {
                Some(delivery) => delivery?,
                None => return Err(anyhow!("the broker closed the consumer")),
            },
        };
        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.to_string());
        if let Some(id) = message_id.as_deref().filter(|id| store.done.contains(*id)) {
            println!("duplicate {id}");
            delivery.ack(BasicAckOptions::default()).await?;
            continue;
        }
        let outcome = match &message_id {
            Some(id) => handle(&delivery.data).and_then(|row| store.record(id, row)),
            None => Err(anyhow!("no message_id")),
        };
        let id = message_id.as_deref().unwrap_or("-");
        match outcome {
            Ok(()) => {
                delivery.ack(BasicAckOptions::default()).await?;
                println!("processed {id} {}", delivery.routing_key);
            }
            Err(e) => {
                println!(
                    "failed {id} attempt {}/{}: {e:#}",
                    returns(&delivery) + 1,
                    settings.delivery_limit + 1
                );
                delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    })
                    .await?;
            }
        }
    }
    // Messages prefetched but not processed go back to the queue for the next worker.
    channel
        .basic_cancel(name(&tag), BasicCancelOptions::default())
        .await?;
    conn.close(200, name("stopped")).await?;
    println!("stopped");
    Ok(())
}
