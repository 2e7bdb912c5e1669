//! SIGTERM: the bridge stops accepting, finishes what is in flight, drains the spool to the
//! broker for up to `[spool] shutdown_drain`, keeps what is left, and exits 0; every event it
//! answered 2xx arrives.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::load::{self, metric};
use common::proxy::{Mode, Proxy, cut_off};
use common::*;

fn sigterm(bridge: &Bridge) {
    let pid = bridge.child.id().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Wait for the process to exit; its status and how long it took.
async fn wait_exit(bridge: &mut Bridge, timeout: Duration) -> (std::process::ExitStatus, Duration) {
    let started = Instant::now();
    loop {
        if let Some(status) = bridge.child.try_wait().expect("try_wait") {
            return (status, started.elapsed());
        }
        assert!(
            started.elapsed() < timeout,
            "bridge did not exit within {timeout:?}; log:\n{}",
            bridge.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_mid_load_exits_0_and_every_acked_event_arrives() {
    broker_available().await;
    let mut bridge = Bridge::start_with(BridgeOptions {
        top: "ack_deadline = \"2s\"".into(),
        ..BridgeOptions::default()
    })
    .await;
    let mut consumer = bridge.consumer("wegocod.#").await;
    let n = 1500;
    let progress = Arc::new(AtomicUsize::new(0));
    let report = {
        let load = load::run(
            &bridge,
            "term",
            n,
            16,
            Duration::from_millis(2),
            Arc::clone(&progress),
        );
        let terminator = async {
            while progress.load(Ordering::Relaxed) < n / 3 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            sigterm(&bridge);
            progress.load(Ordering::Relaxed)
        };
        let (report, at) = tokio::join!(load, terminator);
        eprintln!("SIGTERM after {at} answers");
        report
    };
    let (status, took) = wait_exit(&mut bridge, Duration::from_secs(15)).await;
    let acked = report.acknowledged();
    let (seen, messages) = load::collect(&mut consumer, &acked, Duration::from_secs(10)).await;
    eprintln!(
        "sigterm mid-load: {} | exit {status} | arrived distinct={} messages={messages}",
        report.summary(),
        seen.len()
    );
    assert!(status.success(), "exit code 0, got {status}");
    assert!(took < Duration::from_secs(10), "exited in {took:?}");
    assert!(report.ok() >= n / 3, "the load ran before the signal");
    assert!(
        report.ok() < n,
        "requests after the signal are not accepted"
    );
    assert_eq!(
        report.server_errors(),
        0,
        "in-flight requests finish normally"
    );
    assert!(acked.is_subset(&seen), "every 2xx event arrives");
    assert!(bridge.logs().contains("webhook-bridge stopped"));
    bridge.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_with_broker_down_exits_0_and_keeps_the_spool_for_the_next_start() {
    let (proxy, opts, mut bridge, mut consumer) = cut_off(|_| {}).await;
    let report = load::run(
        &bridge,
        "termspool",
        100,
        8,
        Duration::ZERO,
        Arc::new(AtomicUsize::new(0)),
    )
    .await;
    assert_eq!(report.spooled(), 100, "{}", report.summary());
    sigterm(&bridge);
    let (status, took) = wait_exit(&mut bridge, Duration::from_secs(15)).await;
    eprintln!("broker down: exit {status} after {took:?}");
    assert!(status.success(), "exit code 0, got {status}");
    consumer.expect_none(Duration::from_millis(300)).await;

    proxy.restore();
    bridge.restart(&opts).await;
    let acked = report.acknowledged();
    let (seen, _) = load::collect(&mut consumer, &acked, Duration::from_secs(20)).await;
    assert!(
        acked.is_subset(&seen),
        "spooled events arrive after the restart"
    );
    let m = bridge.metrics().await;
    eprintln!(
        "after restart: spool_events={:?}",
        metric(&m, "webhook_bridge_spool_events")
    );
    bridge.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_the_spool_to_a_broker_that_is_back_before_exiting() {
    broker_available().await;
    let proxy = Proxy::start("127.0.0.1:5672", Mode::Cut).await;
    let spool = tempfile::tempdir().expect("spool dir");
    let mut bridge = Bridge::start_with(BridgeOptions {
        tables: format!(
            "[spool]\ndir = \"{}\"\nshutdown_drain = \"8s\"",
            spool.path().display()
        ),
        ..proxy.bridge_options()
    })
    .await;
    load::declare_exchange(&bridge.exchange).await;
    let mut consumer = bridge.consumer("wegocod.#").await;
    let report = load::run(
        &bridge,
        "termdrain",
        100,
        8,
        Duration::ZERO,
        Arc::new(AtomicUsize::new(0)),
    )
    .await;
    assert_eq!(report.spooled(), 100, "{}", report.summary());
    // SIGTERM while the broker is still unreachable; it comes back during the shutdown.
    sigterm(&bridge);
    proxy.restore();
    let (status, took) = wait_exit(&mut bridge, Duration::from_secs(20)).await;
    eprintln!("exit {status} after {took:?}");
    assert!(status.success(), "exit code 0, got {status}");
    let acked = report.acknowledged();
    let (seen, _) = load::collect(&mut consumer, &acked, Duration::from_secs(5)).await;
    assert!(
        acked.is_subset(&seen),
        "the spooled events reached the broker before the process exited ({} of {})",
        acked.intersection(&seen).count(),
        acked.len()
    );
    let logs = bridge.logs();
    assert!(logs.contains("draining the spool before exit"), "{logs}");
    assert!(logs.contains("spool drained"), "{logs}");
    bridge.cleanup().await;
}
