//! The bytes of the builtin connection: frames serialized into the writer's buffer and cut out of
//! the reader's, and the control methods it sends.

use amq_protocol::frame::{AMQPFrame, gen_frame, parse_frame};
use amq_protocol::protocol::{AMQPClass, channel, confirm, connection};
use amq_protocol::types::{AMQPValue, FieldTable};

use super::WireError;

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
