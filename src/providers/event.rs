//! What every provider module works with: the request it is given ([`Inbound`], with the
//! endpoint's [`Options`]), what it makes of it ([`Parsed`], [`Event`] with a canonical
//! [`Status`]), and small JSON helpers.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use http::HeaderMap;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_json::value::RawValue;

/// An endpoint's provider options: the value its provider made of its own keys
/// ([`super::Provider::options`]), of a type only that provider knows; empty for providers with
/// none, and in endpoints built without a config (tests). A provider reads its own with
/// [`Options::get`] and treats empty as all defaults.
#[derive(Clone, Default)]
pub struct Options(Option<Arc<dyn ProviderOptions>>);

/// What a provider's options type must be: printable (secrets as [`crate::secret::Secret`], so
/// redacted) and shareable between requests.
pub trait ProviderOptions: Any + fmt::Debug + Send + Sync {}

impl<T: Any + fmt::Debug + Send + Sync> ProviderOptions for T {}

impl Options {
    pub fn new(options: impl ProviderOptions) -> Self {
        Self(Some(Arc::new(options)))
    }

    /// The options, if they are a `T`.
    pub fn get<T: Any>(&self) -> Option<&T> {
        let options: &dyn Any = self.0.as_deref()?;
        options.downcast_ref()
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(options) => options.fmt(f),
            None => f.write_str("{}"),
        }
    }
}

/// What a provider's [`super::Provider::options`] reads its keys from: a table of the
/// endpoint's keys that are the provider's own, positions kept for error messages.
pub type OptionsDeserializer<'a> = toml::de::ValueDeserializer<'a>;

/// Why an endpoint's provider keys do not deserialize (the position is in it).
pub type OptionsError = toml::de::Error;

/// [`super::Provider::options`] for a provider whose keys are the fields of `T`.
pub fn options_of<T: DeserializeOwned + ProviderOptions>(
    keys: OptionsDeserializer<'_>,
) -> Result<Options, OptionsError> {
    T::deserialize(keys).map(Options::new)
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
