//! Delivery policy: the acknowledgement rule in one place (docs/contract.md §6) — a request's
//! messages are either all confirmed by the broker, or all fsync'd to the spool, or the provider
//! gets a 503 with Retry-After; nothing in between is ever answered 2xx — and the two background
//! movers between broker and spool: the [`drainer`] (spool → broker) and the [`strays`] keeper
//! (returned messages nobody could park → spool). Readiness ([`Delivery::ready`]) also counts
//! the supervised background tasks ([`TaskHealth`]): one that panicked is down until restarted.
//!
//! Time budget: the broker gets until `deadline - spool_reserve`; whatever is not confirmed by
//! then goes to the spool, which has the reserve to fsync. Every answer is due before `deadline`.
//!
//! Live requests go straight to the broker even while the spool still holds older events: order
//! is kept within a request (one channel, one contiguous spool run), not across requests, which
//! arrive unordered from providers anyway.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::dedup::Dedup;
use crate::message::Message;
use crate::metrics::Metrics;
use crate::metrics::labels::{EventOutcome, FailureReason, Task};
use crate::publisher::{PublishError, Publisher};
use crate::spool::{Spool, SpoolError};

pub mod drainer;
pub mod strays;

/// What became of a request's messages; the HTTP layer maps it to a status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every new message confirmed by the broker; `duplicates` more were already durable
    /// within the dedup window and were not published again.
    Accepted { published: usize, duplicates: usize },
    /// Every new message fsync'd to the local spool (published later); `duplicates` as above.
    Spooled { spooled: usize, duplicates: usize },
    /// Every message was made durable within the dedup window already; nothing published.
    Duplicate(usize),
    /// Nothing durable: the provider must retry.
    Unavailable { retry_after: Duration },
}

impl Outcome {
    /// What became of a message of the request that was not a repeat.
    fn fresh_event(self) -> EventOutcome {
        match self {
            Self::Accepted { .. } | Self::Duplicate(_) => EventOutcome::Published,
            Self::Spooled { .. } => EventOutcome::Spooled,
            Self::Unavailable { .. } => EventOutcome::Failed,
        }
    }
}

/// The request's outcome, and each message's (in the order given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub outcome: Outcome,
    pub events: Vec<EventOutcome>,
}

/// Which supervised background tasks are down: between a panic and their restart.
#[derive(Debug, Default)]
pub struct TaskHealth {
    /// One bit per [`Task`], by its position in [`Task::ALL`].
    down: AtomicU32,
}

impl TaskHealth {
    fn bit(task: Task) -> u32 {
        let i = Task::ALL.iter().position(|&t| t == task).unwrap_or(0);
        1 << i
    }

    pub fn set_down(&self, task: Task, down: bool) {
        if down {
            self.down.fetch_or(Self::bit(task), Ordering::SeqCst);
        } else {
            self.down.fetch_and(!Self::bit(task), Ordering::SeqCst);
        }
    }

    /// The tasks down now.
    pub fn down(&self) -> Vec<Task> {
        let down = self.down.load(Ordering::SeqCst);
        Task::ALL
            .iter()
            .copied()
            .filter(|&t| down & Self::bit(t) != 0)
            .collect()
    }

    pub fn all_up(&self) -> bool {
        self.down.load(Ordering::SeqCst) == 0
    }
}

/// Publishes a request's messages, falling back as the rule says.
pub struct Delivery {
    publisher: Arc<Publisher>,
    spool: Option<Arc<Spool>>,
    dedup: Option<Dedup>,
    /// Time kept back from the broker for the spool's fsync.
    spool_reserve: Duration,
    metrics: Metrics,
    tasks: Arc<TaskHealth>,
}

/// How long providers are told to wait before retrying after a 503.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Margin between the end of the spool wait and the deadline, for writing the answer.
const ANSWER_MARGIN: Duration = Duration::from_millis(50);

/// The spool's share of `ack_deadline`: a quarter, between 100 ms and 1 s.
pub fn spool_reserve(ack_deadline: Duration) -> Duration {
    (ack_deadline / 4).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

impl Delivery {
    pub fn new(
        publisher: Arc<Publisher>,
        spool: Option<Arc<Spool>>,
        dedup: Option<Dedup>,
        ack_deadline: Duration,
        metrics: Metrics,
    ) -> Self {
        let spool_reserve = if spool.is_some() {
            spool_reserve(ack_deadline)
        } else {
            Duration::ZERO
        };
        Self {
            publisher,
            spool,
            dedup,
            spool_reserve,
            metrics,
            tasks: Arc::default(),
        }
    }

    /// Health of the background tasks, which their supervisor keeps up to date.
    pub fn tasks(&self) -> &Arc<TaskHealth> {
        &self.tasks
    }

    pub fn publisher(&self) -> &Arc<Publisher> {
        &self.publisher
    }

    pub fn spool(&self) -> Option<&Arc<Spool>> {
        self.spool.as_ref()
    }

    /// Ready for traffic: every background task runs, and the broker is connected or the spool
    /// can take events (its writer runs, its last write succeeded, it is not full).
    pub fn ready(&self) -> bool {
        self.tasks.all_up()
            && (self.publisher.is_connected() || self.spool.as_ref().is_some_and(|s| s.accepting()))
    }

    /// Make `messages` durable before `deadline`, or say that it could not be done; and what
    /// became of each message.
    ///
    /// Messages already made durable within the dedup window are not published again; if the
    /// whole request is such a repeat the answer is [`Outcome::Duplicate`].
    pub async fn deliver(&self, messages: &[Message], deadline: Instant) -> Delivered {
        let duplicate = self.duplicates(messages);
        let outcome = self.make_durable(messages, &duplicate, deadline).await;
        let events = duplicate
            .iter()
            .map(|&dup| match outcome {
                Outcome::Unavailable { .. } => EventOutcome::Failed,
                _ if dup => EventOutcome::Duplicate,
                _ => outcome.fresh_event(),
            })
            .collect();
        Delivered { outcome, events }
    }

    /// The rule itself: publish the messages not in `duplicate`, else spool them, else refuse.
    async fn make_durable(
        &self,
        messages: &[Message],
        duplicate: &[bool],
        deadline: Instant,
    ) -> Outcome {
        let total = messages.len();
        let duplicates = duplicate.iter().filter(|&&d| d).count();
        if duplicates > 0 && duplicates == total {
            return Outcome::Duplicate(total);
        }
        // Copy only in the rare mixed case; a request without repeats is published as it is.
        let fresh: Vec<Message>;
        let messages = if duplicates == 0 {
            messages
        } else {
            fresh = messages
                .iter()
                .zip(duplicate)
                .filter(|(_, d)| !**d)
                .map(|(m, _)| m.clone())
                .collect();
            &fresh[..]
        };

        let publish_deadline = deadline.checked_sub(self.spool_reserve).unwrap_or(deadline);
        let err = match self.publisher.publish(messages, publish_deadline).await {
            Ok(()) => {
                self.remember(messages);
                return Outcome::Accepted {
                    published: messages.len(),
                    duplicates,
                };
            }
            Err(e) => e,
        };
        let Some(spool) = &self.spool else {
            warn!(error = %err, events = total, "publish failed and the spool is off; answering 503");
            return Outcome::Unavailable {
                retry_after: RETRY_AFTER,
            };
        };
        let spool_deadline = deadline.checked_sub(ANSWER_MARGIN).unwrap_or(deadline);
        match tokio::time::timeout_at(spool_deadline.into(), spool.append(messages)).await {
            Ok(Ok(())) => {
                if matches!(err, PublishError::NotConnected | PublishError::Blocked) {
                    // The publisher has logged the state once; a line per request would only
                    // flood the log for as long as it lasts (`outcome="spooled"` counts them).
                    debug!(error = %err, events = messages.len(), "events spooled");
                } else {
                    warn!(error = %err, events = messages.len(), "publish failed; events spooled");
                }
                self.remember(messages);
                Outcome::Spooled {
                    spooled: messages.len(),
                    duplicates,
                }
            }
            Ok(Err(e)) => {
                let reason = match e {
                    SpoolError::Full { .. } => FailureReason::SpoolFull,
                    SpoolError::Busy { .. } => FailureReason::SpoolBusy,
                    _ => FailureReason::SpoolError,
                };
                self.metrics
                    .publish_failures_total
                    .with_label_values(&[reason.label()])
                    .inc();
                warn!(error = %err, spool_error = %e, events = total, "publish failed and spool refused; answering 503");
                Outcome::Unavailable {
                    retry_after: RETRY_AFTER,
                }
            }
            Err(_) => {
                self.metrics
                    .publish_failures_total
                    .with_label_values(&[FailureReason::SpoolTimeout.label()])
                    .inc();
                warn!(error = %err, events = total, "publish failed and spool too slow; answering 503");
                Outcome::Unavailable {
                    retry_after: RETRY_AFTER,
                }
            }
        }
    }

    /// For each message, whether its id was already made durable within the dedup window.
    fn duplicates(&self, messages: &[Message]) -> Vec<bool> {
        match &self.dedup {
            Some(d) => messages.iter().map(|m| d.contains(&m.id)).collect(),
            None => vec![false; messages.len()],
        }
    }

    fn remember(&self, messages: &[Message]) {
        if let Some(d) = &self.dedup {
            d.insert(messages.iter().map(|m| m.id.as_str()));
        }
    }
}
