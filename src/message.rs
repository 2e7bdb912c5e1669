//! The unit the broker side and the spool move around: an encoded event with what AMQP needs to
//! publish it. Produced by `envelope`, published by `publisher`, stored by `spool`.

use serde::{Deserialize, Serialize};

/// A message ready to publish (or to spool): everything the broker needs, nothing more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Deterministic event id; AMQP `message_id` and the CloudEvent `id`.
    pub id: String,
    /// `{provider}.{entity}.{action}`; also the CloudEvent `type`.
    pub routing_key: String,
    /// CloudEvent `source`.
    pub source: String,
    /// Seconds since the epoch at receipt; AMQP `timestamp`.
    pub timestamp: u64,
    /// The CloudEvent, serialized.
    pub body: Vec<u8>,
}
