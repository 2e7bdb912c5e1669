//! Configuration: plain serde types read from TOML, resolved secrets, and validation that names
//! the offending key. Everything downstream receives a validated [`Config`]; nothing re-reads the
//! file or the environment after start-up.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

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

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// A resolved secret value. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret's bytes, for the verifiers and for signing in `send`. Never log the result.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where a secret comes from, as written in the file: `env:NAME`, `file:/path`, or a literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
    Literal,
}

impl SecretSource {
    fn of(raw: &str) -> Self {
        if let Some(name) = raw.strip_prefix("env:") {
            Self::Env(name.to_string())
        } else if let Some(path) = raw.strip_prefix("file:") {
            Self::File(PathBuf::from(path))
        } else {
            Self::Literal
        }
    }
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env(name) => write!(f, "env:{name}"),
            Self::File(path) => write!(f, "file:{}", path.display()),
            Self::Literal => f.write_str("literal"),
        }
    }
}

/// Resolve one secret reference. `file:` contents are trimmed of a trailing newline, the way
/// Kubernetes Secret volumes and `echo > file` leave them.
pub fn resolve_secret(raw: &str, key: &str) -> Result<(Secret, SecretSource), ConfigError> {
    let source = SecretSource::of(raw);
    let value = match &source {
        SecretSource::Env(name) => std::env::var(name)
            .map_err(|_| invalid(key, format!("environment variable {name} is not set")))?,
        SecretSource::File(path) => std::fs::read_to_string(path)
            .map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))?
            .trim_end_matches(['\r', '\n'])
            .to_string(),
        SecretSource::Literal => raw.to_string(),
    };
    if value.is_empty() {
        return Err(invalid(key, "secret is empty"));
    }
    Ok((Secret(value), source))
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}")))
}

fn de_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Int(u64),
        Text(String),
    }
    match Size::deserialize(d)? {
        Size::Int(n) => Ok(n),
        Size::Text(s) => s
            .parse::<bytesize::ByteSize>()
            .map(|b| b.as_u64())
            .map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}"))),
    }
}

/// One value or a list of values (`secret = "…"` or `secret = ["…", "…"]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s],
            Self::Many(v) => v,
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8080))
}
fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 9090))
}
fn default_ack_deadline() -> Duration {
    Duration::from_secs(4)
}
fn default_max_body() -> u64 {
    1024 * 1024
}
fn default_header_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_body_timeout() -> Duration {
    Duration::from_secs(3)
}
fn default_max_connections() -> usize {
    1024
}
fn default_max_in_flight() -> usize {
    512
}
fn default_true() -> bool {
    true
}

/// The file as written. [`Config::load`] turns it into a validated [`Config`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_listen")]
    listen: SocketAddr,
    #[serde(default = "default_admin_listen")]
    admin_listen: SocketAddr,
    #[serde(default = "default_ack_deadline", deserialize_with = "de_duration")]
    ack_deadline: Duration,
    #[serde(default = "default_max_body", deserialize_with = "de_size")]
    max_body: u64,
    #[serde(default)]
    limits: RawLimits,
    amqp: RawAmqp,
    #[serde(default)]
    spool: SpoolConfig,
    #[serde(default)]
    dedup: DedupConfig,
    #[serde(default, rename = "endpoint")]
    endpoints: Vec<RawEndpoint>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    #[serde(default = "default_header_timeout", deserialize_with = "de_duration")]
    header_read_timeout: Duration,
    #[serde(default = "default_body_timeout", deserialize_with = "de_duration")]
    body_read_timeout: Duration,
    #[serde(default = "default_max_connections")]
    max_connections: usize,
    #[serde(default = "default_max_in_flight")]
    max_in_flight: usize,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: default_header_timeout(),
            body_read_timeout: default_body_timeout(),
            max_connections: default_max_connections(),
            max_in_flight: default_max_in_flight(),
        }
    }
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
}

fn default_exchange() -> String {
    "webhooks".into()
}
fn default_channels() -> usize {
    4
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(3)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(10)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAmqp {
    urls: OneOrMany,
    #[serde(default = "default_exchange")]
    exchange: String,
    #[serde(default = "default_true")]
    declare_topology: bool,
    #[serde(default = "default_channels")]
    channels: usize,
    #[serde(default = "default_connect_timeout", deserialize_with = "de_duration")]
    connect_timeout: Duration,
    #[serde(default = "default_backoff_max", deserialize_with = "de_duration")]
    reconnect_backoff_max: Duration,
    #[serde(default)]
    unrouted_queue_type: QueueType,
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

/// Broker settings. URLs carry credentials, so they are [`Secret`]s and print redacted.
#[derive(Debug, Clone)]
pub struct AmqpConfig {
    /// Tried in order on every (re)connect: the first that answers wins.
    pub urls: Vec<Secret>,
    pub exchange: String,
    /// Declare the exchange, its alternate exchange and the unrouted queue on every connect.
    pub declare_topology: bool,
    /// Confirm-mode channels publishes are spread over.
    pub channels: usize,
    pub connect_timeout: Duration,
    pub reconnect_backoff_max: Duration,
    /// Type of the unrouted queue, when `declare_topology` is on.
    pub unrouted_queue_type: QueueType,
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

/// URL with the password replaced, for logs and `check-config`.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..scheme_end + 3], user, &url[at..])
        }
        _ => url.to_string(),
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
    #[serde(default = "default_true")]
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
    #[serde(default = "default_true")]
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

/// The providers the bridge knows. Each has a module under `providers/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Modexpress,
    Wegocod,
    Isendu,
    Peddler,
    Mailship,
    Generic,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Modexpress => "modexpress",
            Self::Wegocod => "wegocod",
            Self::Isendu => "isendu",
            Self::Peddler => "peddler",
            Self::Mailship => "mailship",
            Self::Generic => "generic",
        }
    }
}

/// How requests to an endpoint prove they come from the provider.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    /// `Authorization: Bearer <secret>`.
    Bearer,
    /// `Authorization: Basic base64(user:secret)`; `username` checked when set.
    Basic {
        #[serde(default)]
        username: Option<String>,
    },
    /// A header carrying the secret verbatim.
    Header { header: String },
    /// The secret as the last path segment: `<path>/<secret>`.
    PathToken,
    /// A MAC of the raw body in a header.
    Hmac {
        header: String,
        #[serde(default)]
        algorithm: HmacAlgorithm,
        #[serde(default)]
        encoding: MacEncoding,
        /// Text before the MAC in the header, e.g. `sha256=`.
        #[serde(default)]
        prefix: Option<String>,
    },
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature` (`v1,<b64>`…).
    StandardWebhooks {
        #[serde(default = "default_tolerance", deserialize_with = "de_duration")]
        tolerance: Duration,
    },
}

fn default_tolerance() -> Duration {
    Duration::from_secs(300)
}

impl AuthConfig {
    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::Bearer => "bearer",
            Self::Basic { .. } => "basic",
            Self::Header { .. } => "header",
            Self::PathToken => "path_token",
            Self::Hmac { .. } => "hmac",
            Self::StandardWebhooks { .. } => "standard_webhooks",
        }
    }

    /// The scheme a provider uses when the endpoint does not say otherwise (SPEC §4).
    pub fn default_for(provider: ProviderKind) -> Option<Self> {
        match provider {
            ProviderKind::Modexpress => Some(Self::Bearer),
            ProviderKind::Wegocod => Some(Self::Hmac {
                header: "x-webhook-signature".into(),
                algorithm: HmacAlgorithm::Sha256,
                encoding: MacEncoding::Hex,
                prefix: None,
            }),
            ProviderKind::Isendu | ProviderKind::Mailship => Some(Self::PathToken),
            ProviderKind::Peddler => Some(Self::Header {
                header: "x-webhook-shared-token".into(),
            }),
            ProviderKind::Generic => None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HmacAlgorithm {
    #[default]
    Sha256,
    Sha512,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MacEncoding {
    #[default]
    Hex,
    Base64,
}

/// Settings of the generic provider: where to find the event name, entity id and batch array.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GenericConfig {
    /// Name used as the routing-key prefix and `data.provider` (default: the endpoint name).
    #[serde(default)]
    pub source: Option<String>,
    /// JSON pointer to the event name, e.g. `/type`.
    #[serde(default)]
    pub event_pointer: Option<String>,
    /// Header carrying the event name, e.g. `X-GitHub-Event`.
    #[serde(default)]
    pub event_header: Option<String>,
    /// JSON pointer to the entity id, used as `subject` and in the event id.
    #[serde(default)]
    pub entity_id_pointer: Option<String>,
    /// JSON pointer to an array: each element becomes its own event.
    #[serde(default)]
    pub split_pointer: Option<String>,
    /// JSON pointer to the provider's own event id, if it has one.
    #[serde(default)]
    pub id_pointer: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    name: String,
    provider: ProviderKind,
    path: String,
    #[serde(default)]
    secret: Option<OneOrMany>,
    #[serde(default)]
    allow_ips: Vec<String>,
    #[serde(default)]
    trusted_proxies: Vec<String>,
    #[serde(default)]
    auth: Option<AuthConfig>,
    /// isendu: expected `keyId` of the URL handshake.
    #[serde(default)]
    key_id: Option<String>,
    /// isendu: the API secret key answered to the URL handshake.
    #[serde(default)]
    api_secret: Option<String>,
    /// mailship: fixed event for this endpoint instead of recognising the shape.
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    generic: Option<GenericConfig>,
}

/// A validated endpoint: one provider account reachable at one path.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Label in metrics, logs and the envelope's `account`.
    pub name: String,
    pub provider: ProviderKind,
    /// Path prefix; with path-token auth the token is the one segment after it.
    pub path: String,
    /// Every listed secret verifies, so a secret can be rotated without downtime.
    pub secrets: Vec<Secret>,
    /// Where each secret came from, for `check-config`.
    pub secret_sources: Vec<SecretSource>,
    pub auth: AuthConfig,
    pub allow_ips: Vec<IpNet>,
    /// Proxies whose `X-Forwarded-For` is believed when checking `allow_ips`.
    pub trusted_proxies: Vec<IpNet>,
    pub key_id: Option<String>,
    pub api_secret: Option<Secret>,
    pub event: Option<String>,
    pub generic: GenericConfig,
}

/// The validated configuration passed to every component.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// Every provider request is answered before this, whatever the broker does.
    pub ack_deadline: Duration,
    pub max_body: usize,
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
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<inline>"),
            message: e.to_string().trim_end().to_string(),
        })?;
        Self::validate(raw)
    }

    fn validate(raw: RawConfig) -> Result<Self, ConfigError> {
        let mut warnings = Vec::new();
        if raw.ack_deadline < Duration::from_millis(100)
            || raw.ack_deadline > Duration::from_secs(30)
        {
            return Err(invalid("ack_deadline", "must be between 100ms and 30s"));
        }
        if raw.max_body == 0 || raw.max_body > 64 * 1024 * 1024 {
            return Err(invalid("max_body", "must be between 1 byte and 64MiB"));
        }
        if raw.limits.max_connections == 0 {
            return Err(invalid("limits.max_connections", "must be at least 1"));
        }
        if raw.limits.max_in_flight == 0 {
            return Err(invalid("limits.max_in_flight", "must be at least 1"));
        }
        let urls = raw.amqp.urls.into_vec();
        if urls.is_empty() {
            return Err(invalid("amqp.urls", "at least one URL is required"));
        }
        let mut amqp_urls = Vec::with_capacity(urls.len());
        for (i, url) in urls.iter().enumerate() {
            let key = format!("amqp.urls[{i}]");
            let (secret, _) = resolve_secret(url, &key)?;
            if !(secret.expose().starts_with("amqp://") || secret.expose().starts_with("amqps://"))
            {
                return Err(invalid(key, "must start with amqp:// or amqps://"));
            }
            amqp_urls.push(secret);
        }
        if raw.amqp.exchange.is_empty() {
            return Err(invalid("amqp.exchange", "must not be empty"));
        }
        if raw.amqp.channels == 0 || raw.amqp.channels > 64 {
            return Err(invalid("amqp.channels", "must be between 1 and 64"));
        }
        if raw.spool.enabled && raw.spool.max_bytes < 4096 {
            return Err(invalid("spool.max_bytes", "must be at least 4KiB"));
        }
        if raw.dedup.enabled && raw.dedup.max_entries == 0 {
            return Err(invalid("dedup.max_entries", "must be at least 1"));
        }

        let mut endpoints = Vec::with_capacity(raw.endpoints.len());
        let mut names = HashSet::new();
        let mut paths = HashSet::new();
        for (i, ep) in raw.endpoints.into_iter().enumerate() {
            let key = |field: &str| format!("endpoint[{i}].{field}");
            if ep.name.is_empty()
                || !ep
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(invalid(key("name"), "must be non-empty [A-Za-z0-9._-]"));
            }
            if !names.insert(ep.name.clone()) {
                return Err(invalid(
                    key("name"),
                    format!("duplicate endpoint name {:?}", ep.name),
                ));
            }
            if !ep.path.starts_with('/') || ep.path.len() > 1 && ep.path.ends_with('/') {
                return Err(invalid(
                    key("path"),
                    "must start with '/' and not end with '/'",
                ));
            }
            if !paths.insert(ep.path.clone()) {
                return Err(invalid(
                    key("path"),
                    format!("duplicate path {:?}", ep.path),
                ));
            }
            let auth = match ep.auth {
                Some(a) => a,
                None => AuthConfig::default_for(ep.provider).ok_or_else(|| {
                    invalid(key("auth"), "the generic provider needs an auth table")
                })?,
            };
            let raw_secrets = ep
                .secret
                .map(OneOrMany::into_vec)
                .ok_or_else(|| invalid(key("secret"), "every endpoint needs a secret"))?;
            if raw_secrets.is_empty() {
                return Err(invalid(key("secret"), "at least one secret is required"));
            }
            let mut secrets = Vec::new();
            let mut secret_sources = Vec::new();
            for raw_secret in &raw_secrets {
                let (secret, source) = resolve_secret(raw_secret, &key("secret"))?;
                if source == SecretSource::Literal {
                    warnings.push(format!(
                        "{} is a literal secret; prefer env: or file:",
                        key("secret")
                    ));
                }
                if matches!(auth, AuthConfig::PathToken)
                    && !secret
                        .expose()
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.~".contains(c))
                {
                    return Err(invalid(
                        key("secret"),
                        "a path token must be URL-safe [A-Za-z0-9-_.~]",
                    ));
                }
                if let AuthConfig::StandardWebhooks { .. } = auth {
                    crate::auth::standard_webhooks_key(&secret)
                        .map_err(|e| invalid(key("secret"), e.to_string()))?;
                }
                secrets.push(secret);
                secret_sources.push(source);
            }
            if let AuthConfig::Hmac { header, .. } | AuthConfig::Header { header } = &auth
                && http::HeaderName::from_bytes(header.as_bytes()).is_err()
            {
                return Err(invalid(key("auth.header"), "not a valid header name"));
            }
            let allow_ips = parse_nets(&ep.allow_ips, &key("allow_ips"))?;
            let trusted_proxies = parse_nets(&ep.trusted_proxies, &key("trusted_proxies"))?;
            let api_secret = match ep.api_secret {
                Some(raw) => Some(resolve_secret(&raw, &key("api_secret"))?.0),
                None => None,
            };
            if ep.provider == ProviderKind::Isendu && api_secret.is_none() {
                warnings.push(format!(
                    "{} is not set: isendu's URL check ({{\"keyId\": …}}) will be answered 401 \
                     and isendu will not use the URL",
                    key("api_secret")
                ));
            }
            if let Some(event) = &ep.event
                && ep.provider == ProviderKind::Mailship
                && crate::providers::mailship::MailshipEvent::from_name(event).is_none()
            {
                let names: Vec<&str> = crate::providers::mailship::MailshipEvent::ALL
                    .iter()
                    .map(|e| e.name())
                    .collect();
                return Err(invalid(
                    key("event"),
                    format!(
                        "unknown Mailship event {event:?}; one of {}",
                        names.join(", ")
                    ),
                ));
            }
            let generic = ep.generic.unwrap_or_default();
            if ep.provider == ProviderKind::Generic {
                if generic.event_pointer.is_none() && generic.event_header.is_none() {
                    return Err(invalid(
                        key("generic"),
                        "set event_pointer or event_header so events can be routed",
                    ));
                }
                for (field, p) in [
                    ("event_pointer", &generic.event_pointer),
                    ("entity_id_pointer", &generic.entity_id_pointer),
                    ("split_pointer", &generic.split_pointer),
                    ("id_pointer", &generic.id_pointer),
                ] {
                    if let Some(p) = p
                        && !p.is_empty()
                        && !p.starts_with('/')
                    {
                        return Err(invalid(
                            key(&format!("generic.{field}")),
                            "a JSON pointer starts with '/'",
                        ));
                    }
                }
                if let Some(src) = &generic.source
                    && (src.is_empty()
                        || !src
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c)))
                {
                    return Err(invalid(
                        key("generic.source"),
                        "must be non-empty [A-Za-z0-9_-] (it starts the routing key)",
                    ));
                }
            }
            endpoints.push(EndpointConfig {
                name: ep.name,
                provider: ep.provider,
                path: ep.path,
                secrets,
                secret_sources,
                auth,
                allow_ips,
                trusted_proxies,
                key_id: ep.key_id,
                api_secret,
                event: ep.event,
                generic,
            });
        }
        if endpoints.is_empty() {
            return Err(invalid("endpoint", "at least one [[endpoint]] is required"));
        }
        Ok(Self {
            listen: raw.listen,
            admin_listen: raw.admin_listen,
            ack_deadline: raw.ack_deadline,
            max_body: usize::try_from(raw.max_body).unwrap_or(usize::MAX),
            limits: Limits {
                header_read_timeout: raw.limits.header_read_timeout,
                body_read_timeout: raw.limits.body_read_timeout,
                max_connections: raw.limits.max_connections,
                max_in_flight: raw.limits.max_in_flight,
            },
            amqp: AmqpConfig {
                urls: amqp_urls,
                exchange: raw.amqp.exchange,
                declare_topology: raw.amqp.declare_topology,
                channels: raw.amqp.channels,
                connect_timeout: raw.amqp.connect_timeout,
                reconnect_backoff_max: raw.amqp.reconnect_backoff_max,
                unrouted_queue_type: raw.amqp.unrouted_queue_type,
            },
            spool: raw.spool,
            dedup: raw.dedup,
            endpoints,
            warnings,
        })
    }
}

fn parse_nets(raw: &[String], key: &str) -> Result<Vec<IpNet>, ConfigError> {
    raw.iter()
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| invalid(key, format!("{s:?} is not an IP address or CIDR")))
        })
        .collect()
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
    fn secret_debug_is_redacted() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "*** ***");
    }

    #[test]
    fn url_password_is_redacted() {
        assert_eq!(
            redact_url("amqp://guest:pw@host:5672/%2f"),
            "amqp://guest:***@host:5672/%2f"
        );
        assert_eq!(redact_url("amqp://host"), "amqp://host");
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
        let with = format!("{without}api_secret='test-api-secret'\n");
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
    fn duplicate_paths_are_rejected() {
        let text = format!(
            "{BASE}\n[[endpoint]]\nname='a'\nprovider='peddler'\npath='/p'\nsecret='x'\n[[endpoint]]\nname='b'\nprovider='peddler'\npath='/p'\nsecret='y'\n"
        );
        assert!(err(&text).contains("endpoint[1].path"));
    }
}
