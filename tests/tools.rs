//! The operator tools, through the real binary against the real broker: `tail` prints what the
//! bridge publishes without taking anything from consumers' queues, and `unrouted replay` moves
//! parked messages back to the exchange exactly once, keeps what is still unroutable, and
//! changes nothing with `--dry-run`.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use lapin::options::{QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Connection, ConnectionProperties};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_webhook-bridge"))
}

/// A `webhook-bridge tail` process; its stdout and stderr lines arrive on channels. Killed on
/// drop.
struct Tail {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    log: Vec<String>,
    /// The temporary queue it said it declared.
    queue: String,
}

fn lines_of(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Tail {
    /// Start `tail` with `args` against the bridge's config and wait until its queue is bound.
    fn start(bridge: &Bridge, args: &[&str]) -> Tail {
        let mut child = binary()
            .args(["--log-format", "json", "tail", "--config"])
            .arg(&bridge.config_path)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tail");
        let stdout = lines_of(child.stdout.take().expect("stdout"));
        let stderr = lines_of(child.stderr.take().expect("stderr"));
        let mut tail = Tail {
            child,
            stdout,
            stderr,
            log: Vec::new(),
            queue: String::new(),
        };
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            let Ok(line) = tail.stderr.recv_timeout(Duration::from_millis(100)) else {
                continue;
            };
            tail.log.push(line.clone());
            let Ok(entry) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if entry["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("tail: listening"))
            {
                tail.queue = entry["queue"].as_str().expect("queue").to_string();
                return tail;
            }
        }
        panic!(
            "tail did not bind its queue; stderr:\n{}",
            tail.log.join("\n")
        );
    }

    /// Exactly `n` stdout lines, each within `timeout` of the previous one.
    fn lines(&mut self, n: usize, timeout: Duration) -> Vec<String> {
        (0..n)
            .map(|i| {
                self.stdout.recv_timeout(timeout).unwrap_or_else(|_| {
                    panic!(
                        "tail printed {i} lines of {n}; stderr:\n{}",
                        self.stderr.try_iter().collect::<Vec<_>>().join("\n")
                    )
                })
            })
            .collect()
    }

    fn expect_no_line(&mut self, wait: Duration) {
        if let Ok(line) = self.stdout.recv_timeout(wait) {
            panic!("unexpected line from tail: {line}");
        }
    }

    /// SIGTERM, then the exit status (within 10 s).
    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < end, "tail did not exit on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run `webhook-bridge unrouted replay` with `args` against `config`.
async fn replay(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_webhook-bridge"))
        .args(["unrouted", "replay", "--config"])
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .output()
        .await
        .expect("run unrouted replay")
}

fn text(out: &std::process::Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Messages ready in `queue`, from a passive declare.
async fn ready(queue: &str) -> u32 {
    let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    let n = ch
        .queue_declare(
            ShortString::from(queue),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("the queue exists")
        .message_count();
    let _ = conn.close(200, ShortString::from("bye")).await;
    n
}

/// Wait until `queue` holds `n` ready messages (requeues and routing are asynchronous).
async fn wait_ready(queue: &str, n: u32) {
    let end = Instant::now() + WAIT;
    let mut last = ready(queue).await;
    while last != n && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
        last = ready(queue).await;
    }
    assert_eq!(last, n, "messages ready in {queue}");
}

/// Whether a queue of that name exists.
async fn queue_exists(queue: &str) -> bool {
    let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    let found = ch
        .queue_declare(
            ShortString::from(queue),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .is_ok();
    let _ = conn.close(200, ShortString::from("bye")).await;
    found
}

/// Post bundled samples to the standard endpoints; the number of events accepted.
async fn post_samples(bridge: &Bridge, samples: &[(&str, &[u8])]) -> usize {
    let mut accepted = 0;
    for (provider, body) in samples {
        let fixture = fixtures::Fixture::of(provider).expect("a standard endpoint");
        let resp = bridge
            .post_signed(provider, fixture.path, fixture.secret, body)
            .await;
        assert_eq!(resp.status(), 200, "{provider}");
        let answer: Value = resp.json().await.expect("JSON answer");
        accepted += answer["accepted"]
            .as_u64()
            .unwrap_or_else(|| panic!("{provider}: {answer}")) as usize;
    }
    accepted
}

const SAMPLES: [(&str, &[u8]); 5] = [
    ("wegocod", webhook_bridge::providers::wegocod::DELIVERED),
    (
        "modexpress",
        webhook_bridge::providers::modexpress::IN_PROGRESS,
    ),
    ("peddler", webhook_bridge::providers::peddler::CONFIRMED),
    // One order and two tracking events.
    ("isendu", webhook_bridge::providers::isendu::BATCH),
    (
        "mailship",
        webhook_bridge::providers::mailship::STOCK_ADVICE,
    ),
];

/// What the bridge publishes always carries these, and a moved message must still.
fn assert_bridge_properties(m: &Received) {
    let id = m.body["id"].as_str().expect("CloudEvent id");
    assert_eq!(m.message_id.as_deref(), Some(id), "{}", m.routing_key);
    assert_eq!(m.kind.as_deref(), Some(m.routing_key.as_str()));
    assert_eq!(m.body["type"], m.routing_key.as_str());
    assert_eq!(m.delivery_mode, Some(2));
    assert_eq!(
        m.content_type.as_deref(),
        Some("application/cloudevents+json")
    );
    assert_eq!(m.app_id.as_deref(), Some("webhook-bridge"));
    assert!(m.timestamp.is_some());
    assert_eq!(header_str(m, "cloudEvents_id").as_deref(), Some(id));
    assert_eq!(
        header_str(m, "cloudEvents_type").as_deref(),
        Some(m.routing_key.as_str())
    );
    assert_eq!(
        header_str(m, "cloudEvents_source").as_deref(),
        m.body["source"].as_str()
    );
}

#[tokio::test]
async fn tail_prints_every_event_and_consumers_still_get_every_one() {
    broker_available().await;
    let bridge = Bridge::start().await;
    // A real consumer's queue, acking as it goes.
    let mut consumer = bridge.consumer("#").await;
    let mut everything = Tail::start(&bridge, &["--json", "--routing-key", "#"]);
    let mut narrow = Tail::start(
        &bridge,
        &[
            "--routing-key",
            "wegocod.#",
            "--routing-key",
            "*.shipment.status_changed",
        ],
    );

    let n = post_samples(&bridge, &SAMPLES).await;
    assert_eq!(n, 7);

    // The consumer gets every message, once: tail took none of them.
    let received = consumer.take(n, WAIT).await;
    consumer.expect_none(Duration::from_millis(500)).await;
    let by_id: BTreeMap<String, Received> = received
        .into_iter()
        .map(|m| (m.message_id.clone().expect("message_id"), m))
        .collect();
    assert_eq!(by_id.len(), n, "distinct messages");

    // `--json`: each message's body, one line each.
    let printed = everything.lines(n, WAIT);
    everything.expect_no_line(Duration::from_millis(300));
    let mut seen = BTreeSet::new();
    for line in &printed {
        let body: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let id = body["id"].as_str().expect("id").to_string();
        let original = by_id
            .get(&id)
            .unwrap_or_else(|| panic!("tail printed {id}, which the consumer never got"));
        assert_eq!(body, original.body, "tail prints the body as published");
        assert!(seen.insert(id), "printed twice: {line}");
    }
    // The isendu sample is pretty-printed: its payload had line breaks, the line has none.
    assert!(
        printed
            .iter()
            .any(|l| l.contains(r#""payload":{"uuid":"c41d7e58"#))
    );

    // Patterns: only WeGoCOD and shipment status changes (Peddler's one, isendu's two), one
    // summary line each: time, routing key, message_id, entity_id, status.
    let lines = narrow.lines(4, WAIT);
    narrow.expect_no_line(Duration::from_millis(300));
    let mut keys = Vec::new();
    for line in &lines {
        let cols: Vec<&str> = line.split("  ").collect();
        assert_eq!(cols.len(), 5, "{line}");
        let m = &by_id[cols[2]];
        assert_eq!(cols[0], m.body["time"], "{line}");
        assert_eq!(cols[1], m.routing_key, "{line}");
        assert_eq!(cols[3], m.body["data"]["entity_id"], "{line}");
        assert_eq!(cols[4], m.body["data"]["status"], "{line}");
        keys.push(cols[1].to_string());
    }
    keys.sort();
    assert_eq!(
        keys,
        [
            "isendu.shipment.status_changed",
            "isendu.shipment.status_changed",
            "peddler.shipment.status_changed",
            "wegocod.order.status_changed",
        ]
    );
    assert!(
        lines.iter().any(|l| l
            == &format!(
                "2026-05-09T12:00:00+02:00  wegocod.order.status_changed  {}  ORD-000129  delivered",
                by_id
                    .values()
                    .find(|m| m.routing_key.starts_with("wegocod"))
                    .and_then(|m| m.message_id.clone())
                    .expect("wegocod message")
            )),
        "{lines:#?}"
    );

    // SIGTERM ends it with 0, and the broker deletes its queue.
    for tail in [&mut everything, &mut narrow] {
        let status = tail.terminate();
        assert!(status.success(), "{status}: {}", tail.log.join("\n"));
        assert!(!queue_exists(&tail.queue).await, "{} is gone", tail.queue);
    }
    bridge.cleanup().await;
}

#[tokio::test]
async fn unrouted_replay_moves_newly_bound_messages_exactly_once_and_keeps_the_rest() {
    broker_available().await;
    let bridge = Bridge::start().await;
    let unrouted = format!("{}.unrouted", bridge.exchange);
    // Nothing is bound: every event goes through the alternate exchange into the unrouted queue.
    let n = post_samples(&bridge, &SAMPLES).await;
    assert_eq!(n, 7);
    wait_ready(&unrouted, 7).await;

    // Dry run: the counts per routing key, and nothing moves.
    let out = replay(&bridge.config_path, &["--dry-run"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with(&format!(
            "{unrouted}: 7 messages at the start, 7 examined (dry run: nothing moved)\n"
        )),
        "{stdout}"
    );
    for (count, key) in [
        (2, "isendu.shipment.status_changed"),
        (1, "isendu.order.updated"),
        (1, "mailship.stock_advice.status_changed"),
        (1, "modexpress.order.status_changed"),
        (1, "peddler.shipment.status_changed"),
        (1, "wegocod.order.status_changed"),
    ] {
        assert!(
            stdout.contains(&format!("{count:>8}  {key}\n")),
            "{key}: {stdout}"
        );
    }
    wait_ready(&unrouted, 7).await;

    // The missing bindings arrive: WeGoCOD and shipment status changes.
    let mut bound = bridge.consumer("wegocod.#").await;
    bound
        .channel
        .queue_bind(
            ShortString::from(bound.queue.as_str()),
            ShortString::from(bridge.exchange.as_str()),
            ShortString::from("*.shipment.status_changed"),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");

    let out = replay(&bridge.config_path, &[]).await;
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "moved 4 to {}; 3 still unroutable and 0 left in {unrouted}",
            bridge.exchange
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("       2        2          0      0  isendu.shipment.status_changed\n"),
        "{stdout}"
    );

    // Exactly once in the bound queue, with the properties they were published with.
    let moved = bound.take(4, WAIT).await;
    bound.expect_none(Duration::from_secs(1)).await;
    let mut moved_keys: Vec<&str> = moved.iter().map(|m| m.routing_key.as_str()).collect();
    moved_keys.sort();
    assert_eq!(
        moved_keys,
        [
            "isendu.shipment.status_changed",
            "isendu.shipment.status_changed",
            "peddler.shipment.status_changed",
            "wegocod.order.status_changed",
        ]
    );
    for m in &moved {
        assert_bridge_properties(m);
    }

    // A second pass finds nothing routable: it moves nothing and ends (one pass, even though
    // each unroutable copy goes back to the end of the queue).
    wait_ready(&unrouted, 3).await;
    let out = replay(&bridge.config_path, &["--limit", "2"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with(&format!(
            "{unrouted}: 3 messages at the start, 2 examined\n"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("moved 0 to ") && stdout.contains("; 2 still unroutable and 0 left"),
        "{stdout}"
    );
    wait_ready(&unrouted, 3).await;
    bound.expect_none(Duration::from_millis(300)).await;

    // The rest is still parked, each message once, untouched.
    let mut parked = Consumer::existing(&unrouted).await;
    let rest = parked.take(3, WAIT).await;
    parked.expect_none(Duration::from_millis(500)).await;
    let mut rest_keys: Vec<&str> = rest.iter().map(|m| m.routing_key.as_str()).collect();
    rest_keys.sort();
    assert_eq!(
        rest_keys,
        [
            "isendu.order.updated",
            "mailship.stock_advice.status_changed",
            "modexpress.order.status_changed",
        ]
    );
    for m in &rest {
        assert_bridge_properties(m);
    }
    let ids: BTreeSet<&str> = moved
        .iter()
        .chain(&rest)
        .filter_map(|m| m.message_id.as_deref())
        .collect();
    assert_eq!(ids.len(), 7, "every event once, in one place or the other");
    bridge.cleanup().await;
}

#[tokio::test]
async fn unrouted_replay_without_an_alternate_exchange_leaves_returned_messages_in_place() {
    broker_available().await;
    // An exchange managed elsewhere, without an alternate exchange: the broker returns
    // unroutable messages and the bridge parks them in the unrouted queue itself, through the
    // default exchange (so their routing key there is the queue's name).
    let bridge = Bridge::start_with(BridgeOptions {
        amqp_extra: "declare_topology = false\nreconnect_backoff_max = \"500ms\"".into(),
        wait_broker: false,
        ..BridgeOptions::default()
    })
    .await;
    let unrouted = format!("{}.unrouted", bridge.exchange);
    declare_plain_exchange(&bridge.exchange).await;
    declare_unrouted_queue(&bridge.exchange).await;
    bridge.wait_connected(Duration::from_secs(20)).await;

    let n = post_samples(&bridge, &SAMPLES[..3]).await;
    assert_eq!(n, 3);
    wait_ready(&unrouted, 3).await;

    let mut bound = bridge.consumer("wegocod.#").await;
    let out = replay(&bridge.config_path, &[]).await;
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("moved 1 to ") && stdout.contains("; 2 still unroutable and 0 left"),
        "{stdout}"
    );
    // The routing key came from the `type` property: the delivered one was the queue's name.
    let moved = bound.take(1, WAIT).await;
    bound.expect_none(Duration::from_secs(1)).await;
    assert_eq!(moved[0].routing_key, "wegocod.order.status_changed");
    assert_bridge_properties(&moved[0]);

    // The returned ones were left where they were.
    wait_ready(&unrouted, 2).await;
    let mut parked = Consumer::existing(&unrouted).await;
    let rest = parked.take(2, WAIT).await;
    parked.expect_none(Duration::from_millis(500)).await;
    let kinds: BTreeSet<Option<&str>> = rest.iter().map(|m| m.kind.as_deref()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            Some("modexpress.order.status_changed"),
            Some("peddler.shipment.status_changed"),
        ])
    );
    drop(parked);

    // Without the unrouted queue there is nothing to replay from: an error, exit 1.
    let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    ch.queue_delete(
        ShortString::from(unrouted.as_str()),
        QueueDeleteOptions::default(),
    )
    .await
    .expect("delete unrouted queue");
    let out = replay(&bridge.config_path, &["--dry-run"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("error: the queue {unrouted} cannot be used")),
        "{}",
        text(&out)
    );
    let _ = conn.close(200, ShortString::from("bye")).await;
    bridge.cleanup().await;
}
