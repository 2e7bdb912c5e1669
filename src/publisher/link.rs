//! The link to the broker: one connection with its confirm channels, and the manager task that
//! connects over the URLs in order, watches the link (closed socket, missing heartbeat, stale
//! confirms, `connection.blocked`) and reconnects with backoff.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use lapin::options::ConfirmSelectOptions;
use lapin::types::ShortString;
use lapin::{Channel, Connection, Event};
use tokio::sync::{Notify, watch};
use tracing::{info, warn};

use super::returns::REAP_FOR;
use super::tls::{self, ConnectError};
use super::topology;
use super::wire::{Wire, WireEvent};
use super::{Publisher, backoff};
use crate::secret::redact_url;

/// Heartbeat asked for when a URL does not set one, in seconds.
pub const DEFAULT_HEARTBEAT_SECS: u16 = 5;

/// A publish timeout with no confirm at all for this long means the link is dead.
pub const STALE_AFTER: Duration = Duration::from_secs(2);

/// Only publishes that waited at least this long count as evidence of a dead link.
const MIN_WAIT_FOR_STALE: Duration = Duration::from_millis(500);

/// The largest AMQP frame the bridge proposes, when the URL sets no `frame_max`. lapin keeps a
/// send and a receive ring buffer of 32 frames each. Given no `frame_max`, it starts them small
/// and, once the broker has said 128 KiB, grows them by writing zeros: 8 MiB resident from the
/// first connect (heaptrack, 1 Dec). Given one, it allocates them at that size up front, and only
/// what traffic touches becomes resident: at 16 KiB, at most 1 MiB for both. A message larger
/// than a frame goes as several body frames (every webhook sample fits in one); the broker
/// takes the smaller of its own and the client's value.
pub const DEFAULT_FRAME_MAX: u32 = 16 * 1024;

/// `url` with `heartbeat=` and `frame_max=` added when it sets none.
pub fn with_defaults(url: &str) -> String {
    let mut url = url.to_string();
    for (key, value) in [
        ("heartbeat", u32::from(DEFAULT_HEARTBEAT_SECS)),
        ("frame_max", DEFAULT_FRAME_MAX),
    ] {
        if !url.contains(&format!("{key}=")) {
            let sep = if url.contains('?') { '&' } else { '?' };
            url = format!("{url}{sep}{key}={value}");
        }
    }
    url
}

/// One confirm channel of a link, replaceable (see [`Link::renew`]).
pub(super) struct Slot {
    /// Shared with the publishes under way on it: one reference count per publish, where
    /// cloning lapin's `Channel` itself clones a dozen.
    channel: Arc<Channel>,
    opened: Instant,
}

/// A confirm channel that got a nack is replaced by a new one, at most this often. On a cluster,
/// a channel that first publishes to a quorum queue while the queue's leader node has just died
/// (before a new leader is elected) can be nacked for every later publish to that queue for as
/// long as that node stays down (RabbitMQ 3.10), while a new channel publishes normally.
const RENEW_AFTER: Duration = Duration::from_secs(1);

/// A live connection and its confirm channels.
pub(super) struct Link {
    /// Declares the topology and parks returned messages; publishes too, on `channels`, when
    /// there is no `wire`.
    pub(super) conn: Connection,
    /// The connection publishes go over unless `publish_client = "lapin"` (see
    /// [`Wire::eligible`]); `channels` is empty then.
    pub(super) wire: Option<Wire>,
    pub(super) channels: Vec<Mutex<Slot>>,
    pub(super) next: AtomicUsize,
    /// Start of a publish that waited at least [`MIN_WAIT_FOR_STALE`] and timed out, with no
    /// confirm on this link since.
    pub(super) timed_out: Mutex<Option<Instant>>,
    /// Between the broker's `connection.blocked` and `connection.unblocked`.
    pub(super) blocked: AtomicBool,
    /// Wakes publishes waiting for confirms when the connection gets blocked.
    pub(super) on_block: Notify,
}

/// What the manager watches besides the link's health: `connection.blocked` / `unblocked` from
/// either connection, and the publishing connection going down.
enum LinkEvent {
    Blocked(String),
    Unblocked,
    Other,
}

type Events = Pin<Box<dyn Stream<Item = LinkEvent> + Send>>;

impl Link {
    pub(super) fn healthy(&self) -> bool {
        self.conn.status().connected()
            && match &self.wire {
                Some(wire) => wire.is_open(),
                None => (0..self.channels.len()).all(|i| self.slot(i).channel.status().connected()),
            }
    }

    /// Close both connections, waiting at most `wait` for each.
    async fn close(&self, code: u16, text: &str, wait: Duration) {
        if let Some(wire) = &self.wire {
            wire.close(wait).await;
        }
        let _ = tokio::time::timeout(wait, self.conn.close(code, ShortString::from(text))).await;
    }

    fn slot(&self, i: usize) -> MutexGuard<'_, Slot> {
        self.channels[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next channel, round robin, and its index.
    pub(super) fn channel(&self) -> (usize, Arc<Channel>) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        (i, Arc::clone(&self.slot(i).channel))
    }

    /// Replace the channel at `i`, which got a nack, with a new confirm channel (unless it was
    /// replaced already or less than [`RENEW_AFTER`] ago). Publishes still waiting for confirms
    /// on the old one keep it open; it is closed after [`REAP_FOR`].
    pub(super) fn renew(self: &Arc<Self>, i: usize, nacked: &Channel) {
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
                    let old = std::mem::replace(&mut link.slot(i).channel, Arc::new(ch));
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

    pub(super) fn confirmed(&self) {
        *self.timed_out.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub(super) fn publish_timed_out(&self, started: Instant) {
        if started.elapsed() < MIN_WAIT_FOR_STALE {
            // It had no real chance (the request used up its time before publishing).
            return;
        }
        let mut t = self.timed_out.lock().unwrap_or_else(|p| p.into_inner());
        if t.is_none() {
            *t = Some(started);
        }
    }

    pub(super) fn is_blocked(&self) -> bool {
        self.blocked.load(Ordering::Relaxed)
    }

    /// Record a `connection.blocked` (true) or `unblocked` (false); true if that changed
    /// anything. Timeouts from before an unblock are forgotten: they were the alarm's doing.
    pub(super) fn set_blocked(&self, blocked: bool) -> bool {
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
    pub(super) fn stale(&self) -> bool {
        !self.is_blocked()
            && self
                .timed_out
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some_and(|s| s.elapsed() >= STALE_AFTER)
    }
}

impl Publisher {
    /// Connection manager: connect, watch, reconnect. Exits on shutdown, closing the connection.
    /// Run again after a panic, it closes the link the previous run left (whose events it can no
    /// longer watch) and connects anew.
    pub async fn manage(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut attempt: u32 = 0;
        let mut ever_connected = self.link.borrow().is_some();
        if let Some(left) = self.link.send_replace(None) {
            self.metrics.amqp_connected.set(0);
            self.metrics.amqp_blocked.set(0);
            left.close(320, "reconnect", Duration::from_secs(1)).await;
        }
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
                        link.close(200, "shutdown", Duration::from_secs(2)).await;
                        break;
                    }
                    warn!("broker connection lost; reconnecting");
                    link.close(320, "reconnect", Duration::from_secs(1)).await;
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
    fn on_event(&self, link: &Link, event: LinkEvent) {
        let (blocked, reason) = match event {
            LinkEvent::Blocked(reason) => (true, reason),
            LinkEvent::Unblocked => (false, String::new()),
            LinkEvent::Other => return,
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
                    let publishing = if connected.0.wire.is_some() {
                        "own connection"
                    } else {
                        "lapin confirm channels"
                    };
                    info!(url = %shown, channels = self.cfg.channels, publishing, "connected to broker");
                    return Some(connected);
                }
                Ok(Err(e)) if e.is_untrusted() => warn!(
                    url = %shown,
                    error = %e,
                    "broker connection failed: TLS certificate verification failed (check amqp.tls_ca_file)"
                ),
                Ok(Err(e)) => warn!(url = %shown, error = %e, "broker connection failed"),
                Err(_) => warn!(url = %shown, "broker connection timed out"),
            }
        }
        None
    }

    /// Connect with the TLS files as they are now (a renewed certificate is used from the next
    /// connect on), open the channels.
    async fn connect(&self, url: &str) -> Result<(Link, Events), ConnectError> {
        let material = self.cfg.tls.read()?;
        let conn = tls::open_with(&self.cfg, &material, url, "webhook-bridge").await?;
        // Listen before the first publish: lapin only queues events once someone listens.
        let lapin_events = conn.events_listener().map(|e| match e {
            Event::ConnectionBlocked(reason) => LinkEvent::Blocked(reason),
            Event::ConnectionUnblocked => LinkEvent::Unblocked,
            _ => LinkEvent::Other,
        });
        let own = Wire::eligible(&self.cfg, url);
        let channels = match self
            .open_channels(&conn, if own { 0 } else { self.cfg.channels })
            .await
        {
            Ok(channels) => channels,
            Err(e) => {
                let _ = conn.close(200, ShortString::from("setup failed")).await;
                return Err(e.into());
            }
        };
        let (wire, events): (Option<Wire>, Events) = if own {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let url = with_defaults(url);
            let wire = Wire::connect(
                &url,
                "webhook-bridge publish",
                &material,
                self.cfg.auth_mechanism,
                u16::try_from(self.cfg.channels).unwrap_or(u16::MAX),
                tx,
            );
            match wire.await {
                Ok(wire) => {
                    let wire_events = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
                        .map(|e| match e {
                            WireEvent::Blocked(reason) => LinkEvent::Blocked(reason),
                            WireEvent::Unblocked => LinkEvent::Unblocked,
                            WireEvent::Down => LinkEvent::Other,
                        });
                    let merged = futures_util::stream::select(lapin_events, wire_events);
                    (Some(wire), Box::pin(merged))
                }
                Err(e) => {
                    let _ = conn.close(200, ShortString::from("setup failed")).await;
                    return Err(e.into());
                }
            }
        } else {
            (None, Box::pin(lapin_events))
        };
        let link = Link {
            conn,
            wire,
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
    async fn open_channels(
        &self,
        conn: &Connection,
        confirm_channels: usize,
    ) -> Result<Vec<Mutex<Slot>>, lapin::Error> {
        let ch = conn.create_channel().await?;
        if self.cfg.declare_topology {
            topology::declare_topology(&ch, &self.cfg).await?;
            if let Err(e) = topology::declare_unrouted_queue(conn, &self.cfg).await {
                warn!(queue = %self.unrouted, error = %e, "unrouted queue not declared as configured");
            }
        } else {
            topology::check_exchange(&ch, &self.cfg).await?;
        }
        let _ = ch.close(200, ShortString::from("topology checked")).await;
        let mut channels = Vec::with_capacity(confirm_channels);
        for _ in 0..confirm_channels {
            let ch = conn.create_channel().await?;
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
            channels.push(Mutex::new(Slot {
                channel: Arc::new(ch),
                opened: Instant::now(),
            }));
        }
        Ok(channels)
    }
}
