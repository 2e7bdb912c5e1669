//! The bridge with isendu batches, closed loop: one request carries `--batch` events, so this
//! is the bridge's events/s when HTTP is amortised, compared with raw lapin's single events.

use anyhow::Result;

use super::{Bench, Queue};
use crate::load;
use crate::report::Row;
use crate::sys::CpuSnapshot;

pub async fn run(b: &mut Bench<'_>) -> Result<()> {
    let (conc, warmup, duration) = (b.conc(), b.args.warmup(), b.args.duration());
    let sampler = b.watch.start_rss_sampler();
    let cpu = CpuSnapshot::take(&b.watch);
    let br = load::closed_loop(conc, warmup, duration, b.setup.http.isendu_op()).await;
    let cpu = cpu.since(&b.watch);
    let rss = sampler.stop().await;
    let what = format!("bridge isendu c={conc}");
    b.check(Queue::Bridge, br.acked_events, &what).await?;
    b.report.rows.push(Row::new(
        &format!("bridge isendu batches of {}, c={conc}", b.args.batch),
        &br,
        cpu,
        Some(rss),
    ));
    b.report.isendu = Some(br);
    Ok(())
}
