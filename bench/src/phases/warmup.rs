//! Broker warm-up, not measured. A broker that has idled confirms its first ~10 s of load
//! markedly slower (raw lapin measured 10.4k/s in a first round and 14.5k/s two rounds later, on
//! an otherwise idle machine), which would flatter whatever is measured first. Raw and bridge
//! both, into their queues; the queue checks still count every message.

use std::time::Duration;

use anyhow::Result;

use super::{Bench, Queue};
use crate::load;

pub async fn run(b: &mut Bench<'_>) -> Result<()> {
    let (conc, w) = (b.conc(), b.args.round_duration());
    let r = b.raw_full(Duration::ZERO, w).await;
    b.check(Queue::Raw, r.acked_events, "broker warm-up, raw")
        .await?;
    let br = load::closed_loop(conc, Duration::ZERO, w, b.setup.http.wegocod_op()).await;
    b.check(Queue::Bridge, br.acked_events, "broker warm-up, bridge")
        .await?;
    println!(
        "broker warm-up ({:.0}s each, not measured): raw {:.0}/s, bridge {:.0}/s",
        w.as_secs_f64(),
        r.events_per_sec(),
        br.events_per_sec()
    );
    Ok(())
}
