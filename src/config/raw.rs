//! The configuration file as written: serde types with their defaults. [`super::validate`]
//! turns them into the validated types of [`super`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{AuthMechanism, DedupConfig, QueueType, SpoolConfig};
use crate::auth::AuthConfig;
use crate::providers::generic::GenericConfig;
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

/// The file as written. [`Config::load`] turns it into a validated [`Config`].
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEndpoint {
    pub(super) name: String,
    pub(super) provider: String,
    /// This endpoint's body limit, when it differs from the top-level `max_body`.
    #[serde(default, deserialize_with = "de_opt_size")]
    pub(super) max_body: Option<u64>,
    pub(super) path: String,
    #[serde(default)]
    pub(super) secret: Option<OneOrMany>,
    #[serde(default)]
    pub(super) allow_ips: Vec<String>,
    #[serde(default)]
    pub(super) trusted_proxies: Vec<String>,
    #[serde(default)]
    pub(super) auth: Option<AuthConfig>,
    /// isendu: expected `keyId` of the URL handshake.
    #[serde(default)]
    pub(super) key_id: Option<String>,
    /// isendu: the API secret key answered to the URL handshake.
    #[serde(default)]
    pub(super) api_secret: Option<String>,
    /// mailship: fixed event for this endpoint instead of recognising the shape.
    #[serde(default)]
    pub(super) event: Option<String>,
    #[serde(default)]
    pub(super) generic: Option<GenericConfig>,
}
