//! The stray keeper: returned messages of other requests that could not be parked (see the
//! `publisher` module docs) go to the spool, whose drainer retries them until the unrouted
//! queue takes them. Broker → spool, so delivery policy.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{error, warn};

use crate::publisher::Publisher;
use crate::spool::Spool;

/// Spool returned messages nobody could park, as they come.
/// Without a spool, or with one refusing for half a minute, they can only be reported. Runs
/// until `stop`, then spools what is left once.
pub async fn keep(
    publisher: Arc<Publisher>,
    spool: Option<Arc<Spool>>,
    mut stop: watch::Receiver<bool>,
) {
    const ATTEMPTS: u32 = 30;
    loop {
        let (strays, stopping) = tokio::select! {
            s = publisher.strays() => (s, false),
            _ = stop.changed() => (publisher.take_strays(), true),
        };
        if !strays.is_empty() {
            let Some(spool) = &spool else {
                error!(
                    events = strays.len(),
                    "unroutable messages of answered requests could not be parked and the spool \
                     is off: they are lost"
                );
                continue;
            };
            let mut attempt = 0;
            while let Err(e) = spool.append(&strays).await {
                attempt += 1;
                if stopping || attempt >= ATTEMPTS {
                    error!(error = %e, events = strays.len(), "unroutable messages of answered requests could not be spooled: they are lost");
                    break;
                }
                warn!(error = %e, events = strays.len(), "cannot spool unroutable messages yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        if stopping {
            break;
        }
    }
}
