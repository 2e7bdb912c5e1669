//! Request authentication: the schemes an endpoint can use ([`AuthConfig`], as written in its
//! `auth` table), one verifier per scheme, all constant-time, the IP allowlist ([`ip`]), and
//! [`sign()`], the exact inverse of the verifiers, used by `webhook-bridge send` and the tests, so
//! what we verify and what we would send can never drift apart.
//!
//! Verifiers see only headers, the path token and the raw body; they know nothing of providers,
//! configuration files or HTTP responses.
//!
//! # Two entry points, so that refusing is cheap
//!
//! - [`verify_head`] needs only the request head. Call it before reading the body: the schemes
//!   that do not cover the body (bearer, basic, header token, path token) are decided there
//!   ([`HeadCheck::Authenticated`] or an error), so a wrong token is refused without reading a
//!   byte of the body. For the signature schemes it checks everything the head alone can tell
//!   (the signature header is present, once, well-formed, of the right length, not too many
//!   signatures, the timestamp is fresh) and answers [`HeadCheck::BodyRequired`]: the request is
//!   *not* authenticated yet. [`needs_body`] tells the same from the configuration alone.
//! - [`verify`] decides with the body, for every scheme; after a `BodyRequired` it is the one
//!   that authenticates. (It repeats the head checks, which cost nothing next to the MAC.)
//!
//! Cost of a refusal, whatever the sender puts in the head: at most one MAC over the body per
//! configured secret. The expected MAC is computed once per secret and compared (constant time)
//! with each presented signature; signatures that cannot be a MAC of the configured algorithm
//! (wrong length) are dropped before any decoding or hashing; a Standard Webhooks header with
//! more than [`MAX_SIGNATURES`] entries is refused as [`AuthError::Malformed`] without hashing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use http::header::AsHeaderName;
use http::{HeaderMap, HeaderName};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::secret::Secret;

mod ip;
mod mac;
mod sign;

pub use self::ip::{check_ip, client_ip};
pub use self::mac::{BadWebhookKey, standard_webhooks_key};
use self::mac::{compute_mac, decode_mac};
pub use self::sign::{Signed, sign};

/// Most entries a Standard Webhooks `webhook-signature` header may carry. Senders list one
/// signature per active key (two during a rotation); a longer list is refused as malformed
/// before any hashing.
pub const MAX_SIGNATURES: usize = 8;

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
        #[serde(
            default = "default_tolerance",
            deserialize_with = "crate::units::de_duration"
        )]
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
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HmacAlgorithm {
    #[default]
    Sha256,
    Sha512,
}

impl HmacAlgorithm {
    /// Bytes of a MAC.
    pub fn output_len(self) -> usize {
        match self {
            Self::Sha256 => 32,
            Self::Sha512 => 64,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MacEncoding {
    #[default]
    Hex,
    Base64,
}

impl MacEncoding {
    /// Characters of `len` bytes in this encoding (base64 padded, as decoded).
    pub fn encoded_len(self, len: usize) -> usize {
        match self {
            Self::Hex => 2 * len,
            Self::Base64 => 4 * len.div_ceil(3),
        }
    }
}

/// Why a request was not authenticated. The HTTP layer answers 403 for the errors of
/// [`check_ip`] (`IpNotAllowed`, `ForwardedMalformed`) and 401 for the others, with a generic
/// body; the variant only goes to metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("credentials missing")]
    Missing,
    #[error("credentials present more than once")]
    Ambiguous,
    #[error("credentials malformed")]
    Malformed,
    #[error("credentials do not match")]
    Mismatch,
    #[error("timestamp outside tolerance")]
    Stale,
    #[error("source address not allowed")]
    IpNotAllowed,
    #[error("X-Forwarded-For from a trusted proxy does not parse")]
    ForwardedMalformed,
}

impl AuthError {
    /// Short stable label for metrics and logs.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Ambiguous => "ambiguous",
            Self::Malformed => "malformed",
            Self::Mismatch => "mismatch",
            Self::Stale => "stale",
            Self::IpNotAllowed => "ip_not_allowed",
            Self::ForwardedMalformed => "forwarded_malformed",
        }
    }
}

/// What a verifier gets to look at.
pub struct Credentials<'a> {
    pub headers: &'a HeaderMap,
    /// The segment after the endpoint path, if any (`/webhooks/isendu/<token>`).
    pub path_token: Option<&'a str>,
    pub body: &'a [u8],
    pub now: SystemTime,
}

/// What [`verify_head`] could decide from the request head alone.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadCheck {
    /// The scheme does not cover the body and the credentials are right: authenticated.
    Authenticated,
    /// The head is well-formed, but the scheme signs the body: the request is not authenticated
    /// until [`verify`] has seen the body.
    BodyRequired,
}

/// Whether `auth` covers the body, so that only [`verify`], after the body, can authenticate.
pub fn needs_body(auth: &AuthConfig) -> bool {
    matches!(
        auth,
        AuthConfig::Hmac { .. } | AuthConfig::StandardWebhooks { .. }
    )
}

/// Check what the request head carries, before the body is read (see the module docs).
/// `Authenticated` only for schemes that do not cover the body; `BodyRequired` otherwise.
pub fn verify_head(
    auth: &AuthConfig,
    secrets: &[Secret],
    headers: &HeaderMap,
    path_token: Option<&str>,
    now: SystemTime,
) -> Result<HeadCheck, AuthError> {
    match auth {
        AuthConfig::Bearer => {
            let value = single_header(headers, &http::header::AUTHORIZATION)?;
            let token = strip_scheme(value, "Bearer").ok_or(AuthError::Malformed)?;
            any_secret_eq(secrets, token.as_bytes())?;
        }
        AuthConfig::Basic { username } => {
            let value = single_header(headers, &http::header::AUTHORIZATION)?;
            let encoded = strip_scheme(value, "Basic").ok_or(AuthError::Malformed)?;
            let decoded = B64
                .decode(encoded.trim())
                .map_err(|_| AuthError::Malformed)?;
            let colon = decoded
                .iter()
                .position(|&b| b == b':')
                .ok_or(AuthError::Malformed)?;
            let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
            let password_ok = any_secret_eq(secrets, password);
            let user_ok = match username {
                Some(expected) => bool::from(digest_eq(user, expected.as_bytes())),
                None => true,
            };
            if !(password_ok.is_ok() && user_ok) {
                return Err(AuthError::Mismatch);
            }
        }
        AuthConfig::Header { header } => {
            let value = single_header(headers, header.as_str())?;
            any_secret_eq(secrets, value.as_bytes())?;
        }
        AuthConfig::PathToken => {
            let token = path_token.ok_or(AuthError::Missing)?;
            any_secret_eq(secrets, token.as_bytes())?;
        }
        AuthConfig::Hmac {
            header,
            algorithm,
            encoding,
            prefix,
        } => {
            hmac_signature(headers, header, *algorithm, *encoding, prefix.as_deref())?;
            return Ok(HeadCheck::BodyRequired);
        }
        AuthConfig::StandardWebhooks { tolerance } => {
            StandardHead::parse(headers, now, *tolerance)?;
            return Ok(HeadCheck::BodyRequired);
        }
    }
    Ok(HeadCheck::Authenticated)
}

/// Verify `creds` against any of `secrets` (several during a rotation): the whole decision,
/// for every scheme.
pub fn verify(
    auth: &AuthConfig,
    secrets: &[Secret],
    creds: &Credentials<'_>,
) -> Result<(), AuthError> {
    match auth {
        AuthConfig::Hmac {
            header,
            algorithm,
            encoding,
            prefix,
        } => {
            let mac = hmac_signature(
                creds.headers,
                header,
                *algorithm,
                *encoding,
                prefix.as_deref(),
            )?;
            for secret in secrets {
                if let Some(expected) =
                    compute_mac(*algorithm, secret.expose().as_bytes(), &[creds.body])
                    && bool::from(expected.as_slice().ct_eq(&mac))
                {
                    return Ok(());
                }
            }
            Err(AuthError::Mismatch)
        }
        AuthConfig::StandardWebhooks { tolerance } => {
            let head = StandardHead::parse(creds.headers, creds.now, *tolerance)?;
            head.verify(secrets, creds.body)
        }
        AuthConfig::Bearer
        | AuthConfig::Basic { .. }
        | AuthConfig::Header { .. }
        | AuthConfig::PathToken => {
            verify_head(auth, secrets, creds.headers, creds.path_token, creds.now).map(|_| ())
        }
    }
}

fn header_name(name: &str) -> Result<HeaderName, AuthError> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| AuthError::Malformed)
}

/// Exactly one value of `name`, as text. Two values are refused rather than guessed between.
/// A configured name is looked up as the text it is (checked when the configuration was
/// loaded): no `HeaderName`, whose parse would copy a non-standard name on every request.
fn single_header<K: AsHeaderName>(headers: &HeaderMap, name: K) -> Result<&str, AuthError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next().ok_or(AuthError::Missing)?;
    if values.next().is_some() {
        return Err(AuthError::Ambiguous);
    }
    first.to_str().map_err(|_| AuthError::Malformed)
}

fn strip_scheme<'v>(value: &'v str, scheme: &str) -> Option<&'v str> {
    let (given, rest) = value.split_once(' ')?;
    given.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

/// Constant-time equality that also hides the length: compare fixed-size digests.
fn digest_eq(a: &[u8], b: &[u8]) -> subtle::Choice {
    Sha256::digest(a)
        .as_slice()
        .ct_eq(Sha256::digest(b).as_slice())
}

fn any_secret_eq(secrets: &[Secret], given: &[u8]) -> Result<(), AuthError> {
    if given.is_empty() {
        return Err(AuthError::Missing);
    }
    let given = Sha256::digest(given);
    // Evaluate every secret so timing does not reveal which one matched.
    let mut ok = subtle::Choice::from(0);
    for secret in secrets {
        ok |= Sha256::digest(secret.expose().as_bytes())
            .as_slice()
            .ct_eq(given.as_slice());
    }
    if bool::from(ok) {
        Ok(())
    } else {
        Err(AuthError::Mismatch)
    }
}

/// The MAC an `hmac` sender presents: one header, the prefix, then exactly the length of a MAC
/// of `algorithm` in `encoding` (anything else is refused before it is decoded).
fn hmac_signature(
    headers: &HeaderMap,
    header: &str,
    algorithm: HmacAlgorithm,
    encoding: MacEncoding,
    prefix: Option<&str>,
) -> Result<Vec<u8>, AuthError> {
    let value = single_header(headers, header)?.trim();
    let value = match prefix {
        Some(p) => value.strip_prefix(p).ok_or(AuthError::Malformed)?,
        None => value,
    };
    if value.len() != encoding.encoded_len(algorithm.output_len()) {
        return Err(AuthError::Malformed);
    }
    let mac = decode_mac(value, encoding)?;
    if mac.len() != algorithm.output_len() {
        return Err(AuthError::Malformed);
    }
    Ok(mac)
}

/// Bytes of a Standard Webhooks signature (HMAC-SHA256).
const STANDARD_MAC_LEN: usize = 32;

/// The Standard Webhooks headers, checked: id, fresh timestamp, and the `v1` signatures that
/// can be HMAC-SHA256 outputs (at least one, at most [`MAX_SIGNATURES`] entries in all).
struct StandardHead<'h> {
    id: &'h str,
    timestamp: &'h str,
    signatures: Vec<[u8; STANDARD_MAC_LEN]>,
}

impl<'h> StandardHead<'h> {
    fn parse(
        headers: &'h HeaderMap,
        now: SystemTime,
        tolerance: Duration,
    ) -> Result<Self, AuthError> {
        let id = single_header(headers, HeaderName::from_static("webhook-id"))?;
        let timestamp = single_header(headers, HeaderName::from_static("webhook-timestamp"))?;
        let list = single_header(headers, HeaderName::from_static("webhook-signature"))?;
        let ts_secs: u64 = timestamp.trim().parse().map_err(|_| AuthError::Malformed)?;
        let now = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if now.abs_diff(ts_secs) > tolerance.as_secs() {
            return Err(AuthError::Stale);
        }
        let encoded_len = MacEncoding::Base64.encoded_len(STANDARD_MAC_LEN);
        let mut signatures = Vec::new();
        for (i, item) in list.split_whitespace().enumerate() {
            if i == MAX_SIGNATURES {
                return Err(AuthError::Malformed);
            }
            // Other versions, empty or undecodable signatures never match; the rest of the
            // list still may.
            let Some(encoded) = item.strip_prefix("v1,") else {
                continue;
            };
            if encoded.len() != encoded_len {
                continue;
            }
            if let Some(mac) = B64
                .decode(encoded)
                .ok()
                .and_then(|m| <[u8; STANDARD_MAC_LEN]>::try_from(m).ok())
            {
                signatures.push(mac);
            }
        }
        if signatures.is_empty() {
            return Err(AuthError::Malformed);
        }
        Ok(Self {
            id,
            timestamp,
            signatures,
        })
    }

    /// One MAC per secret, compared with every presented signature.
    fn verify(&self, secrets: &[Secret], body: &[u8]) -> Result<(), AuthError> {
        let parts: [&[u8]; 5] = [
            self.id.as_bytes(),
            b".",
            self.timestamp.as_bytes(),
            b".",
            body,
        ];
        for secret in secrets {
            let Ok(key) = standard_webhooks_key(secret) else {
                continue;
            };
            let Some(expected) = compute_mac(HmacAlgorithm::Sha256, &key, &parts) else {
                continue;
            };
            let mut ok = subtle::Choice::from(0);
            for signature in &self.signatures {
                ok |= expected.as_slice().ct_eq(signature);
            }
            if bool::from(ok) {
                return Ok(());
            }
        }
        Err(AuthError::Mismatch)
    }
}

#[cfg(test)]
mod tests;
