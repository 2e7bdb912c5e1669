//! `webhook-bridge tail`: print the messages published to the exchange as they pass.
//!
//! A server-named, exclusive, auto-delete queue is bound to the exchange with the given topic
//! patterns and consumed with automatic acknowledgement; it is the only queue touched, and the
//! broker deletes it when the connection closes. Consumers' queues get every message as before.
//! The queue is capped ([`QUEUE_MAX_LENGTH`], oldest dropped first) so that a tail that cannot
//! keep up never fills the broker's memory. Its binding does count for routing, though: while it
//! runs, a message matching its patterns that no other queue is bound for reaches the tail only,
//! not `<exchange>.unrouted`.

use std::io::Write;

use futures_util::StreamExt;
use lapin::BasicProperties;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use serde_json::Value;
use tokio::sync::watch;
use tracing::{info, warn};

use super::{ToolError, connect, printable};
use crate::config::AmqpConfig;
use crate::shutdown;

/// Messages the temporary queue holds at most; beyond that the oldest are dropped.
pub const QUEUE_MAX_LENGTH: i64 = 10_000;

/// The pattern used when none is given: every routing key.
pub const ALL: &str = "#";

/// What to watch and how to print it.
#[derive(Debug, Clone, Default)]
pub struct TailOptions {
    /// Topic binding patterns (the command line requires at least one); empty means [`ALL`].
    pub patterns: Vec<String>,
    /// Print each message's JSON body (one line) instead of a summary line.
    pub json: bool,
}

/// Run until SIGTERM or SIGINT, printing one line per message to `out`. Returns how many were
/// printed. A closed output (`tail … | head`) ends it quietly.
pub async fn run<W: Write>(cfg: &AmqpConfig, opts: &TailOptions, out: W) -> Result<u64, ToolError> {
    let (tx, rx) = shutdown::channel();
    let signals = tokio::spawn(shutdown::on_signal(tx));
    let result = tail(cfg, opts, out, rx).await;
    signals.abort();
    result
}

/// [`run`], stopping when `stop` turns true instead of on a signal.
pub async fn tail<W: Write>(
    cfg: &AmqpConfig,
    opts: &TailOptions,
    mut out: W,
    mut stop: watch::Receiver<bool>,
) -> Result<u64, ToolError> {
    let patterns: Vec<&str> = if opts.patterns.is_empty() {
        vec![ALL]
    } else {
        opts.patterns.iter().map(String::as_str).collect()
    };
    let conn = connect(cfg, "webhook-bridge tail").await?;
    let channel = conn.create_channel().await?;
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("x-max-length"),
        AMQPValue::LongLongInt(QUEUE_MAX_LENGTH),
    );
    let queue = channel
        .queue_declare(
            ShortString::from(""),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await?;
    let queue = queue.name().clone();
    for pattern in &patterns {
        channel
            .queue_bind(
                queue.clone(),
                ShortString::from(cfg.exchange.as_str()),
                ShortString::from(*pattern),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|source| ToolError::Exchange {
                exchange: cfg.exchange.clone(),
                source,
            })?;
    }
    let mut consumer = channel
        .basic_consume(
            queue.clone(),
            ShortString::from("webhook-bridge-tail"),
            BasicConsumeOptions {
                no_ack: true,
                exclusive: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    info!(
        exchange = %cfg.exchange,
        queue = %queue,
        patterns = %patterns.join(" "),
        "tail: listening (messages that match no other binding reach only this queue meanwhile, \
         not the unrouted queue)"
    );
    let mut printed = 0u64;
    let outcome = loop {
        let delivery = tokio::select! {
            _ = stop.wait_for(|s| *s) => break Ok(()),
            next = consumer.next() => next,
        };
        let delivery = match delivery {
            Some(Ok(d)) => d,
            Some(Err(e)) => break Err(ToolError::Amqp(e)),
            None => {
                warn!("tail: the broker ended the subscription");
                break Ok(());
            }
        };
        let text = if opts.json {
            json_line(&delivery.data)
        } else {
            summary_line(
                delivery.routing_key.as_str(),
                &delivery.properties,
                &delivery.data,
            )
        };
        match writeln!(out, "{text}").and_then(|()| out.flush()) {
            Ok(()) => printed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break Ok(()),
            Err(e) => break Err(ToolError::Output(e)),
        }
    };
    // The queue is exclusive: closing the connection deletes it.
    let _ = conn.close(200, ShortString::from("tail done")).await;
    info!(printed, "tail: stopped");
    outcome.map(|()| printed)
}

/// `time  routing-key  message_id  entity_id  status`: the CloudEvent's `time` (else the AMQP
/// timestamp), the routing key, `message_id`, `data.entity_id` and `data.status`; `-` for what
/// a message does not carry (a status of `null`, a body that is not a CloudEvent).
pub fn summary_line(routing_key: &str, props: &BasicProperties, body: &[u8]) -> String {
    let event: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let text = |v: &Value| v.as_str().map(printable);
    let time = text(&event["time"])
        .or_else(|| {
            props
                .timestamp()
                .and_then(|t| i64::try_from(t).ok())
                .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
                .map(|t| t.to_rfc3339())
        })
        .unwrap_or_else(|| "-".into());
    let id = props
        .message_id()
        .as_ref()
        .map(|s| printable(s.as_str()))
        .or_else(|| text(&event["id"]))
        .unwrap_or_else(|| "-".into());
    let entity_id = text(&event["data"]["entity_id"]).unwrap_or_else(|| "-".into());
    let status = text(&event["data"]["status"]).unwrap_or_else(|| "-".into());
    format!(
        "{time}  {}  {id}  {entity_id}  {status}",
        printable(routing_key)
    )
}

/// The body as one line of JSON: the bytes as published, with the whitespace between tokens
/// removed (a provider's payload is embedded as sent, line breaks included). A body that is not
/// JSON is printed as a JSON string.
pub fn json_line(body: &[u8]) -> String {
    if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err() {
        return Value::String(String::from_utf8_lossy(body).into_owned()).to_string();
    }
    // Valid JSON is UTF-8, and whitespace outside strings is only these four bytes; inside a
    // string they can only appear escaped, so dropping them outside strings changes nothing else.
    let mut out = Vec::with_capacity(body.len());
    let (mut in_string, mut escaped) = (false, false);
    for &b in body {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
            if b == b'"' {
                in_string = true;
            }
            out.push(b);
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props() -> BasicProperties {
        BasicProperties::default()
            .with_message_id(ShortString::from("7efc1c4b-7d79-ab67-4d46-6c6225c5e531"))
            .with_timestamp(1_778_320_800)
    }

    #[test]
    fn summary_line_has_time_key_id_entity_and_status() {
        let body = br#"{"id":"x","time":"2026-05-09T12:00:00+02:00","data":{"entity_id":"ORD-000129","status":"delivered"}}"#;
        assert_eq!(
            summary_line("wegocod.order.status_changed", &props(), body),
            "2026-05-09T12:00:00+02:00  wegocod.order.status_changed  \
             7efc1c4b-7d79-ab67-4d46-6c6225c5e531  ORD-000129  delivered"
        );
    }

    #[test]
    fn summary_line_fills_what_is_missing_with_dashes() {
        let body = br#"{"data":{"entity_id":null,"status":null}}"#;
        assert_eq!(
            summary_line(
                "mailship.product.updated",
                &BasicProperties::default(),
                body
            ),
            "-  mailship.product.updated  -  -  -"
        );
        assert_eq!(
            summary_line("x.y", &props(), b"not json"),
            "2026-05-09T10:00:00+00:00  x.y  7efc1c4b-7d79-ab67-4d46-6c6225c5e531  -  -"
        );
        let hostile = br#"{"data":{"entity_id":"A\u001b[2J\nB","status":"delivered"}}"#;
        assert!(
            !summary_line("k", &props(), hostile)
                .chars()
                .any(char::is_control)
        );
    }

    #[test]
    fn json_line_removes_line_breaks_between_tokens_only() {
        let body = b"{\"a\": [1,\n 2],\r\n\t\"b\": \"x y\\\" \\n\"}";
        let line = json_line(body);
        assert_eq!(line, "{\"a\":[1,2],\"b\":\"x y\\\" \\n\"}");
        let a: Value = serde_json::from_slice(body).unwrap();
        let b: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(a, b);
        assert_eq!(json_line(b"plain\ntext"), "\"plain\\ntext\"");
    }
}
