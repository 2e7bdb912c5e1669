//! The raw baseline's shape, chosen by measurement: every [`RawShape::CANDIDATES`] (one task per
//! publisher awaiting its own confirm, or one task keeping all the publishes in flight; over 1,
//! 2 or 4 confirm channels) runs for one round, `rounds` passes in turn, and the fastest by its
//! median rate becomes "raw" for the rest of the run: every ratio is quoted against the
//! strongest publisher lapin gives here, not against one pattern of it. `--raw-shape` skips the
//! search.

use anyhow::Result;

use super::{Bench, Queue};
use crate::raw::RawShape;
use crate::report::{self, ShapeRow};
use crate::sys::CpuSnapshot;

pub async fn run(b: &mut Bench<'_>) -> Result<()> {
    let (warmup, round) = (b.args.warmup(), b.args.round_duration());
    let passes = b.args.rounds();
    let shapes: Vec<RawShape> = RawShape::CANDIDATES
        .into_iter()
        .filter(|s| s.channels <= b.setup.raw.channels())
        .collect();
    let mut rates = vec![Vec::new(); shapes.len()];
    let mut cpu = vec![(0u64, 0u64); shapes.len()];
    for pass in 0..passes {
        for (i, &shape) in shapes.iter().enumerate() {
            let snap = CpuSnapshot::take(&b.watch);
            let r = b
                .drive(shape, b.setup.raw.op(shape.channels), warmup, round)
                .await;
            let d = snap.since(&b.watch);
            let what = format!("raw shape {} pass {}", shape.name(), pass + 1);
            b.check(Queue::Raw, r.acked_events, &what).await?;
            println!(
                "raw shape {} pass {}: {:.0}/s, p99 {}, client CPU {:.1} µs/event",
                shape.name(),
                pass + 1,
                r.events_per_sec(),
                report::fmt_us(r.p(0.99)),
                d.self_us as f64 / r.acked_events.max(1) as f64
            );
            rates[i].push(r.events_per_sec());
            cpu[i].0 += d.self_us;
            cpu[i].1 += r.acked_events;
        }
    }
    let rows: Vec<ShapeRow> = shapes
        .iter()
        .zip(rates.iter_mut())
        .zip(&cpu)
        .map(|((shape, rates), &(us, events))| ShapeRow {
            shape: *shape,
            rates: rates.clone(),
            median: report::median(rates),
            client_us_per_event: us as f64 / events.max(1) as f64,
        })
        .collect();
    if let Some(best) = rows.iter().max_by(|a, b| a.median.total_cmp(&b.median)) {
        b.raw_shape = best.shape;
        println!(
            "raw = {} ({}), the fastest: median {:.0}/s",
            best.shape.name(),
            best.shape.describe(b.args.concurrency),
            best.median
        );
    }
    b.report.raw_shapes = rows;
    Ok(())
}
