//! isendu and Mailship through real HTTP into a real queue: every documented sample, the isendu
//! handshake, batches of 0/1/100 elements, and every authentication failure mode.

use crate::common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(800);

fn isendu_path() -> String {
    format!("/webhooks/isendu/{ISENDU_TOKEN}")
}

async fn post_json(bridge: &Bridge, path: &str, body: &[u8]) -> (u16, Value) {
    let resp = bridge
        .post(
            path,
            &[("content-type".into(), "application/json".into())],
            body,
        )
        .await;
    let status = resp.status().as_u16();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test]
async fn isendu_handshake_answers_the_api_secret_and_publishes_nothing() {
    broker_available().await;
    let bridge = Bridge::start().await;
    let mut q = bridge.consumer("#").await;
    let (status, body) = post_json(
        &bridge,
        &isendu_path(),
        webhook_bridge::providers::isendu::HANDSHAKE,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({ "response": ISENDU_API_SECRET }));
    q.expect_none(QUIET).await;
    bridge.cleanup().await;
}

#[tokio::test]
async fn isendu_handshake_with_wrong_key_id_or_token_is_refused_without_leaking() {
    broker_available().await;
    let extra = r#"
[[endpoint]]
name = "isendu-nosecret"
provider = "isendu"
path = "/webhooks/isendu-nosecret"
secret = "test-isendu-other-token"
"#;
    let bridge = Bridge::start_with(BridgeOptions {
        endpoints: format!("{}{extra}", standard_endpoints()),
        ..BridgeOptions::default()
    })
    .await;
    let mut q = bridge.consumer("#").await;
    let cases: [(String, &[u8]); 4] = [
        // Wrong keyId, right token.
        (isendu_path(), br#"{"keyId": "some-other-key"}"#),
        // Right keyId, wrong token.
        (
            "/webhooks/isendu/not-the-token".into(),
            webhook_bridge::providers::isendu::HANDSHAKE,
        ),
        // No token at all.
        (
            "/webhooks/isendu".into(),
            webhook_bridge::providers::isendu::HANDSHAKE,
        ),
        // No api_secret configured: nothing may be answered, least of all the path token.
        (
            "/webhooks/isendu-nosecret/test-isendu-other-token".into(),
            webhook_bridge::providers::isendu::HANDSHAKE,
        ),
    ];
    for (path, body) in cases {
        let resp = bridge
            .post(
                &path,
                &[("content-type".into(), "application/json".into())],
                body,
            )
            .await;
        assert_eq!(resp.status(), 401, "{path}");
        let text = resp.text().await.unwrap();
        assert!(!text.contains(ISENDU_API_SECRET), "{path}: {text}");
        assert!(!text.contains("test-isendu-other-token"), "{path}: {text}");
    }
    q.expect_none(QUIET).await;
    bridge.cleanup().await;
}

#[tokio::test]
async fn isendu_wrong_or_missing_token_is_401_and_nothing_published() {
    broker_available().await;
    let bridge = Bridge::start().await;
    let mut q = bridge.consumer("#").await;
    for path in [
        "/webhooks/isendu/wrong-token".to_string(),
        "/webhooks/isendu/".to_string(),
        "/webhooks/isendu".to_string(),
        format!("/webhooks/isendu/{ISENDU_TOKEN}x"),
        format!(
            "/webhooks/isendu/{}",
            &ISENDU_TOKEN[..ISENDU_TOKEN.len() - 1]
        ),
    ] {
        let (status, body) =
            post_json(&bridge, &path, webhook_bridge::providers::isendu::BATCH).await;
        assert_eq!(status, 401, "{path}");
        assert_eq!(body, json!({"error": "unauthorized"}));
    }
    // The token must be the path segment, not a header.
    let resp = bridge
        .post(
            "/webhooks/isendu",
            &[("authorization".into(), format!("Bearer {ISENDU_TOKEN}"))],
            webhook_bridge::providers::isendu::BATCH,
        )
        .await;
    assert_eq!(resp.status(), 401);
    q.expect_none(QUIET).await;
    bridge.cleanup().await;
}

#[tokio::test]
async fn isendu_sample_batch_becomes_one_message_per_element_in_order() {
    broker_available().await;
    let bridge = Bridge::start().await;
    let mut q = bridge.consumer("isendu.#").await;
    let resp = bridge
        .post_signed(
            "isendu",
            "/webhooks/isendu",
            ISENDU_TOKEN,
            webhook_bridge::providers::isendu::BATCH,
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"accepted": 3}));
    let ms = q.take(3, WAIT).await;
    let original: Value = serde_json::from_slice(webhook_bridge::providers::isendu::BATCH).unwrap();
    assert_eq!(ms[0].routing_key, "isendu.order.updated");
    assert_eq!(ms[0].body["type"], "isendu.order.updated");
    assert_eq!(ms[0].body["data"]["entity"], "order");
    assert_eq!(
        ms[0].body["subject"],
        "8a3f9c1e-2b7d-4c5a-9e61-0f4b2d8c7a10"
    );
    assert_eq!(ms[0].body["data"]["batch"], json!({"index": 0, "size": 3}));
    assert_eq!(ms[0].body["data"]["payload"], original["order"][0]);
    assert_eq!(ms[1].routing_key, "isendu.shipment.status_changed");
    let d = &ms[1].body["data"];
    assert_eq!(d["status"], "in_transit");
    assert_eq!(d["provider_status"], "IN_TRANSIT");
    assert_eq!(d["tracking_number"], "1Z999AA10123456784");
    assert_eq!(
        d["tracking_url"],
        "https://tracking.example.com/1Z999AA10123456784"
    );
    assert_eq!(d["location"], "Milano");
    assert_eq!(d["occurred_at"], "2026-05-09T08:15:00Z");
    assert_eq!(ms[1].body["time"], "2026-05-09T08:15:00Z");
    assert_eq!(d["batch"], json!({"index": 1, "size": 3}));
    assert_eq!(d["payload"], original["tracking"][0]);
    assert_eq!(ms[2].body["data"]["status"], "delivered");
    assert_eq!(ms[2].body["data"]["location"], "Torino");
    assert_eq!(ms[2].body["data"]["batch"], json!({"index": 2, "size": 3}));
    let ids: std::collections::HashSet<_> = ms.iter().map(|m| m.message_id.clone()).collect();
    assert_eq!(ids.len(), 3, "per-element ids");
    bridge.cleanup().await;
}

fn order(i: usize) -> Value {
    json!({"uuid": format!("order-{i:03}"), "reference": format!("SHOP-{i}"), "status": "processing"})
}

fn tracking(i: usize) -> Value {
    json!({
        "uuid": format!("trk-{i:03}"),
        "status": if i.is_multiple_of(2) { "IN_TRANSIT" } else { "OUT_FOR_DELIVERY" },
        "trackingNumber": format!("TN{i:06}"),
        "delivered": false,
        "steps": [{"timestamp": "2026-05-09T08:15:00Z", "location": "Roma", "status": "IN_TRANSIT"}]
    })
}

#[tokio::test]
async fn isendu_batches_of_0_1_and_100_elements() {
    broker_available().await;
    // The 100-element batch repeats the single element on purpose: with the dedup window on,
    // it would (rightly) be published only once, which is tested elsewhere.
    let bridge = Bridge::start_with(BridgeOptions {
        tables: "[dedup]\nenabled = false\n".into(),
        ..BridgeOptions::default()
    })
    .await;
    let mut q = bridge.consumer("isendu.#").await;
    let path = isendu_path();

    for empty in [
        json!({"order": [], "tracking": []}),
        json!({"order": []}),
        json!({}),
    ] {
        let (status, body) = post_json(&bridge, &path, empty.to_string().as_bytes()).await;
        assert_eq!((status, body), (200, json!({"accepted": 0})), "{empty}");
    }
    q.expect_none(QUIET).await;

    let one = json!({"tracking": [tracking(7)]});
    let (status, body) = post_json(&bridge, &path, one.to_string().as_bytes()).await;
    assert_eq!((status, body), (200, json!({"accepted": 1})));
    let m = q.next(WAIT).await.expect("one message");
    assert_eq!(m.body["data"]["batch"], json!({"index": 0, "size": 1}));
    assert_eq!(m.body["data"]["status"], "out_for_delivery");
    assert_eq!(m.body["subject"], "trk-007");

    // 100 elements, deliberately not sorted: 40 orders and 60 tracking updates.
    let orders: Vec<Value> = (0..40).rev().map(order).collect();
    let trackings: Vec<Value> = (0..60).map(tracking).collect();
    let big = json!({"tracking": trackings, "order": orders});
    let (status, body) = post_json(&bridge, &path, big.to_string().as_bytes()).await;
    assert_eq!((status, body), (200, json!({"accepted": 100})));
    let ms = q.take(100, WAIT).await;
    for (i, m) in ms.iter().enumerate() {
        assert_eq!(
            m.body["data"]["batch"],
            json!({"index": i, "size": 100}),
            "message {i}"
        );
        let want = if i < 40 {
            &orders[i]
        } else {
            &trackings[i - 40]
        };
        assert_eq!(
            &m.body["data"]["payload"], want,
            "message {i} in array order"
        );
        let key = if i < 40 {
            "isendu.order.updated"
        } else {
            "isendu.shipment.status_changed"
        };
        assert_eq!(m.routing_key, key);
    }
    q.expect_none(QUIET).await;
    bridge.cleanup().await;
}

#[tokio::test]
async fn isendu_odd_element_is_unrecognized_and_the_rest_published() {
    broker_available().await;
    let bridge = Bridge::start().await;
    let mut q = bridge.consumer("isendu.#").await;
    let body = br#"{"order":[{"uuid":"o1","status":"new"}],"tracking":["oops",{"uuid":"t1","status":"WEIRD_STATUS"}]}"#;
    let (status, answer) = post_json(&bridge, &isendu_path(), body).await;
    assert_eq!((status, answer), (200, json!({"accepted": 3})));
    let ms = q.take(3, WAIT).await;
    assert_eq!(ms[0].routing_key, "isendu.order.updated");
    assert_eq!(ms[0].body["data"]["status"], "created");
    assert_eq!(ms[1].routing_key, "isendu.unrecognized");
    assert_eq!(ms[1].body["data"]["payload"], "oops");
    assert_eq!(ms[1].body["data"]["batch"], json!({"index": 1, "size": 3}));
    assert_eq!(ms[2].body["data"]["status"], "unknown");
    assert_eq!(ms[2].body["data"]["provider_status"], "WEIRD_STATUS");

    // A body of a shape isendu never sends is published whole, not dropped.
    let (status, _) = post_json(&bridge, &isendu_path(), br#"{"ping":true}"#).await;
    assert_eq!(status, 200);
    let m = q.next(WAIT).await.expect("unrecognized");
    assert_eq!(m.routing_key, "isendu.unrecognized");
    assert_eq!(m.body["data"]["payload"], json!({"ping": true}));
    bridge.cleanup().await;
}

#[tokio::test]
async fn isendu_ip_allowlist_trusts_forwarded_for_only_from_proxies() {
    broker_available().await;
    let endpoints = format!(
        r#"
[[endpoint]]
name = "isendu-direct"
provider = "isendu"
path = "/webhooks/isendu-direct"
secret = "{ISENDU_TOKEN}"
allow_ips = ["192.0.2.0/24"]

[[endpoint]]
name = "isendu-proxied"
provider = "isendu"
path = "/webhooks/isendu-proxied"
secret = "{ISENDU_TOKEN}"
allow_ips = ["192.0.2.0/24"]
trusted_proxies = ["127.0.0.1/32"]
"#
    );
    let bridge = Bridge::start_with(BridgeOptions {
        endpoints,
        ..BridgeOptions::default()
    })
    .await;
    let mut q = bridge.consumer("isendu.#").await;
    let body = json!({"order": [order(1)]}).to_string();
    let xff = [("x-forwarded-for".to_string(), "192.0.2.7".to_string())];
    // Not from an allowed address, and a forged X-Forwarded-For is not believed.
    let direct = format!("/webhooks/isendu-direct/{ISENDU_TOKEN}");
    assert_eq!(
        bridge.post(&direct, &[], body.as_bytes()).await.status(),
        403
    );
    assert_eq!(
        bridge.post(&direct, &xff, body.as_bytes()).await.status(),
        403
    );
    q.expect_none(QUIET).await;
    // Behind a trusted proxy the forwarded client address counts.
    let proxied = format!("/webhooks/isendu-proxied/{ISENDU_TOKEN}");
    assert_eq!(
        bridge.post(&proxied, &xff, body.as_bytes()).await.status(),
        200
    );
    let other = [("x-forwarded-for".to_string(), "198.51.100.1".to_string())];
    assert_eq!(
        bridge
            .post(&proxied, &other, body.as_bytes())
            .await
            .status(),
        403
    );
    let m = q.next(WAIT).await.expect("allowed request published");
    assert_eq!(m.body["data"]["account"], "isendu-proxied");
    q.expect_none(QUIET).await;
    bridge.cleanup().await;
}

#[tokio::test]
async fn every_mailship_sample_is_published_with_its_routing_key() {
    broker_available().await;
    let bridge = Bridge::start().await;
    let mut q = bridge.consumer("mailship.#").await;
    let cases: [(&[u8], &str, &str, Value); 5] = [
        (
            webhook_bridge::providers::mailship::EXPEDITION_STATUS,
            "mailship.order.status_changed",
            "testOrder1",
            json!("ready_for_carrier"),
        ),
        (
            webhook_bridge::providers::mailship::EXPEDITION_BOOKED,
            "mailship.order.stock_booked",
            "testOrder2",
            Value::Null,
        ),
        (
            webhook_bridge::providers::mailship::PRODUCT_STOCK,
            "mailship.product.stock_changed",
            "testProduct1",
            Value::Null,
        ),
        (
            webhook_bridge::providers::mailship::PRODUCT_CHANGE,
            "mailship.product.updated",
            "8595717724834",
            Value::Null,
        ),
        (
            webhook_bridge::providers::mailship::STOCK_ADVICE,
            "mailship.stock_advice.status_changed",
            "testStockAdvice1",
            // Not an order status: Mailship's value is in `provider_status` only.
            Value::Null,
        ),
    ];
    for (body, ..) in &cases {
        let resp = bridge
            .post_signed("mailship", "/webhooks/mailship", MAILSHIP_TOKEN, body)
            .await;
        assert_eq!(resp.status(), 200);
    }
    let ms = q.take(5, WAIT).await;
    for (m, (body, key, subject, status)) in ms.iter().zip(&cases) {
        assert_eq!(m.routing_key, *key);
        assert_eq!(m.kind.as_deref(), Some(*key));
        assert_eq!(m.body["subject"], *subject, "{key}");
        assert_eq!(m.body["data"]["status"], *status, "{key}");
        assert_eq!(m.body["data"]["provider"], "mailship");
        let original: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(m.body["data"]["payload"], original, "{key}");
        assert_eq!(m.body["time"], original["timestamp"], "{key}");
    }
    assert_eq!(
        ms[0].body["data"]["provider_status"],
        "waiting_for_the_carrier"
    );
    let changes = &ms[2].body["data"]["changes"];
    assert_eq!(changes["quantity"]["delta"], -1);
    assert_eq!(changes["booked"]["delta"], -1);
    assert_eq!(changes["available"]["after"], 348);
    bridge.cleanup().await;
}

#[tokio::test]
async fn mailship_fixed_event_basic_auth_and_unknown_shapes() {
    broker_available().await;
    let extra = r#"
[[endpoint]]
name = "mailship-booked"
provider = "mailship"
path = "/webhooks/mailship-booked"
secret = "test-mailship-basic-password"
event = "expedition_booked"
auth = { kind = "basic", username = "mailship" }
"#;
    let bridge = Bridge::start_with(BridgeOptions {
        endpoints: format!("{}{extra}", standard_endpoints()),
        ..BridgeOptions::default()
    })
    .await;
    let mut q = bridge.consumer("mailship.#").await;
    let basic = |user: &str, pw: &str| {
        use base64::Engine;
        let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
        vec![("authorization".to_string(), format!("Basic {v}"))]
    };
    // Shaped like a status change, but this endpoint only ever receives "expedition booked".
    let body = webhook_bridge::providers::mailship::EXPEDITION_STATUS;
    for (headers, want) in [
        (basic("mailship", "wrong"), 401),
        (basic("someone", "test-mailship-basic-password"), 401),
        (vec![], 401),
        (basic("mailship", "test-mailship-basic-password"), 200),
    ] {
        let resp = bridge
            .post("/webhooks/mailship-booked", &headers, body)
            .await;
        assert_eq!(resp.status(), want, "{headers:?}");
    }
    let m = q.next(WAIT).await.expect("booked");
    assert_eq!(m.routing_key, "mailship.order.stock_booked");
    assert_eq!(m.body["data"]["event"], "expedition_booked");
    assert_eq!(m.body["data"]["status"], Value::Null);
    assert_eq!(m.body["subject"], "testOrder1");
    assert_eq!(m.body["data"]["account"], "mailship-booked");

    // Path-token failures on the default endpoint.
    for path in [
        "/webhooks/mailship/nope".to_string(),
        "/webhooks/mailship".to_string(),
        format!("/webhooks/mailship/{ISENDU_TOKEN}"),
    ] {
        let (status, _) = post_json(
            &bridge,
            &path,
            webhook_bridge::providers::mailship::EXPEDITION_STATUS,
        )
        .await;
        assert_eq!(status, 401, "{path}");
    }
    q.expect_none(QUIET).await;

    // Unknown shape: published as unrecognized with the raw payload.
    let path = format!("/webhooks/mailship/{MAILSHIP_TOKEN}");
    let odd = br#"{"id":"x-1","somethingNew":{"a":1}}"#;
    let (status, _) = post_json(&bridge, &path, odd).await;
    assert_eq!(status, 200);
    let m = q.next(WAIT).await.expect("unrecognized");
    assert_eq!(m.routing_key, "mailship.unrecognized");
    assert!(
        m.raw.windows(odd.len()).any(|w| w == odd),
        "raw payload bytes inside the envelope"
    );
    // Not JSON at all is a 400 and nothing is published.
    let (status, _) = post_json(&bridge, &path, b"id=1&status=delivered").await;
    assert_eq!(status, 400);
    q.expect_none(QUIET).await;
    bridge.cleanup().await;
}

// ---- Parsers and verifiers never panic (a property test that runs in CI; `fuzz/` goes further).

mod never_panics {
    use super::*;
    use std::time::SystemTime;
    use webhook_bridge::auth::{self, Credentials};
    use webhook_bridge::auth::{AuthConfig, HmacAlgorithm, MacEncoding};
    use webhook_bridge::config::Config;
    use webhook_bridge::envelope;
    use webhook_bridge::providers::{Inbound, ParseError, Parsed};
    use webhook_bridge::secret::Secret;

    fn config() -> Config {
        let toml = format!(
            r#"
[amqp]
urls = ["{AMQP_URL}"]
{endpoints}
[[endpoint]]
name = "mailship-fixed"
provider = "mailship"
path = "/mf"
secret = "test-token"
event = "product_stock"
[[endpoint]]
name = "generic-split"
provider = "generic"
path = "/g"
secret = "test-secret"
auth = {{ kind = "bearer" }}
[endpoint.generic]
event_pointer = "/type"
event_header = "x-event"
split_pointer = "/order"
entity_id_pointer = "/uuid"
id_pointer = "/id"
[[endpoint]]
name = "generic-plain"
provider = "generic"
path = "/g2"
secret = "test-secret"
auth = {{ kind = "bearer" }}
[endpoint.generic]
event_pointer = "/status"
entity_id_pointer = "/order/reference"
"#,
            endpoints = standard_endpoints()
        );
        Config::from_toml(&toml).unwrap()
    }

    /// A random JSON value, small.
    fn random_value(rng: &mut fastrand::Rng, depth: u32) -> Value {
        match rng.u8(..if depth > 2 { 5 } else { 7 }) {
            0 => Value::Null,
            1 => Value::Bool(rng.bool()),
            2 => json!(rng.i64(..)),
            3 => json!(rng.f64() * 1e6),
            4 => {
                let words = ["", "keyId", "DELIVERED", "#", "*.*", "é", "x.y..z", "\u{0}"];
                json!(words[rng.usize(..words.len())])
            }
            5 => Value::Array(
                (0..rng.usize(..4))
                    .map(|_| random_value(rng, depth + 1))
                    .collect(),
            ),
            _ => {
                let keys = [
                    "id",
                    "uuid",
                    "status",
                    "order",
                    "tracking",
                    "steps",
                    "delivered",
                    "type",
                    "newStatus",
                    "changes",
                    "orderNumber",
                    "keyId",
                    "payload",
                    "event",
                ];
                Value::Object(
                    (0..rng.usize(..4))
                        .map(|_| {
                            (
                                keys[rng.usize(..keys.len())].to_string(),
                                random_value(rng, depth + 1),
                            )
                        })
                        .collect(),
                )
            }
        }
    }

    /// Replace one random node of `v` by a random value.
    fn mutate(rng: &mut fastrand::Rng, v: &mut Value) {
        let go_deeper = rng.u8(..3) != 0;
        match v {
            Value::Object(map) if go_deeper && !map.is_empty() => {
                let i = rng.usize(..map.len());
                if let Some((_, child)) = map.iter_mut().nth(i) {
                    mutate(rng, child);
                }
            }
            Value::Array(items) if go_deeper && !items.is_empty() => {
                let i = rng.usize(..items.len());
                mutate(rng, &mut items[i]);
            }
            _ => *v = random_value(rng, 0),
        }
    }

    fn check(ep: &webhook_bridge::config::EndpointConfig, event_header: &str, body: &[u8]) {
        let mut headers = http::HeaderMap::new();
        if let Ok(v) = http::HeaderValue::from_str(event_header) {
            headers.insert("x-event", v);
        }
        let is_json = serde_json::from_slice::<Value>(body).is_ok();
        let inbound = Inbound {
            options: &ep.options,
            headers: &headers,
            body,
        };
        match ep.provider.parse(&inbound) {
            Ok(Parsed::Events(events)) => {
                assert!(is_json);
                let batches = (ep.provider.batches)(&ep.options);
                if !batches {
                    assert_eq!(
                        events.len(),
                        1,
                        "{}: {}",
                        ep.name,
                        String::from_utf8_lossy(body)
                    );
                }
                for e in &events {
                    let m = envelope::encode(ep, e, chrono::Utc::now()).unwrap();
                    assert!(!m.routing_key.contains(['*', '#']), "{}", m.routing_key);
                    assert!(m.routing_key.len() <= 255);
                    serde_json::from_slice::<Value>(&m.body).unwrap();
                }
            }
            Ok(Parsed::Reply(_)) => assert!(ep.provider.handshake_secret.is_some()),
            Err(ParseError::NotJson(_)) => assert!(!is_json),
            Err(ParseError::HandshakeRefused) => assert!(ep.provider.handshake_secret.is_some()),
            Err(ParseError::TooManyEvents(_)) => {}
        }
    }

    #[test]
    fn no_random_or_mutated_body_panics_a_parser() {
        let cfg = config();
        let seed = fastrand::u64(..);
        let mut rng = fastrand::Rng::with_seed(seed);
        eprintln!("seed {seed}");
        let bodies: Vec<&[u8]> = webhook_bridge::providers::samples::all()
            .map(|(_, s)| s.body)
            .collect();
        let samples: Vec<Value> = bodies
            .iter()
            .map(|b| serde_json::from_slice(b).unwrap())
            .collect();
        for round in 0..400 {
            for ep in &cfg.endpoints {
                let header = ["", "push", "#", "a.b"][round % 4];
                // Structural mutation of a sample.
                let mut v = samples[rng.usize(..samples.len())].clone();
                for _ in 0..rng.usize(1..4) {
                    mutate(&mut rng, &mut v);
                }
                check(ep, header, v.to_string().as_bytes());
                // Byte-level mutation: flips, truncation, random bytes.
                let mut bytes = bodies[rng.usize(..bodies.len())].to_vec();
                match rng.u8(..3) {
                    0 => {
                        for _ in 0..rng.usize(1..8) {
                            let i = rng.usize(..bytes.len());
                            bytes[i] = rng.u8(..);
                        }
                    }
                    1 => bytes.truncate(rng.usize(..bytes.len())),
                    _ => bytes = (0..rng.usize(..64)).map(|_| rng.u8(..)).collect(),
                }
                check(ep, header, &bytes);
            }
        }
    }

    #[test]
    fn no_random_credentials_panic_a_verifier() {
        let mut rng = fastrand::Rng::with_seed(fastrand::u64(..));
        let schemes = [
            AuthConfig::Bearer,
            AuthConfig::Basic { username: None },
            AuthConfig::Header {
                header: "x-token".into(),
            },
            AuthConfig::PathToken,
            AuthConfig::Hmac {
                header: "x-sig".into(),
                algorithm: HmacAlgorithm::Sha512,
                encoding: MacEncoding::Base64,
                prefix: Some("sha512=".into()),
            },
            AuthConfig::StandardWebhooks {
                tolerance: Duration::from_secs(300),
            },
        ];
        let secrets = [Secret::new("whsec_dGVzdC1rZXk="), Secret::new("test-two")];
        let pieces = [
            "",
            "v1,",
            "v1, v1,",
            "Bearer ",
            "Basic ",
            "Basic Og==",
            "sha512=",
            "sha512=AAAA",
            "whsec_",
            "0",
            "99999999999999999999",
            "v1,AAAA v2,BBBB",
            ":",
            "é",
        ];
        for _ in 0..3000 {
            let auth = &schemes[rng.usize(..schemes.len())];
            let mut headers = http::HeaderMap::new();
            for name in [
                "authorization",
                "x-token",
                "x-sig",
                "webhook-id",
                "webhook-timestamp",
                "webhook-signature",
            ] {
                if rng.bool() {
                    let mut v = pieces[rng.usize(..pieces.len())].to_string();
                    v.extend((0..rng.usize(..6)).map(|_| rng.alphanumeric()));
                    if let Ok(v) = http::HeaderValue::from_str(&v) {
                        headers.insert(name, v);
                    }
                }
            }
            let body: Vec<u8> = (0..rng.usize(..32)).map(|_| rng.u8(..)).collect();
            let token = pieces[rng.usize(..pieces.len())];
            let creds = Credentials {
                headers: &headers,
                path_token: Some(token),
                body: &body,
                now: SystemTime::now(),
            };
            assert!(
                auth::verify(auth, &secrets, &creds).is_err(),
                "{auth:?} accepted random credentials"
            );
        }
    }
}

#[tokio::test]
async fn isendu_batch_repeating_some_elements_publishes_only_the_new_ones() {
    broker_available().await;
    let bridge = Bridge::start().await;
    let mut q = bridge.consumer("isendu.#").await;
    let path = isendu_path();
    let first = json!({"tracking": [tracking(1), tracking(2)]});
    let (status, body) = post_json(&bridge, &path, first.to_string().as_bytes()).await;
    assert_eq!((status, body), (200, json!({"accepted": 2})));
    assert_eq!(q.take(2, WAIT).await.len(), 2);

    // isendu re-sends two known updates together with a new one.
    let second = json!({"tracking": [tracking(1), tracking(2), tracking(3)]});
    let (status, body) = post_json(&bridge, &path, second.to_string().as_bytes()).await;
    assert_eq!(
        (status, body),
        (200, json!({"accepted": 1, "duplicates": 2}))
    );
    let m = q.next(WAIT).await.expect("the new element");
    assert_eq!(m.body["subject"], "trk-003");
    q.expect_none(QUIET).await;

    let metrics = bridge.metrics().await;
    let line = |outcome: &str| {
        format!(
            "webhook_bridge_events_total{{outcome=\"{outcome}\",provider=\"isendu\",type=\"isendu.shipment.status_changed\"}} "
        )
    };
    let value = |outcome: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line(outcome)))
            .map(str::to_string)
    };
    assert_eq!(value("published").as_deref(), Some("3"), "{metrics}");
    assert_eq!(value("duplicate").as_deref(), Some("2"), "{metrics}");
    bridge.cleanup().await;
}
