//! Modexpress Saleskit outbound-order webhooks: `Authorization: Bearer <secret>`, one event per
//! request, `shp.status.update` / `order.status.update` → `modexpress.order.status_changed`.

use super::json::{self, Doc};
use super::{Event, Inbound, ParseError, Parsed, Status};
use super::{Provider, Sample};
use super::samples::sample_file;
use crate::auth::AuthConfig;

/// Modexpress: bearer token; order status changes.
pub static PROVIDER: Provider = Provider {
    name: "modexpress",
    default_auth,
    kinds: |_| vec!["order.status_changed"],
    samples: SAMPLES,
    parse,
    status_tables: &[("#### modexpress", status)],
    ..Provider::BASE
};

/// `Authorization: Bearer <secret>`.
fn default_auth() -> Option<AuthConfig> {
    Some(AuthConfig::Bearer)
}

pub const IN_PROGRESS: &[u8] = sample_file!("modexpress/in_progress.json");

/// The documented samples, for `send --sample NAME` and the tests.
pub const SAMPLES: &[Sample] = &[
    Sample {
        name: "in_progress",
        body: IN_PROGRESS,
    },
];

/// Processing status id → canonical status (Modexpress "Status field values").
pub fn status(id: &str) -> Status {
    match id {
        "N" => Status::Created,
        "I" => Status::Processing,
        "P" => Status::Packed,
        "S" => Status::InTransit,
        "C" => Status::Cancelled,
        _ => Status::Unknown,
    }
}

pub fn parse(inbound: &Inbound<'_>) -> Result<Parsed, ParseError> {
    let doc = Doc::parse(inbound.body)?;
    // The documentation says `action` defaults to order.status.update when absent.
    let action = match doc.get("action") {
        None => "order.status.update".to_string(),
        Some(action) if action.get() == "null" => "order.status.update".to_string(),
        Some(action) => match json::string(action) {
            Some(s) => s,
            None => return Ok(Parsed::Events(vec![Event::unrecognized("", doc.payload())])),
        },
    };
    let order_id = doc.str_at("/payload/Id");
    let status_id = doc.str_at("/payload/ProcessingStatus/Id");
    let known = matches!(action.as_str(), "shp.status.update" | "order.status.update");
    let (Some(order_id), Some(status_id), true) = (order_id, status_id, known) else {
        return Ok(Parsed::Events(vec![Event::unrecognized(
            action,
            doc.payload(),
        )]));
    };
    let mut event = Event::new(
        action,
        "order.status_changed",
        [order_id.as_str(), ":", &status_id].concat(),
        doc.payload(),
    );
    event.entity = Some("order".into());
    event.entity_id = Some(order_id);
    event.status = Some(status(&status_id));
    event.provider_status = Some(status_id);
    Ok(Parsed::Events(vec![event]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::testing::{endpoint, events};

    #[test]
    fn sample_maps_to_processing() {
        let ep = endpoint(&PROVIDER);
        let ev = events(&ep, &[], IN_PROGRESS);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].kind, "order.status_changed");
        assert_eq!(ev[0].entity_id.as_deref(), Some("123456"));
        assert_eq!(ev[0].status, Some(Status::Processing));
        assert_eq!(ev[0].natural_key, "123456:I");
    }

    #[test]
    fn status_table_is_complete() {
        let table = [
            ("N", Status::Created),
            ("I", Status::Processing),
            ("P", Status::Packed),
            ("S", Status::InTransit),
            ("C", Status::Cancelled),
            ("X", Status::Unknown),
        ];
        for (id, want) in table {
            assert_eq!(status(id), want, "{id}");
        }
    }

    #[test]
    fn other_action_is_unrecognized() {
        let ep = endpoint(&PROVIDER);
        let ev = events(
            &ep,
            &[],
            br#"{"action":"inventory.changed","payload":{"Id":"1"}}"#,
        );
        assert!(ev[0].is_unrecognized());
        assert_eq!(ev[0].event, "inventory.changed");
    }
}
