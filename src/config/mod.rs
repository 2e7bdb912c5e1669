//! Configuration: the file's serde types ([`raw`]), validation that names the offending key
//! ([`validate`]), and the validated types every component receives. Nothing re-reads the file
//! or the environment after start-up, except the `[amqp]` TLS files ([`tls`]), read again on
//! every broker (re)connect so that renewed certificates are used. Secrets are resolved here
//! (`env:`/`file:`/literal, see [`crate::secret`]) and print as `***`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::auth::AuthConfig;
use crate::providers::{Options, Provider};
use crate::secret::{Secret, SecretSource};
use crate::units::{de_duration, de_size};

mod parse_error;
mod raw;
mod tls;
mod validate;

pub use tls::{AuthMechanism, KeyPem, TlsFileError, TlsFiles, TlsMaterial};

/// A configuration error. The message always names the key (`endpoint[2].secret`, `max_body`…)
/// so an operator can fix the file without reading code.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config: `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

/// Protective limits on the provider-facing listener.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A client that has not sent complete headers by then is disconnected (slowloris). An idle
    /// keep-alive connection is closed after the same time.
    pub header_read_timeout: Duration,
    /// The whole body must arrive within this; it is also bounded by `ack_deadline`.
    pub body_read_timeout: Duration,
    /// Open connections beyond this are answered 503 with `Retry-After` and closed.
    pub max_connections: usize,
    /// Requests processed at once; more are answered 503 immediately.
    pub max_in_flight: usize,
    /// Body bytes being read or held at once, over all requests: a request whose body would
    /// not fit (its `Content-Length`, else `max_body`) is answered 503 + `Retry-After` before a
    /// byte of it is read. Bounds memory against many slow clients sending large bodies.
    pub max_body_bytes_in_flight: usize,
}

/// Broker settings. URLs carry credentials, so they are [`Secret`]s and print redacted.
#[derive(Debug, Clone)]
pub struct AmqpConfig {
    /// Tried in order on every (re)connect: the first that answers wins.
    pub urls: Vec<Secret>,
    pub exchange: String,
    /// Declare the exchange, its alternate exchange and the unrouted queue on every connect.
    pub declare_topology: bool,
    /// Confirm-mode channels publishes are spread over, by either [`PublishClient`].
    pub channels: usize,
    pub connect_timeout: Duration,
    pub reconnect_backoff_max: Duration,
    /// Type of the unrouted queue, when `declare_topology` is on.
    pub unrouted_queue_type: QueueType,
    /// CA bundle and client certificate for `amqps://` URLs, read on every connect.
    pub tls: TlsFiles,
    /// `plain` (the URL's user and password) or `external` (the client certificate).
    pub auth_mechanism: AuthMechanism,
    pub publish_client: PublishClient,
}

/// The Linux scheduling policy the bridge's threads run under (`thread_scheduling`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThreadScheduling {
    /// `SCHED_BATCH`: the kernel's fair scheduler, except that a thread the bridge wakes (the
    /// AMQP client's I/O thread for a publish, the async worker for a confirm) does not preempt
    /// the one that woke it; it runs on an idle core, or when the running thread sleeps or its
    /// slice ends. Fewer context switches per webhook (docs/BENCHMARKS.md, "Threads under
    /// SCHED_BATCH"); needs no privilege.
    #[default]
    Batch,
    /// `SCHED_OTHER`, the kernel's default policy.
    Normal,
}

impl ThreadScheduling {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Batch => "batch",
            Self::Normal => "normal",
        }
    }
}

/// What carries the publishes (`[amqp] publish_client`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishClient {
    /// The bridge's own publishing connection, driven by the async workers
    /// (`publisher/wire/`): `channels` confirm channels, no I/O thread.
    #[default]
    Builtin,
    /// lapin's `channels` confirm channels, on the connection that declares the topology.
    Lapin,
}

/// Type of the `<exchange>.unrouted` queue the bridge declares (`x-queue-type`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    /// A classic durable queue, declared without `x-queue-type` (as before the key existed).
    /// On a cluster it lives on one node: while that node is down, unroutable events wait in
    /// the spool.
    Classic,
    /// A quorum queue: replicated, so a confirm means a majority of the nodes have it and the
    /// queue survives the loss of a minority. Works on a single node too.
    #[default]
    Quorum,
}

impl QueueType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Classic => "classic",
            Self::Quorum => "quorum",
        }
    }
}

impl AmqpConfig {
    /// Name of the alternate exchange that catches unroutable messages.
    pub fn alternate_exchange(&self) -> String {
        format!("{}.unrouted", self.exchange)
    }
    /// Queue bound to the alternate exchange.
    pub fn unrouted_queue(&self) -> String {
        format!("{}.unrouted", self.exchange)
    }
}

fn default_spool_dir() -> PathBuf {
    PathBuf::from("./spool")
}
fn default_spool_max() -> u64 {
    1024 * 1024 * 1024
}

/// Local durable fallback used when the broker cannot confirm in time.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    #[serde(default = "raw::default_true")]
    pub enabled: bool,
    #[serde(default = "default_spool_dir")]
    pub dir: PathBuf,
    #[serde(default = "default_spool_max", deserialize_with = "de_size")]
    pub max_bytes: u64,
    /// On SIGTERM, after the last answer: how long to keep draining the spool to the broker
    /// before exiting, so acknowledged events do not wait on a volume that may be deleted with
    /// the pod. `0s` exits at once.
    #[serde(default = "default_shutdown_drain", deserialize_with = "de_duration")]
    pub shutdown_drain: Duration,
    /// Most bytes of records waiting for the spool's writer thread (written and fsync'd as one
    /// group). An append that would pass it is refused at once (503 + Retry-After) rather than
    /// queued in memory; an append alone in the queue is always taken.
    #[serde(default = "default_spool_queue_max", deserialize_with = "de_size")]
    pub queue_max_bytes: u64,
}

fn default_spool_queue_max() -> u64 {
    16 * 1024 * 1024
}

fn default_shutdown_drain() -> Duration {
    Duration::from_secs(5)
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: default_spool_dir(),
            max_bytes: default_spool_max(),
            shutdown_drain: default_shutdown_drain(),
            queue_max_bytes: default_spool_queue_max(),
        }
    }
}

fn default_dedup_ttl() -> Duration {
    Duration::from_secs(600)
}
fn default_dedup_size() -> usize {
    100_000
}

/// Window in which an already-confirmed event id is answered 200 without publishing again.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupConfig {
    #[serde(default = "raw::default_true")]
    pub enabled: bool,
    #[serde(default = "default_dedup_ttl", deserialize_with = "de_duration")]
    pub ttl: Duration,
    #[serde(default = "default_dedup_size")]
    pub max_entries: usize,
}

impl Default for DedupConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ttl: default_dedup_ttl(),
            max_entries: default_dedup_size(),
        }
    }
}

/// A validated endpoint: one provider account reachable at one path.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Label in metrics, logs and the envelope's `account`.
    pub name: String,
    pub provider: &'static Provider,
    /// Path prefix; with path-token auth the token is the one segment after it.
    pub path: String,
    /// The largest body this endpoint accepts: its own `max_body`, else the top-level one.
    pub max_body: usize,
    /// Every listed secret verifies, so a secret can be rotated without downtime.
    pub secrets: Vec<Secret>,
    /// Where each secret came from, for `check-config`.
    pub secret_sources: Vec<SecretSource>,
    pub auth: AuthConfig,
    pub allow_ips: Vec<IpNet>,
    /// Proxies whose `X-Forwarded-For` is believed when checking `allow_ips`.
    pub trusted_proxies: Vec<IpNet>,
    /// What the provider made of its own keys ([`Provider::option_keys`]).
    pub options: Options,
}

impl EndpointConfig {
    /// The routing-key prefix, `source` and `data.provider` of this endpoint's events.
    pub fn provider_name(&self) -> &str {
        self.provider.prefix(&self.options, &self.name)
    }

    /// The routing keys this endpoint can produce, for `check-config`.
    pub fn routing_keys(&self) -> Vec<String> {
        self.provider.routing_keys(&self.options, &self.name)
    }
}

/// The validated configuration passed to every component.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// Every provider request is answered before this, whatever the broker does.
    pub ack_deadline: Duration,
    pub max_body: usize,
    /// Threads of the async runtime that serves HTTP and runs the request path (the AMQP
    /// client's I/O thread and the blocking pool are apart from them).
    pub worker_threads: usize,
    /// Applied to every thread of the process at start-up (`serve` only).
    pub thread_scheduling: ThreadScheduling,
    pub limits: Limits,
    pub amqp: AmqpConfig,
    pub spool: SpoolConfig,
    pub dedup: DedupConfig,
    pub endpoints: Vec<EndpointConfig>,
    /// Literal secrets found in the file, reported as warnings at start-up.
    pub warnings: Vec<String>,
}

impl Config {
    /// Default path: `$WEBHOOK_BRIDGE_CONFIG`, else `webhook-bridge.toml`.
    pub fn default_path() -> PathBuf {
        std::env::var_os("WEBHOOK_BRIDGE_CONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("webhook-bridge.toml"))
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let parse_error = |e: toml::de::Error| ConfigError::Parse {
            path: PathBuf::from("<inline>"),
            message: parse_error::describe(text, &e),
        };
        let doc = toml::de::DeTable::parse(text).map_err(parse_error)?;
        let tables = raw::endpoint_tables(doc.get_ref());
        let mut raw =
            raw::RawConfig::deserialize(toml::de::Deserializer::from(doc)).map_err(parse_error)?;
        // Each provider reads its own keys, now that the endpoint's provider is known.
        for (ep, table) in raw.endpoints.iter_mut().zip(tables) {
            ep.options = raw::provider_options(&ep.provider, table).map_err(parse_error)?;
        }
        validate::validate(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[amqp]
urls = ["amqp://guest:guest@127.0.0.1:5672/%2f"]
"#;

    fn err(text: &str) -> String {
        Config::from_toml(text).map(|_| ()).unwrap_err().to_string()
    }

    #[test]
    fn missing_endpoint_secret_names_the_key() {
        let text = format!("{BASE}\n[[endpoint]]\nname='a'\nprovider='peddler'\npath='/p'\n");
        assert!(err(&text).contains("endpoint[0].secret"), "{}", err(&text));
    }

    #[test]
    fn unset_env_secret_names_key_and_variable() {
        let text = format!(
            "{BASE}\n[[endpoint]]\nname='a'\nprovider='peddler'\npath='/p'\nsecret='env:WB_TEST_SURELY_UNSET'\n"
        );
        let e = err(&text);
        assert!(
            e.contains("endpoint[0].secret") && e.contains("WB_TEST_SURELY_UNSET"),
            "{e}"
        );
    }

    #[test]
    fn worker_threads_default_to_one_and_are_bounded() {
        let with_endpoint =
            format!("{BASE}\n[[endpoint]]\nname='a'\nprovider='peddler'\npath='/p'\nsecret='s'\n");
        let cfg = Config::from_toml(&with_endpoint).unwrap();
        assert_eq!(cfg.worker_threads, 1);
        for n in [0, 65] {
            let e = err(&format!("worker_threads = {n}\n{with_endpoint}"));
            assert!(e.contains("worker_threads"), "{e}");
        }
        let cfg = Config::from_toml(&format!("worker_threads = 4\n{with_endpoint}")).unwrap();
        assert_eq!(cfg.worker_threads, 4);
    }

    #[test]
    fn thread_scheduling_defaults_to_batch_and_names_a_policy() {
        let with_endpoint =
            format!("{BASE}\n[[endpoint]]\nname='a'\nprovider='peddler'\npath='/p'\nsecret='s'\n");
        let cfg = Config::from_toml(&with_endpoint).unwrap();
        assert_eq!(cfg.thread_scheduling, ThreadScheduling::Batch);
        let normal = format!("thread_scheduling = 'normal'\n{with_endpoint}");
        let cfg = Config::from_toml(&normal).unwrap();
        assert_eq!(cfg.thread_scheduling, ThreadScheduling::Normal);
        let e = err(&format!("thread_scheduling = 'fifo'\n{with_endpoint}"));
        assert!(
            e.contains("thread_scheduling") && e.contains("batch"),
            "{e}"
        );
    }

    #[test]
    fn bad_duration_and_unknown_key_are_reported() {
        assert!(err(&format!("ack_deadline = 'soon'\n{BASE}")).contains("ack_deadline"));
        assert!(err(&format!("bogus = 1\n{BASE}")).contains("bogus"));
    }

    #[test]
    fn sizes_and_lists_parse() {
        let text = format!(
            "max_body = '2MiB'\n{BASE}\n[[endpoint]]\nname='a'\nprovider='wegocod'\npath='/w'\nsecret=['one','two']\nallow_ips=['10.0.0.0/8','192.0.2.1']\n"
        );
        let cfg = Config::from_toml(&text).unwrap();
        assert_eq!(cfg.max_body, 2 * 1024 * 1024);
        assert_eq!(cfg.endpoints[0].secrets.len(), 2);
        assert_eq!(cfg.endpoints[0].allow_ips.len(), 2);
        assert_eq!(cfg.warnings.len(), 2);
    }

    #[test]
    fn an_isendu_endpoint_without_api_secret_is_warned_about() {
        let without = format!(
            "{BASE}\n[[endpoint]]\nname='i'\nprovider='isendu'\npath='/i'\nsecret='test-token'\n"
        );
        let cfg = Config::from_toml(&without).unwrap();
        assert!(
            cfg.warnings
                .iter()
                .any(|w| w.contains("endpoint[0].api_secret")),
            "{:?}",
            cfg.warnings
        );
        let with = format!("{without}key_id='test-key-id'\napi_secret='test-api-secret'\n");
        let cfg = Config::from_toml(&with).unwrap();
        assert!(
            !cfg.warnings
                .iter()
                .any(|w| w.contains("api_secret is not set")),
            "{:?}",
            cfg.warnings
        );
    }

    #[test]
    fn the_unrouted_queue_is_a_quorum_queue_unless_configured_classic() {
        let endpoint = "[[endpoint]]\nname='a'\nprovider='peddler'\npath='/p'\nsecret='x'\n";
        let cfg = Config::from_toml(&format!("{BASE}{endpoint}")).unwrap();
        assert_eq!(cfg.amqp.unrouted_queue_type, QueueType::Quorum);
        let classic = format!("{BASE}unrouted_queue_type = 'classic'\n{endpoint}");
        let cfg = Config::from_toml(&classic).unwrap();
        assert_eq!(cfg.amqp.unrouted_queue_type, QueueType::Classic);
        let e = err(&format!("{BASE}unrouted_queue_type = 'stream'\n{endpoint}"));
        assert!(
            e.contains("unrouted_queue_type") && e.contains("quorum"),
            "{e}"
        );
    }

    #[test]
    fn a_misspelt_key_is_named_without_echoing_its_value() {
        let text = format!(
            "{BASE}\n[[endpoint]]\nname='a'\nprovider='peddler'\npath='/p'\nsecret='env:X'\n\n[[endpoint]]\nname='b'\nprovider='peddler'\npath='/q'\nsecrett = \"s3cr3t-value\"\n"
        );
        let line = text.lines().position(|l| l.starts_with("secrett")).unwrap() + 1;
        let e = err(&text);
        assert!(!e.contains("s3cr3t-value"), "{e}");
        assert!(e.contains("secrett"), "{e}");
        assert!(e.contains(&format!("line {line}")), "{e}");
        assert!(e.contains("column 1"), "{e}");
    }

    #[test]
    fn a_value_of_the_wrong_type_is_not_echoed_either() {
        // A secret pasted under a key that expects a list or a duration.
        for (table, key) in [
            (
                "[[endpoint]]\nname='a'\nprovider='peddler'\npath='/p'\nsecret='env:X'\nallow_ips",
                "allow_ips",
            ),
            ("[limits]\nheader_read_timeout", "header_read_timeout"),
        ] {
            let text = format!("{BASE}\n{table} = \"s3cr3t-value\"\n");
            let e = err(&text);
            assert!(!e.contains("s3cr3t-value"), "{e}");
            assert!(e.contains(key), "{e}");
        }
    }

    #[test]
    fn limits_durations_are_range_checked() {
        for (key, value) in [
            ("header_read_timeout", "0s"),
            ("header_read_timeout", "99ms"),
            ("header_read_timeout", "61s"),
            ("body_read_timeout", "0s"),
            ("body_read_timeout", "10m"),
        ] {
            let text = format!(
                "{BASE}\n[limits]\n{key} = '{value}'\n[[endpoint]]\nname='a'\nprovider='peddler'\npath='/p'\nsecret='fake-long-enough-token'\n"
            );
            let e = err(&text);
            assert!(e.contains(&format!("limits.{key}")), "{value}: {e}");
        }
        let ok = format!(
            "{BASE}\n[limits]\nheader_read_timeout = '100ms'\nbody_read_timeout = '60s'\n[[endpoint]]\nname='a'\nprovider='peddler'\npath='/p'\nsecret='fake-long-enough-token'\n"
        );
        assert!(Config::from_toml(&ok).is_ok());
    }

    #[test]
    fn short_token_secrets_are_warned_about_without_showing_them() {
        // bearer (modexpress), header (peddler), path token (isendu), basic; HMAC keys are not
        // sent with the request, so their length is not checked here.
        let text = format!(
            "{BASE}\n[[endpoint]]\nname='m'\nprovider='modexpress'\npath='/m'\nsecret='fake-short-1'\n\
             [[endpoint]]\nname='p'\nprovider='peddler'\npath='/p'\nsecret=['fake-long-enough-token-2', 'fake-short-2']\n\
             [[endpoint]]\nname='i'\nprovider='isendu'\npath='/i'\nsecret='fake-short-3'\nkey_id='fake-key-id'\napi_secret='fake-api-secret'\n\
             [[endpoint]]\nname='b'\nprovider='mailship'\npath='/b'\nsecret='fake-short-4'\nauth={{kind='basic'}}\n\
             [[endpoint]]\nname='w'\nprovider='wegocod'\npath='/w'\nsecret='fake-short-5'\n\
             [[endpoint]]\nname='ok'\nprovider='modexpress'\npath='/ok'\nsecret='fake-long-enough-token-6'\n"
        );
        let cfg = Config::from_toml(&text).unwrap();
        let short: Vec<&String> = cfg
            .warnings
            .iter()
            .filter(|w| w.contains("shorter than 16 bytes"))
            .collect();
        for key in [
            "endpoint[0].secret",
            "endpoint[1].secret[1]",
            "endpoint[2].secret",
            "endpoint[3].secret",
        ] {
            assert!(short.iter().any(|w| w.starts_with(key)), "{key}: {short:?}");
        }
        assert_eq!(short.len(), 4, "{short:?}");
        for w in &cfg.warnings {
            assert!(!w.contains("fake-"), "{w}");
        }
    }

    #[test]
    fn unknown_keys_are_named_with_their_position_and_the_known_ones_listed() {
        let endpoint = "[[endpoint]]\nname='g'\nprovider='generic'\npath='/g'\nsecret='x'\n";
        let text = format!("{BASE}\n{endpoint}kye_id = 'fake-1'\n");
        let line = text.lines().position(|l| l.starts_with("kye_id")).unwrap() + 1;
        let e = err(&text);
        assert!(
            e.contains(&format!(
                "line {line}, column 1: `endpoint[0].kye_id`: unknown field"
            )),
            "{e}"
        );
        for key in ["`auth`", "`key_id`", "`api_secret`", "`event`", "`generic`"] {
            assert!(e.contains(key), "{key}: {e}");
        }
        let text = format!(
            "{BASE}\n{endpoint}[endpoint.generic]\nevent_pointer = '/e'\nsorce = 'fake-2'\n"
        );
        let line = text.lines().position(|l| l.starts_with("sorce")).unwrap() + 1;
        let e = err(&text);
        assert!(
            e.contains(&format!(
                "line {line}, column 1: `endpoint[0].generic.sorce`: unknown field"
            )),
            "{e}"
        );
        assert!(!e.contains("fake-"), "{e}");
    }

    #[test]
    fn provider_keys_reach_their_provider_and_secrets_in_them_are_resolved() {
        let text = format!(
            "{BASE}\n[[endpoint]]\nname='i'\nprovider='isendu'\npath='/i'\nsecret='test-token'\nkey_id='k'\napi_secret='env:WB_TEST_SURELY_UNSET_API'\n"
        );
        let e = err(&text);
        assert!(
            e.contains("endpoint[0].api_secret") && e.contains("WB_TEST_SURELY_UNSET_API"),
            "{e}"
        );
        // Another provider's key on an endpoint is checked and ignored, as it always was.
        let e = err(&format!(
            "{BASE}\n[[endpoint]]\nname='p'\nprovider='peddler'\npath='/p'\nsecret='x'\n[endpoint.generic]\nbogus = 1\n"
        ));
        assert!(
            e.contains("`endpoint[0].generic.bogus`: unknown field"),
            "{e}"
        );
        let text = format!(
            "{BASE}\n[[endpoint]]\nname='p'\nprovider='peddler'\npath='/p'\nsecret='x'\nkey_id='k'\n"
        );
        assert!(
            format!(
                "{:?}",
                Config::from_toml(&text).unwrap().endpoints[0].options
            ) == "{}"
        );
        let text = format!(
            "{BASE}\n[[endpoint]]\nname='m'\nprovider='mailship'\npath='/m'\nsecret='x'\nevent='stock_advice'\n"
        );
        let cfg = Config::from_toml(&text).unwrap();
        assert_eq!(
            cfg.endpoints[0].routing_keys(),
            [
                "mailship.stock_advice.status_changed",
                "mailship.unrecognized"
            ]
        );
        let e = err(&text.replace("stock_advice", "nonsense"));
        assert!(e.contains("endpoint[0].event"), "{e}");
    }

    #[test]
    fn duplicate_paths_are_rejected() {
        let text = format!(
            "{BASE}\n[[endpoint]]\nname='a'\nprovider='peddler'\npath='/p'\nsecret='x'\n[[endpoint]]\nname='b'\nprovider='peddler'\npath='/p'\nsecret='y'\n"
        );
        assert!(err(&text).contains("endpoint[1].path"));
    }
}

/// Endpoints for unit tests of the layers above.
#[cfg(test)]
pub mod testing {
    use super::*;

    /// An endpoint of `provider` (by name) at `/webhooks/<provider>`, with its default auth.
    pub fn endpoint(provider: &str) -> EndpointConfig {
        let provider = crate::providers::find(provider).expect("known provider");
        EndpointConfig {
            name: format!("{}-test", provider.name),
            provider,
            path: format!("/webhooks/{}", provider.name),
            max_body: 1024 * 1024,
            secrets: vec![Secret::new("test-secret")],
            secret_sources: vec![SecretSource::Literal],
            auth: (provider.default_auth)().unwrap_or(AuthConfig::Bearer),
            allow_ips: vec![],
            trusted_proxies: vec![],
            options: Options::default(),
        }
    }

    /// The events `ep`'s provider makes of `body` (no headers); panics on anything else.
    pub fn events(ep: &EndpointConfig, body: &[u8]) -> Vec<crate::providers::Event> {
        let inbound = crate::providers::Inbound {
            options: &ep.options,
            headers: &http::HeaderMap::new(),
            body,
        };
        match ep.provider.parse(&inbound) {
            Ok(crate::providers::Parsed::Events(events)) => events,
            other => panic!("not events: {other:?}"),
        }
    }
}
