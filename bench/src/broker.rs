//! The bench's own work on the broker, outside any measurement: its admin connection, the queues
//! it reads the phases' messages from, the check that they hold exactly what was acknowledged,
//! and the cleanup. Every name is prefixed with the run's tag, so a run never touches anything
//! it did not create and a killed run's leftovers can be found again (`--cleanup-only`).

use std::time::{Duration, SystemTime};

use anyhow::{Result, anyhow, bail};
use lapin::options::{
    ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
    QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};

/// `bench-<pid>-<hex>`: unique per run, and printed so a killed run can be cleaned up by it.
pub fn run_tag() -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("bench-{}-{:06x}", std::process::id(), nanos & 0xff_ffff)
}

/// Names created by this run, deleted at the end whatever happened.
#[derive(Default)]
pub struct Created {
    pub queues: Vec<String>,
    pub exchanges: Vec<String>,
}

/// The admin connection and what the run has created through it (or had the bridge create).
pub struct Broker {
    conn: Connection,
    pub admin: Channel,
    pub created: Created,
}

impl Broker {
    pub async fn connect(url: &str) -> Result<Self> {
        let conn = Connection::connect(url, ConnectionProperties::default()).await?;
        let admin = conn.create_channel().await?;
        Ok(Self {
            conn,
            admin,
            created: Created::default(),
        })
    }

    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Delete whatever was created, also after an error (on a fresh connection if the broker
    /// dropped ours, e.g. because it was restarted mid-run); a failure is reported, not raised,
    /// so it never hides the run's own result.
    pub async fn clean_up_and_close(self, url: &str) {
        if let Err(e) = cleanup(url, &self.admin, &self.created).await {
            eprintln!(
                "cleanup failed ({e}); left behind: {:?} {:?}",
                self.created.queues, self.created.exchanges
            );
        }
        let _ = self.conn.close(200, "bench done".into()).await;
    }
}

async fn cleanup(url: &str, ch: &Channel, created: &Created) -> Result<()> {
    let fresh;
    let ch = if ch.status().connected() {
        ch
    } else {
        let mut conn = None;
        for _ in 0..20 {
            match Connection::connect(url, ConnectionProperties::default()).await {
                Ok(c) => {
                    conn = Some(c);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
        let conn = conn.ok_or_else(|| anyhow!("broker unreachable"))?;
        fresh = conn.create_channel().await?;
        &fresh
    };
    for q in &created.queues {
        ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await?;
    }
    for e in &created.exchanges {
        ch.exchange_delete(e.as_str().into(), ExchangeDeleteOptions::default())
            .await?;
    }
    Ok(())
}

/// Delete what an earlier, interrupted run with tag `tag` left behind (`--cleanup-only`). The
/// names follow `setup`: both exchanges are declared with the bridge's topology (an alternate
/// exchange and a queue, both `<exchange>.unrouted`), plus the bench's queue on each.
pub async fn cleanup_leftovers(url: &str, tags: &[String]) -> Result<()> {
    let mut created = Created::default();
    for t in tags {
        for q in ["raw-q", "raw.unrouted", "bridge-q", "bridge.unrouted"] {
            created.queues.push(format!("{t}-{q}"));
        }
        for e in ["raw", "raw.unrouted", "bridge", "bridge.unrouted"] {
            created.exchanges.push(format!("{t}-{e}"));
        }
    }
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    // Deleting what does not exist is fine: queue.delete and exchange.delete are idempotent.
    let result = cleanup(url, &ch, &created).await;
    let _ = conn.close(200, "cleanup done".into()).await;
    result
}

/// A durable queue bound to everything on `exchange`, so that every message a phase publishes
/// is routed and can be counted.
pub async fn declare_queue(ch: &Channel, queue: &str, exchange: &str) -> Result<()> {
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    ch.queue_bind(
        queue.into(),
        exchange.into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    Ok(())
}

/// Compare the queue's depth with the events acknowledged in the phase, then purge it, so a
/// figure is only reported for a phase that lost and duplicated nothing.
pub async fn check_queue(ch: &Channel, queue: &str, acked: u64, what: &str) -> Result<String> {
    if !ch.status().connected() {
        bail!(
            "lost the broker connection during {what} (was RabbitMQ restarted mid-run?); the \
             figures of this run are void, run it again"
        );
    }
    // Confirms are in when the phase ends; give the queue process a moment to report them.
    let mut count = 0;
    for _ in 0..20 {
        let q = ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        count = u64::from(q.message_count());
        if count == acked {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ch.queue_purge(queue.into(), QueuePurgeOptions::default())
        .await?;
    Ok(if count == acked {
        format!("ok: {what}: {count} messages = {acked} acknowledged events")
    } else {
        format!("MISMATCH: {what}: {count} messages in the queue, {acked} acknowledged events")
    })
}
