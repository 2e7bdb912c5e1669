//! The stray keeper: returned messages of other requests that could not be parked (see the
//! `publisher` module docs) go to the spool, whose drainer retries them until the unrouted
//! queue takes them. Broker → spool, so delivery policy.
//!
//! Such a message may belong to a request already answered 2xx, so the keeper never gives up on
//! one while the process runs: it retries the spool with backoff for as long as it refuses.
//! What it has taken from the publisher and not yet spooled is [`Held`] outside its task, with
//! no `.await` between taking and holding, so neither a cancellation nor a panic (the
//! supervisor restarts the keeper, which starts with what is held) drops a message.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{error, warn};

use crate::message::Message;
use crate::publisher::{self, Publisher};
use crate::spool::Spool;

/// Most time between two attempts to spool held messages.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Returned messages taken from the publisher and not yet in the spool.
#[derive(Debug, Default)]
pub struct Held(Mutex<Vec<Message>>);

impl Held {
    fn lock(&self) -> MutexGuard<'_, Vec<Message>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn add(&self, messages: Vec<Message>) {
        self.lock().extend(messages);
    }
}

/// Spool returned messages nobody could park, as they come, until `stop`; then keep trying
/// with what is left until the caller stops waiting. Without a spool they can only be
/// reported.
pub async fn keep(
    publisher: Arc<Publisher>,
    spool: Option<Arc<Spool>>,
    held: Arc<Held>,
    mut stop: watch::Receiver<bool>,
) {
    let mut failures: u32 = 0;
    loop {
        // A dropped sender means stop too.
        let stopping = *stop.borrow() || stop.has_changed().is_err();
        // Taken and held with no await in between: nothing is only in this task's memory.
        held.add(publisher.take_strays());
        if held.is_empty() {
            if stopping {
                return;
            }
            tokio::select! {
                s = publisher.strays() => held.add(s),
                _ = stop.changed() => {},
            }
            continue;
        }
        let Some(spool) = &spool else {
            let lost = std::mem::take(&mut *held.lock());
            error!(
                events = lost.len(),
                "unroutable messages of answered requests could not be parked and the spool is \
                 off: they are lost"
            );
            continue;
        };
        // One at a time: each is an event of its own, and a spool with little room left (or
        // a small `max_bytes`) may take one where it cannot take them all.
        let Some(first) = held.lock().first().cloned() else {
            continue;
        };
        match spool.append(std::slice::from_ref(&first)).await {
            Ok(()) => {
                held.lock().remove(0);
                failures = 0;
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let delay = publisher::backoff(failures, RETRY_MAX);
                warn!(
                    error = %e,
                    events = held.len(),
                    attempt = failures,
                    "cannot spool unroutable messages of answered requests yet; retrying"
                );
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {},
                    _ = stop.changed(), if !stopping => {},
                }
            }
        }
    }
}
