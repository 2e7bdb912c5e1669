//! What the bridge declares on every connect: the exchange, its alternate exchange and the
//! unrouted queue; or, with `declare_topology = false`, a passive check that the exchange exists.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Connection, ExchangeKind};

use crate::config::{AmqpConfig, QueueType};

/// Durable topic exchange whose alternate exchange (fanout) feeds the `…unrouted` queue, so a
/// message no consumer has bound for is kept rather than dropped. The queue itself is declared by
/// [`declare_unrouted_queue`].
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
    Ok(())
}

/// The unrouted queue could not be declared as configured. The connect goes on anyway: the
/// exchanges are what publishing needs, and a message the broker cannot put in a live queue is
/// returned (`mandatory`), then parked or spooled, never dropped.
#[derive(Debug, thiserror::Error)]
pub enum UnroutedQueueError {
    #[error(
        "it exists with other arguments than a durable {configured} queue ({source}); it is used \
         as it is. To make it a {configured} queue, move its messages out, delete it and restart \
         the bridge (it declares the queue on connect); to keep it, set [amqp] \
         unrouted_queue_type to its type"
    )]
    OtherArguments {
        configured: &'static str,
        source: lapin::Error,
    },
    #[error(
        "cannot declare it ({0}); while it is missing or down, the broker returns unroutable \
         messages and they wait in the spool"
    )]
    Unavailable(#[source] lapin::Error),
}

/// Declare the durable `…unrouted` queue (`[amqp] unrouted_queue_type`) and bind it to the
/// alternate exchange, on channels of its own. A queue that already exists with other arguments
/// (a classic one where a quorum queue is configured: `PRECONDITION_FAILED`) is bound and used as
/// it is. On a cluster, a classic queue whose node is down cannot be declared (`NOT_FOUND`) —
/// nor can it receive anything: the broker returns unroutable messages instead, so failing the
/// connect for it would only stop publishing to the nodes that are up.
pub async fn declare_unrouted_queue(
    conn: &Connection,
    cfg: &AmqpConfig,
) -> Result<(), UnroutedQueueError> {
    let queue = cfg.unrouted_queue();
    let mut queue_args = FieldTable::default();
    if cfg.unrouted_queue_type == QueueType::Quorum {
        queue_args.insert(
            ShortString::from("x-queue-type"),
            AMQPValue::LongString(QueueType::Quorum.as_str().into()),
        );
    }
    let ch = conn
        .create_channel()
        .await
        .map_err(UnroutedQueueError::Unavailable)?;
    let declared = ch
        .queue_declare(
            ShortString::from(queue.as_str()),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            queue_args,
        )
        .await;
    let (ch, other_arguments) = match declared {
        Ok(_) => (ch, None),
        Err(e) if is_precondition_failed(&e) => {
            // The broker closed that channel.
            let ch = conn
                .create_channel()
                .await
                .map_err(UnroutedQueueError::Unavailable)?;
            (ch, Some(e))
        }
        Err(e) => return Err(UnroutedQueueError::Unavailable(e)),
    };
    ch.queue_bind(
        ShortString::from(queue.as_str()),
        ShortString::from(cfg.alternate_exchange().as_str()),
        ShortString::from("#"),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .map_err(UnroutedQueueError::Unavailable)?;
    let _ = ch
        .close(200, ShortString::from("unrouted queue declared"))
        .await;
    match other_arguments {
        Some(source) => Err(UnroutedQueueError::OtherArguments {
            configured: cfg.unrouted_queue_type.as_str(),
            source,
        }),
        None => Ok(()),
    }
}

fn is_precondition_failed(e: &lapin::Error) -> bool {
    matches!(
        e.kind(),
        lapin::ErrorKind::ProtocolError(a)
            if *a.kind() == AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)
    )
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
