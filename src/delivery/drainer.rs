//! The drainer: publishes spooled records to the broker, in order and with confirms, whenever
//! it is connected and not blocked; a batch leaves the spool only once confirmed. Spool → broker,
//! so delivery policy; the spool itself only stores.
//!
//! A record the broker *returns* and the unrouted queue does not take either is never skipped:
//! after such a batch the drainer goes on one record at a time up to that batch's end, so the
//! records before the stuck one pass (each published once more), and retries that one with
//! backoff and an error log until it can be parked.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{debug, warn};

use crate::publisher::{self, PublishError, Publisher};
use crate::spool::{Cursor, Spool};

/// How long the drainer waits for the confirms of one batch.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// The drainer: runs until `shutdown` turns true. Whatever it had read and not seen confirmed
/// when it stops (or panics) stays in the spool: the next run reads it again.
pub async fn run(
    spool: Arc<Spool>,
    publisher: Arc<Publisher>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut failures: u32 = 0;
    // After a batch with a returned (unroutable, unparkable) message: one record at a time up to
    // the end of that batch (see the module docs).
    let mut single_until: Option<Cursor> = None;
    loop {
        if *shutdown.borrow() {
            break;
        }
        if spool.has_unconfirmed() && !broker_ready(&publisher, &mut shutdown).await {
            continue;
        }
        let mut batch = match spool.next_batch().await {
            Ok(Some(batch)) => batch,
            Ok(None) => {
                tokio::select! {
                    _ = shutdown.changed() => {},
                    () = spool.appended() => {},
                }
                continue;
            }
            Err(error) => {
                // An I/O error may pass (file descriptors, a busy disk): retry.
                warn!(%error, "cannot read the spool; retrying");
                pause(&mut shutdown, Duration::from_secs(1)).await;
                continue;
            }
        };
        if single_until.is_some_and(|until| batch.start() < until) {
            batch.truncate(1);
        } else {
            single_until = None;
        }
        let messages = batch.messages();
        let started = Instant::now();
        match publisher
            .publish(&messages, Instant::now() + CONFIRM_TIMEOUT)
            .await
        {
            Ok(()) => {
                failures = 0;
                spool.confirm(&batch).await;
                debug!(
                    events = messages.len(),
                    ms = started.elapsed().as_millis() as u64,
                    "drained spooled events"
                );
            }
            Err(PublishError::Returned) if messages.len() > 1 => {
                // Find the record at fault without waiting: the others go through.
                single_until = Some(batch.end());
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                warn!(error = %e, events = messages.len(), "publishing spooled events failed; will retry");
                pause(
                    &mut shutdown,
                    publisher::backoff(failures, Duration::from_secs(5)),
                )
                .await;
            }
        }
    }
}

/// Whether the broker can take publishes now; if not, wait a while (for a connection, or for a
/// resource alarm to lift) and say so.
async fn broker_ready(publisher: &Publisher, shutdown: &mut watch::Receiver<bool>) -> bool {
    if !publisher.is_connected() {
        tokio::select! {
            _ = shutdown.changed() => {},
            _ = publisher.wait_connected(Duration::from_secs(3600)) => {},
        }
        return false;
    }
    if publisher.is_blocked() {
        // A resource alarm: the broker reads no publishes until it lifts.
        pause(shutdown, Duration::from_millis(250)).await;
        return false;
    }
    true
}

/// Sleep for `delay`, or until shutdown.
async fn pause(shutdown: &mut watch::Receiver<bool>, delay: Duration) {
    tokio::select! {
        _ = shutdown.changed() => {},
        _ = tokio::time::sleep(delay) => {},
    }
}
