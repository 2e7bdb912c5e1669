//! isendu store webhooks. Authentication is the secret token as the last path segment (done by
//! the HTTP layer before this module runs). Two kinds of body arrive at the same URL:
//!
//! - the **URL handshake**, a body that is exactly `{"keyId": "<id>"}`: answered
//!   `200 {"response": "<api_secret>"}` when it names the endpoint's `key_id`, and publishing
//!   nothing. The answer is the store's API secret, so it is given only to a check that names
//!   the store's key: an endpoint with `api_secret` must set `key_id` (the config is refused
//!   otherwise). Without a configured `api_secret` the handshake is refused (401): the only other
//!   secret we hold is the path token, which must never be echoed.
//! - a **batch** `{"order":[…],"tracking":[…]}`: each element becomes its own event, orders
//!   first then tracking, each in array order, with `batch = {index, size}` counted over the whole
//!   request. Missing, `null` or empty arrays are fine (zero events). Keys other than `order` and
//!   `tracking` next to them are kept: copied into every order and tracking event of the request
//!   as `batch_context` (up to [`MAX_BATCH_CONTEXT`] bytes of JSON; a body with more is published
//!   whole as `isendu.unrecognized`, rather than multiplied by the batch size). A body with
//!   neither key (other than `{}`), or where one of them is not an array, is published whole as
//!   `isendu.unrecognized`. An element that is not an object becomes an unrecognized event of its
//!   own; the rest of the batch is unaffected.
//!
//! A tracking element's **current step** is the newest of its `steps` by `timestamp` (isendu
//! documents the step timestamp as UTC and gives the array no order), not the last element.
//!
//! Routing: `order[i]` → `isendu.order.updated`, `tracking[i]` → `isendu.shipment.status_changed`.
//! Natural key of an element: its `uuid` + `:` + SHA-256 of the element's raw bytes, so a retried
//! batch yields the same ids while a new update of the same order or shipment yields a new one.

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Deserializer;
use serde::de::{MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;

use super::json::{self, ArrayError, Doc};
use super::{
    Batch, Event, Inbound, MAX_EVENTS_PER_REQUEST, ParseError, Parsed, Status, hash_hex,
};
use super::{Checked, OptionProblem, Options, Provider, Sample, options_of};
use super::samples::sample_file;
use crate::auth::AuthConfig;
use crate::secret::{self, Secret};

/// isendu: token as the last path segment; batches of order and tracking updates, and the URL
/// check.
pub static PROVIDER: Provider = Provider {
    name: "isendu",
    default_auth: || Some(AuthConfig::PathToken),
    kinds: |_| vec!["order.updated", "shipment.status_changed"],
    samples: SAMPLES,
    parse,
    option_keys: &["key_id", "api_secret"],
    options: options_of::<IsenduOptions>,
    check,
    batches: |_| true,
    handshake_secret: Some(|options| own(options).api_secret.as_ref()),
    status_tables: &[("#### isendu", status)],
    prepare_sample,
    ..Provider::BASE
};

/// An isendu endpoint's own keys.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IsenduOptions {
    /// The API key id its URL check must carry (any, when unset).
    #[serde(default)]
    pub key_id: Option<String>,
    /// The API secret its URL check expects back (`env:`/`file:` resolved).
    #[serde(default, deserialize_with = "secret::de_resolved")]
    pub api_secret: Option<Secret>,
}

static NO_OPTIONS: IsenduOptions = IsenduOptions {
    key_id: None,
    api_secret: None,
};

/// The endpoint's isendu options; none set when it has none.
fn own(options: &Options) -> &IsenduOptions {
    options.get().unwrap_or(&NO_OPTIONS)
}

/// The handshake sample names the endpoint's own `key_id`, so `send --sample handshake` tries
/// the URL check the way isendu would for this store.
fn prepare_sample(options: &Options, sample: &Sample) -> Vec<u8> {
    match (&own(options).key_id, sample.name) {
        (Some(key_id), "handshake") => serde_json::json!({ "keyId": key_id }).to_string().into_bytes(),
        _ => sample.body.to_vec(),
    }
}

/// Without `api_secret` the URL check cannot be answered: warn, since isendu will not use the URL.
fn check(options: &Options) -> Checked {
    let options = own(options);
    if options.api_secret.is_some() && options.key_id.is_none() {
        return Err(OptionProblem {
            key: "key_id",
            message: "must be set with api_secret: the URL check is answered with the store's API \
                      secret, so only a check naming the store's API key id may get it"
                .into(),
        });
    }
    let mut warnings = Vec::new();
    if options.api_secret.is_none() {
        warnings.push(OptionProblem {
            key: "api_secret",
            message: "is not set: isendu's URL check ({\"keyId\": …}) will be answered 401 and \
                      isendu will not use the URL"
                .into(),
        });
    }
    Ok(warnings)
}

pub const HANDSHAKE: &[u8] = sample_file!("isendu/handshake.json");
pub const BATCH: &[u8] = sample_file!("isendu/batch.json");

/// The documented samples, for `send --sample NAME` and the tests.
pub const SAMPLES: &[Sample] = &[
    Sample {
        name: "handshake",
        body: HANDSHAKE,
    },
    Sample {
        name: "batch",
        body: BATCH,
    },
];

/// Courier / order status → canonical status. isendu passes on its couriers' vocabulary, so the
/// table covers the common spellings; matching ignores case and treats `-` and spaces as `_`.
pub fn status(s: &str) -> Status {
    let norm: String = s
        .trim()
        .chars()
        .map(|c| match c {
            '-' | ' ' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect();
    match norm.as_str() {
        "NEW" | "CREATED" | "PENDING" | "REGISTERED" | "INFO_RECEIVED" | "LABEL_CREATED"
        | "PRE_TRANSIT" | "DATA_RECEIVED" => Status::Created,
        "ON_HOLD" | "HELD" | "SUSPENDED" => Status::OnHold,
        "PROCESSING" | "CONFIRMED" | "ACCEPTED" | "IN_PROGRESS" => Status::Processing,
        "PACKED" => Status::Packed,
        "READY_TO_SHIP" | "AWAITING_PICKUP" | "WAITING_FOR_CARRIER" | "READY_FOR_COURIER" => {
            Status::ReadyForCarrier
        }
        "PICKED_UP" | "SHIPPED" | "IN_TRANSIT" | "TRANSIT" | "DEPARTED" | "ARRIVED" | "AT_HUB"
        | "IN_TRANSIT_TO_HUB" => Status::InTransit,
        "OUT_FOR_DELIVERY" | "IN_DELIVERY" | "ON_DELIVERY" => Status::OutForDelivery,
        "READY_FOR_PICKUP" | "AVAILABLE_FOR_PICKUP" | "AT_PICKUP_POINT" | "IN_LOCKER" => {
            Status::ReadyForPickup
        }
        "DELIVERED" => Status::Delivered,
        "FAILED_ATTEMPT" | "ATTEMPT_FAIL" | "DELIVERY_FAILED" | "FAILED_DELIVERY"
        | "NOT_DELIVERED" | "UNDELIVERED" => Status::DeliveryFailed,
        "RETURNING" | "RETURN_TO_SENDER" | "IN_RETURN" | "RETURN_IN_TRANSIT" => Status::Returning,
        "RETURNED" | "RETURNED_TO_SENDER" => Status::Returned,
        "CANCELLED" | "CANCELED" | "DELETED" => Status::Cancelled,
        // `giacenza`: held at the depot after a failed delivery, waiting for instructions.
        "EXCEPTION" | "ERROR" | "LOST" | "DAMAGED" | "EXPIRED" | "GIACENZA" | "IN_GIACENZA" => {
            Status::Exception
        }
        _ => Status::Unknown,
    }
}

pub fn parse(inbound: &Inbound<'_>) -> Result<Parsed, ParseError> {
    // No tree of the whole body: it is checked as `Value` would be, then read once at the top
    // level, the batch elements kept as slices of it and counted as they are read.
    let text = json::validate(inbound.body)?;
    let unrecognized = || Ok(Parsed::Events(vec![Event::unrecognized("", json::boxed(text)?)]));
    if !text.trim_start().starts_with('{') {
        return unrecognized();
    }
    let mut elements = json::Elements::new(MAX_EVENTS_PER_REQUEST);
    let mut top = Top::default();
    let mut de = serde_json::Deserializer::from_str(text);
    if de
        .deserialize_map(TopVisitor {
            elements: &mut elements,
            top: &mut top,
        })
        .is_err()
    {
        return match elements.error() {
            ArrayError::TooMany(n) => Err(ParseError::TooManyEvents(n)),
            // An array key holding something else, or twice.
            ArrayError::Shape => unrecognized(),
        };
    }
    let keys = top.others.len() + usize::from(top.order.is_some()) + usize::from(top.tracking.is_some());
    if keys == 1
        && let Some(key_id) = top.others.get("keyId")
    {
        return handshake(inbound, key_id);
    }
    if top.order.is_none() && top.tracking.is_none() {
        return if keys == 0 {
            Ok(Parsed::Events(Vec::new()))
        } else {
            unrecognized()
        };
    }
    let context = if top.others.is_empty() {
        None
    } else {
        match batch_context(&top.others) {
            Some(context) => Some(context),
            None => return unrecognized(),
        }
    };
    let slice = |range: Option<std::ops::Range<usize>>| {
        range
            .and_then(|r| elements.items.get(r))
            .unwrap_or_default()
    };
    let orders = slice(top.order.clone());
    let tracking = slice(top.tracking.clone());
    let size = orders.len() + tracking.len();
    let mut events = Vec::with_capacity(size);
    for element in orders {
        events.push(order_event((*element).to_owned()));
    }
    for element in tracking {
        events.push(tracking_event((*element).to_owned()));
    }
    for (index, event) in events.iter_mut().enumerate() {
        event.batch = Some(Batch { index, size });
        if !event.is_unrecognized() {
            event.extra.clone_from(&context);
        }
    }
    Ok(Parsed::Events(events))
}

/// The top level of a body: where `order` and `tracking` elements are in the shared list (a key
/// present with `null` is an empty range), and every other key, raw (the last of duplicates, as
/// in `Value`).
#[derive(Default)]
struct Top<'a> {
    order: Option<std::ops::Range<usize>>,
    tracking: Option<std::ops::Range<usize>>,
    others: BTreeMap<Cow<'a, str>, &'a RawValue>,
}

struct TopVisitor<'e, 'a> {
    elements: &'e mut json::Elements<'a>,
    top: &'e mut Top<'a>,
}

impl<'de> Visitor<'de> for TopVisitor<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(json::Borrowed(key)) = map.next_key()? {
            let slot = match key.as_ref() {
                "order" => &mut self.top.order,
                "tracking" => &mut self.top.tracking,
                _ => {
                    let value = map.next_value::<&'de RawValue>()?;
                    self.top.others.insert(key, value);
                    continue;
                }
            };
            if slot.is_some() {
                return Err(serde::de::Error::custom("duplicate batch key"));
            }
            let start = self.elements.items.len();
            map.next_value_seed(self.elements.seed().nullable())?;
            *slot = Some(start..self.elements.items.len());
        }
        Ok(())
    }
}

/// The other top-level keys as `data.batch_context`, or `None` when they take more than
/// [`MAX_BATCH_CONTEXT`] bytes as JSON. Raw text many times that size is not parsed at all.
fn batch_context(others: &BTreeMap<Cow<'_, str>, &RawValue>) -> Option<Map<String, Value>> {
    let raw_len: usize = others.iter().map(|(k, v)| k.len() + v.get().len()).sum();
    if raw_len > RAW_CONTEXT_LIMIT {
        return None;
    }
    let mut context = Map::new();
    for (k, v) in others {
        context.insert(k.to_string(), serde_json::from_str(v.get()).ok()?);
    }
    if json_len(&context) > MAX_BATCH_CONTEXT {
        return None;
    }
    let mut extra = Map::new();
    extra.insert(BATCH_CONTEXT.into(), Value::Object(context));
    Some(extra)
}

/// Raw bytes of other top-level keys past which they are not even parsed: only whitespace or
/// escapes could shrink that much text to [`MAX_BATCH_CONTEXT`].
const RAW_CONTEXT_LIMIT: usize = 64 * MAX_BATCH_CONTEXT;

/// The `data` key under which a batch's other top-level keys are kept.
pub const BATCH_CONTEXT: &str = "batch_context";

/// Most bytes of JSON a batch's other top-level keys may take. They are copied into each of its
/// events, so more would be multiplied by the batch size; such a body is published whole as one
/// unrecognized event instead.
pub const MAX_BATCH_CONTEXT: usize = 1024;

/// Length of `map` written as JSON.
fn json_len(map: &Map<String, Value>) -> usize {
    serde_json::to_vec(map).map_or(usize::MAX, |v| v.len())
}

fn handshake(inbound: &Inbound<'_>, key_id: &RawValue) -> Result<Parsed, ParseError> {
    let Ok(given) = serde_json::from_str::<String>(key_id.get()) else {
        return Err(ParseError::HandshakeRefused);
    };
    let endpoint = own(inbound.options);
    let key_ok = match &endpoint.key_id {
        Some(expected) => bool::from(expected.as_bytes().ct_eq(given.as_bytes())),
        None => false,
    };
    match (&endpoint.api_secret, key_ok) {
        (Some(secret), true) => {
            let reply = serde_json::json!({ "response": secret.expose() }).to_string();
            Ok(Parsed::Reply(reply.into_bytes()))
        }
        _ => Err(ParseError::HandshakeRefused),
    }
}

/// The element read by pointer (no tree), when it is an object; `None` makes it unrecognized.
fn object(element: &RawValue) -> Option<Doc<'_>> {
    let doc = Doc::of(element);
    doc.is_object().then_some(doc)
}

fn natural_key(uuid: Option<&str>, element: &RawValue) -> String {
    [uuid.unwrap_or(""), ":", &hash_hex(element.get().as_bytes())].concat()
}

fn order_event(element: Box<RawValue>) -> Event {
    let Some(doc) = object(&element) else {
        return Event::unrecognized("order", element);
    };
    let uuid = doc.str_at("/uuid");
    let key = natural_key(uuid.as_deref(), &element);
    let entity_id = uuid.or_else(|| doc.str_at("/reference"));
    let provider_status = doc.str_at("/status");
    let tracking_number = doc.str_at("/trackingNumber");
    let tracking_url = doc.str_at("/trackingUrl");
    let occurred_at = doc
        .str_at("/updatedAt")
        .or_else(|| doc.str_at("/updated_at"));
    let mut event = Event::new("order", "order.updated", key, element);
    event.entity = Some("order".into());
    event.entity_id = entity_id;
    event.status = provider_status.as_deref().map(status);
    event.provider_status = provider_status;
    event.tracking_number = tracking_number;
    event.tracking_url = tracking_url;
    event.occurred_at = occurred_at;
    event
}

fn tracking_event(element: Box<RawValue>) -> Event {
    let Some(doc) = object(&element) else {
        return Event::unrecognized("tracking", element);
    };
    let uuid = doc.str_at("/uuid");
    let key = natural_key(uuid.as_deref(), &element);
    // Each step kept as a slice of the element; only the current one is read further.
    let steps: Vec<&RawValue> = doc
        .get("steps")
        .filter(|s| s.get().starts_with('['))
        .and_then(|s| serde_json::from_str(s.get()).ok())
        .unwrap_or_default();
    let current = current_step(&steps).map(Doc::of);
    let provider_status = doc
        .str_at("/status")
        .or_else(|| current.as_ref().and_then(|s| s.str_at("/status")))
        .filter(|s| !s.is_empty());
    let delivered = doc.get("delivered").is_some_and(|d| {
        d.get() == "true" || json::string(d).is_some_and(|s| s.eq_ignore_ascii_case("true"))
    });
    let tracking_number = doc.str_at("/trackingNumber");
    let tracking_url = doc.str_at("/trackingUrl");
    let (location, occurred_at) = match &current {
        Some(step) => (
            step.value_at("/location")
                .filter(|l| !l.is_null() && l.as_str() != Some("")),
            step.str_at("/timestamp")
                .or_else(|| step.str_at("/datetime"))
                .filter(|s| !s.is_empty()),
        ),
        None => (None, None),
    };
    let mut event = Event::new("tracking", "shipment.status_changed", key, element);
    event.entity = Some("shipment".into());
    event.entity_id = uuid.or_else(|| tracking_number.clone());
    event.tracking_number = tracking_number;
    event.tracking_url = tracking_url;
    event.status = Some(if delivered {
        Status::Delivered
    } else {
        provider_status.as_deref().map_or(Status::Unknown, status)
    });
    event.provider_status = provider_status;
    event.location = location;
    event.occurred_at = occurred_at;
    event
}

/// The current step of a tracking element: the newest by `timestamp`, the later one in the array
/// on a tie. Steps whose `timestamp` cannot be read are passed over; when none can be read, the
/// last step.
fn current_step<'a>(steps: &[&'a RawValue]) -> Option<&'a RawValue> {
    let mut newest: Option<(DateTime<Utc>, &'a RawValue)> = None;
    for &step in steps {
        if let Some(at) = step_time(step)
            && newest.is_none_or(|(best, _)| at >= best)
        {
            newest = Some((at, step));
        }
    }
    newest.map(|(_, step)| step).or_else(|| steps.last().copied())
}

/// A step's `timestamp`: RFC 3339, or a date and time without an offset (isendu documents the
/// step timestamp as UTC), or Unix seconds (milliseconds when that large).
fn step_time(step: &RawValue) -> Option<DateTime<Utc>> {
    let raw = json::raw_at(step.get(), "/timestamp")?;
    match raw.get().as_bytes().first()? {
        b'"' => {
            let s = json::string(raw)?;
            let s = s.trim();
            if let Ok(t) = DateTime::parse_from_rfc3339(s) {
                return Some(t.with_timezone(&Utc));
            }
            ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
                .iter()
                .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
                .map(|t| t.and_utc())
        }
        b'-' | b'0'..=b'9' => {
            let n = serde_json::from_str::<serde_json::Number>(raw.get())
                .ok()?
                .as_i64()?;
            if n.unsigned_abs() >= 100_000_000_000 {
                DateTime::from_timestamp_millis(n)
            } else {
                DateTime::from_timestamp(n, 0)
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod config_tests {
    use super::*;

    #[test]
    fn an_api_secret_without_key_id_is_refused() {
        let options = IsenduOptions {
            api_secret: Some(Secret::new("fake-api-secret")),
            ..IsenduOptions::default()
        };
        assert_eq!(check(&Options::new(options.clone())).unwrap_err().key, "key_id");
        let with_key = IsenduOptions {
            key_id: Some("fake-key".into()),
            ..options
        };
        assert_eq!(check(&Options::new(with_key)), Ok(Vec::new()));
    }

    #[test]
    fn the_handshake_sample_names_the_configured_key_id() {
        let handshake = SAMPLES.iter().find(|s| s.name == "handshake").unwrap();
        let options = Options::new(IsenduOptions {
            key_id: Some("store-key-7".into()),
            ..IsenduOptions::default()
        });
        let body: serde_json::Value =
            serde_json::from_slice(&prepare_sample(&options, handshake)).unwrap();
        assert_eq!(body, serde_json::json!({ "keyId": "store-key-7" }));
        assert_eq!(prepare_sample(&Options::default(), handshake), handshake.body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use crate::providers::testing::{endpoint, events};
    use crate::providers::Inbound;

    fn isendu() -> crate::providers::testing::TestEndpoint {
        isendu_with(Some("key-1"), Some("api-secret-1"))
    }

    fn isendu_with(
        key_id: Option<&str>,
        api_secret: Option<&str>,
    ) -> crate::providers::testing::TestEndpoint {
        let mut ep = endpoint(&PROVIDER);
        ep.options = Options::new(IsenduOptions {
            key_id: key_id.map(Into::into),
            api_secret: api_secret.map(Secret::new),
        });
        ep
    }

    fn parse_body(ep: &crate::providers::testing::TestEndpoint, body: &[u8]) -> Result<Parsed, ParseError> {
        let headers = http::HeaderMap::new();
        PROVIDER.parse(&Inbound {
            options: &ep.options,
            headers: &headers,
            body,
        })
    }

    #[test]
    fn status_table_maps_courier_vocabulary() {
        for (s, want) in [
            ("IN_TRANSIT", Status::InTransit),
            ("in transit", Status::InTransit),
            ("Out-For-Delivery", Status::OutForDelivery),
            ("DELIVERED", Status::Delivered),
            ("delivered", Status::Delivered),
            ("EXCEPTION", Status::Exception),
            ("RETURNED", Status::Returned),
            ("RETURN_TO_SENDER", Status::Returning),
            ("FAILED_ATTEMPT", Status::DeliveryFailed),
            ("AVAILABLE_FOR_PICKUP", Status::ReadyForPickup),
            ("INFO_RECEIVED", Status::Created),
            ("processing", Status::Processing),
            ("CANCELED", Status::Cancelled),
            ("TELEPORTED", Status::Unknown),
            ("", Status::Unknown),
        ] {
            assert_eq!(status(s), want, "{s}");
        }
    }

    #[test]
    fn handshake_answers_the_api_secret_only_for_the_right_key() {
        let ep = isendu();
        match parse_body(&ep, br#"{"keyId": "key-1"}"#).unwrap() {
            Parsed::Reply(r) => assert_eq!(r, br#"{"response":"api-secret-1"}"#),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_body(&ep, br#"{"keyId": "key-2"}"#).unwrap_err(),
            ParseError::HandshakeRefused
        );
        assert_eq!(
            parse_body(&ep, br#"{"keyId": 1}"#).unwrap_err(),
            ParseError::HandshakeRefused
        );
        let open = isendu_with(None, Some("api-secret-1"));
        assert_eq!(
            parse_body(&open, br#"{"keyId": "anything"}"#).unwrap_err(),
            ParseError::HandshakeRefused,
            "no key id configured: the API secret is never given away"
        );
        let no_secret = isendu_with(Some("key-1"), None);
        assert_eq!(
            parse_body(&no_secret, br#"{"keyId": "key-1"}"#).unwrap_err(),
            ParseError::HandshakeRefused
        );
    }

    #[test]
    fn sample_batch_splits_orders_then_tracking() {
        let ev = events(&isendu(), &[], BATCH);
        assert_eq!(ev.len(), 3);
        assert_eq!(ev[0].kind, "order.updated");
        assert_eq!(
            ev[0].entity_id.as_deref(),
            Some("8a3f9c1e-2b7d-4c5a-9e61-0f4b2d8c7a10")
        );
        assert_eq!(ev[0].batch, Some(Batch { index: 0, size: 3 }));
        assert_eq!(ev[1].kind, "shipment.status_changed");
        assert_eq!(ev[1].status, Some(Status::InTransit));
        assert_eq!(ev[1].provider_status.as_deref(), Some("IN_TRANSIT"));
        assert_eq!(ev[1].tracking_number.as_deref(), Some("1Z999AA10123456784"));
        assert_eq!(ev[1].location, Some(Value::String("Milano".into())));
        assert_eq!(ev[1].occurred_at.as_deref(), Some("2026-05-09T08:15:00Z"));
        assert_eq!(ev[2].status, Some(Status::Delivered));
        assert_eq!(ev[2].batch, Some(Batch { index: 2, size: 3 }));
        assert!(
            ev[2]
                .natural_key
                .starts_with("0e6b2f93-7c1a-4d8e-a5f2-3b9c6d1e8f47:")
        );
        // Payload is the element's raw text, byte for byte.
        let text = std::str::from_utf8(BATCH).unwrap();
        assert!(text.contains(ev[1].payload.get()));
    }

    #[test]
    fn delivered_flag_forces_delivered() {
        let body = br#"{"tracking":[{"uuid":"t1","status":"IN_TRANSIT","delivered":true}]}"#;
        let ev = events(&isendu(), &[], body);
        assert_eq!(ev[0].status, Some(Status::Delivered));
        assert_eq!(ev[0].provider_status.as_deref(), Some("IN_TRANSIT"));
    }

    #[test]
    fn empty_missing_and_odd_bodies() {
        let ep = isendu();
        assert!(events(&ep, &[], br#"{"order":[],"tracking":[]}"#).is_empty());
        assert!(events(&ep, &[], br#"{"order":[]}"#).is_empty());
        assert!(events(&ep, &[], br#"{}"#).is_empty());
        assert!(events(&ep, &[], br#"{"tracking":null}"#).is_empty());
        assert!(events(&ep, &[], br#"{"hello":1}"#)[0].is_unrecognized());
        assert!(events(&ep, &[], br#"{"order":{"uuid":"x"}}"#)[0].is_unrecognized());
        assert!(events(&ep, &[], br#"[1,2]"#)[0].is_unrecognized());
        // A non-object element is unrecognized on its own; its neighbours are not.
        let ev = events(&ep, &[], br#"{"order":[42,{"uuid":"o1"}]}"#);
        assert_eq!(ev.len(), 2);
        assert!(ev[0].is_unrecognized());
        assert_eq!(ev[0].payload.get(), "42");
        assert_eq!(ev[0].batch, Some(Batch { index: 0, size: 2 }));
        assert_eq!(ev[1].kind, "order.updated");
        let huge = format!(
            "{{\"order\":[{}{{}}]}}",
            "{},".repeat(MAX_EVENTS_PER_REQUEST)
        );
        assert!(matches!(
            parse_body(&ep, huge.as_bytes()),
            Err(ParseError::TooManyEvents(n)) if n == MAX_EVENTS_PER_REQUEST + 1
        ));
    }

    #[test]
    fn current_step_is_the_newest_by_timestamp_not_the_last() {
        let ep = isendu();
        // Newest first in the array, as nothing in isendu's document forbids.
        let body = br#"{"tracking":[{"uuid":"t1","steps":[
            {"timestamp":"2026-05-09T14:40:00Z","datetime":"2026-05-09 16:40:00","status":"DELIVERED","location":"Torino"},
            {"timestamp":"2026-05-09T08:15:00Z","status":"IN_TRANSIT","location":"Milano"},
            {"timestamp":"2026-05-08T18:00:00Z","status":"PICKED_UP","location":"Roma"}]}]}"#;
        let ev = events(&ep, &[], body);
        assert_eq!(ev[0].provider_status.as_deref(), Some("DELIVERED"));
        assert_eq!(ev[0].status, Some(Status::Delivered));
        assert_eq!(ev[0].location, Some(Value::String("Torino".into())));
        assert_eq!(ev[0].occurred_at.as_deref(), Some("2026-05-09T14:40:00Z"));

        // Offsets are compared as instants; a timestamp without one is UTC.
        let body = br#"{"tracking":[{"uuid":"t2","steps":[
            {"timestamp":"2026-05-09T12:00:00+02:00","status":"IN_TRANSIT"},
            {"timestamp":"2026-05-09 10:30:00","status":"OUT_FOR_DELIVERY"},
            {"timestamp":"2026-05-09T10:15:00Z","status":"AT_HUB"}]}]}"#;
        let ev = events(&ep, &[], body);
        assert_eq!(ev[0].provider_status.as_deref(), Some("OUT_FOR_DELIVERY"));

        // Unreadable timestamps are passed over; equal ones: the later in the array.
        let body = br#"{"tracking":[{"uuid":"t3","steps":[
            {"timestamp":"soon","status":"LOST"},
            {"timestamp":"2026-05-09T08:00:00Z","status":"IN_TRANSIT"},
            {"timestamp":"2026-05-09T08:00:00Z","status":"AT_HUB"},
            {"status":"EXCEPTION"}]}]}"#;
        let ev = events(&ep, &[], body);
        assert_eq!(ev[0].provider_status.as_deref(), Some("AT_HUB"));

        // No readable timestamp at all: the last step, its `datetime` as the time.
        let body = br#"{"tracking":[{"uuid":"t4","steps":[
            {"datetime":"2026-05-09 10:00:00","status":"IN_TRANSIT"},
            {"datetime":"2026-05-09 09:00:00","status":"IN_GIACENZA"}]}]}"#;
        let ev = events(&ep, &[], body);
        assert_eq!(ev[0].status, Some(Status::Exception));
        assert_eq!(ev[0].occurred_at.as_deref(), Some("2026-05-09 09:00:00"));

        // Unix seconds and milliseconds.
        let body = br#"{"tracking":[{"uuid":"t5","steps":[
            {"timestamp":1778320800000,"status":"DELIVERED"},
            {"timestamp":1778310000,"status":"IN_TRANSIT"}]}]}"#;
        let ev = events(&ep, &[], body);
        assert_eq!(ev[0].provider_status.as_deref(), Some("DELIVERED"));

        // The element's own `status` still comes first.
        let body = br#"{"tracking":[{"uuid":"t6","status":"RETURNING","steps":[
            {"timestamp":"2026-05-09T08:00:00Z","status":"IN_TRANSIT"}]}]}"#;
        assert_eq!(
            events(&ep, &[], body)[0].provider_status.as_deref(),
            Some("RETURNING")
        );
    }

    #[test]
    fn other_top_level_keys_are_kept_in_every_event() {
        let ep = isendu();
        let body = br#"{"store":{"id":7},"sentAt":"2026-05-09T10:00:00Z","order":[{"uuid":"o1"},42],"tracking":[{"uuid":"t1"}]}"#;
        let ev = events(&ep, &[], body);
        assert_eq!(ev.len(), 3);
        let want = serde_json::json!({"store": {"id": 7}, "sentAt": "2026-05-09T10:00:00Z"});
        for i in [0, 2] {
            let extra = ev[i].extra.as_ref().expect("batch_context");
            assert_eq!(extra[BATCH_CONTEXT], want, "event {i}");
            assert_eq!(extra.len(), 1);
        }
        // An element that is not an object is unrecognized and carries only itself.
        assert!(ev[1].is_unrecognized());
        assert_eq!(ev[1].extra, None);
        // Nothing else next to the arrays: no batch_context.
        assert_eq!(events(&ep, &[], BATCH)[0].extra, None);

        // More than MAX_BATCH_CONTEXT bytes would be copied into every event: the body is
        // published whole as one unrecognized event instead.
        let big = format!(
            r#"{{"note":"{}","order":[{{"uuid":"o1"}},{{"uuid":"o2"}}]}}"#,
            "x".repeat(MAX_BATCH_CONTEXT)
        );
        let ev = events(&ep, &[], big.as_bytes());
        assert_eq!(ev.len(), 1);
        assert!(ev[0].is_unrecognized());
        assert_eq!(ev[0].payload.get(), big);
    }

    #[test]
    fn natural_key_changes_with_content_not_with_retry() {
        let ep = isendu();
        let a = events(&ep, &[], br#"{"order":[{"uuid":"o1","status":"new"}]}"#);
        let b = events(&ep, &[], br#"{"order":[{"uuid":"o1","status":"new"}]}"#);
        let c = events(&ep, &[], br#"{"order":[{"uuid":"o1","status":"shipped"}]}"#);
        assert_eq!(a[0].natural_key, b[0].natural_key);
        assert_ne!(a[0].natural_key, c[0].natural_key);
    }
}
