//! The coupled ceiling (skipped with `--skip-coupled`): raw lapin on the chosen shape's channels,
//! but each of the 64 publishers (one task each, as each webhook is a request of its own) waits
//! for one trivial HTTP exchange first (`GET /healthz` on the bridge's admin port, same client),
//! alternating with plain raw in its chosen shape. Its
//! ratio is the ceiling of *any* publisher whose publishes are paced by HTTP round trips, with
//! none of the bridge's request work, and the verdicts put the bridge's ratio against it.
//!
//! The admin port keeps at most `ADMIN_MAX_CONNECTIONS` (32) connections open and closes any
//! more at once, so the round trips share that many: 64 connections would have half of them
//! refused and retried, understating the ceiling. A round trip takes tens of microseconds
//! against milliseconds for a confirm, so 32 never make a publisher wait for a free one.

use std::sync::Arc;

use anyhow::Result;
use tokio::sync::Semaphore;
use webhook_bridge::http::ADMIN_MAX_CONNECTIONS;

use super::Bench;
use crate::load::Op;
use crate::report::{self, Row};
use crate::sys::CpuDelta;

pub async fn run(b: &mut Bench<'_>) -> Result<()> {
    let hop = b.setup.http.healthz_op(b.setup.bridge.admin_port);
    let publish = b.raw_op();
    let admin = Arc::new(Semaphore::new(ADMIN_MAX_CONNECTIONS));
    let coupled: Op = Arc::new(move |w: usize, q: u64| {
        let (hop, publish, admin) = (Arc::clone(&hop), Arc::clone(&publish), Arc::clone(&admin));
        Box::pin(async move {
            {
                let _connection = admin.acquire().await.map_err(|e| e.to_string())?;
                hop(w, q).await?;
            }
            publish(w, q).await
        })
    });
    let (c, mut ratios) = b
        .against_raw(coupled, "raw behind one HTTP round trip")
        .await?;
    b.report.coupled_ratio = Some(report::median(&mut ratios));
    let conc = b.conc();
    b.report.rows.push(Row::new(
        &format!(
            "raw lapin ({}), each publish behind one GET /healthz, c={conc}",
            b.raw_shape.name()
        ),
        &c,
        CpuDelta::default(),
        None,
    ));
    Ok(())
}
