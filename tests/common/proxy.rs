//! A TCP proxy between the bridge and the broker that a test can break on purpose:
//! - [`Proxy::cut`]: drop every connection (the bridge sees EOF/RST) and refuse new ones;
//! - [`Proxy::freeze`]: keep connections open but forward nothing, and accept new connections
//!   without ever answering — a network that silently drops packets;
//! - [`Proxy::restore`]: drop whatever the breakage left behind and forward again.
//!
//! It runs on the test's tokio runtime: use `#[tokio::test(flavor = "multi_thread")]` so it
//! keeps forwarding while the test awaits other things.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Open,
    Cut,
    Frozen,
}

pub struct Proxy {
    pub port: u16,
    mode: watch::Sender<Mode>,
    /// Bumped to make every live connection close.
    generation: watch::Sender<u64>,
    accepted: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listen on a free local port and forward to `target` (e.g. "127.0.0.1:5672").
    pub async fn start(target: &str, mode: Mode) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
        let port = listener.local_addr().expect("proxy addr").port();
        let (mode_tx, mode_rx) = watch::channel(mode);
        let (gen_tx, gen_rx) = watch::channel(0u64);
        let accepted = Arc::new(AtomicU64::new(0));
        let target = target.to_string();
        let counter = Arc::clone(&accepted);
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                counter.fetch_add(1, Ordering::Relaxed);
                let mode = *mode_rx.borrow();
                match mode {
                    Mode::Cut => drop(client),
                    Mode::Frozen => {
                        // Hold it, silent, until the next restore.
                        let mut g = gen_rx.clone();
                        tokio::spawn(async move {
                            let _ = g.changed().await;
                            drop(client);
                        });
                    }
                    Mode::Open => {
                        let target = target.clone();
                        let g = gen_rx.clone();
                        let m = mode_rx.clone();
                        tokio::spawn(forward(client, target, g, m));
                    }
                }
            }
        });
        Proxy {
            port,
            mode: mode_tx,
            generation: gen_tx,
            accepted,
            task,
        }
    }

    /// AMQP URL through this proxy.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// A bridge reaching the broker only through this proxy, reconnecting fast, and not
    /// waiting for a broker connection at start (the proxy may start cut).
    pub fn bridge_options(&self) -> super::BridgeOptions {
        super::BridgeOptions {
            amqp_urls: vec![self.amqp_url()],
            amqp_extra: "reconnect_backoff_max = \"1s\"\nconnect_timeout = \"1s\"".into(),
            wait_broker: false,
            ..super::BridgeOptions::default()
        }
    }

    pub fn cut(&self) {
        self.mode.send_replace(Mode::Cut);
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn freeze(&self) {
        self.mode.send_replace(Mode::Frozen);
    }

    pub fn restore(&self) {
        self.generation.send_modify(|g| *g += 1);
        self.mode.send_replace(Mode::Open);
    }

    /// Connections accepted so far (to see the bridge reconnect).
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.generation.send_modify(|g| *g += 1);
        self.task.abort();
    }
}

async fn forward(
    client: TcpStream,
    target: String,
    mut generation: watch::Receiver<u64>,
    mode: watch::Receiver<Mode>,
) {
    generation.mark_unchanged();
    let Ok(server) = TcpStream::connect(&target).await else {
        return;
    };
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    tokio::select! {
        _ = pump(cr, sw, mode.clone()) => {},
        _ = pump(sr, cw, mode) => {},
        _ = generation.changed() => {},
    }
}

/// Copy `from` → `to`; while frozen, read nothing and write nothing.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if mode.wait_for(|m| *m != Mode::Frozen).await.is_err() {
            return;
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            // Frozen while waiting: stop reading at once.
            _ = mode.wait_for(|m| *m == Mode::Frozen) => continue,
        };
        // Data read just as the freeze began is held back until the freeze ends (then the
        // connection is dropped anyway).
        if mode.wait_for(|m| *m != Mode::Frozen).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Where the spool tests start: a bridge whose only broker link goes through a proxy that is
/// cut, the test exchange declared and a consumer bound to `wegocod.#` on the real broker, so
/// that every webhook is spooled until [`Proxy::restore`]. `adjust` changes the proxy's bridge
/// options first; the options are handed back to restart the bridge the same way.
pub async fn cut_off(
    adjust: impl FnOnce(&mut super::BridgeOptions),
) -> (Proxy, super::BridgeOptions, super::Bridge, super::Consumer) {
    super::broker_available().await;
    let proxy = Proxy::start("127.0.0.1:5672", Mode::Cut).await;
    let mut opts = proxy.bridge_options();
    adjust(&mut opts);
    let bridge = super::Bridge::start_with(opts.clone()).await;
    super::load::declare_exchange(&bridge.exchange).await;
    let consumer = bridge.consumer("wegocod.#").await;
    (proxy, opts, bridge, consumer)
}
