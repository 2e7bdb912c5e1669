//! The generic provider: a sender nobody wrote a module for, described entirely in TOML
//! (`[endpoint.generic]`, with any scheme of `[endpoint.auth]`).
//!
//! - **Routing key** `{source}.{event}`. `source` defaults to the endpoint name. The event name
//!   comes from `event_pointer` (a JSON pointer, tried first) or `event_header`; it is made a
//!   valid routing-key part by [`routing_part`] (lowercase; `[a-z0-9_.-]` kept, anything else
//!   becomes `_`; empty dot-separated words dropped). A body without an event name is published
//!   as `{source}.unrecognized`, never dropped.
//! - **Split**: with `split_pointer`, each element of that array is its own event with
//!   `batch = {index, size}`; pointers are then looked up in the element first, then in the whole
//!   body (so an event name next to the array applies to every element). If the pointer does not
//!   lead to an array the whole body is published as unrecognized; an empty array is zero events.
//! - **Ids**: `entity_id_pointer` gives `subject`/`entity_id`; the natural key is the value at
//!   `id_pointer` when set and present, else a SHA-256 of the element's raw bytes, each prefixed
//!   with the event name (a retry of the same request gets the same id either way).
//!
//! Generic events carry no canonical status (`status: null`): there is no table to map with.

use super::json::{self, ArrayError, Doc};
use super::{Batch, Event, Inbound, MAX_EVENTS_PER_REQUEST, ParseError, Parsed, hash_hex};
use super::{Checked, OptionProblem, Options, Provider, Sample};
use super::samples::sample_file;

/// The generic provider: everything is configured (`[endpoint.generic]`, `[endpoint.auth]`).
pub static PROVIDER: Provider = Provider {
    name: "generic",
    default_auth: || None,
    kinds: |_| vec!["<event>"],
    samples: SAMPLES,
    parse,
    option_keys: &["generic"],
    options: |keys| {
        <GenericKeys as serde::Deserialize>::deserialize(keys).map(|k| Options::new(k.generic))
    },
    check,
    batches: |options| own(options).split_pointer.is_some(),
    custom_prefix: Some(|options| own(options).source.as_deref()),
    event_header: |options| own(options).event_header.as_deref(),
    declared_kind: Some(|options, kind| {
        own(options)
            .known_events
            .iter()
            .any(|e| routing_part(e).as_deref() == Some(kind))
    }),
    ..Provider::BASE
};

/// A generic endpoint's own key: the `[endpoint.generic]` table.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct GenericKeys {
    #[serde(default)]
    generic: GenericConfig,
}

static NO_OPTIONS: GenericConfig = GenericConfig {
    source: None,
    event_pointer: None,
    event_header: None,
    entity_id_pointer: None,
    split_pointer: None,
    id_pointer: None,
    known_events: Vec::new(),
};

/// The endpoint's `[endpoint.generic]`; all unset when it has none.
fn own(options: &Options) -> &GenericConfig {
    options.get().unwrap_or(&NO_OPTIONS)
}

/// Settings of the generic provider: where to find the event name, entity id and batch array.
#[derive(Debug, Clone, Default, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GenericConfig {
    /// Name used as the routing-key prefix and `data.provider` (default: the endpoint name).
    #[serde(default)]
    pub source: Option<String>,
    /// JSON pointer to the event name, e.g. `/type`.
    #[serde(default)]
    pub event_pointer: Option<String>,
    /// Header carrying the event name, e.g. `X-GitHub-Event`.
    #[serde(default)]
    pub event_header: Option<String>,
    /// JSON pointer to the entity id, used as `subject` and in the event id.
    #[serde(default)]
    pub entity_id_pointer: Option<String>,
    /// JSON pointer to an array: each element becomes its own event.
    #[serde(default)]
    pub split_pointer: Option<String>,
    /// JSON pointer to the provider's own event id, if it has one.
    #[serde(default)]
    pub id_pointer: Option<String>,
    /// Event names the metrics count by name (`events_total{type}`); the others are counted as
    /// `{source}.other`, since a sender could otherwise create series at will. Routing is not
    /// affected.
    #[serde(default)]
    pub known_events: Vec<String>,
}

/// An event name must come from somewhere; pointers are JSON pointers; `source` starts routing
/// keys.
fn check(options: &Options) -> Checked {
    let generic = own(options);
    let problem = |key, message: &str| {
        Err(OptionProblem {
            key,
            message: message.into(),
        })
    };
    if generic.event_pointer.is_none() && generic.event_header.is_none() {
        return problem(
            "generic",
            "set event_pointer or event_header so events can be routed",
        );
    }
    for (key, pointer) in [
        ("generic.event_pointer", &generic.event_pointer),
        ("generic.entity_id_pointer", &generic.entity_id_pointer),
        ("generic.split_pointer", &generic.split_pointer),
        ("generic.id_pointer", &generic.id_pointer),
    ] {
        if let Some(p) = pointer
            && !p.is_empty()
            && !p.starts_with('/')
        {
            return problem(key, "a JSON pointer starts with '/'");
        }
    }
    if let Some(src) = &generic.source
        && (src.is_empty()
            || !src
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c)))
    {
        return problem(
            "generic.source",
            "must be non-empty [A-Za-z0-9_-] (it starts the routing key)",
        );
    }
    Ok(Vec::new())
}

/// A Standard Webhooks style event (`type` in the body), for generic endpoints.
pub const INVOICE_PAID: &[u8] = sample_file!("generic/invoice_paid.json");
/// GitHub-style push (event name in `X-GitHub-Event`), for generic endpoints.
pub const GITHUB_PUSH: &[u8] = sample_file!("generic/github_push.json");

/// The documented samples, for `send --sample NAME` and the tests.
pub const SAMPLES: &[Sample] = &[
    Sample {
        name: "invoice_paid",
        body: INVOICE_PAID,
    },
    Sample {
        name: "github_push",
        body: GITHUB_PUSH,
    },
];

/// Longest event part of a routing key; AMQP routing keys stop at 255 bytes.
const MAX_EVENT_LEN: usize = 200;

/// Make a provider's event name a valid routing-key part: lowercase, `[a-z0-9_.-]` kept, every
/// other character (including the topic wildcards `*` and `#`) replaced by `_`, and empty
/// dot-separated words dropped. `None` when nothing is left.
pub fn routing_part(event: &str) -> Option<String> {
    let mapped: String = event
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut out = mapped
        .split('.')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(".");
    if out.len() > MAX_EVENT_LEN {
        out.truncate(MAX_EVENT_LEN);
        out = out.trim_end_matches('.').to_string();
    }
    (!out.is_empty()).then_some(out)
}

pub fn parse(inbound: &Inbound<'_>) -> Result<Parsed, ParseError> {
    let cfg = own(inbound.options);
    let header_event = cfg.event_header.as_deref().and_then(|name| {
        inbound
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    });
    let Some(split) = cfg.split_pointer.as_deref().filter(|p| !p.is_empty()) else {
        let doc = Doc::parse(inbound.body)?;
        let ctx = Context {
            inbound,
            body: Fallback::default(),
            header_event,
        };
        return Ok(Parsed::Events(vec![ctx.event(&doc, false)]));
    };
    // A batch: no tree of the whole body. It is checked as `Value` would be, the array's
    // elements are kept as slices of it, counted as they are read, and each is parsed alone.
    let text = json::validate(inbound.body)?;
    let mut elements = json::Elements::new(MAX_EVENTS_PER_REQUEST);
    let taken = match json::raw_at(text, split) {
        Some(array) => elements.take(array.get()),
        None => Err(ArrayError::Shape),
    };
    match taken {
        Ok(()) => {}
        Err(ArrayError::TooMany(n)) => return Err(ParseError::TooManyEvents(n)),
        Err(ArrayError::Shape) => {
            return Ok(Parsed::Events(vec![Event::unrecognized(
                "",
                json::boxed(text)?,
            )]));
        }
    }
    let ctx = Context {
        inbound,
        body: Fallback {
            event: cfg
                .event_pointer
                .as_deref()
                .and_then(|p| json::scalar_at(text, p)),
            entity_id: cfg
                .entity_id_pointer
                .as_deref()
                .and_then(|p| json::scalar_at(text, p)),
        },
        header_event,
    };
    let size = elements.items.len();
    let mut events = Vec::with_capacity(size);
    for (index, element) in elements.items.into_iter().enumerate() {
        let mut event = ctx.event(&Doc::of(element), true);
        event.batch = Some(Batch { index, size });
        events.push(event);
    }
    Ok(Parsed::Events(events))
}

/// What split elements fall back to when they lack a field: the whole body's value at the
/// same pointer, looked up once.
#[derive(Default)]
struct Fallback {
    event: Option<String>,
    entity_id: Option<String>,
}

struct Context<'a> {
    inbound: &'a Inbound<'a>,
    body: Fallback,
    header_event: Option<String>,
}

impl Context<'_> {
    /// The event of one body, or of one element of a split body.
    fn event(&self, element: &Doc<'_>, split: bool) -> Event {
        let cfg = own(self.inbound.options);
        let fallback = |v: &Option<String>| if split { v.clone() } else { None };
        let raw = element.payload();
        let name = cfg
            .event_pointer
            .as_deref()
            .and_then(|p| element.str_at(p))
            .or_else(|| fallback(&self.body.event))
            .filter(|n| !n.is_empty())
            .or_else(|| self.header_event.clone());
        let Some((name, kind)) = name.and_then(|n| routing_part(&n).map(|k| (n, k))) else {
            return Event::unrecognized("", raw);
        };
        // The event name is part of the key: with `event_header`, two different events may
        // carry the same body.
        let key = match cfg.id_pointer.as_deref().and_then(|p| element.str_at(p)) {
            Some(id) => [&*kind, ":id:", &id].concat(),
            None => [&*kind, ":hash:", &hash_hex(raw.get().as_bytes())].concat(),
        };
        let entity_id = cfg
            .entity_id_pointer
            .as_deref()
            .and_then(|p| element.str_at(p))
            .or_else(|| fallback(&self.body.entity_id));
        let mut event = Event::new(name, kind, key, raw);
        event.entity_id = entity_id;
        event
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use super::GenericConfig;
    use crate::providers::testing::{endpoint, events};

    fn generic(cfg: GenericConfig) -> crate::providers::testing::TestEndpoint {
        let mut ep = endpoint(&PROVIDER);
        ep.options = Options::new(cfg);
        ep
    }

    #[test]
    fn routing_part_sanitizes() {
        assert_eq!(routing_part("push").as_deref(), Some("push"));
        assert_eq!(
            routing_part("Invoice.Paid").as_deref(),
            Some("invoice.paid")
        );
        assert_eq!(
            routing_part("order created/#*").as_deref(),
            Some("order_created___")
        );
        assert_eq!(routing_part("..a..b.").as_deref(), Some("a.b"));
        assert_eq!(routing_part("é").as_deref(), Some("_"));
        assert_eq!(routing_part("..."), None);
        assert_eq!(routing_part(""), None);
        assert!(routing_part(&"x".repeat(1000)).unwrap().len() <= MAX_EVENT_LEN);
    }

    #[test]
    fn event_from_pointer_or_header() {
        let ep = generic(GenericConfig {
            source: Some("acme".into()),
            event_pointer: Some("/type".into()),
            event_header: Some("x-event".into()),
            entity_id_pointer: Some("/data/id".into()),
            id_pointer: Some("/id".into()),
            ..GenericConfig::default()
        });
        let ev = events(
            &ep,
            &[],
            br#"{"id":"evt_1","type":"Invoice.Paid","data":{"id":42}}"#,
        );
        assert_eq!(ev[0].kind, "invoice.paid");
        assert_eq!(ev[0].event, "Invoice.Paid");
        assert_eq!(ev[0].entity_id.as_deref(), Some("42"));
        assert_eq!(ev[0].natural_key, "invoice.paid:id:evt_1");
        let ev = events(&ep, &[("x-event", "ping")], br#"{"zen":"ok"}"#);
        assert_eq!(ev[0].kind, "ping");
        assert!(ev[0].natural_key.starts_with("ping:hash:"));
        let pong = events(&ep, &[("x-event", "pong")], br#"{"zen":"ok"}"#);
        assert_ne!(
            pong[0].natural_key, ev[0].natural_key,
            "same body, other event"
        );
        assert!(events(&ep, &[], br#"{"zen":"ok"}"#)[0].is_unrecognized());
        assert_eq!(events(&ep, &[], br##"{"type":"#"}"##)[0].kind, "_");
        assert!(events(&ep, &[], br#"{"type":"..."}"#)[0].is_unrecognized());
    }

    #[test]
    fn split_pointer_makes_one_event_per_element() {
        let ep = generic(GenericConfig {
            event_pointer: Some("/kind".into()),
            split_pointer: Some("/events".into()),
            entity_id_pointer: Some("/ref".into()),
            ..GenericConfig::default()
        });
        let body =
            br#"{"kind":"parcel.scan","events":[{"ref":"A"},{"ref":"B","kind":"parcel.lost"},7]}"#;
        let ev = events(&ep, &[], body);
        assert_eq!(ev.len(), 3);
        assert_eq!(ev[0].kind, "parcel.scan");
        assert_eq!(ev[0].entity_id.as_deref(), Some("A"));
        assert_eq!(ev[1].kind, "parcel.lost");
        assert_eq!(ev[2].kind, "parcel.scan");
        assert_eq!(ev[2].payload.get(), "7");
        assert_eq!(ev[1].batch, Some(Batch { index: 1, size: 3 }));
        assert!(events(&ep, &[], br#"{"kind":"x","events":[]}"#).is_empty());
        assert!(events(&ep, &[], br#"{"kind":"x","events":{}}"#)[0].is_unrecognized());
        assert!(events(&ep, &[], br#"{"kind":"x"}"#)[0].is_unrecognized());
    }
}
