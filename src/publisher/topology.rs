//! What the bridge declares on every connect: the exchange, its alternate exchange and the
//! unrouted queue; or, with `declare_topology = false`, a passive check that the exchange exists.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, ExchangeKind};

use crate::config::AmqpConfig;

/// Durable topic exchange whose alternate exchange (fanout) feeds the `…unrouted` queue, so a
/// message no consumer has bound for is kept rather than dropped.
pub async fn declare_topology(ch: &Channel, cfg: &AmqpConfig) -> Result<(), lapin::Error> {
    let ae = cfg.alternate_exchange();
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    ch.exchange_declare(
        ShortString::from(ae.as_str()),
        ExchangeKind::Fanout,
        durable,
        FieldTable::default(),
    )
    .await?;
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("alternate-exchange"),
        AMQPValue::LongString(ae.as_str().into()),
    );
    ch.exchange_declare(
        ShortString::from(cfg.exchange.as_str()),
        ExchangeKind::Topic,
        durable,
        args,
    )
    .await?;
    let queue = cfg.unrouted_queue();
    ch.queue_declare(
        ShortString::from(queue.as_str()),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await?;
    ch.queue_bind(
        ShortString::from(queue.as_str()),
        ShortString::from(ae.as_str()),
        ShortString::from("#"),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    Ok(())
}

/// With `declare_topology = false`: the exchange must exist. Checked passively, because an
/// operator's exchange may carry arguments a declaration would contradict.
pub async fn check_exchange(ch: &Channel, cfg: &AmqpConfig) -> Result<(), lapin::Error> {
    ch.exchange_declare(
        ShortString::from(cfg.exchange.as_str()),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            passive: true,
            ..ExchangeDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
}
