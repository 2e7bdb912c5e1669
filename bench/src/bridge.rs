//! The bridge under test: its release binary, started as a process of its own with a generated
//! config, as it runs in production. Everything the bench needs to know of its endpoints (paths,
//! secrets, authentication, names) is read back from that config through the bridge's own
//! loader, so the TOML below is the only place they are written.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use webhook_bridge::config::{Config, EndpointConfig};
use webhook_bridge::providers::Provider;

use crate::cli::Args;

/// `--bridge-bin`, else `target/release/webhook-bridge` of this repository, built first unless
/// `--no-build`: a stale binary would measure code that is not the one being looked at.
pub fn binary(args: &Args) -> Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow!("bench crate has no parent directory"))?;
    let bin = match &args.bridge_bin {
        Some(b) => b.clone(),
        None => {
            if !args.no_build {
                build(root)?;
            }
            root.join("target/release/webhook-bridge")
        }
    };
    if !bin.exists() {
        bail!("bridge binary {} not found", bin.display());
    }
    Ok(bin)
}

fn build(root: &Path) -> Result<()> {
    eprintln!(
        "building the bridge: cargo build --release (in {})",
        root.display()
    );
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--bin", "webhook-bridge"])
        .current_dir(root)
        .status()
        .context("running cargo build --release")?;
    if !status.success() {
        bail!("cargo build --release failed");
    }
    Ok(())
}

/// The standard endpoints, one per provider (shared with the tests and the fuzz targets).
#[allow(dead_code)]
mod fixtures {
    include!("../../fixtures/endpoints.rs");
}

/// Write the bridge's config into `dir`: loopback ports picked now, the run's own exchange, the
/// spool in the temporary directory, production defaults for everything else. Literal secrets
/// are fine here (the bridge warns about them); nothing outside this run ever sees them.
pub fn write_config(dir: &Path, url: &str, exchange: &str, channels: usize) -> Result<PathBuf> {
    let port = free_port()?;
    let admin = free_port()?;
    let spool = dir.join("spool");
    let text = format!(
        r#"listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"

[amqp]
urls = ["{url}"]
exchange = "{exchange}"
channels = {channels}

[spool]
dir = "{spool}"

{endpoints}"#,
        spool = spool.display(),
        endpoints = fixtures::standard_endpoints_toml()
    );
    let path = dir.join("bridge.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// The config's endpoint for `provider`: what the bench signs, addresses and labels its
/// requests with, exactly as the bridge will verify and count them.
pub fn endpoint<'c>(config: &'c Config, provider: &'static Provider) -> Result<&'c EndpointConfig> {
    config
        .endpoints
        .iter()
        .find(|e| e.provider == provider)
        .ok_or_else(|| anyhow!("no {} endpoint in the bench config", provider.name))
}

/// The first secret of `ep`, the one a provider signs with.
pub fn secret(ep: &EndpointConfig) -> Result<&webhook_bridge::secret::Secret> {
    ep.secrets
        .first()
        .ok_or_else(|| anyhow!("endpoint {} has no secret", ep.name))
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The bridge process; killed (by pid) when dropped, so also on error or panic.
pub struct BridgeProcess {
    child: Child,
    pub port: u16,
    pub admin_port: u16,
    log: PathBuf,
}

impl BridgeProcess {
    /// Start `bin` on `config_path` with JSON logs into `dir`, which are shown if it never gets
    /// ready.
    pub fn spawn(
        bin: &Path,
        config_path: &Path,
        dir: &Path,
        config: &Config,
        rust_log: &str,
    ) -> Result<Self> {
        let log = dir.join("bridge.log");
        let child = Command::new(bin)
            .args(["--log-format", "json", "serve", "--config"])
            .arg(config_path)
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        Ok(Self {
            child,
            port: config.listen.port(),
            admin_port: config.admin_listen.port(),
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait for `/readyz` and for the broker connection (`webhook_bridge_amqp_connected 1`,
    /// set once the bridge has declared its exchange: with a spool the bridge is ready before
    /// that, and the bench's queue could not be bound yet). A bridge that never gets there
    /// fails the run with its log, which says why (a port taken, the broker refusing the
    /// config's exchange, …).
    pub async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            let uri: http::Uri = format!("http://127.0.0.1:{}/readyz", self.admin_port).parse()?;
            let ready = matches!(client.get(uri).await, Ok(r) if r.status() == 200);
            if ready && self.broker_connected(&client).await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        bail!("bridge not ready after {timeout:?}; log:\n{log}")
    }
}

impl BridgeProcess {
    /// Whether the bridge's `/metrics` says its broker connection is up.
    async fn broker_connected(&self, client: &Client<HttpConnector, Full<Bytes>>) -> bool {
        let Ok(uri) = format!("http://127.0.0.1:{}/metrics", self.admin_port).parse::<http::Uri>()
        else {
            return false;
        };
        let Ok(response) = client.get(uri).await else {
            return false;
        };
        let Ok(body) = response.into_body().collect().await else {
            return false;
        };
        String::from_utf8_lossy(&body.to_bytes())
            .lines()
            .any(|l| l == "webhook_bridge_amqp_connected 1")
    }
}

impl Drop for BridgeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
