//! `webhook-bridge unrouted replay`: move the messages parked in `<exchange>.unrouted` back to
//! the exchange, once the bindings that were missing exist.
//!
//! One pass over the messages present at the start (the queue's message count, from a passive
//! declare), at most `limit`, taken one at a time with `basic.get`. Each is re-published to the
//! exchange with its routing key, body and properties unchanged, `mandatory`, on a confirm
//! channel, and the original is acknowledged only once the copy is confirmed:
//!
//! - confirmed and routed to a queue: **moved** (original acked);
//! - confirmed but routed by the exchange's alternate exchange, i.e. into the unrouted queue
//!   again: **still unroutable**. The copy is already at the back of the unrouted queue, so the
//!   original is acked (exactly one copy stays). A queue of this tool's own, bound to the
//!   alternate exchange for the duration of the pass, tells the two apart: the copy shows up in
//!   it only when nothing else took it;
//! - returned (an exchange without an alternate exchange): **still unroutable**, the original
//!   stays where it is;
//! - nacked, or without a routing key to use: **left**, the original stays.
//!
//! Originals that stay are requeued at the end of the pass, in their places. Copies put back at
//! the end of the queue are not seen again in the same pass, so it always ends.
//!
//! The routing key is the delivered one, except for a message published straight to the queue
//! (by the bridge parking a message the broker returned, docs/contract.md §5.5): its `type` property, which the
//! bridge sets to the routing key, else its `cloudEvents_type` header.
//!
//! `--dry-run` takes the same messages without acknowledging them, counts them per routing key
//! and requeues them all (they come back in their places, marked redelivered).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, ExchangeKind};
use tracing::{info, warn};

use super::{ToolError, connect, printable};
use crate::config::AmqpConfig;
use crate::publisher;

/// How long one re-published message may wait for its confirm.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// Label of messages with no routing key to re-publish with.
pub const NO_ROUTING_KEY: &str = "(no routing key)";

/// What to do.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplayOptions {
    /// Count per routing key; move nothing.
    pub dry_run: bool,
    /// Examine at most this many messages.
    pub limit: Option<u64>,
}

/// Per routing key: what happened to its messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Examined.
    pub seen: u64,
    /// Confirmed in a bound queue; removed from the unrouted queue.
    pub moved: u64,
    /// Still no queue for them: kept in the unrouted queue.
    pub unroutable: u64,
    /// Nacked by the broker or without a routing key: kept in the unrouted queue.
    pub left: u64,
}

/// The outcome of a pass.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub queue: String,
    pub exchange: String,
    pub dry_run: bool,
    /// Messages ready in the queue at the start.
    pub present: u64,
    pub per_key: BTreeMap<String, Counts>,
}

impl Report {
    pub fn total(&self) -> Counts {
        self.per_key
            .values()
            .fold(Counts::default(), |a, c| Counts {
                seen: a.seen + c.seen,
                moved: a.moved + c.moved,
                unroutable: a.unroutable + c.unroutable,
                left: a.left + c.left,
            })
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.total();
        writeln!(
            f,
            "{}: {} messages at the start, {} examined{}",
            self.queue,
            self.present,
            total.seen,
            if self.dry_run {
                " (dry run: nothing moved)"
            } else {
                ""
            }
        )?;
        if self.dry_run {
            writeln!(f, "{:>8}  routing key", "messages")?;
            for (key, c) in &self.per_key {
                writeln!(f, "{:>8}  {}", c.seen, printable(key))?;
            }
            return Ok(());
        }
        writeln!(
            f,
            "{:>8} {:>8} {:>10} {:>6}  routing key",
            "messages", "moved", "unroutable", "left"
        )?;
        for (key, c) in &self.per_key {
            writeln!(
                f,
                "{:>8} {:>8} {:>10} {:>6}  {}",
                c.seen,
                c.moved,
                c.unroutable,
                c.left,
                printable(key)
            )?;
        }
        write!(
            f,
            "moved {} to {}; {} still unroutable and {} left in {}",
            total.moved, self.exchange, total.unroutable, total.left, self.queue
        )
    }
}

/// One pass over `<exchange>.unrouted` (see the module docs).
pub async fn replay(cfg: &AmqpConfig, opts: ReplayOptions) -> Result<Report, ToolError> {
    let conn = connect(cfg, "webhook-bridge unrouted replay").await?;
    let result = replay_on(&conn, cfg, opts).await;
    // Whatever is still unacknowledged (an error half-way) is requeued by the broker now.
    let _ = conn.close(200, ShortString::from("replay done")).await;
    result
}

async fn replay_on(
    conn: &lapin::Connection,
    cfg: &AmqpConfig,
    opts: ReplayOptions,
) -> Result<Report, ToolError> {
    let queue = cfg.unrouted_queue();
    let source = conn.create_channel().await?;
    let present = source
        .queue_declare(
            ShortString::from(queue.as_str()),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| ToolError::Queue {
            queue: queue.clone(),
            source: e,
        })?
        .message_count();
    let present = u64::from(present);
    let todo = opts.limit.map_or(present, |l| l.min(present));
    let mut report = Report {
        queue: queue.clone(),
        exchange: cfg.exchange.clone(),
        dry_run: opts.dry_run,
        present,
        per_key: BTreeMap::new(),
    };
    info!(queue = %queue, present, examining = todo, dry_run = opts.dry_run, "unrouted replay");
    if opts.dry_run {
        dry_run(&source, &queue, todo, &mut report).await?;
    } else if todo > 0 {
        move_back(conn, &source, cfg, todo, &mut report).await?;
    }
    Ok(report)
}

/// Take `todo` messages without acknowledging them, count them, requeue them all.
async fn dry_run(
    source: &Channel,
    queue: &str,
    todo: u64,
    report: &mut Report,
) -> Result<(), ToolError> {
    let mut last_tag = None;
    for _ in 0..todo {
        let Some(msg) = get(source, queue).await? else {
            break;
        };
        last_tag = Some(msg.delivery.delivery_tag);
        let key = routing_key(&msg.delivery).unwrap_or_else(|| NO_ROUTING_KEY.into());
        report.per_key.entry(key).or_default().seen += 1;
    }
    if let Some(tag) = last_tag {
        source
            .basic_nack(
                tag,
                BasicNackOptions {
                    multiple: true,
                    requeue: true,
                },
            )
            .await?;
    }
    Ok(())
}

/// What became of one re-published message.
enum Fate {
    Moved,
    /// Back in the unrouted queue through the alternate exchange: the original can go.
    Reparked,
    /// Returned: the original must stay.
    Returned,
    Nacked,
}

async fn move_back(
    conn: &lapin::Connection,
    source: &Channel,
    cfg: &AmqpConfig,
    todo: u64,
    report: &mut Report,
) -> Result<(), ToolError> {
    let exchange = cfg.exchange.as_str();
    // Before taking anything: the exchange must exist (a publish to a missing one would close
    // the channel half-way through the pass).
    let check = conn.create_channel().await?;
    publisher::check_exchange(&check, cfg)
        .await
        .map_err(|e| ToolError::Exchange {
            exchange: exchange.to_string(),
            source: e,
        })?;
    let _ = check.close(200, ShortString::from("checked")).await;
    let probe = Probe::open(conn, &cfg.alternate_exchange()).await?;
    let publish = conn.create_channel().await?;
    publish
        .confirm_select(ConfirmSelectOptions::default())
        .await?;

    // Originals that stay, requeued at the end (a nack of the highest with `multiple` covers
    // exactly them: every other one taken was acked).
    let mut last_kept = None;
    for _ in 0..todo {
        let Some(msg) = get(source, &report.queue).await? else {
            break;
        };
        let delivery = msg.delivery;
        let tag = delivery.delivery_tag;
        let key = routing_key(&delivery);
        let counts = report
            .per_key
            .entry(key.clone().unwrap_or_else(|| NO_ROUTING_KEY.into()))
            .or_default();
        counts.seen += 1;
        let Some(key) = key else {
            counts.left += 1;
            last_kept = Some(tag);
            continue;
        };
        let fate = republish(
            &publish,
            exchange,
            &key,
            &delivery.data,
            delivery.properties.clone(),
            &probe,
        )
        .await?;
        match fate {
            Fate::Moved => counts.moved += 1,
            Fate::Reparked | Fate::Returned => counts.unroutable += 1,
            Fate::Nacked => counts.left += 1,
        }
        match fate {
            Fate::Moved | Fate::Reparked => {
                source.basic_ack(tag, BasicAckOptions::default()).await?;
            }
            Fate::Returned | Fate::Nacked => last_kept = Some(tag),
        }
    }
    if let Some(tag) = last_kept {
        source
            .basic_nack(
                tag,
                BasicNackOptions {
                    multiple: true,
                    requeue: true,
                },
            )
            .await?;
    }
    let total = report.total();
    if total.unroutable + total.left > 0 {
        warn!(
            unroutable = total.unroutable,
            left = total.left,
            queue = %report.queue,
            "some messages are still in the unrouted queue"
        );
    }
    probe.close().await;
    let _ = publish.close(200, ShortString::from("replayed")).await;
    Ok(())
}

async fn get(
    channel: &Channel,
    queue: &str,
) -> Result<Option<lapin::message::BasicGetMessage>, ToolError> {
    Ok(channel
        .basic_get(ShortString::from(queue), BasicGetOptions { no_ack: false })
        .await?)
}

async fn republish(
    channel: &Channel,
    exchange: &str,
    key: &str,
    body: &[u8],
    properties: BasicProperties,
    probe: &Probe,
) -> Result<Fate, ToolError> {
    let id = properties.message_id().as_ref().map(|s| s.to_string());
    let confirm = channel
        .basic_publish(
            ShortString::from(exchange),
            ShortString::from(key),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            body,
            properties,
        )
        .await?;
    let confirmation = tokio::time::timeout(CONFIRM_TIMEOUT, confirm)
        .await
        .map_err(|_| ToolError::ConfirmTimeout(CONFIRM_TIMEOUT))??;
    Ok(match confirmation {
        Confirmation::Ack(None) => {
            // Confirmed: the copy has reached every queue it was routed to, the probe included
            // when it went through the alternate exchange.
            if probe.took(id.as_deref()).await? {
                Fate::Reparked
            } else {
                Fate::Moved
            }
        }
        Confirmation::Ack(Some(_)) => Fate::Returned,
        Confirmation::Nack(_) | Confirmation::NotRequested => Fate::Nacked,
    })
}

/// A queue of this tool's own bound to the alternate exchange: a copy that arrives in it was
/// unroutable. Without an alternate exchange the broker returns unroutable copies instead, and
/// there is no probe.
struct Probe {
    channel: Option<(Channel, ShortString)>,
}

impl Probe {
    async fn open(conn: &lapin::Connection, alternate: &str) -> Result<Probe, ToolError> {
        // A passive declare of a missing exchange closes its channel: use a throwaway one.
        let check = conn.create_channel().await?;
        let exists = check
            .exchange_declare(
                ShortString::from(alternate),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    passive: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .is_ok();
        let _ = check.close(200, ShortString::from("checked")).await;
        if !exists {
            info!(
                alternate_exchange = alternate,
                "no alternate exchange: unroutable copies will be returned by the broker"
            );
            return Ok(Probe { channel: None });
        }
        let channel = conn.create_channel().await?;
        let mut args = FieldTable::default();
        args.insert(
            ShortString::from("x-max-length"),
            AMQPValue::LongLongInt(100_000),
        );
        let queue = channel
            .queue_declare(
                ShortString::from(""),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                args,
            )
            .await?
            .name()
            .clone();
        channel
            .queue_bind(
                queue.clone(),
                ShortString::from(alternate),
                ShortString::from(""),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(Probe {
            channel: Some((channel, queue)),
        })
    }

    /// Whether a message with this id went through the alternate exchange since the last call.
    /// Everything in the probe is taken (the bridge's own unroutable messages land there too).
    async fn took(&self, id: Option<&str>) -> Result<bool, ToolError> {
        let Some((channel, queue)) = &self.channel else {
            return Ok(false);
        };
        let mut found = false;
        while let Some(msg) = channel
            .basic_get(queue.clone(), BasicGetOptions { no_ack: true })
            .await?
        {
            let seen = msg.delivery.properties.message_id().as_ref();
            found |= id.is_some() && seen.map(|s| s.as_str()) == id;
        }
        Ok(found)
    }

    async fn close(self) {
        if let Some((channel, _)) = self.channel {
            let _ = channel.close(200, ShortString::from("probe done")).await;
        }
    }
}

/// The routing key to re-publish with: the delivered one, or for a message published straight
/// to the queue (through the default exchange) its `type` property, else its
/// `cloudEvents_type` header.
pub fn routing_key(delivery: &lapin::message::Delivery) -> Option<String> {
    if !delivery.exchange.as_str().is_empty() {
        return Some(delivery.routing_key.to_string());
    }
    let p = &delivery.properties;
    p.kind()
        .as_ref()
        .map(|k| k.to_string())
        .or_else(|| {
            p.headers()
                .as_ref()
                .and_then(|h| h.inner().get("cloudEvents_type"))
                .and_then(|v| match v {
                    AMQPValue::LongString(s) => {
                        Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
                    }
                    AMQPValue::ShortString(s) => Some(s.to_string()),
                    _ => None,
                })
        })
        .filter(|k| !k.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::message::Delivery;

    fn delivery(exchange: &str, key: &str, props: BasicProperties) -> Delivery {
        let mut d = Delivery::mock(
            1,
            ShortString::from(exchange),
            ShortString::from(key),
            false,
            b"{}".to_vec(),
        );
        d.properties = props;
        d
    }

    #[test]
    fn routing_key_is_the_delivered_one_unless_published_to_the_queue() {
        let typed = BasicProperties::default().with_type(ShortString::from("peddler.shipment.x"));
        // Through the alternate exchange: the original exchange and routing key.
        let d = delivery("webhooks", "wegocod.order.status_changed", typed.clone());
        assert_eq!(
            routing_key(&d).as_deref(),
            Some("wegocod.order.status_changed")
        );
        // Parked through the default exchange: the routing key is the queue's name.
        let d = delivery("", "webhooks.unrouted", typed);
        assert_eq!(routing_key(&d).as_deref(), Some("peddler.shipment.x"));
        let mut headers = FieldTable::default();
        headers.insert(
            ShortString::from("cloudEvents_type"),
            AMQPValue::LongString("isendu.order.updated".into()),
        );
        let d = delivery(
            "",
            "webhooks.unrouted",
            BasicProperties::default().with_headers(headers),
        );
        assert_eq!(routing_key(&d).as_deref(), Some("isendu.order.updated"));
        let d = delivery("", "webhooks.unrouted", BasicProperties::default());
        assert_eq!(routing_key(&d), None);
    }

    #[test]
    fn report_prints_counts_per_routing_key_and_totals() {
        let mut r = Report {
            queue: "webhooks.unrouted".into(),
            exchange: "webhooks".into(),
            present: 3,
            ..Report::default()
        };
        r.per_key.insert(
            "a.b.c".into(),
            Counts {
                seen: 2,
                moved: 2,
                ..Counts::default()
            },
        );
        r.per_key.insert(
            "x.y.z".into(),
            Counts {
                seen: 1,
                unroutable: 1,
                ..Counts::default()
            },
        );
        let text = r.to_string();
        assert!(text.starts_with("webhooks.unrouted: 3 messages at the start, 3 examined\n"));
        assert!(
            text.contains("       2        2          0      0  a.b.c\n"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "moved 2 to webhooks; 1 still unroutable and 0 left in webhooks.unrouted"
            )
        );
        r.dry_run = true;
        let text = r.to_string();
        assert!(text.contains("(dry run: nothing moved)"), "{text}");
        assert!(text.contains("       1  x.y.z\n"), "{text}");
    }
}
