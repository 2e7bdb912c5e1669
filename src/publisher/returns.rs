//! Returned messages (see the module docs of [`super`]): parked in the unrouted queue by whoever
//! receives them, one at a time on a channel of their own; what cannot be parked becomes a
//! stray for the spool. Confirms a cancelled publish leaves behind go to a reaper task.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{Channel, Confirmation, Connection, PublisherConfirm};
use tokio::sync::Notify;
use tracing::{error, warn};

use super::link::Link;
use super::properties::{properties, returned_message};
use crate::message::Message;

/// Returned messages that are nobody's failure to report and could not be parked: the spool
/// must take them (`Publisher::strays`).
#[derive(Default)]
pub(super) struct Strays {
    pub(super) list: Mutex<Vec<Message>>,
    pub(super) added: Notify,
}

impl Strays {
    pub(super) fn push(&self, messages: Vec<Message>) {
        if messages.is_empty() {
            return;
        }
        self.list
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(messages);
        self.added.notify_one();
    }

    pub(super) fn take(&self) -> Vec<Message> {
        std::mem::take(&mut *self.list.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// How long a reaper waits, in all, for the confirms a cancelled publish left behind.
pub(super) const REAP_FOR: Duration = Duration::from_secs(60);

/// How long parking one returned message may wait for its confirm.
pub(super) const PARK_CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

/// Returned messages still to be parked; those left when it is dropped (the publish was
/// cancelled mid-park) become strays, so the spool gets them.
pub(super) struct Returned {
    pub(super) left: Vec<Message>,
    pub(super) strays: Arc<Strays>,
}

impl Drop for Returned {
    fn drop(&mut self) {
        self.strays.push(std::mem::take(&mut self.left));
    }
}

/// Confirms of a publish not awaited yet. Dropped with some left (the publish was cancelled at
/// its deadline or by a block), it hands them to a reaper task: lapin may attach another
/// request's returned message to any of them, and that message must not vanish with the
/// confirm.
pub(super) struct Unsettled {
    pub(super) confirms: VecDeque<PublisherConfirm>,
    pub(super) link: Arc<Link>,
    pub(super) unrouted: Arc<str>,
    pub(super) strays: Arc<Strays>,
}

impl Drop for Unsettled {
    fn drop(&mut self) {
        if self.confirms.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let confirms = std::mem::take(&mut self.confirms);
        let (link, unrouted, strays) = (
            Arc::clone(&self.link),
            Arc::clone(&self.unrouted),
            Arc::clone(&self.strays),
        );
        runtime.spawn(async move {
            let mut returned = Returned {
                left: Vec::new(),
                strays,
            };
            let until = tokio::time::Instant::now() + REAP_FOR;
            for confirm in confirms {
                // Resolves on the broker's ack or nack, or with an error when the channel closes.
                if let Ok(Ok(Confirmation::Ack(Some(r)) | Confirmation::Nack(Some(r)))) =
                    tokio::time::timeout_at(until, confirm).await
                {
                    returned.left.push(returned_message(r));
                }
            }
            if !returned.left.is_empty() {
                // The cancelled request spooled its own messages: whatever is left is a stray.
                let unparked = park(&link.conn, &unrouted, &mut returned).await;
                returned.strays.push(unparked);
            }
        });
    }
}

/// Publish each returned message to the `queue` (the unrouted queue) through the default
/// exchange, on a channel of its own and one at a time, so that a return there is known to be
/// that message's. Returns the messages that were not confirmed there; each leaves
/// `returned.left` only once settled, so a cancelled park leaves the rest to the strays.
pub(super) async fn park(conn: &Connection, queue: &str, returned: &mut Returned) -> Vec<Message> {
    let mut unparked = Vec::new();
    let opened = async {
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok::<_, lapin::Error>(ch)
    }
    .await;
    let channel = opened
        .inspect_err(|e| warn!(error = %e, "cannot open a channel to park returned messages"))
        .ok();
    let mut usable = channel.is_some();
    while let Some(msg) = returned.left.last() {
        let parked = match (&channel, usable) {
            (Some(ch), true) => park_one(ch, queue, msg).await,
            _ => false,
        };
        let Some(msg) = returned.left.pop() else {
            break;
        };
        if parked {
            warn!(
                routing_key = %msg.routing_key,
                queue,
                "the broker returned an unroutable message (the exchange has no working \
                 alternate exchange); parked it in the unrouted queue"
            );
        } else {
            // After a failure the channel's confirms may be out of step: stop using it.
            usable = false;
            unparked.push(msg);
        }
    }
    if !unparked.is_empty() {
        error!(
            events = unparked.len(),
            queue,
            "unroutable messages could not be parked: the unrouted queue is missing or refused \
             them; they stay in the spool until it accepts them"
        );
    }
    if let Some(ch) = channel {
        let _ = ch.close(200, ShortString::from("parked")).await;
    }
    unparked
}

async fn park_one(ch: &Channel, queue: &str, msg: &Message) -> bool {
    let confirm = ch
        .basic_publish(
            ShortString::from(""),
            ShortString::from(queue),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            &msg.body,
            properties(msg),
        )
        .await;
    match confirm {
        Ok(confirm) => matches!(
            tokio::time::timeout(PARK_CONFIRM_TIMEOUT, confirm).await,
            Ok(Ok(Confirmation::Ack(None)))
        ),
        Err(_) => false,
    }
}
