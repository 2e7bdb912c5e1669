//! The spool under damage, against the real binary and broker: a corrupt record in the middle
//! of a segment loses that record only and the segment is kept aside; a cursor pointing into
//! damage skips nothing; a stale cursor never meets a reused segment id; write errors turn
//! `/readyz` false without churning segment files; the writer's queue is bounded; returned
//! messages of answered requests are never given up; panicking background tasks are restarted;
//! spools of the previous format are read, spools of a newer format refused untouched.

use crate::common;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use common::load::{self, metric, wait_metric, wegocod_body};
use common::proxy::{Mode, Proxy, cut_off};
use common::*;
use webhook_bridge::spool::record;

fn spool_dir(bridge: &Bridge) -> PathBuf {
    bridge.dir.path().join("spool")
}

/// Files in the spool directory whose name ends with `suffix`, sorted.
fn files(bridge: &Bridge, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(spool_dir(bridge))
        .expect("spool dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.to_string_lossy().ends_with(suffix))
        .collect();
    v.sort();
    v
}

/// The one segment holding records.
fn data_segment(bridge: &Bridge) -> PathBuf {
    let with_data: Vec<PathBuf> = files(bridge, ".seg")
        .into_iter()
        .filter(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0) > 0)
        .collect();
    assert_eq!(with_data.len(), 1, "{with_data:?}");
    with_data[0].clone()
}

fn segment_id(path: &Path) -> u64 {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.split('.').next())
        .and_then(|n| n.parse().ok())
        .expect("segment id")
}

async fn metrics_value(bridge: &Bridge, name: &str) -> f64 {
    metric(&bridge.metrics().await, name).unwrap_or(-1.0)
}

/// Spool `n` distinct WeGoCOD events (`{tag}-{i}`) with the broker unreachable; every one must
/// be answered `spooled`. Returns the acknowledged references.
async fn spool_events(bridge: &Bridge, tag: &str, n: usize) -> HashSet<String> {
    let report = load::run(
        bridge,
        tag,
        n,
        16,
        Duration::ZERO,
        Arc::new(AtomicUsize::new(0)),
    )
    .await;
    assert_eq!(report.spooled(), n, "{}", report.summary());
    report.acknowledged()
}

/// Message ids received until every one of `expected` arrived or nothing came for `idle`.
async fn collect_message_ids(
    consumer: &mut Consumer,
    expected: &HashSet<String>,
    idle: Duration,
) -> HashSet<String> {
    let mut seen = HashSet::new();
    while !expected.is_subset(&seen) {
        let Some(m) = consumer.next(idle).await else {
            break;
        };
        if let Some(id) = m.message_id {
            seen.insert(id);
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_zeroed_block_mid_segment_loses_that_record_only_and_the_segment_is_kept() {
    let (proxy, opts, mut bridge, mut consumer) = cut_off(|_| {}).await;
    let n = 1000;
    let acked = spool_events(&bridge, "zero", n).await;

    bridge.child.kill().unwrap();
    bridge.child.wait().unwrap();
    let seg = data_segment(&bridge);
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.len() * 2 / 5;
    bytes[at..at + 64].fill(0);
    std::fs::write(&seg, &bytes).unwrap();
    let damaged = record::scan(&bytes);
    let lost = damaged.damaged_records();
    eprintln!(
        "segment of {} bytes zeroed at {at}: {} whole records left, {lost} lost by its headers",
        bytes.len(),
        damaged.records.len()
    );

    bridge.restart(&opts).await;
    let m = bridge.metrics().await;
    let pending = metric(&m, "webhook_bridge_spool_events").unwrap_or(-1.0);
    assert_eq!(
        pending,
        damaged.records.len() as f64,
        "pending after restart"
    );
    assert_eq!(
        metric(&m, "webhook_bridge_spool_damaged_records_total"),
        Some(lost as f64)
    );
    proxy.restore();
    let (seen, messages) = load::collect(&mut consumer, &acked, Duration::from_secs(15)).await;
    let missing: Vec<&String> = acked.difference(&seen).collect();
    eprintln!(
        "sent={n} acknowledged={} arrived distinct={} messages={messages} missing={missing:?}",
        acked.len(),
        seen.len()
    );
    assert_eq!(
        missing.len() as u64,
        lost,
        "only the damaged record(s) are missing"
    );
    assert!(lost <= 2, "a 64-byte block spans at most two records");
    wait_metric(
        &bridge,
        "webhook_bridge_spool_events",
        0.0,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        metrics_value(&bridge, "webhook_bridge_spool_bytes").await,
        0.0
    );
    // Drained and left by the writer: kept aside as it was, never deleted.
    let end = Instant::now() + Duration::from_secs(10);
    while seg.exists() && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kept = files(&bridge, ".seg.damaged");
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(segment_id(&kept[0]), segment_id(&seg));
    assert_eq!(std::fs::read(&kept[0]).unwrap(), bytes, "kept unchanged");
    assert!(!seg.exists());
    assert_eq!(
        metrics_value(&bridge, "webhook_bridge_spool_damaged_segments_total").await,
        1.0
    );
    bridge.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cursor_pointing_into_a_damaged_region_skips_no_pending_record() {
    let (proxy, opts, mut bridge, mut consumer) = cut_off(|_| {}).await;
    spool_events(&bridge, "cur", 1000).await;
    bridge.child.kill().unwrap();
    bridge.child.wait().unwrap();

    // The records before record 400 were confirmed (the cursor names record 400), and record
    // 400 is then damaged: the cursor points into the damaged region.
    let seg = data_segment(&bridge);
    let mut bytes = std::fs::read(&seg).unwrap();
    let whole = record::scan(&bytes);
    let target = whole.records[400].clone();
    let at = target.offset as usize + 4;
    bytes[at..at + 64].fill(0);
    std::fs::write(&seg, &bytes).unwrap();
    std::fs::write(
        spool_dir(&bridge).join("cursor"),
        format!("{} {}\n", segment_id(&seg), target.offset + 10),
    )
    .unwrap();
    let after = record::scan(&bytes);
    let expected: HashSet<String> = after
        .records
        .iter()
        .filter(|r| r.offset > target.offset)
        .map(|r| r.id.clone())
        .collect();
    assert!(expected.len() >= 598, "{}", expected.len());

    bridge.restart(&opts).await;
    assert_eq!(
        metrics_value(&bridge, "webhook_bridge_spool_events").await,
        expected.len() as f64,
        "the records after the damage are pending"
    );
    proxy.restore();
    let seen = collect_message_ids(&mut consumer, &expected, Duration::from_secs(15)).await;
    let arrived = expected.intersection(&seen).count();
    eprintln!(
        "pending after the damaged record: {}, arrived: {arrived}, messages: {}",
        expected.len(),
        seen.len()
    );
    assert_eq!(
        arrived,
        expected.len(),
        "every record after the damage arrives"
    );
    wait_metric(
        &bridge,
        "webhook_bridge_spool_events",
        0.0,
        Duration::from_secs(10),
    )
    .await;
    bridge.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn new_segment_ids_never_reach_the_one_a_stale_cursor_names() {
    let (proxy, opts, mut bridge, mut consumer) = cut_off(|_| {}).await;
    bridge.child.kill().unwrap();
    bridge.child.wait().unwrap();
    // A cursor left by an earlier life of the spool, naming segment 3, and no segment at all.
    for seg in files(&bridge, ".seg") {
        std::fs::remove_file(seg).unwrap();
    }
    std::fs::write(spool_dir(&bridge).join("cursor"), "3 0\n").unwrap();

    // Three runs, each spooling 100 events and killed before any is confirmed.
    let mut acked = HashSet::new();
    for round in 0..3 {
        bridge.restart(&opts).await;
        bridge.wait_ready(Duration::from_secs(20)).await;
        acked.extend(spool_events(&bridge, &format!("stale{round}"), 100).await);
        bridge.child.kill().unwrap();
        bridge.child.wait().unwrap();
    }
    let ids: Vec<u64> = files(&bridge, ".seg")
        .iter()
        .map(|p| segment_id(p))
        .collect();
    eprintln!("segments after three runs: {ids:?}");
    bridge.restart(&opts).await;
    assert_eq!(
        metrics_value(&bridge, "webhook_bridge_spool_events").await,
        300.0
    );
    proxy.restore();
    let (seen, _) = load::collect(&mut consumer, &acked, Duration::from_secs(15)).await;
    eprintln!("acknowledged={} arrived={}", acked.len(), seen.len());
    assert!(acked.is_subset(&seen), "every spooled event arrives");
    bridge.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn write_errors_make_readyz_false_until_a_write_succeeds_and_churn_no_segments() {
    broker_available().await;
    let proxy = Proxy::start("127.0.0.1:5672", Mode::Cut).await;
    let bridge = Bridge::start_with(BridgeOptions {
        ignore_sigxfsz: true,
        ..proxy.bridge_options()
    })
    .await;
    load::declare_exchange(&bridge.exchange).await;
    let mut consumer = bridge.consumer("wegocod.#").await;
    let mut acked = spool_events(&bridge, "disk-a", 50).await;
    assert_eq!(bridge.readyz().await, 200);
    let segments_before = files(&bridge, ".seg").len();

    // Every write past 1 KiB of any file fails (EFBIG): even a fresh segment cannot take one
    // record, as on a full disk.
    bridge.limit_file_size(Some(1024));
    let mut refused = 0;
    for i in 0..20 {
        let body = wegocod_body(&format!("disk-x-{i}"));
        let resp = bridge
            .post_signed("wegocod", "/webhooks/wegocod", WEGOCOD_SECRET, &body)
            .await;
        if resp.status() == 503 {
            refused += 1;
        }
    }
    let segments_during = files(&bridge, ".seg").len();
    let ready_during = bridge.readyz().await;
    let errors = metrics_value(&bridge, "webhook_bridge_spool_write_errors_total").await;
    eprintln!(
        "refused={refused}/20 segments before={segments_before} during={segments_during} \
         readyz={ready_during} write_errors={errors}"
    );
    assert_eq!(refused, 20, "no event is acknowledged while writes fail");
    assert!(
        segments_during <= segments_before + 1,
        "at most one new segment, not one per attempt"
    );
    assert_eq!(ready_during, 503, "not ready while the spool cannot write");
    assert!(errors >= 1.0);
    // Still not ready a while later (the probe fails too).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(bridge.readyz().await, 503);
    assert!(files(&bridge, ".seg").len() <= segments_before + 1);

    // The disk works again: ready within a couple of probes, events are spooled again.
    bridge.limit_file_size(None);
    let end = Instant::now() + Duration::from_secs(5);
    while bridge.readyz().await != 200 {
        assert!(Instant::now() < end, "ready again once writes succeed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    acked.extend(spool_events(&bridge, "disk-b", 50).await);
    proxy.restore();
    let (seen, _) = load::collect(&mut consumer, &acked, Duration::from_secs(15)).await;
    eprintln!("acknowledged={} arrived={}", acked.len(), seen.len());
    assert!(acked.is_subset(&seen), "every acknowledged event arrives");
    bridge.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_over_the_writer_queue_budget_are_refused_at_once() {
    let (proxy, _, bridge, mut consumer) =
        cut_off(|o| o.tables = "queue_max_bytes = \"4KiB\"\n".into()).await;
    let n = 600;
    let report = load::run(
        &bridge,
        "busy",
        n,
        64,
        Duration::ZERO,
        Arc::new(AtomicUsize::new(0)),
    )
    .await;
    let busy = metric(
        &bridge.metrics().await,
        "webhook_bridge_publish_failures_total{reason=\"spool_busy\"}",
    )
    .unwrap_or(0.0);
    let refused: Vec<&load::Answer> = report
        .answers
        .iter()
        .filter(|a| a.status == Some(503))
        .collect();
    let slowest_refusal = refused.iter().map(|a| a.latency).max().unwrap_or_default();
    eprintln!(
        "{} spool_busy={busy} slowest refusal={slowest_refusal:?}",
        report.summary()
    );
    assert!(busy >= 1.0, "some appends found the queue over its budget");
    assert!(refused.iter().all(|a| a.retry_after));
    assert_eq!(report.ok() + refused.len(), n, "{}", report.summary());
    let acked = report.acknowledged();
    proxy.restore();
    let (seen, _) = load::collect(&mut consumer, &acked, Duration::from_secs(15)).await;
    eprintln!("acknowledged={} arrived={}", acked.len(), seen.len());
    assert!(acked.is_subset(&seen), "every acknowledged event arrives");
    bridge.cleanup().await;
}

/// A bridge that declares nothing, on one of lapin's confirm channels (every request's confirms
/// share the channel's multiple-acks, and lapin hands a return to whichever confirm it resolves
/// next: the case strays exist for; the builtin publishing connection attributes returns
/// exactly and makes none), publishing to an exchange without an alternate exchange and with a
/// spool of `max_bytes`.
async fn bridge_without_alternate_exchange(max_bytes: &str) -> Bridge {
    let exchange_ready = Bridge::start_with(BridgeOptions {
        amqp_extra: "declare_topology = false\nchannels = 1\npublish_client = \"lapin\"\n\
                     reconnect_backoff_max = \"500ms\""
            .into(),
        tables: format!("max_bytes = \"{max_bytes}\"\n"),
        // Requests on several workers interleave their publishes on the one channel, so a
        // multiple-ack hands some returns to another request's confirm (with one worker that
        // interleaving is too rare for the test to produce strays in a few hundred requests).
        top: "worker_threads = 4\n".into(),
        wait_broker: false,
        ..BridgeOptions::default()
    })
    .await;
    declare_plain_exchange(&exchange_ready.exchange).await;
    exchange_ready.wait_connected(Duration::from_secs(20)).await;
    exchange_ready
}

async fn post_peddler(bridge: &Bridge, id: &str) -> (u16, String) {
    let resp = bridge
        .post_signed(
            "peddler",
            "/webhooks/peddler",
            PEDDLER_SECRET,
            &peddler_body(id),
        )
        .await;
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn returned_messages_of_answered_requests_are_never_given_up() {
    broker_available().await;
    // Nowhere to park returns, and a spool that the first unroutable events fill (the drainer
    // cannot move them either): strays find the spool refusing for a long while.
    let bridge = bridge_without_alternate_exchange("4KiB").await;
    let tag = unique("stray");
    let mut acked_peddler = Vec::new();
    for i in 0.. {
        assert!(i < 100, "the spool fills up");
        let id = format!("{tag}-fill{i}");
        match post_peddler(&bridge, &id).await {
            (200, _) => acked_peddler.push(id),
            (503, _) => break,
            other => panic!("{other:?}"),
        }
    }
    // Unroutable events from concurrent requests: lapin hands some returns to another request's
    // confirm, which answers its own 200 and leaves the other message as a stray.
    let mut strays = 0;
    for round in 0..5 {
        let answers = futures_util::future::join_all((0..100).map(|k| {
            let id = format!("{tag}-r{round}-{k}");
            let b = &bridge;
            async move { (id.clone(), post_peddler(b, &id).await) }
        }))
        .await;
        for (id, (status, body)) in answers {
            if status == 200 {
                if body.contains("\"accepted\":1") {
                    strays += 1;
                }
                acked_peddler.push(id);
            }
        }
        if strays > 0 {
            break;
        }
    }
    eprintln!(
        "answered 200: {} unroutable events, {strays} of them accepted with their return \
         carried by another request",
        acked_peddler.len()
    );
    assert!(strays > 0, "some returns were carried by other requests");
    // Longer than any give-up window: the spool refuses all along.
    tokio::time::sleep(Duration::from_secs(40)).await;
    declare_unrouted_queue(&bridge.exchange).await;
    let mut parked = Consumer::existing(&format!("{}.unrouted", bridge.exchange)).await;
    let expected: HashSet<String> = acked_peddler.iter().cloned().collect();
    let mut seen = HashSet::new();
    let end = Instant::now() + Duration::from_secs(90);
    while !expected.is_subset(&seen) && Instant::now() < end {
        if let Some(m) = parked.next(Duration::from_secs(5)).await
            && let Some(id) = m.body.pointer("/data/entity_id").and_then(|v| v.as_str())
        {
            seen.insert(id.to_string());
        }
    }
    let missing: Vec<&String> = expected.difference(&seen).collect();
    eprintln!(
        "acknowledged unroutable={} parked={} missing={missing:?}",
        expected.len(),
        seen.intersection(&expected).count()
    );
    assert!(
        missing.is_empty(),
        "every acknowledged unroutable event is parked"
    );
    assert!(!bridge.logs().contains("they are lost"), "nothing given up");
    bridge.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn panicking_background_tasks_are_restarted_and_readyz_says_so_meanwhile() {
    broker_available().await;
    let proxy = Proxy::start("127.0.0.1:5672", Mode::Open).await;
    let mut opts = proxy.bridge_options();
    opts.wait_ready = false;
    opts.env = vec![(
        "WEBHOOK_BRIDGE_TEST_PANIC".into(),
        "drainer:3,strays:1,link:1".into(),
    )];
    let bridge = Bridge::start_with(opts).await;
    load::declare_exchange(&bridge.exchange).await;
    let mut consumer = bridge.consumer("wegocod.#").await;

    // Each task panics shortly after its start; the drainer three times in a row (down about
    // 1 + 2 + 4 s). Readiness is false while one is down.
    let mut readiness = BTreeMap::new();
    let end = Instant::now() + Duration::from_secs(4);
    while Instant::now() < end {
        *readiness.entry(bridge.readyz().await).or_insert(0) += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("readyz answers in the first 4 s: {readiness:?}");
    assert!(
        readiness.contains_key(&503),
        "not ready while a task is down"
    );

    // Meanwhile events are spooled with the broker cut, for the restarted drainer to send.
    proxy.cut();
    let acked = spool_events(&bridge, "sup", 100).await;
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let m = bridge.metrics().await;
        let restarts = |task: &str| {
            metric(
                &m,
                &format!("webhook_bridge_task_restarts_total{{task=\"{task}\"}}"),
            )
        };
        let counts = (restarts("drainer"), restarts("strays"), restarts("link"));
        if counts == (Some(3.0), Some(1.0), Some(1.0)) && bridge.readyz().await == 200 {
            eprintln!("restarts (drainer, strays, link) = {counts:?}, ready again");
            break;
        }
        assert!(Instant::now() < end, "restarts {counts:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    proxy.restore();
    let (seen, _) = load::collect(&mut consumer, &acked, Duration::from_secs(15)).await;
    eprintln!("acknowledged={} arrived={}", acked.len(), seen.len());
    assert!(acked.is_subset(&seen), "the restarted drainer sends them");
    let logs = bridge.logs();
    assert!(logs.contains("background task panicked; restarting it"));
    bridge.cleanup().await;
}

/// A record as releases before spool format 2 wrote it: `len | crc32(payload) | payload`,
/// payload = version 1, id, routing key, source (u16 length + bytes each), timestamp (u64),
/// body (u32 length + bytes). Written here byte by byte, independently of the bridge's code.
fn format_1_record(id: &str, routing_key: &str, body: &[u8]) -> Vec<u8> {
    let mut p = vec![1u8];
    for s in [id, routing_key, "webhook-bridge/wegocod/wegocod-ma"] {
        p.extend_from_slice(&(s.len() as u16).to_le_bytes());
        p.extend_from_slice(s.as_bytes());
    }
    p.extend_from_slice(&1_700_000_000u64.to_le_bytes());
    p.extend_from_slice(&(body.len() as u32).to_le_bytes());
    p.extend_from_slice(body);
    let mut out = (p.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&crc32fast::hash(&p).to_le_bytes());
    out.extend_from_slice(&p);
    out
}

/// Stop the bridge and leave its spool directory as the previous release would have: no
/// `format` file, nothing but `lock`.
fn reset_spool_dir(bridge: &mut Bridge) {
    bridge.child.kill().unwrap();
    bridge.child.wait().unwrap();
    let dir = spool_dir(bridge);
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("lock"), b"").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_spool_of_the_previous_format_is_drained_and_upgraded() {
    let (proxy, opts, mut bridge, mut consumer) = cut_off(|_| {}).await;
    reset_spool_dir(&mut bridge);

    // Two format-1 segments of 100 records each; a 64-byte block of the second is zeroed.
    let dir = spool_dir(&bridge);
    let mut offsets = Vec::new();
    for seg in 1..=2u64 {
        let mut bytes = Vec::new();
        for i in 0..100 {
            let reference = format!("v1-{seg}-{i}");
            let body = serde_json::json!({"data": {"entity_id": reference}}).to_string();
            offsets.push((reference.clone(), seg, bytes.len()));
            bytes.extend(format_1_record(
                &format!("id-{reference}"),
                "wegocod.order.status_changed",
                body.as_bytes(),
            ));
        }
        if seg == 2 {
            let at = bytes.len() * 2 / 5;
            bytes[at..at + 64].fill(0);
        }
        std::fs::write(dir.join(format!("{seg:020}.seg")), &bytes).unwrap();
    }
    std::fs::write(dir.join("cursor"), "1 0\n").unwrap();

    bridge.restart(&opts).await;
    let pending = metrics_value(&bridge, "webhook_bridge_spool_events").await;
    assert!(
        (198.0..=199.0).contains(&pending),
        "the readable format-1 records are pending: {pending}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("format")).unwrap(),
        "2\n",
        "the spool is marked with the format it now holds"
    );
    proxy.restore();
    let expected: HashSet<String> = offsets.iter().map(|(r, _, _)| r.clone()).collect();
    let (seen, _) = load::collect(&mut consumer, &expected, Duration::from_secs(10)).await;
    let missing: Vec<&String> = expected.difference(&seen).collect();
    eprintln!(
        "format-1 records: {}, arrived: {}, missing: {missing:?}",
        expected.len(),
        seen.len()
    );
    assert_eq!(200 - missing.len() as u64, pending as u64);
    assert!(
        missing.iter().all(|r| r.starts_with("v1-2-")),
        "only the damaged segment lost a record"
    );
    assert!(missing.len() <= 2);
    wait_metric(
        &bridge,
        "webhook_bridge_spool_events",
        0.0,
        Duration::from_secs(10),
    )
    .await;
    bridge.cleanup().await;
}

/// Every file under `dir` with its content.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(snapshot(&path));
        } else {
            out.insert(path.clone(), std::fs::read(&path).unwrap());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_spool_of_a_newer_format_is_refused_at_start_and_left_untouched() {
    broker_available().await;
    let proxy = Proxy::start("127.0.0.1:5672", Mode::Cut).await;
    let opts = proxy.bridge_options();
    let mut bridge = Bridge::start_with(proxy.bridge_options()).await;
    spool_events(&bridge, "future", 20).await;
    bridge.child.kill().unwrap();
    bridge.child.wait().unwrap();
    // As a later release would leave it: a higher format number, segments this release cannot
    // read.
    let dir = spool_dir(&bridge);
    std::fs::write(dir.join("format"), "3\n").unwrap();
    std::fs::write(
        dir.join(format!("{:020}.seg", 900)),
        b"records of a format this release does not know",
    )
    .unwrap();
    let before = snapshot(&dir);
    let log_before = bridge.logs().len();

    let status = bridge.run_to_exit(&opts, Duration::from_secs(20));
    let log = bridge.logs()[log_before..].to_string();
    eprintln!("exit: {status:?}; log: {log}");
    let status = status.expect("the bridge refuses to start");
    assert!(!status.success());
    assert!(
        log.contains("newer than this release reads"),
        "a clear message: {log}"
    );
    assert_eq!(snapshot(&dir), before, "nothing in the spool was changed");
    bridge.cleanup().await;
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_spool_drained_at_exit_is_left_empty_and_one_that_is_not_keeps_its_format() {
    let (proxy, opts, mut bridge, mut consumer) =
        cut_off(|o| o.tables = "shutdown_drain = \"1s\"\n".into()).await;
    let acked = spool_events(&bridge, "exit", 50).await;
    let dir = spool_dir(&bridge);

    // Broker still down at SIGTERM: the events stay, and with them the format marks.
    assert!(bridge.terminate().success());
    let kept = names(&dir);
    eprintln!("after SIGTERM with 50 events pending: {kept:?}");
    assert!(kept.contains(&"format".to_string()));
    assert!(kept.contains(&"00000000000000000000.seg".to_string()));

    bridge.restart(&opts).await;
    proxy.restore();
    let (seen, _) = load::collect(&mut consumer, &acked, Duration::from_secs(15)).await;
    assert!(acked.is_subset(&seen), "every spooled event arrives");
    wait_metric(
        &bridge,
        "webhook_bridge_spool_events",
        0.0,
        Duration::from_secs(10),
    )
    .await;
    assert!(bridge.terminate().success());
    let left = names(&dir);
    eprintln!("after SIGTERM with the spool drained: {left:?}");
    assert_eq!(left, ["lock"], "nothing an older release could stumble on");
    bridge.cleanup().await;
}
