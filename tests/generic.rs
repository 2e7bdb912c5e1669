//! The generic provider end to end: the two README examples (GitHub-style HMAC with a `sha256=`
//! prefix, a Standard Webhooks sender), every other auth scheme, splitting, and unrecognized
//! bodies — over real HTTP into a real queue.

use crate::common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::*;
use serde_json::{Value, json};
use webhook_bridge::auth::{AuthConfig, HmacAlgorithm, MacEncoding};

/// Headers, body, and what the case checks.
type Case = (Vec<(String, String)>, Vec<u8>, &'static str);

const WAIT: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(800);

const GITHUB_SECRET: &str = "test-github-hmac-secret";
/// base64("test-standard-webhooks-key-0001"), the `whsec_` form senders hand out.
const SW_SECRET: &str = "whsec_dGVzdC1zdGFuZGFyZC13ZWJob29rcy1rZXktMDAwMQ==";

/// The two worked examples of the README, verbatim apart from the secrets.
fn readme_endpoints() -> String {
    format!(
        r#"
[[endpoint]]
name     = "github-ci"
provider = "generic"
path     = "/webhooks/github"
secret   = "{GITHUB_SECRET}"
auth     = {{ kind = "hmac", header = "X-Hub-Signature-256", algorithm = "sha256", encoding = "hex", prefix = "sha256=" }}
[endpoint.generic]
source            = "github"
event_header      = "X-GitHub-Event"
entity_id_pointer = "/repository/full_name"

[[endpoint]]
name     = "billing"
provider = "generic"
path     = "/webhooks/billing"
secret   = "{SW_SECRET}"
auth     = {{ kind = "standard_webhooks", tolerance = "5m" }}
[endpoint.generic]
source            = "billing"
event_pointer     = "/type"
entity_id_pointer = "/data/id"
"#
    )
}

fn github_auth() -> AuthConfig {
    AuthConfig::Hmac {
        header: "X-Hub-Signature-256".into(),
        algorithm: HmacAlgorithm::Sha256,
        encoding: MacEncoding::Hex,
        prefix: Some("sha256=".into()),
    }
}

fn sw_auth() -> AuthConfig {
    AuthConfig::StandardWebhooks {
        tolerance: Duration::from_secs(300),
    }
}

async fn start(endpoints: String) -> Bridge {
    broker_available().await;
    Bridge::start_with(BridgeOptions {
        endpoints,
        // Some tests send the same event twice and expect both deliveries.
        tables: "[dedup]\nenabled = false\n".into(),
        ..BridgeOptions::default()
    })
    .await
}

#[tokio::test]
async fn github_style_hmac_example_routes_by_event_header() {
    let bridge = start(readme_endpoints()).await;
    let mut q = bridge.consumer("github.#").await;
    let body = webhook_bridge::providers::generic::GITHUB_PUSH;
    let (path, mut headers) = signed_with(&github_auth(), "/webhooks/github", GITHUB_SECRET, body);
    headers.push(("X-GitHub-Event".into(), "push".into()));
    let resp = bridge.post(&path, &headers, body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"accepted": 1}));
    let m = q.next(WAIT).await.expect("message");
    assert_eq!(m.routing_key, "github.push");
    assert_eq!(m.body["type"], "github.push");
    assert_eq!(m.body["source"], "webhook-bridge/github/github-ci");
    assert_eq!(m.body["subject"], "octo-org/octo-repo");
    assert_eq!(m.body["data"]["provider"], "github");
    assert_eq!(m.body["data"]["event"], "push");
    assert_eq!(m.body["data"]["status"], Value::Null);
    assert_eq!(
        m.body["data"]["payload"],
        serde_json::from_slice::<Value>(body).unwrap()
    );

    // An event name that is not a valid routing-key word is sanitized, not refused.
    let mut headers2 = headers.clone();
    headers2.retain(|(k, _)| k != "X-GitHub-Event");
    headers2.push(("X-GitHub-Event".into(), "Pull Request#Review*".into()));
    assert_eq!(bridge.post(&path, &headers2, body).await.status(), 200);
    let m = q.next(WAIT).await.expect("sanitized");
    assert_eq!(m.routing_key, "github.pull_request_review_");
    assert_eq!(m.body["data"]["event"], "Pull Request#Review*");

    // No event header: published as unrecognized, never dropped.
    let mut headers3 = headers.clone();
    headers3.retain(|(k, _)| k != "X-GitHub-Event");
    assert_eq!(bridge.post(&path, &headers3, body).await.status(), 200);
    let m = q.next(WAIT).await.expect("unrecognized");
    assert_eq!(m.routing_key, "github.unrecognized");
    bridge.cleanup().await;
}

#[tokio::test]
async fn github_style_hmac_failures_are_401_and_nothing_published() {
    let bridge = start(readme_endpoints()).await;
    let mut q = bridge.consumer("#").await;
    let body = webhook_bridge::providers::generic::GITHUB_PUSH;
    let (path, headers) = signed_with(&github_auth(), "/webhooks/github", GITHUB_SECRET, body);
    let sig = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("x-hub-signature-256"))
        .map(|(_, v)| v.clone())
        .unwrap();
    let event = ("X-GitHub-Event".to_string(), "push".to_string());
    let with_sig = |s: &str| {
        vec![
            ("X-Hub-Signature-256".to_string(), s.to_string()),
            event.clone(),
        ]
    };
    let mut tampered = body.to_vec();
    let pos = tampered.iter().position(|&b| b == b'm').unwrap();
    tampered[pos] = b'M';
    let (_, other) = signed_with(&github_auth(), "/webhooks/github", "another-secret", body);
    let other_sig = other[0].1.clone();
    let cases: Vec<Case> = vec![
        (with_sig(&sig), tampered, "tampered body"),
        (vec![event.clone()], body.to_vec(), "missing signature"),
        (
            with_sig(sig.trim_start_matches("sha256=")),
            body.to_vec(),
            "missing prefix",
        ),
        (with_sig("sha256="), body.to_vec(), "empty MAC"),
        (
            with_sig(&sig[..sig.len() - 2]),
            body.to_vec(),
            "truncated MAC",
        ),
        (with_sig(&other_sig), body.to_vec(), "other secret"),
        (
            vec![
                ("X-Hub-Signature-256".into(), sig.clone()),
                ("X-Hub-Signature-256".into(), sig.clone()),
                event.clone(),
            ],
            body.to_vec(),
            "signature twice",
        ),
    ];
    for (headers, body, what) in cases {
        let resp = bridge.post(&path, &headers, &body).await;
        assert_eq!(resp.status(), 401, "{what}");
    }
    q.expect_none(QUIET).await;
    bridge.cleanup().await;
}

#[tokio::test]
async fn standard_webhooks_example_routes_by_type() {
    let bridge = start(readme_endpoints()).await;
    let mut q = bridge.consumer("billing.#").await;
    let body = webhook_bridge::providers::generic::INVOICE_PAID;
    let (path, headers) = signed_with(&sw_auth(), "/webhooks/billing", SW_SECRET, body);
    let resp = bridge.post(&path, &headers, body).await;
    assert_eq!(resp.status(), 200);
    let m = q.next(WAIT).await.expect("message");
    assert_eq!(m.routing_key, "billing.invoice.paid");
    assert_eq!(m.body["subject"], "inv_0001");
    assert_eq!(m.body["data"]["entity_id"], "inv_0001");
    assert_eq!(m.body["data"]["event"], "invoice.paid");

    // Several signatures (during a key rotation): one valid among them is enough.
    let valid = headers
        .iter()
        .find(|(k, _)| k == "webhook-signature")
        .map(|(_, v)| v.clone())
        .unwrap();
    let mut rotated = headers.clone();
    rotated.retain(|(k, _)| k != "webhook-signature");
    rotated.push((
        "webhook-signature".into(),
        format!("v1,{} v1a,ignored {valid}", B64.encode([7u8; 32])),
    ));
    assert_eq!(bridge.post(&path, &rotated, body).await.status(), 200);
    let m2 = q.next(WAIT).await.expect("second delivery");
    assert_eq!(m2.message_id, m.message_id, "same body, same id");
    bridge.cleanup().await;
}

#[tokio::test]
async fn standard_webhooks_failures_are_401_and_nothing_published() {
    let bridge = start(readme_endpoints()).await;
    let mut q = bridge.consumer("#").await;
    let body = webhook_bridge::providers::generic::INVOICE_PAID;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let base = |ts: u64, sig: &str| {
        vec![
            ("webhook-id".to_string(), "msg_test".to_string()),
            ("webhook-timestamp".to_string(), ts.to_string()),
            ("webhook-signature".to_string(), sig.to_string()),
        ]
    };
    // A correct signature, but over a timestamp ten minutes old.
    let stale = webhook_bridge::auth::sign(
        &sw_auth(),
        &webhook_bridge::secret::Secret::new(SW_SECRET),
        body,
        SystemTime::now() - Duration::from_secs(600),
        "msg_test",
    );
    let stale: Vec<(String, String)> = stale
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
        .collect();
    let (_, good) = signed_with(&sw_auth(), "/webhooks/billing", SW_SECRET, body);
    let mut tampered = body.to_vec();
    tampered.extend_from_slice(b" ");
    let mut wrong_id = good.clone();
    for (k, v) in wrong_id.iter_mut() {
        if k == "webhook-id" {
            *v = "msg_other".into();
        }
    }
    let cases: Vec<Case> = vec![
        (stale, body.to_vec(), "stale timestamp"),
        (base(now, "v1,"), body.to_vec(), "empty v1 signature"),
        (base(now, "v1, v1,"), body.to_vec(), "two empty signatures"),
        (base(now, ""), body.to_vec(), "empty header"),
        (base(now, "v1,AAAA"), body.to_vec(), "short signature"),
        (good.clone(), tampered, "tampered body"),
        (wrong_id, body.to_vec(), "webhook-id changed"),
        (vec![], body.to_vec(), "no headers"),
    ];
    for (headers, body, what) in cases {
        let resp = bridge.post("/webhooks/billing", &headers, &body).await;
        assert_eq!(resp.status(), 401, "{what}");
    }
    q.expect_none(QUIET).await;
    bridge.cleanup().await;
}

#[tokio::test]
async fn every_other_auth_scheme_accepts_the_secret_and_refuses_the_rest() {
    let schemes = [
        ("bearer", r#"{ kind = "bearer" }"#, AuthConfig::Bearer),
        (
            "basic",
            r#"{ kind = "basic", username = "shop" }"#,
            AuthConfig::Basic {
                username: Some("shop".into()),
            },
        ),
        (
            "header",
            r#"{ kind = "header", header = "X-Api-Token" }"#,
            AuthConfig::Header {
                header: "X-Api-Token".into(),
            },
        ),
        ("path", r#"{ kind = "path_token" }"#, AuthConfig::PathToken),
        (
            "hmac512",
            r#"{ kind = "hmac", header = "X-Signature", algorithm = "sha512", encoding = "base64" }"#,
            AuthConfig::Hmac {
                header: "X-Signature".into(),
                algorithm: HmacAlgorithm::Sha512,
                encoding: MacEncoding::Base64,
                prefix: None,
            },
        ),
    ];
    let mut endpoints = String::new();
    for (name, auth, _) in &schemes {
        endpoints.push_str(&format!(
            "[[endpoint]]\nname = \"{name}\"\nprovider = \"generic\"\npath = \"/g/{name}\"\n\
             secret = [\"test-old-secret\", \"test-generic-secret\"]\nauth = {auth}\n\
             [endpoint.generic]\nsource = \"acme\"\nevent_pointer = \"/event\"\nid_pointer = \"/id\"\n\n"
        ));
    }
    let bridge = start(endpoints).await;
    let mut q = bridge.consumer("acme.#").await;
    let body = br#"{"event":"parcel.scanned","id":"evt-1"}"#;
    for (name, _, auth) in &schemes {
        let base = format!("/g/{name}");
        let (path, headers) = signed_with(auth, &base, "test-generic-secret", body);
        let (wrong_path, wrong_headers) = signed_with(auth, &base, "test-wrong-secret", body);
        assert_eq!(
            bridge
                .post(&wrong_path, &wrong_headers, body)
                .await
                .status(),
            401,
            "{name} wrong"
        );
        assert_eq!(
            bridge.post(&base, &[], body).await.status(),
            401,
            "{name} missing"
        );
        q.expect_none(Duration::from_millis(200)).await;
        assert_eq!(
            bridge.post(&path, &headers, body).await.status(),
            200,
            "{name} right"
        );
        let m = q.next(WAIT).await.expect("published");
        assert_eq!(m.routing_key, "acme.parcel.scanned", "{name}");
        assert_eq!(m.body["data"]["account"], *name);
        // The rotated-out secret still verifies.
        let (old_path, old_headers) = signed_with(auth, &base, "test-old-secret", body);
        assert_eq!(
            bridge.post(&old_path, &old_headers, body).await.status(),
            200,
            "{name} old"
        );
        let m2 = q.next(WAIT).await.expect("published again");
        assert_eq!(m2.message_id, m.message_id, "id from id_pointer");
    }
    bridge.cleanup().await;
}

#[tokio::test]
async fn split_pointer_publishes_each_element_with_its_batch_index() {
    let endpoints = r#"
[[endpoint]]
name = "scans"
provider = "generic"
path = "/g/scans"
secret = "test-scan-token"
auth = { kind = "bearer" }
[endpoint.generic]
source = "carrierx"
event_pointer = "/kind"
split_pointer = "/data/events"
entity_id_pointer = "/parcel"
id_pointer = "/scan_id"
"#;
    let bridge = start(endpoints.to_string()).await;
    let mut q = bridge.consumer("carrierx.#").await;
    let auth = [(
        "authorization".to_string(),
        "Bearer test-scan-token".to_string(),
    )];
    let elements: Vec<Value> = (0..5)
        .map(|i| json!({"scan_id": format!("s{i}"), "parcel": format!("P{i}"), "kind": if i == 3 { "parcel.delivered" } else { "parcel.scanned" }}))
        .collect();
    let body = json!({"kind": "ignored.here", "data": {"events": elements}}).to_string();
    let resp = bridge.post("/g/scans", &auth, body.as_bytes()).await;
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"accepted": 5}));
    let ms = q.take(5, WAIT).await;
    for (i, m) in ms.iter().enumerate() {
        assert_eq!(m.body["data"]["batch"], json!({"index": i, "size": 5}));
        assert_eq!(m.body["subject"], format!("P{i}"));
        assert_eq!(m.body["data"]["payload"], elements[i]);
        let want = if i == 3 {
            "carrierx.parcel.delivered"
        } else {
            "carrierx.parcel.scanned"
        };
        assert_eq!(m.routing_key, want);
    }
    // Elements without their own event name take the one next to the array.
    let body = json!({"kind": "parcel.returned", "data": {"events": [{"parcel": "P9"}]}});
    let resp = bridge
        .post("/g/scans", &auth, body.to_string().as_bytes())
        .await;
    assert_eq!(resp.status(), 200);
    let m = q.next(WAIT).await.expect("inherited event");
    assert_eq!(m.routing_key, "carrierx.parcel.returned");
    // An empty array is fine; a missing one is published whole as unrecognized.
    let resp = bridge
        .post("/g/scans", &auth, br#"{"data":{"events":[]}}"#)
        .await;
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"accepted": 0}));
    let resp = bridge.post("/g/scans", &auth, br#"{"data":{}}"#).await;
    assert_eq!(resp.status(), 200);
    let m = q.next(WAIT).await.expect("unrecognized");
    assert_eq!(m.routing_key, "carrierx.unrecognized");
    assert_eq!(m.body["data"]["payload"], json!({"data": {}}));
    q.expect_none(QUIET).await;
    bridge.cleanup().await;
}
