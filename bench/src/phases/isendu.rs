//! The bridge with isendu batches, closed loop: one request carries `--batch` events, so this
//! is the bridge's events/s when HTTP is amortised. Like the single events, it alternates round
//! by round with raw lapin's single events in raw's chosen shape, and the verdict is the median
//! of the per-round ratios: a drift of the shared machine between the full-load phase and this
//! one cannot decide it.

use anyhow::Result;

use super::{Bench, Queue};
use crate::load::{self, PhaseResult};
use crate::report::{self, Row};
use crate::sys::{CpuDelta, CpuSnapshot};

pub async fn run(b: &mut Bench<'_>) -> Result<()> {
    let (conc, warmup, round) = (b.conc(), b.args.warmup(), b.args.round_duration());
    let mut parts = Vec::new();
    let mut ratios = Vec::new();
    let mut cpu = CpuDelta::default();
    let mut rss = 0;
    for i in 0..b.args.rounds() {
        let r = b.raw_full(warmup, round).await;
        let what = format!("raw (vs isendu) round {}", i + 1);
        b.check(Queue::Raw, r.acked_events, &what).await?;
        let sampler = b.watch.start_rss_sampler();
        let snap = CpuSnapshot::take(&b.watch);
        let br = load::closed_loop(conc, warmup, round, b.setup.http.isendu_op()).await;
        cpu.add(snap.since(&b.watch));
        rss = rss.max(sampler.stop().await);
        let what = format!("bridge isendu c={conc} round {}", i + 1);
        b.check(Queue::Bridge, br.acked_events, &what).await?;
        let ratio = br.events_per_sec() / r.events_per_sec().max(1.0);
        println!(
            "isendu round {}: raw {:.0}/s, bridge isendu {:.0} events/s, ratio {ratio:.2}",
            i + 1,
            r.events_per_sec(),
            br.events_per_sec(),
        );
        ratios.push(ratio);
        parts.push(br);
    }
    let br = PhaseResult::combine(parts);
    b.report.rows.push(Row::new(
        &format!("bridge isendu batches of {}, c={conc}", b.args.batch),
        &br,
        cpu,
        Some(rss),
    ));
    b.report.isendu_ratio = Some(report::median(&mut ratios));
    b.report.isendu_ratios = ratios;
    b.report.isendu = Some(br);
    Ok(())
}
