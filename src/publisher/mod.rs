//! The broker side: one long-lived lapin connection that declares the topology on every connect
//! and parks returned messages, publishes over either a second connection of the bridge's own
//! ([`wire`]: plain `amqp://`, `plain` login, `publish_client = "builtin"`) or lapin's
//! confirm-mode channels, and a manager task that reconnects both with capped, jittered
//! exponential backoff over the configured URLs in order.
//!
//! A dead link is noticed three ways: either connection reports its socket closed (RST/EOF); the AMQP
//! heartbeat (`heartbeat=5` is added to URLs that do not set one) goes missing for two
//! intervals; or a publish times out while no confirm has come back for [`STALE_AFTER`] — a
//! network cut that drops packets silently shows up that way first. Any of them makes the
//! manager drop the link and reconnect; channel errors take the same path, so the process
//! never has to restart.
//!
//! A broker under a resource alarm (memory or disk) sends `connection.blocked` and stops reading
//! publishes until `connection.unblocked`. While blocked, [`Publisher::publish`] fails at once
//! with [`PublishError::Blocked`] (the request path spools instead of waiting out its deadline,
//! the drainer waits), and a blocked link is never taken for a dead one: no reconnect storm.
//!
//! **Invariant:** [`Publisher::publish`] returns `Ok` only when every message was confirmed
//! by the broker: acked and routed, or — returned as unroutable — acked again in the unrouted
//! queue. Anything else is an error the caller must answer with the spool or a 503 — never a
//! 200.
//!
//! **Returned messages.** With the default topology the exchange's alternate exchange takes
//! unroutable messages and the broker never returns one. Without it (`declare_topology = false`
//! on an exchange that has none, or a deleted unrouted queue) the broker returns them, and
//! lapin hands each return to whichever pending confirm of the channel it resolves next — with a
//! multiple-ack, not necessarily the one of the returned message. So a return is identified by
//! its `message_id`, never by the confirm that carried it: whoever receives one *parks* it, i.e.
//! publishes it to the `…unrouted` queue through the default exchange on a channel of its own,
//! one message at a time (exact attribution). What cannot be parked is the caller's failure if
//! it is the caller's own message, and otherwise a *stray* — another request's message, which
//! may already have been answered 200 — that [`Publisher::strays`] hands to the spool. Confirms a
//! cancelled publish leaves behind are awaited by a reaper task, so their returns are not lost
//! either. The builtin publishing connection ([`wire`]) matches every return to its own publish
//! by `message_id` before the confirm comes, so over it a return is always the caller's and
//! there are no strays; parking is the same.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::Confirmation;
use lapin::options::BasicPublishOptions;
use lapin::types::ShortString;
use tokio::sync::{Notify, watch};

use crate::config::AmqpConfig;
use crate::message::Message;
use crate::metrics::Metrics;
use crate::metrics::labels::FailureReason;

mod link;
mod properties;
mod returns;
mod tls;
mod topology;
pub mod wire;

use self::link::Link;
pub use self::link::{DEFAULT_FRAME_MAX, DEFAULT_HEARTBEAT_SECS, STALE_AFTER, with_defaults};
pub use self::properties::properties;
use self::properties::returned_message;
use self::returns::{Returned, Strays, Unsettled, park};
pub use self::tls::{ConnectError, open};
pub use self::topology::{
    UnroutedQueueError, check_exchange, declare_topology, declare_unrouted_queue,
};

/// Why a publish did not end in a confirm. `reason()` is the `publish_failures_total` label.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("not connected to the broker")]
    NotConnected,
    #[error("the broker blocks publishing (resource alarm)")]
    Blocked,
    #[error("broker did not confirm before the deadline")]
    Timeout,
    #[error("broker nacked the message")]
    Nacked,
    #[error("message was returned as unroutable")]
    Returned,
    #[error("AMQP error: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("AMQP connection: {0}")]
    Connection(#[from] wire::WireError),
}

impl PublishError {
    pub fn reason(&self) -> FailureReason {
        match self {
            Self::NotConnected => FailureReason::NotConnected,
            Self::Blocked => FailureReason::Blocked,
            Self::Timeout => FailureReason::Timeout,
            Self::Nacked => FailureReason::Nack,
            Self::Returned => FailureReason::Returned,
            Self::Amqp(_) | Self::Connection(_) => FailureReason::AmqpError,
        }
    }
}

/// Handle used by the request path and the spool drainer. Cheap to share behind an `Arc`.
pub struct Publisher {
    cfg: AmqpConfig,
    metrics: Metrics,
    link: watch::Sender<Option<Arc<Link>>>,
    /// Wakes the manager to re-check the link at once (after a publish error or timeout).
    kick: Notify,
    /// Turns true once the manager has closed the connection and exited.
    stopped: watch::Sender<bool>,
    /// Returned messages of other requests that could not be parked (see the module docs).
    strays: Arc<Strays>,
    /// Where returned messages are parked: the `…unrouted` queue.
    unrouted: Arc<str>,
}

impl Publisher {
    /// Create the publisher and spawn its connection manager. Returns before the first connect;
    /// `is_connected` tells when the broker is usable.
    pub fn start(cfg: AmqpConfig, metrics: Metrics, shutdown: watch::Receiver<bool>) -> Arc<Self> {
        let publisher = Self::new(cfg, metrics);
        tokio::spawn(Arc::clone(&publisher).manage(shutdown));
        publisher
    }

    /// Create the publisher without its connection manager: the caller runs
    /// [`Publisher::manage`] (under a supervisor that starts it again should it panic).
    pub fn new(cfg: AmqpConfig, metrics: Metrics) -> Arc<Self> {
        let (link, _) = watch::channel(None);
        let unrouted = Arc::from(cfg.unrouted_queue().as_str());
        Arc::new(Self {
            cfg,
            metrics,
            link,
            kick: Notify::new(),
            stopped: watch::channel(false).0,
            strays: Arc::default(),
            unrouted,
        })
    }

    pub fn is_connected(&self) -> bool {
        self.link.borrow().as_ref().is_some_and(|l| l.healthy())
    }

    /// The broker has blocked the current connection (resource alarm): publishes fail at once.
    pub fn is_blocked(&self) -> bool {
        self.link.borrow().as_ref().is_some_and(|l| l.is_blocked())
    }

    /// Wait until connected or `timeout` passes; true when connected.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut rx = self.link.subscribe();
        let ready = tokio::time::timeout(
            timeout,
            rx.wait_for(|l| l.as_ref().is_some_and(|l| l.healthy())),
        )
        .await;
        matches!(ready, Ok(Ok(_)))
    }

    /// Resolve once the manager has stopped (after its shutdown signal) and closed the
    /// connection.
    pub async fn closed(&self) {
        let mut rx = self.stopped.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Wait for returned messages of other requests that could not be parked (see the module
    /// docs) and take them; the caller must make them durable (the spool). Cancel-safe: nothing
    /// is taken until the wait is over.
    pub async fn strays(&self) -> Vec<Message> {
        loop {
            let added = self.strays.added.notified();
            let taken = self.strays.take();
            if !taken.is_empty() {
                return taken;
            }
            added.await;
        }
    }

    /// Strays not taken yet, without waiting (at shutdown).
    pub fn take_strays(&self) -> Vec<Message> {
        self.strays.take()
    }

    fn current(&self) -> Option<Arc<Link>> {
        self.link.borrow().clone()
    }

    /// Publish `messages` (persistent, mandatory) and wait for every confirm, until `deadline`.
    /// All messages of one call go over one channel, so the broker receives them in order.
    pub async fn publish(
        &self,
        messages: &[Message],
        deadline: Instant,
    ) -> Result<(), PublishError> {
        if messages.is_empty() {
            return Ok(());
        }
        let link = self.current();
        let started = Instant::now();
        let result = match &link {
            None => Err(PublishError::NotConnected),
            Some(link) => {
                // Registered before the check, so a block that lands in between still wakes us.
                let blocked = link.on_block.notified();
                tokio::pin!(blocked);
                blocked.as_mut().enable();
                if link.is_blocked() {
                    // Publishing now would only wait out the deadline: the broker is not reading.
                    Err(PublishError::Blocked)
                } else {
                    tokio::select! {
                        biased;
                        r = tokio::time::timeout_at(deadline.into(), self.publish_on(link, messages)) => {
                            r.unwrap_or_else(|_| {
                                link.publish_timed_out(started);
                                Err(PublishError::Timeout)
                            })
                        }
                        // Blocked while waiting for confirms: answer from the spool now rather
                        // than at the deadline. The broker may still confirm these messages once
                        // it unblocks, and the spool publishes them again: a duplicate with the
                        // same message_id, which at-least-once allows.
                        () = &mut blocked => Err(PublishError::Blocked),
                    }
                }
            }
        };
        if let Err(e) = &result {
            self.metrics
                .publish_failures_total
                .with_label_values(&[e.reason().label()])
                .inc();
            if !matches!(
                e,
                PublishError::Nacked | PublishError::Returned | PublishError::Blocked
            ) {
                // A silent broker (network cut without RST) shows up as timeouts: have the
                // manager check the link rather than wait for the heartbeat.
                self.kick.notify_one();
            }
        }
        result
    }

    async fn publish_on(&self, link: &Arc<Link>, messages: &[Message]) -> Result<(), PublishError> {
        // Let the other requests that are ready reach this point first (a yielded task runs
        // again after the runtime's current round): their publishes are then pushed back to
        // back, and lapin's I/O thread, woken once, writes them with one `sendto` instead of
        // being woken and writing once per request. Measured at full load: a third of the
        // sends and 45% of the context switches, 12–25% less CPU per webhook
        // (docs/BENCHMARKS.md, "Publishes pushed together"). Over the builtin connection its
        // writer's own yield does the same; skipping this one there made no measurable
        // difference ("Two more cuts on the builtin connection"), so both paths keep it.
        // Nothing is published before this point, so a request cancelled here leaves nothing
        // behind.
        tokio::task::yield_now().await;
        if let Some(wire) = &link.wire {
            return self.publish_wire(link, wire, messages).await;
        }
        let (slot, channel) = link.channel();
        let started = Instant::now();
        // Confirms left unresolved when this future is dropped (deadline, block) go to a reaper.
        let mut pending = Unsettled {
            confirms: VecDeque::with_capacity(messages.len()),
            link: Arc::clone(link),
            unrouted: Arc::clone(&self.unrouted),
            strays: Arc::clone(&self.strays),
        };
        for msg in messages {
            let confirm = channel
                .basic_publish(
                    ShortString::from(self.cfg.exchange.as_str()),
                    ShortString::from(msg.routing_key.as_str()),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    &msg.body,
                    properties(msg),
                )
                .await?;
            pending.confirms.push_back(confirm);
        }
        // Returns collected so far; should this future end early (a channel error below, or
        // cancellation), they go to the strays rather than vanish.
        let mut returned = Returned {
            left: Vec::new(),
            strays: Arc::clone(&self.strays),
        };
        let mut nacked = false;
        while let Some(confirm) = pending.confirms.front_mut() {
            let confirmation = confirm.await;
            pending.confirms.pop_front();
            match confirmation? {
                Confirmation::Ack(None) => {}
                Confirmation::Ack(Some(r)) => returned.left.push(returned_message(r)),
                Confirmation::Nack(r) => {
                    nacked = true;
                    returned.left.extend(r.map(returned_message));
                }
                Confirmation::NotRequested => nacked = true,
            }
        }
        link.confirmed();
        if nacked {
            link.renew(slot, &channel);
        }
        self.settled(link, messages, started, returned, nacked)
            .await
    }

    /// [`Publisher::publish_on`] over the link's own publishing connection ([`wire`]): every
    /// message queued at once, in order, then each one's outcome awaited. A return is the
    /// message's own (matched by id), so it never has to be passed on as a stray.
    async fn publish_wire(
        &self,
        link: &Arc<Link>,
        wire: &wire::Wire,
        messages: &[Message],
    ) -> Result<(), PublishError> {
        let started = Instant::now();
        let waits = wire.publish(&self.cfg.exchange, messages)?;
        let mut returned = Returned {
            left: Vec::new(),
            strays: Arc::clone(&self.strays),
        };
        let mut nacked = false;
        for wait in waits {
            match wait.await {
                Ok(wire::Outcome::Acked) => {}
                Ok(wire::Outcome::Returned(m)) => returned.left.push(m),
                Ok(wire::Outcome::Nacked(m)) => {
                    nacked = true;
                    returned.left.extend(m);
                }
                Err(_) => return Err(wire.error().into()),
            }
        }
        link.confirmed();
        self.settled(link, messages, started, returned, nacked)
            .await
    }

    /// The end of a publish whose confirms all came: the confirm wait observed, returned
    /// messages parked, and the verdict.
    async fn settled(
        &self,
        link: &Link,
        messages: &[Message],
        started: Instant,
        mut returned: Returned,
        nacked: bool,
    ) -> Result<(), PublishError> {
        self.metrics
            .publish_confirm_seconds
            .observe(started.elapsed().as_secs_f64());
        let mut own_unparked = false;
        if !returned.left.is_empty() {
            let unparked = park(&link.conn, &self.unrouted, &mut returned).await;
            let (own, others): (Vec<_>, Vec<_>) = unparked
                .into_iter()
                .partition(|m| messages.iter().any(|x| x.id == m.id));
            own_unparked = !own.is_empty();
            self.strays.push(others);
        }
        if nacked {
            Err(PublishError::Nacked)
        } else if own_unparked {
            Err(PublishError::Returned)
        } else {
            Ok(())
        }
    }
}

/// Capped exponential backoff with full jitter: 100ms·2ⁿ, at most `max`, uniformly in [½, 1]×.
pub fn backoff(attempt: u32, max: Duration) -> Duration {
    let exp = Duration::from_millis(100).saturating_mul(1u32 << attempt.min(16));
    let capped = exp.min(max);
    capped.mul_f64(0.5 + fastrand::f64() * 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_and_frame_max_are_added_only_when_missing() {
        assert_eq!(
            with_defaults("amqp://h/%2f"),
            "amqp://h/%2f?heartbeat=5&frame_max=16384"
        );
        assert_eq!(
            with_defaults("amqp://h/%2f?frame_max=8192"),
            "amqp://h/%2f?frame_max=8192&heartbeat=5"
        );
        assert_eq!(
            with_defaults("amqp://h/?heartbeat=30"),
            "amqp://h/?heartbeat=30&frame_max=16384"
        );
        assert_eq!(
            with_defaults("amqp://h/?heartbeat=30&frame_max=131072"),
            "amqp://h/?heartbeat=30&frame_max=131072"
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let max = Duration::from_secs(5);
        assert!(backoff(1, max) <= Duration::from_millis(200));
        assert!(backoff(1, max) >= Duration::from_millis(100));
        for n in 0..40 {
            assert!(backoff(n, max) <= max);
        }
        assert!(backoff(30, max) >= Duration::from_millis(2500));
    }
}
