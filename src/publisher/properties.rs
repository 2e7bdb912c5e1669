//! The AMQP properties and headers of a message, and the message again from what the broker
//! returned.

use lapin::BasicProperties;
use lapin::message::BasicReturnMessage;
use lapin::types::{AMQPValue, FieldTable, ShortString};

use crate::message::Message;

/// AMQP properties of a message (docs/contract.md §5.4).
pub fn properties(msg: &Message) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(
        ShortString::from("cloudEvents_id"),
        AMQPValue::LongString(msg.id.as_str().into()),
    );
    headers.insert(
        ShortString::from("cloudEvents_type"),
        AMQPValue::LongString(msg.routing_key.as_str().into()),
    );
    headers.insert(
        ShortString::from("cloudEvents_source"),
        AMQPValue::LongString(msg.source.as_str().into()),
    );
    headers.insert(
        ShortString::from("cloudEvents_specversion"),
        AMQPValue::LongString("1.0".into()),
    );
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(ShortString::from("application/cloudevents+json"))
        .with_message_id(ShortString::from(msg.id.as_str()))
        .with_type(ShortString::from(msg.routing_key.as_str()))
        .with_timestamp(msg.timestamp)
        .with_app_id(ShortString::from("webhook-bridge"))
        .with_headers(headers)
}

/// The bridge's message again, from what the broker returned: the body and the properties it
/// was published with (see [`properties`]) carry everything.
pub(super) fn returned_message(ret: BasicReturnMessage) -> Message {
    let routing_key = ret.delivery.routing_key.to_string();
    message_from(routing_key, &ret.delivery.properties, ret.delivery.data)
}

/// The message of a returned publish, from its routing key, properties and body.
pub(super) fn message_from(routing_key: String, p: &BasicProperties, body: Vec<u8>) -> Message {
    let source = p
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(&ShortString::from("cloudEvents_source")))
        .and_then(|v| match v {
            AMQPValue::LongString(s) => Some(s.to_string()),
            _ => None,
        })
        .unwrap_or_default();
    Message {
        id: p
            .message_id()
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default(),
        routing_key,
        source,
        timestamp: p.timestamp().unwrap_or(0),
        body,
    }
}
