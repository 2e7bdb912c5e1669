//! The configuration file as written: serde types with their defaults. [`super::validate`]
//! turns them into the validated types of [`super`].

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::{AuthMechanism, DedupConfig, PublishClient, QueueType, SpoolConfig, ThreadScheduling};
use crate::auth::AuthConfig;
use crate::providers::{self, Options};
use crate::units::{de_duration, de_opt_size, de_size};

/// One value or a list of values (`secret = "…"` or `secret = ["…", "…"]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub(super) fn into_vec(self) -> Vec<String> {
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
fn default_worker_threads() -> usize {
    1
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
fn default_body_budget() -> u64 {
    64 * 1024 * 1024
}
fn default_max_in_flight() -> usize {
    512
}
pub(super) fn default_true() -> bool {
    true
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

/// The file as written. [`Config::load`](super::Config::load) turns it into a validated
/// [`Config`](super::Config).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default = "default_listen")]
    pub(super) listen: SocketAddr,
    #[serde(default = "default_admin_listen")]
    pub(super) admin_listen: SocketAddr,
    #[serde(default = "default_ack_deadline", deserialize_with = "de_duration")]
    pub(super) ack_deadline: Duration,
    #[serde(default = "default_max_body", deserialize_with = "de_size")]
    pub(super) max_body: u64,
    #[serde(default = "default_worker_threads")]
    pub(super) worker_threads: usize,
    #[serde(default)]
    pub(super) thread_scheduling: ThreadScheduling,
    #[serde(default)]
    pub(super) limits: RawLimits,
    pub(super) amqp: RawAmqp,
    #[serde(default)]
    pub(super) spool: SpoolConfig,
    #[serde(default)]
    pub(super) dedup: DedupConfig,
    #[serde(default, rename = "endpoint")]
    pub(super) endpoints: Vec<RawEndpoint>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    #[serde(default = "default_header_timeout", deserialize_with = "de_duration")]
    pub(super) header_read_timeout: Duration,
    #[serde(default = "default_body_timeout", deserialize_with = "de_duration")]
    pub(super) body_read_timeout: Duration,
    #[serde(default = "default_max_connections")]
    pub(super) max_connections: usize,
    #[serde(default = "default_max_in_flight")]
    pub(super) max_in_flight: usize,
    #[serde(default = "default_body_budget", deserialize_with = "de_size")]
    pub(super) max_body_bytes_in_flight: u64,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: default_header_timeout(),
            body_read_timeout: default_body_timeout(),
            max_connections: default_max_connections(),
            max_in_flight: default_max_in_flight(),
            max_body_bytes_in_flight: default_body_budget(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAmqp {
    pub(super) urls: OneOrMany,
    #[serde(default = "default_exchange")]
    pub(super) exchange: String,
    #[serde(default = "default_true")]
    pub(super) declare_topology: bool,
    #[serde(default = "default_channels")]
    pub(super) channels: usize,
    #[serde(default = "default_connect_timeout", deserialize_with = "de_duration")]
    pub(super) connect_timeout: Duration,
    #[serde(default = "default_backoff_max", deserialize_with = "de_duration")]
    pub(super) reconnect_backoff_max: Duration,
    #[serde(default)]
    pub(super) unrouted_queue_type: QueueType,
    #[serde(default)]
    pub(super) tls_ca_file: Option<PathBuf>,
    #[serde(default)]
    pub(super) tls_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub(super) tls_key_file: Option<PathBuf>,
    #[serde(default)]
    pub(super) auth_mechanism: AuthMechanism,
    #[serde(default)]
    pub(super) publish_client: PublishClient,
}

/// One `[[endpoint]]` table. Besides the keys every endpoint has, it takes the keys of every
/// provider ([`providers::Provider::option_keys`]); [`provider_options`] hands the endpoint's
/// provider its own ones. Any other key is refused, naming it and its position.
#[derive(Debug)]
pub(super) struct RawEndpoint {
    pub(super) name: String,
    pub(super) provider: String,
    /// This endpoint's body limit, when it differs from the top-level `max_body`.
    pub(super) max_body: Option<u64>,
    pub(super) path: String,
    pub(super) secret: Option<OneOrMany>,
    pub(super) allow_ips: Vec<String>,
    pub(super) trusted_proxies: Vec<String>,
    pub(super) auth: Option<AuthConfig>,
    /// Set by [`provider_options`] once the whole file has been read.
    pub(super) options: Options,
}

/// The keys every endpoint has, in the order error messages list them.
const COMMON_KEYS: &[&str] = &[
    "name",
    "provider",
    "max_body",
    "path",
    "secret",
    "allow_ips",
    "trusted_proxies",
    "auth",
];

/// Every key an `[[endpoint]]` table may have: the common ones, then each provider's.
fn endpoint_keys() -> &'static [&'static str] {
    static KEYS: OnceLock<Vec<&'static str>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut keys = COMMON_KEYS.to_vec();
        for key in providers::ALL.iter().flat_map(|p| p.option_keys) {
            if !keys.contains(key) {
                keys.push(key);
            }
        }
        keys
    })
}

enum EndpointKey {
    Name,
    Provider,
    MaxBody,
    Path,
    Secret,
    AllowIps,
    TrustedProxies,
    Auth,
    /// A provider's key, read by [`provider_options`].
    ProviderOption,
}

/// Reads a key of an `[[endpoint]]` table, refusing unknown ones while the key is read, so
/// that the error carries the key's position.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = EndpointKey;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<EndpointKey, D::Error> {
        d.deserialize_identifier(self)
    }
}

impl Visitor<'_> for KeySeed {
    type Value = EndpointKey;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an endpoint key")
    }
    fn visit_str<E: de::Error>(self, key: &str) -> Result<EndpointKey, E> {
        Ok(match key {
            "name" => EndpointKey::Name,
            "provider" => EndpointKey::Provider,
            "max_body" => EndpointKey::MaxBody,
            "path" => EndpointKey::Path,
            "secret" => EndpointKey::Secret,
            "allow_ips" => EndpointKey::AllowIps,
            "trusted_proxies" => EndpointKey::TrustedProxies,
            "auth" => EndpointKey::Auth,
            _ if endpoint_keys().contains(&key) => EndpointKey::ProviderOption,
            _ => return Err(E::unknown_field(key, endpoint_keys())),
        })
    }
}

/// `max_body` of an endpoint: a size.
struct OptSize;

impl<'de> DeserializeSeed<'de> for OptSize {
    type Value = Option<u64>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<u64>, D::Error> {
        de_opt_size(d)
    }
}

struct EndpointVisitor;

impl<'de> Visitor<'de> for EndpointVisitor {
    type Value = RawEndpoint;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an [[endpoint]] table")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawEndpoint, A::Error> {
        let (mut name, mut provider, mut path) = (None, None, None);
        let mut ep = RawEndpoint {
            name: String::new(),
            provider: String::new(),
            max_body: None,
            path: String::new(),
            secret: None,
            allow_ips: Vec::new(),
            trusted_proxies: Vec::new(),
            auth: None,
            options: Options::default(),
        };
        while let Some(key) = map.next_key_seed(KeySeed)? {
            match key {
                EndpointKey::Name => name = Some(map.next_value()?),
                EndpointKey::Provider => provider = Some(map.next_value()?),
                EndpointKey::MaxBody => ep.max_body = map.next_value_seed(OptSize)?,
                EndpointKey::Path => path = Some(map.next_value()?),
                EndpointKey::Secret => ep.secret = Some(map.next_value()?),
                EndpointKey::AllowIps => ep.allow_ips = map.next_value()?,
                EndpointKey::TrustedProxies => ep.trusted_proxies = map.next_value()?,
                EndpointKey::Auth => ep.auth = Some(map.next_value()?),
                EndpointKey::ProviderOption => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        ep.name = name.ok_or_else(|| de::Error::missing_field("name"))?;
        ep.provider = provider.ok_or_else(|| de::Error::missing_field("provider"))?;
        ep.path = path.ok_or_else(|| de::Error::missing_field("path"))?;
        Ok(ep)
    }
}

impl<'de> Deserialize<'de> for RawEndpoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_struct("RawEndpoint", endpoint_keys(), EndpointVisitor)
    }
}

/// The file's `[[endpoint]]` tables, in order, as parsed (with positions).
pub(super) fn endpoint_tables<'i>(doc: &DeTable<'i>) -> Vec<Spanned<DeTable<'i>>> {
    let endpoints = doc
        .iter()
        .find(|(key, _)| key.get_ref().as_ref() == "endpoint")
        .map(|(_, value)| value.get_ref());
    let Some(DeValue::Array(tables)) = endpoints else {
        return Vec::new();
    };
    tables
        .iter()
        .filter_map(|table| match table.get_ref() {
            DeValue::Table(t) => Some(Spanned::new(table.span(), t.clone())),
            _ => None,
        })
        .collect()
}

/// The endpoint's provider's [`Options`], from the keys of `table` that are the provider's own
/// (errors carry positions in the file). Keys of other providers are read by those providers
/// too and must be just as valid, but are not used. An unknown provider has none (validation
/// refuses it).
pub(super) fn provider_options(
    provider: &str,
    table: Spanned<DeTable<'_>>,
) -> Result<Options, toml::de::Error> {
    let span = table.span();
    let table = table.into_inner();
    let mut options = Options::default();
    for p in providers::ALL {
        let mut keys = DeTable::new();
        for (key, value) in &table {
            if p.option_keys.contains(&key.get_ref().as_ref()) {
                keys.insert(key.clone(), value.clone());
            }
        }
        let own = p.name == provider;
        if !own && keys.is_empty() {
            continue;
        }
        let read = (p.options)(ValueDeserializer::from(Spanned::new(
            span.clone(),
            DeValue::Table(keys),
        )))?;
        if own {
            options = read;
        }
    }
    Ok(options)
}
