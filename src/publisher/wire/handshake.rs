//! Opening the builtin connection: protocol header, `PLAIN` login, tuning (frame size, heartbeat,
//! channels), the virtual host, then channel 1 in confirm mode.

use std::str::FromStr;

use amq_protocol::frame::{AMQPFrame, ProtocolVersion};
use amq_protocol::protocol::{AMQPClass, channel, confirm, connection};
use amq_protocol::types::LongString;
use amq_protocol::uri::AMQPUri;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::frames::{
    append, channel_open, client_properties, confirm_select, connection_method, next_frame,
};
use super::{FRAME_MAX, WireError, refill};

/// What the broker and the bridge agreed on.
pub(super) struct Tuned {
    pub(super) frame_max: u32,
    /// Seconds; 0 for none.
    pub(super) heartbeat: u16,
}

/// Connect to `url` and set the connection up; the socket, what was read past the last answer,
/// and the tuning. The caller bounds the time it may take.
pub(super) async fn open(url: &str, name: &str) -> Result<(TcpStream, Vec<u8>, Tuned), WireError> {
    let uri = AMQPUri::from_str(url).map_err(WireError::Url)?;
    let mut stream = TcpStream::connect((uri.authority.host.as_str(), uri.authority.port)).await?;
    stream.set_nodelay(true)?;
    let mut rbuf = Vec::with_capacity(16 * 1024);

    send(
        &mut stream,
        &AMQPFrame::ProtocolHeader(ProtocolVersion::amqp_0_9_1()),
    )
    .await?;
    let start = match read_method(&mut stream, &mut rbuf, "connection.start").await? {
        AMQPClass::Connection(connection::AMQPMethod::Start(s)) => s,
        other => return Err(unexpected("connection.start", &other)),
    };
    if !start
        .mechanisms
        .to_string()
        .split(' ')
        .any(|m| m == "PLAIN")
    {
        return Err(WireError::Broker(
            "the broker does not offer the PLAIN login".into(),
        ));
    }
    let user = &uri.authority.userinfo;
    let start_ok = connection::StartOk {
        client_properties: client_properties(name),
        mechanism: "PLAIN".into(),
        response: LongString::from(format!("\0{}\0{}", user.username, user.password)),
        locale: "en_US".into(),
    };
    let start_ok = connection_method(connection::AMQPMethod::StartOk(start_ok));
    let tune = match rpc(&mut stream, &mut rbuf, 0, start_ok, "connection.tune").await? {
        AMQPClass::Connection(connection::AMQPMethod::Tune(t)) => t,
        other => return Err(unexpected("connection.tune", &other)),
    };
    let asked_frame = uri.query.frame_max.unwrap_or(FRAME_MAX);
    let frame_max = match tune.frame_max {
        0 => asked_frame,
        n => n.min(asked_frame),
    }
    .max(4096);
    let heartbeat = match (uri.query.heartbeat.unwrap_or(0), tune.heartbeat) {
        (0, _) => 0,
        (c, 0) => c,
        (c, s) => c.min(s),
    };
    let channel_max = match tune.channel_max {
        0 => u16::MAX,
        n => n,
    };
    let tune_ok = connection::TuneOk {
        channel_max,
        frame_max,
        heartbeat,
    };
    let tune_ok = connection_method(connection::AMQPMethod::TuneOk(tune_ok));
    send(&mut stream, &AMQPFrame::Method(0, tune_ok)).await?;
    let open = connection_method(connection::AMQPMethod::Open(connection::Open {
        virtual_host: uri.vhost.as_str().into(),
    }));
    match rpc(&mut stream, &mut rbuf, 0, open, "connection.open-ok").await? {
        AMQPClass::Connection(connection::AMQPMethod::OpenOk(_)) => {}
        other => return Err(unexpected("connection.open-ok", &other)),
    }
    match rpc(&mut stream, &mut rbuf, 1, channel_open(), "channel.open-ok").await? {
        AMQPClass::Channel(channel::AMQPMethod::OpenOk(_)) => {}
        other => return Err(unexpected("channel.open-ok", &other)),
    }
    match rpc(
        &mut stream,
        &mut rbuf,
        1,
        confirm_select(),
        "confirm.select-ok",
    )
    .await?
    {
        AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(_)) => {}
        other => return Err(unexpected("confirm.select-ok", &other)),
    }
    Ok((
        stream,
        rbuf,
        Tuned {
            frame_max,
            heartbeat,
        },
    ))
}

fn unexpected(what: &str, got: &AMQPClass) -> WireError {
    match got {
        AMQPClass::Connection(connection::AMQPMethod::Close(c)) => WireError::Broker(format!(
            "the broker closed the connection during set-up: {} {}",
            c.reply_code, c.reply_text
        )),
        other => WireError::Broker(format!("expected {what}, got {other:?}")),
    }
}

async fn send(stream: &mut TcpStream, frame: &AMQPFrame) -> Result<(), WireError> {
    let mut buf = Vec::new();
    append(&mut buf, frame)?;
    stream.write_all(&buf).await?;
    Ok(())
}

/// During set-up: send `class` on `channel`, then [`read_method`] the broker's answer.
async fn rpc(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    channel: u16,
    class: AMQPClass,
    what: &str,
) -> Result<AMQPClass, WireError> {
    send(stream, &AMQPFrame::Method(channel, class)).await?;
    read_method(stream, buf, what).await
}

/// During set-up: read frames until a method (heartbeats are skipped).
async fn read_method(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    what: &str,
) -> Result<AMQPClass, WireError> {
    let mut at = 0;
    loop {
        while let Some(frame) = next_frame(buf, &mut at)? {
            match frame {
                AMQPFrame::Method(_, class) => {
                    buf.drain(..at);
                    return Ok(class);
                }
                AMQPFrame::Heartbeat => {}
                other => return Err(WireError::Broker(format!("expected {what}, got {other}"))),
            }
        }
        if refill(stream, buf, &mut at).await? == 0 {
            return Err(WireError::Io(format!(
                "the broker closed the connection before {what}"
            )));
        }
    }
}
