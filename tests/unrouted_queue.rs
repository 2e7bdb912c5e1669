//! The `<exchange>.unrouted` queue's type (`[amqp] unrouted_queue_type`): a quorum queue by
//! default, a classic one when configured so, and an existing queue of the other type is used as
//! it is, with a warning, instead of failing every connect.

use crate::common;

use std::time::Duration;

use common::*;
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Connection, ConnectionProperties};

/// Declare `queue` durable with `x-queue-type = kind` (no argument for `None`): the broker
/// accepts it only if it matches the existing queue.
async fn redeclare(queue: &str, kind: Option<&str>) -> Result<(), String> {
    let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    let mut args = FieldTable::default();
    if let Some(kind) = kind {
        args.insert(
            ShortString::from("x-queue-type"),
            AMQPValue::LongString(kind.into()),
        );
    }
    let result = ch
        .queue_declare(
            ShortString::from(queue),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string());
    let _ = conn.close(200, ShortString::from("bye")).await;
    result
}

/// An event nobody binds for is answered `{"accepted":1}` and found in the unrouted queue.
async fn unroutable_event_is_kept(bridge: &Bridge) {
    let mut unrouted = Consumer::existing(&format!("{}.unrouted", bridge.exchange)).await;
    let resp = bridge
        .post_signed(
            "modexpress",
            "/webhooks/modexpress",
            MODEXPRESS_SECRET,
            webhook_bridge::providers::modexpress::IN_PROGRESS,
        )
        .await;
    assert_eq!(resp.text().await.unwrap(), r#"{"accepted":1}"#);
    let m = unrouted
        .next(Duration::from_secs(10))
        .await
        .expect("the unroutable event is in the unrouted queue");
    assert_eq!(m.routing_key, "modexpress.order.status_changed");
}

#[tokio::test]
async fn the_unrouted_queue_is_a_quorum_queue_by_default() {
    broker_available().await;
    let bridge = Bridge::start().await;
    let queue = format!("{}.unrouted", bridge.exchange);
    assert_eq!(redeclare(&queue, Some("quorum")).await, Ok(()));
    let classic = redeclare(&queue, None).await;
    assert!(
        classic.as_ref().is_err_and(|e| e.contains("PRECONDITION")),
        "{classic:?}"
    );
    unroutable_event_is_kept(&bridge).await;
    bridge.cleanup().await;
}

#[tokio::test]
async fn unrouted_queue_type_classic_declares_a_classic_queue() {
    broker_available().await;
    let bridge = Bridge::start_with(BridgeOptions {
        amqp_extra: "unrouted_queue_type = \"classic\"".into(),
        ..BridgeOptions::default()
    })
    .await;
    let queue = format!("{}.unrouted", bridge.exchange);
    assert_eq!(redeclare(&queue, None).await, Ok(()));
    let quorum = redeclare(&queue, Some("quorum")).await;
    assert!(
        quorum.as_ref().is_err_and(|e| e.contains("PRECONDITION")),
        "{quorum:?}"
    );
    unroutable_event_is_kept(&bridge).await;
    bridge.cleanup().await;
}

/// A deployment upgraded with a classic unrouted queue already there: redeclaring it as a
/// quorum queue is refused by the broker (`PRECONDITION_FAILED`). The bridge connects anyway,
/// says what to do, and keeps unroutable events in the existing queue.
#[tokio::test]
async fn an_existing_classic_unrouted_queue_is_used_as_it_is_with_a_warning() {
    broker_available().await;
    let exchange = unique("wbt");
    let queue = format!("{exchange}.unrouted");
    assert_eq!(redeclare(&queue, None).await, Ok(()), "a classic queue");
    let bridge = Bridge::start_with(BridgeOptions {
        exchange: Some(exchange),
        ..BridgeOptions::default()
    })
    .await;
    unroutable_event_is_kept(&bridge).await;
    assert_eq!(
        redeclare(&queue, None).await,
        Ok(()),
        "still the classic queue"
    );
    let logs = bridge.logs();
    let warning = logs
        .lines()
        .find(|l| l.contains("unrouted queue not declared as configured"))
        .unwrap_or_else(|| panic!("no warning in the log:\n{logs}"));
    assert!(
        warning.contains(&queue)
            && warning.contains("x-queue-type")
            && warning.contains("unrouted_queue_type"),
        "the warning names the queue, the broker's reason and the setting: {warning}"
    );
    bridge.cleanup().await;
}
