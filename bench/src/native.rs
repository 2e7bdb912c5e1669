//! `--native-phase`: what an AMQP publisher costs when the runtime's own workers drive its
//! socket. lapin (the bridge's client and raw's) runs a thread of its own for I/O: a publish is
//! handed to it, and its confirm is handed back, so every message crosses threads twice. This
//! client has no such thread: amq-protocol's frames (the crate lapin itself encodes with) written
//! to one `TcpStream` by one task and read back by another, on the bench's tokio runtime.
//!
//! It is deliberately small — one confirm channel, PLAIN login, no heartbeat, no TLS, no
//! reconnect, returns and `connection.close` failing every pending publish — because it only has
//! to answer one question: how much of a publish's CPU is lapin's hand-offs. Every publish still
//! serializes its three frames (method, content header, body) anew, as a client publishing
//! different messages would, and resolves only on the broker's ack, multiple-acks included.

use std::collections::VecDeque;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};

use amq_protocol::frame::{AMQPContentHeader, AMQPFrame, ProtocolVersion, gen_frame, parse_frame};
use amq_protocol::protocol::{AMQPClass, BasicProperties, basic, channel, confirm, connection};
use amq_protocol::types::{FieldTable, LongString, ShortString};
use amq_protocol::uri::AMQPUri;
use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, oneshot};
use webhook_bridge::message::Message;

use crate::load::Op;

/// The channel every publish goes on.
const CHANNEL: u16 = 1;
/// The frame size asked for, as the bridge asks (`DEFAULT_FRAME_MAX`).
const FRAME_MAX: u32 = webhook_bridge::publisher::DEFAULT_FRAME_MAX;
/// A frame's header (type, channel, size) and end octet.
const FRAME_OVERHEAD: usize = 8;

/// A connected confirm publisher; clones share the connection.
#[derive(Clone)]
pub struct NativePublisher {
    shared: Arc<Shared>,
    exchange: ShortString,
    routing_key: ShortString,
    body: Arc<Vec<u8>>,
    props: BasicProperties,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the writer task when `State::out` goes from empty to not empty.
    flush: Notify,
    frame_max: usize,
}

#[derive(Default)]
struct State {
    /// Serialized frames the writer has not taken yet.
    out: Vec<u8>,
    /// Delivery tag of the next publish (the broker counts from 1 per channel).
    next_tag: u64,
    /// Publishes awaiting their confirm, in tag order: `true` for an ack.
    pending: VecDeque<(u64, oneshot::Sender<bool>)>,
    /// Set when the connection failed: every later publish fails at once.
    dead: Option<String>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The broker confirmed `tag` (and every earlier one, if `multiple`).
    fn settle(&self, tag: u64, multiple: bool, acked: bool) {
        let mut st = self.state();
        if multiple {
            while st.pending.front().is_some_and(|(t, _)| *t <= tag) {
                if let Some((_, tx)) = st.pending.pop_front() {
                    let _ = tx.send(acked);
                }
            }
        } else if let Some(i) = st.pending.iter().position(|(t, _)| *t == tag)
            && let Some((_, tx)) = st.pending.remove(i)
        {
            let _ = tx.send(acked);
        }
    }

    /// The connection is gone: every pending publish fails (its sender dropped).
    fn fail(&self, why: String) {
        let mut st = self.state();
        st.pending.clear();
        st.dead.get_or_insert(why);
    }
}

impl NativePublisher {
    /// Connect to `url`, open channel 1 in confirm mode and start the reader and writer tasks.
    pub async fn connect(url: &str, exchange: &str, msg: &Message) -> Result<Self> {
        let uri = AMQPUri::from_str(url).map_err(|e| anyhow!("AMQP URL: {e}"))?;
        let addr = (uri.authority.host.as_str(), uri.authority.port);
        let mut stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {}:{}", addr.0, addr.1))?;
        stream.set_nodelay(true)?;
        let mut rbuf = Vec::with_capacity(64 * 1024);

        send(
            &mut stream,
            &AMQPFrame::ProtocolHeader(ProtocolVersion::amqp_0_9_1()),
        )
        .await?;
        expect(&mut stream, &mut rbuf, "connection.start", |c| {
            matches!(c, AMQPClass::Connection(connection::AMQPMethod::Start(_)))
        })
        .await?;
        let user = &uri.authority.userinfo;
        let login = format!("\0{}\0{}", user.username, user.password);
        let start_ok = connection::StartOk {
            client_properties: FieldTable::default(),
            mechanism: ShortString::from("PLAIN"),
            response: LongString::from(login),
            locale: ShortString::from("en_US"),
        };
        send_method(
            &mut stream,
            0,
            AMQPClass::Connection(connection::AMQPMethod::StartOk(start_ok)),
        )
        .await?;
        let tune = match expect(&mut stream, &mut rbuf, "connection.tune", |c| {
            matches!(c, AMQPClass::Connection(connection::AMQPMethod::Tune(_)))
        })
        .await?
        {
            AMQPClass::Connection(connection::AMQPMethod::Tune(t)) => t,
            _ => bail!("expected connection.tune"),
        };
        let frame_max = match tune.frame_max {
            0 => FRAME_MAX,
            n => n.min(FRAME_MAX),
        };
        let tune_ok = connection::TuneOk {
            channel_max: tune.channel_max,
            frame_max,
            // No heartbeat: the runs are short and the broker is local.
            heartbeat: 0,
        };
        send_method(
            &mut stream,
            0,
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(tune_ok)),
        )
        .await?;
        let open = connection::Open {
            virtual_host: ShortString::from(uri.vhost.clone()),
        };
        send_method(
            &mut stream,
            0,
            AMQPClass::Connection(connection::AMQPMethod::Open(open)),
        )
        .await?;
        expect(&mut stream, &mut rbuf, "connection.open-ok", |c| {
            matches!(c, AMQPClass::Connection(connection::AMQPMethod::OpenOk(_)))
        })
        .await?;
        send_method(
            &mut stream,
            CHANNEL,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        )
        .await?;
        expect(&mut stream, &mut rbuf, "channel.open-ok", |c| {
            matches!(c, AMQPClass::Channel(channel::AMQPMethod::OpenOk(_)))
        })
        .await?;
        send_method(
            &mut stream,
            CHANNEL,
            AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
                nowait: false,
            })),
        )
        .await?;
        expect(&mut stream, &mut rbuf, "confirm.select-ok", |c| {
            matches!(c, AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(_)))
        })
        .await?;

        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                next_tag: 1,
                ..State::default()
            }),
            flush: Notify::new(),
            frame_max: frame_max as usize,
        });
        let (rd, wr) = stream.into_split();
        tokio::spawn(read_loop(rd, rbuf, Arc::clone(&shared)));
        tokio::spawn(write_loop(wr, Arc::clone(&shared)));
        Ok(Self {
            shared,
            exchange: ShortString::from(exchange.to_string()),
            routing_key: ShortString::from(msg.routing_key.as_str().to_string()),
            body: Arc::new(msg.body.clone()),
            props: webhook_bridge::publisher::properties(msg),
        })
    }

    /// One persistent, mandatory publish, done when the broker acks it.
    pub async fn publish(&self) -> Result<(), String> {
        let method = AMQPFrame::Method(
            CHANNEL,
            AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: self.exchange.clone(),
                routing_key: self.routing_key.clone(),
                mandatory: true,
                immediate: false,
            })),
        );
        let header = AMQPFrame::Header(
            CHANNEL,
            AMQPContentHeader {
                class_id: 60,
                body_size: self.body.len() as u64,
                properties: self.props.clone(),
            },
        );
        let rx = {
            let mut st = self.shared.state();
            if let Some(why) = &st.dead {
                return Err(why.clone());
            }
            let was_empty = st.out.is_empty();
            let out = std::mem::take(&mut st.out);
            let out = append(out, &method).and_then(|out| append(out, &header));
            let mut out = out.map_err(|e| format!("serializing a publish: {e}"))?;
            for chunk in self.body.chunks(self.shared.frame_max - FRAME_OVERHEAD) {
                body_frame(&mut out, chunk);
            }
            st.out = out;
            let tag = st.next_tag;
            st.next_tag += 1;
            let (tx, rx) = oneshot::channel();
            st.pending.push_back((tag, tx));
            if was_empty {
                self.shared.flush.notify_one();
            }
            rx
        };
        match rx.await {
            Ok(true) => Ok(()),
            Ok(false) => Err("nacked".into()),
            Err(_) => Err(self
                .shared
                .state()
                .dead
                .clone()
                .unwrap_or_else(|| "connection lost".into())),
        }
    }

    /// [`NativePublisher::publish`] as the load drivers take it.
    pub fn op(&self) -> Op {
        let this = self.clone();
        Arc::new(move |_worker: usize, _seq: u64| {
            let this = this.clone();
            Box::pin(async move { this.publish().await.map(|()| 1) })
        })
    }
}

/// `out` with `frame` serialized at its end.
fn append(out: Vec<u8>, frame: &AMQPFrame) -> Result<Vec<u8>, amq_protocol::frame::GenError> {
    let (out, _) = gen_frame(frame)(out.into())?.into_inner();
    Ok(out)
}

/// A content body frame, written directly: cloning the body into an `AMQPFrame::Body` would
/// copy it once more for nothing.
fn body_frame(out: &mut Vec<u8>, chunk: &[u8]) {
    out.push(3);
    out.extend_from_slice(&CHANNEL.to_be_bytes());
    out.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
    out.extend_from_slice(chunk);
    out.push(0xCE);
}

async fn send(stream: &mut TcpStream, frame: &AMQPFrame) -> Result<()> {
    let buf = append(Vec::new(), frame).map_err(|e| anyhow!("serializing {frame}: {e}"))?;
    stream.write_all(&buf).await?;
    Ok(())
}

async fn send_method(stream: &mut TcpStream, channel: u16, class: AMQPClass) -> Result<()> {
    send(stream, &AMQPFrame::Method(channel, class)).await
}

/// The first complete frame of `buf` from `*at`, with `*at` moved past it; `None` if no whole
/// frame starts there.
fn next_frame(buf: &[u8], at: &mut usize) -> Result<Option<AMQPFrame>> {
    let rest = &buf[*at..];
    let Some(size) = rest.get(3..7) else {
        return Ok(None);
    };
    let size = u32::from_be_bytes([size[0], size[1], size[2], size[3]]) as usize;
    let Some(whole) = rest.get(..7 + size + 1) else {
        return Ok(None);
    };
    match parse_frame(whole) {
        Ok((_, frame)) => {
            *at += whole.len();
            Ok(Some(frame))
        }
        Err(e) => bail!("unparsable frame from the broker: {e}"),
    }
}

/// Read more of the socket into `buf`, first dropping the `*at` bytes already parsed.
async fn refill(
    rd: &mut (impl AsyncReadExt + Unpin),
    buf: &mut Vec<u8>,
    at: &mut usize,
) -> std::io::Result<usize> {
    buf.drain(..*at);
    *at = 0;
    rd.read_buf(buf).await
}

/// Read frames until a method that `want` accepts; a `close` or anything else fails.
async fn expect(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    what: &str,
    want: impl Fn(&AMQPClass) -> bool,
) -> Result<AMQPClass> {
    let mut at = 0;
    loop {
        while let Some(frame) = next_frame(buf, &mut at)? {
            match frame {
                AMQPFrame::Method(_, class) if want(&class) => {
                    buf.drain(..at);
                    return Ok(class);
                }
                AMQPFrame::Heartbeat => {}
                other => bail!("expected {what}, got {other:?}"),
            }
        }
        if refill(stream, buf, &mut at).await? == 0 {
            bail!("the broker closed the connection before {what}");
        }
    }
}

/// Takes what publishes queued and writes it, one `write_all` per batch.
async fn write_loop(mut wr: OwnedWriteHalf, shared: Arc<Shared>) {
    let mut spare = Vec::new();
    loop {
        shared.flush.notified().await;
        let batch = {
            let mut st = shared.state();
            if st.dead.is_some() {
                return;
            }
            std::mem::replace(&mut st.out, std::mem::take(&mut spare))
        };
        if batch.is_empty() {
            spare = batch;
            continue;
        }
        if let Err(e) = wr.write_all(&batch).await {
            shared.fail(format!("writing to the broker: {e}"));
            return;
        }
        spare = batch;
        spare.clear();
    }
}

/// Reads the broker's frames and settles confirms; anything else ends the connection.
async fn read_loop(mut rd: OwnedReadHalf, mut buf: Vec<u8>, shared: Arc<Shared>) {
    let mut at = 0;
    let why = loop {
        match next_frame(&buf, &mut at) {
            Ok(Some(AMQPFrame::Method(_, AMQPClass::Basic(basic::AMQPMethod::Ack(a))))) => {
                shared.settle(a.delivery_tag, a.multiple, true);
                continue;
            }
            Ok(Some(AMQPFrame::Method(_, AMQPClass::Basic(basic::AMQPMethod::Nack(n))))) => {
                shared.settle(n.delivery_tag, n.multiple, false);
                continue;
            }
            Ok(Some(AMQPFrame::Heartbeat)) => continue,
            Ok(Some(other)) => break format!("unexpected frame from the broker: {other}"),
            Ok(None) => {}
            Err(e) => break e.to_string(),
        }
        match refill(&mut rd, &mut buf, &mut at).await {
            Ok(0) => break "the broker closed the connection".to_string(),
            Ok(_) => {}
            Err(e) => break format!("reading from the broker: {e}"),
        }
    };
    shared.fail(why);
    shared.flush.notify_one();
}
