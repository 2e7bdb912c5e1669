//! docs/contract.md §7.2 metrics, scraped from /metrics after known traffic: names, label sets and exact counts.

use crate::common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use common::*;

/// One scraped sample: metric name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("sample line");
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once("=\"").expect("label");
                    (k.to_string(), v.trim_end_matches('"').to_string())
                })
                .collect();
            Sample {
                name: name.to_string(),
                labels,
                value: value.parse().expect("value"),
            }
        })
        .collect()
}

/// The value of the series `name` with exactly `labels`; 0 when absent.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples
        .iter()
        .find(|s| s.name == name && s.labels == want)
        .map(|s| s.value)
        .unwrap_or(0.0)
}

fn label_names(samples: &[Sample], name: &str) -> BTreeSet<String> {
    samples
        .iter()
        .filter(|s| s.name == name)
        .flat_map(|s| s.labels.keys().cloned())
        .collect()
}

const P: &str = "webhook_bridge_";

#[tokio::test]
async fn scrape_after_known_traffic_gives_exact_counts() {
    broker_available().await;
    let bridge = Bridge::start().await;
    let mut q = bridge.consumer("#").await;
    let sample = String::from_utf8_lossy(webhook_bridge::providers::wegocod::DELIVERED).to_string();
    // 3 accepted WeGoCOD events, each a different order (so no dedup can merge them).
    for i in 0..3 {
        let body = sample.replace("ORD-000129", &format!("ORD-METRICS-{i}"));
        let resp = bridge
            .post_signed(
                "wegocod",
                "/webhooks/wegocod",
                WEGOCOD_SECRET,
                body.as_bytes(),
            )
            .await;
        assert_eq!(resp.status(), 200);
    }
    // 2 unauthorized.
    for secret in ["wrong-1", "wrong-2"] {
        let resp = bridge
            .post_signed(
                "wegocod",
                "/webhooks/wegocod",
                secret,
                webhook_bridge::providers::wegocod::DELIVERED,
            )
            .await;
        assert_eq!(resp.status(), 401);
    }
    // 1 unknown path.
    assert_eq!(bridge.post("/nowhere", &[], b"{}").await.status(), 404);
    // 1 isendu batch.
    let resp = bridge
        .post_signed(
            "isendu",
            "/webhooks/isendu",
            ISENDU_TOKEN,
            webhook_bridge::providers::isendu::BATCH,
        )
        .await;
    assert_eq!(resp.status(), 200);

    // What really arrived, by routing key.
    let mut arrived: HashMap<String, u64> = HashMap::new();
    while let Some(m) = q.next(Duration::from_millis(800)).await {
        *arrived.entry(m.routing_key).or_default() += 1;
    }
    assert_eq!(arrived.get("wegocod.order.status_changed"), Some(&3));
    let isendu: u64 = arrived
        .iter()
        .filter(|(k, _)| k.starts_with("isendu."))
        .map(|(_, n)| n)
        .sum();
    assert!(isendu >= 1, "{arrived:?}");

    let text = bridge.metrics().await;
    let s = parse(&text);
    let req = format!("{P}requests_total");
    let wegocod = [("endpoint", "wegocod-ma"), ("provider", "wegocod")];
    let with = |base: &[(&'static str, &'static str)], extra: (&'static str, &'static str)| {
        let mut v = base.to_vec();
        v.push(extra);
        v
    };
    assert_eq!(
        value(&s, &req, &with(&wegocod, ("outcome", "accepted"))),
        3.0,
        "{text}"
    );
    assert_eq!(
        value(&s, &req, &with(&wegocod, ("outcome", "unauthorized"))),
        2.0
    );
    assert_eq!(
        value(
            &s,
            &req,
            &[
                ("endpoint", "none"),
                ("provider", "none"),
                ("outcome", "not_found")
            ]
        ),
        1.0
    );
    let isendu_ep = [("endpoint", "isendu-it"), ("provider", "isendu")];
    assert_eq!(
        value(&s, &req, &with(&isendu_ep, ("outcome", "accepted"))),
        1.0
    );
    let total: f64 = s.iter().filter(|x| x.name == req).map(|x| x.value).sum();
    assert_eq!(total, 7.0, "no other request was counted");

    // Events, per type, exactly as consumed.
    let ev = format!("{P}events_total");
    for (routing_key, n) in &arrived {
        let provider = routing_key.split('.').next().unwrap_or_default();
        assert_eq!(
            value(
                &s,
                &ev,
                &[
                    ("provider", provider),
                    ("type", routing_key.as_str()),
                    ("outcome", "published")
                ]
            ),
            *n as f64,
            "{routing_key}\n{text}"
        );
    }
    let events: f64 = s.iter().filter(|x| x.name == ev).map(|x| x.value).sum();
    assert_eq!(events, 3.0 + isendu as f64);

    // Batch sizes: three single WeGoCOD events, one isendu batch.
    let bs = |suffix: &str, provider: &str| {
        value(
            &s,
            &format!("{P}batch_size_{suffix}"),
            &[("provider", provider)],
        )
    };
    assert_eq!(bs("count", "wegocod"), 3.0);
    assert_eq!(bs("sum", "wegocod"), 3.0);
    assert_eq!(bs("count", "isendu"), 1.0);
    assert_eq!(bs("sum", "isendu"), isendu as f64);

    // Every routed request is timed (accepted and unauthorized alike).
    let rd = format!("{P}request_duration_seconds_count");
    assert_eq!(value(&s, &rd, &wegocod), 5.0);
    assert_eq!(value(&s, &rd, &isendu_ep), 1.0);
    // The slowest bucket at or above the deadline holds every request.
    assert_eq!(
        value(
            &s,
            &format!("{P}request_duration_seconds_bucket"),
            &[
                ("endpoint", "wegocod-ma"),
                ("provider", "wegocod"),
                ("le", "4")
            ]
        ),
        5.0
    );

    // One confirm observation per confirmed publish (3 WeGoCOD requests + 1 isendu batch).
    assert_eq!(
        value(&s, &format!("{P}publish_confirm_seconds_count"), &[]),
        4.0
    );
    assert_eq!(value(&s, &format!("{P}in_flight_requests"), &[]), 0.0);
    assert_eq!(value(&s, &format!("{P}amqp_connected"), &[]), 1.0);
    assert_eq!(
        value(
            &s,
            &format!("{P}publish_failures_total"),
            &[("reason", "timeout")]
        ),
        0.0
    );
    let failures: f64 = s
        .iter()
        .filter(|x| x.name == format!("{P}publish_failures_total"))
        .map(|x| x.value)
        .sum();
    assert_eq!(failures, 0.0);
    bridge.cleanup().await;
}

#[tokio::test]
async fn every_spec_metric_is_exported_with_its_label_set() {
    broker_available().await;
    let bridge = Bridge::start().await;
    let resp = bridge
        .post_signed(
            "peddler",
            "/webhooks/peddler",
            PEDDLER_SECRET,
            webhook_bridge::providers::peddler::CONFIRMED,
        )
        .await;
    assert_eq!(resp.status(), 200);
    let text = bridge.metrics().await;
    let s = parse(&text);
    let set = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();
    let expected: &[(&str, &[&str])] = &[
        ("requests_total", &["endpoint", "provider", "outcome"]),
        (
            "request_duration_seconds_bucket",
            &["endpoint", "provider", "le"],
        ),
        ("request_duration_seconds_count", &["endpoint", "provider"]),
        ("events_total", &["provider", "type", "outcome"]),
        ("batch_size_bucket", &["provider", "le"]),
        ("publish_confirm_seconds_bucket", &["le"]),
        ("publish_confirm_seconds_count", &[]),
        ("publish_failures_total", &["reason"]),
        ("connection_errors_total", &["reason"]),
        ("amqp_connected", &[]),
        ("amqp_reconnects_total", &[]),
        ("spool_events", &[]),
        ("spool_bytes", &[]),
        ("spool_max_bytes", &[]),
        ("in_flight_requests", &[]),
        ("log_lines_dropped_total", &[]),
        ("build_info", &["version"]),
    ];
    for (name, labels) in expected {
        let full = format!("{P}{name}");
        assert!(s.iter().any(|x| x.name == full), "{full} missing:\n{text}");
        assert_eq!(label_names(&s, &full), set(labels), "{full}");
    }
    assert!(text.contains(&format!("# TYPE {P}request_duration_seconds histogram")));
    assert!(text.contains(&format!("# TYPE {P}requests_total counter")));
    assert!(text.contains(&format!("# TYPE {P}in_flight_requests gauge")));
    // The spool's capacity is exported (the near-full alert divides by it): the default 1 GiB.
    assert_eq!(
        value(&s, &format!("{P}spool_max_bytes"), &[]),
        (1u64 << 30) as f64
    );
    // Latency buckets resolve milliseconds and straddle the 4–5 s deadline.
    let les: BTreeSet<String> = s
        .iter()
        .filter(|x| x.name == format!("{P}request_duration_seconds_bucket"))
        .filter_map(|x| x.labels.get("le").cloned())
        .collect();
    for le in ["0.005", "0.05", "0.5", "3", "4", "5", "+Inf"] {
        assert!(les.contains(le), "le={le} missing: {les:?}");
    }

    // docs/contract.md's metrics table (§7.2) names exactly the exported families, with their
    // labels.
    let exported: BTreeMap<String, BTreeSet<String>> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next())
        .filter_map(|family| family.strip_prefix(P))
        .map(|family| {
            let labels = s
                .iter()
                .filter(|x| {
                    x.name
                        .strip_prefix(P)
                        .is_some_and(|n| n.starts_with(family))
                })
                .flat_map(|x| x.labels.keys().filter(|k| *k != "le").cloned())
                .collect();
            (family.to_string(), labels)
        })
        .collect();
    assert_eq!(
        contract_metrics(),
        exported,
        "docs/contract.md §7.2 vs /metrics"
    );
    bridge.cleanup().await;
}

/// The metrics table of docs/contract.md (§7.2): family name (several per row allowed) → label
/// names (`—` for none).
fn contract_metrics() -> BTreeMap<String, BTreeSet<String>> {
    let contract = include_str!("../docs/contract.md");
    let section = contract
        .split("\n### 7.2 Metrics\n")
        .nth(1)
        .and_then(|rest| rest.split("\n### ").next())
        .expect("docs/contract.md has a §7.2 Metrics section");
    let names = |cell: &str| -> Vec<String> {
        cell.split(',')
            .map(|n| n.trim().trim_matches('`').to_string())
            .filter(|n| !n.is_empty() && n != "—")
            .collect()
    };
    section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .flat_map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let labels: BTreeSet<String> = names(cells[3]).into_iter().collect();
            names(cells[1])
                .into_iter()
                .map(move |n| (n, labels.clone()))
        })
        .collect()
}
