//! Test harness shared by the integration tests: start the real `webhook-bridge` binary against
//! the real local RabbitMQ with a unique exchange, send signed requests over HTTP, and consume
//! what arrived with a real AMQP consumer.
#![allow(dead_code)]

pub mod cluster;
pub mod load;
pub mod proxy;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection, ConnectionProperties};
use serde_json::Value;
use webhook_bridge::auth;
use webhook_bridge::auth::AuthConfig;
use webhook_bridge::secret::Secret;

pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The standard endpoints shared with `fuzz/` and `bench/` (one row per provider).
pub mod fixtures {
    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/endpoints.rs"
    ));
}

pub const MODEXPRESS_SECRET: &str = fixtures::MODEXPRESS.secret;
pub const WEGOCOD_SECRET: &str = fixtures::WEGOCOD.secret;
pub const PEDDLER_SECRET: &str = fixtures::PEDDLER.secret;
pub const ISENDU_TOKEN: &str = fixtures::ISENDU.secret;
pub const ISENDU_KEY_ID: &str = fixtures::ISENDU.extra[0].1;
pub const ISENDU_API_SECRET: &str = fixtures::ISENDU.extra[1].1;
pub const MAILSHIP_TOKEN: &str = fixtures::MAILSHIP.secret;

/// The standard endpoints, one per provider, with the fake test secrets above.
pub fn standard_endpoints() -> String {
    fixtures::standard_endpoints_toml()
}

/// A free TCP port on 127.0.0.1 (bound then released), chosen below the kernel's ephemeral
/// range (32768–60999) so that the many outgoing connections of tests running in parallel
/// cannot take it between this check and the bridge's own bind. Another test process can still
/// pick the same port in that window: `Bridge::start_with` retries with new ports when it does.
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let port = fastrand::u16(20_000..32_000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000..32000");
}

/// Unique name for this test's exchange, queue and spool.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{:08x}", std::process::id(), fastrand::u32(..))
}

/// Settings of one bridge process.
#[derive(Clone)]
pub struct BridgeOptions {
    /// TOML put before `[amqp]` (top-level keys such as `ack_deadline`).
    pub top: String,
    /// Extra keys inside `[amqp]`.
    pub amqp_extra: String,
    /// AMQP URLs (default: the local broker).
    pub amqp_urls: Vec<String>,
    /// Tables after `[amqp]` (`[spool]`, `[dedup]`, `[limits]`…).
    pub tables: String,
    /// `[[endpoint]]` tables (default: [`standard_endpoints`]).
    pub endpoints: String,
    /// Wait for `/readyz` before returning.
    pub wait_ready: bool,
    /// Also wait for the broker connection (`/readyz` is already true when only the spool
    /// accepts). Turn off for a bridge started with the broker unreachable.
    pub wait_broker: bool,
    pub env: Vec<(String, String)>,
    pub log_format: &'static str,
    /// stderr is a pipe that nobody reads (a stalled log collector) instead of the log file.
    pub stderr_unread: bool,
    /// The exchange (default: a unique one), e.g. for replicas that share one.
    pub exchange: Option<String>,
    /// Start the process with SIGXFSZ ignored, so a file size limit set later
    /// ([`Bridge::limit_file_size`]) makes its writes fail with EFBIG instead of killing it.
    pub ignore_sigxfsz: bool,
}

impl Default for BridgeOptions {
    fn default() -> Self {
        Self {
            top: String::new(),
            amqp_extra: String::new(),
            amqp_urls: vec![AMQP_URL.to_string()],
            tables: String::new(),
            endpoints: standard_endpoints(),
            wait_ready: true,
            wait_broker: true,
            env: Vec::new(),
            log_format: "json",
            stderr_unread: false,
            exchange: None,
            ignore_sigxfsz: false,
        }
    }
}

/// A running `webhook-bridge serve` process, killed on drop.
pub struct Bridge {
    pub child: Child,
    pub port: u16,
    pub admin_port: u16,
    pub exchange: String,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    pub client: reqwest::Client,
}

impl Bridge {
    pub async fn start() -> Bridge {
        Self::start_with(BridgeOptions::default()).await
    }

    pub async fn start_with(opts: BridgeOptions) -> Bridge {
        let mut dir = tempfile::tempdir().expect("tempdir");
        let exchange = opts.exchange.clone().unwrap_or_else(|| unique("wbt"));
        let urls: Vec<String> = opts.amqp_urls.iter().map(|u| format!("\"{u}\"")).collect();
        let spool_dir = dir.path().join("spool");
        let config_path = dir.path().join("bridge.toml");
        let log_path = dir.path().join("bridge.log");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .expect("client");
        let mut attempt = 0;
        let bridge = loop {
            attempt += 1;
            let port = free_port();
            let admin_port = free_port();
            let config = format!(
                "listen = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin_port}\"\n{top}\n\
                 [amqp]\nurls = [{urls}]\nexchange = \"{exchange}\"\n{amqp_extra}\n\
                 {tables}\n{endpoints}\n",
                top = opts.top,
                urls = urls.join(", "),
                amqp_extra = opts.amqp_extra,
                tables = if opts.tables.contains("[spool]") {
                    opts.tables.clone()
                } else {
                    format!(
                        "[spool]\ndir = \"{}\"\n{}",
                        spool_dir.display(),
                        opts.tables
                    )
                },
                endpoints = opts.endpoints,
            );
            std::fs::write(&config_path, config).expect("write config");
            let child = spawn(&config_path, &log_path, &opts);
            let mut bridge = Bridge {
                child,
                port,
                admin_port,
                exchange: exchange.clone(),
                dir,
                config_path: config_path.clone(),
                log_path: log_path.clone(),
                client: client.clone(),
            };
            if bridge.lost_port_race(Duration::from_secs(20)).await && attempt < 5 {
                dir = bridge.into_dir();
                continue;
            }
            break bridge;
        };
        if opts.wait_ready {
            bridge.wait_ready(Duration::from_secs(20)).await;
            if opts.wait_broker {
                bridge.wait_connected(Duration::from_secs(20)).await;
            }
        } else {
            bridge.wait_listening(Duration::from_secs(20)).await;
        }
        bridge
    }

    /// Wait until the process listens or exits; true when it exited because another process
    /// took one of its ports between `free_port` and its bind.
    async fn lost_port_race(&mut self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return std::fs::read_to_string(&self.log_path)
                    .unwrap_or_default()
                    .contains("Address already in use");
            }
            if self
                .client
                .get(self.admin_url("/healthz"))
                .send()
                .await
                .is_ok()
            {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Give up this (exited) process but keep its directory for the next attempt.
    fn into_dir(mut self) -> tempfile::TempDir {
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"))
    }

    /// Restart the process with the same config (after a kill).
    pub async fn restart(&mut self, opts: &BridgeOptions) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(&self.config_path, &self.log_path, opts);
        self.wait_listening(Duration::from_secs(20)).await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    pub async fn wait_listening(&self, timeout: Duration) {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self
                .client
                .get(self.admin_url("/healthz"))
                .send()
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("bridge did not start listening; log:\n{}", self.logs());
    }

    pub async fn wait_ready(&self, timeout: Duration) {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Ok(r) = self.client.get(self.admin_url("/readyz")).send().await
                && r.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("bridge not ready; log:\n{}", self.logs());
    }

    /// Wait until the bridge reports `amqp_connected 1`.
    pub async fn wait_connected(&self, timeout: Duration) {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Ok(r) = self.client.get(self.admin_url("/metrics")).send().await
                && let Ok(text) = r.text().await
                && text.lines().any(|l| l == "webhook_bridge_amqp_connected 1")
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("bridge not connected to the broker; log:\n{}", self.logs());
    }

    /// The log so far. Lines reach the file from the bridge's log writer thread a moment after
    /// the request they describe was answered: wait until the file stops growing (50 ms without
    /// change, 3 s at most).
    pub fn logs(&self) -> String {
        let read = || std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let end = Instant::now() + Duration::from_secs(3);
        let mut last = read();
        loop {
            std::thread::sleep(Duration::from_millis(50));
            let now = read();
            if now.len() == last.len() || Instant::now() > end {
                return now;
            }
            last = now;
        }
    }

    pub async fn metrics(&self) -> String {
        self.client
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// POST `body` to `path` with `headers`.
    pub async fn post(
        &self,
        path: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> reqwest::Response {
        let mut req = self.client.post(self.url(path)).body(body.to_vec());
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.send().await.expect("request")
    }

    /// Sign `body` as `provider`'s sender would with `secret` and POST it to `path`.
    pub async fn post_signed(
        &self,
        provider: &str,
        path: &str,
        secret: &str,
        body: &[u8],
    ) -> reqwest::Response {
        let (path, headers) = signed_request(provider, path, secret, body);
        self.post(&path, &headers, body).await
    }

    /// The documented WeGoCOD sample, signed as WeGoCOD would, to the standard endpoint.
    pub async fn post_wegocod_sample(&self) -> reqwest::Response {
        self.post_signed(
            "wegocod",
            "/webhooks/wegocod",
            WEGOCOD_SECRET,
            webhook_bridge::providers::wegocod::DELIVERED,
        )
        .await
    }

    /// A consumer bound to this bridge's exchange with `pattern`.
    pub async fn consumer(&self, pattern: &str) -> Consumer {
        Consumer::bind(&self.exchange, pattern).await
    }

    /// Delete this test's exchanges and unrouted queue from the broker (drop does it too).
    pub async fn cleanup(&self) {
        delete_topology(&self.exchange).await;
    }

    /// Start the process again with the same config and wait for it to exit (it is expected to
    /// refuse to start); its exit status, or `None` if it still runs after `timeout` (then it is
    /// killed).
    pub fn run_to_exit(
        &mut self,
        opts: &BridgeOptions,
        timeout: Duration,
    ) -> Option<std::process::ExitStatus> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(&self.config_path, &self.log_path, opts);
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }

    /// Set (or with `None` lift) the process's file size limit (RLIMIT_FSIZE): its writes past
    /// `bytes` in any file fail. Start it with [`BridgeOptions::ignore_sigxfsz`].
    pub fn limit_file_size(&self, bytes: Option<u64>) {
        let limit = bytes.map_or("unlimited".to_string(), |b| b.to_string());
        let status = Command::new("prlimit")
            .arg("--pid")
            .arg(self.child.id().to_string())
            // The soft limit only: lifting it again needs no privilege.
            .arg(format!("--fsize={limit}:"))
            .status()
            .expect("prlimit");
        assert!(status.success(), "prlimit failed");
    }

    /// HTTP status of `/readyz`.
    pub async fn readyz(&self) -> u16 {
        self.client
            .get(self.admin_url("/readyz"))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    /// Send SIGTERM and wait for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.child.wait().expect("wait")
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Delete the test's exchanges and unrouted queue even when the test failed half-way:
        // on a thread of its own, since drop may run inside (or outside) a runtime.
        let exchange = self.exchange.clone();
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(async {
                    let _ =
                        tokio::time::timeout(Duration::from_secs(5), delete_topology(&exchange))
                            .await;
                });
            }
        })
        .join();
    }
}

/// Delete `exchange`, its alternate exchange and the unrouted queue; missing ones are fine.
pub async fn delete_topology(exchange: &str) {
    let Ok(conn) = Connection::connect(AMQP_URL, ConnectionProperties::default()).await else {
        return;
    };
    let ae = format!("{exchange}.unrouted");
    // Each failed delete closes the channel, so every step gets a fresh one.
    if let Ok(ch) = conn.create_channel().await {
        let _ = ch
            .queue_delete(
                ShortString::from(ae.as_str()),
                QueueDeleteOptions::default(),
            )
            .await;
    }
    for name in [exchange, ae.as_str()] {
        if let Ok(ch) = conn.create_channel().await {
            let _ = ch
                .exchange_delete(ShortString::from(name), ExchangeDeleteOptions::default())
                .await;
        }
    }
    let _ = conn.close(200, ShortString::from("bye")).await;
}

fn spawn(config: &std::path::Path, log: &std::path::Path, opts: &BridgeOptions) -> Child {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let bin = env!("CARGO_BIN_EXE_webhook-bridge");
    let mut cmd = if opts.ignore_sigxfsz {
        // An ignored signal stays ignored across exec; the process keeps the shell's pid.
        let mut c = Command::new("bash");
        c.args(["-c", "trap '' XFSZ; exec \"$0\" \"$@\"", bin]);
        c
    } else {
        Command::new(bin)
    };
    cmd.args(["--log-format", opts.log_format, "serve", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(if opts.stderr_unread {
            Stdio::piped()
        } else {
            Stdio::from(log_file)
        })
        .env("RUST_LOG", "info");
    for (k, v) in &opts.env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn webhook-bridge")
}

/// Path and headers a provider would send for `body` (default auth of `provider`).
pub fn signed_request(
    provider: &str,
    path: &str,
    secret: &str,
    body: &[u8],
) -> (String, Vec<(String, String)>) {
    let provider = webhook_bridge::providers::find(provider).expect("known provider");
    let auth = (provider.default_auth)().expect("provider has a default auth");
    signed_with(&auth, path, secret, body)
}

pub fn signed_with(
    auth: &AuthConfig,
    path: &str,
    secret: &str,
    body: &[u8],
) -> (String, Vec<(String, String)>) {
    let signed = auth::sign(
        auth,
        &Secret::new(secret),
        body,
        SystemTime::now(),
        "msg_test",
    );
    let mut headers: Vec<(String, String)> = signed
        .headers
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
        .collect();
    headers.push(("content-type".into(), "application/json".into()));
    let path = match signed.path_suffix {
        Some(token) => format!("{path}/{token}"),
        None => path.to_string(),
    };
    (path, headers)
}

/// One message as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    pub routing_key: String,
    pub body: Value,
    pub raw: Vec<u8>,
    pub message_id: Option<String>,
    pub delivery_mode: Option<u8>,
    pub content_type: Option<String>,
    pub kind: Option<String>,
    pub app_id: Option<String>,
    pub timestamp: Option<u64>,
    pub headers: Option<FieldTable>,
}

/// A real AMQP consumer on an exclusive queue bound to the test exchange.
pub struct Consumer {
    pub conn: Connection,
    pub channel: Channel,
    pub queue: String,
    consumer: lapin::Consumer,
}

impl Consumer {
    pub async fn bind(exchange: &str, pattern: &str) -> Consumer {
        let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
            .await
            .expect("consumer connect");
        let channel = conn.create_channel().await.expect("channel");
        let queue = unique("wbt-q");
        channel
            .queue_declare(
                ShortString::from(queue.as_str()),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("queue declare");
        channel
            .queue_bind(
                ShortString::from(queue.as_str()),
                ShortString::from(exchange),
                ShortString::from(pattern),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("queue bind (is the exchange declared?)");
        Self::consume(conn, channel, queue).await
    }

    /// Consume from an existing queue (e.g. the unrouted queue).
    pub async fn existing(queue: &str) -> Consumer {
        let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
            .await
            .expect("consumer connect");
        let channel = conn.create_channel().await.expect("channel");
        Self::consume(conn, channel, queue.to_string()).await
    }

    async fn consume(conn: Connection, channel: Channel, queue: String) -> Consumer {
        let consumer = channel
            .basic_consume(
                ShortString::from(queue.as_str()),
                ShortString::from(unique("ctag").as_str()),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consume");
        Consumer {
            conn,
            channel,
            queue,
            consumer,
        }
    }

    /// The next message, or `None` after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<Received> {
        use futures_util::StreamExt;
        let delivery = tokio::time::timeout(timeout, self.consumer.next())
            .await
            .ok()??
            .ok()?;
        let _ = delivery.ack(BasicAckOptions::default()).await;
        let p = &delivery.properties;
        Some(Received {
            routing_key: delivery.routing_key.to_string(),
            body: serde_json::from_slice(&delivery.data).unwrap_or(Value::Null),
            raw: delivery.data.clone(),
            message_id: p.message_id().as_ref().map(|s| s.to_string()),
            delivery_mode: *p.delivery_mode(),
            content_type: p.content_type().as_ref().map(|s| s.to_string()),
            kind: p.kind().as_ref().map(|s| s.to_string()),
            app_id: p.app_id().as_ref().map(|s| s.to_string()),
            timestamp: *p.timestamp(),
            headers: p.headers().clone(),
        })
    }

    /// Exactly `n` messages, each within `timeout` of the previous one.
    pub async fn take(&mut self, n: usize, timeout: Duration) -> Vec<Received> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match self.next(timeout).await {
                Some(m) => out.push(m),
                None => panic!("expected {n} messages, got {}", out.len()),
            }
        }
        out
    }

    /// Assert nothing (more) arrives within `wait`.
    pub async fn expect_none(&mut self, wait: Duration) {
        if let Some(m) = self.next(wait).await {
            panic!("unexpected message {} {}", m.routing_key, m.body);
        }
    }
}

/// Header value of a received message as text.
pub fn header_str(m: &Received, name: &str) -> Option<String> {
    let table = m.headers.as_ref()?;
    match table.inner().get(name)? {
        lapin::types::AMQPValue::LongString(s) => {
            Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
        }
        lapin::types::AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

/// Make sure the local broker answers; tests need it.
pub async fn broker_available() {
    let ok = tokio::time::timeout(
        Duration::from_secs(5),
        Connection::connect(AMQP_URL, ConnectionProperties::default()),
    )
    .await;
    assert!(
        matches!(ok, Ok(Ok(_))),
        "RabbitMQ is not reachable at 127.0.0.1:5672 — run ./scripts/test, which starts it"
    );
}

/// Declare `exchange` as an operator's plain durable topic exchange, *without* the alternate
/// exchange the bridge would give it (for bridges with `declare_topology = false`).
pub async fn declare_plain_exchange(exchange: &str) {
    let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    ch.exchange_declare(
        ShortString::from(exchange),
        lapin::ExchangeKind::Topic,
        lapin::options::ExchangeDeclareOptions {
            durable: true,
            ..lapin::options::ExchangeDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("declare exchange");
    let _ = conn.close(200, ShortString::from("bye")).await;
}

/// The queue unroutable messages are parked in (`{exchange}.unrouted`), declared by the operator
/// as a plain durable queue.
pub async fn declare_unrouted_queue(exchange: &str) {
    let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    ch.queue_declare(
        ShortString::from(format!("{exchange}.unrouted").as_str()),
        lapin::options::QueueDeclareOptions {
            durable: true,
            ..lapin::options::QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("declare unrouted queue");
    let _ = conn.close(200, ShortString::from("bye")).await;
}

/// The Peddler sample with its own shipment id.
pub fn peddler_body(id: &str) -> Vec<u8> {
    String::from_utf8_lossy(webhook_bridge::providers::peddler::CONFIRMED)
        .replace("Lc7rRTyivvk_lC0w8kLoU", id)
        .into_bytes()
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `RssAnon`, …), in MiB.
pub fn proc_status_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"));
    kib / 1024.0
}

/// `rabbitmqctl ARGS` (e.g. `-n <node>` first for a node of the test cluster): its standard
/// output; a failure fails the test with rabbitmqctl's message.
pub fn rabbitmqctl(args: &[&str]) -> String {
    let out = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("run rabbitmqctl");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
