//! The bridge against a three-node RabbitMQ cluster (`scripts/cluster up`): node loss, rolling
//! restart, a cut or frozen link to one node, loss of the majority, two replicas — each under
//! HTTP load, counted end to end: every request is answered before `ack_deadline`, and every
//! event answered 2xx is in the consumer's quorum queue (duplicates allowed). Also the cost of
//! quorum confirms against classic ones, and that the permissions the rabbitmq-cluster deploy
//! variant gives the bridge's user suffice.
//!
//! They stop and start cluster nodes, so they are `#[ignore]`d and run one at a time, in the last
//! step of `scripts/test`: `cargo test --test suite -- --ignored --test-threads=1 cluster::`.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::cluster::{self, assert_all_answered, assert_arrived, secs};
use common::load::{self, Report, metric, wait_metric};
use common::proxy::{Mode, Proxy};
use common::*;

async fn wait_progress(progress: &AtomicUsize, at_least: usize) {
    let end = Instant::now() + Duration::from_secs(120);
    while progress.load(Ordering::Relaxed) < at_least && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// [`load::run`] with the bridge's [`cluster::timeline`] over the same time.
async fn watched(
    bridge: &Bridge,
    tag: &str,
    n: usize,
    concurrency: usize,
    interval: Duration,
    progress: &Arc<AtomicUsize>,
) -> (Report, String) {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let load = async {
        let report = load::run(bridge, tag, n, concurrency, interval, Arc::clone(progress)).await;
        stop.send_replace(true);
        report
    };
    tokio::join!(load, cluster::timeline(bridge, stopped))
}

/// Steady load in rounds of `round` requests, one every `interval`, at most `concurrency` in
/// flight, until one full round after `done` turned true (at most 40 rounds), with the bridge's
/// [`cluster::timeline`].
async fn steady_until(
    bridge: &Bridge,
    tag: &str,
    (round, concurrency): (usize, usize),
    interval: Duration,
    progress: &Arc<AtomicUsize>,
    done: &AtomicBool,
) -> (Report, String) {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let load = async {
        let mut report = Report::default();
        for i in 0..40 {
            let last = done.load(Ordering::Relaxed);
            let tag = format!("{tag}-{i}");
            let r = load::run(
                bridge,
                &tag,
                round,
                concurrency,
                interval,
                Arc::clone(progress),
            )
            .await;
            report.answers.extend(r.answers);
            if last {
                break;
            }
        }
        stop.send_replace(true);
        report
    };
    tokio::join!(load, cluster::timeline(bridge, stopped))
}

fn accepted(report: &Report) -> usize {
    report.count(|a| a.body.contains("\"accepted\""))
}

async fn wait_spool_empty(bridge: &Bridge, within: Duration) {
    wait_metric(bridge, "webhook_bridge_spool_events", 0.0, within).await;
}

/// Poll until the bridge has reconnected (`amqp_reconnects_total` above `before`, connected);
/// how long that took from `since`.
async fn wait_reconnected(
    bridge: &Bridge,
    before: f64,
    since: Instant,
    within: Duration,
) -> Duration {
    loop {
        let m = bridge.metrics().await;
        if metric(&m, "webhook_bridge_amqp_reconnects_total").unwrap_or(0.0) > before
            && metric(&m, "webhook_bridge_amqp_connected") == Some(1.0)
        {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < within,
            "the bridge did not reconnect within {within:?}; log:\n{}",
            bridge.logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The node the bridge is connected to is SIGKILLed in the middle of 3,000 webhooks: the bridge
/// fails over to the next URL and keeps publishing there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the three-node cluster of scripts/cluster; run serially"]
async fn connected_node_killed_mid_load_fails_over_to_the_next_url() {
    let _restore = cluster::ensure_up().await;
    let bridge = Bridge::start_with(cluster::bridge_options()).await;
    assert_eq!(
        cluster::connected_port(&bridge),
        Some(cluster::port(1)),
        "the first URL is preferred"
    );
    let queue = cluster::quorum_queue(&bridge.exchange, "wegocod.#").await;
    let n = 3000;
    let progress = Arc::new(AtomicUsize::new(0));
    let killer = {
        let progress = Arc::clone(&progress);
        let bridge = &bridge;
        async move {
            wait_progress(&progress, n / 4).await;
            let at = progress.load(Ordering::Relaxed);
            let killed = Instant::now();
            let (_, failover) = tokio::join!(
                cluster::kill(1),
                wait_reconnected(bridge, 0.0, killed, Duration::from_secs(10))
            );
            (at, failover)
        }
    };
    let ((report, timeline), (killed_at, failover)) = tokio::join!(
        watched(&bridge, "kill", n, 32, Duration::from_millis(3), &progress),
        killer
    );
    eprintln!("{timeline}");
    let port_after = cluster::connected_port(&bridge);
    eprintln!(
        "node kill: {} accepted={} | node 1 killed after {killed_at} answers, reconnected {} \
         later, to port {port_after:?}",
        report.summary(),
        accepted(&report),
        secs(failover)
    );
    assert_all_answered("node kill", &report, n);
    assert!(killed_at < n * 3 / 4, "the kill must fall inside the load");
    assert_eq!(
        port_after,
        Some(cluster::port(2)),
        "the bridge fails over to the next URL"
    );
    assert!(
        accepted(&report) >= n / 2,
        "after the failover the surviving nodes confirm (not the spool): {}",
        report.summary()
    );
    assert_arrived("node kill", &queue, &report.acknowledged()).await;
    wait_spool_empty(&bridge, Duration::from_secs(30)).await;
    cluster::delete(&bridge.exchange, &[&queue]).await;
}

/// With `unrouted_queue_type = "classic"` the unrouted queue lives on one node. Losing that node
/// must not stop publishing through the others: routable events are still confirmed, an
/// unroutable one is returned by the broker and waits in the spool until the node is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the three-node cluster of scripts/cluster; run serially"]
async fn classic_unrouted_queue_whose_node_is_down_does_not_stop_publishing() {
    let _restore = cluster::ensure_up().await;
    let options = cluster::bridge_options();
    let bridge = Bridge::start_with(BridgeOptions {
        amqp_extra: format!("{}\nunrouted_queue_type = \"classic\"", options.amqp_extra),
        ..options
    })
    .await;
    // Declared through node 1: the classic unrouted queue lives there.
    assert_eq!(cluster::connected_port(&bridge), Some(cluster::port(1)));
    let unrouted = format!("{}.unrouted", bridge.exchange);
    let queue = cluster::quorum_queue(&bridge.exchange, "wegocod.#").await;
    let before = load::run(&bridge, "home-a", 20, 4, Duration::ZERO, Arc::default()).await;
    assert_eq!(accepted(&before), 20, "{}", before.summary());

    let killed = Instant::now();
    let (_, reconnect) = tokio::join!(
        cluster::kill(1),
        wait_reconnected(&bridge, 0.0, killed, Duration::from_secs(15))
    );
    let after = load::run(&bridge, "home-b", 50, 4, Duration::ZERO, Arc::default()).await;
    let unroutable = bridge
        .post_signed(
            "modexpress",
            "/webhooks/modexpress",
            MODEXPRESS_SECRET,
            webhook_bridge::providers::modexpress::IN_PROGRESS,
        )
        .await;
    let status = unroutable.status();
    let body = unroutable.text().await.unwrap();
    eprintln!(
        "classic unrouted queue, its node down: reconnected after {} to port {:?}; {} \
         accepted={}; unroutable event answered {status} {body}",
        secs(reconnect),
        cluster::connected_port(&bridge),
        after.summary(),
        accepted(&after)
    );
    assert_eq!(
        accepted(&after),
        50,
        "the surviving nodes confirm: {}",
        after.summary()
    );
    assert_eq!(status, 200);
    assert_eq!(
        body, r#"{"spooled":1}"#,
        "with its queue's node down an unroutable event is returned, and spooled"
    );
    assert!(
        bridge
            .logs()
            .contains("unrouted queue not declared as configured"),
        "the failed declaration is logged"
    );

    cluster::start(1).await;
    let mut parked = cluster::consumer(&unrouted).await;
    let got = parked
        .next(Duration::from_secs(30))
        .await
        .expect("the spooled unroutable event reaches the unrouted queue once its node is back");
    assert_eq!(got.routing_key, "modexpress.order.status_changed");
    drop(parked);
    let mut acked = before.acknowledged();
    acked.extend(after.acknowledged());
    assert_arrived("classic unrouted queue", &queue, &acked).await;
    wait_spool_empty(&bridge, Duration::from_secs(30)).await;
    cluster::delete(&bridge.exchange, &[&queue]).await;
}

/// Rolling restart of the three nodes, one at a time (each waits until stopping it leaves every
/// quorum queue a majority), under steady load.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the three-node cluster of scripts/cluster; run serially"]
async fn rolling_restart_under_steady_load_loses_nothing() {
    let _restore = cluster::ensure_up().await;
    let bridge = Bridge::start_with(cluster::bridge_options()).await;
    let queue = cluster::quorum_queue(&bridge.exchange, "wegocod.#").await;
    // 50 requests/s, in rounds of 250 (5 s), until one round after the last restart.
    let progress = Arc::new(AtomicUsize::new(0));
    let restarted = AtomicBool::new(false);
    let restarter = async {
        wait_progress(&progress, 200).await;
        let started_at = progress.load(Ordering::Relaxed);
        let mut took = Vec::new();
        for node in cluster::NODES {
            took.push(cluster::restart(node).await);
        }
        restarted.store(true, Ordering::Relaxed);
        (started_at, progress.load(Ordering::Relaxed), took)
    };
    let ((report, timeline), (started_at, done_at, took)) = tokio::join!(
        steady_until(
            &bridge,
            "rolling",
            (250, 32),
            Duration::from_millis(20),
            &progress,
            &restarted
        ),
        restarter
    );
    eprintln!("{timeline}");
    let n = report.answers.len();
    let m = bridge.metrics().await;
    eprintln!(
        "rolling restart: {} accepted={} | restarts began after {started_at} answers, ended \
         after {done_at}; node restarts took {} | reconnects={:?}",
        report.summary(),
        accepted(&report),
        took.iter().map(|d| secs(*d)).collect::<Vec<_>>().join(", "),
        metric(&m, "webhook_bridge_amqp_reconnects_total")
    );
    assert_all_answered("rolling restart", &report, n);
    assert!(
        done_at + 200 <= n,
        "the load goes on after the rolling restart (ended after {done_at} of {n})"
    );
    assert!(
        metric(&m, "webhook_bridge_amqp_reconnects_total").unwrap_or(0.0) >= 1.0,
        "restarting its node moves the bridge: {m}"
    );
    assert_arrived("rolling restart", &queue, &report.acknowledged()).await;
    wait_spool_empty(&bridge, Duration::from_secs(30)).await;
    cluster::delete(&bridge.exchange, &[&queue]).await;
}

/// The link to the bridge's node is broken (TCP proxy) while the other nodes stay reachable:
/// time from the break to the bridge connected again elsewhere, bounded.
///
/// `n` requests, one every `interval`; the link breaks after a quarter of them.
async fn link_broken_to_one_node(
    tag: &str,
    freeze: bool,
    n: usize,
    interval: Duration,
    bound: Duration,
) {
    let _restore = cluster::ensure_up().await;
    let proxy = Proxy::start(&format!("127.0.0.1:{}", cluster::port(1)), Mode::Open).await;
    let mut urls = cluster::urls();
    urls[0] = proxy.amqp_url();
    let bridge = Bridge::start_with(BridgeOptions {
        amqp_urls: urls,
        ..cluster::bridge_options()
    })
    .await;
    assert_eq!(cluster::connected_port(&bridge), Some(proxy.port));
    let queue = cluster::quorum_queue(&bridge.exchange, "wegocod.#").await;
    let progress = Arc::new(AtomicUsize::new(0));
    let breaker = {
        let progress = Arc::clone(&progress);
        let (proxy, bridge) = (&proxy, &bridge);
        async move {
            wait_progress(&progress, n / 4).await;
            let broken = Instant::now();
            if freeze {
                proxy.freeze();
            } else {
                proxy.cut();
            }
            let at = progress.load(Ordering::Relaxed);
            let failover = wait_reconnected(bridge, 0.0, broken, Duration::from_secs(20)).await;
            (at, failover, progress.load(Ordering::Relaxed))
        }
    };
    let ((report, timeline), (broken_at, failover, moved_at)) =
        tokio::join!(watched(&bridge, tag, n, 32, interval, &progress), breaker);
    eprintln!("{timeline}");
    let port_after = cluster::connected_port(&bridge);
    eprintln!(
        "{tag}: {} accepted={} | link broken after {broken_at} answers; the bridge was connected \
         again {} later (after {moved_at} answers), to port {port_after:?}",
        report.summary(),
        accepted(&report),
        secs(failover)
    );
    assert_all_answered(tag, &report, n);
    assert!(moved_at < n, "the failover must fall inside the load");
    assert_eq!(port_after, Some(cluster::port(2)), "moved to the next URL");
    assert!(
        failover < bound,
        "{tag}: failover took {failover:?}, bound {bound:?}"
    );
    assert_arrived(tag, &queue, &report.acknowledged()).await;
    wait_spool_empty(&bridge, Duration::from_secs(30)).await;
    cluster::delete(&bridge.exchange, &[&queue]).await;
}

/// A cut link (connections reset, new ones refused) is seen at once; the frozen URL is refused
/// at once too, and the next URL answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the three-node cluster of scripts/cluster; run serially"]
async fn cut_link_to_the_bridges_node_fails_over_within_two_seconds() {
    // 3,000 requests over about 6 s.
    let interval = Duration::from_millis(2);
    link_broken_to_one_node("link cut", false, 3000, interval, Duration::from_secs(2)).await;
}

/// A frozen link (nothing forwarded, nothing closed) is seen when a publish has waited out its
/// budget (`ack_deadline` − 1 s) with no confirm for 2 s; then the frozen URL is tried first
/// and given up after `connect_timeout` (1 s here), and the next URL answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the three-node cluster of scripts/cluster; run serially"]
async fn frozen_link_to_the_bridges_node_fails_over_within_six_seconds() {
    // 4,000 requests over about 12 s: the failover takes longer than the cut's.
    let interval = Duration::from_millis(3);
    link_broken_to_one_node("link frozen", true, 4000, interval, Duration::from_secs(6)).await;
}

/// Two of three nodes killed: no publish can be confirmed (a quorum queue needs a majority), so
/// requests are spooled and answered in time, and drained once a majority is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the three-node cluster of scripts/cluster; run serially"]
async fn majority_lost_requests_are_spooled_in_time_and_drained_after() {
    let _restore = cluster::ensure_up().await;
    let bridge = Bridge::start_with(cluster::bridge_options()).await;
    let queue = cluster::quorum_queue(&bridge.exchange, "wegocod.#").await;
    // 100 requests/s, in rounds of 250: nodes 2 and 3 are killed after 5 s, node 2 is started
    // again 3 s later (a majority again once it has booted), then node 3; the load goes on for
    // one round after the spool has drained.
    let progress = Arc::new(AtomicUsize::new(0));
    let drained = AtomicBool::new(false);
    let outage = async {
        wait_progress(&progress, 500).await;
        tokio::join!(cluster::kill(2), cluster::kill(3));
        let lost_at = progress.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let during = bridge.metrics().await;
        let took = cluster::start(2).await;
        let back_at = progress.load(Ordering::Relaxed);
        let back = Instant::now();
        let (drain, _) = tokio::join!(
            async {
                wait_spool_empty(&bridge, Duration::from_secs(60)).await;
                drained.store(true, Ordering::Relaxed);
                (back.elapsed(), progress.load(Ordering::Relaxed))
            },
            cluster::start(3)
        );
        (lost_at, during, took, back_at, drain)
    };
    let ((report, timeline), (lost_at, during, took, back_at, (drain, drained_at))) = tokio::join!(
        steady_until(
            &bridge,
            "majority",
            (250, 64),
            Duration::from_millis(10),
            &progress,
            &drained
        ),
        outage
    );
    eprintln!("{timeline}");
    let n = report.answers.len();
    eprintln!(
        "majority lost: {} accepted={} | nodes 2 and 3 killed after {lost_at} answers \
         (spool_events 3 s later: {:?}); node 2 started, booted in {}, after {back_at} answers; \
         spool drained {} later, after {drained_at} answers",
        report.summary(),
        accepted(&report),
        metric(&during, "webhook_bridge_spool_events"),
        secs(took),
        secs(drain),
    );
    assert_all_answered("majority lost", &report, n);
    assert!(
        drained_at + 250 <= n,
        "the load goes on after the majority is back and the spool drained"
    );
    assert!(
        metric(&during, "webhook_bridge_spool_events").unwrap_or(0.0) > 0.0,
        "without a majority nothing is confirmed: requests are spooled\n{during}"
    );
    assert!(
        accepted(&report) > lost_at + 100,
        "confirmed again once the majority is back: {}",
        report.summary()
    );
    assert_arrived("majority lost", &queue, &report.acknowledged()).await;
    wait_spool_empty(&bridge, Duration::from_secs(30)).await;
    cluster::delete(&bridge.exchange, &[&queue]).await;
}

fn replica_options(exchange: &str, urls: Vec<String>) -> BridgeOptions {
    BridgeOptions {
        exchange: Some(exchange.to_string()),
        amqp_urls: urls,
        ..cluster::bridge_options()
    }
}

/// Two replicas publish to one exchange at the same time. Replica A loses its links (it reaches
/// the nodes through proxies) and spools, is SIGKILLed with a non-empty spool, and restarted
/// with its links back: it drains what it had acknowledged. Replica B keeps serving throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the three-node cluster of scripts/cluster; run serially"]
async fn two_replicas_one_killed_with_a_spool_the_other_keeps_serving() {
    let _restore = cluster::ensure_up().await;
    let exchange = unique("wbt-pair");
    let mut proxies = Vec::new();
    for node in cluster::NODES {
        proxies.push(Proxy::start(&format!("127.0.0.1:{}", cluster::port(node)), Mode::Open).await);
    }
    let a_urls: Vec<String> = proxies.iter().map(Proxy::amqp_url).collect();
    let mut a = Bridge::start_with(replica_options(&exchange, a_urls.clone())).await;
    let b = Bridge::start_with(replica_options(&exchange, cluster::urls())).await;
    let queue = cluster::quorum_queue(&exchange, "wegocod.#").await;

    let n_b = 4000;
    let b_progress = Arc::new(AtomicUsize::new(0));
    let replica_a = {
        let (a, proxies, b_progress) = (&mut a, &proxies, Arc::clone(&b_progress));
        let a_urls = a_urls.clone();
        let exchange = exchange.clone();
        async move {
            let first = load::run(
                a,
                "pair-a1",
                300,
                16,
                Duration::from_millis(2),
                Arc::default(),
            )
            .await;
            for p in proxies {
                p.cut();
            }
            let cut = load::run(
                a,
                "pair-a2",
                500,
                32,
                Duration::from_millis(2),
                Arc::default(),
            )
            .await;
            let spooled = metric(&a.metrics().await, "webhook_bridge_spool_events");
            let _ = a.child.kill();
            let _ = a.child.wait();
            let b_at_kill = b_progress.load(Ordering::Relaxed);
            for p in proxies {
                p.restore();
            }
            let restarted = Instant::now();
            a.restart(&replica_options(&exchange, a_urls)).await;
            a.wait_connected(Duration::from_secs(20)).await;
            wait_spool_empty(a, Duration::from_secs(30)).await;
            let drained = restarted.elapsed();
            let b_at_drained = b_progress.load(Ordering::Relaxed);
            let last = load::run(
                a,
                "pair-a3",
                300,
                16,
                Duration::from_millis(2),
                Arc::default(),
            )
            .await;
            (first, cut, last, spooled, drained, b_at_kill, b_at_drained)
        }
    };
    let (b_report, (a1, a2, a3, spooled_at_kill, drained, b_at_kill, b_at_drained)) = tokio::join!(
        load::run(
            &b,
            "pair-b",
            n_b,
            32,
            Duration::from_millis(4),
            Arc::clone(&b_progress)
        ),
        replica_a
    );
    eprintln!(
        "replica A: before {} | links cut {} | SIGKILLed with spool_events {spooled_at_kill:?}, \
         restarted and drained in {} | after restart {} accepted={}",
        a1.summary(),
        a2.summary(),
        secs(drained),
        a3.summary(),
        accepted(&a3)
    );
    eprintln!(
        "replica B: {} accepted={} | A killed after {b_at_kill} of B's answers, drained after \
         {b_at_drained}",
        b_report.summary(),
        accepted(&b_report)
    );
    assert_all_answered("replica A before", &a1, 300);
    assert_all_answered("replica A cut", &a2, 500);
    assert_all_answered("replica A after restart", &a3, 300);
    assert_all_answered("replica B", &b_report, n_b);
    assert!(a2.spooled() > 0, "A spooled while its links were cut");
    assert!(
        spooled_at_kill.unwrap_or(0.0) > 0.0,
        "A must be killed with events in its spool"
    );
    assert_eq!(accepted(&a3), 300, "A publishes again after its restart");
    assert!(
        b_at_drained < n_b,
        "B's load must outlast A's kill, restart and drain ({b_at_drained} of {n_b})"
    );
    assert!(
        accepted(&b_report) >= n_b * 99 / 100,
        "B kept publishing to the cluster: {}",
        b_report.summary()
    );
    let mut acked = b_report.acknowledged();
    for r in [&a1, &a2, &a3] {
        acked.extend(r.acknowledged());
    }
    assert_arrived("two replicas", &queue, &acked).await;
    cluster::delete(&exchange, &[&queue]).await;
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// The pids of the three nodes' `beam.smp`, found by `RABBITMQ_NODENAME` in their environment,
/// node 1 first.
fn node_pids() -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let name = env
            .split(|b| *b == 0)
            .find_map(|v| v.strip_prefix(b"RABBITMQ_NODENAME=wbc"))
            .map(|v| String::from_utf8_lossy(v).into_owned());
        if let Some(name) = name
            && std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "beam.smp")
        {
            pids.push((name, pid));
        }
    }
    pids.sort();
    pids.into_iter().map(|(_, pid)| pid).collect()
}

/// One round of confirmed publishes: `publishers` tasks over `channels` confirm channels, each
/// waiting for its confirm before the next publish, for `duration`.
struct Round {
    confirmed: usize,
    latencies: Vec<Duration>,
    elapsed: Duration,
    client_cpu: f64,
    /// Per node, node 1 (where both queues have their leader) first.
    nodes_cpu: Vec<f64>,
}

async fn confirmed_round(
    conn: &lapin::Connection,
    exchange: &str,
    msg: &webhook_bridge::message::Message,
    publishers: usize,
    channels: usize,
    duration: Duration,
) -> Round {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
    use lapin::types::ShortString;
    let mut chans = Vec::new();
    for _ in 0..channels {
        let ch = conn.create_channel().await.expect("channel");
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm_select");
        chans.push(ch);
    }
    let props = webhook_bridge::publisher::properties(msg);
    let nodes = node_pids();
    let cpu_before = (
        cpu_seconds(std::process::id()),
        nodes.iter().map(|p| cpu_seconds(*p)).collect::<Vec<_>>(),
    );
    let started = Instant::now();
    let end = started + duration;
    let tasks: Vec<_> = (0..publishers)
        .map(|i| {
            let ch = chans[i % channels].clone();
            let (exchange, key) = (exchange.to_string(), msg.routing_key.clone());
            let (body, props) = (msg.body.clone(), props.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < end {
                    let t = Instant::now();
                    let confirm = ch
                        .basic_publish(
                            ShortString::from(exchange.as_str()),
                            ShortString::from(key.as_str()),
                            BasicPublishOptions {
                                mandatory: true,
                                ..BasicPublishOptions::default()
                            },
                            &body,
                            props.clone(),
                        )
                        .await
                        .expect("publish");
                    let confirmation = confirm.await.expect("confirm");
                    assert!(
                        matches!(confirmation, lapin::Confirmation::Ack(None)),
                        "{confirmation:?}"
                    );
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("publisher task"));
    }
    let elapsed = started.elapsed();
    for ch in chans {
        let _ = ch.close(200, ShortString::from("done")).await;
    }
    latencies.sort();
    Round {
        confirmed: latencies.len(),
        latencies,
        elapsed,
        client_cpu: cpu_seconds(std::process::id()) - cpu_before.0,
        nodes_cpu: nodes
            .iter()
            .zip(&cpu_before.1)
            .map(|(p, before)| cpu_seconds(*p) - before)
            .collect(),
    }
}

/// The bridge's own message for the WeGoCOD sample, built by its own code.
fn wegocod_message() -> webhook_bridge::message::Message {
    use webhook_bridge::providers::{Inbound, Parsed};
    let text = format!(
        "[amqp]\nurls = [\"{}\"]\n{}",
        cluster::url(1),
        standard_endpoints()
    );
    let config = webhook_bridge::config::Config::from_toml(&text).expect("config");
    let ep = config
        .endpoints
        .iter()
        .find(|e| e.provider.name == "wegocod")
        .expect("wegocod endpoint");
    let headers = http::HeaderMap::new();
    let inbound = Inbound {
        options: &ep.options,
        headers: &headers,
        body: webhook_bridge::providers::wegocod::DELIVERED,
    };
    let Ok(Parsed::Events(events)) = ep.provider.parse(&inbound) else {
        panic!("the WeGoCOD sample did not parse");
    };
    webhook_bridge::envelope::encode(ep, &events[0], chrono::Utc::now()).expect("encode")
}

/// What a publisher confirm costs on a quorum queue (replicated to a majority before the
/// confirm) against a classic one, on this cluster: raw lapin, the bridge's message, 64
/// publishers over 4 confirm channels (the bridge's default) connected to node 1, where both
/// queues have their leader. Classic and quorum alternate, 2 rounds each of
/// `WB_CONFIRM_COST_SECONDS` (1 s in the suite, where only the checks matter; 4 s for the figures
/// in docs/BENCHMARKS.md). Every confirm is checked against the queue's message count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the three-node cluster of scripts/cluster; run serially"]
async fn quorum_confirm_cost_against_classic() {
    use lapin::options::{
        ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueuePurgeOptions,
    };
    use lapin::types::{AMQPValue, FieldTable, ShortString};
    use lapin::{Connection, ConnectionProperties, ExchangeKind};

    let _restore = cluster::ensure_up().await;
    let conn = Connection::connect(&cluster::url(1), ConnectionProperties::default())
        .await
        .expect("connect to node 1");
    let admin = conn.create_channel().await.expect("channel");
    let msg = wegocod_message();
    let tag = unique("wbt-cost");
    let mut targets = Vec::new();
    for kind in ["classic", "quorum"] {
        let exchange = format!("{tag}-{kind}");
        admin
            .exchange_declare(
                ShortString::from(exchange.as_str()),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("exchange");
        let mut args = FieldTable::default();
        args.insert(
            ShortString::from("x-queue-type"),
            AMQPValue::LongString(kind.into()),
        );
        admin
            .queue_declare(
                ShortString::from(exchange.as_str()),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                args,
            )
            .await
            .expect("queue");
        admin
            .queue_bind(
                ShortString::from(exchange.as_str()),
                ShortString::from(exchange.as_str()),
                ShortString::from("#"),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind");
        targets.push((kind, exchange));
    }
    // Warm both up, not measured (but counted in the check).
    let mut totals = std::collections::HashMap::new();
    for (kind, exchange) in &targets {
        let r = confirmed_round(&conn, exchange, &msg, 64, 4, Duration::from_secs(1)).await;
        totals.insert(*kind, r.confirmed);
    }
    let round_secs = std::env::var("WB_CONFIRM_COST_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let mut rates: std::collections::HashMap<&str, Vec<f64>> = std::collections::HashMap::new();
    for round in 1..=2 {
        for (kind, exchange) in &targets {
            let r = confirmed_round(
                &conn,
                exchange,
                &msg,
                64,
                4,
                Duration::from_secs(round_secs),
            )
            .await;
            let rate = r.confirmed as f64 / r.elapsed.as_secs_f64();
            let pct = |p: f64| {
                r.latencies[((r.latencies.len() as f64 * p) as usize).min(r.latencies.len() - 1)]
            };
            let per_confirm = |cpu: f64| cpu * 1e6 / r.confirmed as f64;
            let nodes: Vec<String> = r
                .nodes_cpu
                .iter()
                .map(|c| format!("{:.0}", per_confirm(*c)))
                .collect();
            eprintln!(
                "confirm cost: round {round} {kind:>7}: {:>6.0} confirmed publishes/s, \
                 confirm latency p50 {:.1} ms p99 {:.1} ms | CPU µs per confirm: client {:.0}, \
                 nodes 1/2/3 {} (sum {:.0})",
                rate,
                pct(0.50).as_secs_f64() * 1e3,
                pct(0.99).as_secs_f64() * 1e3,
                per_confirm(r.client_cpu),
                nodes.join("/"),
                per_confirm(r.nodes_cpu.iter().sum()),
            );
            assert!(r.confirmed > 0, "{kind}: nothing confirmed");
            *totals.entry(*kind).or_insert(0usize) += r.confirmed;
            rates.entry(kind).or_default().push(rate);
        }
    }
    let mean = |k: &str| rates[k].iter().sum::<f64>() / rates[k].len() as f64;
    eprintln!(
        "confirm cost: quorum/classic = {:.2} (mean of 2 rounds each)",
        mean("quorum") / mean("classic")
    );
    // Every confirm is a message in the queue (warm-up included), then purge and delete.
    for (kind, exchange) in &targets {
        let q = admin
            .queue_declare(
                ShortString::from(exchange.as_str()),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("passive declare");
        let count = q.message_count() as usize;
        eprintln!("confirm cost: {kind}: {count} messages in the queue");
        assert_eq!(
            count, totals[kind],
            "{kind}: messages in the queue vs confirms"
        );
        let _ = admin
            .queue_purge(
                ShortString::from(exchange.as_str()),
                QueuePurgeOptions::default(),
            )
            .await;
    }
    let _ = conn.close(200, ShortString::from("bye")).await;
    for (_, exchange) in &targets {
        cluster::delete(exchange, &[exchange.as_str()]).await;
    }
}

// ---- the rabbitmq-cluster variant's permissions ---------------------------------------------------

/// The bridge's `Permission` in deploy/kubernetes/variants/rabbitmq-cluster (configure, write,
/// read), as the Messaging Topology Operator would set it.
fn variant_permissions() -> [String; 3] {
    use serde::Deserialize;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/kubernetes/variants/rabbitmq-cluster/app/topology.yaml");
    let text = std::fs::read_to_string(&path).expect("the variant's topology.yaml");
    for doc in serde_norway::Deserializer::from_str(&text) {
        let doc = serde_json::Value::deserialize(doc).expect("YAML");
        if doc["kind"] == "Permission" && doc["spec"]["userReference"]["name"] == "webhook-bridge" {
            let p = &doc["spec"]["permissions"];
            return ["configure", "write", "read"]
                .map(|k| p[k].as_str().expect("a regular expression").to_string());
        }
    }
    panic!(
        "no Permission for the user webhook-bridge in {}",
        path.display()
    );
}

/// `rabbitmqctl -n wbc1@localhost ARGS` (users and permissions are cluster-wide).
fn rabbitmqctl(args: &[&str]) {
    common::rabbitmqctl(&[&["-q", "-n", "wbc1@localhost"], args].concat());
}

/// The unrouted queue unbound from the alternate exchange: a message nobody binds for is then
/// returned, and the bridge parks it in the queue through the default exchange.
async fn unbind_unrouted(exchange: &str) {
    let conn = cluster::connect().await;
    let ch = conn.create_channel().await.expect("channel");
    let unrouted = format!("{exchange}.unrouted");
    ch.queue_unbind(
        unrouted.as_str().into(),
        unrouted.as_str().into(),
        "#".into(),
        lapin::types::FieldTable::default(),
    )
    .await
    .expect("unbind the unrouted queue");
    let _ = conn.close(200, "bye".into()).await;
}

async fn unrouted_count(exchange: &str) -> u32 {
    let conn = cluster::connect().await;
    let ch = conn.create_channel().await.expect("channel");
    let q = ch
        .queue_declare(
            format!("{exchange}.unrouted").as_str().into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .expect("the unrouted queue exists");
    let _ = conn.close(200, "bye".into()).await;
    q.message_count()
}

/// A WeGoCOD webhook with its own order reference (not a duplicate of an earlier one).
async fn post_order(bridge: &Bridge, reference: &str) -> reqwest::Response {
    let body = load::wegocod_body(reference);
    bridge
        .post_signed("wegocod", "/webhooks/wegocod", WEGOCOD_SECRET, &body)
        .await
}

/// A bridge logged in as a user with `perms` on the `webhooks` exchange of the variant's config.
async fn bridge_as(user: &str, perms: &[String; 3]) -> Bridge {
    let password = format!("fake-{user}-password");
    rabbitmqctl(&["add_user", user, &password]);
    rabbitmqctl(&[
        "set_permissions",
        "-p",
        "/",
        user,
        &perms[0],
        &perms[1],
        &perms[2],
    ]);
    let urls = cluster::NODES
        .iter()
        .map(|&n| {
            format!(
                "amqp://{user}:{password}@127.0.0.1:{}/%2f",
                cluster::port(n)
            )
        })
        .collect();
    Bridge::start_with(BridgeOptions {
        exchange: Some("webhooks".into()),
        amqp_urls: urls,
        ..cluster::bridge_options()
    })
    .await
}

/// The permissions the rabbitmq-cluster variant gives the bridge's user let it do all it does:
/// declare its exchange, alternate exchange and unrouted queue on connect, publish, and park a
/// returned message in the unrouted queue through the default exchange. Without write on
/// `amq.default` the parking is refused and the event stays in the spool.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the three-node cluster of scripts/cluster; run serially"]
async fn variant_permissions_let_the_bridge_declare_publish_and_park() {
    let _restore = cluster::ensure_up().await;
    let perms = variant_permissions();
    let user = unique("wbt-variant-user");
    let bridge = bridge_as(&user, &perms).await;
    // Declared and published: nothing is bound, so the alternate exchange routes it to the
    // unrouted queue.
    let r = post_order(&bridge, "perm-1").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), r#"{"accepted":1}"#);
    assert_eq!(unrouted_count("webhooks").await, 1);
    // Returned (the unrouted queue unbound), then parked through the default exchange.
    unbind_unrouted("webhooks").await;
    let r = post_order(&bridge, "perm-2").await;
    assert_eq!(r.text().await.unwrap(), r#"{"accepted":1}"#);
    assert_eq!(unrouted_count("webhooks").await, 2);
    drop(bridge);
    rabbitmqctl(&["delete_user", &user]);

    // The same without write on amq.default: the returned message cannot be parked.
    let write = perms[1].replace("|amq\\.default", "");
    assert_ne!(
        write, perms[1],
        "the variant's write permission names amq.default"
    );
    let weaker = [perms[0].clone(), write, perms[2].clone()];
    let user = unique("wbt-variant-weaker");
    let bridge = bridge_as(&user, &weaker).await;
    unbind_unrouted("webhooks").await;
    let r = post_order(&bridge, "perm-3").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), r#"{"spooled":1}"#);
    assert_eq!(unrouted_count("webhooks").await, 2);
    drop(bridge);
    rabbitmqctl(&["delete_user", &user]);
    cluster::delete("webhooks", &[]).await;
}
