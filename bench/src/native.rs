//! `--native-phase`: raw publishes through the bridge's own publishing connection
//! (`webhook_bridge::publisher::wire`: amq-protocol's frames on one `TcpStream`, a writer and a
//! reader task on the runtime's workers, no I/O thread), the client the bridge itself publishes
//! with by default. Against raw lapin, it shows what lapin's hand-offs to its I/O
//! thread cost a publish; against the bridge, what the bridge costs around the same client.

use std::sync::Arc;

use anyhow::{Result, anyhow};
use webhook_bridge::config::{AuthMechanism, TlsFiles};
use webhook_bridge::message::Message;
use webhook_bridge::publisher::wire::{Outcome, Wire};
use webhook_bridge::publisher::with_defaults;

use crate::load::Op;

/// A connected publisher of the bridge's message; clones share the connection.
#[derive(Clone)]
pub struct NativePublisher {
    wire: Arc<Wire>,
    exchange: Arc<str>,
    message: Arc<[Message; 1]>,
}

impl NativePublisher {
    pub async fn connect(url: &str, exchange: &str, msg: &Message) -> Result<Self> {
        // Nobody listens for `connection.blocked` here: a blocked broker shows as slow confirms.
        let (events, _) = tokio::sync::mpsc::unbounded_channel();
        let no_tls = TlsFiles::default().read()?;
        let wire = Wire::connect(
            &with_defaults(url),
            "webhook-bridge-bench native",
            &no_tls,
            AuthMechanism::Plain,
            1,
            events,
        )
        .await
        .map_err(|e| anyhow!("native publisher: {e}"))?;
        Ok(Self {
            wire: Arc::new(wire),
            exchange: exchange.into(),
            message: Arc::new([msg.clone()]),
        })
    }

    /// One persistent, mandatory publish per call, done when the broker acks it.
    pub fn op(&self) -> Op {
        let this = self.clone();
        Arc::new(move |_worker: usize, _seq: u64| {
            let this = this.clone();
            Box::pin(async move {
                let waits = this
                    .wire
                    .publish(&this.exchange, this.message.as_slice())
                    .map_err(|e| e.to_string())?;
                for wait in waits {
                    match wait.await {
                        Ok(Outcome::Acked) => {}
                        Ok(other) => return Err(format!("not acked: {other:?}")),
                        Err(_) => return Err(this.wire.error().to_string()),
                    }
                }
                Ok(1)
            })
        })
    }
}
