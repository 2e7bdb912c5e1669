//! The deployment files describe the real binary: every `webhook_bridge_*` metric named in
//! deploy/ (alert rules, their unit tests, the dashboard, the manifests), docs/deploy.md and
//! docs/runbooks.md is
//! one the binary exports, every label those queries match on exists on that metric, the
//! Kubernetes config is one the binary accepts, and the "spool near full" alert agrees with the
//! configured spool size. scripts/check-deploy validates the files' syntax; this checks meaning.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const PREFIX: &str = "webhook_bridge_";

/// Labels Prometheus adds to every scraped series (target and operator labels): queries may
/// match on them although the binary does not export them.
const TARGET_LABELS: &[&str] = &[
    "namespace",
    "pod",
    "container",
    "job",
    "instance",
    "service",
];

// ---- extraction ---------------------------------------------------------------------------------

/// A metric name as written in a query, with the label names its `{…}` selector matches on.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Reference {
    labels: BTreeSet<String>,
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Every `webhook_bridge_*` identifier in `text` (not part of a longer identifier such as
/// `my_webhook_bridge_x`), with the label names used in a selector right after it.
fn references(text: &str) -> BTreeMap<String, Reference> {
    let mut out: BTreeMap<String, Reference> = BTreeMap::new();
    let mut from = 0;
    while let Some(pos) = text[from..].find(PREFIX) {
        let start = from + pos;
        let before = text[..start].chars().next_back();
        let end = text[start..]
            .find(|c: char| !is_name_char(c))
            .map_or(text.len(), |n| start + n);
        from = end;
        if before.is_some_and(is_name_char) {
            continue;
        }
        let name = text[start..end].to_string();
        let entry = out.entry(name).or_default();
        if text[end..].starts_with('{')
            && let Some(close) = selector_end(&text[end..])
        {
            entry
                .labels
                .extend(selector_labels(&text[end + 1..end + close]));
        }
    }
    out
}

/// Index of the `}` closing the selector that starts at `s[0] == '{'`, skipping quoted strings.
fn selector_end(s: &str) -> Option<usize> {
    let mut in_quote = false;
    let mut escaped = false;
    for (i, c) in s.char_indices().skip(1) {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => in_quote = !in_quote,
            '}' if !in_quote => return Some(i),
            _ => {}
        }
    }
    None
}

/// Label names of a selector body such as `outcome=~"a|b", endpoint="x"` (or of an exposition
/// line's `{endpoint="x",outcome="y"}`).
fn selector_labels(body: &str) -> BTreeSet<String> {
    let mut labels = BTreeSet::new();
    let mut in_quote = false;
    let mut escaped = false;
    let mut name = String::new();
    for c in body.chars() {
        if in_quote {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_quote = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_quote = true,
            '=' | '!' | '~' => {
                if !name.is_empty() {
                    labels.insert(std::mem::take(&mut name));
                }
            }
            c if is_name_char(c) => name.push(c),
            _ => name.clear(),
        }
    }
    labels
}

/// What a `/metrics` scrape exports: family name → type, and every sample name → label names.
#[derive(Debug, Default)]
struct Exported {
    families: BTreeMap<String, String>,
    samples: BTreeMap<String, BTreeSet<String>>,
}

impl Exported {
    fn add_scrape(&mut self, text: &str) {
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split_whitespace();
                if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                    self.families.insert(name.to_string(), kind.to_string());
                }
            } else if !line.starts_with('#') && !line.trim().is_empty() {
                let end = line.find(|c: char| !is_name_char(c)).unwrap_or(line.len());
                let labels = match line[end..].strip_prefix('{') {
                    Some(rest) => selector_labels(rest.split('}').next().unwrap_or("")),
                    None => BTreeSet::new(),
                };
                self.samples
                    .entry(line[..end].to_string())
                    .or_default()
                    .extend(labels);
            }
        }
    }

    /// Why `name` (as referenced, with its selector's labels) is not something the binary
    /// exports; `None` when it is. `_bucket`, `_sum` and `_count` are accepted only on a
    /// histogram or summary family, and `le` only on `_bucket`. Prose (`family_ok`) may also
    /// name a histogram's family, which has no series of its own and so is no valid query.
    fn problem(&self, name: &str, reference: &Reference, family_ok: bool) -> Option<String> {
        if family_ok && self.families.contains_key(name) {
            return None;
        }
        let Some(exported_labels) = self.samples.get(name) else {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|base| {
                    matches!(
                        self.families.get(*base).map(String::as_str),
                        Some("histogram" | "summary")
                    )
                });
            return Some(match family {
                Some(base) => format!("{name}: {base} exports no such series"),
                None => format!("{name}: not exported by the binary"),
            });
        };
        let unknown: Vec<&String> = reference
            .labels
            .iter()
            .filter(|l| !exported_labels.contains(*l) && !TARGET_LABELS.contains(&l.as_str()))
            .collect();
        if unknown.is_empty() {
            None
        } else {
            Some(format!(
                "{name}: matches on label(s) {unknown:?}, exported labels are {exported_labels:?}"
            ))
        }
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every text file under deploy/, plus docs/deploy.md and docs/runbooks.md.
fn deploy_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&repo().join("deploy"), &mut files);
    for doc in ["docs/deploy.md", "docs/runbooks.md"] {
        let path = repo().join(doc);
        assert!(path.exists(), "{doc} is missing");
        files.push(path);
    }
    files
}

/// The text queries are read from: a JSON file's string values (unescaped, so PromQL reads as
/// PromQL), any other file as it is. Non-text files give nothing.
fn query_text(path: &Path) -> String {
    fn strings(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::String(s) => {
                out.push_str(s);
                out.push('\n');
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
            serde_json::Value::Object(o) => o.values().for_each(|x| strings(x, out)),
            _ => {}
        }
    }
    let Ok(text) = std::fs::read_to_string(path) else {
        return String::new();
    };
    if path.extension().is_some_and(|e| e == "json") {
        let value: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        let mut out = String::new();
        strings(&value, &mut out);
        out
    } else {
        text
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

// ---- the checks against the running binary -----------------------------------------------------

#[tokio::test]
async fn every_metric_named_in_deploy_files_is_exported_by_the_binary() {
    broker_available().await;

    // A healthy bridge after one accepted webhook and one refused: the request, event, batch and
    // confirm families get their first series.
    let bridge = Bridge::start().await;
    let accepted = bridge.post_wegocod_sample().await;
    assert_eq!(accepted.status(), 200, "{:?}", accepted.text().await);
    let refused = bridge
        .post_signed(
            "wegocod",
            "/webhooks/wegocod",
            "not-the-secret",
            webhook_bridge::providers::wegocod::DELIVERED,
        )
        .await;
    assert_eq!(refused.status(), 401);
    let healthy = bridge.metrics().await;
    bridge.cleanup().await;

    // A bridge whose broker is unreachable (spool off): a publish fails, which is the only way
    // publish_failures_total gets a series.
    let dead = free_port();
    let broken = Bridge::start_with(BridgeOptions {
        amqp_urls: vec![format!("amqp://guest:guest@127.0.0.1:{dead}/%2f")],
        tables: "[spool]\nenabled = false\n".into(),
        wait_ready: false,
        ..BridgeOptions::default()
    })
    .await;
    let unavailable = broken.post_wegocod_sample().await;
    assert_eq!(unavailable.status(), 503);
    let failing = broken.metrics().await;

    let mut exported = Exported::default();
    exported.add_scrape(&healthy);
    exported.add_scrape(&failing);
    assert!(
        exported
            .samples
            .contains_key("webhook_bridge_requests_total"),
        "scrape looks wrong:\n{healthy}"
    );

    let mut problems = Vec::new();
    let mut checked = BTreeSet::new();
    for file in deploy_files() {
        let prose = file.extension().is_some_and(|e| e == "md");
        for (name, reference) in references(&query_text(&file)) {
            if let Some(p) = exported.problem(&name, &reference, prose) {
                problems.push(format!("{}: {p}", file.display()));
            }
            checked.insert(name);
        }
    }
    assert!(
        problems.is_empty(),
        "deploy files name metrics the binary does not export:\n  {}",
        problems.join("\n  ")
    );
    // The rules and dashboard cover every family docs/contract.md §7.2 lists; a file set that names only a
    // couple of metrics would pass the check above vacuously.
    for family in [
        "requests_total",
        "request_duration_seconds_bucket",
        "events_total",
        "batch_size_bucket",
        "publish_confirm_seconds_bucket",
        "publish_failures_total",
        "amqp_connected",
        "amqp_reconnects_total",
        "spool_events",
        "spool_bytes",
        "in_flight_requests",
        "build_info",
    ] {
        assert!(
            checked.contains(&format!("{PREFIX}{family}")),
            "no deploy file uses {PREFIX}{family}; checked {checked:?}"
        );
    }
}

/// The values of the example Secret, `KEY: "value"` lines under `stringData:`.
fn example_secret_values() -> Vec<(String, String)> {
    let text = read(&repo().join("deploy/kubernetes/example/config/secret.yaml"));
    let mut in_data = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("stringData:") {
            in_data = true;
            continue;
        }
        if in_data {
            let Some(entry) = line.strip_prefix("  ") else {
                break;
            };
            let (k, v) = entry.split_once(':').expect("KEY: value");
            out.push((k.trim().to_string(), v.trim().trim_matches('"').to_string()));
        }
    }
    out
}

#[test]
fn kubernetes_config_is_accepted_by_the_binary_with_the_example_secret() {
    let secrets = example_secret_values();
    assert!(secrets.len() >= 5, "{secrets:?}");
    let config = repo().join("deploy/kubernetes/example/config/webhook-bridge.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_webhook-bridge"))
        .args(["check-config", "--config"])
        .arg(&config)
        .env_clear()
        .envs(secrets.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("run check-config");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "check-config refused {}:\n{stdout}{}",
        config.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("endpoint wegocod-ma"), "{stdout}");
    for (key, value) in &secrets {
        // AMQP URLs are printed with the password redacted; other secrets not at all.
        let secret_part = if value.starts_with("amqp") {
            "example-password"
        } else {
            value.as_str()
        };
        assert!(!stdout.contains(secret_part), "check-config printed {key}");
    }
    // Without the Secret the same config is refused, naming the missing variable.
    let out = Command::new(env!("CARGO_BIN_EXE_webhook-bridge"))
        .args(["check-config", "--config"])
        .arg(&config)
        .env_clear()
        .output()
        .expect("run check-config");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("AMQP_URL_PRIMARY"));
}

#[test]
fn spool_near_full_alert_divides_by_the_exported_capacity() {
    // The threshold comes from the pod's own `spool_max_bytes`, not from a number copied out of
    // one config file; a byte constant in the rule would be wrong for every other spool size.
    let rules = read(&repo().join("deploy/monitoring/rules.yaml"));
    let expr = rules
        .lines()
        .skip_while(|l| !l.contains("alert: WebhookBridgeSpoolNearFull"))
        .find(|l| l.contains("webhook_bridge_spool_bytes"))
        .expect("the near-full alert's expression");
    assert!(
        expr.contains("webhook_bridge_spool_bytes / (webhook_bridge_spool_max_bytes > 0)"),
        "{expr}"
    );
    assert!(!expr.contains('*'), "no byte constant in the rule: {expr}");
}

// ---- the extractor itself --------------------------------------------------------------------

fn scrape_fixture() -> Exported {
    let mut e = Exported::default();
    e.add_scrape(
        "# TYPE webhook_bridge_amqp_connected gauge\nwebhook_bridge_amqp_connected 1\n\
         # TYPE webhook_bridge_requests_total counter\n\
         webhook_bridge_requests_total{endpoint=\"a,b\",provider=\"p\",outcome=\"accepted\"} 1\n\
         # TYPE webhook_bridge_request_duration_seconds histogram\n\
         webhook_bridge_request_duration_seconds_bucket{endpoint=\"e\",provider=\"p\",le=\"0.1\"} 1\n\
         webhook_bridge_request_duration_seconds_sum{endpoint=\"e\",provider=\"p\"} 0.01\n\
         webhook_bridge_request_duration_seconds_count{endpoint=\"e\",provider=\"p\"} 1\n",
    );
    e
}

fn problems_in(text: &str) -> Vec<String> {
    let exported = scrape_fixture();
    references(text)
        .iter()
        .filter_map(|(n, r)| exported.problem(n, r, false))
        .collect()
}

#[test]
fn extractor_finds_metric_names_and_selector_labels() {
    let refs = references(
        "expr: max by (pod) (webhook_bridge_amqp_connected) == 0\n\
         rate(webhook_bridge_requests_total{outcome=~\"a|b\\\\.c\", endpoint!=\"x}\"}[5m])\n\
         histogram_quantile(0.99, rate(webhook_bridge_request_duration_seconds_bucket{le=\"1\"}[5m]))\n\
         not ours: my_webhook_bridge_x, webhook-bridge_y, image: webhook-bridge\n",
    );
    let names: Vec<&str> = refs.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "webhook_bridge_amqp_connected",
            "webhook_bridge_request_duration_seconds_bucket",
            "webhook_bridge_requests_total",
        ]
    );
    let labels: Vec<&str> = refs["webhook_bridge_requests_total"]
        .labels
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(labels, ["endpoint", "outcome"]);
    assert!(refs["webhook_bridge_amqp_connected"].labels.is_empty());
}

#[test]
fn real_names_pass_and_misspelt_names_fail() {
    assert_eq!(
        problems_in(
            "webhook_bridge_amqp_connected == 0 and \
             rate(webhook_bridge_request_duration_seconds_bucket{le=\"1\", endpoint=\"e\"}[5m]) \
             / rate(webhook_bridge_request_duration_seconds_count[5m]) \
             webhook_bridge_requests_total{outcome=\"unauthorized\", namespace=\"n\"}"
        ),
        Vec::<String>::new()
    );
    // Misspelt metric.
    assert_eq!(problems_in("webhook_bridge_amqp_conected == 0").len(), 1);
    // A histogram suffix on a counter, and a suffix the histogram does not have.
    assert_eq!(
        problems_in("rate(webhook_bridge_requests_total_bucket[5m])").len(),
        1
    );
    assert_eq!(
        problems_in("webhook_bridge_request_duration_seconds_total").len(),
        1
    );
    // The family name of a histogram has no series of its own (prose may name it).
    assert_eq!(
        problems_in("rate(webhook_bridge_request_duration_seconds[5m])").len(),
        1
    );
    let family = references("webhook_bridge_request_duration_seconds");
    let exported = scrape_fixture();
    for (name, r) in &family {
        assert_eq!(exported.problem(name, r, true), None);
    }
    assert!(
        exported
            .problem(
                "webhook_bridge_request_duration",
                &Reference::default(),
                true
            )
            .is_some()
    );
    // Misspelt label in a selector; `le` belongs to _bucket only.
    assert_eq!(
        problems_in("webhook_bridge_requests_total{outcom=\"unauthorized\"}").len(),
        1
    );
    assert_eq!(
        problems_in("webhook_bridge_request_duration_seconds_count{le=\"1\"}").len(),
        1
    );
}
