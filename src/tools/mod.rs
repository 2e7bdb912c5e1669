//! Operator tools that talk to the broker with the bridge's own `[amqp]` settings, each a
//! subcommand of the binary: `tail` (watch the exchange from a temporary queue of its own) and
//! `unrouted replay` (move parked messages back to the exchange). Neither declares the bridge's
//! topology, nor consumes from any queue but its own, except `unrouted replay` from
//! `<exchange>.unrouted`. `spool` reads a spool directory instead, offline and read-only.

use lapin::Connection;
use tracing::{info, warn};

use crate::config::AmqpConfig;
use crate::publisher;
use crate::secret::redact_url;

pub mod spool;
pub mod tail;
pub mod unrouted;

/// Why a tool stopped before finishing its job.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// Every configured URL failed; one entry per URL, passwords redacted.
    #[error("cannot connect to the broker: {0}")]
    Connect(String),
    #[error("the exchange {exchange} cannot be used: {source}")]
    Exchange {
        exchange: String,
        source: lapin::Error,
    },
    #[error("the queue {queue} cannot be used: {source}")]
    Queue { queue: String, source: lapin::Error },
    #[error("AMQP error: {0}")]
    Amqp(#[from] lapin::Error),
    #[error(
        "the broker did not confirm a re-published message within {0:?}; the pass was stopped \
         (that message stays in the unrouted queue and may also have reached the exchange: a \
         duplicate with the same message_id)"
    )]
    ConfirmTimeout(std::time::Duration),
    #[error("cannot read the spool: {0}")]
    Spool(#[from] crate::spool::SpoolError),
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

/// Connect to the first configured URL that answers, in order, each within `connect_timeout`,
/// with the bridge's TLS files and login (`publisher::open`). `name` is the connection name
/// shown by the broker's management tools.
pub async fn connect(cfg: &AmqpConfig, name: &str) -> Result<Connection, ToolError> {
    let mut failures = Vec::new();
    for url in &cfg.urls {
        let shown = redact_url(url.expose());
        let attempt = publisher::open(cfg, url.expose(), name);
        match tokio::time::timeout(cfg.connect_timeout, attempt).await {
            Ok(Ok(conn)) => {
                info!(url = %shown, "connected to broker");
                return Ok(conn);
            }
            Ok(Err(e)) => {
                warn!(url = %shown, error = %e, "broker connection failed");
                failures.push(format!("{shown}: {e}"));
            }
            Err(_) => {
                warn!(url = %shown, "broker connection timed out");
                failures.push(format!(
                    "{shown}: no answer within {:?}",
                    cfg.connect_timeout
                ));
            }
        }
    }
    Err(ToolError::Connect(failures.join("; ")))
}

/// `s` with control characters escaped, so that text from a message cannot drive the terminal;
/// `-` when empty.
pub(crate) fn printable(s: &str) -> String {
    if s.is_empty() {
        return "-".into();
    }
    s.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_control_characters() {
        assert_eq!(printable("ORD-1"), "ORD-1");
        assert_eq!(printable(""), "-");
        assert_eq!(printable("a\u{1b}[2Jb\n"), "a\\u{1b}[2Jb\\n");
    }
}
