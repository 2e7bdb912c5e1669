//! The bytes of the builtin connection: frames serialized into the writer's buffer and cut out of
//! the reader's, and the control methods it sends.

use amq_protocol::frame::{AMQPFrame, gen_frame, parse_frame};
use amq_protocol::protocol::{AMQPClass, channel, confirm, connection};
use amq_protocol::types::{AMQPValue, FieldTable};

use super::WireError;
use crate::message::Message;

/// The largest frame accepted from the broker (it may send up to the negotiated size).
const MAX_INBOUND_FRAME: usize = 1 << 20;

pub(super) fn client_properties(name: &str) -> FieldTable {
    let mut caps = FieldTable::default();
    for cap in [
        "publisher_confirms",
        "connection.blocked",
        "basic.nack",
        "authentication_failure_close",
    ] {
        caps.insert(cap.into(), AMQPValue::Boolean(true));
    }
    let mut props = FieldTable::default();
    props.insert(
        "product".into(),
        AMQPValue::LongString("webhook-bridge".into()),
    );
    props.insert("connection_name".into(), AMQPValue::LongString(name.into()));
    props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
    props
}

pub(super) fn connection_method(m: connection::AMQPMethod) -> AMQPClass {
    AMQPClass::Connection(m)
}

pub(super) fn channel_open() -> AMQPClass {
    AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {}))
}

pub(super) fn channel_close() -> AMQPClass {
    AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
        reply_code: 200,
        reply_text: "replaced".into(),
        class_id: 0,
        method_id: 0,
    }))
}

pub(super) fn confirm_select() -> AMQPClass {
    AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
        nowait: false,
    }))
}

/// `frame` serialized at the end of `out`. On error `out` is lost (cookie-factory takes the
/// `Vec` it writes into: a borrowed one could not seek back to fill in the frame's size); the
/// callers end the connection then, which fails every publish waiting.
pub(super) fn append(out: &mut Vec<u8>, frame: &AMQPFrame) -> Result<(), WireError> {
    let (buf, _) = gen_frame(frame)(std::mem::take(out).into())
        .map_err(|e| WireError::Io(format!("serializing a frame: {e}")))?
        .into_inner();
    *out = buf;
    Ok(())
}

/// The `basic.publish` method frame and the content header of `msg`, written directly: byte for
/// byte what amq-protocol generates from `AMQPFrame`s carrying [`properties`] (a test checks it),
/// without building those properties' owned strings and header table first — about 20 heap
/// allocations per message (docs/BENCHMARKS.md, "Publish frames written directly"). A name over
/// 255 bytes (exchange, routing key, message id) cannot be a short string: refused, and `out` is
/// left as it was.
///
/// [`properties`]: crate::publisher::properties::properties
pub(super) fn publish_frames(
    out: &mut Vec<u8>,
    channel: u16,
    exchange: &str,
    msg: &Message,
) -> Result<(), WireError> {
    for (what, s) in [
        ("exchange name", exchange),
        ("routing key", msg.routing_key.as_str()),
        ("message id", msg.id.as_str()),
    ] {
        if s.len() > usize::from(u8::MAX) {
            return Err(WireError::Io(format!(
                "serializing a frame: the {what} is over 255 bytes"
            )));
        }
    }
    if u32::try_from(msg.source.len()).is_err() {
        return Err(WireError::Io(
            "serializing a frame: the source is over 4 GiB".into(),
        ));
    }
    // basic.publish: class 60, method 40, ticket 0, exchange, routing key, mandatory.
    let start = begin_frame(out, 1, channel);
    put_u16(out, BASIC_CLASS);
    put_u16(out, 40);
    put_u16(out, 0);
    short_str(out, exchange);
    short_str(out, &msg.routing_key);
    out.push(0b01);
    end_frame(out, start);
    // Content header: class, weight 0, body size, then the properties their flags announce, in
    // the protocol's order.
    let start = begin_frame(out, 2, channel);
    put_u16(out, BASIC_CLASS);
    put_u16(out, 0);
    out.extend_from_slice(&(msg.body.len() as u64).to_be_bytes());
    put_u16(out, PUBLISH_PROPERTY_FLAGS);
    short_str(out, CONTENT_TYPE);
    // The headers table, keys in the order of amq-protocol's `FieldTable` (a `BTreeMap`).
    let table = out.len();
    out.extend_from_slice(&[0; 4]);
    for (key, value) in [
        ("cloudEvents_id", msg.id.as_str()),
        ("cloudEvents_source", msg.source.as_str()),
        ("cloudEvents_specversion", "1.0"),
        ("cloudEvents_type", msg.routing_key.as_str()),
    ] {
        short_str(out, key);
        out.push(b'S');
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    let size = (out.len() - table - 4) as u32;
    out[table..table + 4].copy_from_slice(&size.to_be_bytes());
    out.push(2); // delivery mode: persistent
    short_str(out, &msg.id);
    out.extend_from_slice(&msg.timestamp.to_be_bytes());
    short_str(out, &msg.routing_key);
    short_str(out, APP_ID);
    end_frame(out, start);
    Ok(())
}

const BASIC_CLASS: u16 = 60;
const CONTENT_TYPE: &str = "application/cloudevents+json";
const APP_ID: &str = "webhook-bridge";
/// content-type, headers, delivery-mode, message-id, timestamp, type, app-id.
const PUBLISH_PROPERTY_FLAGS: u16 = 1 << 15 | 1 << 13 | 1 << 12 | 1 << 7 | 1 << 6 | 1 << 5 | 1 << 3;

/// A frame's type and channel, with room for its size; returns where the frame starts.
fn begin_frame(out: &mut Vec<u8>, kind: u8, channel: u16) -> usize {
    let start = out.len();
    out.push(kind);
    put_u16(out, channel);
    out.extend_from_slice(&[0; 4]);
    start
}

/// Fills in the size of the frame begun at `start` and ends it.
fn end_frame(out: &mut Vec<u8>, start: usize) {
    let size = (out.len() - start - 7) as u32;
    out[start + 3..start + 7].copy_from_slice(&size.to_be_bytes());
    out.push(0xCE);
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// A short string whose length the caller has checked.
fn short_str(out: &mut Vec<u8>, s: &str) {
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

/// A content body frame, written directly (an `AMQPFrame::Body` would copy the chunk once more).
pub(super) fn body_frame(out: &mut Vec<u8>, channel: u16, chunk: &[u8]) {
    out.push(3);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
    out.extend_from_slice(chunk);
    out.push(0xCE);
}

/// The frame of `buf` that starts at `*at`, with `*at` moved past it; `None` if it is not all
/// there yet.
pub(super) fn next_frame(buf: &[u8], at: &mut usize) -> Result<Option<AMQPFrame>, WireError> {
    let rest = &buf[*at..];
    let Some(size) = rest.get(3..7) else {
        return Ok(None);
    };
    let size = u32::from_be_bytes([size[0], size[1], size[2], size[3]]) as usize;
    if size > MAX_INBOUND_FRAME {
        return Err(WireError::Broker(format!(
            "a frame of {size} bytes from the broker"
        )));
    }
    let Some(whole) = rest.get(..7 + size + 1) else {
        return Ok(None);
    };
    match parse_frame(whole) {
        Ok((_, frame)) => {
            *at += whole.len();
            Ok(Some(frame))
        }
        Err(e) => Err(WireError::Broker(format!(
            "unparsable frame from the broker: {e}"
        ))),
    }
}
