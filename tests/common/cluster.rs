//! The three-node RabbitMQ cluster of `scripts/cluster` (nodes `wbcN@localhost`, AMQP on
//! 127.0.0.1:568N): stopping and starting nodes, quorum consumer queues, and the bridge
//! configured with every node's URL.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use lapin::options::{
    ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Connection, ConnectionProperties};

use super::load::Report;
use super::{Bridge, BridgeOptions, Consumer, unique};

/// The bridge's default `ack_deadline`.
pub const ACK_DEADLINE: Duration = Duration::from_secs(4);

pub const NODES: [u8; 3] = [1, 2, 3];

pub fn port(node: u8) -> u16 {
    5680 + u16::from(node)
}

pub fn url(node: u8) -> String {
    format!("amqp://guest:guest@127.0.0.1:{}/%2f", port(node))
}

/// Every node's URL, node 1 first.
pub fn urls() -> Vec<String> {
    NODES.iter().map(|&n| url(n)).collect()
}

/// A bridge publishing to the cluster: every node's URL, fast reconnects, `ack_deadline` 4 s.
pub fn bridge_options() -> BridgeOptions {
    BridgeOptions {
        top: "ack_deadline = \"4s\"".into(),
        amqp_urls: urls(),
        amqp_extra: "reconnect_backoff_max = \"1s\"\nconnect_timeout = \"1s\"".into(),
        ..BridgeOptions::default()
    }
}

fn script_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/cluster")
}

fn run_script(args: &[&str]) {
    let status = std::process::Command::new(script_path())
        .args(args)
        .status()
        .expect("run scripts/cluster");
    assert!(status.success(), "scripts/cluster {args:?} failed");
}

/// `scripts/cluster ARGS` on a blocking thread; how long it took.
pub async fn script(args: &[&str]) -> Duration {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let started = Instant::now();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_script(&args);
    })
    .await
    .expect("scripts/cluster thread");
    started.elapsed()
}

/// SIGKILL a node.
pub async fn kill(node: u8) -> Duration {
    script(&["kill", &node.to_string()]).await
}

/// Start a stopped or killed node and wait until it has booted.
pub async fn start(node: u8) -> Duration {
    script(&["start", &node.to_string()]).await
}

/// One step of a rolling restart (see `scripts/cluster restart`).
pub async fn restart(node: u8) -> Duration {
    script(&["restart", &node.to_string()]).await
}

fn listening(node: u8) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port(node)));
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// Starts again, when dropped, every node a test left down, also when it panicked: the next
/// test begins with three nodes.
pub struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        for node in NODES {
            if !listening(node) {
                run_script(&["start", &node.to_string()]);
            }
        }
    }
}

/// Check the three nodes answer AMQP (starting any that does not); the guard restores them at
/// the end of the test.
pub async fn ensure_up() -> Restore {
    for node in NODES {
        if !listening(node) {
            assert!(
                script_path().exists(),
                "scripts/cluster missing: run the cluster tests from the repository"
            );
            eprintln!("node {node} is down; starting it (is the cluster up? scripts/cluster up)");
            start(node).await;
        }
    }
    for node in NODES {
        let ok = tokio::time::timeout(
            Duration::from_secs(10),
            Connection::connect(&url(node), ConnectionProperties::default()),
        )
        .await;
        assert!(
            matches!(ok, Ok(Ok(_))),
            "node {node} does not accept AMQP on port {}: run scripts/cluster up",
            port(node)
        );
    }
    Restore
}

/// A connection to the first node that answers.
pub async fn connect() -> Connection {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        for node in NODES {
            if let Ok(Ok(conn)) = tokio::time::timeout(
                Duration::from_secs(2),
                Connection::connect(&url(node), ConnectionProperties::default()),
            )
            .await
            {
                return conn;
            }
        }
        assert!(Instant::now() < end, "no cluster node answers");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A durable quorum queue (replicated on every node) bound to `exchange` with `pattern`.
pub async fn quorum_queue(exchange: &str, pattern: &str) -> String {
    let queue = unique("wbt-cq");
    let conn = connect().await;
    let ch = conn.create_channel().await.expect("channel");
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("x-queue-type"),
        AMQPValue::LongString("quorum".into()),
    );
    ch.queue_declare(
        ShortString::from(queue.as_str()),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        args,
    )
    .await
    .expect("declare quorum queue");
    ch.queue_bind(
        ShortString::from(queue.as_str()),
        ShortString::from(exchange),
        ShortString::from(pattern),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind quorum queue (is the exchange declared?)");
    let _ = conn.close(200, ShortString::from("bye")).await;
    queue
}

/// A consumer on an existing queue, through the first node that answers.
pub async fn consumer(queue: &str) -> Consumer {
    let conn = connect().await;
    let channel = conn.create_channel().await.expect("channel");
    Consumer::consume(conn, channel, queue.to_string()).await
}

/// Delete `queues`, then `exchange` with its alternate exchange and unrouted queue.
pub async fn delete(exchange: &str, queues: &[&str]) {
    let conn = connect().await;
    let unrouted = format!("{exchange}.unrouted");
    for queue in queues.iter().copied().chain([unrouted.as_str()]) {
        if let Ok(ch) = conn.create_channel().await {
            let _ = ch
                .queue_delete(ShortString::from(queue), QueueDeleteOptions::default())
                .await;
        }
    }
    for name in [exchange, unrouted.as_str()] {
        if let Ok(ch) = conn.create_channel().await {
            let _ = ch
                .exchange_delete(ShortString::from(name), ExchangeDeleteOptions::default())
                .await;
        }
    }
    let _ = conn.close(200, ShortString::from("bye")).await;
}

/// The AMQP port of the node the bridge connected to last, from its log.
pub fn connected_port(bridge: &Bridge) -> Option<u16> {
    let logs = bridge.logs();
    let line = logs
        .lines()
        .rev()
        .find(|l| l.contains("connected to broker"))?;
    let at = line.find("@127.0.0.1:")? + "@127.0.0.1:".len();
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Seconds as `1.23 s`, for the reports.
pub fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// Sum of a labelled counter's lines whose labels contain `filter` (e.g. `outcome="published"`).
pub fn counter_sum(metrics: &str, name: &str, filter: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{') && l.contains(filter))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Samples the bridge's metrics every 100 ms until `stop` turns true: one line per second of
/// events published and spooled in that second, connected or not, spool size.
pub async fn timeline(bridge: &Bridge, stop: tokio::sync::watch::Receiver<bool>) -> String {
    let started = Instant::now();
    let mut out = String::new();
    let mut last = (0.0, 0.0);
    let mut next = Duration::from_secs(1);
    let mut worst = (String::from("1"), 0.0);
    while !*stop.borrow() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Ok(resp) = bridge.client.get(bridge.admin_url("/metrics")).send().await else {
            continue;
        };
        let m = resp.text().await.unwrap_or_default();
        let connected = super::load::metric(&m, "webhook_bridge_amqp_connected").unwrap_or(0.0);
        let spool = super::load::metric(&m, "webhook_bridge_spool_events").unwrap_or(0.0);
        if connected < 1.0 {
            worst.0 = "0".into();
        }
        worst.1 = f64::max(worst.1, spool);
        if started.elapsed() >= next {
            let published = counter_sum(&m, "webhook_bridge_events_total", "outcome=\"published\"");
            let spooled = counter_sum(&m, "webhook_bridge_events_total", "outcome=\"spooled\"");
            let failures: Vec<String> = m
                .lines()
                .filter(|l| l.starts_with("webhook_bridge_publish_failures_total{"))
                .filter(|l| !l.ends_with(" 0"))
                .map(|l| {
                    l.trim_start_matches("webhook_bridge_publish_failures_total")
                        .to_string()
                })
                .collect();
            out.push_str(&format!(
                "{:>3}s published {:>4} spooled {:>4} connected {} spool {:>4} {}\n",
                next.as_secs(),
                published - last.0,
                spooled - last.1,
                worst.0,
                worst.1,
                failures.join(" ")
            ));
            last = (published, spooled);
            worst = (connected.to_string(), spool);
            next += Duration::from_secs(1);
        }
    }
    out
}

/// The AMQPS port of a node (`scripts/cluster`: verify_peer, a client certificate required).
pub fn amqps_port(node: u8) -> u16 {
    5690 + u16::from(node)
}

/// Where `scripts/cluster up` keeps its test CA (`ca.pem`, `ca.key`) and the nodes' server
/// certificate.
pub fn tls_dir() -> PathBuf {
    let base = std::env::var_os("WB_CLUSTER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("TMPDIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/tmp"))
                .join("webhook-bridge-cluster")
        });
    base.join("tls")
}

/// `rabbitmqctl -q -n wbcN@localhost ARGS` on a blocking thread; its stdout. Panics when it
/// fails.
pub async fn ctl(node: u8, args: &[&str]) -> String {
    let mut full = vec![
        "-q".to_string(),
        "-n".into(),
        format!("wbc{node}@localhost"),
    ];
    full.extend(args.iter().map(|s| s.to_string()));
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("rabbitmqctl")
            .args(&full)
            .output()
            .expect("run rabbitmqctl");
        assert!(
            out.status.success(),
            "rabbitmqctl {full:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .await
    .expect("rabbitmqctl thread")
}

/// Every request answered 2xx before the bridge's `ack_deadline` (4 s), none 5xx.
pub fn assert_all_answered(tag: &str, report: &Report, n: usize) {
    assert_eq!(report.answers.len(), n, "{tag}");
    assert_eq!(
        report.count(|a| a.status.is_none()),
        0,
        "{tag}: every request answered: {}",
        report.summary()
    );
    assert_eq!(
        report.server_errors(),
        0,
        "{tag}: no 5xx while the spool has room: {}",
        report.summary()
    );
    assert_eq!(
        report.ok(),
        n,
        "{tag}: every request 2xx: {}",
        report.summary()
    );
    assert!(
        report.max_latency() < ACK_DEADLINE,
        "{tag}: answered before ack_deadline: {}",
        report.summary()
    );
}

/// Every acknowledged event is in `queue`; prints the counts.
pub async fn assert_arrived(tag: &str, queue: &str, acked: &HashSet<String>) {
    let mut consumer = consumer(queue).await;
    let started = Instant::now();
    let (seen, messages) =
        super::load::collect(&mut consumer, acked, Duration::from_secs(30)).await;
    eprintln!(
        "{tag}: events acknowledged={} arrived distinct={} (messages read {messages}, in {})",
        acked.len(),
        seen.intersection(acked).count(),
        secs(started.elapsed())
    );
    let missing: Vec<_> = acked.difference(&seen).take(5).collect();
    assert!(
        missing.is_empty(),
        "{tag}: acknowledged events lost, e.g. {missing:?}"
    );
}
