//! Each core provider's documented sample, sent over real HTTP the way the provider signs it,
//! arrives on the real broker with the right routing key, envelope and AMQP properties.

use crate::common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

fn assert_common_properties(m: &Received, routing_key: &str) {
    assert_eq!(m.routing_key, routing_key);
    assert_eq!(m.delivery_mode, Some(2), "persistent");
    assert_eq!(
        m.content_type.as_deref(),
        Some("application/cloudevents+json")
    );
    assert_eq!(m.kind.as_deref(), Some(routing_key));
    assert_eq!(m.app_id.as_deref(), Some("webhook-bridge"));
    assert!(m.timestamp.is_some_and(|t| t > 1_700_000_000));
    assert_eq!(m.body["specversion"], "1.0");
    assert_eq!(m.body["type"], routing_key);
    assert_eq!(m.body["datacontenttype"], "application/json");
    assert_eq!(m.message_id.as_deref(), m.body["id"].as_str());
    assert_eq!(
        header_str(m, "cloudEvents_id").as_deref(),
        m.body["id"].as_str()
    );
    assert_eq!(
        header_str(m, "cloudEvents_type").as_deref(),
        Some(routing_key)
    );
    assert_eq!(
        header_str(m, "cloudEvents_source").as_deref(),
        m.body["source"].as_str()
    );
    assert!(
        m.body["data"]["received_at"]
            .as_str()
            .is_some_and(|s| s.ends_with('Z'))
    );
}

#[tokio::test]
async fn wegocod_sample_is_published_as_order_status_changed() {
    broker_available().await;
    let bridge = Bridge::start().await;
    let mut q = bridge.consumer("wegocod.#").await;
    let resp = bridge.post_wegocod_sample().await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        serde_json::json!({"accepted": 1})
    );
    let m = q.next(WAIT).await.expect("message");
    assert_common_properties(&m, "wegocod.order.status_changed");
    let d = &m.body["data"];
    assert_eq!(m.body["source"], "webhook-bridge/wegocod/wegocod-ma");
    assert_eq!(m.body["subject"], "ORD-000129");
    assert_eq!(m.body["time"], "2026-05-09T12:00:00+02:00");
    assert_eq!(d["provider"], "wegocod");
    assert_eq!(d["account"], "wegocod-ma");
    assert_eq!(d["event"], "order.status_updated");
    assert_eq!(d["entity"], "order");
    assert_eq!(d["entity_id"], "ORD-000129");
    assert_eq!(d["status"], "delivered");
    assert_eq!(d["provider_status"], "delivered");
    assert_eq!(d["previous_status"], "out_for_delivery");
    assert_eq!(d["tracking_number"], "F-CSA6SFJ6EMY");
    assert_eq!(d["batch"], Value::Null);
    let original: Value =
        serde_json::from_slice(webhook_bridge::providers::wegocod::DELIVERED).unwrap();
    assert_eq!(
        d["payload"], original,
        "payload is the provider's JSON unchanged"
    );
    bridge.cleanup().await;
}

#[tokio::test]
async fn modexpress_sample_is_published_with_canonical_status() {
    broker_available().await;
    let bridge = Bridge::start().await;
    let mut q = bridge.consumer("modexpress.#").await;
    let resp = bridge
        .post_signed(
            "modexpress",
            "/webhooks/modexpress",
            MODEXPRESS_SECRET,
            webhook_bridge::providers::modexpress::IN_PROGRESS,
        )
        .await;
    assert_eq!(resp.status(), 200);
    let m = q.next(WAIT).await.expect("message");
    assert_common_properties(&m, "modexpress.order.status_changed");
    assert_eq!(m.body["subject"], "123456");
    assert_eq!(m.body["data"]["status"], "processing");
    assert_eq!(m.body["data"]["provider_status"], "I");
    assert_eq!(m.body["data"]["event"], "shp.status.update");
    bridge.cleanup().await;
}

#[tokio::test]
async fn peddler_samples_are_published_as_shipment_status_changed() {
    broker_available().await;
    let bridge = Bridge::start().await;
    let mut q = bridge.consumer("peddler.#").await;
    for body in [
        webhook_bridge::providers::peddler::CONFIRMED,
        webhook_bridge::providers::peddler::OUT_FOR_DELIVERY,
    ] {
        let resp = bridge
            .post_signed("peddler", "/webhooks/peddler", PEDDLER_SECRET, body)
            .await;
        assert_eq!(resp.status(), 200);
    }
    let ms = q.take(2, WAIT).await;
    assert_common_properties(&ms[0], "peddler.shipment.status_changed");
    assert_eq!(ms[0].body["data"]["status"], "created");
    assert_eq!(ms[0].body["data"]["entity"], "shipment");
    assert_eq!(ms[0].body["data"]["tracking_number"], "P123456789012345678");
    assert_eq!(ms[1].body["data"]["status"], "out_for_delivery");
    assert_eq!(ms[1].body["data"]["location"]["lat"], 52.3409992);
    assert_eq!(ms[1].body["time"], "2023-06-14T10:54:55.896Z");
    assert_ne!(ms[0].message_id, ms[1].message_id);
    bridge.cleanup().await;
}

#[tokio::test]
async fn provider_retry_yields_the_same_message_id() {
    broker_available().await;
    let bridge = Bridge::start_with(BridgeOptions {
        tables: "[dedup]\nenabled = false\n".into(),
        ..BridgeOptions::default()
    })
    .await;
    let mut q = bridge.consumer("wegocod.#").await;
    for _ in 0..2 {
        let resp = bridge.post_wegocod_sample().await;
        assert_eq!(resp.status(), 200);
    }
    let ms = q.take(2, WAIT).await;
    assert!(ms[0].message_id.is_some());
    assert_eq!(ms[0].message_id, ms[1].message_id);
    bridge.cleanup().await;
}

#[tokio::test]
async fn unknown_event_is_published_as_unrecognized_with_raw_payload() {
    broker_available().await;
    let bridge = Bridge::start().await;
    let mut q = bridge.consumer("#").await;
    let body = br#"{"event":"order.created","order":{"reference":"X1"}}"#;
    let resp = bridge
        .post_signed("wegocod", "/webhooks/wegocod", WEGOCOD_SECRET, body)
        .await;
    assert_eq!(resp.status(), 200);
    let m = q.next(WAIT).await.expect("message");
    assert_eq!(m.routing_key, "wegocod.unrecognized");
    assert_eq!(m.body["data"]["event"], "order.created");
    assert_eq!(
        m.body["data"]["payload"],
        serde_json::from_slice::<Value>(body).unwrap()
    );
    bridge.cleanup().await;
}

#[tokio::test]
async fn message_nobody_binds_for_lands_in_the_unrouted_queue() {
    broker_available().await;
    let bridge = Bridge::start().await;
    let unrouted = format!("{}.unrouted", bridge.exchange);
    let mut q = Consumer::existing(&unrouted).await;
    let resp = bridge
        .post_signed(
            "modexpress",
            "/webhooks/modexpress",
            MODEXPRESS_SECRET,
            webhook_bridge::providers::modexpress::IN_PROGRESS,
        )
        .await;
    assert_eq!(resp.status(), 200);
    let m = q.next(WAIT).await.expect("unrouted message");
    assert_eq!(m.routing_key, "modexpress.order.status_changed");
    drop(q);
    bridge.cleanup().await;
}

/// Plain `amqp://` URLs publish over the bridge's own connection by default and over lapin's
/// confirm channels with `publish_client = "lapin"`; the broker receives the same message either
/// way: routing key, every property and header, and the envelope (but for `received_at`).
#[tokio::test]
async fn builtin_and_lapin_publishers_deliver_the_same_message() {
    broker_available().await;
    let mut arrived = Vec::new();
    for (extra, path) in [
        ("", "own connection"),
        ("publish_client = \"lapin\"", "lapin confirm channels"),
    ] {
        let bridge = Bridge::start_with(BridgeOptions {
            amqp_extra: extra.into(),
            ..BridgeOptions::default()
        })
        .await;
        let mut q = bridge.consumer("wegocod.#").await;
        let resp = bridge.post_wegocod_sample().await;
        assert_eq!(resp.status(), 200);
        let mut m = q.next(WAIT).await.expect("message");
        assert_common_properties(&m, "wegocod.order.status_changed");
        let logs = bridge.logs();
        assert!(logs.contains(path), "published over {path}:\n{logs}");
        m.body["data"]["received_at"] = Value::Null;
        m.timestamp = None;
        m.raw.clear();
        arrived.push(m);
        bridge.cleanup().await;
    }
    assert_eq!(format!("{:?}", arrived[0]), format!("{:?}", arrived[1]));
}

/// `[amqp] channels` is what either client publishes over: with `channels = 3` the broker
/// shows three confirm-mode channels for the bridge (counted in a virtual host of the test's
/// own, so other tests' bridges are not counted), and a webhook is published, not spooled.
#[tokio::test]
async fn either_client_publishes_over_the_configured_confirm_channels() {
    broker_available().await;
    /// Deletes the test's virtual host when the test ends, failed or not.
    struct Vhost(String);
    impl Drop for Vhost {
        fn drop(&mut self) {
            let _ = std::process::Command::new("rabbitmqctl")
                .args(["-q", "delete_vhost", &self.0])
                .output();
        }
    }
    let vhost = Vhost(unique("wbt-vhost"));
    let vhost = &vhost.0;
    rabbitmqctl(&["add_vhost", vhost]);
    rabbitmqctl(&["set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"]);
    for extra in ["", "publish_client = \"lapin\""] {
        let bridge = Bridge::start_with(BridgeOptions {
            amqp_urls: vec![format!("amqp://guest:guest@127.0.0.1:5672/{vhost}")],
            amqp_extra: format!("channels = 3\n{extra}"),
            ..BridgeOptions::default()
        })
        .await;
        let resp = bridge.post_wegocod_sample().await;
        assert_eq!(resp.status(), 200, "{extra}");
        let body = resp.text().await.unwrap_or_default();
        assert!(!body.contains("spooled"), "published: {body}");
        let listed = rabbitmqctl(&["-q", "list_channels", "vhost", "confirm"]);
        let confirm_channels = listed
            .lines()
            .filter(|l| l.split_whitespace().collect::<Vec<_>>() == [vhost.as_str(), "true"])
            .count();
        assert_eq!(confirm_channels, 3, "{extra:?}: {listed}");
        drop(bridge);
    }
}

/// A webhook near `max_body` makes a message of many AMQP frames (the bridge asks for 16 KiB
/// frames): it arrives whole, the provider's JSON unchanged, over either client.
#[tokio::test]
async fn a_body_of_many_frames_arrives_whole_over_either_client() {
    broker_available().await;
    let mut payload: Value =
        serde_json::from_slice(webhook_bridge::providers::wegocod::DELIVERED).unwrap();
    let notes: String = (0..700_000u32)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    payload["notes"] = Value::String(notes);
    let body = serde_json::to_vec(&payload).unwrap();
    assert!(body.len() > 40 * 16 * 1024 && body.len() < 1024 * 1024);
    for extra in ["", "publish_client = \"lapin\""] {
        let bridge = Bridge::start_with(BridgeOptions {
            amqp_extra: extra.into(),
            ..BridgeOptions::default()
        })
        .await;
        let mut q = bridge.consumer("wegocod.#").await;
        let resp = bridge
            .post_signed("wegocod", "/webhooks/wegocod", WEGOCOD_SECRET, &body)
            .await;
        assert_eq!(resp.status(), 200, "{extra}");
        let m = q.next(WAIT).await.expect("message");
        assert_eq!(m.body["data"]["payload"], payload, "{extra}");
        bridge.cleanup().await;
    }
}
