//! Opening the builtin connection: TCP, TLS for `amqps://`, the protocol header, the login
//! (`PLAIN` with the URL's user, or `EXTERNAL`: the client certificate), tuning (frame size,
//! heartbeat, channels), the virtual host, then channels 1 to N in confirm mode.

use std::str::FromStr;

use amq_protocol::frame::{AMQPFrame, ProtocolVersion};
use amq_protocol::protocol::{AMQPClass, channel, confirm, connection};
use amq_protocol::types::LongString;
use amq_protocol::uri::{AMQPScheme, AMQPUri};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::frames::{
    append, channel_open, client_properties, confirm_select, connection_method, next_frame,
};
use super::{FRAME_MAX, WireError, refill};
use crate::config::{AuthMechanism, TlsMaterial};
use crate::publisher::tls::client_config;

/// What the broker and the bridge agreed on.
pub(super) struct Tuned {
    pub(super) frame_max: u32,
    /// Seconds; 0 for none.
    pub(super) heartbeat: u16,
}

/// The socket under the connection.
pub(super) enum Socket {
    Plain(TcpStream),
    /// `amqps://`: verified as lapin's connection verifies it (`tls::client_config`).
    Tls(Box<TlsStream<TcpStream>>),
}

/// Connect to `url` and set the connection up: TLS with `tls`'s files for `amqps://`, the
/// `login`, confirm channels 1 to `channels`; the socket, what was read past the last answer,
/// and the tuning. The caller bounds the time it may take.
pub(super) async fn open(
    url: &str,
    name: &str,
    tls: &TlsMaterial,
    login: AuthMechanism,
    channels: u16,
) -> Result<(Socket, Vec<u8>, Tuned), WireError> {
    let uri = AMQPUri::from_str(url).map_err(WireError::Url)?;
    let host = uri.authority.host.as_str();
    let tcp = TcpStream::connect((host, uri.authority.port)).await?;
    tcp.set_nodelay(true)?;
    match uri.scheme {
        AMQPScheme::AMQP => {
            let mut stream = tcp;
            let (rbuf, tuned) = set_up(&mut stream, &uri, name, login, channels).await?;
            Ok((Socket::Plain(stream), rbuf, tuned))
        }
        AMQPScheme::AMQPS => {
            let config = client_config(tls).map_err(|e| WireError::Io(format!("TLS: {e}")))?;
            let server = ServerName::try_from(host.to_owned())
                .map_err(|e| WireError::Url(format!("{host} as a TLS server name: {e}")))?;
            let mut stream = TlsConnector::from(config)
                .connect(server, tcp)
                .await
                .map_err(|e| WireError::Io(format!("TLS handshake with the broker: {e}")))?;
            let (rbuf, tuned) = set_up(&mut stream, &uri, name, login, channels).await?;
            Ok((Socket::Tls(Box::new(stream)), rbuf, tuned))
        }
    }
}

/// The AMQP set-up on an open socket.
async fn set_up<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    uri: &AMQPUri,
    name: &str,
    login: AuthMechanism,
    channels: u16,
) -> Result<(Vec<u8>, Tuned), WireError> {
    let mut rbuf = Vec::with_capacity(16 * 1024);

    send(
        stream,
        &AMQPFrame::ProtocolHeader(ProtocolVersion::amqp_0_9_1()),
    )
    .await?;
    let start = match read_method(stream, &mut rbuf, "connection.start").await? {
        AMQPClass::Connection(connection::AMQPMethod::Start(s)) => s,
        other => return Err(unexpected("connection.start", &other)),
    };
    let user = &uri.authority.userinfo;
    let (mechanism, response) = match login {
        AuthMechanism::Plain => ("PLAIN", format!("\0{}\0{}", user.username, user.password)),
        // The certificate is the login; nothing else is sent.
        AuthMechanism::External => ("EXTERNAL", String::new()),
    };
    if !start
        .mechanisms
        .to_string()
        .split(' ')
        .any(|m| m == mechanism)
    {
        return Err(WireError::Broker(format!(
            "the broker does not offer the {mechanism} login"
        )));
    }
    let start_ok = connection::StartOk {
        client_properties: client_properties(name),
        mechanism: mechanism.into(),
        response: LongString::from(response),
        locale: "en_US".into(),
    };
    let start_ok = connection_method(connection::AMQPMethod::StartOk(start_ok));
    let tune = match rpc(stream, &mut rbuf, 0, start_ok, "connection.tune").await? {
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
    send(stream, &AMQPFrame::Method(0, tune_ok)).await?;
    let open = connection_method(connection::AMQPMethod::Open(connection::Open {
        virtual_host: uri.vhost.as_str().into(),
    }));
    match rpc(stream, &mut rbuf, 0, open, "connection.open-ok").await? {
        AMQPClass::Connection(connection::AMQPMethod::OpenOk(_)) => {}
        other => return Err(unexpected("connection.open-ok", &other)),
    }
    if channels > channel_max {
        return Err(WireError::Broker(format!(
            "the broker allows {channel_max} channels per connection, fewer than amqp.channels \
             ({channels})"
        )));
    }
    for id in 1..=channels {
        match rpc(stream, &mut rbuf, id, channel_open(), "channel.open-ok").await? {
            AMQPClass::Channel(channel::AMQPMethod::OpenOk(_)) => {}
            other => return Err(unexpected("channel.open-ok", &other)),
        }
        match rpc(stream, &mut rbuf, id, confirm_select(), "confirm.select-ok").await? {
            AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(_)) => {}
            other => return Err(unexpected("confirm.select-ok", &other)),
        }
    }
    Ok((
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

async fn send(stream: &mut (impl AsyncWrite + Unpin), frame: &AMQPFrame) -> Result<(), WireError> {
    let mut buf = Vec::new();
    append(&mut buf, frame)?;
    stream.write_all(&buf).await?;
    stream.flush().await?;
    Ok(())
}

/// During set-up: send `class` on `channel`, then [`read_method`] the broker's answer.
async fn rpc(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
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
    stream: &mut (impl AsyncRead + Unpin),
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
