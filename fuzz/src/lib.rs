//! Shared by the fuzz targets: one configuration with the standard endpoint of every provider
//! (`fixtures/endpoints.rs`) and more variants of some,
//! a way to cut fuzz input into headers and a body, and the invariants every parse must keep.

use std::sync::OnceLock;

use http::{HeaderMap, HeaderName, HeaderValue};
use webhook_bridge::config::{Config, EndpointConfig};
use webhook_bridge::envelope;
use webhook_bridge::providers::{self, Inbound, ParseError, Parsed};

pub mod targets;

#[cfg(test)]
mod smoke;

/// The standard endpoints, one per provider (shared with the tests and the benchmark).
#[allow(dead_code)]
mod fixtures {
    include!("../../fixtures/endpoints.rs");
}

const BROKER: &str = r#"
[amqp]
urls = ["amqp://guest:guest@127.0.0.1:5672/%2f"]
"#;

/// Variants of some providers beyond their standard endpoint.
const VARIANTS: &str = r#"
[[endpoint]]
name = "isendu-other-key"
provider = "isendu"
path = "/i2"
secret = "fuzz-token"
key_id = "fuzz-other-key"
api_secret = "fuzz-api-secret"

[[endpoint]]
name = "isendu-nosecret"
provider = "isendu"
path = "/i3"
secret = "fuzz-token"

[[endpoint]]
name = "mailship"
provider = "mailship"
path = "/s"
secret = "fuzz-token"

[[endpoint]]
name = "mailship-expedition_status"
provider = "mailship"
path = "/s1"
secret = "fuzz-token"
event = "expedition_status"

[[endpoint]]
name = "mailship-expedition_booked"
provider = "mailship"
path = "/s2"
secret = "fuzz-token"
event = "expedition_booked"

[[endpoint]]
name = "mailship-product_stock"
provider = "mailship"
path = "/s3"
secret = "fuzz-token"
event = "product_stock"

[[endpoint]]
name = "mailship-product_change"
provider = "mailship"
path = "/s4"
secret = "fuzz-token"
event = "product_change"

[[endpoint]]
name = "mailship-stock_advice"
provider = "mailship"
path = "/s5"
secret = "fuzz-token"
event = "stock_advice"

[[endpoint]]
name = "generic-pointer"
provider = "generic"
path = "/g1"
secret = "fuzz-secret"
auth = { kind = "bearer" }
[endpoint.generic]
source = "acme"
event_pointer = "/type"
entity_id_pointer = "/data/id"
id_pointer = "/id"

[[endpoint]]
name = "generic-header"
provider = "generic"
path = "/g2"
secret = "fuzz-secret"
auth = { kind = "bearer" }
[endpoint.generic]
event_header = "x-event"
entity_id_pointer = "/a/0/b~1c"

[[endpoint]]
name = "generic-split"
provider = "generic"
path = "/g3"
secret = "fuzz-secret"
auth = { kind = "bearer" }
[endpoint.generic]
source = "carrier"
event_pointer = "/kind"
event_header = "x-event"
split_pointer = "/events"
id_pointer = "/id"
entity_id_pointer = "/ref"

[[endpoint]]
name = "generic-standard-locked"
provider = "generic"
path = "/g5"
secret = ["whsec_ZnV6ei1zZWNyZXQtb25l", "whsec_c2Vjb25kLWZ1enotc2VjcmV0"]
allow_ips = ["203.0.113.0/24"]
trusted_proxies = ["127.0.0.0/8"]
auth = { kind = "standard_webhooks", tolerance = "5m" }
[endpoint.generic]
event_pointer = "/type"
split_pointer = "/data"

[[endpoint]]
name = "generic-split-deep"
provider = "generic"
path = "/g4"
secret = "fuzz-secret"
auth = { kind = "bearer" }
[endpoint.generic]
event_pointer = "/0/t"
split_pointer = "/0/items"
"#;

/// The fuzzing configuration, built once.
pub fn config() -> &'static Config {
    static CONFIG_CELL: OnceLock<Config> = OnceLock::new();
    CONFIG_CELL.get_or_init(|| {
        let text = format!("{BROKER}{}{VARIANTS}", fixtures::standard_endpoints_toml());
        Config::from_toml(&text).expect("fuzz config is valid")
    })
}

/// Endpoints whose name starts with `prefix`.
pub fn endpoints(prefix: &str) -> Vec<&'static EndpointConfig> {
    config()
        .endpoints
        .iter()
        .filter(|e| e.name.starts_with(prefix))
        .collect()
}

/// Take one line off `data` per header name (a value that is not a valid header is skipped);
/// the rest is the body.
pub fn split_headers<'d>(data: &'d [u8], names: &[&'static str]) -> (HeaderMap, &'d [u8]) {
    let mut headers = HeaderMap::new();
    let mut rest = data;
    for name in names {
        let (line, tail) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        if let Ok(v) = HeaderValue::from_bytes(line) {
            headers.insert(HeaderName::from_static(name), v);
        }
        rest = tail;
    }
    (headers, rest)
}

/// Parse `body` for `endpoint` and check what came out: it never panics (the fuzzer's main
/// finding), valid JSON is never refused as not-JSON, a non-batch body is never dropped, batch
/// indexes are consistent, and every event encodes into a JSON envelope with a routing key a
/// topic exchange accepts.
pub fn check(endpoint: &EndpointConfig, headers: &HeaderMap, body: &[u8]) {
    let inbound = Inbound {
        options: &endpoint.options,
        headers,
        body,
    };
    // `Value`, not `IgnoredAny`: the latter skips strings without checking they are UTF-8.
    let is_json = serde_json::from_slice::<serde_json::Value>(body).is_ok();
    match endpoint.provider.parse(&inbound) {
        Ok(Parsed::Events(events)) => {
            assert!(is_json, "events from a body that is not JSON");
            if !(endpoint.provider.batches)(&endpoint.options) {
                assert_eq!(events.len(), 1, "a single-event body must give one event");
            }
            for e in &events {
                if let Some(b) = e.batch {
                    assert_eq!(b.size, events.len());
                    assert!(b.index < b.size);
                }
                let msg = envelope::encode(endpoint, e, chrono::Utc::now()).expect("encodes");
                let key = &msg.routing_key;
                assert!(key.len() <= 255, "routing key too long: {key}");
                assert!(
                    !key.contains(['*', '#']) && !key.chars().any(char::is_whitespace),
                    "routing key {key:?}"
                );
                let v: serde_json::Value =
                    serde_json::from_slice(&msg.body).expect("envelope is JSON");
                assert_eq!(v["type"].as_str(), Some(key.as_str()));
                serde_json::from_str::<serde::de::IgnoredAny>(e.payload.get())
                    .expect("payload is JSON");
            }
        }
        Ok(Parsed::Reply(reply)) => {
            assert_reply(endpoint, &reply);
        }
        Err(ParseError::NotJson(_)) => assert!(!is_json, "valid JSON refused as not JSON"),
        Err(ParseError::HandshakeRefused) => {
            assert!(
                endpoint.provider.handshake_secret.is_some(),
                "{} has no handshake to refuse",
                endpoint.provider.name
            )
        }
        Err(ParseError::TooManyEvents(n)) => {
            assert!(n > providers::MAX_EVENTS_PER_REQUEST)
        }
    }
}

/// A handshake reply comes only from a provider with a handshake, only when its secret is
/// configured, and is JSON carrying that secret.
pub fn assert_reply(endpoint: &EndpointConfig, reply: &[u8]) {
    let handshake_secret = endpoint
        .provider
        .handshake_secret
        .unwrap_or_else(|| panic!("{} replied without a handshake", endpoint.provider.name));
    let secret = handshake_secret(&endpoint.options).expect("a reply without a secret configured");
    let v: serde_json::Value = serde_json::from_slice(reply).expect("reply is JSON");
    assert!(
        v.as_object()
            .is_some_and(|o| o.values().any(|f| f.as_str() == Some(secret.expose()))),
        "the reply carries the configured secret"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_holds_every_provider_and_its_samples_pass_the_checks() {
        for provider in providers::ALL {
            let eps: Vec<_> = config()
                .endpoints
                .iter()
                .filter(|e| e.provider == *provider)
                .collect();
            assert!(!eps.is_empty(), "no fuzz endpoint for {}", provider.name);
            for ep in eps {
                for sample in provider.samples {
                    check(ep, &HeaderMap::new(), sample.body);
                }
            }
        }
    }
}
