//! Full load, closed loop: raw lapin and the bridge's WeGoCOD webhooks alternate, `rounds` times
//! each. The verdict is the median of the per-round ratios, so a neighbour's CPU burst on the
//! shared machine skews one round, not the verdict. Each bridge round is bracketed by scrapes
//! of the bridge's `/metrics`, for the time split.

use anyhow::Result;

use super::{Bench, Queue};
use crate::load::{self, PhaseResult};
use crate::report::{self, Row};
use crate::split::{Snapshot, Split};
use crate::sys::{CpuDelta, CpuSnapshot};

/// The rounds so far, per side.
#[derive(Default)]
struct Rounds {
    raw: Vec<PhaseResult>,
    bridge: Vec<PhaseResult>,
    raw_cpu: CpuDelta,
    bridge_cpu: CpuDelta,
    bridge_rss_kib: u64,
    splits: Vec<Split>,
}

/// Returns the bridge's full-load request rate, which the open loop is paced from.
pub async fn run(b: &mut Bench<'_>) -> Result<f64> {
    let mut rounds = Rounds::default();
    for i in 0..b.args.rounds() {
        let r = raw_round(b, i, &mut rounds).await?;
        let br = bridge_round(b, i, &mut rounds).await?;
        println!(
            "round {}: raw {:.0}/s, bridge {:.0}/s, ratio {:.2}",
            i + 1,
            r.events_per_sec(),
            br.events_per_sec(),
            br.events_per_sec() / r.events_per_sec().max(1.0)
        );
        rounds.raw.push(r);
        rounds.bridge.push(br);
    }
    let mut ratios: Vec<f64> = rounds
        .raw
        .iter()
        .zip(&rounds.bridge)
        .map(|(r, b)| b.events_per_sec() / r.events_per_sec().max(1.0))
        .collect();
    b.report.median_ratio = report::median(&mut ratios);
    b.report.ratios = ratios;
    let raw_full = PhaseResult::combine(rounds.raw);
    let br_full = PhaseResult::combine(rounds.bridge);
    let split = Split::combine(&rounds.splits);
    report::print_split(&split, &br_full, &raw_full);
    let conc = b.conc();
    b.report.raw_events_per_sec = raw_full.events_per_sec();
    b.report.raw_shape = Some(b.raw_shape);
    b.report.allocations_per_request = Some(split.allocations);
    b.report.raw_client_us_per_event =
        Some(rounds.raw_cpu.self_us as f64 / raw_full.acked_events.max(1) as f64);
    let per_request = |n: Option<u64>| n.map(|n| n as f64 / br_full.acked_ops.max(1) as f64);
    b.report.bridge_us_per_event = per_request(rounds.bridge_cpu.bridge_us);
    b.report.bridge_switches_per_request = per_request(rounds.bridge_cpu.bridge_switches);
    b.report.rows.push(Row::new(
        &format!(
            "raw lapin publish+confirm ({}), c={conc}",
            b.raw_shape.name()
        ),
        &raw_full,
        rounds.raw_cpu,
        None,
    ));
    b.report.rows.push(Row::new(
        &format!("bridge WeGoCOD webhooks, c={conc}"),
        &br_full,
        rounds.bridge_cpu,
        Some(rounds.bridge_rss_kib),
    ));
    Ok(br_full.ops_per_sec())
}

async fn raw_round(b: &mut Bench<'_>, i: usize, rounds: &mut Rounds) -> Result<PhaseResult> {
    let (conc, warmup, round) = (b.conc(), b.args.warmup(), b.args.round_duration());
    let cpu = CpuSnapshot::take(&b.watch);
    let r = b.raw_full(warmup, round).await;
    rounds.raw_cpu.add(cpu.since(&b.watch));
    let what = format!("raw c={conc} round {}", i + 1);
    b.check(Queue::Raw, r.acked_events, &what).await?;
    Ok(r)
}

async fn bridge_round(b: &mut Bench<'_>, i: usize, rounds: &mut Rounds) -> Result<PhaseResult> {
    let (conc, warmup, round) = (b.conc(), b.args.warmup(), b.args.round_duration());
    let (admin_port, endpoint) = (b.setup.bridge.admin_port, b.setup.http.wegocod_endpoint());
    let sampler = b.watch.start_rss_sampler();
    let before = Snapshot::scrape(admin_port, endpoint).await;
    let cpu = CpuSnapshot::take(&b.watch);
    let br = load::closed_loop(conc, warmup, round, b.setup.http.wegocod_op()).await;
    rounds.bridge_cpu.add(cpu.since(&b.watch));
    let after = Snapshot::scrape(admin_port, endpoint).await;
    if let (Some(before), Some(after)) = (before, after) {
        rounds.splits.push(after.since(&before));
    }
    rounds.bridge_rss_kib = rounds.bridge_rss_kib.max(sampler.stop().await);
    let what = format!("bridge wegocod c={conc} round {}", i + 1);
    b.check(Queue::Bridge, br.acked_events, &what).await?;
    Ok(br)
}
