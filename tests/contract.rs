//! The consumers' contract against the code and the broker: `docs/asyncapi.yaml` (one channel per
//! routing key, each pointing at a JSON Schema under `schemas/`), and the status vocabulary and
//! mapping tables of `docs/contract.md`.
//!
//! - every message the bridge publishes for every bundled sample (batch elements, unrecognized
//!   bodies and generic events included) is consumed from a real queue and validated against the
//!   schema of the channel its routing key matches, with its AMQP properties and headers; a
//!   routing key without a channel fails;
//! - the channels cover every routing key the providers can produce, and no other;
//! - the status enum of the code, of the schema and of the document agree, and every row of the
//!   mapping tables is what the code does.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use jsonschema::{Retrieve, Uri, Validator};
use lapin::options::ExchangeDeclareOptions;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use serde_json::Value;
use webhook_bridge::config::{Config, EndpointConfig};
use webhook_bridge::providers::{self, Status, samples};

const WAIT: Duration = Duration::from_secs(10);
/// Every schema's `$id` starts with this; the rest is its path under `schemas/`.
const SCHEMA_URI_PREFIX: &str = "https://webhook-bridge.example/schemas/";
const SCHEMA_VERSION: &str = "v1";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Resolves the schemas' `$id`s to the files under `schemas/`; nothing is fetched.
struct SchemaFiles;

impl Retrieve for SchemaFiles {
    fn retrieve(
        &self,
        uri: &Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let rel = uri
            .as_str()
            .strip_prefix(SCHEMA_URI_PREFIX)
            .ok_or_else(|| format!("{uri} is not one of the project's schemas"))?;
        let path = repo().join("schemas").join(rel);
        Ok(serde_json::from_str(&std::fs::read_to_string(&path)?)?)
    }
}

fn validator(schema: &Value) -> Validator {
    jsonschema::options()
        .with_retriever(SchemaFiles)
        .should_validate_formats(true)
        .build(schema)
        .unwrap_or_else(|e| panic!("schema does not compile: {e}\n{schema:#}"))
}

/// Every validation error of `instance`, one per line; empty when it is valid.
fn errors(v: &Validator, instance: &Value) -> String {
    v.iter_errors(instance)
        .map(|e| format!("  at '{}': {e}", e.instance_path()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One word of a channel address: literal, or a `{parameter}`.
#[derive(Debug)]
enum Word {
    Literal(String),
    Param,
}

/// A channel of the AsyncAPI document with everything needed to check a message on it.
struct Channel {
    id: String,
    address: String,
    words: Vec<Word>,
    schema_file: PathBuf,
    payload: Validator,
    headers: Validator,
    properties: Validator,
}

impl Channel {
    fn literals(&self) -> usize {
        self.words
            .iter()
            .filter(|w| matches!(w, Word::Literal(_)))
            .count()
    }

    fn is_exact(&self) -> bool {
        self.literals() == self.words.len()
    }

    /// A parameter is one word of the routing key; the last one takes all remaining words
    /// (a generic `{event}` may be `invoice.paid`).
    fn matches(&self, routing_key: &str) -> bool {
        let key: Vec<&str> = routing_key.split('.').collect();
        if key.len() < self.words.len() {
            return false;
        }
        for (i, word) in self.words.iter().enumerate() {
            let last = i == self.words.len() - 1;
            let part: &[&str] = if last { &key[i..] } else { &key[i..=i] };
            match word {
                Word::Literal(l) if !(part.len() == 1 && part[0] == l) => return false,
                Word::Param if part.iter().any(|p| p.is_empty()) => return false,
                _ => {}
            }
        }
        true
    }
}

struct Contract {
    doc: Value,
    channels: Vec<Channel>,
}

/// `#/a/b` inside the AsyncAPI document.
fn local_ref<'a>(doc: &'a Value, node: &'a Value) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let pointer = r
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("only local refs expected here, got {r}"));
            doc.pointer(pointer)
                .unwrap_or_else(|| panic!("{r} does not resolve in docs/asyncapi.yaml"))
        }
        None => node,
    }
}

impl Contract {
    fn load() -> Contract {
        let path = repo().join("docs/asyncapi.yaml");
        let text = std::fs::read_to_string(&path).expect("docs/asyncapi.yaml");
        let doc: Value = serde_norway::from_str(&text).expect("docs/asyncapi.yaml is YAML");
        assert_eq!(doc["asyncapi"], "3.0.0");
        let mut channels = Vec::new();
        for (id, ch) in doc["channels"].as_object().expect("channels") {
            let address = ch["address"].as_str().expect("address").to_string();
            let words = address
                .split('.')
                .map(|w| {
                    if w.starts_with('{') && w.ends_with('}') {
                        Word::Param
                    } else {
                        Word::Literal(w.to_string())
                    }
                })
                .collect();
            let messages = ch["messages"].as_object().expect("channel messages");
            assert_eq!(messages.len(), 1, "channel {id}: one message type");
            let message = local_ref(&doc, messages.values().next().unwrap());
            let schema_ref = message["payload"]["schema"]["$ref"]
                .as_str()
                .unwrap_or_else(|| panic!("channel {id}: message payload has no schema $ref"));
            let schema_file = repo().join("docs").join(schema_ref);
            let payload = validator(&read_json(&schema_file));
            let traits = message["traits"].as_array().expect("message traits");
            let part = |key: &str| {
                let found: Vec<&Value> = traits
                    .iter()
                    .map(|t| local_ref(&doc, t))
                    .filter_map(|t| t.get(key))
                    .collect();
                assert_eq!(found.len(), 1, "channel {id}: one `{key}` among the traits");
                validator(local_ref(&doc, found[0]))
            };
            channels.push(Channel {
                id: id.clone(),
                address,
                words,
                schema_file,
                payload,
                headers: part("headers"),
                properties: part("x-amqp-properties"),
            });
        }
        Contract { doc, channels }
    }

    /// The channel a routing key belongs to: the matching one with the most literal words.
    fn channel_for(&self, routing_key: &str) -> Result<&Channel, String> {
        let mut matching: Vec<&Channel> = self
            .channels
            .iter()
            .filter(|c| c.matches(routing_key))
            .collect();
        matching.sort_by_key(|c| std::cmp::Reverse(c.literals()));
        match matching.as_slice() {
            [] => Err(format!(
                "routing key {routing_key} has no channel (and so no schema) in docs/asyncapi.yaml"
            )),
            [a, b, ..] if a.literals() == b.literals() => Err(format!(
                "routing key {routing_key} matches both {} and {}",
                a.address, b.address
            )),
            [best, ..] => Ok(best),
        }
    }
}

/// The message's AMQP properties and headers as JSON, for the AsyncAPI document's schemas.
fn amqp_facts(m: &Received) -> (Value, Value) {
    let mut props = serde_json::Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            props.insert(k.into(), v);
        }
    };
    put("message_id", m.message_id.clone().map(Value::from));
    put("type", m.kind.clone().map(Value::from));
    put("timestamp", m.timestamp.map(Value::from));
    put("app_id", m.app_id.clone().map(Value::from));
    put("content_type", m.content_type.clone().map(Value::from));
    put("delivery_mode", m.delivery_mode.map(Value::from));
    let headers = m
        .headers
        .as_ref()
        .map(|t| {
            t.inner()
                .iter()
                .map(|(k, v)| (k.to_string(), amqp_value(v)))
                .collect::<serde_json::Map<_, _>>()
        })
        .unwrap_or_default();
    (Value::Object(props), Value::Object(headers))
}

fn amqp_value(v: &AMQPValue) -> Value {
    match v {
        AMQPValue::LongString(s) => Value::from(String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::ShortString(s) => Value::from(s.as_str()),
        AMQPValue::Boolean(b) => Value::from(*b),
        AMQPValue::LongInt(i) => Value::from(*i),
        AMQPValue::LongLongInt(i) => Value::from(*i),
        other => Value::from(format!("{other:?}")),
    }
}

const GITHUB_SECRET: &str = "test-github-hmac-secret";
/// base64("test-standard-webhooks-key-0001").
const SW_SECRET: &str = "whsec_dGVzdC1zdGFuZGFyZC13ZWJob29rcy1rZXktMDAwMQ==";

/// The standard endpoints, the README's two generic examples, and a generic endpoint that splits
/// a batch.
fn endpoints() -> String {
    format!(
        r#"{standard}
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

[[endpoint]]
name     = "scans"
provider = "generic"
path     = "/webhooks/scans"
secret   = "test-scan-token"
auth     = {{ kind = "bearer" }}
[endpoint.generic]
source            = "carrierx"
event_pointer     = "/kind"
split_pointer     = "/events"
entity_id_pointer = "/parcel"
id_pointer        = "/scan_id"

[[endpoint]]
name     = "mailship-advice"
provider = "mailship"
path     = "/webhooks/mailship-advice"
secret   = "test-mailship-advice-token"
event    = "stock_advice"
"#,
        standard = standard_endpoints()
    )
}

fn config() -> Config {
    Config::from_toml(&format!("[amqp]\nurls = [\"{AMQP_URL}\"]\n{}", endpoints()))
        .expect("test config")
}

/// One request of the contract run: endpoint, extra headers, body.
struct Request {
    endpoint: &'static str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn send(endpoint: &'static str, body: &[u8]) -> Request {
    Request {
        endpoint,
        headers: Vec::new(),
        body: body.to_vec(),
    }
}

/// Every bundled sample, each to an endpoint of its provider.
fn sample_requests() -> Vec<Request> {
    // The sample files and the bundled list are the same set.
    let mut on_disk = BTreeSet::new();
    for dir in std::fs::read_dir(repo().join("samples")).expect("samples/") {
        let dir = dir.unwrap().path();
        for file in std::fs::read_dir(&dir).unwrap() {
            let file = file.unwrap().path();
            on_disk.insert(format!(
                "{}/{}",
                dir.file_name().unwrap().to_string_lossy(),
                file.file_stem().unwrap().to_string_lossy()
            ));
        }
    }
    let bundled: BTreeSet<String> = samples::all()
        .map(|(provider, s)| format!("{provider}/{}", s.name))
        .collect();
    assert_eq!(on_disk, bundled, "samples/ and providers::samples::ALL");

    samples::all()
        .map(|(provider, s)| {
            // A provider's standard endpoint; the generic samples each need their own.
            let endpoint = match (fixtures::Fixture::of(provider), s.name) {
                (Some(fixture), _) => fixture.name,
                (None, "github_push") => "github-ci",
                (None, "invoice_paid") => "billing",
                (None, n) => panic!("no endpoint in this test for the sample {provider}/{n}"),
            };
            let mut r = send(endpoint, s.body);
            if s.name == "github_push" {
                r.headers.push(("X-GitHub-Event".into(), "push".into()));
            }
            r
        })
        .collect()
}

/// Bodies beyond the samples: unrecognized shapes for every provider, a batch with an element
/// that is not an object, odd statuses, a split generic batch, a generic body without an event.
fn other_requests() -> Vec<Request> {
    let unknown = br#"{"contract":"a shape no provider module knows"}"#;
    let mut out: Vec<Request> = fixtures::FIXTURES
        .iter()
        .map(|f| f.name)
        .chain(["github-ci", "billing"])
        .map(|e| send(e, unknown))
        .collect();
    out.push(send(
        "isendu-it",
        br#"{"order":[42,{"reference":"SHOP-2"}],"tracking":[{"trackingNumber":"T-1","steps":[{"status":"in giacenza","datetime":"2026-05-09 10:00:00","location":{"city":"Roma"}}]}]}"#,
    ));
    out.push(send(
        "isendu-it",
        br#"{"sentAt":"2026-05-09T10:00:00Z","store":{"id":7},"order":[{"uuid":"o-ctx","status":"NEW"}],"tracking":[{"uuid":"t-ctx","steps":[{"timestamp":"2026-05-09T09:00:00Z","status":"DELIVERED","location":"Roma"},{"timestamp":"2026-05-09T07:00:00Z","status":"IN_TRANSIT"}]}]}"#,
    ));
    out.push(send(
        "wegocod-ma",
        br#"{"event":"order.status_updated","order":{"reference":"ORD-9","new_status":"teleported"}}"#,
    ));
    out.push(send(
        "modexpress-main",
        br#"{"payload":{"Id":"77","ProcessingStatus":{"Id":"C"}}}"#,
    ));
    out.push(send(
        "mailship-advice",
        br#"{"id":"adv-1","newStatus":"finished","internalId":"SA-1"}"#,
    ));
    out.push(send(
        "scans",
        br#"{"kind":"Parcel Scanned","events":[{"parcel":"P1","scan_id":"s1"},{"parcel":"P2","scan_id":"s2","kind":"parcel.lost"},7]}"#,
    ));
    out
}

/// The statuses of the code, in declaration order. The match has no wildcard: a new variant
/// does not compile until it is listed here (and then in the schema and docs/contract.md).
fn code_statuses() -> Vec<Status> {
    let all = vec![
        Status::Created,
        Status::OnHold,
        Status::Processing,
        Status::Packed,
        Status::ReadyForCarrier,
        Status::InTransit,
        Status::OutForDelivery,
        Status::ReadyForPickup,
        Status::Delivered,
        Status::DeliveryFailed,
        Status::Returning,
        Status::Returned,
        Status::Restocked,
        Status::Cancelled,
        Status::Exception,
        Status::Unknown,
    ];
    for s in &all {
        match s {
            Status::Created
            | Status::OnHold
            | Status::Processing
            | Status::Packed
            | Status::ReadyForCarrier
            | Status::InTransit
            | Status::OutForDelivery
            | Status::ReadyForPickup
            | Status::Delivered
            | Status::DeliveryFailed
            | Status::Returning
            | Status::Returned
            | Status::Restocked
            | Status::Cancelled
            | Status::Exception
            | Status::Unknown => {}
        }
    }
    all
}

fn serialized(s: Status) -> String {
    match serde_json::to_value(s).unwrap() {
        Value::String(text) => text,
        other => panic!("Status serializes as {other}"),
    }
}

/// The rows of the first table after `heading` in a Markdown text: the cells of each row.
/// `heading` may also be a table's header row: then that table.
fn table_after(text: &str, heading: &str) -> Vec<Vec<String>> {
    let start = text
        .lines()
        .position(|l| l.trim() == heading.trim())
        .unwrap_or_else(|| panic!("docs/contract.md has no heading `{heading}`"));
    let at_header = heading.starts_with('|');
    text.lines()
        .skip(if at_header { start } else { start + 1 })
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2) // header and separator
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

/// `` `x` `` → `x`; `None` for a cell that is not one code span.
fn code(cell: &str) -> Option<&str> {
    cell.strip_prefix('`')?.strip_suffix('`')
}

#[test]
fn status_vocabulary_and_mapping_tables_match_the_code() {
    let vocabulary: Vec<String> = code_statuses().into_iter().map(serialized).collect();
    for s in code_statuses() {
        assert_eq!(serialized(s), s.as_str(), "Status::as_str and serde agree");
    }
    let schema = read_json(&repo().join("schemas/v1/status.json"));
    let schema_enum: Vec<String> = schema["enum"]
        .as_array()
        .expect("status.json enum")
        .iter()
        .map(|v| v.as_str().expect("string").to_string())
        .collect();
    assert_eq!(
        schema_enum, vocabulary,
        "schemas/v1/status.json enum vs Status"
    );
    let data = read_json(&repo().join("schemas/v1/data.json"));
    assert_eq!(
        data["properties"]["status"]["oneOf"][0]["$ref"], "status.json",
        "data.status is the vocabulary"
    );

    let doc = std::fs::read_to_string(repo().join("docs/contract.md")).expect("docs/contract.md");
    let documented: Vec<String> = table_after(&doc, "### 5.2 Canonical statuses")
        .iter()
        .map(|row| code(&row[0]).expect("status in backticks").to_string())
        .collect();
    assert_eq!(
        documented, vocabulary,
        "docs/contract.md vocabulary vs Status"
    );

    // Each provider names its tables (`Provider::status_tables`). Statuses a provider does not
    // map (Mailship stock advice, generic events: `status: null`, checked by the schema of their
    // channel in the test below) have no table.
    let tables = providers::ALL.iter().flat_map(|p| p.status_tables);
    let mut checked = 0;
    let mut headings = 0;
    for &(heading, map) in tables {
        headings += 1;
        let rows = table_after(&doc, heading);
        assert!(rows.len() > 1, "{heading}: empty table");
        let mut seen = BTreeSet::new();
        for row in rows {
            let want = code(&row[1]).unwrap_or_else(|| panic!("{heading}: {row:?}"));
            assert!(
                vocabulary.iter().any(|c| c == want),
                "{heading}: {want} is no status"
            );
            match code(&row[0]) {
                Some(value) => {
                    assert!(seen.insert(value.to_string()), "{heading}: {value} twice");
                    assert_eq!(
                        serialized(map(value)),
                        want,
                        "{heading}: the code maps `{value}` to {:?}, docs/contract.md says {want}",
                        map(value)
                    );
                    checked += 1;
                }
                None => {
                    assert_eq!(row[0], "anything else", "{heading}: {row:?}");
                    assert_eq!(serialized(map("contract-test-unmapped")), want, "{heading}");
                }
            }
        }
    }
    // Every `#### ` heading of §5.2 with a table under it is some provider's.
    let section = doc
        .split("### 5.2 ")
        .nth(1)
        .and_then(|rest| rest.split("\n### ").next())
        .expect("§5.2");
    let documented_tables = section
        .split("\n#### ")
        .skip(1)
        .filter(|sub| sub.lines().any(|l| l.trim_start().starts_with('|')))
        .count();
    assert_eq!(
        documented_tables, headings,
        "docs/contract.md §5.2 has mapping tables no provider's status_tables names"
    );
    println!(
        "status vocabulary: {} values; mapping rows checked against the code: {checked}",
        vocabulary.len()
    );
}

#[test]
fn asyncapi_channels_cover_every_routing_key_and_no_other() {
    let contract = Contract::load();
    let cfg = config();
    let mut produced = BTreeSet::new();
    for ep in &cfg.endpoints {
        for key in ep.routing_keys() {
            // A generic endpoint's `<event>` is any event name made a routing-key part.
            let key = key.replace("<event>", "invoice.paid");
            let channel = contract
                .channel_for(&key)
                .unwrap_or_else(|e| panic!("endpoint {}: {e}", ep.name));
            let expected = if ep.provider.name == "generic" {
                if key.ends_with(".unrecognized") {
                    "{provider}.unrecognized"
                } else {
                    "{source}.{event}"
                }
            } else if key.ends_with(".unrecognized") {
                "{provider}.unrecognized"
            } else {
                key.as_str()
            };
            assert_eq!(channel.address, expected, "endpoint {}: {key}", ep.name);
            produced.insert(key);
        }
    }
    // Every provider the bridge knows is in the config, so every exact channel must be produced.
    for provider in providers::ALL {
        assert!(
            cfg.endpoints.iter().any(|e| e.provider == *provider),
            "{} has no endpoint in this test",
            provider.name
        );
    }
    for c in contract.channels.iter().filter(|c| c.is_exact()) {
        assert!(
            produced.contains(&c.address),
            "channel {} ({}) is a routing key no provider produces",
            c.id,
            c.address
        );
    }

    // Bindings: a durable topic exchange; persistent, mandatory publishes; one send per channel.
    let doc = &contract.doc;
    let mut operated = BTreeSet::new();
    for (id, op) in doc["operations"].as_object().expect("operations") {
        assert_eq!(op["action"], "send", "operation {id}");
        let amqp = &local_ref(doc, &op["bindings"])["amqp"];
        assert_eq!(amqp["deliveryMode"], 2, "operation {id}");
        assert_eq!(amqp["mandatory"], true, "operation {id}");
        let channel = op["channel"]["$ref"].as_str().expect("operation channel");
        assert!(operated.insert(channel.trim_start_matches("#/channels/").to_string()));
    }
    for c in &contract.channels {
        assert!(
            operated.contains(&c.id),
            "channel {} has no operation",
            c.id
        );
        let amqp = &local_ref(doc, &doc["channels"][&c.id]["bindings"])["amqp"];
        assert_eq!(amqp["is"], "routingKey");
        assert_eq!(amqp["exchange"]["type"], "topic");
        assert_eq!(amqp["exchange"]["durable"], true);
    }

    // docs/contract.md lists the same channels with the same schemas.
    let doc_md = std::fs::read_to_string(repo().join("docs/contract.md")).expect("contract.md");
    let header = doc_md
        .lines()
        .find(|l| l.starts_with("| routing key |"))
        .expect("docs/contract.md: the routing key table");
    let listed: BTreeMap<String, PathBuf> = table_after(&doc_md, header)
        .into_iter()
        .filter_map(|row| {
            let key = code(&row[0])?.to_string();
            let link = row[1].split("](").nth(1)?.split(')').next()?;
            Some((key, repo().join("docs").join(link)))
        })
        .collect();
    let channels: BTreeMap<String, PathBuf> = contract
        .channels
        .iter()
        .map(|c| (c.address.clone(), c.schema_file.clone()))
        .collect();
    assert_eq!(
        listed.keys().collect::<Vec<_>>(),
        channels.keys().collect::<Vec<_>>(),
        "docs/contract.md routing keys vs docs/asyncapi.yaml channels"
    );
    for (key, file) in &listed {
        assert_eq!(
            file.canonicalize().ok(),
            channels[key].canonicalize().ok(),
            "docs/contract.md: schema of {key}"
        );
    }

    // Schemas: every file is versioned, identified by its path, and used by a channel.
    let used: BTreeSet<PathBuf> = contract
        .channels
        .iter()
        .map(|c| c.schema_file.canonicalize().expect("schema file"))
        .collect();
    let events_dir = repo().join("schemas").join(SCHEMA_VERSION).join("events");
    let mut files = Vec::new();
    for dir in [
        events_dir.parent().unwrap().to_path_buf(),
        events_dir.clone(),
    ] {
        for f in std::fs::read_dir(&dir).unwrap() {
            let f = f.unwrap().path();
            if f.extension().is_some_and(|e| e == "json") {
                files.push(f);
            }
        }
    }
    for f in &files {
        let schema = read_json(f);
        let rel = f.strip_prefix(repo().join("schemas")).unwrap();
        assert_eq!(
            schema["$id"].as_str(),
            Some(format!("{SCHEMA_URI_PREFIX}{}", rel.display()).as_str()),
            "{}",
            f.display()
        );
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema",
            "{}",
            f.display()
        );
        validator(&schema);
        if f.starts_with(&events_dir) {
            assert!(
                used.contains(&f.canonicalize().unwrap()),
                "{} is no channel's schema",
                f.display()
            );
        }
    }
    println!(
        "{} channels cover {} routing keys of {} endpoints; {} schema files",
        contract.channels.len(),
        produced.len(),
        cfg.endpoints.len(),
        files.len()
    );
}

#[tokio::test]
async fn every_published_message_validates_against_its_channel_schema() {
    let contract = Contract::load();
    broker_available().await;
    let bridge = Bridge::start_with(BridgeOptions {
        endpoints: endpoints(),
        ..BridgeOptions::default()
    })
    .await;
    let mut queue = bridge.consumer("#").await;
    let cfg = Config::from_toml(&std::fs::read_to_string(&bridge.config_path).unwrap())
        .expect("the bridge's config");
    let endpoint = |name: &str| -> &EndpointConfig {
        cfg.endpoints
            .iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("endpoint {name}"))
    };

    let mut expected = 0;
    for req in sample_requests().into_iter().chain(other_requests()) {
        let ep = endpoint(req.endpoint);
        let secret = ep.secrets[0].expose();
        let (path, mut headers) = signed_with(&ep.auth, &ep.path, secret, &req.body);
        headers.extend(req.headers.iter().cloned());
        let resp = bridge.post(&path, &headers, &req.body).await;
        let status = resp.status();
        let answer: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 200, "{}: {answer}", req.endpoint);
        if answer.get("response").is_some() {
            continue; // the isendu URL handshake publishes nothing
        }
        expected += answer["accepted"]
            .as_u64()
            .unwrap_or_else(|| panic!("{}: {answer}", req.endpoint));
    }

    let received = queue.take(expected as usize, WAIT).await;
    queue.expect_none(Duration::from_millis(500)).await;
    let mut per_channel: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for m in &received {
        let channel = match contract.channel_for(&m.routing_key) {
            Ok(c) => c,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        *per_channel.entry(channel.address.clone()).or_default() += 1;
        let (props, headers) = amqp_facts(m);
        for (what, v, instance) in [
            ("body", &channel.payload, &m.body),
            ("AMQP properties", &channel.properties, &props),
            ("AMQP headers", &channel.headers, &headers),
        ] {
            let e = errors(v, instance);
            if !e.is_empty() {
                failures.push(format!(
                    "{} ({}) {what} against {}:\n{e}\n{instance:#}",
                    m.routing_key,
                    channel.address,
                    channel.schema_file.display()
                ));
            }
        }
        // What a schema cannot say: the facts repeated in properties, headers and body agree.
        let id = m.body["id"].as_str();
        let same = [
            (m.message_id.as_deref() == id, "message_id = id"),
            (
                header_str(m, "cloudEvents_id").as_deref() == id,
                "cloudEvents_id = id",
            ),
            (
                m.kind.as_deref() == Some(m.routing_key.as_str()),
                "type = routing key",
            ),
            (
                m.body["type"] == m.routing_key.as_str(),
                "CloudEvent type = routing key",
            ),
            (
                header_str(m, "cloudEvents_type").as_deref() == Some(m.routing_key.as_str()),
                "cloudEvents_type = routing key",
            ),
            (
                header_str(m, "cloudEvents_source").as_deref() == m.body["source"].as_str(),
                "cloudEvents_source = source",
            ),
            (
                m.routing_key.split('.').next() == m.body["data"]["provider"].as_str(),
                "data.provider = first word of the routing key",
            ),
            (
                m.body.get("subject")
                    == m.body["data"]["entity_id"]
                        .as_str()
                        .map(Value::from)
                        .as_ref(),
                "subject = data.entity_id",
            ),
        ];
        for (ok, what) in same {
            if !ok {
                failures.push(format!("{}: {what}\n{:#}", m.routing_key, m.body));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    for c in &contract.channels {
        assert!(
            per_channel.contains_key(&c.address),
            "no message exercised channel {} ({})",
            c.id,
            c.address
        );
    }

    // The exchange is what the bindings say: a redeclare with other properties would be refused.
    let amqp = &local_ref(
        &contract.doc,
        &contract.doc["components"]["channelBindings"]["exchange"],
    )["amqp"]["exchange"];
    assert_eq!(amqp["type"], "topic");
    let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("alternate-exchange"),
        AMQPValue::LongString(format!("{}.unrouted", bridge.exchange).into()),
    );
    ch.exchange_declare(
        ShortString::from(bridge.exchange.as_str()),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: amqp["durable"] == true,
            auto_delete: amqp["autoDelete"] == true,
            ..ExchangeDeclareOptions::default()
        },
        args,
    )
    .await
    .expect("the bridge's exchange is a durable topic exchange as docs/asyncapi.yaml says");
    let _ = conn.close(200, ShortString::from("bye")).await;

    println!(
        "{} messages validated: {}",
        received.len(),
        per_channel
            .iter()
            .map(|(k, n)| format!("{k} ×{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// `schemas/v1` is published: consumers validate against it, so it only changes compatibly
/// (schemas/README.md, "Versions"). Its files are pinned by `schemas/v1.sha256`; a change to one
/// fails here until the pin is updated, on purpose, by someone who checked that the change is
/// compatible — or who put it in `schemas/v2` instead.
#[test]
fn published_schema_version_changes_only_on_purpose() {
    fn files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read schemas") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                files(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let root = repo().join("schemas");
    let mut found = Vec::new();
    files(&root.join("v1"), &mut found);
    let actual: BTreeMap<String, String> = found
        .iter()
        .map(|path| {
            let rel = path.strip_prefix(&root).expect("under schemas/");
            let bytes = std::fs::read(path).expect("read schema");
            (
                rel.to_string_lossy().into_owned(),
                webhook_bridge::providers::hash_hex(&bytes),
            )
        })
        .collect();
    let pinned: BTreeMap<String, String> = std::fs::read_to_string(root.join("v1.sha256"))
        .expect("schemas/v1.sha256")
        .lines()
        .filter_map(|l| {
            let (hash, path) = l.split_once("  ")?;
            Some((path.to_string(), hash.to_string()))
        })
        .collect();
    assert_eq!(
        actual, pinned,
        "schemas/v1 differs from schemas/v1.sha256: a published version changes only \
         compatibly (schemas/README.md); a breaking change goes into schemas/v2. Once checked, \
         update the pin: cd schemas && find v1 -type f -name '*.json' | sort | xargs sha256sum > v1.sha256"
    );
}
