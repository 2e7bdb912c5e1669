//! `--native-phase`: raw lapin against a publisher driven by the runtime's own workers
//! ([`crate::native`]), same message, same exchange and queue, alternating round by round: the
//! rate and the client CPU per confirmed publish of each. The native client runs in both shapes
//! raw knows: `conc` tasks each awaiting its own confirm (how the bridge's requests publish) and
//! one task keeping `conc` publishes in flight.

use anyhow::Result;

use super::{Bench, Queue};
use crate::load::{self, PhaseResult};
use crate::native::NativePublisher;
use crate::report;
use crate::sys::CpuSnapshot;

pub async fn run(b: &mut Bench<'_>) -> Result<()> {
    let native = NativePublisher::connect(
        &b.args.amqp_url,
        &b.setup.raw_amqp.exchange,
        &b.setup.message,
    )
    .await?;
    let (conc, warmup, round) = (b.conc(), b.args.warmup(), b.args.round_duration());
    let raw_name = format!("raw lapin {}", b.raw_shape.name());
    let names = [raw_name.as_str(), "native tasks/1ch", "native window/1ch"];
    let mut rates = vec![Vec::new(); names.len()];
    let mut cpu = vec![(0u64, 0u64); names.len()];
    for pass in 0..b.args.rounds() {
        for (i, name) in names.iter().enumerate() {
            let snap = CpuSnapshot::take(&b.watch);
            let r: PhaseResult = match i {
                0 => b.raw_full(warmup, round).await,
                1 => load::closed_loop(conc, warmup, round, native.op()).await,
                _ => load::pipelined(conc, warmup, round, native.op()).await,
            };
            let d = snap.since(&b.watch);
            b.check(
                Queue::Raw,
                r.acked_events,
                &format!("{name} pass {}", pass + 1),
            )
            .await?;
            let per = d.self_us as f64 / r.acked_events.max(1) as f64;
            println!(
                "{name} pass {}: {:.0}/s, p99 {}, client CPU {per:.1} µs/event",
                pass + 1,
                r.events_per_sec(),
                report::fmt_us(r.p(0.99)),
            );
            rates[i].push(r.events_per_sec());
            cpu[i].0 += d.self_us;
            cpu[i].1 += r.acked_events;
        }
    }
    println!("\n| publisher | events/s per pass | median | client CPU µs/event |");
    println!("|---|---|---:|---:|");
    for ((name, rates), (us, n)) in names.iter().zip(rates.iter_mut()).zip(&cpu) {
        let list: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
        println!(
            "| {name} | {} | {:.0} | {:.1} |",
            list.join(", "),
            report::median(rates),
            *us as f64 / (*n).max(1) as f64
        );
    }
    Ok(())
}
