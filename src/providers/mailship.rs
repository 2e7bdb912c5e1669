//! Mailship webhooks. Mailship documents no signature scheme, so the default is a secret token as
//! the last path segment (Basic auth can be configured instead). One event per request, of five
//! kinds. Each is recognised by its payload shape, or fixed per endpoint with
//! `event = "<name>"` when Mailship is set up to send one event type to one URL:
//!
//! | `event` name        | shape (besides `id`)           | routing key                              | entity id      |
//! |---------------------|--------------------------------|------------------------------------------|----------------|
//! | `expedition_status` | `status` + `orderNumber`       | `mailship.order.status_changed`          | `orderNumber`  |
//! | `expedition_booked` | `orderNumber`, no `status`     | `mailship.order.stock_booked`            | `orderNumber`  |
//! | `product_stock`     | `changes` + `productId`        | `mailship.product.stock_changed`         | `productSku`*  |
//! | `product_change`    | `productSku`/`internalSku`     | `mailship.product.updated`               | `productSku`*  |
//! | `stock_advice`      | `newStatus`                    | `mailship.stock_advice.status_changed`   | `internalId`   |
//!
//! \* `productSku`, else `internalSku`, else `productId`: the same product gets the same subject in
//! both product events. Stock and product events have `status: null`; a stock change carries
//! Mailship's `changes` (before/after/delta per quantity) in `data.changes`. Stock advice events
//! have `status: null` too: a stock advice is an inbound delivery to the warehouse, whose
//! statuses (`new`, `waiting`, `in_progress`, `finished`…) are not steps of an order's or a
//! parcel's lifecycle; Mailship's value is in `provider_status`.
//!
//! Natural key: Mailship's `id` (documented as the id of the update event). For the two status
//! events the new status is appended: should `id` ever turn out to be the expedition's or advice's
//! own id, a later status change still gets a new envelope id instead of being taken for a retry.
//! A body without `id`, or that fits no shape, is published as `mailship.unrecognized`.

use serde_json::Map;

use super::json::Doc;
use super::{Event, Inbound, ParseError, Parsed, Status};
use super::{Checked, OptionProblem, Options, Provider, Sample, options_of};
use super::samples::sample_file;
use crate::auth::AuthConfig;

/// Mailship: token as the last path segment; five event kinds, by shape or fixed per endpoint.
pub static PROVIDER: Provider = Provider {
    name: "mailship",
    default_auth: || Some(AuthConfig::PathToken),
    kinds,
    samples: SAMPLES,
    parse,
    option_keys: &["event"],
    options: options_of::<MailshipOptions>,
    check,
    status_tables: &[("#### mailship expeditions", expedition_status)],
    ..Provider::BASE
};

/// A Mailship endpoint's own keys.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailshipOptions {
    /// The one event type this endpoint receives (recognised by shape when unset).
    #[serde(default)]
    pub event: Option<String>,
}

static NO_OPTIONS: MailshipOptions = MailshipOptions { event: None };

/// The endpoint's Mailship options; none set when it has none.
fn own(options: &Options) -> &MailshipOptions {
    options.get().unwrap_or(&NO_OPTIONS)
}

/// Every kind, or only the fixed event's.
fn kinds(options: &Options) -> Vec<&'static str> {
    match own(options).event.as_deref().and_then(MailshipEvent::from_name) {
        Some(fixed) => vec![fixed.kind()],
        None => MailshipEvent::ALL.iter().map(|e| e.kind()).collect(),
    }
}

/// `event`, when set, must name one of the five events.
fn check(options: &Options) -> Checked {
    match &own(options).event {
        Some(event) if MailshipEvent::from_name(event).is_none() => {
            let names: Vec<&str> = MailshipEvent::ALL.iter().map(|e| e.name()).collect();
            Err(OptionProblem {
                key: "event",
                message: format!(
                    "unknown Mailship event {event:?}; one of {}",
                    names.join(", ")
                ),
            })
        }
        _ => Ok(Vec::new()),
    }
}

pub const EXPEDITION_STATUS: &[u8] = sample_file!("mailship/expedition_status.json");
pub const EXPEDITION_BOOKED: &[u8] = sample_file!("mailship/expedition_booked.json");
pub const PRODUCT_STOCK: &[u8] = sample_file!("mailship/product_stock.json");
pub const PRODUCT_CHANGE: &[u8] = sample_file!("mailship/product_change.json");
pub const STOCK_ADVICE: &[u8] = sample_file!("mailship/stock_advice.json");

/// The documented samples, for `send --sample NAME` and the tests.
pub const SAMPLES: &[Sample] = &[
    Sample {
        name: "expedition_status",
        body: EXPEDITION_STATUS,
    },
    Sample {
        name: "expedition_booked",
        body: EXPEDITION_BOOKED,
    },
    Sample {
        name: "product_stock",
        body: PRODUCT_STOCK,
    },
    Sample {
        name: "product_change",
        body: PRODUCT_CHANGE,
    },
    Sample {
        name: "stock_advice",
        body: STOCK_ADVICE,
    },
];

/// The five Mailship webhook events; the names are the accepted values of an endpoint's `event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailshipEvent {
    ExpeditionStatus,
    ExpeditionBooked,
    ProductStock,
    ProductChange,
    StockAdvice,
}

impl MailshipEvent {
    pub const ALL: [Self; 5] = [
        Self::ExpeditionStatus,
        Self::ExpeditionBooked,
        Self::ProductStock,
        Self::ProductChange,
        Self::StockAdvice,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::ExpeditionStatus => "expedition_status",
            Self::ExpeditionBooked => "expedition_booked",
            Self::ProductStock => "product_stock",
            Self::ProductChange => "product_change",
            Self::StockAdvice => "stock_advice",
        }
    }

    /// Parse an endpoint's `event` setting.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.name() == name)
    }

    /// `entity.action` of the routing key.
    pub fn kind(self) -> &'static str {
        match self {
            Self::ExpeditionStatus => "order.status_changed",
            Self::ExpeditionBooked => "order.stock_booked",
            Self::ProductStock => "product.stock_changed",
            Self::ProductChange => "product.updated",
            Self::StockAdvice => "stock_advice.status_changed",
        }
    }

    fn entity(self) -> &'static str {
        match self {
            Self::ExpeditionStatus | Self::ExpeditionBooked => "order",
            Self::ProductStock | Self::ProductChange => "product",
            Self::StockAdvice => "stock_advice",
        }
    }

    /// Recognise the event by the top-level fields present (`null` counts as present).
    fn by_shape(doc: &Doc<'_>) -> Option<Self> {
        let has = |key| doc.get(key).is_some();
        if has("newStatus") {
            Some(Self::StockAdvice)
        } else if has("changes") {
            Some(Self::ProductStock)
        } else if has("orderNumber") {
            if has("status") {
                Some(Self::ExpeditionStatus)
            } else {
                Some(Self::ExpeditionBooked)
            }
        } else if has("productSku") || has("internalSku") {
            Some(Self::ProductChange)
        } else {
            None
        }
    }
}

/// Expedition (order) status → canonical status (Mailship "expedition statuses").
pub fn expedition_status(s: &str) -> Status {
    match s {
        "incorrect" => Status::Exception,
        "waiting_for_goods" | "stock_ok" | "on_hold" => Status::OnHold,
        "awaiting_processing" | "awaiting_reservation" => Status::Created,
        "take_out" => Status::Processing,
        "completion" => Status::Packed,
        "waiting_for_the_carrier" => Status::ReadyForCarrier,
        "ready_to_takeover" => Status::ReadyForPickup,
        "carrier_picked_up" => Status::InTransit,
        "delivered" => Status::Delivered,
        "returning" => Status::Returning,
        "returned" => Status::Returned,
        "canceled" | "cancelled" => Status::Cancelled,
        _ => Status::Unknown,
    }
}

pub fn parse(inbound: &Inbound<'_>) -> Result<Parsed, ParseError> {
    let doc = Doc::parse(inbound.body)?;
    let fixed = own(inbound.options).event.as_deref();
    let unrecognized = || {
        Ok(Parsed::Events(vec![Event::unrecognized(
            fixed.unwrap_or(""),
            doc.payload(),
        )]))
    };
    let (true, Some(id)) = (doc.is_object(), doc.str_at("/id")) else {
        return unrecognized();
    };
    let kind = match fixed {
        Some(name) => MailshipEvent::from_name(name),
        None => MailshipEvent::by_shape(&doc),
    };
    let Some(kind) = kind else {
        return unrecognized();
    };
    let entity_id = match kind {
        MailshipEvent::ExpeditionStatus | MailshipEvent::ExpeditionBooked => {
            doc.str_at("/orderNumber")
        }
        MailshipEvent::ProductStock | MailshipEvent::ProductChange => doc
            .str_at("/productSku")
            .or_else(|| doc.str_at("/internalSku"))
            .or_else(|| doc.str_at("/productId")),
        MailshipEvent::StockAdvice => doc.str_at("/internalId"),
    };
    let provider_status = match kind {
        MailshipEvent::ExpeditionStatus => doc.str_at("/status"),
        MailshipEvent::StockAdvice => doc.str_at("/newStatus"),
        _ => None,
    };
    let natural_key = match &provider_status {
        Some(s) => [id.as_str(), ":", s.as_str()].concat(),
        None => id,
    };
    let mut event = Event::new(kind.name(), kind.kind(), natural_key, doc.payload());
    event.entity = Some(kind.entity().into());
    event.entity_id = entity_id;
    event.status = match kind {
        MailshipEvent::ExpeditionStatus => Some(
            provider_status
                .as_deref()
                .map_or(Status::Unknown, expedition_status),
        ),
        // Not an order status (see the module docs): `provider_status` only.
        _ => None,
    };
    event.provider_status = provider_status;
    event.occurred_at = doc.str_at("/timestamp");
    // Only `changes` is parsed into a `Value`: the event carries it as JSON.
    if kind == MailshipEvent::ProductStock
        && let Some(changes) = doc.value_at("/changes")
    {
        let mut extra = Map::new();
        extra.insert("changes".into(), changes);
        event.extra = Some(extra);
    }
    Ok(Parsed::Events(vec![event]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::testing::{endpoint, events};

    #[test]
    fn expedition_status_table() {
        for (s, want) in [
            ("incorrect", Status::Exception),
            ("waiting_for_goods", Status::OnHold),
            ("stock_ok", Status::OnHold),
            ("on_hold", Status::OnHold),
            ("awaiting_processing", Status::Created),
            ("awaiting_reservation", Status::Created),
            ("take_out", Status::Processing),
            ("completion", Status::Packed),
            ("waiting_for_the_carrier", Status::ReadyForCarrier),
            ("ready_to_takeover", Status::ReadyForPickup),
            ("carrier_picked_up", Status::InTransit),
            ("delivered", Status::Delivered),
            ("returning", Status::Returning),
            ("returned", Status::Returned),
            ("canceled", Status::Cancelled),
            ("vanished", Status::Unknown),
        ] {
            assert_eq!(expedition_status(s), want, "{s}");
        }
    }

    #[test]
    fn stock_advice_statuses_are_kept_out_of_the_order_vocabulary() {
        let ep = endpoint(&PROVIDER);
        for s in [
            "new",
            "incorrect",
            "waiting",
            "in_progress",
            "partially_finished",
            "finished",
            "canceled",
            "closed",
            "lost",
        ] {
            let body = format!(r#"{{"id":"a-{s}","newStatus":"{s}","internalId":"SA-1"}}"#);
            let ev = events(&ep, &[], body.as_bytes());
            assert_eq!(ev[0].kind, "stock_advice.status_changed");
            assert_eq!(ev[0].status, None, "{s}");
            assert_eq!(ev[0].provider_status.as_deref(), Some(s));
            assert_eq!(ev[0].natural_key, format!("a-{s}:{s}"));
        }
    }

    #[test]
    fn every_sample_is_recognised_by_shape() {
        let ep = endpoint(&PROVIDER);
        for (body, kind, entity_id, status) in [
            (
                EXPEDITION_STATUS,
                "order.status_changed",
                "testOrder1",
                Some(Status::ReadyForCarrier),
            ),
            (
                EXPEDITION_BOOKED,
                "order.stock_booked",
                "testOrder2",
                None,
            ),
            (
                PRODUCT_STOCK,
                "product.stock_changed",
                "testProduct1",
                None,
            ),
            (
                PRODUCT_CHANGE,
                "product.updated",
                "8595717724834",
                None,
            ),
            (
                STOCK_ADVICE,
                "stock_advice.status_changed",
                "testStockAdvice1",
                None,
            ),
        ] {
            let ev = events(&ep, &[], body);
            assert_eq!(ev.len(), 1);
            assert_eq!(ev[0].kind, kind);
            assert_eq!(ev[0].entity_id.as_deref(), Some(entity_id), "{kind}");
            assert_eq!(ev[0].status, status, "{kind}");
            assert!(ev[0].occurred_at.is_some());
        }
    }

    #[test]
    fn stock_change_carries_changes_and_fixed_event_overrides_shape() {
        let ep = endpoint(&PROVIDER);
        let ev = events(&ep, &[], PRODUCT_STOCK);
        let extra = ev[0].extra.as_ref().unwrap();
        assert_eq!(extra["changes"]["quantity"]["delta"], -1);
        assert_eq!(
            ev[0].natural_key, "3f42bed9-d65a-41f5-8333-464cc91e5b4c",
            "Mailship id"
        );

        let mut fixed = endpoint(&PROVIDER);
        fixed.options = fixed_event("expedition_booked");
        let ev = events(&fixed, &[], EXPEDITION_STATUS);
        assert_eq!(ev[0].kind, "order.stock_booked");
        assert_eq!(ev[0].status, None);
    }

    fn fixed_event(event: &str) -> Options {
        Options::new(MailshipOptions {
            event: Some(event.into()),
        })
    }

    #[test]
    fn check_accepts_only_known_event_names() {
        let with = fixed_event;
        for e in MailshipEvent::ALL {
            assert_eq!(check(&with(e.name())), Ok(Vec::new()));
        }
        let err = check(&with("expedition")).unwrap_err();
        assert_eq!(err.key, "event");
        assert!(err.message.contains("stock_advice"), "{}", err.message);
    }

    #[test]
    fn unknown_shapes_are_unrecognized() {
        let ep = endpoint(&PROVIDER);
        assert!(events(&ep, &[], br#"{"id":"x","what":1}"#)[0].is_unrecognized());
        assert!(
            events(&ep, &[], br#"{"orderNumber":"o","status":"delivered"}"#)[0].is_unrecognized()
        );
        assert!(events(&ep, &[], br#"[1]"#)[0].is_unrecognized());
        let mut bad = endpoint(&PROVIDER);
        bad.options = fixed_event("nonsense");
        assert!(events(&bad, &[], EXPEDITION_STATUS)[0].is_unrecognized());
    }
}
