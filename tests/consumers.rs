//! The example workers of `examples/consumers/` end to end against the real broker: provider
//! samples go through the bridge to the worker, whose effect (the store it appends one line per
//! processed event to) is checked; a poison message ends in the dead-letter queue after the
//! delivery limit instead of looping; a duplicate (same `message_id`, while running and after a
//! restart) is acknowledged without being processed again.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::*;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeleteOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);
const DELIVERY_LIMIT: usize = 2;
const BINDINGS: [&str; 2] = ["*.order.status_changed", "*.shipment.status_changed"];

#[derive(Debug, Clone, Copy)]
enum Kind {
    Python,
    Rust,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The command that runs the example worker of `kind`.
fn worker_command(kind: Kind) -> Command {
    match kind {
        Kind::Python => {
            let pika = Command::new("python3")
                .args(["-c", "import pika"])
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                pika,
                "python3 with pika is needed: pip install -r examples/consumers/python/requirements.txt \
                 (scripts/test installs it)"
            );
            let mut cmd = Command::new("python3");
            cmd.arg(repo().join("examples/consumers/python/worker.py"));
            cmd
        }
        Kind::Rust => Command::new(rust_example()),
    }
}

/// Build the `consumer` example (a no-op when it is fresh) into this test's own target directory
/// and profile, and return its path.
fn rust_example() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    // <target>/<profile>/deps/consumers-<hash>
    let profile_dir = exe.parent().and_then(Path::parent).expect("profile dir");
    let target_dir = profile_dir.parent().expect("target dir");
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["build", "--quiet", "--example", "consumer", "--target-dir"])
        .arg(target_dir)
        .current_dir(repo());
    // The variables cargo sets for a running test are not a build's: some build scripts rerun
    // when one changes (ring watches CARGO_MANIFEST_DIR), which would rebuild half the tree here
    // and again in the next `cargo test`.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let per_test = [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
        ]
        .iter()
        .any(|p| key.starts_with(p))
            || [
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
            ]
            .contains(&key.as_ref());
        if per_test {
            cmd.env_remove(key.as_ref());
        }
    }
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("cargo build --example consumer");
    assert!(status.success(), "cargo build --example consumer failed");
    profile_dir.join("examples/consumer")
}

/// A running example worker with its own quorum queue, dead-letter exchange and queue, and
/// store; killed and its queues deleted on drop.
struct Worker {
    kind: Kind,
    child: Option<Child>,
    queue: String,
    store: PathBuf,
    log: PathBuf,
    env: Vec<(String, String)>,
}

impl Worker {
    async fn start(kind: Kind, exchange: &str, dir: &Path) -> Worker {
        let queue = unique("wbt-worker");
        let env = vec![
            ("AMQP_URL".to_string(), AMQP_URL.to_string()),
            ("EXCHANGE".to_string(), exchange.to_string()),
            ("QUEUE".to_string(), queue.clone()),
            ("BINDINGS".to_string(), BINDINGS.join(",")),
            ("PREFETCH".to_string(), "5".to_string()),
            ("DELIVERY_LIMIT".to_string(), DELIVERY_LIMIT.to_string()),
            (
                "STORE".to_string(),
                dir.join("processed.jsonl").display().to_string(),
            ),
        ];
        let mut worker = Worker {
            kind,
            child: None,
            queue,
            store: dir.join("processed.jsonl"),
            log: dir.join("worker.log"),
            env,
        };
        worker.spawn().await;
        worker
    }

    /// Start the process and wait for its `ready` line (queue declared, bound, consuming).
    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("worker log");
        let readies = self.log().matches("ready queue=").count();
        let mut cmd = worker_command(self.kind);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        self.child = Some(cmd.spawn().expect("spawn worker"));
        self.wait_log(|l| l.matches("ready queue=").count() > readies, "ready")
            .await;
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_log(&self, done: impl Fn(&str) -> bool, what: &str) {
        let end = Instant::now() + WAIT;
        while Instant::now() < end {
            if done(&self.log()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "{:?} worker: no {what} in time; log:\n{}",
            self.kind,
            self.log()
        );
    }

    /// The store: one row per processed event.
    fn processed(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.store)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("store line is JSON"))
            .collect()
    }

    /// SIGTERM, then wait (10 s at most) for a clean exit.
    async fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("worker running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().expect("wait worker") {
                return status;
            }
            if Instant::now() > end {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{:?} worker did not stop on SIGTERM; log:\n{}",
                    self.kind,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let queue = self.queue.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), delete_worker_topology(&queue))
                        .await;
            });
        })
        .join();
    }
}

async fn delete_worker_topology(queue: &str) {
    let Ok(conn) = Connection::connect(AMQP_URL, ConnectionProperties::default()).await else {
        return;
    };
    for q in [queue.to_string(), format!("{queue}.dead")] {
        if let Ok(ch) = conn.create_channel().await {
            let _ = ch
                .queue_delete(ShortString::from(q.as_str()), QueueDeleteOptions::default())
                .await;
        }
    }
    if let Ok(ch) = conn.create_channel().await {
        let _ = ch
            .exchange_delete(
                ShortString::from(format!("{queue}.dlx").as_str()),
                ExchangeDeleteOptions::default(),
            )
            .await;
    }
    let _ = conn.close(200, ShortString::from("bye")).await;
}

/// Topic matching for the patterns above (`*` = one word).
fn bound(routing_key: &str) -> bool {
    BINDINGS.iter().any(|pattern| {
        let p: Vec<&str> = pattern.split('.').collect();
        let k: Vec<&str> = routing_key.split('.').collect();
        p.len() == k.len() && p.iter().zip(&k).all(|(p, k)| *p == "*" || p == k)
    })
}

/// Post a bundled sample to the standard endpoint of its provider; the events it was accepted as.
async fn post_sample(bridge: &Bridge, provider: &str, body: &[u8]) -> u64 {
    let fixture = common::fixtures::Fixture::of(provider).expect("a standard endpoint");
    let (path, secret) = (fixture.path, fixture.secret);
    let resp = bridge.post_signed(provider, path, secret, body).await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.expect("answer");
    answer["accepted"].as_u64().expect("accepted")
}

/// A message no worker can process (its body is not a CloudEvent), published straight to the
/// exchange with a routing key the worker is bound to.
async fn publish_poison(exchange: &str, message_id: &str) {
    let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    ch.basic_publish(
        ShortString::from(exchange),
        ShortString::from("wegocod.order.status_changed"),
        BasicPublishOptions::default(),
        b"this is not a CloudEvent",
        BasicProperties::default()
            .with_message_id(ShortString::from(message_id))
            .with_delivery_mode(2),
    )
    .await
    .expect("publish")
    .await
    .expect("confirm");
    let _ = conn.close(200, ShortString::from("bye")).await;
}

async fn ready_messages(queue: &str) -> u32 {
    let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    let q = ch
        .queue_declare(
            ShortString::from(queue),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("queue exists");
    let _ = conn.close(200, ShortString::from("bye")).await;
    q.message_count()
}

async fn worker_end_to_end(kind: Kind) {
    let started = Instant::now();
    broker_available().await;
    let bridge = Bridge::start_with(BridgeOptions {
        // A provider retry outside the dedup window (or a spool replay) publishes an event again
        // with the same id: with dedup off, sending a sample twice does exactly that.
        tables: "[dedup]\nenabled = false\n".into(),
        ..BridgeOptions::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut observer = bridge.consumer("#").await;
    let mut worker = Worker::start(kind, &bridge.exchange, dir.path()).await;

    let sends: [(&str, &[u8]); 8] = [
        ("wegocod", webhook_bridge::providers::wegocod::DELIVERED),
        (
            "modexpress",
            webhook_bridge::providers::modexpress::IN_PROGRESS,
        ),
        ("peddler", webhook_bridge::providers::peddler::CONFIRMED),
        (
            "peddler",
            webhook_bridge::providers::peddler::OUT_FOR_DELIVERY,
        ),
        ("isendu", webhook_bridge::providers::isendu::BATCH),
        (
            "mailship",
            webhook_bridge::providers::mailship::EXPEDITION_STATUS,
        ),
        (
            "mailship",
            webhook_bridge::providers::mailship::PRODUCT_STOCK,
        ),
        (
            "mailship",
            webhook_bridge::providers::mailship::STOCK_ADVICE,
        ),
    ];
    let mut published = 0;
    for (provider, body) in sends {
        published += post_sample(&bridge, provider, body).await;
    }
    let poison = format!("poison-{}", unique("m"));
    publish_poison(&bridge.exchange, &poison).await;

    // What the bridge published, seen by a queue bound to everything.
    let all = observer.take(published as usize + 1, WAIT).await;
    let events: BTreeMap<String, Received> = all
        .into_iter()
        .filter(|m| m.message_id.as_deref() != Some(poison.as_str()))
        .map(|m| (m.message_id.clone().expect("message_id"), m))
        .collect();
    let wanted: BTreeSet<String> = events
        .iter()
        .filter(|(_, m)| bound(&m.routing_key))
        .map(|(id, _)| id.clone())
        .collect();
    assert!(wanted.len() >= 6, "{wanted:?}");
    assert!(wanted.len() < events.len(), "some events are not bound");

    // Every bound event processed once, each with what its message said.
    let end = Instant::now() + WAIT;
    while worker.processed().len() < wanted.len() && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rows = worker.processed();
    let ids: BTreeSet<String> = rows
        .iter()
        .map(|r| r["message_id"].as_str().expect("message_id").to_string())
        .collect();
    assert_eq!(ids, wanted, "{:?} worker log:\n{}", kind, worker.log());
    assert_eq!(rows.len(), ids.len(), "each event processed once");
    for row in &rows {
        let m = &events[row["message_id"].as_str().unwrap()];
        assert_eq!(row["routing_key"], m.routing_key.as_str());
        assert_eq!(row["status"], m.body["data"]["status"]);
        assert_eq!(row["entity_id"], m.body["data"]["entity_id"]);
    }

    // The poison message: retried up to the limit, then dead-lettered, never processed.
    let mut dead = Consumer::existing(&format!("{}.dead", worker.queue)).await;
    let d = dead
        .next(WAIT)
        .await
        .expect("poison message in the dead-letter queue");
    assert_eq!(d.message_id.as_deref(), Some(poison.as_str()));
    assert_eq!(d.routing_key, "wegocod.order.status_changed");
    let reason = d
        .headers
        .as_ref()
        .and_then(|h| h.inner().get("x-first-death-reason").cloned());
    assert!(
        matches!(&reason, Some(AMQPValue::LongString(r)) if r.as_bytes() == b"delivery_limit"),
        "{reason:?}"
    );
    let attempts = worker.log().matches(&format!("failed {poison}")).count();
    assert_eq!(attempts, DELIVERY_LIMIT + 1, "log:\n{}", worker.log());
    dead.expect_none(Duration::from_millis(300)).await;

    // A duplicate while running: the same event again, acknowledged, not processed again.
    let wegocod_id = events
        .iter()
        .find(|(_, m)| m.routing_key == "wegocod.order.status_changed")
        .map(|(id, _)| id.clone())
        .expect("wegocod event");
    assert_eq!(
        post_sample(
            &bridge,
            "wegocod",
            webhook_bridge::providers::wegocod::DELIVERED
        )
        .await,
        1
    );
    worker
        .wait_log(
            |l| l.contains(&format!("duplicate {wegocod_id}")),
            "duplicate",
        )
        .await;

    // A duplicate delivered after a restart: the store remembers it.
    let status = worker.stop().await;
    assert!(status.success(), "{status:?}; log:\n{}", worker.log());
    assert!(worker.log().contains("stopped"));
    assert_eq!(
        post_sample(
            &bridge,
            "peddler",
            webhook_bridge::providers::peddler::OUT_FOR_DELIVERY
        )
        .await,
        1
    );
    let peddler_id = events
        .iter()
        .find(|(_, m)| m.body["data"]["provider_status"] == "OUT_FOR_DELIVERY")
        .map(|(id, _)| id.clone())
        .expect("peddler event");
    let end = Instant::now() + WAIT;
    while ready_messages(&worker.queue).await == 0 && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.spawn().await;
    worker
        .wait_log(
            |l| l.contains(&format!("duplicate {peddler_id}")),
            "duplicate after restart",
        )
        .await;
    let status = worker.stop().await;
    assert!(status.success(), "{status:?}");

    assert_eq!(
        worker.processed().len(),
        wanted.len(),
        "nothing processed twice"
    );
    assert_eq!(
        ready_messages(&worker.queue).await,
        0,
        "everything acknowledged"
    );
    println!(
        "{kind:?} worker: {} of {} events processed once, poison dead-lettered after {attempts} \
         attempts, 2 duplicates acknowledged, in {:.1} s",
        wanted.len(),
        events.len(),
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test]
async fn python_worker_processes_once_and_dead_letters_poison() {
    worker_end_to_end(Kind::Python).await;
}

#[tokio::test]
async fn rust_worker_processes_once_and_dead_letters_poison() {
    worker_end_to_end(Kind::Rust).await;
}
