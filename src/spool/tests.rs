//! Unit tests of the spool: appends, recovery, capacity, damage, format, the writer's queue.
use super::*;
use std::path::Path;
use std::time::Duration;

use super::record::RECORD_MAX;

fn msg(i: usize) -> Message {
    Message {
        id: format!("id-{i}"),
        routing_key: "p.order.status_changed".into(),
        source: "webhook-bridge/p/e".into(),
        timestamp: 1_700_000_000 + i as u64,
        body: format!("{{\"n\":{i}}}").into_bytes(),
    }
}

fn config(dir: &Path, max_bytes: u64) -> SpoolConfig {
    SpoolConfig {
        dir: dir.to_path_buf(),
        max_bytes,
        ..SpoolConfig::default()
    }
}

#[tokio::test]
async fn appended_events_are_found_again_after_reopening_and_dir_is_locked() {
    let tmp = tempfile::tempdir().unwrap();
    let metrics = Metrics::new().unwrap();
    let spool = Spool::open(&config(tmp.path(), 1 << 20), metrics.clone()).unwrap();
    let batch: Vec<Message> = (0..5).map(msg).collect();
    spool.append(&batch[..2]).await.unwrap();
    spool.append(&batch[2..]).await.unwrap();
    assert_eq!(spool.pending_events(), 5);
    assert!(matches!(
        Spool::open(&config(tmp.path(), 1 << 20), metrics.clone()),
        Err(SpoolError::Locked)
    ));
    drop(spool);
    // The writer thread holds the shared state until its channel closes; give it a moment.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let again = Spool::open(&config(tmp.path(), 1 << 20), metrics.clone()).unwrap();
    assert_eq!(again.pending_events(), 5);
    assert_eq!(metrics.spool_events.get(), 5);
}

#[tokio::test]
async fn a_segment_file_left_by_a_failed_rotation_does_not_stop_the_writer() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = Spool::open(&config(tmp.path(), 1 << 20), Metrics::new().unwrap()).unwrap();
    spool.append(&[msg(0)]).await.unwrap();
    // The drainer has caught up with the active segment, so the next write rotates; a file
    // with the next id is already there.
    let active = {
        let mut st = spool.shared.lock();
        let active = st.active;
        let len = st.segments.get(&active).map_or(0, |s| s.len);
        st.cursor = Cursor {
            segment: active,
            offset: len,
        };
        active
    };
    File::create(segment_path(tmp.path(), active + 1)).unwrap();
    spool.append(&[msg(1)]).await.unwrap();
    spool.append(&[msg(2)]).await.unwrap();
    assert_eq!(spool.shared.lock().active, active + 2);
}

#[tokio::test]
async fn the_oldest_pending_timestamp_follows_appends_confirms_and_reopening() {
    let tmp = tempfile::tempdir().unwrap();
    let ts = |i: usize| Some(msg(i).timestamp);
    let metrics = Metrics::new().unwrap();
    let spool = Spool::open(&config(tmp.path(), 1 << 30), metrics.clone()).unwrap();
    assert_eq!(metrics.spool_oldest_timestamp(), None, "empty");
    spool.append(&[msg(3), msg(4)]).await.unwrap();
    assert_eq!(metrics.spool_oldest_timestamp(), ts(3));
    spool.append(&[msg(5)]).await.unwrap();
    assert_eq!(
        metrics.spool_oldest_timestamp(),
        ts(3),
        "a later append is newer"
    );
    // Confirm the first record only: the next one is the oldest once read.
    let mut batch = spool.next_batch().await.unwrap().unwrap();
    assert_eq!(metrics.spool_oldest_timestamp(), ts(3));
    batch.truncate(1);
    spool.confirm(&batch).await;
    assert_eq!(
        metrics.spool_oldest_timestamp(),
        ts(3),
        "no later than the next"
    );
    let batch = spool.next_batch().await.unwrap().unwrap();
    assert_eq!(metrics.spool_oldest_timestamp(), ts(4));
    spool.confirm(&batch).await;
    assert_eq!(metrics.spool_oldest_timestamp(), None, "drained");
    spool.append(&[msg(7), msg(8)]).await.unwrap();
    assert_eq!(
        metrics.spool_oldest_timestamp(),
        ts(7),
        "empty, then appended"
    );
    let mut batch = spool.next_batch().await.unwrap().unwrap();
    batch.truncate(1);
    spool.confirm(&batch).await;
    drop(spool);
    tokio::time::sleep(Duration::from_millis(50)).await;
    // On open, from the scan: the first record after the cursor.
    let metrics = Metrics::new().unwrap();
    let spool = Spool::open(&config(tmp.path(), 1 << 30), metrics.clone()).unwrap();
    assert_eq!(spool.pending_events(), 1);
    assert_eq!(metrics.spool_oldest_timestamp(), ts(8));
    assert_eq!(drain_all(&spool).await, ["id-8"]);
    assert_eq!(metrics.spool_oldest_timestamp(), None);
}

#[tokio::test]
async fn an_event_too_large_for_a_record_is_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let metrics = Metrics::new().unwrap();
    let spool = Spool::open(&config(tmp.path(), 1 << 30), metrics).unwrap();
    let mut big = msg(1);
    big.body = vec![b'x'; RECORD_MAX as usize];
    let batch = vec![msg(0), big];
    assert!(matches!(
        spool.append(&batch).await,
        Err(SpoolError::TooLarge { .. })
    ));
    assert_eq!(
        spool.pending_events(),
        0,
        "nothing of the batch was written"
    );
    let mut long_key = msg(2);
    long_key.routing_key = "k".repeat(70_000);
    assert!(spool.append(&[long_key]).await.is_err());
    // The largest body that fits is written and read back.
    let mut largest = msg(3);
    largest.body = vec![b'y'; RECORD_MAX as usize - 64 - largest.id.len() - largest.source.len()];
    assert!(fits_in_record(&largest));
    spool.append(&[largest]).await.unwrap();
    assert_eq!(spool.pending_events(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_fsyncs() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = Spool::open(&config(tmp.path(), 1 << 30), Metrics::new().unwrap()).unwrap();
    let n = 400;
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let spool = Arc::clone(&spool);
            tokio::spawn(async move { spool.append(&[msg(i)]).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let commits = spool.commits();
    eprintln!("{n} concurrent appends, {commits} fsyncs");
    assert_eq!(spool.pending_events(), n as u64);
    assert!(commits < n as u64, "{commits} fsyncs for {n} appends");
}

fn segment_files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.to_string_lossy().ends_with(suffix))
        .collect();
    v.sort();
    v
}

/// Drain everything readable, confirming each batch; the message ids in order.
async fn drain_all(spool: &Spool) -> Vec<String> {
    let mut ids = Vec::new();
    while let Some(batch) = spool.next_batch().await.unwrap() {
        ids.extend(batch.messages().into_iter().map(|m| m.id));
        spool.confirm(&batch).await;
    }
    ids
}

/// A spool with `n` records (one append each) in one segment, closed again; the segment.
async fn spool_with(dir: &Path, n: usize) -> PathBuf {
    let spool = Spool::open(&config(dir, 1 << 30), Metrics::new().unwrap()).unwrap();
    for i in 0..n {
        spool.append(&[msg(i)]).await.unwrap();
    }
    drop(spool);
    tokio::time::sleep(Duration::from_millis(50)).await;
    segment_files(dir, ".seg")
        .into_iter()
        .find(|p| fs::metadata(p).unwrap().len() > 0)
        .unwrap()
}

fn record_starts(path: &Path) -> Vec<u64> {
    record::scan(&fs::read(path).unwrap())
        .records
        .iter()
        .map(|r| r.offset)
        .collect()
}

#[tokio::test]
async fn a_damaged_record_loses_that_record_only_and_the_segment_is_set_aside() {
    let tmp = tempfile::tempdir().unwrap();
    let seg = spool_with(tmp.path(), 10).await;
    let starts = record_starts(&seg);
    let mut bytes = fs::read(&seg).unwrap();
    let at = starts[4] as usize + 8;
    bytes[at..at + 16].fill(0);
    fs::write(&seg, &bytes).unwrap();

    let metrics = Metrics::new().unwrap();
    let spool = Spool::open(&config(tmp.path(), 1 << 30), metrics.clone()).unwrap();
    assert_eq!(spool.pending_events(), 9);
    assert_eq!(metrics.spool_damaged_records_total.get(), 1);
    let ids = drain_all(&spool).await;
    let expected: Vec<String> = (0..10)
        .filter(|&i| i != 4)
        .map(|i| format!("id-{i}"))
        .collect();
    assert_eq!(ids, expected);
    assert_eq!(spool.pending_events(), 0);
    assert_eq!(metrics.spool_events.get(), 0);
    assert_eq!(metrics.spool_bytes.get(), 0);
    // Retired when the writer moves on: set aside, not deleted.
    spool.append(&[msg(10)]).await.unwrap();
    assert_eq!(drain_all(&spool).await, vec!["id-10".to_string()]);
    assert!(!seg.exists());
    let kept = segment_files(tmp.path(), ".seg.damaged");
    assert_eq!(kept.len(), 1);
    assert_eq!(fs::read(&kept[0]).unwrap(), bytes, "kept as it was");
    assert_eq!(metrics.spool_damaged_segments_total.get(), 1);
}

#[tokio::test]
async fn damage_found_while_draining_loses_that_record_only() {
    let tmp = tempfile::tempdir().unwrap();
    let metrics = Metrics::new().unwrap();
    let spool = Spool::open(&config(tmp.path(), 1 << 30), metrics.clone()).unwrap();
    for i in 0..6 {
        spool.append(&[msg(i)]).await.unwrap();
    }
    let seg = segment_path(tmp.path(), spool.shared.lock().active);
    let starts = record_starts(&seg);
    let mut f = OpenOptions::new().write(true).open(&seg).unwrap();
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(starts[2] + 20)).unwrap();
    std::io::Write::write_all(&mut f, &[0xAA; 8]).unwrap();
    drop(f);
    let ids = drain_all(&spool).await;
    assert_eq!(ids, ["id-0", "id-1", "id-3", "id-4", "id-5"]);
    assert_eq!(spool.pending_events(), 0);
    assert_eq!(metrics.spool_bytes.get(), 0);
    assert_eq!(metrics.spool_damaged_records_total.get(), 1);
}

#[tokio::test]
async fn a_cursor_into_a_damaged_region_resumes_after_it() {
    let tmp = tempfile::tempdir().unwrap();
    let seg = spool_with(tmp.path(), 10).await;
    let starts = record_starts(&seg);
    let id: u64 = seg.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    let at = starts[5] as usize;
    bytes[at..at + 64].fill(0);
    fs::write(&seg, &bytes).unwrap();
    // Records 0..5 were confirmed; the cursor names record 5, which is now damaged.
    files::write_cursor(
        tmp.path(),
        Cursor {
            segment: id,
            offset: starts[5] + 3,
        },
    )
    .unwrap();
    let spool = Spool::open(&config(tmp.path(), 1 << 30), Metrics::new().unwrap()).unwrap();
    assert_eq!(spool.pending_events(), 4);
    assert_eq!(drain_all(&spool).await, ["id-6", "id-7", "id-8", "id-9"]);
}

#[tokio::test]
async fn a_cursor_that_names_no_record_boundary_replays_instead_of_skipping() {
    let tmp = tempfile::tempdir().unwrap();
    let seg = spool_with(tmp.path(), 5).await;
    let starts = record_starts(&seg);
    let id: u64 = seg.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    files::write_cursor(
        tmp.path(),
        Cursor {
            segment: id,
            offset: starts[3] + 1,
        },
    )
    .unwrap();
    let spool = Spool::open(&config(tmp.path(), 1 << 30), Metrics::new().unwrap()).unwrap();
    assert_eq!(spool.pending_events(), 5);
    assert_eq!(drain_all(&spool).await.len(), 5);
}

#[tokio::test]
async fn segment_ids_go_past_the_one_a_stale_cursor_names() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("cursor"), "3 0\n").unwrap();
    // Three starts with appends and no confirm: the ids must never reach 3 from below.
    for round in 0..3 {
        let spool = Spool::open(&config(tmp.path(), 1 << 30), Metrics::new().unwrap()).unwrap();
        assert!(spool.shared.lock().active > 3, "round {round}");
        spool.append(&[msg(round)]).await.unwrap();
        drop(spool);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let spool = Spool::open(&config(tmp.path(), 1 << 30), Metrics::new().unwrap()).unwrap();
    assert_eq!(spool.pending_events(), 3);
    assert_eq!(drain_all(&spool).await, ["id-0", "id-1", "id-2"]);
}

#[tokio::test]
async fn a_format_1_spool_is_read_and_marked_format_2() {
    let tmp = tempfile::tempdir().unwrap();
    let mut bytes = Vec::new();
    for i in 0..4 {
        record::encode_record_v1(&msg(i), &mut bytes);
    }
    fs::write(segment_path(tmp.path(), 7), &bytes).unwrap();
    fs::write(tmp.path().join("cursor"), "7 0\n").unwrap();
    let spool = Spool::open(&config(tmp.path(), 1 << 30), Metrics::new().unwrap()).unwrap();
    assert_eq!(spool.pending_events(), 4);
    assert_eq!(
        fs::read_to_string(tmp.path().join("format")).unwrap(),
        "2\n"
    );
    assert!(tmp.path().join(OLD_RELEASE_GUARD).is_dir());
    spool.append(&[msg(4)]).await.unwrap();
    assert_eq!(
        drain_all(&spool).await,
        ["id-0", "id-1", "id-2", "id-3", "id-4"]
    );
}

#[test]
fn a_spool_of_a_newer_format_is_refused_and_left_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("format"), "3\n").unwrap();
    fs::write(segment_path(tmp.path(), 1), b"future bytes").unwrap();
    let before = fs::read_dir(tmp.path()).unwrap().count();
    let err = Spool::open(&config(tmp.path(), 1 << 30), Metrics::new().unwrap())
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            SpoolError::NewerFormat {
                found: 3,
                supported: 2
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("newer than this release reads"));
    let after = fs::read_dir(tmp.path()).unwrap().count();
    assert_eq!(before, after, "no file created");
    assert_eq!(
        fs::read(segment_path(tmp.path(), 1)).unwrap(),
        b"future bytes"
    );
    fs::write(tmp.path().join("format"), "two\n").unwrap();
    assert!(matches!(
        Spool::open(&config(tmp.path(), 1 << 30), Metrics::new().unwrap()),
        Err(SpoolError::BadFormatFile { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_whose_caller_gave_up_is_not_written() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = Spool::open(&config(tmp.path(), 1 << 30), Metrics::new().unwrap()).unwrap();
    // Hold the state lock: the writer takes the append but cannot admit it yet.
    let shared = Arc::clone(&spool.shared);
    let holder = std::thread::spawn(move || {
        let _st = shared.lock();
        std::thread::sleep(Duration::from_millis(300));
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let gave_up = tokio::time::timeout(Duration::from_millis(50), spool.append(&[msg(0)])).await;
    assert!(gave_up.is_err());
    holder.join().unwrap();
    spool.append(&[msg(1)]).await.unwrap();
    assert_eq!(spool.pending_events(), 1);
    assert_eq!(drain_all(&spool).await, ["id-1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_over_the_queue_budget_are_refused_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = SpoolConfig {
        queue_max_bytes: 4096,
        ..config(tmp.path(), 1 << 30)
    };
    let spool = Spool::open(&cfg, Metrics::new().unwrap()).unwrap();
    let big = |i: usize| Message {
        body: vec![b'x'; 3000],
        ..msg(i)
    };
    let shared = Arc::clone(&spool.shared);
    let holder = std::thread::spawn(move || {
        let _st = shared.lock();
        std::thread::sleep(Duration::from_millis(400));
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let s1 = Arc::clone(&spool);
    let first = tokio::spawn(async move { s1.append(&[big(0)]).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let s2 = Arc::clone(&spool);
    let second = tokio::spawn(async move { s2.append(&[big(1)]).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = std::time::Instant::now();
    let third = spool.append(&[big(2)]).await;
    assert!(matches!(third, Err(SpoolError::Busy { .. })), "{third:?}");
    assert!(started.elapsed() < Duration::from_millis(100), "at once");
    holder.join().unwrap();
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();
    assert_eq!(spool.pending_events(), 2);
    assert_eq!(spool.shared.queued.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_drained_spool_is_released_for_any_release_and_refuses_appends_after() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = Spool::open(&config(tmp.path(), 1 << 30), Metrics::new().unwrap()).unwrap();
    spool.append(&[msg(0)]).await.unwrap();
    assert!(!spool.release_if_drained().unwrap(), "an event is pending");
    assert!(tmp.path().join("format").exists());
    assert_eq!(drain_all(&spool).await.len(), 1);
    assert!(spool.release_if_drained().unwrap());
    let left: Vec<String> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["lock"]);
    assert!(matches!(
        spool.append(&[msg(1)]).await,
        Err(SpoolError::Stopped)
    ));
}

#[tokio::test]
async fn full_spool_refuses_and_is_not_accepting() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = Spool::open(&config(tmp.path(), 4096), Metrics::new().unwrap()).unwrap();
    let mut refused = false;
    for i in 0..100 {
        match spool.append(&[msg(i)]).await {
            Ok(()) => {}
            Err(SpoolError::Full { .. }) => {
                refused = true;
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(refused);
    assert!(!spool.accepting());
}
