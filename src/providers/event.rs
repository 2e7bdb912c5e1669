//! What every provider module works with: the request it is given ([`Inbound`], with the
//! endpoint's [`Options`]), what it makes of it ([`Parsed`], [`Event`] with a canonical
//! [`Status`]), and small JSON helpers.

use http::HeaderMap;
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::generic::GenericConfig;
use crate::secret::Secret;

/// The provider-specific keys of an `[[endpoint]]` table, resolved; each provider reads its own.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// isendu: the API key id its URL check must carry (any, when unset).
    pub key_id: Option<String>,
    /// isendu: the API secret its URL check expects back.
    pub api_secret: Option<Secret>,
    /// Mailship: the one event type this endpoint receives (recognised by shape when unset).
    pub event: Option<String>,
    /// generic: where to find the event name, ids and batch array (`[endpoint.generic]`).
    pub generic: GenericConfig,
}

/// The canonical fulfilment lifecycle every provider status maps into (docs/contract.md §5.2).
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

/// What a provider parser gets: the endpoint's provider options, the request headers and the
/// raw body, already authenticated and known to be at most `max_body` bytes.
pub struct Inbound<'a> {
    pub options: &'a Options,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// String at a JSON pointer, accepting numbers too (ids are often numeric). For a part already
/// parsed into a `Value` (an isendu batch element); a whole body is read with `json::Doc`.
pub fn str_at(value: &Value, pointer: &str) -> Option<String> {
    match value.pointer(pointer)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}
