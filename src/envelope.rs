//! Event → CloudEvents 1.0 structured JSON plus the facts the publisher turns into AMQP
//! properties. Ids are deterministic: the same provider event always yields the same id, so a
//! provider's retry and the original share `message_id` downstream.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::config::EndpointConfig;
use crate::message::Message;
use crate::providers::{Batch, Event, Status};

#[derive(Serialize)]
struct CloudEvent<'a> {
    specversion: &'static str,
    id: &'a str,
    source: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a str>,
    time: &'a str,
    datacontenttype: &'static str,
    data: Data<'a>,
}

#[derive(Serialize)]
struct Data<'a> {
    provider: &'a str,
    account: &'a str,
    event: &'a str,
    entity: Option<&'a str>,
    entity_id: Option<&'a str>,
    status: Option<Status>,
    provider_status: Option<&'a str>,
    previous_status: Option<&'a str>,
    tracking_number: Option<&'a str>,
    tracking_url: Option<&'a str>,
    location: Option<&'a Value>,
    occurred_at: Option<&'a str>,
    received_at: &'a str,
    batch: Option<Batch>,
    #[serde(flatten)]
    extra: Option<&'a serde_json::Map<String, Value>>,
    payload: &'a RawValue,
}

/// Room reserved for everything in the envelope but the provider's payload.
const ENVELOPE_OVERHEAD: usize = 1024;

/// Deterministic id: SHA-256 over provider, account and the provider's natural key, shaped as
/// a UUID so consumers can store it in a uuid column.
pub fn event_id(provider: &str, account: &str, natural_key: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::new()
        .chain_update(provider)
        .chain_update([0])
        .chain_update(account)
        .chain_update([0])
        .chain_update(natural_key)
        .finalize();
    // The first 16 bytes in lowercase hex, grouped 8-4-4-4-12: one allocation, and no step
    // that could fail and leave an empty id.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = String::with_capacity(36);
    for (i, byte) in digest[..16].iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            id.push('-');
        }
        id.push(char::from(HEX[usize::from(byte >> 4)]));
        id.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    id
}

/// Build the message for one event received at `received`.
pub fn encode(
    endpoint: &EndpointConfig,
    event: &Event,
    received: DateTime<Utc>,
) -> Result<Message, serde_json::Error> {
    let provider = endpoint.provider_name();
    // `concat`: one allocation at the size, per event, where `format!` would go through the
    // formatting machinery.
    let routing_key = [provider, ".", &event.kind].concat();
    let id = event_id(provider, &endpoint.name, &event.natural_key);
    let source = ["webhook-bridge/", provider, "/", &endpoint.name].concat();
    let received_at = received.to_rfc3339_opts(SecondsFormat::Millis, true);
    // CloudEvents `time` must be RFC 3339; provider timestamps that are not fall back to receipt.
    let time = event
        .occurred_at
        .as_deref()
        .filter(|t| DateTime::parse_from_rfc3339(t).is_ok())
        .unwrap_or(&received_at);
    let ce = CloudEvent {
        specversion: "1.0",
        id: &id,
        source: &source,
        kind: &routing_key,
        subject: event.entity_id.as_deref(),
        time,
        datacontenttype: "application/json",
        data: Data {
            provider,
            account: &endpoint.name,
            event: &event.event,
            entity: event.entity.as_deref(),
            entity_id: event.entity_id.as_deref(),
            status: event.status,
            provider_status: event.provider_status.as_deref(),
            previous_status: event.previous_status.as_deref(),
            tracking_number: event.tracking_number.as_deref(),
            tracking_url: event.tracking_url.as_deref(),
            location: event.location.as_ref(),
            occurred_at: event.occurred_at.as_deref(),
            received_at: &received_at,
            batch: event.batch,
            extra: event.extra.as_ref(),
            payload: &event.payload,
        },
    };
    // Sized once: the provider's JSON plus the envelope's own fields (about 700 bytes), so the
    // buffer is not doubled past the message's size while serializing; in-flight messages are
    // most of the bridge's memory under load.
    let mut body = Vec::with_capacity(event.payload.get().len() + ENVELOPE_OVERHEAD);
    serde_json::to_writer(&mut body, &ce)?;
    if body.capacity() - body.len() > ENVELOPE_OVERHEAD {
        body.shrink_to_fit();
    }
    Ok(Message {
        id,
        routing_key,
        source,
        timestamp: u64::try_from(received.timestamp()).unwrap_or(0),
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{endpoint, events};
    use crate::providers;

    #[test]
    fn wegocod_sample_envelope_has_every_field() {
        let ep = endpoint("wegocod");
        let ev = events(&ep, providers::wegocod::DELIVERED);
        let msg = encode(&ep, &ev[0], Utc::now()).unwrap();
        let v: Value = serde_json::from_slice(&msg.body).unwrap();
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["type"], "wegocod.order.status_changed");
        assert_eq!(msg.routing_key, "wegocod.order.status_changed");
        assert_eq!(v["subject"], "ORD-000129");
        assert_eq!(v["time"], "2026-05-09T12:00:00+02:00");
        assert_eq!(v["source"], "webhook-bridge/wegocod/wegocod-test");
        assert_eq!(v["data"]["status"], "delivered");
        assert_eq!(v["data"]["previous_status"], "out_for_delivery");
        assert_eq!(v["data"]["batch"], Value::Null);
        assert_eq!(v["data"]["tracking_url"], Value::Null);
        assert_eq!(v["data"]["payload"]["customer"]["city"], "Casablanca");
        assert_eq!(v["id"], msg.id.as_str());
    }

    /// The id is the first 16 bytes of SHA-256(provider NUL account NUL natural key), as
    /// 8-4-4-4-12 hex (docs/contract.md §5.3; the value computed with Python's hashlib).
    #[test]
    fn event_id_is_the_documented_digest() {
        assert_eq!(
            event_id("wegocod", "wegocod-ma", "ORD-1:delivered"),
            "93f63fa5-cce8-fb7e-76eb-4b7f9fcce6c6"
        );
    }

    #[test]
    fn same_event_same_id_different_event_different_id() {
        let ep = endpoint("wegocod");
        let a = events(&ep, providers::wegocod::DELIVERED);
        let b = events(&ep, providers::wegocod::DELIVERED);
        let t = Utc::now();
        assert_eq!(
            encode(&ep, &a[0], t).unwrap().id,
            encode(&ep, &b[0], t).unwrap().id
        );
        let other = String::from_utf8_lossy(providers::wegocod::DELIVERED)
            .replace("\"delivered\"", "\"returned\"");
        let c = events(&ep, other.as_bytes());
        assert_ne!(
            encode(&ep, &a[0], t).unwrap().id,
            encode(&ep, &c[0], t).unwrap().id
        );
    }
}
