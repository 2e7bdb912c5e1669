//! Provider registry. Each provider module turns an authenticated request (headers + raw JSON
//! body) into [`Event`]s with canonical status. Provider modules do no I/O, touch no metrics and
//! know nothing of HTTP responses, which keeps them unit-testable and fuzzable.
//!
//! Adding a provider: a new file with a `parse` function and its status table, plus one arm in
//! [`parse`].

use http::HeaderMap;
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::config::{EndpointConfig, ProviderKind};

pub mod generic;
pub mod isendu;
pub mod mailship;
pub mod modexpress;
pub mod peddler;
pub mod wegocod;

/// The canonical fulfilment lifecycle every provider status maps into (SPEC §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Created,
    OnHold,
    Processing,
    Packed,
    ReadyForCarrier,
    InTransit,
    OutForDelivery,
    ReadyForPickup,
    Delivered,
    DeliveryFailed,
    Returning,
    Returned,
    Restocked,
    Cancelled,
    Exception,
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::OnHold => "on_hold",
            Self::Processing => "processing",
            Self::Packed => "packed",
            Self::ReadyForCarrier => "ready_for_carrier",
            Self::InTransit => "in_transit",
            Self::OutForDelivery => "out_for_delivery",
            Self::ReadyForPickup => "ready_for_pickup",
            Self::Delivered => "delivered",
            Self::DeliveryFailed => "delivery_failed",
            Self::Returning => "returning",
            Self::Returned => "returned",
            Self::Restocked => "restocked",
            Self::Cancelled => "cancelled",
            Self::Exception => "exception",
            Self::Unknown => "unknown",
        }
    }
}

/// Position of an event inside a batched request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Batch {
    pub index: usize,
    pub size: usize,
}

/// One provider event, normalized. The envelope module turns it into a CloudEvent.
#[derive(Debug, Clone)]
pub struct Event {
    /// The provider's own event name (`order.status_updated`, `shp.status.update`…).
    pub event: String,
    /// `entity.action` part of the routing key (`order.status_changed`), or `unrecognized`.
    pub kind: String,
    /// `order`, `shipment`, `product`, `stock_advice`; `None` for unrecognized events.
    pub entity: Option<String>,
    pub entity_id: Option<String>,
    /// The provider's natural key for this event: the same provider event always gives the same
    /// key, so retries produce the same envelope id.
    pub natural_key: String,
    pub status: Option<Status>,
    pub provider_status: Option<String>,
    pub previous_status: Option<String>,
    pub tracking_number: Option<String>,
    pub tracking_url: Option<String>,
    pub location: Option<Value>,
    pub occurred_at: Option<String>,
    pub batch: Option<Batch>,
    /// Provider-specific extras merged into `data` (e.g. Mailship stock `changes`).
    pub extra: Option<serde_json::Map<String, Value>>,
    /// The provider's own JSON for this event, byte for byte.
    pub payload: Box<RawValue>,
}

impl Event {
    /// An event with only the mandatory parts set.
    pub fn new(
        event: impl Into<String>,
        kind: impl Into<String>,
        natural_key: String,
        payload: Box<RawValue>,
    ) -> Self {
        Self {
            event: event.into(),
            kind: kind.into(),
            entity: None,
            entity_id: None,
            natural_key,
            status: None,
            provider_status: None,
            previous_status: None,
            tracking_number: None,
            tracking_url: None,
            location: None,
            occurred_at: None,
            batch: None,
            extra: None,
            payload,
        }
    }

    /// An authenticated body of a shape or event the provider module does not know. It is
    /// published as `{provider}.unrecognized`, never dropped.
    pub fn unrecognized(event: impl Into<String>, payload: Box<RawValue>) -> Self {
        let key = format!("unrecognized:{}", hash_hex(payload.get().as_bytes()));
        Self::new(event, UNRECOGNIZED, key, payload)
    }

    pub fn is_unrecognized(&self) -> bool {
        self.kind == UNRECOGNIZED
    }
}

/// Routing-key suffix of events the bridge could not classify.
pub const UNRECOGNIZED: &str = "unrecognized";

/// Hex SHA-256, for natural keys built from content.
pub fn hash_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// What a provider made of a request.
#[derive(Debug)]
pub enum Parsed {
    /// Events to publish; may be empty (an empty batch is fine).
    Events(Vec<Event>),
    /// A protocol reply that publishes nothing (isendu URL handshake): answer 200 with this body.
    Reply(Vec<u8>),
}

/// A body the provider cannot accept at all. Unknown-but-valid JSON is *not* an error: it
/// becomes an unrecognized event.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("body is not valid JSON: {0}")]
    NotJson(String),
    #[error("batch too large: {0} elements")]
    TooManyEvents(usize),
    #[error("handshake refused")]
    HandshakeRefused,
}

/// The most events one request may carry; larger batches are refused with 400 before publishing.
pub const MAX_EVENTS_PER_REQUEST: usize = 10_000;

/// What a provider parser gets: the endpoint's settings, the request headers and the raw body,
/// already known to be at most `max_body` bytes.
pub struct Inbound<'a> {
    pub endpoint: &'a EndpointConfig,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// Parse `body` as JSON, keeping the raw text (for `payload`) and a value (for fields).
pub fn parse_json(body: &[u8]) -> Result<(Box<RawValue>, Value), ParseError> {
    let raw: Box<RawValue> =
        serde_json::from_slice(body).map_err(|e| ParseError::NotJson(e.to_string()))?;
    let value: Value =
        serde_json::from_str(raw.get()).map_err(|e| ParseError::NotJson(e.to_string()))?;
    Ok((raw, value))
}

/// Dispatch to the endpoint's provider.
pub fn parse(inbound: &Inbound<'_>) -> Result<Parsed, ParseError> {
    let parsed = match inbound.endpoint.provider {
        ProviderKind::Modexpress => modexpress::parse(inbound),
        ProviderKind::Wegocod => wegocod::parse(inbound),
        ProviderKind::Peddler => peddler::parse(inbound),
        ProviderKind::Isendu => isendu::parse(inbound),
        ProviderKind::Mailship => mailship::parse(inbound),
        ProviderKind::Generic => generic::parse(inbound),
    }?;
    if let Parsed::Events(events) = &parsed
        && events.len() > MAX_EVENTS_PER_REQUEST
    {
        return Err(ParseError::TooManyEvents(events.len()));
    }
    Ok(parsed)
}

/// The provider name used in routing keys, `source` and `data.provider` for this endpoint.
pub fn provider_name(endpoint: &EndpointConfig) -> &str {
    match endpoint.provider {
        ProviderKind::Generic => endpoint.generic.source.as_deref().unwrap_or(&endpoint.name),
        other => other.as_str(),
    }
}

/// String at a JSON pointer, accepting numbers too (ids are often numeric).
pub fn str_at(value: &Value, pointer: &str) -> Option<String> {
    match value.pointer(pointer)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Sample payloads of each provider's documentation, bundled for `send` and the tests.
pub mod samples;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_serializes_snake_case() {
        assert_eq!(
            serde_json::to_string(&Status::ReadyForCarrier).unwrap(),
            "\"ready_for_carrier\""
        );
        assert_eq!(Status::OutForDelivery.as_str(), "out_for_delivery");
    }
}

/// Helpers for provider unit tests.
#[cfg(test)]
pub mod testing {
    use super::*;
    use crate::config::{AuthConfig, GenericConfig, Secret};

    pub fn endpoint(provider: ProviderKind) -> EndpointConfig {
        EndpointConfig {
            name: format!("{}-test", provider.as_str()),
            provider,
            path: format!("/webhooks/{}", provider.as_str()),
            secrets: vec![Secret::new("test-secret")],
            secret_sources: vec![crate::config::SecretSource::Literal],
            auth: AuthConfig::default_for(provider).unwrap_or(AuthConfig::Bearer),
            allow_ips: vec![],
            trusted_proxies: vec![],
            key_id: None,
            api_secret: None,
            event: None,
            generic: GenericConfig::default(),
        }
    }

    /// Parse `body` and return its events; panics on a handshake reply or an error.
    pub fn events(
        ep: &EndpointConfig,
        headers: &[(&'static str, &str)],
        body: &[u8],
    ) -> Vec<Event> {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(*k, http::HeaderValue::from_str(v).unwrap());
        }
        match parse(&Inbound {
            endpoint: ep,
            headers: &h,
            body,
        })
        .unwrap()
        {
            Parsed::Events(e) => e,
            Parsed::Reply(r) => panic!("unexpected reply {}", String::from_utf8_lossy(&r)),
        }
    }
}

/// The routing keys an endpoint can produce, for `check-config`.
pub fn routing_keys(endpoint: &EndpointConfig) -> Vec<String> {
    let p = provider_name(endpoint);
    let fixed_mailship = endpoint
        .event
        .as_deref()
        .and_then(mailship::MailshipEvent::from_name)
        .filter(|_| endpoint.provider == ProviderKind::Mailship)
        .map(|e| [e.kind()]);
    let kinds: &[&str] = match endpoint.provider {
        ProviderKind::Mailship if fixed_mailship.is_some() => {
            fixed_mailship.as_ref().map_or(&[], |k| k.as_slice())
        }
        ProviderKind::Modexpress | ProviderKind::Wegocod => &["order.status_changed"],
        ProviderKind::Peddler => &["shipment.status_changed"],
        ProviderKind::Isendu => &["order.updated", "shipment.status_changed"],
        ProviderKind::Mailship => &[
            "order.status_changed",
            "order.stock_booked",
            "product.stock_changed",
            "product.updated",
            "stock_advice.status_changed",
        ],
        ProviderKind::Generic => &["<event>"],
    };
    kinds
        .iter()
        .chain(std::iter::once(&UNRECOGNIZED))
        .map(|k| format!("{p}.{k}"))
        .collect()
}
