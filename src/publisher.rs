//! The broker side: one long-lived lapin connection with a few confirm-mode channels, topology
//! declared on every connect, and a manager task that reconnects with capped, jittered
//! exponential backoff over the configured URLs in order.
//!
//! A dead link is noticed three ways: lapin reports the socket closed (RST/EOF); the AMQP
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
//! either.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use lapin::message::BasicReturnMessage;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Event, ExchangeKind,
    PublisherConfirm,
};
use tokio::sync::{Notify, watch};
use tracing::{error, info, warn};

use crate::config::{AmqpConfig, QueueType, redact_url};
use crate::envelope::Message;
use crate::metrics::Metrics;

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
}

impl PublishError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotConnected => "not_connected",
            Self::Blocked => "blocked",
            Self::Timeout => "timeout",
            Self::Nacked => "nack",
            Self::Returned => "returned",
            Self::Amqp(_) => "amqp_error",
        }
    }
}

/// Heartbeat asked for when a URL does not set one, in seconds.
pub const DEFAULT_HEARTBEAT_SECS: u16 = 5;

/// A publish timeout with no confirm at all for this long means the link is dead.
pub const STALE_AFTER: Duration = Duration::from_secs(2);

/// Only publishes that waited at least this long count as evidence of a dead link.
const MIN_WAIT_FOR_STALE: Duration = Duration::from_millis(500);

/// `url` with `heartbeat=` added when it has none.
pub fn with_heartbeat(url: &str) -> String {
    if url.contains("heartbeat=") {
        return url.to_string();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}heartbeat={DEFAULT_HEARTBEAT_SECS}")
}

/// A live connection and its confirm channels.
struct Link {
    conn: Connection,
    channels: Vec<Mutex<Slot>>,
    next: AtomicUsize,
    /// Start of a publish that waited at least [`MIN_WAIT_FOR_STALE`] and timed out, with no
    /// confirm on this link since.
    timed_out: Mutex<Option<Instant>>,
    /// Between the broker's `connection.blocked` and `connection.unblocked`.
    blocked: AtomicBool,
    /// Wakes publishes waiting for confirms when the connection gets blocked.
    on_block: Notify,
}

/// One confirm channel of a link, replaceable (see [`Link::renew`]).
struct Slot {
    channel: Channel,
    opened: Instant,
}

/// A confirm channel that got a nack is replaced by a new one, at most this often. On a cluster,
/// a channel that first publishes to a quorum queue while the queue's leader node has just died
/// (before a new leader is elected) can be nacked for every later publish to that queue for as
/// long as that node stays down (RabbitMQ 3.10), while a new channel publishes normally.
const RENEW_AFTER: Duration = Duration::from_secs(1);

/// The connection's events (`connection.blocked` / `unblocked`), watched by the manager.
type Events = Pin<Box<dyn Stream<Item = Event> + Send>>;

impl Link {
    fn healthy(&self) -> bool {
        self.conn.status().connected()
            && (0..self.channels.len()).all(|i| self.slot(i).channel.status().connected())
    }

    fn slot(&self, i: usize) -> std::sync::MutexGuard<'_, Slot> {
        self.channels[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next channel, round robin, and its index.
    fn channel(&self) -> (usize, Channel) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        (i, self.slot(i).channel.clone())
    }

    /// Replace the channel at `i`, which got a nack, with a new confirm channel (unless it was
    /// replaced already or less than [`RENEW_AFTER`] ago). Publishes still waiting for confirms
    /// on the old one keep it open; it is closed after [`REAP_FOR`].
    fn renew(self: &Arc<Self>, i: usize, nacked: &Channel) {
        {
            let mut slot = self.slot(i);
            if slot.channel.id() != nacked.id() || slot.opened.elapsed() < RENEW_AFTER {
                return;
            }
            slot.opened = Instant::now();
        }
        let link = Arc::clone(self);
        tokio::spawn(async move {
            let opened = async {
                let ch = link.conn.create_channel().await?;
                ch.confirm_select(ConfirmSelectOptions::default()).await?;
                Ok::<_, lapin::Error>(ch)
            }
            .await;
            match opened {
                Ok(ch) => {
                    let old = std::mem::replace(&mut link.slot(i).channel, ch);
                    info!(
                        channel = old.id(),
                        "publish nacked; publishing on a new channel"
                    );
                    tokio::time::sleep(REAP_FOR).await;
                    let _ = old.close(200, ShortString::from("replaced")).await;
                }
                Err(e) => warn!(error = %e, "cannot open a channel to replace a nacked one"),
            }
        });
    }

    fn confirmed(&self) {
        *self.timed_out.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn publish_timed_out(&self, started: Instant) {
        if started.elapsed() < MIN_WAIT_FOR_STALE {
            // It had no real chance (the request used up its time before publishing).
            return;
        }
        let mut t = self.timed_out.lock().unwrap_or_else(|p| p.into_inner());
        if t.is_none() {
            *t = Some(started);
        }
    }

    fn is_blocked(&self) -> bool {
        self.blocked.load(Ordering::Relaxed)
    }

    /// Record a `connection.blocked` (true) or `unblocked` (false); true if that changed
    /// anything. Timeouts from before an unblock are forgotten: they were the alarm's doing.
    fn set_blocked(&self, blocked: bool) -> bool {
        let was = self.blocked.swap(blocked, Ordering::Relaxed);
        if blocked {
            self.on_block.notify_waiters();
        } else {
            self.confirmed();
        }
        was != blocked
    }

    /// A publish timed out and nothing has been confirmed for [`STALE_AFTER`] since it began.
    /// Never while the broker blocks the connection: that silence is the alarm, not a dead
    /// link, and a new connection would be blocked the same way.
    fn stale(&self) -> bool {
        !self.is_blocked()
            && self
                .timed_out
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some_and(|s| s.elapsed() >= STALE_AFTER)
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

/// Returned messages that are nobody's failure to report and could not be parked: the spool
/// must take them (`Publisher::strays`).
#[derive(Default)]
struct Strays {
    list: Mutex<Vec<Message>>,
    added: Notify,
}

impl Strays {
    fn push(&self, messages: Vec<Message>) {
        if messages.is_empty() {
            return;
        }
        self.list
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(messages);
        self.added.notify_one();
    }

    fn take(&self) -> Vec<Message> {
        std::mem::take(&mut *self.list.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// How long a reaper waits, in all, for the confirms a cancelled publish left behind.
const REAP_FOR: Duration = Duration::from_secs(60);

/// How long parking one returned message may wait for its confirm.
const PARK_CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

impl Publisher {
    /// Create the publisher and spawn its connection manager. Returns before the first connect;
    /// `is_connected` tells when the broker is usable.
    pub fn start(cfg: AmqpConfig, metrics: Metrics, shutdown: watch::Receiver<bool>) -> Arc<Self> {
        let (link, _) = watch::channel(None);
        let unrouted = Arc::from(cfg.unrouted_queue().as_str());
        let publisher = Arc::new(Self {
            cfg,
            metrics,
            link,
            kick: Notify::new(),
            stopped: watch::channel(false).0,
            strays: Arc::default(),
            unrouted,
        });
        tokio::spawn(Arc::clone(&publisher).manage(shutdown));
        publisher
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
                .with_label_values(&[e.reason()])
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

    /// Connection manager: connect, watch, reconnect. Exits on shutdown, closing the connection.
    async fn manage(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut attempt: u32 = 0;
        let mut ever_connected = false;
        loop {
            if *shutdown.borrow() {
                break;
            }
            match self.connect_any().await {
                Some((link, mut events)) => {
                    attempt = 0;
                    if ever_connected {
                        self.metrics.amqp_reconnects_total.inc();
                    }
                    ever_connected = true;
                    let link = Arc::new(link);
                    self.link.send_replace(Some(Arc::clone(&link)));
                    self.metrics.amqp_connected.set(1);
                    // Watch the link until it breaks or we are told to stop.
                    loop {
                        tokio::select! {
                            _ = shutdown.changed() => break,
                            _ = self.kick.notified() => {},
                            Some(event) = events.next() => self.on_event(&link, event),
                            _ = tokio::time::sleep(Duration::from_millis(250)) => {},
                        }
                        if !link.healthy() || *shutdown.borrow() {
                            break;
                        }
                        if link.stale() {
                            warn!("no publisher confirm for too long; dropping the connection");
                            break;
                        }
                    }
                    self.link.send_replace(None);
                    self.metrics.amqp_connected.set(0);
                    self.metrics.amqp_blocked.set(0);
                    if *shutdown.borrow() {
                        let _ = tokio::time::timeout(
                            Duration::from_secs(2),
                            link.conn.close(200, ShortString::from("shutdown")),
                        )
                        .await;
                        break;
                    }
                    warn!("broker connection lost; reconnecting");
                    let _ = tokio::time::timeout(
                        Duration::from_secs(1),
                        link.conn.close(320, ShortString::from("reconnect")),
                    )
                    .await;
                }
                None => {
                    attempt = attempt.saturating_add(1);
                    let delay = backoff(attempt, self.cfg.reconnect_backoff_max);
                    tokio::select! {
                        _ = shutdown.changed() => {},
                        _ = tokio::time::sleep(delay) => {},
                    }
                }
            }
        }
        self.metrics.amqp_connected.set(0);
        self.stopped.send_replace(true);
    }

    /// `connection.blocked` / `unblocked` from the broker; other events are the manager's
    /// usual business (a closed connection shows as an unhealthy link).
    fn on_event(&self, link: &Link, event: Event) {
        let (blocked, reason) = match event {
            Event::ConnectionBlocked(reason) => (true, reason),
            Event::ConnectionUnblocked => (false, String::new()),
            _ => return,
        };
        if !link.set_blocked(blocked) {
            return;
        }
        self.metrics.amqp_blocked.set(i64::from(blocked));
        if blocked {
            warn!(%reason, "broker blocks publishing (resource alarm); spooling until it unblocks");
        } else {
            info!("broker unblocked publishing");
        }
    }

    /// Try every URL in order; the first that connects and declares its topology wins.
    async fn connect_any(&self) -> Option<(Link, Events)> {
        for url in &self.cfg.urls {
            let shown = redact_url(url.expose());
            match tokio::time::timeout(self.cfg.connect_timeout, self.connect(url.expose())).await {
                Ok(Ok(connected)) => {
                    info!(url = %shown, channels = connected.0.channels.len(), "connected to broker");
                    return Some(connected);
                }
                Ok(Err(e)) => warn!(url = %shown, error = %e, "broker connection failed"),
                Err(_) => warn!(url = %shown, "broker connection timed out"),
            }
        }
        None
    }

    async fn connect(&self, url: &str) -> Result<(Link, Events), lapin::Error> {
        let props = ConnectionProperties::default().with_connection_name("webhook-bridge".into());
        let conn = Connection::connect(&with_heartbeat(url), props).await?;
        // Listen before the first publish: lapin only queues events once someone listens.
        let events: Events = Box::pin(conn.events_listener());
        let channels = match self.open_channels(&conn).await {
            Ok(channels) => channels,
            Err(e) => {
                let _ = conn.close(200, ShortString::from("setup failed")).await;
                return Err(e);
            }
        };
        let link = Link {
            conn,
            channels,
            next: AtomicUsize::new(0),
            timed_out: Mutex::new(None),
            blocked: AtomicBool::new(false),
            on_block: Notify::new(),
        };
        Ok((link, events))
    }
}

impl Publisher {
    /// Declare the topology, or with `declare_topology = false` check that the exchange exists
    /// (passively: an operator's exchange may carry arguments a declaration would contradict),
    /// then open the confirm channels. A missing exchange fails the connect, with the broker's
    /// `NOT_FOUND` in the log, instead of every publish later.
    async fn open_channels(&self, conn: &Connection) -> Result<Vec<Mutex<Slot>>, lapin::Error> {
        let ch = conn.create_channel().await?;
        if self.cfg.declare_topology {
            declare_topology(&ch, &self.cfg).await?;
            if let Err(e) = declare_unrouted_queue(conn, &self.cfg).await {
                warn!(queue = %self.unrouted, error = %e, "unrouted queue not declared as configured");
            }
        } else {
            ch.exchange_declare(
                ShortString::from(self.cfg.exchange.as_str()),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    passive: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        }
        let _ = ch.close(200, ShortString::from("topology checked")).await;
        let mut channels = Vec::with_capacity(self.cfg.channels);
        for _ in 0..self.cfg.channels {
            let ch = conn.create_channel().await?;
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
            channels.push(Mutex::new(Slot {
                channel: ch,
                opened: Instant::now(),
            }));
        }
        Ok(channels)
    }
}

/// Durable topic exchange whose alternate exchange (fanout) feeds the `…unrouted` queue, so a
/// message no consumer has bound for is kept rather than dropped. The queue itself is declared by
/// [`declare_unrouted_queue`].
pub async fn declare_topology(ch: &Channel, cfg: &AmqpConfig) -> Result<(), lapin::Error> {
    let ae = cfg.alternate_exchange();
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    ch.exchange_declare(
        ShortString::from(ae.as_str()),
        ExchangeKind::Fanout,
        durable,
        FieldTable::default(),
    )
    .await?;
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("alternate-exchange"),
        AMQPValue::LongString(ae.as_str().into()),
    );
    ch.exchange_declare(
        ShortString::from(cfg.exchange.as_str()),
        ExchangeKind::Topic,
        durable,
        args,
    )
    .await?;
    Ok(())
}

/// The unrouted queue could not be declared as configured. The connect goes on anyway: the
/// exchanges are what publishing needs, and a message the broker cannot put in a live queue is
/// returned (`mandatory`), then parked or spooled, never dropped.
#[derive(Debug, thiserror::Error)]
pub enum UnroutedQueueError {
    #[error(
        "it exists with other arguments than a durable {configured} queue ({source}); it is used \
         as it is. To make it a {configured} queue, move its messages out, delete it and restart \
         the bridge (it declares the queue on connect); to keep it, set [amqp] \
         unrouted_queue_type to its type"
    )]
    OtherArguments {
        configured: &'static str,
        source: lapin::Error,
    },
    #[error(
        "cannot declare it ({0}); while it is missing or down, the broker returns unroutable \
         messages and they wait in the spool"
    )]
    Unavailable(#[source] lapin::Error),
}

/// Declare the durable `…unrouted` queue (`[amqp] unrouted_queue_type`) and bind it to the
/// alternate exchange, on channels of its own. A queue that already exists with other arguments
/// (a classic one where a quorum queue is configured: `PRECONDITION_FAILED`) is bound and used as
/// it is. On a cluster, a classic queue whose node is down cannot be declared (`NOT_FOUND`) —
/// nor can it receive anything: the broker returns unroutable messages instead, so failing the
/// connect for it would only stop publishing to the nodes that are up.
pub async fn declare_unrouted_queue(
    conn: &Connection,
    cfg: &AmqpConfig,
) -> Result<(), UnroutedQueueError> {
    let queue = cfg.unrouted_queue();
    let mut queue_args = FieldTable::default();
    if cfg.unrouted_queue_type == QueueType::Quorum {
        queue_args.insert(
            ShortString::from("x-queue-type"),
            AMQPValue::LongString(QueueType::Quorum.as_str().into()),
        );
    }
    let ch = conn
        .create_channel()
        .await
        .map_err(UnroutedQueueError::Unavailable)?;
    let declared = ch
        .queue_declare(
            ShortString::from(queue.as_str()),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            queue_args,
        )
        .await;
    let (ch, other_arguments) = match declared {
        Ok(_) => (ch, None),
        Err(e) if is_precondition_failed(&e) => {
            // The broker closed that channel.
            let ch = conn
                .create_channel()
                .await
                .map_err(UnroutedQueueError::Unavailable)?;
            (ch, Some(e))
        }
        Err(e) => return Err(UnroutedQueueError::Unavailable(e)),
    };
    ch.queue_bind(
        ShortString::from(queue.as_str()),
        ShortString::from(cfg.alternate_exchange().as_str()),
        ShortString::from("#"),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .map_err(UnroutedQueueError::Unavailable)?;
    let _ = ch
        .close(200, ShortString::from("unrouted queue declared"))
        .await;
    match other_arguments {
        Some(source) => Err(UnroutedQueueError::OtherArguments {
            configured: cfg.unrouted_queue_type.as_str(),
            source,
        }),
        None => Ok(()),
    }
}

fn is_precondition_failed(e: &lapin::Error) -> bool {
    matches!(
        e.kind(),
        lapin::ErrorKind::ProtocolError(a)
            if *a.kind() == AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)
    )
}

/// AMQP properties of a message (SPEC §5).
pub fn properties(msg: &Message) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(
        ShortString::from("cloudEvents_id"),
        AMQPValue::LongString(msg.id.as_str().into()),
    );
    headers.insert(
        ShortString::from("cloudEvents_type"),
        AMQPValue::LongString(msg.routing_key.as_str().into()),
    );
    headers.insert(
        ShortString::from("cloudEvents_source"),
        AMQPValue::LongString(msg.source.as_str().into()),
    );
    headers.insert(
        ShortString::from("cloudEvents_specversion"),
        AMQPValue::LongString("1.0".into()),
    );
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(ShortString::from("application/cloudevents+json"))
        .with_message_id(ShortString::from(msg.id.as_str()))
        .with_type(ShortString::from(msg.routing_key.as_str()))
        .with_timestamp(msg.timestamp)
        .with_app_id(ShortString::from("webhook-bridge"))
        .with_headers(headers)
}

/// The bridge's message again, from what the broker returned: the body and the properties it
/// was published with (see [`properties`]) carry everything.
fn returned_message(ret: BasicReturnMessage) -> Message {
    let p = &ret.delivery.properties;
    let source = p
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(&ShortString::from("cloudEvents_source")))
        .and_then(|v| match v {
            AMQPValue::LongString(s) => Some(s.to_string()),
            _ => None,
        })
        .unwrap_or_default();
    Message {
        id: p
            .message_id()
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default(),
        routing_key: ret.delivery.routing_key.to_string(),
        source,
        timestamp: p.timestamp().unwrap_or(0),
        body: ret.delivery.data,
    }
}

/// Returned messages still to be parked; those left when it is dropped (the publish was
/// cancelled mid-park) become strays, so the spool gets them.
struct Returned {
    left: Vec<Message>,
    strays: Arc<Strays>,
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
struct Unsettled {
    confirms: VecDeque<PublisherConfirm>,
    link: Arc<Link>,
    unrouted: Arc<str>,
    strays: Arc<Strays>,
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
async fn park(conn: &Connection, queue: &str, returned: &mut Returned) -> Vec<Message> {
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
    fn heartbeat_is_added_only_when_missing() {
        assert_eq!(with_heartbeat("amqp://h/%2f"), "amqp://h/%2f?heartbeat=5");
        assert_eq!(
            with_heartbeat("amqp://h/%2f?frame_max=8192"),
            "amqp://h/%2f?frame_max=8192&heartbeat=5"
        );
        assert_eq!(
            with_heartbeat("amqp://h/?heartbeat=30"),
            "amqp://h/?heartbeat=30"
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
