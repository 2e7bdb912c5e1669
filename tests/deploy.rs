//! The deployment files describe the real binary: every `webhook_bridge_*` metric named in
//! deploy/ (alert rules, their unit tests, the dashboard, the manifests), docs/deploy.md and
//! docs/runbooks.md is
//! one the binary exports, every label those queries match on exists on that metric, the
//! Kubernetes config is one the binary accepts, and the "spool near full" alert agrees with the
//! configured spool size. scripts/check-deploy validates the files' syntax; this checks meaning.

use crate::common;

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
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is not set") && secrets.iter().any(|(key, _)| stderr.contains(key)),
        "{stderr}"
    );
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

// ---- the rabbitmq-cluster variant --------------------------------------------------------------

const CLUSTER_VARIANT: &str = "deploy/kubernetes/variants/rabbitmq-cluster";

/// Every YAML document of a file, as JSON values.
fn yaml_docs(path: &Path) -> Vec<serde_json::Value> {
    use serde::Deserialize;
    serde_norway::Deserializer::from_str(&read(path))
        .map(|doc| {
            serde_json::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()))
        })
        .filter(|d| !d.is_null())
        .collect()
}

/// The parts of the variant that wire the bridge to the cluster, read from its files (the
/// objects, the bridge container's env patch and the credentials Secrets).
#[derive(Clone, Debug)]
struct ClusterVariant {
    objects: Vec<serde_json::Value>,
    bridge_env: Vec<serde_json::Value>,
    secrets: Vec<serde_json::Value>,
}

impl ClusterVariant {
    fn load() -> Self {
        let dir = repo().join(CLUSTER_VARIANT);
        let mut objects = yaml_docs(&dir.join("broker/rabbitmqcluster.yaml"));
        objects.extend(yaml_docs(&dir.join("app/topology.yaml")));
        let patch = yaml_docs(&dir.join("app/amqp-credentials.yaml"));
        let bridge_env = patch[0]["spec"]["template"]["spec"]["initContainers"]
            .as_array()
            .expect("the patch has initContainers")
            .iter()
            .find(|c| c["name"] == "webhook-bridge")
            .expect("the patch sets the bridge's env")["env"]
            .as_array()
            .expect("env")
            .clone();
        let secrets = yaml_docs(&dir.join("app/credentials.yaml"));
        ClusterVariant {
            objects,
            bridge_env,
            secrets,
        }
    }

    fn of_kind(&self, kind: &str) -> Vec<&serde_json::Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    /// The bridge's env as the kubelet gives it: secretKeyRef values from the Secrets, then
    /// `$(NAME)` expanded with the variables defined before.
    fn env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = Vec::new();
        for e in &self.bridge_env {
            let name = e["name"].as_str().expect("env name").to_string();
            let value = if let Some(v) = e["value"].as_str() {
                let mut v = v.to_string();
                for (k, val) in &env {
                    v = v.replace(&format!("$({k})"), val);
                }
                v
            } else {
                let r = &e["valueFrom"]["secretKeyRef"];
                let secret = self
                    .secrets
                    .iter()
                    .find(|s| s["metadata"]["name"] == r["name"])
                    .unwrap_or_else(|| panic!("{name}: no Secret {}", r["name"]));
                secret["stringData"][r["key"].as_str().expect("key")]
                    .as_str()
                    .unwrap_or_else(|| panic!("{name}: no key {} in its Secret", r["key"]))
                    .to_string()
            };
            env.push((name, value));
        }
        env
    }
}

/// What `check-config` reports of a config: the broker URLs (password redacted), the exchange,
/// its alternate exchange, and every routing key the endpoints can produce.
#[derive(Debug, Default)]
struct Loaded {
    urls: Vec<String>,
    exchange: String,
    alternate: String,
    routes: Vec<String>,
}

fn check_config(config: &Path, env: &[(String, String)]) -> Result<Loaded, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_webhook-bridge"))
        .args(["check-config", "--config"])
        .arg(config)
        .env_clear()
        .envs(example_secret_values())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run check-config");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "check-config refused it: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut loaded = Loaded::default();
    for line in stdout.lines() {
        if let Some(url) = line.strip_prefix("amqp ") {
            loaded.urls.push(url.to_string());
        } else if let Some(rest) = line.strip_prefix("exchange ") {
            // "exchange X  (alternate Y → queue Z)"
            let mut words = rest.split_whitespace();
            loaded.exchange = words.next().unwrap_or_default().to_string();
            loaded.alternate = words.nth(1).unwrap_or_default().to_string();
        } else if let Some(routes) = line.trim_start().strip_prefix("routes: ") {
            loaded.routes.extend(routes.split(", ").map(str::to_string));
        }
    }
    Ok(loaded)
}

/// Does the topic binding pattern match the routing key (`*` one word, `#` zero or more)?
fn topic_matches(pattern: &[&str], key: &[&str]) -> bool {
    match (pattern.first(), key.first()) {
        (None, None) => true,
        (Some(&"#"), _) => {
            topic_matches(&pattern[1..], key)
                || (!key.is_empty() && topic_matches(pattern, &key[1..]))
        }
        (Some(&p), Some(&k)) if p == "*" || p == k => topic_matches(&pattern[1..], &key[1..]),
        _ => false,
    }
}

/// Why the variant would not work as the bridge loads it: the nodes its URLs reach against the
/// cluster's replicas, the queue's type, the bindings against the exchange and routing keys the
/// bridge really publishes, the Exchange object against the bridge's own declaration.
fn cluster_variant_problems(v: &ClusterVariant) -> Vec<String> {
    let mut problems = Vec::new();
    let clusters = v.of_kind("RabbitmqCluster");
    assert_eq!(clusters.len(), 1, "one RabbitmqCluster");
    let cluster = clusters[0];
    let name = cluster["metadata"]["name"].as_str().expect("cluster name");
    let ns = cluster["metadata"]["namespace"]
        .as_str()
        .unwrap_or("messaging");
    let replicas = cluster["spec"]["replicas"].as_u64().unwrap_or(1);
    if replicas < 3 || replicas.is_multiple_of(2) {
        problems.push(format!("replicas {replicas}: must be odd and at least 3"));
    }
    let config = repo().join(CLUSTER_VARIANT).join("app/webhook-bridge.toml");
    let env = v.env();
    let loaded = match check_config(&config, &env) {
        Ok(l) => l,
        Err(e) => return vec![e],
    };
    // Every node once, by the per-pod name the operator's headless Service gives it.
    let user = &env
        .iter()
        .find(|(k, _)| k == "RABBITMQ_USERNAME")
        .expect("user")
        .1;
    let mut hosts = Vec::new();
    for url in &loaded.urls {
        let Some(rest) = url.strip_prefix(&format!("amqp://{user}:***@")) else {
            problems.push(format!(
                "{url}: not amqp:// with the bridge user's credentials"
            ));
            continue;
        };
        let authority = rest.split('/').next().unwrap_or_default();
        match authority.rsplit_once(':') {
            Some((host, "5672")) => hosts.push(host.to_string()),
            _ => problems.push(format!("{url}: port must be the number 5672")),
        }
    }
    for i in 0..replicas {
        let node = format!("{name}-server-{i}.{name}-nodes.{ns}.svc");
        let n = hosts.iter().filter(|h| **h == node).count();
        if n != 1 {
            problems.push(format!("node {node} is in the bridge's URLs {n} times"));
        }
    }
    if hosts.len() as u64 != replicas {
        problems.push(format!(
            "{} URLs for {replicas} nodes: {hosts:?}",
            hosts.len()
        ));
    }
    // The worker's queue: quorum.
    let queues: Vec<&str> = v
        .of_kind("Queue")
        .iter()
        .map(|q| {
            if q["spec"]["type"] != "quorum" || q["spec"]["durable"] != true {
                problems.push(format!(
                    "Queue {}: must be a durable quorum queue",
                    q["spec"]["name"]
                ));
            }
            q["spec"]["name"].as_str().unwrap_or_default()
        })
        .collect();
    // Bindings: from the exchange the bridge publishes to, with patterns it publishes.
    let bindings = v.of_kind("Binding");
    if bindings.is_empty() {
        problems.push("no Binding".into());
    }
    for b in bindings {
        let spec = &b["spec"];
        if spec["source"] != loaded.exchange.as_str() {
            problems.push(format!(
                "Binding {}: source {} is not the bridge's exchange {}",
                b["metadata"]["name"], spec["source"], loaded.exchange
            ));
        }
        if !queues.contains(&spec["destination"].as_str().unwrap_or_default()) {
            problems.push(format!(
                "Binding {}: destination is no Queue here",
                b["metadata"]["name"]
            ));
        }
        let pattern: Vec<&str> = spec["routingKey"]
            .as_str()
            .unwrap_or_default()
            .split('.')
            .collect();
        if !loaded
            .routes
            .iter()
            .any(|r| topic_matches(&pattern, &r.split('.').collect::<Vec<_>>()))
        {
            problems.push(format!(
                "Binding {}: routing key {} matches nothing the bridge publishes ({:?})",
                b["metadata"]["name"], spec["routingKey"], loaded.routes
            ));
        }
    }
    // The Exchange object declares what the bridge declares, or one of the two is refused.
    for x in v.of_kind("Exchange") {
        let spec = &x["spec"];
        if spec["name"] == loaded.exchange.as_str()
            && (spec["type"] != "topic"
                || spec["durable"] != true
                || spec["autoDelete"] == true
                || spec["arguments"] != serde_json::json!({"alternate-exchange": loaded.alternate}))
        {
            problems.push(format!(
                "Exchange {}: {spec} is not what the bridge declares (topic, durable, alternate \
                 exchange {})",
                x["metadata"]["name"], loaded.alternate
            ));
        }
    }
    problems
}

#[test]
fn rabbitmq_cluster_variant_reaches_every_node_and_binds_a_quorum_queue_to_what_the_bridge_publishes()
 {
    let variant = ClusterVariant::load();
    assert_eq!(cluster_variant_problems(&variant), Vec::<String>::new());

    // The same checks on broken copies: each fault is named.
    let broken = |f: &dyn Fn(&mut ClusterVariant), needle: &str| {
        let mut v = variant.clone();
        f(&mut v);
        let problems = cluster_variant_problems(&v);
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "expected a problem containing {needle:?}, got {problems:?}"
        );
    };
    let set = |v: &mut ClusterVariant, kind: &str, pointer: &str, value: serde_json::Value| {
        for o in v.objects.iter_mut().filter(|o| o["kind"] == kind) {
            *o.pointer_mut(pointer).expect(pointer) = value.clone();
        }
    };
    broken(
        &|v| set(v, "RabbitmqCluster", "/spec/replicas", 2.into()),
        "replicas 2",
    );
    broken(
        &|v| set(v, "RabbitmqCluster", "/spec/replicas", 5.into()),
        "rabbitmq-server-4",
    );
    broken(
        &|v| set(v, "Queue", "/spec/type", "classic".into()),
        "durable quorum queue",
    );
    broken(
        &|v| set(v, "Binding", "/spec/source", "events".into()),
        "source \"events\"",
    );
    broken(
        &|v| {
            set(
                v,
                "Binding",
                "/spec/routingKey",
                "*.parcel.status_changed".into(),
            )
        },
        "matches nothing the bridge publishes",
    );
    broken(
        &|v| set(v, "Exchange", "/spec/arguments", serde_json::json!({})),
        "is not what the bridge declares",
    );
    // Node 2's URL pointing at node 0: node 0 twice, node 2 never.
    broken(
        &|v| {
            let e = v
                .bridge_env
                .iter_mut()
                .find(|e| e["name"] == "AMQP_URL_NODE_2")
                .unwrap();
            let url = e["value"].as_str().unwrap().replace("server-2", "server-0");
            e["value"] = url.into();
        },
        "rabbitmq-server-2.rabbitmq-nodes.messaging.svc is in the bridge's URLs 0 times",
    );
    broken(
        &|v| {
            let e = v
                .bridge_env
                .iter_mut()
                .find(|e| e["name"] == "AMQP_URL_NODE_1")
                .unwrap();
            let url = e["value"].as_str().unwrap().replace(":5672/", ":amqp/");
            e["value"] = url.into();
        },
        "port must be the number 5672",
    );
}

#[test]
fn topic_patterns_match_as_rabbitmq_matches_them() {
    let m = |p: &str, k: &str| {
        topic_matches(
            &p.split('.').collect::<Vec<_>>(),
            &k.split('.').collect::<Vec<_>>(),
        )
    };
    assert!(m("*.order.status_changed", "wegocod.order.status_changed"));
    assert!(!m("*.order.status_changed", "isendu.order.updated"));
    assert!(m("isendu.#", "isendu.order.updated"));
    assert!(m("#", "isendu.order.updated"));
    assert!(m("isendu.order.#", "isendu.order"));
    assert!(!m("*.order", "isendu.order.updated"));
    assert!(!m("isendu.*", "isendu"));
}
