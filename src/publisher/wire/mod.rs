//! The publish path's own AMQP connection, driven by the runtime's workers: amq-protocol's
//! frames (the crate lapin encodes with) on one socket (TCP, or TLS over it with
//! tokio-rustls for `amqps://`), one task writing what publishes
//! queued — one `write_all` per batch — and one reading the broker's frames. lapin runs a thread
//! of its own for I/O, and every publish crossed to it and back; without that thread a webhook
//! costs 18% less CPU at full load and ~40% less one request at a time (docs/BENCHMARKS.md, "An
//! AMQP client on the runtime's own workers, measured").
//!
//! It publishes and nothing else: the link's lapin connection still declares the topology and
//! parks returned messages. It is used for every URL, `amqp://` and `amqps://` (verified with
//! the same roots, CA file and client certificate as lapin's connection), with either login,
//! `plain` or `external`; `[amqp] publish_client = "lapin"` keeps lapin's confirm channels
//! instead (see [`Wire::eligible`]).
//!
//! What it does besides publishing, all of which lapin did on this path:
//! - **confirms**: `[amqp] channels` confirm channels, taken in turn by successive publish calls
//!   (a broker's channel is one process: on a cluster with quorum queues one channel limits the
//!   rate); every publish gets its channel's next delivery tag and waits for the `basic.ack` or
//!   `basic.nack` that covers it (`multiple` settles every earlier tag too);
//! - **returns**: a `basic.return` (with its content header and body) is matched to its own
//!   publish by `message_id`, and that publish resolves as returned when its confirm comes (the
//!   broker sends the return first) — exact attribution, unlike lapin's, which hands a return to
//!   whichever confirm it resolves next;
//! - **a nacked channel is replaced** by a new confirm channel (one replacement at a time, at most
//!   once per [`RENEW_AFTER`]; the quorum-queue case of `link.rs`), the old one closed once its
//!   publishes are settled. A multi-message publish goes on one channel, in order;
//! - **heartbeats**: sent when nothing else was written for half the negotiated interval; two
//!   intervals without a frame from the broker end the connection;
//! - `connection.blocked` / `unblocked` are passed on as [`WireEvent`]s; a `channel.close` or
//!   `connection.close` from the broker, a socket error or EOF ends the connection: every
//!   publish still waiting fails (its sender is dropped) and [`WireEvent::Down`] tells the
//!   manager to reconnect.

use std::collections::VecDeque;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{AMQPClass, BasicProperties, basic, channel, confirm, connection};
use amq_protocol::uri::AMQPUri;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::AbortHandle;

use self::frames::{
    append, body_frame, channel_close, channel_open, confirm_select, connection_method, next_frame,
    publish_frames,
};
use self::handshake::Socket;
use super::properties::message_from;
use crate::config::{AmqpConfig, AuthMechanism, PublishClient, TlsMaterial};
use crate::message::Message;

/// The frame size asked for when the URL sets none (lapin's link asks the same).
const FRAME_MAX: u32 = super::DEFAULT_FRAME_MAX;
/// A frame's header (type, channel, size) and end octet.
const FRAME_OVERHEAD: usize = 8;
/// A nacked channel is replaced at most this often (as `Link::renew` does for lapin's).
const RENEW_AFTER: Duration = Duration::from_secs(1);
/// Below this many queued bytes the writer yields once before writing, so that publishes of
/// other ready requests go in the same `write` (about a dozen single-event messages).
const COALESCE_BELOW: usize = 16 * 1024;

/// Why the connection could not be opened, or ended.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WireError {
    #[error("AMQP URL: {0}")]
    Url(String),
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Broker(String),
}

impl From<std::io::Error> for WireError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e.to_string())
    }
}

/// How the broker settled one publish.
#[derive(Debug)]
pub enum Outcome {
    Acked,
    /// Acked, after the broker returned it as unroutable.
    Returned(Message),
    /// Nacked; with the message if the broker had returned it first.
    Nacked(Option<Message>),
}

/// What the link's manager hears from this connection.
#[derive(Debug)]
pub enum WireEvent {
    Blocked(String),
    Unblocked,
    Down,
}

/// An open publishing connection. Dropping it stops its tasks (and so closes the socket).
pub struct Wire {
    shared: Arc<Shared>,
    tasks: [AbortHandle; 2],
}

impl Drop for Wire {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the writer when `State::out` goes from empty to not empty.
    flush: Notify,
    frame_max: usize,
    heartbeat: Option<Duration>,
    events: mpsc::UnboundedSender<WireEvent>,
}

struct State {
    /// Serialized frames the writer has not taken yet.
    out: Vec<u8>,
    /// Open confirm channels: those not retired take new publishes in turn; retired ones are
    /// closed once settled.
    channels: Vec<Chan>,
    /// Counts publish calls, to take the channels in turn.
    turn: usize,
    next_id: u16,
    /// The nacked channel a new one is being opened to replace.
    replacing: Option<u16>,
    last_renew: Instant,
    /// A `basic.return` waiting for its content header and body.
    returning: Option<Returning>,
    /// Set when the connection has ended: every later publish fails with it.
    dead: Option<WireError>,
}

struct Chan {
    id: u16,
    /// Replaced after a nack: takes no new publishes, closed once its publishes are settled.
    retired: bool,
    next_tag: u64,
    pending: VecDeque<Pending>,
}

struct Pending {
    tag: u64,
    /// The message's id, which a `basic.return` is matched on.
    id: String,
    returned: Option<Message>,
    tx: oneshot::Sender<Outcome>,
}

struct Returning {
    channel: u16,
    routing_key: String,
    props: Option<BasicProperties>,
    size: u64,
    body: Vec<u8>,
}

impl Wire {
    /// Whether `url` is published to over this connection: with `publish_client = "builtin"`
    /// (the default), any URL lapin would also accept.
    pub fn eligible(cfg: &AmqpConfig, url: &str) -> bool {
        cfg.publish_client == PublishClient::Builtin && AMQPUri::from_str(url).is_ok()
    }

    /// Open the connection and its `channels` confirm channels (at least one): for `amqps://`
    /// with the TLS files as read for this connect (`tls`), logging in with `login`. The caller
    /// bounds the time it may take.
    pub async fn connect(
        url: &str,
        name: &str,
        tls: &TlsMaterial,
        login: AuthMechanism,
        channels: u16,
        events: mpsc::UnboundedSender<WireEvent>,
    ) -> Result<Self, WireError> {
        let channels = channels.max(1);
        let (socket, rbuf, tuned) = handshake::open(url, name, tls, login, channels).await?;
        let heartbeat =
            (tuned.heartbeat > 0).then(|| Duration::from_secs(u64::from(tuned.heartbeat)));
        let frame_max = tuned.frame_max;
        let shared = Arc::new(Shared::new(frame_max as usize, heartbeat, channels, events));
        let tasks = match socket {
            Socket::Plain(tcp) => {
                let (rd, wr) = tcp.into_split();
                spawn_loops(rd, wr, rbuf, &shared)
            }
            Socket::Tls(tls) => {
                let (rd, wr) = tokio::io::split(*tls);
                spawn_loops(rd, wr, rbuf, &shared)
            }
        };
        Ok(Self { shared, tasks })
    }

    pub fn is_open(&self) -> bool {
        self.shared.state().dead.is_none()
    }

    /// Why the connection ended, once it has.
    pub fn error(&self) -> WireError {
        self.shared
            .state()
            .dead
            .clone()
            .unwrap_or_else(|| WireError::Io("connection lost".into()))
    }

    /// Queue `messages` (persistent, mandatory) on the current channel, in order, and return one
    /// receiver per message for its [`Outcome`]. A receiver whose sender is dropped means the
    /// connection ended first ([`Wire::error`]). Dropping the receivers is safe: the confirms
    /// are still read and settle nothing.
    pub fn publish(
        &self,
        exchange: &str,
        messages: &[Message],
    ) -> Result<Vec<oneshot::Receiver<Outcome>>, WireError> {
        let mut guard = self.shared.state();
        let st = &mut *guard;
        if let Some(e) = &st.dead {
            return Err(e.clone());
        }
        let Some(i) = st.take_turn() else {
            return Err(WireError::Broker("no confirm channel".into()));
        };
        let chan = &mut st.channels[i];
        // Every frame first, then the publishes that wait for their confirms. A frame that
        // cannot be serialized (a name over 255 bytes; never seen: the configuration and the
        // generic provider bound them) ends the connection, failing whatever waited, and the
        // link reconnects.
        let was_empty = st.out.is_empty();
        for msg in messages {
            if let Err(e) = self.frames(&mut st.out, chan.id, exchange, msg) {
                drop(guard);
                self.shared.die(e.clone());
                return Err(e);
            }
        }
        let rxs = messages.iter().map(|msg| chan.wait_for(&msg.id)).collect();
        drop(guard);
        if was_empty {
            self.shared.flush.notify_one();
        }
        Ok(rxs)
    }

    /// A publish's frames on `channel`: the method, the content header, the body in frames of
    /// at most the negotiated size.
    fn frames(
        &self,
        out: &mut Vec<u8>,
        channel: u16,
        exchange: &str,
        msg: &Message,
    ) -> Result<(), WireError> {
        publish_frames(out, channel, exchange, msg)?;
        for chunk in msg.body.chunks(self.shared.frame_max - FRAME_OVERHEAD) {
            body_frame(out, channel, chunk);
        }
        Ok(())
    }

    /// Close the connection (`connection.close`, then the broker's `close-ok` or `wait`).
    pub async fn close(&self, wait: Duration) {
        self.shared.enqueue(
            0,
            connection_method(connection::AMQPMethod::Close(connection::Close {
                reply_code: 200,
                reply_text: "shutdown".into(),
                class_id: 0,
                method_id: 0,
            })),
        );
        let _ = tokio::time::timeout(wait, async {
            while self.is_open() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }
}

impl State {
    /// The index of the channel whose turn it is to take a publish call, if any is open.
    fn take_turn(&mut self) -> Option<usize> {
        let open = self.channels.iter().filter(|c| !c.retired).count();
        if open == 0 {
            return None;
        }
        let k = self.turn % open;
        self.turn = self.turn.wrapping_add(1);
        self.channels
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.retired)
            .nth(k)
            .map(|(i, _)| i)
    }
}

impl Chan {
    fn new(id: u16) -> Self {
        Self {
            id,
            retired: false,
            next_tag: 1,
            pending: VecDeque::new(),
        }
    }

    /// The next delivery tag goes to a publish of `id`, which waits for its confirm.
    fn wait_for(&mut self, id: &str) -> oneshot::Receiver<Outcome> {
        let (tx, rx) = oneshot::channel();
        self.pending.push_back(Pending {
            tag: self.next_tag,
            id: id.into(),
            returned: None,
            tx,
        });
        self.next_tag += 1;
        rx
    }
}

impl Shared {
    /// Confirm channels 1 to `width` open (at least one), nothing queued.
    fn new(
        frame_max: usize,
        heartbeat: Option<Duration>,
        width: u16,
        events: mpsc::UnboundedSender<WireEvent>,
    ) -> Self {
        let width = width.max(1);
        Self {
            state: Mutex::new(State {
                out: Vec::new(),
                channels: (1..=width).map(Chan::new).collect(),
                turn: 0,
                next_id: width.saturating_add(1),
                replacing: None,
                last_renew: Instant::now(),
                returning: None,
                dead: None,
            }),
            flush: Notify::new(),
            frame_max,
            heartbeat,
            events,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue one method frame for the writer.
    fn enqueue(&self, channel: u16, class: AMQPClass) {
        let mut st = self.state();
        let was_empty = st.out.is_empty();
        if let Err(e) = append(&mut st.out, &AMQPFrame::Method(channel, class)) {
            drop(st);
            self.die(e);
            return;
        }
        drop(st);
        if was_empty {
            self.flush.notify_one();
        }
    }

    /// The connection has ended: every waiting publish fails (its sender is dropped).
    fn die(&self, why: WireError) {
        let mut st = self.state();
        if st.dead.is_some() {
            return;
        }
        st.dead = Some(why);
        st.channels.clear();
        drop(st);
        self.flush.notify_one();
        let _ = self.events.send(WireEvent::Down);
    }

    /// The broker acked (or nacked) `tag` on `channel`, and every earlier tag if `multiple`.
    fn settle(&self, channel: u16, tag: u64, multiple: bool, acked: bool) {
        let mut st = self.state();
        let Some(chan) = st.channels.iter_mut().find(|c| c.id == channel) else {
            return;
        };
        let mut settled = Vec::new();
        if multiple {
            while chan.pending.front().is_some_and(|p| p.tag <= tag) {
                settled.extend(chan.pending.pop_front());
            }
        } else if let Some(i) = chan.pending.iter().position(|p| p.tag == tag) {
            settled.extend(chan.pending.remove(i));
        }
        let retired = chan.retired;
        let retired_and_done = retired && chan.pending.is_empty();
        if retired_and_done {
            st.channels.retain(|c| c.id != channel);
        }
        let renew = !acked
            && !retired
            && st.replacing.is_none()
            && st.last_renew.elapsed() >= RENEW_AFTER
            && st.next_id < u16::MAX;
        let new_id = st.next_id;
        if renew {
            st.replacing = Some(channel);
            st.next_id += 1;
        }
        drop(st);
        for p in settled {
            let outcome = match (acked, p.returned) {
                (true, None) => Outcome::Acked,
                (true, Some(m)) => Outcome::Returned(m),
                (false, m) => Outcome::Nacked(m),
            };
            // A dropped receiver is a request that gave up (and spooled its messages).
            let _ = p.tx.send(outcome);
        }
        if retired_and_done {
            self.enqueue(channel, channel_close());
        }
        if renew {
            tracing::info!(channel, "publish nacked; opening a new channel");
            self.enqueue(new_id, channel_open());
        }
    }

    /// A returned message, complete: attach it to its own publish on `channel`.
    fn returned(&self, channel: u16, msg: Message) {
        let mut st = self.state();
        let pending = st
            .channels
            .iter_mut()
            .find(|c| c.id == channel)
            .and_then(|c| {
                c.pending
                    .iter_mut()
                    .find(|p| p.returned.is_none() && p.id == msg.id)
            });
        match pending {
            Some(p) => p.returned = Some(msg),
            // Its publish is settled already: the broker sends the return first, so this is
            // not expected; the request that published it answered from its confirm.
            None => tracing::warn!(
                routing_key = %msg.routing_key,
                "a returned message matched no publish waiting for its confirm"
            ),
        }
    }

    /// One frame from the broker; `Err` ends the connection.
    fn on_frame(&self, frame: AMQPFrame) -> Result<(), WireError> {
        match frame {
            AMQPFrame::Method(ch, AMQPClass::Basic(basic::AMQPMethod::Ack(a))) => {
                self.settle(ch, a.delivery_tag, a.multiple, true);
            }
            AMQPFrame::Method(ch, AMQPClass::Basic(basic::AMQPMethod::Nack(n))) => {
                self.settle(ch, n.delivery_tag, n.multiple, false);
            }
            AMQPFrame::Method(ch, AMQPClass::Basic(basic::AMQPMethod::Return(r))) => {
                self.state().returning = Some(Returning {
                    channel: ch,
                    routing_key: r.routing_key.to_string(),
                    props: None,
                    size: 0,
                    body: Vec::new(),
                });
            }
            AMQPFrame::Header(ch, header) => {
                let done = {
                    let mut st = self.state();
                    match st.returning.as_mut() {
                        Some(r) if r.channel == ch && r.props.is_none() => {
                            r.size = header.body_size;
                            r.props = Some(header.properties);
                            r.size == 0
                        }
                        _ => return Err(WireError::Broker("content header out of place".into())),
                    }
                };
                if done {
                    self.finish_return();
                }
            }
            AMQPFrame::Body(ch, data) => {
                let done = {
                    let mut st = self.state();
                    match st.returning.as_mut() {
                        Some(r) if r.channel == ch && r.props.is_some() => {
                            r.body.extend_from_slice(&data);
                            r.body.len() as u64 >= r.size
                        }
                        _ => return Err(WireError::Broker("content body out of place".into())),
                    }
                };
                if done {
                    self.finish_return();
                }
            }
            AMQPFrame::Method(ch, AMQPClass::Channel(channel::AMQPMethod::OpenOk(_))) => {
                self.enqueue(ch, confirm_select());
            }
            AMQPFrame::Method(ch, AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(_))) => {
                let retire = {
                    let mut st = self.state();
                    // Only a replacement is opened after set-up.
                    let Some(old) = st.replacing.take() else {
                        return Err(WireError::Broker("confirm.select-ok out of place".into()));
                    };
                    st.channels.push(Chan::new(ch));
                    st.last_renew = Instant::now();
                    let settled = match st.channels.iter_mut().find(|c| c.id == old) {
                        Some(c) => {
                            c.retired = true;
                            c.pending.is_empty()
                        }
                        None => false,
                    };
                    if settled {
                        st.channels.retain(|c| c.id != old);
                    }
                    settled.then_some(old)
                };
                if let Some(id) = retire {
                    self.enqueue(id, channel_close());
                }
            }
            AMQPFrame::Method(_, AMQPClass::Channel(channel::AMQPMethod::CloseOk(_))) => {}
            AMQPFrame::Method(ch, AMQPClass::Channel(channel::AMQPMethod::Close(c))) => {
                self.enqueue(
                    ch,
                    AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                );
                return Err(WireError::Broker(format!(
                    "the broker closed channel {ch}: {} {}",
                    c.reply_code, c.reply_text
                )));
            }
            AMQPFrame::Method(_, AMQPClass::Connection(connection::AMQPMethod::Blocked(b))) => {
                let _ = self.events.send(WireEvent::Blocked(b.reason.to_string()));
            }
            AMQPFrame::Method(_, AMQPClass::Connection(connection::AMQPMethod::Unblocked(_))) => {
                let _ = self.events.send(WireEvent::Unblocked);
            }
            AMQPFrame::Method(_, AMQPClass::Connection(connection::AMQPMethod::Close(c))) => {
                self.enqueue(
                    0,
                    connection_method(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
                );
                return Err(WireError::Broker(format!(
                    "the broker closed the connection: {} {}",
                    c.reply_code, c.reply_text
                )));
            }
            AMQPFrame::Method(_, AMQPClass::Connection(connection::AMQPMethod::CloseOk(_))) => {
                return Err(WireError::Io("connection closed".into()));
            }
            AMQPFrame::Heartbeat => {}
            other => {
                return Err(WireError::Broker(format!(
                    "unexpected frame from the broker: {other}"
                )));
            }
        }
        Ok(())
    }

    fn finish_return(&self) {
        let Some(r) = self.state().returning.take() else {
            return;
        };
        let props = r.props.unwrap_or_default();
        let msg = message_from(r.routing_key, &props, r.body);
        self.returned(r.channel, msg);
    }
}

/// Read more into `buf`, first dropping the `*at` bytes already parsed.
pub(super) async fn refill(
    rd: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
    at: &mut usize,
) -> std::io::Result<usize> {
    buf.drain(..*at);
    *at = 0;
    rd.read_buf(buf).await
}

/// The reader and the writer of a connection's two halves, as tasks.
fn spawn_loops<R, W>(rd: R, wr: W, rbuf: Vec<u8>, shared: &Arc<Shared>) -> [AbortHandle; 2]
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let reader = tokio::spawn(read_loop(rd, rbuf, Arc::clone(shared)));
    let writer = tokio::spawn(write_loop(wr, Arc::clone(shared)));
    [reader.abort_handle(), writer.abort_handle()]
}

/// Everything in `bytes` to the broker (through TLS's buffer too: the flush is a no-op on plain
/// TCP).
async fn send_all(wr: &mut (impl AsyncWrite + Unpin), bytes: &[u8]) -> std::io::Result<()> {
    wr.write_all(bytes).await?;
    wr.flush().await
}

/// Writes what was queued, one `write_all` per batch; a heartbeat when nothing was written for
/// half the interval.
async fn write_loop(mut wr: impl AsyncWrite + Unpin, shared: Arc<Shared>) {
    let mut spare = Vec::new();
    let idle = shared.heartbeat.map(|h| h / 2);
    loop {
        let woken = match idle {
            Some(idle) => tokio::time::timeout(idle, shared.flush.notified())
                .await
                .is_ok(),
            None => {
                shared.flush.notified().await;
                true
            }
        };
        if woken && shared.state().out.len() < COALESCE_BELOW {
            // Let the requests that are ready on this worker queue their publishes too: one
            // `sendto` over loopback costs more than a publish's frames. Not when a batch is
            // already this large (an isendu request's 50 messages): it would only hold more
            // memory (docs/BENCHMARKS.md, "Publishes coalesced per write").
            tokio::task::yield_now().await;
        }
        let (batch, dead) = {
            let mut st = shared.state();
            let batch = std::mem::replace(&mut st.out, std::mem::take(&mut spare));
            (batch, st.dead.is_some())
        };
        if dead {
            // A `close-ok` the reader queued on its way out still goes.
            let _ = send_all(&mut wr, &batch).await;
            return;
        }
        let result = if !batch.is_empty() {
            send_all(&mut wr, &batch).await
        } else if !woken {
            send_all(&mut wr, &[8, 0, 0, 0, 0, 0, 0, 0xCE]).await
        } else {
            Ok(())
        };
        if let Err(e) = result {
            shared.die(WireError::Io(format!("writing to the broker: {e}")));
            return;
        }
        spare = batch;
        spare.clear();
    }
}

/// Reads the broker's frames; two heartbeat intervals of silence end the connection.
async fn read_loop(mut rd: impl AsyncRead + Unpin, mut buf: Vec<u8>, shared: Arc<Shared>) {
    let silence = shared.heartbeat.map(|h| h * 2);
    let mut at = 0;
    let why = 'read: loop {
        loop {
            match next_frame(&buf, &mut at) {
                Ok(Some(frame)) => {
                    if let Err(e) = shared.on_frame(frame) {
                        break 'read e;
                    }
                }
                Ok(None) => break,
                Err(e) => break 'read e,
            }
        }
        let read = refill(&mut rd, &mut buf, &mut at);
        let read = match silence {
            Some(s) => match tokio::time::timeout(s, read).await {
                Ok(r) => r,
                Err(_) => break WireError::Io("no heartbeat from the broker".into()),
            },
            None => read.await,
        };
        match read {
            Ok(0) => break WireError::Io("the broker closed the connection".into()),
            Ok(_) => {}
            Err(e) => break WireError::Io(format!("reading from the broker: {e}")),
        }
    };
    // Let a close-ok queued above go out before the writer stops.
    tokio::task::yield_now().await;
    shared.die(why);
}

/// The reader's handling of what a broker sends, without a socket: `data` is the byte stream,
/// cut into frames and handled in turn while `pending` publishes (ids `0`, `1`, …) wait on
/// channel 1, until the data runs out or a frame ends the connection. Returns the publishes
/// settled and the bytes consumed. For the fuzz target `amqp_frames`: no input may panic.
#[doc(hidden)]
pub fn offline(data: &[u8], pending: usize) -> (usize, usize) {
    let (events, _rx) = mpsc::unbounded_channel();
    let shared = Shared::new(FRAME_MAX as usize, None, 1, events);
    let waits: Vec<_> = (0..pending)
        .map(|i| shared.push_pending(&i.to_string()))
        .collect();
    let mut at = 0;
    while let Ok(Some(frame)) = next_frame(data, &mut at) {
        if shared.on_frame(frame).is_err() {
            break;
        }
    }
    let settled = waits
        .into_iter()
        .filter_map(|mut w| w.try_recv().ok())
        .count();
    (settled, at)
}

impl Shared {
    /// A publish of `id` waiting on the current channel, as [`Wire::publish`] leaves it (without
    /// its frames).
    fn push_pending(&self, id: &str) -> oneshot::Receiver<Outcome> {
        let mut st = self.state();
        match st.take_turn() {
            Some(i) => st.channels[i].wait_for(id),
            None => oneshot::channel().1,
        }
    }
}

mod frames;
mod handshake;
#[cfg(test)]
mod tests;
