//! What the broker refuses. A queue that is full and set to `reject-publish` makes the broker
//! *nack* a publish: the event is spooled and arrives once there is room.
//!
//! Messages the broker *returns* (unroutable, `mandatory`) when the exchange has no working
//! alternate exchange — an operator-managed topology (`declare_topology = false`) or a deleted
//! unrouted queue. An acknowledged event must still end up somewhere durable: in the unrouted
//! queue, or kept in the spool until it can be put there. Never skipped, never answered
//! `accepted` and dropped because lapin handed the return to another request's confirm.

use crate::common;

use std::collections::HashSet;
use std::time::Duration;

use common::load::{metric, wait_metric, wegocod_body};
use common::*;
use lapin::options::QueueBindOptions;
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Connection, ConnectionProperties};

/// A bridge that declares nothing, on one confirm channel (so every request's confirms share
/// the channel's multiple-acks), and the exchange it publishes to, declared here *without* an
/// alternate exchange.
async fn bridge_without_alternate_exchange() -> Bridge {
    let bridge = Bridge::start_with(BridgeOptions {
        amqp_extra: "declare_topology = false\nchannels = 1\nreconnect_backoff_max = \"500ms\""
            .into(),
        wait_broker: false,
        ..BridgeOptions::default()
    })
    .await;
    // The exchange is not there yet: the bridge declares nothing, and does not connect.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        metric(&bridge.metrics().await, "webhook_bridge_amqp_connected"),
        Some(0.0)
    );
    assert!(
        bridge.logs().contains("NOT_FOUND"),
        "the log says why: {}",
        bridge.logs()
    );
    declare_plain_exchange(&bridge.exchange).await;
    bridge.wait_connected(Duration::from_secs(20)).await;
    bridge
}

/// `(status, body)` of one signed POST.
async fn post(
    bridge: &Bridge,
    provider: &str,
    path: &str,
    secret: &str,
    body: &[u8],
) -> (u16, String) {
    let resp = bridge.post_signed(provider, path, secret, body).await;
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// `data.entity_id` of everything in `consumer`'s queue, until it has been quiet for `quiet`.
async fn drain_ids(consumer: &mut Consumer, quiet: Duration) -> HashSet<String> {
    let mut ids = HashSet::new();
    while let Some(m) = consumer.next(quiet).await {
        if let Some(id) = m
            .body
            .get("data")
            .and_then(|d| d.get("entity_id"))
            .and_then(|v| v.as_str())
        {
            ids.insert(id.to_string());
        }
    }
    ids
}

/// `n` routable WeGoCOD events (`{tag}-w{i}`) and `n` unroutable Peddler events (`{tag}-p{i}`),
/// all at once; each must be answered 200, accepted or spooled.
/// Returns how many Peddler events were answered `accepted`: with nowhere to park them, those
/// are the ones whose return lapin handed to another request's confirm (strays).
async fn send_mixed(bridge: &Bridge, tag: &str, n: usize) -> usize {
    let mut requests = Vec::new();
    for i in 0..n {
        let wegocod = wegocod_body(&format!("{tag}-w{i}"));
        let peddler = peddler_body(&format!("{tag}-p{i}"));
        let b = &bridge;
        requests.push(async move {
            let w = post(b, "wegocod", "/webhooks/wegocod", WEGOCOD_SECRET, &wegocod);
            let p = post(b, "peddler", "/webhooks/peddler", PEDDLER_SECRET, &peddler);
            let (w, p) = tokio::join!(w, p);
            [w, p]
        });
    }
    let pairs = futures_util::future::join_all(requests).await;
    let peddler_accepted = pairs
        .iter()
        .filter(|[_, (_, body)]| body.contains("\"accepted\":1"))
        .count();
    let answers: Vec<(u16, String)> = pairs.into_iter().flatten().collect();
    for (status, body) in &answers {
        assert_eq!(
            *status, 200,
            "every event is made durable somewhere: {body}"
        );
        assert!(
            body.contains("\"accepted\":1") || body.contains("\"spooled\":1"),
            "{body}"
        );
    }
    peddler_accepted
}

/// After [`send_mixed`]: every WeGoCOD event is in `routed`'s queue, every Peddler event in the
/// unrouted queue, and no routable event was parked.
async fn all_arrived(bridge: &Bridge, routed: &mut Consumer, tag: &str, n: usize) {
    let wegocod_ids = drain_ids(routed, Duration::from_secs(3)).await;
    let mut unrouted = Consumer::existing(&format!("{}.unrouted", bridge.exchange)).await;
    let parked = drain_ids(&mut unrouted, Duration::from_secs(3)).await;
    for i in 0..n {
        let w = format!("{tag}-w{i}");
        assert!(
            wegocod_ids.contains(&w),
            "WeGoCOD event {w} missing from its queue"
        );
        assert!(
            parked.contains(&format!("{tag}-p{i}")),
            "acknowledged Peddler event {tag}-p{i} is neither routed nor parked: lost \
             ({} of {n} parked)",
            parked.len()
        );
    }
    assert!(
        !parked.iter().any(|id| id.starts_with(&format!("{tag}-w"))),
        "a routable event was parked"
    );
}

#[tokio::test]
async fn returned_events_are_parked_in_the_unrouted_queue_and_none_is_lost() {
    broker_available().await;
    let bridge = bridge_without_alternate_exchange().await;
    declare_unrouted_queue(&bridge.exchange).await;
    // Only WeGoCOD events have a binding; every Peddler event is unroutable and returned.
    let mut routed = bridge.consumer("wegocod.#").await;
    let tag = unique("ret");
    let n = 60;
    send_mixed(&bridge, &tag, n).await;
    wait_metric(
        &bridge,
        "webhook_bridge_spool_events",
        0.0,
        Duration::from_secs(30),
    )
    .await;

    all_arrived(&bridge, &mut routed, &tag, n).await;
    let m = bridge.metrics().await;
    assert_eq!(
        metric(
            &m,
            "webhook_bridge_publish_failures_total{reason=\"returned\"}"
        )
        .unwrap_or(0.0),
        0.0,
        "returns that were parked are not publish failures"
    );
    bridge.cleanup().await;
}

#[tokio::test]
async fn a_returned_event_stays_in_the_spool_until_it_can_be_parked() {
    broker_available().await;
    let bridge = bridge_without_alternate_exchange().await;
    // No unrouted queue yet: the event can be neither routed nor parked.
    let tag = unique("ret");
    let (status, body) = post(
        &bridge,
        "peddler",
        "/webhooks/peddler",
        PEDDLER_SECRET,
        &peddler_body(&format!("{tag}-p")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"spooled\":1"), "kept in the spool: {body}");
    // The drainer retries it and must not skip it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let m = bridge.metrics().await;
    assert_eq!(
        metric(&m, "webhook_bridge_spool_events"),
        Some(1.0),
        "the returned event was dropped from the spool"
    );
    // The operator adds the unrouted queue: the event lands there and the spool empties.
    declare_unrouted_queue(&bridge.exchange).await;
    wait_metric(
        &bridge,
        "webhook_bridge_spool_events",
        0.0,
        Duration::from_secs(30),
    )
    .await;
    let mut unrouted = Consumer::existing(&format!("{}.unrouted", bridge.exchange)).await;
    let parked = drain_ids(&mut unrouted, Duration::from_secs(3)).await;
    assert!(
        parked.contains(&format!("{tag}-p")),
        "the event did not reach the unrouted queue: {parked:?}"
    );
    assert!(
        bridge.logs().contains("unrouted"),
        "the operator is told why the spool does not drain"
    );
    bridge.cleanup().await;
}

#[tokio::test]
async fn a_nacked_event_is_spooled_and_arrives_once_the_queue_has_room() {
    broker_available().await;
    let bridge = Bridge::start().await;
    // A queue of one message that refuses more (the broker nacks) instead of dropping the oldest.
    let queue = unique("wbt-full");
    let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    let mut args = FieldTable::default();
    args.insert(ShortString::from("x-max-length"), AMQPValue::LongInt(1));
    args.insert(
        ShortString::from("x-overflow"),
        AMQPValue::LongString("reject-publish".into()),
    );
    ch.queue_declare(
        ShortString::from(queue.as_str()),
        QueueDeclareOptions {
            auto_delete: false,
            ..QueueDeclareOptions::default()
        },
        args,
    )
    .await
    .expect("declare queue");
    ch.queue_bind(
        ShortString::from(queue.as_str()),
        ShortString::from(bridge.exchange.as_str()),
        ShortString::from("wegocod.#"),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind");
    let tag = unique("nack");
    let (status, body) = post(
        &bridge,
        "wegocod",
        "/webhooks/wegocod",
        WEGOCOD_SECRET,
        &wegocod_body(&format!("{tag}-1")),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, r#"{"accepted":1}"#));
    // The queue is full: this one is nacked, and kept.
    let (status, body) = post(
        &bridge,
        "wegocod",
        "/webhooks/wegocod",
        WEGOCOD_SECRET,
        &wegocod_body(&format!("{tag}-2")),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, r#"{"spooled":1}"#));
    let m = bridge.metrics().await;
    assert!(
        metric(&m, "webhook_bridge_publish_failures_total{reason=\"nack\"}").unwrap_or(0.0) >= 1.0,
        "the nack is counted"
    );
    // Consuming makes room; the drainer's retry then gets the second event in.
    let mut consumer = Consumer::existing(&queue).await;
    let mut ids = HashSet::new();
    while ids.len() < 2 {
        let Some(m) = consumer.next(Duration::from_secs(15)).await else {
            break;
        };
        if let Some(id) = m.body.pointer("/data/entity_id").and_then(|v| v.as_str()) {
            ids.insert(id.to_string());
        }
    }
    assert!(ids.contains(&format!("{tag}-1")), "{ids:?}");
    assert!(
        ids.contains(&format!("{tag}-2")),
        "the nacked event arrived from the spool: {ids:?}"
    );
    let _ = ch
        .queue_delete(ShortString::from(queue.as_str()), Default::default())
        .await;
    let _ = conn.close(200, ShortString::from("bye")).await;
    bridge.cleanup().await;
}

#[tokio::test]
async fn with_nowhere_to_park_every_returned_event_waits_in_the_spool_and_none_is_lost() {
    broker_available().await;
    let bridge = bridge_without_alternate_exchange().await;
    // No unrouted queue: a returned message can be parked nowhere. Whichever request lapin hands
    // a return to, the event must end in the spool: its own request's, or as a stray.
    let mut routed = bridge.consumer("wegocod.#").await;
    let tag = unique("ret");
    let n = 100;
    let strays = send_mixed(&bridge, &tag, n).await;
    eprintln!(
        "{strays} of {n} unroutable events were answered accepted (their returns were handed to other requests)"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let waiting = metric(&bridge.metrics().await, "webhook_bridge_spool_events").unwrap_or(0.0);
    assert!(
        waiting >= n as f64,
        "every unroutable event is kept in the spool ({waiting} waiting)"
    );
    declare_unrouted_queue(&bridge.exchange).await;
    wait_metric(
        &bridge,
        "webhook_bridge_spool_events",
        0.0,
        Duration::from_secs(60),
    )
    .await;
    all_arrived(&bridge, &mut routed, &tag, n).await;
    bridge.cleanup().await;
}
