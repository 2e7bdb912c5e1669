//! The phases of a run, one module each, run by `main` in a fixed order: broker warm-up, raw vs
//! bridge at full load, the optional diagnostics (in-process publisher, coupled, HTTP ceiling),
//! then isendu batches and the open loop. Each phase drives the load, checks the queues and
//! leaves its rows and verdict inputs in the shared [`Report`].

pub mod coupled;
pub mod full_load;
pub mod http_ceiling;
pub mod isendu;
pub mod native;
pub mod open_loop;
pub mod publisher;
pub mod raw_shapes;
pub mod warmup;

use std::sync::Arc;

use anyhow::Result;
use lapin::Channel;

use crate::broker;
use crate::cli::Args;
use crate::load::{self, Op, PhaseResult};
use crate::raw::RawShape;
use crate::report::Report;
use crate::setup::Setup;
use crate::sys::ProcWatch;

/// Which of the two queues a phase's messages went to.
#[derive(Clone, Copy)]
pub enum Queue {
    Raw,
    Bridge,
}

/// What every phase shares.
pub struct Bench<'a> {
    pub args: &'a Args,
    pub setup: &'a Setup,
    admin: &'a Channel,
    pub watch: ProcWatch,
    pub report: Report,
    /// How "raw" publishes: `--raw-shape`, else the fastest the raw-shapes phase found.
    pub raw_shape: RawShape,
}

impl<'a> Bench<'a> {
    pub fn new(
        args: &'a Args,
        setup: &'a Setup,
        admin: &'a Channel,
        broker_pid: Option<u32>,
    ) -> Self {
        Self {
            args,
            setup,
            admin,
            watch: ProcWatch::new(setup.bridge.pid(), broker_pid),
            report: Report::default(),
            raw_shape: args.raw_shape.unwrap_or(RawShape {
                pipelined: false,
                channels: 4,
            }),
        }
    }

    /// One raw publish per call, on the chosen shape's channels.
    pub fn raw_op(&self) -> Op {
        self.setup.raw.op(self.raw_shape.channels)
    }

    /// `op` at full load, driven the way `shape` says: `conc` tasks or one pipelining task.
    pub async fn drive(
        &self,
        shape: RawShape,
        op: Op,
        warmup: std::time::Duration,
        duration: std::time::Duration,
    ) -> PhaseResult {
        if shape.pipelined {
            load::pipelined(self.conc(), warmup, duration, op).await
        } else {
            load::closed_loop(self.conc(), warmup, duration, op).await
        }
    }

    /// The raw baseline at full load, in its chosen shape.
    pub async fn raw_full(
        &self,
        warmup: std::time::Duration,
        duration: std::time::Duration,
    ) -> PhaseResult {
        self.drive(self.raw_shape, self.raw_op(), warmup, duration)
            .await
    }

    pub fn conc(&self) -> usize {
        self.args.concurrency
    }

    /// The queue must hold exactly the events acknowledged since the last check (then it is
    /// purged); the outcome goes into the report either way, and a mismatch fails the run at
    /// the end, after the figures are printed.
    pub async fn check(&mut self, queue: Queue, acked: u64, what: &str) -> Result<()> {
        let name = match queue {
            Queue::Raw => &self.setup.raw_queue,
            Queue::Bridge => &self.setup.bridge_queue,
        };
        let line = broker::check_queue(self.admin, name, acked, what).await?;
        self.report.checks.push(line);
        Ok(())
    }

    /// `rounds` × (raw, then `op`), both into the raw queue and each checked against it; prints
    /// the per-round ratios and returns `op`'s rounds combined with those ratios. Alternating
    /// round by round keeps a drift of the shared machine from favouring either side. Raw runs
    /// in its chosen shape; `op` is driven by `conc` tasks, as webhooks are (one request each).
    async fn against_raw(&mut self, op: Op, name: &str) -> Result<(PhaseResult, Vec<f64>)> {
        let (conc, warmup, round) = (self.conc(), self.args.warmup(), self.args.round_duration());
        let mut parts = Vec::new();
        let mut ratios = Vec::new();
        for i in 0..self.args.rounds() {
            let r = self.raw_full(warmup, round).await;
            let what = format!("raw (vs {name}) round {}", i + 1);
            self.check(Queue::Raw, r.acked_events, &what).await?;
            let p = load::closed_loop(conc, warmup, round, Arc::clone(&op)).await;
            let what = format!("{name} round {}", i + 1);
            self.check(Queue::Raw, p.acked_events, &what).await?;
            println!(
                "{name} round {}: raw {:.0}/s, {name} {:.0}/s, ratio {:.2}",
                i + 1,
                r.events_per_sec(),
                p.events_per_sec(),
                p.events_per_sec() / r.events_per_sec().max(1.0)
            );
            ratios.push(p.events_per_sec() / r.events_per_sec().max(1.0));
            parts.push(p);
        }
        Ok((PhaseResult::combine(parts), ratios))
    }
}
