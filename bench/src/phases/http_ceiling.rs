//! `--http-ceiling`: the HTTP path alone (`GET /healthz` on the admin port), same client and
//! concurrency, no auth, no parsing, no broker: what is left of the machine for everything else
//! a webhook costs. Printed at once; it has no row and no verdict. The admin port keeps at most
//! `ADMIN_MAX_CONNECTIONS` connections, so the concurrency is capped at that.

use webhook_bridge::http::ADMIN_MAX_CONNECTIONS;

use super::Bench;
use crate::load;
use crate::report::fmt_us;
use crate::sys::CpuSnapshot;

pub async fn run(b: &Bench<'_>) {
    let conc = b.conc().min(ADMIN_MAX_CONNECTIONS);
    let (warmup, round) = (b.args.warmup(), b.args.round_duration());
    let cpu = CpuSnapshot::take(&b.watch);
    let op = b.setup.http.healthz_op(b.setup.bridge.admin_port);
    let h = load::closed_loop(conc, warmup, round, op).await;
    let cpu = cpu.since(&b.watch);
    println!(
        "HTTP ceiling (GET /healthz on the admin port, c={conc}): {:.0} requests/s, p50 {}, \
         p99 {}; CPU µs/request bridge {:.0}, load gen {:.0}",
        h.ops_per_sec(),
        fmt_us(h.p(0.5)),
        fmt_us(h.p(0.99)),
        cpu.bridge_us.unwrap_or(0) as f64 / h.acked_ops.max(1) as f64,
        cpu.self_us as f64 / h.acked_ops.max(1) as f64
    );
}
