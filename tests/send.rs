//! `webhook-bridge send` against a running bridge: the real binary signs each provider's sample
//! the way the provider would, the bridge accepts it, and the event arrives on the real broker.

use crate::common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn send(bridge: &Bridge, args: &[&str]) -> Run {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_webhook-bridge"))
        .arg("send")
        .arg("--config")
        .arg(&bridge.config_path)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("run webhook-bridge send");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn generic_endpoint() -> String {
    r#"
[[endpoint]]
name     = "github-ci"
provider = "generic"
path     = "/webhooks/github"
secret   = "test-github-hmac-secret"
auth     = { kind = "hmac", header = "X-Hub-Signature-256", prefix = "sha256=" }
[endpoint.generic]
source       = "github"
event_header = "X-GitHub-Event"

[[endpoint]]
name     = "billing"
provider = "generic"
path     = "/webhooks/billing"
secret   = "whsec_dGVzdC1zdGFuZGFyZC13ZWJob29rcy1rZXktMDAwMQ=="
auth     = { kind = "standard_webhooks" }
[endpoint.generic]
source        = "billing"
event_pointer = "/type"
"#
    .to_string()
}

#[tokio::test]
async fn send_delivers_every_providers_default_sample() {
    broker_available().await;
    let bridge = Bridge::start_with(BridgeOptions {
        endpoints: format!("{}{}", standard_endpoints(), generic_endpoint()),
        // The same sample is sent more than once; every delivery is checked.
        tables: "[dedup]\nenabled = false\n".into(),
        ..BridgeOptions::default()
    })
    .await;
    let mut q = bridge.consumer("#").await;
    for (endpoint, keys) in [
        ("modexpress-main", &["modexpress.order.status_changed"][..]),
        ("wegocod-ma", &["wegocod.order.status_changed"]),
        ("peddler-nl", &["peddler.shipment.status_changed"]),
        (
            "isendu-it",
            &[
                "isendu.order.updated",
                "isendu.shipment.status_changed",
                "isendu.shipment.status_changed",
            ],
        ),
        ("mailship-cz", &["mailship.order.status_changed"]),
        ("billing", &["billing.invoice.paid"]),
    ] {
        let run = send(&bridge, &["--endpoint", endpoint]).await;
        assert_eq!(
            run.code,
            Some(0),
            "{endpoint}: {} {}",
            run.stdout,
            run.stderr
        );
        assert!(
            run.stdout.contains("200 in ") && run.stdout.contains("ms"),
            "{endpoint}: {}",
            run.stdout
        );
        assert!(
            run.stdout
                .contains(&format!("{{\"accepted\":{}}}", keys.len())),
            "{}",
            run.stdout
        );
        let ms = q.take(keys.len(), WAIT).await;
        let got: Vec<&str> = ms.iter().map(|m| m.routing_key.as_str()).collect();
        assert_eq!(got, keys, "{endpoint}");
        assert_eq!(ms[0].body["data"]["account"], endpoint);
    }
    // The path token is never printed.
    let run = send(&bridge, &["--endpoint", "isendu-it"]).await;
    assert!(!run.stdout.contains(ISENDU_TOKEN), "{}", run.stdout);
    assert!(
        run.stdout.contains("/webhooks/isendu/***"),
        "{}",
        run.stdout
    );
    q.take(3, WAIT).await;
    bridge.cleanup().await;
}

#[tokio::test]
async fn send_named_samples_files_and_headers() {
    broker_available().await;
    let bridge = Bridge::start_with(BridgeOptions {
        endpoints: format!("{}{}", standard_endpoints(), generic_endpoint()),
        // The same sample is sent more than once; every delivery is checked.
        tables: "[dedup]\nenabled = false\n".into(),
        ..BridgeOptions::default()
    })
    .await;
    let mut q = bridge.consumer("#").await;

    for (sample, key) in [
        ("expedition_booked", "mailship.order.stock_booked"),
        ("product_stock", "mailship.product.stock_changed"),
        ("product_change", "mailship.product.updated"),
        ("stock_advice", "mailship.stock_advice.status_changed"),
    ] {
        let run = send(&bridge, &["--endpoint", "mailship-cz", "--sample", sample]).await;
        assert_eq!(run.code, Some(0), "{sample}: {}", run.stderr);
        assert_eq!(q.next(WAIT).await.expect(sample).routing_key, key);
    }
    let run = send(
        &bridge,
        &["--endpoint", "peddler-nl", "--sample", "out_for_delivery"],
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        q.next(WAIT).await.expect("peddler").body["data"]["status"],
        "out_for_delivery"
    );

    // The isendu handshake is answered (exit 0) and publishes nothing; the API secret in the
    // answer is not printed.
    let run = send(
        &bridge,
        &["--endpoint", "isendu-it", "--sample", "handshake"],
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stdout.contains(r#"{"response":"***"}"#),
        "{}",
        run.stdout
    );
    assert!(
        !run.stdout.contains(ISENDU_API_SECRET) && !run.stderr.contains(ISENDU_API_SECRET),
        "{}",
        run.stdout
    );

    // A file, with the event header a generic endpoint routes on.
    let file = bridge.dir.path().join("push.json");
    std::fs::write(&file, br#"{"ref":"refs/heads/main","zen":"send test"}"#).unwrap();
    let run = send(
        &bridge,
        &[
            "--endpoint",
            "github-ci",
            "--body",
            file.to_str().unwrap(),
            "-H",
            "X-GitHub-Event: push",
        ],
    )
    .await;
    assert_eq!(run.code, Some(0), "{} {}", run.stdout, run.stderr);
    let m = q.next(WAIT).await.expect("github push");
    assert_eq!(m.routing_key, "github.push");
    assert_eq!(m.body["data"]["payload"]["zen"], "send test");
    q.expect_none(Duration::from_millis(500)).await;
    bridge.cleanup().await;
}

#[tokio::test]
async fn send_exits_non_zero_on_refusal_or_bad_input() {
    broker_available().await;
    let bridge = Bridge::start().await;
    let mut q = bridge.consumer("#").await;

    // A path the bridge does not serve: 404 is printed and the exit code says failure.
    let url = format!("http://127.0.0.1:{}/elsewhere", bridge.port);
    let run = send(&bridge, &["--endpoint", "wegocod-ma", "--url", &url]).await;
    assert_ne!(run.code, Some(0));
    assert!(run.stdout.contains("404"), "{}", run.stdout);
    assert!(run.stderr.contains("404"), "{}", run.stderr);

    // Not JSON: 400.
    let file = bridge.dir.path().join("junk.txt");
    std::fs::write(&file, b"not json").unwrap();
    let run = send(
        &bridge,
        &["--endpoint", "wegocod-ma", "--body", file.to_str().unwrap()],
    )
    .await;
    assert_ne!(run.code, Some(0));
    assert!(run.stdout.contains("400"), "{}", run.stdout);

    // Nobody listening.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let run = send(&bridge, &["--endpoint", "wegocod-ma", "--url", &dead]).await;
    assert_ne!(run.code, Some(0));
    assert!(run.stderr.contains("request failed"), "{}", run.stderr);

    // Unknown endpoint and sample name what exists.
    let run = send(&bridge, &["--endpoint", "nope"]).await;
    assert_ne!(run.code, Some(0));
    assert!(run.stderr.contains("wegocod-ma"), "{}", run.stderr);
    let run = send(&bridge, &["--endpoint", "peddler-nl", "--sample", "nope"]).await;
    assert_ne!(run.code, Some(0));
    assert!(run.stderr.contains("shipment_confirmed"), "{}", run.stderr);

    q.expect_none(Duration::from_millis(500)).await;

    // Explicit URL of the real endpoint works.
    let url = format!("http://127.0.0.1:{}", bridge.port);
    let run = send(&bridge, &["--endpoint", "wegocod-ma", "--url", &url]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let m = q.next(WAIT).await.expect("published");
    assert_eq!(m.body["subject"], "ORD-000129");
    let v: Value = serde_json::from_str(run.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(v, serde_json::json!({"accepted": 1}));
    bridge.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_tries_the_url_check_with_the_endpoints_own_key_id() {
    broker_available().await;
    // A store whose key id is not the one in the bundled sample.
    let mut bridge = Bridge::start_with(BridgeOptions {
        endpoints: format!(
            "\n[[endpoint]]\nname = \"isendu-store\"\nprovider = \"isendu\"\npath = \"/webhooks/isendu\"\n\
             secret = \"{ISENDU_TOKEN}\"\nkey_id = \"store-key-42\"\napi_secret = \"{ISENDU_API_SECRET}\"\n"
        ),
        ..BridgeOptions::default()
    })
    .await;
    let run = send(
        &bridge,
        &["--endpoint", "isendu-store", "--sample", "handshake"],
    )
    .await;
    assert_eq!(run.code, Some(0), "{} {}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(r#"{"response":"***"}"#),
        "{}",
        run.stdout
    );
    bridge.cleanup().await;
    bridge.terminate();
}
