//! Peddler shipment webhooks: `x-webhook-shared-token: <secret>`; every body →
//! `peddler.shipment.status_changed`. Natural key: `id` + `status` + `ts`.

use super::json::Doc;
use super::{Event, Inbound, ParseError, Parsed, Status};
use super::{Provider, Sample};
use super::samples::sample_file;
use crate::auth::AuthConfig;

/// Peddler: shared-token header; shipment status changes.
pub static PROVIDER: Provider = Provider {
    name: "peddler",
    default_auth,
    kinds: |_| vec!["shipment.status_changed"],
    samples: SAMPLES,
    parse,
    status_tables: &[("#### peddler", status)],
    ..Provider::BASE
};

/// `x-webhook-shared-token: <secret>`.
fn default_auth() -> Option<AuthConfig> {
    Some(AuthConfig::Header {
        header: "x-webhook-shared-token".into(),
    })
}

pub const CONFIRMED: &[u8] = sample_file!("peddler/shipment_confirmed.json");
pub const OUT_FOR_DELIVERY: &[u8] = sample_file!("peddler/out_for_delivery.json");

/// The documented samples, for `send --sample NAME` and the tests.
pub const SAMPLES: &[Sample] = &[
    Sample {
        name: "shipment_confirmed",
        body: CONFIRMED,
    },
    Sample {
        name: "out_for_delivery",
        body: OUT_FOR_DELIVERY,
    },
];

/// Peddler shipment status → canonical status. Peddler documents `SHIPMENT_CONFIRMED`,
/// `OUT_FOR_DELIVERY` and `DELIVERED`; the others are the carrier vocabulary seen in its API.
pub fn status(s: &str) -> Status {
    match s {
        "SHIPMENT_CONFIRMED" | "CREATED" => Status::Created,
        "PICKED_UP" | "IN_TRANSIT" | "SHIPPED" => Status::InTransit,
        "OUT_FOR_DELIVERY" => Status::OutForDelivery,
        "DELIVERED" => Status::Delivered,
        "FAILED_DELIVERY" | "DELIVERY_FAILED" | "NOT_DELIVERED" => Status::DeliveryFailed,
        "RETURNING" | "RETURN_TO_SENDER" => Status::Returning,
        "RETURNED" => Status::Returned,
        "CANCELLED" | "CANCELED" => Status::Cancelled,
        "EXCEPTION" => Status::Exception,
        _ => Status::Unknown,
    }
}

pub fn parse(inbound: &Inbound<'_>) -> Result<Parsed, ParseError> {
    let doc = Doc::parse(inbound.body)?;
    let (Some(id), Some(provider_status)) = (doc.str_at("/id"), doc.str_at("/status")) else {
        return Ok(Parsed::Events(vec![Event::unrecognized("", doc.payload())]));
    };
    let ts = doc.str_at("/ts");
    let mut event = Event::new(
        "shipment.status",
        "shipment.status_changed",
        [id.as_str(), ":", &provider_status, ":", ts.as_deref().unwrap_or("")].concat(),
        doc.payload(),
    );
    event.entity = Some("shipment".into());
    event.entity_id = Some(id);
    event.status = Some(status(&provider_status));
    event.provider_status = Some(provider_status);
    event.tracking_number = doc.str_at("/carrierTrackingNumber");
    // Only this part is parsed into a `Value`: the event keeps it as JSON.
    event.location = doc.value_at("/location").filter(|l| !l.is_null());
    event.occurred_at = ts;
    Ok(Parsed::Events(vec![event]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::testing::{endpoint, events};

    #[test]
    fn samples_map_and_keep_location() {
        let ep = endpoint(&PROVIDER);
        let ev = events(&ep, &[], CONFIRMED);
        assert_eq!(ev[0].status, Some(Status::Created));
        assert_eq!(
            ev[0].tracking_number.as_deref(),
            Some("P123456789012345678")
        );
        assert!(ev[0].location.is_none());
        let ev = events(&ep, &[], OUT_FOR_DELIVERY);
        assert_eq!(ev[0].status, Some(Status::OutForDelivery));
        assert_eq!(
            ev[0]
                .location
                .as_ref()
                .and_then(|l| l.get("lat"))
                .and_then(|v| v.as_f64()),
            Some(52.3409992)
        );
        assert_eq!(
            ev[0].natural_key,
            "PlakFjJkuYatSCXFvDxTs:OUT_FOR_DELIVERY:2023-06-14T10:54:55.896Z"
        );
    }

    #[test]
    fn body_without_id_is_unrecognized() {
        let ep = endpoint(&PROVIDER);
        assert!(events(&ep, &[], br#"{"hello":"world"}"#)[0].is_unrecognized());
    }
}
