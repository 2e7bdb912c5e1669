//! From the file as written ([`super::raw`]) to a validated [`Config`]: one function per section,
//! each error naming the key. Provider-specific options are checked by the provider itself
//! ([`crate::providers::Provider::check`]).

use std::collections::HashSet;
use std::time::Duration;

use ipnet::IpNet;

use super::raw::{RawAmqp, RawConfig, RawEndpoint, RawLimits};
use super::{AmqpConfig, AuthMechanism, Config, ConfigError, EndpointConfig, Limits, TlsFiles};
use crate::auth::{self, AuthConfig};
use crate::providers;
use crate::secret::{self, Secret, SecretSource};

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// Resolve one secret reference, naming `key` in the error.
fn resolve_secret(raw: &str, key: &str) -> Result<(Secret, SecretSource), ConfigError> {
    secret::resolve(raw).map_err(|e| invalid(key, e.to_string()))
}

/// More async worker threads than a sidecar could ever use.
const MAX_WORKER_THREADS: usize = 64;

/// The largest `max_body` the spool's records can hold with room for the envelope.
const MAX_BODY_LIMIT: u64 = 64 * 1024 * 1024;

pub(super) fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    if raw.ack_deadline < Duration::from_millis(100) || raw.ack_deadline > Duration::from_secs(30) {
        return Err(invalid("ack_deadline", "must be between 100ms and 30s"));
    }
    if raw.max_body == 0 || raw.max_body > MAX_BODY_LIMIT {
        return Err(invalid("max_body", "must be between 1 byte and 64MiB"));
    }
    if !(1..=MAX_WORKER_THREADS).contains(&raw.worker_threads) {
        return Err(invalid("worker_threads", "must be between 1 and 64"));
    }
    let limits = limits(raw.limits, raw.max_body)?;
    let amqp = amqp(raw.amqp)?;
    if raw.spool.enabled && raw.spool.max_bytes < 4096 {
        return Err(invalid("spool.max_bytes", "must be at least 4KiB"));
    }
    if raw.spool.enabled && !(4096..=1024 * 1024 * 1024).contains(&raw.spool.queue_max_bytes) {
        return Err(invalid(
            "spool.queue_max_bytes",
            "must be between 4KiB and 1GiB",
        ));
    }
    if raw.dedup.enabled && raw.dedup.max_entries == 0 {
        return Err(invalid("dedup.max_entries", "must be at least 1"));
    }
    let mut warnings = Vec::new();
    let mut endpoints = Vec::with_capacity(raw.endpoints.len());
    let mut names = HashSet::new();
    let mut paths = HashSet::new();
    for (i, ep) in raw.endpoints.into_iter().enumerate() {
        let key = |field: &str| format!("endpoint[{i}].{field}");
        if !names.insert(ep.name.clone()) {
            return Err(invalid(
                key("name"),
                format!("duplicate endpoint name {:?}", ep.name),
            ));
        }
        if !paths.insert(ep.path.clone()) {
            return Err(invalid(
                key("path"),
                format!("duplicate path {:?}", ep.path),
            ));
        }
        let max_body = endpoint_max_body(ep.max_body, raw.max_body, &limits, &key)?;
        endpoints.push(endpoint(ep, max_body, &key, &mut warnings)?);
    }
    if endpoints.is_empty() {
        return Err(invalid("endpoint", "at least one [[endpoint]] is required"));
    }
    Ok(Config {
        listen: raw.listen,
        admin_listen: raw.admin_listen,
        ack_deadline: raw.ack_deadline,
        max_body: usize::try_from(raw.max_body).unwrap_or(usize::MAX),
        worker_threads: raw.worker_threads,
        thread_scheduling: raw.thread_scheduling,
        limits,
        amqp,
        spool: raw.spool,
        dedup: raw.dedup,
        endpoints,
        warnings,
    })
}

/// Bounds of the `[limits]` timeouts: below 100 ms legitimate senders on a slow link are cut
/// off; above a minute a slow client holds a connection (and its body buffer) for that long.
const LIMIT_TIMEOUTS: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(60));

fn limits(raw: RawLimits, max_body: u64) -> Result<Limits, ConfigError> {
    let (min, max) = LIMIT_TIMEOUTS;
    for (key, value) in [
        ("limits.header_read_timeout", raw.header_read_timeout),
        ("limits.body_read_timeout", raw.body_read_timeout),
    ] {
        if value < min || value > max {
            return Err(invalid(key, "must be between 100ms and 60s"));
        }
    }
    if raw.max_connections == 0 {
        return Err(invalid("limits.max_connections", "must be at least 1"));
    }
    if raw.max_in_flight == 0 {
        return Err(invalid("limits.max_in_flight", "must be at least 1"));
    }
    if raw.max_body_bytes_in_flight < max_body {
        return Err(invalid(
            "limits.max_body_bytes_in_flight",
            "must be at least max_body (one largest body must fit)",
        ));
    }
    Ok(Limits {
        max_body_bytes_in_flight: usize::try_from(raw.max_body_bytes_in_flight)
            .unwrap_or(usize::MAX),
        header_read_timeout: raw.header_read_timeout,
        body_read_timeout: raw.body_read_timeout,
        max_connections: raw.max_connections,
        max_in_flight: raw.max_in_flight,
    })
}

fn amqp(raw: RawAmqp) -> Result<AmqpConfig, ConfigError> {
    let urls = raw.urls.into_vec();
    if urls.is_empty() {
        return Err(invalid("amqp.urls", "at least one URL is required"));
    }
    let mut resolved = Vec::with_capacity(urls.len());
    for (i, url) in urls.iter().enumerate() {
        let key = format!("amqp.urls[{i}]");
        let (secret, _) = resolve_secret(url, &key)?;
        if !(secret.expose().starts_with("amqp://") || secret.expose().starts_with("amqps://")) {
            return Err(invalid(key, "must start with amqp:// or amqps://"));
        }
        resolved.push(secret);
    }
    if raw.exchange.is_empty() {
        return Err(invalid("amqp.exchange", "must not be empty"));
    }
    if raw.channels == 0 || raw.channels > 64 {
        return Err(invalid("amqp.channels", "must be between 1 and 64"));
    }
    let tls = TlsFiles {
        ca_file: raw.tls_ca_file,
        cert_file: raw.tls_cert_file,
        key_file: raw.tls_key_file,
    };
    tls_settings(&tls, raw.auth_mechanism, &resolved)?;
    Ok(AmqpConfig {
        urls: resolved,
        exchange: raw.exchange,
        declare_topology: raw.declare_topology,
        channels: raw.channels,
        connect_timeout: raw.connect_timeout,
        reconnect_backoff_max: raw.reconnect_backoff_max,
        unrouted_queue_type: raw.unrouted_queue_type,
        tls,
        auth_mechanism: raw.auth_mechanism,
        publish_client: raw.publish_client,
    })
}

/// The TLS files go together with `amqps://` URLs, the certificate with its key, `external`
/// with a certificate; the files are read and checked now (and again on every connect).
fn tls_settings(
    tls: &TlsFiles,
    mechanism: AuthMechanism,
    urls: &[Secret],
) -> Result<(), ConfigError> {
    match (&tls.cert_file, &tls.key_file) {
        (Some(_), None) => {
            return Err(invalid(
                "amqp.tls_key_file",
                "required with amqp.tls_cert_file (the certificate's private key)",
            ));
        }
        (None, Some(_)) => {
            return Err(invalid(
                "amqp.tls_cert_file",
                "required with amqp.tls_key_file (the key's certificate)",
            ));
        }
        _ => {}
    }
    if mechanism == AuthMechanism::External && tls.cert_file.is_none() {
        return Err(invalid(
            "amqp.auth_mechanism",
            "\"external\" logs in with the client certificate: set amqp.tls_cert_file and \
             amqp.tls_key_file",
        ));
    }
    let plain = urls
        .iter()
        .position(|u| !u.expose().starts_with("amqps://"));
    if let Some(i) = plain
        && (tls.any() || mechanism == AuthMechanism::External)
    {
        return Err(invalid(
            format!("amqp.urls[{i}]"),
            "must be amqps:// when amqp.tls_ca_file, tls_cert_file, tls_key_file or \
             auth_mechanism = \"external\" is set (they apply to TLS connections only)",
        ));
    }
    tls.read()
        .map(|_| ())
        .map_err(|e| invalid(format!("amqp.{}", e.key()), e.to_string()))
}

/// An endpoint's body limit: its own `max_body`, else the top-level one; within the spool's
/// record size and the body budget.
fn endpoint_max_body(
    own: Option<u64>,
    default: u64,
    limits: &Limits,
    key: &dyn Fn(&str) -> String,
) -> Result<usize, ConfigError> {
    let max_body = match own {
        Some(n) if n == 0 || n > MAX_BODY_LIMIT => {
            return Err(invalid(key("max_body"), "must be between 1 byte and 64MiB"));
        }
        Some(n) => n,
        None => default,
    };
    let max_body = usize::try_from(max_body).unwrap_or(usize::MAX);
    if max_body > limits.max_body_bytes_in_flight {
        return Err(invalid(
            key("max_body"),
            "must be at most limits.max_body_bytes_in_flight (one largest body must fit)",
        ));
    }
    Ok(max_body)
}

/// One `[[endpoint]]`: name, path, provider, auth, secrets, networks, provider options.
fn endpoint(
    ep: RawEndpoint,
    max_body: usize,
    key: &dyn Fn(&str) -> String,
    warnings: &mut Vec<String>,
) -> Result<EndpointConfig, ConfigError> {
    if ep.name.is_empty()
        || !ep
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(invalid(key("name"), "must be non-empty [A-Za-z0-9._-]"));
    }
    if !ep.path.starts_with('/') || ep.path.len() > 1 && ep.path.ends_with('/') {
        return Err(invalid(
            key("path"),
            "must start with '/' and not end with '/'",
        ));
    }
    let provider = providers::find(&ep.provider).ok_or_else(|| {
        let known: Vec<&str> = providers::ALL.iter().map(|p| p.name).collect();
        invalid(
            key("provider"),
            format!(
                "unknown provider {:?}; one of {}",
                ep.provider,
                known.join(", ")
            ),
        )
    })?;
    let auth = match ep.auth {
        Some(a) => a,
        None => (provider.default_auth)().ok_or_else(|| {
            invalid(
                key("auth"),
                format!("the {} provider needs an auth table", provider.name),
            )
        })?,
    };
    if let AuthConfig::Hmac { header, .. } | AuthConfig::Header { header } = &auth
        && http::HeaderName::from_bytes(header.as_bytes()).is_err()
    {
        return Err(invalid(key("auth.header"), "not a valid header name"));
    }
    let (secrets, secret_sources) = secrets(ep.secret.map(|s| s.into_vec()), &auth, key, warnings)?;
    let allow_ips = parse_nets(&ep.allow_ips, &key("allow_ips"))?;
    let trusted_proxies = parse_nets(&ep.trusted_proxies, &key("trusted_proxies"))?;
    let options = ep.options;
    match (provider.check)(&options) {
        Ok(found) => warnings.extend(
            found
                .into_iter()
                .map(|w| format!("{} {}", key(w.key), w.message)),
        ),
        Err(problem) => return Err(invalid(key(problem.key), problem.message)),
    }
    Ok(EndpointConfig {
        name: ep.name,
        provider,
        path: ep.path,
        max_body,

        secrets,
        secret_sources,
        auth,
        allow_ips,
        trusted_proxies,
        options,
    })
}

/// The endpoint's secrets (several during a rotation), each checked against the scheme.
fn secrets(
    raw: Option<Vec<String>>,
    auth: &AuthConfig,
    key: &dyn Fn(&str) -> String,
    warnings: &mut Vec<String>,
) -> Result<(Vec<Secret>, Vec<SecretSource>), ConfigError> {
    let raw = raw.ok_or_else(|| invalid(key("secret"), "every endpoint needs a secret"))?;
    if raw.is_empty() {
        return Err(invalid(key("secret"), "at least one secret is required"));
    }
    let mut secrets = Vec::with_capacity(raw.len());
    let mut sources = Vec::with_capacity(raw.len());
    let many = raw.len() > 1;
    for (i, raw_secret) in raw.iter().enumerate() {
        let (secret, source) = resolve_secret(raw_secret, &key("secret"))?;
        if sent_verbatim(auth) && secret.expose().len() < MIN_TOKEN_LEN {
            let which = if many {
                key(&format!("secret[{i}]"))
            } else {
                key("secret")
            };
            warnings.push(format!(
                "{which} is shorter than {MIN_TOKEN_LEN} bytes; a token sent with every request \
                 should be long and random (e.g. 32 random bytes, hex-encoded)"
            ));
        }
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
            auth::standard_webhooks_key(&secret)
                .map_err(|e| invalid(key("secret"), e.to_string()))?;
        }
        secrets.push(secret);
        sources.push(source);
    }
    Ok((secrets, sources))
}

/// Shorter tokens are warned about: they can be guessed online, one request per try.
const MIN_TOKEN_LEN: usize = 16;

/// Schemes where the secret itself travels with each request (rather than a MAC of the body).
fn sent_verbatim(auth: &AuthConfig) -> bool {
    matches!(
        auth,
        AuthConfig::Bearer
            | AuthConfig::Basic { .. }
            | AuthConfig::Header { .. }
            | AuthConfig::PathToken
    )
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
