//! The acknowledgement rule in one place (SPEC §6): a request's messages are either all
//! confirmed by the broker, or (later) all fsync'd to the spool, or the provider gets a 503 with
//! Retry-After. Nothing in between is ever answered 2xx.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::warn;

use crate::envelope::Message;
use crate::metrics::Metrics;
use crate::publisher::Publisher;

/// What became of a request's messages; the HTTP layer maps it to a status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every message confirmed by the broker.
    Accepted(usize),
    /// Every message fsync'd to the local spool; published later.
    Spooled(usize),
    /// Nothing durable: the provider must retry.
    Unavailable { retry_after: Duration },
}

/// Publishes a request's messages, falling back as the rule says.
pub struct Delivery {
    publisher: Arc<Publisher>,
    metrics: Metrics,
}

/// How long providers are told to wait before retrying after a 503.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

impl Delivery {
    pub fn new(publisher: Arc<Publisher>, metrics: Metrics) -> Self {
        Self { publisher, metrics }
    }

    pub fn publisher(&self) -> &Arc<Publisher> {
        &self.publisher
    }

    /// Ready for traffic: connected to the broker (or, once it exists, the spool accepts).
    pub fn ready(&self) -> bool {
        self.publisher.is_connected()
    }

    /// Make `messages` durable before `deadline`, or say that it could not be done.
    pub async fn deliver(&self, messages: &[Message], deadline: Instant) -> Outcome {
        match self.publisher.publish(messages, deadline).await {
            Ok(()) => Outcome::Accepted(messages.len()),
            Err(e) => {
                warn!(error = %e, events = messages.len(), "publish failed; answering 503");
                let _ = &self.metrics;
                Outcome::Unavailable {
                    retry_after: RETRY_AFTER,
                }
            }
        }
    }
}
