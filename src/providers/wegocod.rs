//! WeGoCOD order webhooks: `X-Webhook-Signature` is the lowercase hex HMAC-SHA256 of the raw
//! body; `order.status_updated` → `wegocod.order.status_changed`. The natural key is
//! `order.reference` + `new_status`, as WeGoCOD itself recommends for de-duplication.

use super::json::Doc;
use super::{Event, Inbound, ParseError, Parsed, Status, str_at};
use super::{Provider, Sample};
use super::samples::sample_file;
use crate::auth::{AuthConfig, HmacAlgorithm, MacEncoding};

/// WeGoCOD: hex HMAC-SHA256 of the body; order status changes.
pub static PROVIDER: Provider = Provider {
    name: "wegocod",
    default_auth,
    kinds: |_| vec!["order.status_changed"],
    samples: SAMPLES,
    parse,
    sender_headers,
    status_tables: &[("#### wegocod", status)],
    ..Provider::BASE
};

/// WeGoCOD sends the event name and a timestamp next to the signature.
fn sender_headers(body: &[u8], now: std::time::SystemTime) -> Vec<(&'static str, String)> {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let event = str_at(&value, "/event").unwrap_or_else(|| "order.status_updated".into());
    let ts = str_at(&value, "/timestamp")
        .unwrap_or_else(|| chrono::DateTime::<chrono::Utc>::from(now).to_rfc3339());
    vec![("x-webhook-event", event), ("x-webhook-timestamp", ts)]
}

/// `X-Webhook-Signature`: lowercase hex HMAC-SHA256 of the raw body.
fn default_auth() -> Option<AuthConfig> {
    Some(AuthConfig::Hmac {
        header: "x-webhook-signature".into(),
        algorithm: HmacAlgorithm::Sha256,
        encoding: MacEncoding::Hex,
        prefix: None,
    })
}

pub const DELIVERED: &[u8] = sample_file!("wegocod/delivered.json");

/// The documented samples, for `send --sample NAME` and the tests.
pub const SAMPLES: &[Sample] = &[
    Sample {
        name: "delivered",
        body: DELIVERED,
    },
];

/// `new_status` → canonical status (WeGoCOD status transition table). WeGoCOD's `returned`
/// means "customer refused / delivery failed" and may be followed by `delivered` (re-attempted)
/// or by `return_received` (back at the warehouse): a failed delivery, not yet a return.
pub fn status(s: &str) -> Status {
    match s {
        "pending" => Status::Created,
        "picked_up" | "preparing" => Status::Processing,
        "prepared" => Status::Packed,
        "out_for_delivery" => Status::OutForDelivery,
        "delivered" => Status::Delivered,
        "returned" => Status::DeliveryFailed,
        "return_received" => Status::Returned,
        "returned_to_stock" => Status::Restocked,
        "cancelled" | "canceled" => Status::Cancelled,
        _ => Status::Unknown,
    }
}

pub fn parse(inbound: &Inbound<'_>) -> Result<Parsed, ParseError> {
    let doc = Doc::parse(inbound.body)?;
    let event_name = doc
        .str_at("/event")
        .or_else(|| {
            inbound
                .headers
                .get("x-webhook-event")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    // Four fields of one nested object: its entries are cut once, not scanned per field.
    let order = doc.nested("order");
    let order_str = |pointer: &str| order.as_ref().and_then(|o| o.str_at(pointer));
    let reference = order_str("/reference");
    let new_status = order_str("/new_status");
    let (true, Some(reference), Some(new_status)) =
        (event_name == "order.status_updated", reference, new_status)
    else {
        return Ok(Parsed::Events(vec![Event::unrecognized(
            event_name,
            doc.payload(),
        )]));
    };
    let mut event = Event::new(
        event_name,
        "order.status_changed",
        [reference.as_str(), ":", &new_status].concat(),
        doc.payload(),
    );
    event.entity = Some("order".into());
    event.entity_id = Some(reference);
    event.status = Some(status(&new_status));
    event.provider_status = Some(new_status);
    event.previous_status = order_str("/old_status");
    event.tracking_number = order_str("/tracking_number");
    event.occurred_at = doc.str_at("/timestamp");
    Ok(Parsed::Events(vec![event]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::testing::{endpoint, events};

    #[test]
    fn sample_maps_to_delivered() {
        let ep = endpoint(&PROVIDER);
        let ev = events(&ep, &[], DELIVERED);
        assert_eq!(ev[0].kind, "order.status_changed");
        assert_eq!(ev[0].entity_id.as_deref(), Some("ORD-000129"));
        assert_eq!(ev[0].status, Some(Status::Delivered));
        assert_eq!(ev[0].previous_status.as_deref(), Some("out_for_delivery"));
        assert_eq!(ev[0].tracking_number.as_deref(), Some("F-CSA6SFJ6EMY"));
        assert_eq!(ev[0].natural_key, "ORD-000129:delivered");
    }

    #[test]
    fn status_table_follows_spec() {
        for (s, want) in [
            ("pending", Status::Created),
            ("picked_up", Status::Processing),
            ("preparing", Status::Processing),
            ("prepared", Status::Packed),
            ("out_for_delivery", Status::OutForDelivery),
            ("delivered", Status::Delivered),
            ("returned", Status::DeliveryFailed),
            ("return_received", Status::Returned),
            ("returned_to_stock", Status::Restocked),
            ("teleported", Status::Unknown),
        ] {
            assert_eq!(status(s), want, "{s}");
        }
    }

    #[test]
    fn event_name_may_come_from_header() {
        let ep = endpoint(&PROVIDER);
        let body = br#"{"order":{"reference":"R1","new_status":"prepared"}}"#;
        let ev = events(&ep, &[("x-webhook-event", "order.status_updated")], body);
        assert_eq!(ev[0].status, Some(Status::Packed));
        let ev = events(&ep, &[], body);
        assert!(ev[0].is_unrecognized());
    }
}
