//! The bridge's own memory at rest, connected and after serving: what a sidecar costs its pod
//! before any load. The largest fixed cost used to be the AMQP client's two ring buffers of 32
//! frames, grown by writing zeros to the broker's 128 KiB `frame_max` (8 MiB resident); the
//! bridge now names a 16 KiB `frame_max` in the URL (docs/contract.md §3, `[amqp] urls`).

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_bridge_holds_a_few_mib_of_its_own() {
    broker_available().await;
    let bridge = Bridge::start().await;
    let mut q = bridge.consumer("#").await;
    for _ in 0..20 {
        assert_eq!(bridge.post_wegocod_sample().await.status(), 200);
    }
    assert!(q.next(std::time::Duration::from_secs(5)).await.is_some());
    // Resident anonymous memory (heap, stacks): what the process allocated, not its mapped code.
    let anon = proc_status_mib(bridge.child.id(), "RssAnon");
    println!("RssAnon after 20 webhooks: {anon:.1} MiB");
    // Measured (debug build): 3.3 MiB; 11.3 MiB when the URL names no `frame_max`.
    assert!(anon < 6.0, "RssAnon {anon:.1} MiB");
    bridge.cleanup().await;
}

/// One async worker by default (the sidecar's share of a node, whatever the node's size), and
/// as many as `worker_threads` says: the runtime's own count, logged at start-up. (Counting
/// threads would not do: tokio names its blocking-pool threads like its workers.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_has_the_configured_worker_threads() {
    broker_available().await;
    for (top, expected) in [("", 1), ("worker_threads = 3\n", 3)] {
        let bridge = Bridge::start_with(BridgeOptions {
            top: top.to_string(),
            ..BridgeOptions::default()
        })
        .await;
        assert_eq!(bridge.post_wegocod_sample().await.status(), 200);
        let logs = bridge.logs();
        let started: serde_json::Value = logs
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .find(|v: &serde_json::Value| v["message"] == "webhook-bridge started")
            .unwrap_or_else(|| panic!("no start-up line in {logs}"));
        assert_eq!(started["worker_threads"], expected, "with {top:?}");
        bridge.cleanup().await;
    }
}
