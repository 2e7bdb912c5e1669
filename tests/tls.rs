//! TLS to the broker, against the AMQPS listeners of the three-node cluster of `scripts/cluster`
//! (127.0.0.1:5691-5693, a CA of the script's own, verify_peer, a client certificate required,
//! EXTERNAL enabled with the certificate's CN as user name): publishing with the CA file and a
//! client certificate, over the builtin publishing connection (the default; the broker sees two
//! TLS connections with the certificate) and over lapin's channels (one); a wrong CA refused with a clear log line, events spooled and delivered
//! once the CA file is right; a missing client certificate refused with a clear log line;
//! certificate-only login (EXTERNAL, on both connections); a client certificate renewed in
//! place picked up by both connections on the next reconnect, under HTTP load. Every event answered 2xx is counted
//! in a quorum consumer queue. Client certificates are made here with the openssl CLI, signed by
//! the cluster's CA.
//!
//! They need the cluster, so they are `#[ignore]`d and run one at a time in the cluster step of
//! `scripts/test`: `cargo test --test suite -- --ignored --test-threads=1 tls::`.

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::cluster::{self, assert_all_answered, assert_arrived};
use common::load::{self, Report, metric, wait_metric};
use common::*;

fn openssl(args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// A client certificate for `cn`, with a new EC key, signed by the cluster's CA:
/// (certificate PEM, key PEM).
fn client_certificate(dir: &Path, cn: &str) -> (Vec<u8>, Vec<u8>) {
    let ca = cluster::tls_dir();
    let key = dir.join(format!("{cn}.key.new"));
    let csr = dir.join(format!("{cn}.csr"));
    let crt = dir.join(format!("{cn}.crt.new"));
    let ext = dir.join("client.ext");
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        &format!("/CN={cn}"),
        "-keyout",
        path_str(&key),
        "-out",
        path_str(&csr),
    ]);
    std::fs::write(&ext, "extendedKeyUsage=clientAuth\n").expect("write ext");
    let serial = format!("{}", fastrand::u64(1..u64::MAX / 2));
    openssl(&[
        "x509",
        "-req",
        "-in",
        path_str(&csr),
        "-CA",
        path_str(&ca.join("ca.pem")),
        "-CAkey",
        path_str(&ca.join("ca.key")),
        "-set_serial",
        &serial,
        "-days",
        "2",
        "-extfile",
        path_str(&ext),
        "-out",
        path_str(&crt),
    ]);
    (
        std::fs::read(&crt).expect("read certificate"),
        std::fs::read(&key).expect("read key"),
    )
}

/// A CA that signed nothing the cluster uses: its certificate's PEM.
fn other_ca(dir: &Path) -> Vec<u8> {
    let pem = dir.join("other-ca.pem");
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=some other CA",
        "-keyout",
        path_str(&dir.join("other-ca.key")),
        "-out",
        path_str(&pem),
    ]);
    std::fs::read(pem).expect("read other CA")
}

/// The bridge's TLS files, as a Secret would mount them: `ca.crt`, `tls.crt`, `tls.key`.
struct Files {
    dir: tempfile::TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Files {
    /// The cluster's CA and a client certificate for `cn`.
    fn new(cn: &str) -> Files {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = Files {
            ca: dir.path().join("ca.crt"),
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
            dir,
        };
        std::fs::copy(cluster::tls_dir().join("ca.pem"), &files.ca).expect("copy the CA");
        files.renew(cn);
        files
    }

    /// A new key and certificate for `cn`, written over the files in place (as cert-manager's
    /// renewal rewrites a mounted Secret's files).
    fn renew(&self, cn: &str) {
        let (cert, key) = client_certificate(self.dir.path(), cn);
        std::fs::write(&self.key, key).expect("write key");
        std::fs::write(&self.cert, cert).expect("write certificate");
    }

    fn amqp_extra(&self, external: bool) -> String {
        format!(
            "tls_ca_file = {:?}\ntls_cert_file = {:?}\ntls_key_file = {:?}\n{}\
             reconnect_backoff_max = \"1s\"\nconnect_timeout = \"2s\"",
            self.ca,
            self.cert,
            self.key,
            if external {
                "auth_mechanism = \"external\"\n"
            } else {
                ""
            }
        )
    }
}

/// Every node's AMQPS URL, node 1 first; with `guest` (PLAIN) or no user (EXTERNAL).
fn amqps_urls(guest: bool) -> Vec<String> {
    let user = if guest { "guest:guest@" } else { "" };
    cluster::NODES
        .iter()
        .map(|&n| format!("amqps://{user}127.0.0.1:{}/%2f", cluster::amqps_port(n)))
        .collect()
}

fn options(files: &Files, external: bool) -> BridgeOptions {
    BridgeOptions {
        top: "ack_deadline = \"4s\"".into(),
        amqp_urls: amqps_urls(!external),
        amqp_extra: files.amqp_extra(external),
        exchange: Some(unique("wbt-tls")),
        ..BridgeOptions::default()
    }
}

/// The broker's view of its TLS connections: one `user subject` line each.
async fn tls_connections() -> String {
    cluster::ctl(1, &["list_connections", "user", "ssl", "peer_cert_subject"])
        .await
        .lines()
        .filter(|l| l.contains("\ttrue\t"))
        .map(|l| l.replace("\ttrue\t", " "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `exchange` declared as the bridge declares it, so a consumer queue can be bound before the
/// bridge has ever connected.
async fn declare_exchange(exchange: &str) {
    let conn = cluster::connect().await;
    let ch = conn.create_channel().await.expect("channel");
    webhook_bridge::publisher::declare_topology(&ch, &load::topology(&cluster::url(1), exchange))
        .await
        .expect("declare the bridge's exchanges");
    let _ = conn.close(200, "bye".into()).await;
}

/// The CA file and a client certificate (PLAIN login as guest): the bridge publishes over
/// AMQPS, the broker sees the certificate on each of the bridge's connections, every event
/// answered 2xx arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the three-node cluster of scripts/cluster (AMQPS listeners); run serially"]
async fn right_ca_and_client_certificate_publish_over_amqps() {
    // The builtin publishing connection over TLS, beside lapin's (topology): two connections.
    publish_over_amqps("", 2, "own connection").await;
}

/// The same over lapin's confirm channels (`publish_client = "lapin"`): one connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the three-node cluster of scripts/cluster (AMQPS listeners); run serially"]
async fn right_ca_and_client_certificate_publish_over_amqps_with_lapin_channels() {
    publish_over_amqps("publish_client = \"lapin\"", 1, "lapin confirm channels").await;
}

/// How many TLS connections of `user` present the certificate of `cn`.
fn presenting(seen: &str, user: &str, cn: &str) -> usize {
    seen.lines()
        .filter(|l| l.starts_with(&format!("{user} ")) && l.contains(&format!("CN={cn}")))
        .count()
}

async fn publish_over_amqps(extra: &str, connections: usize, path: &str) {
    let _restore = cluster::ensure_up().await;
    let cn = unique("wb-mtls");
    let files = Files::new(&cn);
    let mut opts = options(&files, false);
    opts.amqp_extra = format!("{}\n{extra}", opts.amqp_extra);
    let bridge = Bridge::start_with(opts).await;
    let queue = cluster::quorum_queue(&bridge.exchange, "wegocod.#").await;
    let seen = tls_connections().await;
    assert_eq!(
        presenting(&seen, "guest", &cn),
        connections,
        "the broker sees the bridge's TLS connections with its certificate: {seen}"
    );
    let logs = bridge.logs();
    assert!(logs.contains(path), "published over {path}:\n{logs}");
    let report = load::run(
        &bridge,
        "mtls",
        300,
        16,
        Duration::ZERO,
        Arc::new(AtomicUsize::new(0)),
    )
    .await;
    eprintln!("mtls ({path}): {}", report.summary());
    assert_all_answered("mtls", &report, 300);
    assert_eq!(
        report.spooled(),
        0,
        "published, not spooled: {}",
        report.summary()
    );
    assert_arrived("mtls", &queue, &report.acknowledged()).await;
    cluster::delete(&bridge.exchange, &[&queue]).await;
}

/// A CA file that did not sign the broker's certificate: the connection is refused with a log
/// line that says so, requests are spooled (200), and once the CA file is rewritten with the
/// right CA the next connect attempt (no restart) succeeds and the spool drains: nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the three-node cluster of scripts/cluster (AMQPS listeners); run serially"]
async fn wrong_ca_is_refused_with_a_clear_log_line_and_nothing_is_lost() {
    let _restore = cluster::ensure_up().await;
    let files = Files::new(&unique("wb-wrongca"));
    std::fs::write(&files.ca, other_ca(files.dir.path())).expect("write the wrong CA");
    let mut opts = options(&files, false);
    opts.wait_broker = false;
    let exchange = opts.exchange.clone().expect("exchange");
    declare_exchange(&exchange).await;
    let queue = cluster::quorum_queue(&exchange, "wegocod.#").await;
    let bridge = Bridge::start_with(opts).await;
    let report = load::run(
        &bridge,
        "wrongca",
        40,
        8,
        Duration::ZERO,
        Arc::new(AtomicUsize::new(0)),
    )
    .await;
    eprintln!("wrong CA: {}", report.summary());
    assert_all_answered("wrong CA", &report, 40);
    assert_eq!(report.spooled(), 40, "all spooled: {}", report.summary());
    let m = bridge.metrics().await;
    assert_eq!(metric(&m, "webhook_bridge_amqp_connected"), Some(0.0));
    let logs = bridge.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("TLS certificate verification failed"))
        .unwrap_or_else(|| panic!("no TLS verification line in the log:\n{logs}"));
    eprintln!("wrong CA log line: {line}");
    assert!(
        line.contains("amqp.tls_ca_file") && line.contains(path_str(&files.ca)),
        "the line names the CA file: {line}"
    );
    assert!(
        !logs.contains("PRIVATE KEY") && !logs.contains("BEGIN CERTIFICATE"),
        "no PEM in the log"
    );
    // The fix, as a renewed Secret would deliver it: the right CA, read on the next attempt.
    std::fs::copy(cluster::tls_dir().join("ca.pem"), &files.ca).expect("write the right CA");
    bridge.wait_connected(Duration::from_secs(20)).await;
    wait_metric(
        &bridge,
        "webhook_bridge_spool_events",
        0.0,
        Duration::from_secs(30),
    )
    .await;
    assert_arrived("wrong CA, then fixed", &queue, &report.acknowledged()).await;
    cluster::delete(&exchange, &[&queue]).await;
}

/// `auth_mechanism = "external"`, URLs without user or password: the broker logs the bridge in
/// as its certificate's CN (a user with no password); `unrouted replay` connects the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the three-node cluster of scripts/cluster (AMQPS listeners); run serially"]
async fn external_login_with_a_client_certificate_only() {
    let _restore = cluster::ensure_up().await;
    let user = unique("wb-ext");
    let password = unique("pw");
    cluster::ctl(1, &["add_user", &user, &password]).await;
    cluster::ctl(1, &["clear_password", &user]).await;
    cluster::ctl(1, &["set_permissions", "-p", "/", &user, ".*", ".*", ".*"]).await;
    let files = Files::new(&user);
    let bridge = Bridge::start_with(options(&files, true)).await;
    let queue = cluster::quorum_queue(&bridge.exchange, "wegocod.#").await;
    let seen = tls_connections().await;
    assert_eq!(
        presenting(&seen, &user, &user),
        2,
        "the broker logged both of the bridge's connections (topology, publishing) in as the \
         certificate's CN: {seen}"
    );
    let report = load::run(
        &bridge,
        "external",
        100,
        8,
        Duration::ZERO,
        Arc::new(AtomicUsize::new(0)),
    )
    .await;
    eprintln!("external: {}", report.summary());
    assert_all_answered("external", &report, 100);
    assert_eq!(report.spooled(), 0, "published: {}", report.summary());
    assert_arrived("external", &queue, &report.acknowledged()).await;
    // The operator tools connect with the same files and login: a pass of `unrouted replay`.
    let replay = tokio::process::Command::new(env!("CARGO_BIN_EXE_webhook-bridge"))
        .args(["unrouted", "replay", "--config"])
        .arg(&bridge.config_path)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .output()
        .await
        .expect("run unrouted replay");
    assert!(
        replay.status.success(),
        "unrouted replay over AMQPS with EXTERNAL: {}\n{}",
        String::from_utf8_lossy(&replay.stdout),
        String::from_utf8_lossy(&replay.stderr)
    );
    cluster::delete(&bridge.exchange, &[&queue]).await;
    drop(bridge);
    cluster::ctl(1, &["delete_user", &user]).await;
}

/// A new client certificate and key written over the files in place under HTTP load; the broker
/// closes the bridge's connection; the reconnect presents the new certificate (the broker's
/// `peer_cert_subject`), and every event answered 2xx across the reconnect arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the three-node cluster of scripts/cluster (AMQPS listeners); run serially"]
async fn renewed_client_certificate_is_used_from_the_next_reconnect() {
    let _restore = cluster::ensure_up().await;
    let (old_cn, new_cn) = (unique("wb-rot-old"), unique("wb-rot-new"));
    let files = Files::new(&old_cn);
    let bridge = Bridge::start_with(options(&files, false)).await;
    let queue = cluster::quorum_queue(&bridge.exchange, "wegocod.#").await;
    assert!(tls_connections().await.contains(&format!("CN={old_cn}")));
    // Rounds of 200 requests, one every 10 ms, 32 at most in flight, until one full round after
    // the reconnect; the renewal after 200 answers.
    let progress = Arc::new(AtomicUsize::new(0));
    let done = AtomicBool::new(false);
    let load = async {
        let mut report = Report::default();
        for i in 0..60 {
            let last = done.load(Ordering::Relaxed);
            let tag = format!("rotation-{i}");
            let round = load::run(
                &bridge,
                &tag,
                200,
                32,
                Duration::from_millis(10),
                Arc::clone(&progress),
            )
            .await;
            report.answers.extend(round.answers);
            if last {
                break;
            }
        }
        report
    };
    let rotate = async {
        while progress.load(Ordering::Relaxed) < 200 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        files.renew(&new_cn);
        let renewed_at = progress.load(Ordering::Relaxed);
        let before = metric(
            &bridge.metrics().await,
            "webhook_bridge_amqp_reconnects_total",
        )
        .unwrap_or(0.0);
        let m_before = tls_connections().await;
        assert!(
            m_before.contains(&format!("CN={old_cn}")),
            "files alone change nothing until a reconnect: {m_before}"
        );
        let closed = Instant::now();
        cluster::ctl(
            1,
            &[
                "close_all_connections",
                "--global",
                "certificate renewal test",
            ],
        )
        .await;
        loop {
            let m = bridge.metrics().await;
            if metric(&m, "webhook_bridge_amqp_reconnects_total").unwrap_or(0.0) > before
                && metric(&m, "webhook_bridge_amqp_connected") == Some(1.0)
            {
                break;
            }
            assert!(
                closed.elapsed() < Duration::from_secs(15),
                "no reconnect; log:\n{}",
                bridge.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let reconnected_after = closed.elapsed();
        let reconnected_at = progress.load(Ordering::Relaxed);
        let after = tls_connections().await;
        done.store(true, Ordering::Relaxed);
        (renewed_at, reconnected_at, reconnected_after, after)
    };
    let (report, (renewed_at, reconnected_at, took, after)) = tokio::join!(load, rotate);
    let n = report.answers.len();
    eprintln!(
        "rotation: {} | renewed after {renewed_at} answers, reconnected {} after the close command \
         was issued, at {reconnected_at} answers | broker sees: {after}",
        report.summary(),
        cluster::secs(took)
    );
    assert!(
        presenting(&after, "guest", &new_cn) == 2 && !after.contains(&format!("CN={old_cn}")),
        "both connections of the reconnect present the renewed certificate: {after}"
    );
    assert!(
        reconnected_at + 200 <= n,
        "load goes on after the reconnect ({reconnected_at} of {n})"
    );
    assert_all_answered("rotation", &report, n);
    wait_metric(
        &bridge,
        "webhook_bridge_spool_events",
        0.0,
        Duration::from_secs(30),
    )
    .await;
    assert_arrived("rotation", &queue, &report.acknowledged()).await;
    cluster::delete(&bridge.exchange, &[&queue]).await;
}

/// The CA file but no client certificate, against a broker that requires one: the broker ends
/// the handshake, the log says so, and the bridge spools.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the three-node cluster of scripts/cluster (AMQPS listeners); run serially"]
async fn missing_client_certificate_is_refused_with_a_clear_log_line() {
    let _restore = cluster::ensure_up().await;
    let files = Files::new(&unique("wb-nocert"));
    let bridge = Bridge::start_with(BridgeOptions {
        top: "ack_deadline = \"4s\"".into(),
        amqp_urls: amqps_urls(true),
        amqp_extra: format!(
            "tls_ca_file = {:?}\nreconnect_backoff_max = \"1s\"\nconnect_timeout = \"2s\"",
            files.ca
        ),
        wait_broker: false,
        ..BridgeOptions::default()
    })
    .await;
    let end = Instant::now() + Duration::from_secs(15);
    let line = loop {
        let logs = bridge.logs();
        if let Some(l) = logs
            .lines()
            .find(|l| l.contains("broker connection failed"))
        {
            break l.to_string();
        }
        assert!(
            Instant::now() < end,
            "no connection failure logged:\n{logs}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("no client certificate log line: {line}");
    assert!(
        line.contains("TLS handshake refused by the broker"),
        "the line says the broker refused the handshake: {line}"
    );
    let answer = bridge.post_wegocod_sample().await;
    assert_eq!(answer.status(), 200);
    assert!(answer.text().await.unwrap_or_default().contains("spooled"));
}
