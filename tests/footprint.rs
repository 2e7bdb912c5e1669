//! The bridge's own memory at rest, connected and after serving: what a sidecar costs its pod
//! before any load. The largest fixed cost used to be the AMQP client's two ring buffers of 32
//! frames, grown by writing zeros to the broker's 128 KiB `frame_max` (8 MiB resident); the
//! bridge now names a 16 KiB `frame_max` in the URL (docs/contract.md §3, `[amqp] urls`).

use crate::common;

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
        let started = startup_line(&bridge);
        assert_eq!(started["worker_threads"], expected, "with {top:?}");
        bridge.cleanup().await;
    }
}

/// Every thread of the bridge runs under `thread_scheduling`: `SCHED_BATCH` by default (a thread
/// it wakes does not preempt the one that woke it), `SCHED_OTHER` with `"normal"`; the threads
/// started before the configuration was read (the log writer, jemalloc's) and after it (the
/// async worker, the AMQP client's I/O thread, made when the broker connection opened) alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_thread_runs_under_the_configured_scheduling_policy() {
    const SCHED_OTHER: u32 = 0;
    const SCHED_BATCH: u32 = 3;
    broker_available().await;
    for (top, policy, name) in [
        ("", SCHED_BATCH, "batch"),
        ("thread_scheduling = \"normal\"\n", SCHED_OTHER, "normal"),
    ] {
        let bridge = Bridge::start_with(BridgeOptions {
            top: top.to_string(),
            ..BridgeOptions::default()
        })
        .await;
        assert_eq!(bridge.post_wegocod_sample().await.status(), 200);
        let threads = thread_policies(bridge.child.id());
        for expected in ["lapin-io-loop", "tokio-rt-worker"] {
            assert!(
                threads.iter().any(|(comm, _)| comm == expected),
                "no {expected} thread in {threads:?}"
            );
        }
        for (comm, p) in &threads {
            assert_eq!(*p, policy, "thread {comm} with {top:?}: {threads:?}");
        }
        let started = startup_line(&bridge);
        assert_eq!(started["thread_scheduling"], name, "with {top:?}");
        bridge.cleanup().await;
    }
}

/// The bridge's start-up log line, parsed.
fn startup_line(bridge: &Bridge) -> serde_json::Value {
    let logs = bridge.logs();
    logs.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .find(|v: &serde_json::Value| v["message"] == "webhook-bridge started")
        .unwrap_or_else(|| panic!("no start-up line in {logs}"))
}

/// Each thread of `pid`: its name and its scheduling policy (`/proc/<pid>/task/<tid>/stat`,
/// field 41; the name in parentheses may itself hold spaces or parentheses).
fn thread_policies(pid: u32) -> Vec<(String, u32)> {
    let mut threads = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let stat = std::fs::read_to_string(entry.unwrap().path().join("stat")).unwrap();
        let (open, close) = (stat.find('(').unwrap(), stat.rfind(')').unwrap());
        let comm = stat[open + 1..close].to_string();
        // Fields after the name start at the 3rd (state); the policy is the 41st.
        let policy = stat[close + 1..].split_whitespace().nth(41 - 3).unwrap();
        threads.push((comm, policy.parse().unwrap()));
    }
    threads
}
