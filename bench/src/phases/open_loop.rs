//! Open loop at `--load-fraction` of the bridge's full-load rate, raw and bridge alternating:
//! requests go out on a fixed schedule and latency runs from the scheduled send time, so a
//! stall is charged to every request it delayed (no coordinated omission). Both sides get the
//! same rate, so their p99s compare like for like.

use anyhow::Result;

use super::{Bench, Queue};
use crate::load::{self, PhaseResult};
use crate::report::{OpenLoop, Row, fmt_us};
use crate::sys::{CpuDelta, CpuSnapshot};

/// `bridge_rate`: the bridge's full-load requests/s.
pub async fn run(b: &mut Bench<'_>, bridge_rate: f64) -> Result<()> {
    let rate = (bridge_rate * b.args.load_fraction).max(1.0);
    let (conc, warmup, round) = (b.conc(), b.args.warmup(), b.args.round_duration());
    let (mut raw_parts, mut br_parts) = (Vec::new(), Vec::new());
    let (mut raw_cpu, mut br_cpu) = (CpuDelta::default(), CpuDelta::default());
    let mut rss = 0;
    for i in 0..b.args.rounds() {
        let cpu = CpuSnapshot::take(&b.watch);
        let r = load::open_loop(rate, conc, warmup, round, b.raw_op()).await;
        raw_cpu.add(cpu.since(&b.watch));
        let what = format!("raw open loop round {}", i + 1);
        b.check(Queue::Raw, r.acked_events, &what).await?;

        let sampler = b.watch.start_rss_sampler();
        let cpu = CpuSnapshot::take(&b.watch);
        let br = load::open_loop(rate, conc, warmup, round, b.setup.http.wegocod_op()).await;
        br_cpu.add(cpu.since(&b.watch));
        rss = rss.max(sampler.stop().await);
        let what = format!("bridge open loop round {}", i + 1);
        b.check(Queue::Bridge, br.acked_events, &what).await?;
        println!(
            "open-loop round {} at {rate:.0}/s: p99 raw {}, bridge {}",
            i + 1,
            fmt_us(r.p(0.99)),
            fmt_us(br.p(0.99))
        );
        raw_parts.push(r);
        br_parts.push(br);
    }
    let raw = PhaseResult::combine(raw_parts);
    let bridge = PhaseResult::combine(br_parts);
    b.report.rows.push(Row::new(
        &format!("raw, open loop {rate:.0}/s"),
        &raw,
        raw_cpu,
        None,
    ));
    b.report.rows.push(Row::new(
        &format!("bridge WeGoCOD, open loop {rate:.0}/s"),
        &bridge,
        br_cpu,
        Some(rss),
    ));
    b.report.open_loop = Some(OpenLoop { rate, raw, bridge });
    Ok(())
}
