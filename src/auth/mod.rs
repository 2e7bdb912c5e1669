//! Request authentication: the schemes an endpoint can use ([`AuthConfig`], as written in its
//! `auth` table), one verifier per scheme, all constant-time, the IP allowlist ([`ip`]), and
//! [`sign`], the exact inverse of the verifiers, used by `webhook-bridge send` and the tests, so
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
            let name = header_name(header)?;
            let value = single_header(headers, &name)?;
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
fn single_header<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Result<&'h str, AuthError> {
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
    let name = header_name(header)?;
    let value = single_header(headers, &name)?.trim();
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
        let id = single_header(headers, &HeaderName::from_static("webhook-id"))?;
        let timestamp = single_header(headers, &HeaderName::from_static("webhook-timestamp"))?;
        let list = single_header(headers, &HeaderName::from_static("webhook-signature"))?;
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
mod tests {
    use super::*;
    use http::HeaderValue;
    use ipnet::IpNet;
    use std::net::SocketAddr;

    fn creds<'a>(
        headers: &'a HeaderMap,
        body: &'a [u8],
        token: Option<&'a str>,
    ) -> Credentials<'a> {
        Credentials {
            headers,
            path_token: token,
            body,
            now: SystemTime::now(),
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn roundtrip(auth: &AuthConfig) {
        let secret = Secret::new("whsec_c2VjcmV0LWtleS1mb3ItdGVzdHM=");
        let body = br#"{"a":1}"#;
        let signed = sign(auth, &secret, body, SystemTime::now(), "msg_1");
        let mut h = HeaderMap::new();
        for (k, v) in signed.headers {
            h.append(k, v);
        }
        let c = creds(&h, body, signed.path_suffix.as_deref());
        assert_eq!(
            verify(auth, std::slice::from_ref(&secret), &c),
            Ok(()),
            "{auth:?}"
        );
        // The same credentials over a tampered body, or with another secret, must fail.
        let tampered = creds(&h, br#"{"a":2}"#, signed.path_suffix.as_deref());
        let other = Secret::new("whsec_b3RoZXI=");
        let body_sensitive = matches!(
            auth,
            AuthConfig::Hmac { .. } | AuthConfig::StandardWebhooks { .. }
        );
        if body_sensitive {
            assert_eq!(
                verify(auth, std::slice::from_ref(&secret), &tampered),
                Err(AuthError::Mismatch)
            );
        }
        assert!(verify(auth, &[other], &c).is_err());
    }

    #[test]
    fn every_scheme_verifies_what_sign_produces_and_nothing_else() {
        for auth in [
            AuthConfig::Bearer,
            AuthConfig::Basic {
                username: Some("shop".into()),
            },
            AuthConfig::Header {
                header: "x-token".into(),
            },
            AuthConfig::PathToken,
            AuthConfig::Hmac {
                header: "x-sig".into(),
                algorithm: HmacAlgorithm::Sha256,
                encoding: MacEncoding::Hex,
                prefix: None,
            },
            AuthConfig::Hmac {
                header: "x-hub-signature-256".into(),
                algorithm: HmacAlgorithm::Sha512,
                encoding: MacEncoding::Base64,
                prefix: Some("sha512=".into()),
            },
            AuthConfig::StandardWebhooks {
                tolerance: Duration::from_secs(300),
            },
        ] {
            roundtrip(&auth);
        }
    }

    #[test]
    fn empty_standard_webhooks_signature_does_not_pass() {
        let h = headers(&[
            ("webhook-id", "msg_1"),
            (
                "webhook-timestamp",
                &SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_secs()
                    .to_string(),
            ),
            ("webhook-signature", "v1,"),
        ]);
        let auth = AuthConfig::StandardWebhooks {
            tolerance: Duration::from_secs(300),
        };
        let secret = Secret::new("whsec_c2VjcmV0");
        assert!(verify(&auth, &[secret], &creds(&h, b"{}", None)).is_err());
    }

    #[test]
    fn stale_standard_webhooks_timestamp_is_rejected() {
        let auth = AuthConfig::StandardWebhooks {
            tolerance: Duration::from_secs(300),
        };
        let secret = Secret::new("whsec_c2VjcmV0");
        let then = SystemTime::now() - Duration::from_secs(600);
        let signed = sign(&auth, &secret, b"{}", then, "msg_1");
        let mut h = HeaderMap::new();
        for (k, v) in signed.headers {
            h.append(k, v);
        }
        assert_eq!(
            verify(&auth, &[secret], &creds(&h, b"{}", None)),
            Err(AuthError::Stale)
        );
    }

    #[test]
    fn rotated_secrets_both_verify() {
        let h = headers(&[("authorization", "Bearer new-one")]);
        let secrets = [Secret::new("old-one"), Secret::new("new-one")];
        assert_eq!(
            verify(&AuthConfig::Bearer, &secrets, &creds(&h, b"{}", None)),
            Ok(())
        );
    }

    #[test]
    fn duplicate_or_empty_credentials_are_refused() {
        let h = headers(&[("authorization", "Bearer s"), ("authorization", "Bearer s")]);
        assert_eq!(
            verify(
                &AuthConfig::Bearer,
                &[Secret::new("s")],
                &creds(&h, b"{}", None)
            ),
            Err(AuthError::Ambiguous)
        );
        let h = headers(&[("x-webhook-signature", "")]);
        let auth = AuthConfig::Hmac {
            header: "x-webhook-signature".into(),
            algorithm: HmacAlgorithm::Sha256,
            encoding: MacEncoding::Hex,
            prefix: None,
        };
        assert!(verify(&auth, &[Secret::new("s")], &creds(&h, b"{}", None)).is_err());
    }

    fn macs_computed() -> usize {
        mac::MACS_COMPUTED.with(|c| c.get())
    }

    fn reset_mac_count() {
        mac::MACS_COMPUTED.with(|c| c.set(0));
    }

    fn standard_webhooks() -> AuthConfig {
        AuthConfig::StandardWebhooks {
            tolerance: Duration::from_secs(300),
        }
    }

    /// Standard Webhooks headers with a fresh timestamp and `signatures` as given.
    fn standard_headers(signatures: &str) -> HeaderMap {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            .to_string();
        headers(&[
            ("webhook-id", "msg_1"),
            ("webhook-timestamp", &now),
            ("webhook-signature", signatures),
        ])
    }

    /// A well-formed but wrong `v1,` signature: base64 of 32 bytes.
    fn bogus_v1(i: usize) -> String {
        format!("v1,{}", B64.encode([(i % 251) as u8; 32]))
    }

    fn two_webhook_secrets() -> [Secret; 2] {
        [
            Secret::new("whsec_ZmFrZS1rZXktb25lLWZvci10ZXN0cw=="),
            Secret::new("whsec_ZmFrZS1rZXktdHdvLWZvci10ZXN0cw=="),
        ]
    }

    #[test]
    fn a_flood_of_signatures_is_refused_without_hashing_the_body() {
        let sigs: Vec<String> = (0..3_900).map(bogus_v1).collect();
        let h = standard_headers(&sigs.join(" "));
        let body = vec![b'x'; 4096];
        reset_mac_count();
        assert_eq!(
            verify(
                &standard_webhooks(),
                &two_webhook_secrets(),
                &creds(&h, &body, None)
            ),
            Err(AuthError::Malformed)
        );
        assert_eq!(macs_computed(), 0);
    }

    #[test]
    fn standard_webhooks_computes_one_mac_per_secret_whatever_the_candidates() {
        let secrets = two_webhook_secrets();
        let body = br#"{"type":"invoice.paid"}"#;
        let auth = standard_webhooks();
        let signed = sign(&auth, &secrets[1], body, SystemTime::now(), "msg_1");
        let (_, good) = signed
            .headers
            .iter()
            .find(|(k, _)| k == "webhook-signature")
            .unwrap();
        // The most a header may carry: seven wrong signatures, then the right one.
        let mut sigs: Vec<String> = (0..7).map(bogus_v1).collect();
        sigs.push(good.to_str().unwrap().to_string());
        let mut h = HeaderMap::new();
        for (k, v) in signed.headers {
            h.append(k, v);
        }
        h.insert(
            "webhook-signature",
            HeaderValue::from_str(&sigs.join(" ")).unwrap(),
        );
        reset_mac_count();
        assert_eq!(verify(&auth, &secrets, &creds(&h, body, None)), Ok(()));
        assert!(macs_computed() <= secrets.len(), "{}", macs_computed());

        sigs.pop();
        sigs.push(bogus_v1(99));
        h.insert(
            "webhook-signature",
            HeaderValue::from_str(&sigs.join(" ")).unwrap(),
        );
        reset_mac_count();
        assert_eq!(
            verify(&auth, &secrets, &creds(&h, body, None)),
            Err(AuthError::Mismatch)
        );
        assert_eq!(macs_computed(), secrets.len());
    }

    #[test]
    fn signatures_of_the_wrong_length_are_dropped_before_hashing() {
        // Base64 of 48 bytes and of 31 bytes: decodable, but not HMAC-SHA256 outputs.
        let sigs = format!("v1,{} v1,{}", B64.encode([7u8; 48]), B64.encode([7u8; 31]));
        let h = standard_headers(&sigs);
        reset_mac_count();
        assert_eq!(
            verify(
                &standard_webhooks(),
                &two_webhook_secrets(),
                &creds(&h, b"{}", None)
            ),
            Err(AuthError::Malformed)
        );
        assert_eq!(macs_computed(), 0);

        for (algorithm, encoding, value) in [
            (
                HmacAlgorithm::Sha256,
                MacEncoding::Hex,
                hex::encode([1u8; 31]),
            ),
            (
                HmacAlgorithm::Sha256,
                MacEncoding::Hex,
                hex::encode([1u8; 64]),
            ),
            (
                HmacAlgorithm::Sha512,
                MacEncoding::Base64,
                B64.encode([1u8; 32]),
            ),
        ] {
            let auth = AuthConfig::Hmac {
                header: "x-sig".into(),
                algorithm,
                encoding,
                prefix: None,
            };
            let h = headers(&[("x-sig", &value)]);
            reset_mac_count();
            assert_eq!(
                verify(
                    &auth,
                    &[Secret::new("fake-one"), Secret::new("fake-two")],
                    &creds(&h, b"{}", None)
                ),
                Err(AuthError::Malformed),
                "{algorithm:?} {encoding:?} {value}"
            );
            assert_eq!(macs_computed(), 0, "{algorithm:?} {encoding:?}");
        }
    }

    #[test]
    fn hmac_computes_one_mac_per_secret() {
        let auth = AuthConfig::Hmac {
            header: "x-sig".into(),
            algorithm: HmacAlgorithm::Sha256,
            encoding: MacEncoding::Hex,
            prefix: None,
        };
        let h = headers(&[("x-sig", &hex::encode([9u8; 32]))]);
        let secrets = [
            Secret::new("fake-one"),
            Secret::new("fake-two"),
            Secret::new("fake-three"),
        ];
        reset_mac_count();
        assert_eq!(
            verify(&auth, &secrets, &creds(&h, b"{}", None)),
            Err(AuthError::Mismatch)
        );
        assert_eq!(macs_computed(), secrets.len());
    }

    fn all_schemes() -> Vec<AuthConfig> {
        vec![
            AuthConfig::Bearer,
            AuthConfig::Basic {
                username: Some("shop".into()),
            },
            AuthConfig::Header {
                header: "x-token".into(),
            },
            AuthConfig::PathToken,
            AuthConfig::Hmac {
                header: "x-sig".into(),
                algorithm: HmacAlgorithm::Sha512,
                encoding: MacEncoding::Base64,
                prefix: Some("sha512=".into()),
            },
            standard_webhooks(),
        ]
    }

    #[test]
    fn the_head_decides_token_schemes_and_defers_signature_schemes_to_the_body() {
        let secret = Secret::new("whsec_ZmFrZS1oZWFkLWNoZWNrLWtleQ==");
        let wrong = Secret::new("whsec_ZmFrZS1vdGhlci1rZXk=");
        let now = SystemTime::now();
        for auth in all_schemes() {
            let signed = sign(&auth, &secret, b"{}", now, "msg_1");
            let mut h = HeaderMap::new();
            for (k, v) in signed.headers {
                h.append(k, v);
            }
            let token = signed.path_suffix.as_deref();
            reset_mac_count();
            let head = verify_head(&auth, std::slice::from_ref(&secret), &h, token, now);
            let wrong_head = verify_head(&auth, std::slice::from_ref(&wrong), &h, token, now);
            assert_eq!(
                macs_computed(),
                0,
                "{auth:?}: the head check hashed the body"
            );
            if needs_body(&auth) {
                assert_eq!(head, Ok(HeadCheck::BodyRequired), "{auth:?}");
                // The head cannot tell a wrong key: only `verify` can, with the body.
                assert_eq!(wrong_head, Ok(HeadCheck::BodyRequired), "{auth:?}");
                assert_eq!(
                    verify(
                        &auth,
                        std::slice::from_ref(&wrong),
                        &creds(&h, b"{}", token)
                    ),
                    Err(AuthError::Mismatch)
                );
            } else {
                assert_eq!(head, Ok(HeadCheck::Authenticated), "{auth:?}");
                assert_eq!(wrong_head, Err(AuthError::Mismatch), "{auth:?}");
            }
            // Nothing presented at all is refused from the head, whatever the scheme.
            assert_eq!(
                verify_head(
                    &auth,
                    std::slice::from_ref(&secret),
                    &HeaderMap::new(),
                    None,
                    now
                ),
                Err(AuthError::Missing),
                "{auth:?}"
            );
        }
    }

    #[test]
    fn the_head_refuses_what_no_body_can_fix() {
        let auth = standard_webhooks();
        let secrets = two_webhook_secrets();
        let now = SystemTime::now();
        let sigs: Vec<String> = (0..=MAX_SIGNATURES).map(bogus_v1).collect();
        let flood = standard_headers(&sigs.join(" "));
        assert_eq!(
            verify_head(&auth, &secrets, &flood, None, now),
            Err(AuthError::Malformed)
        );
        let at_most = standard_headers(&sigs[..MAX_SIGNATURES].join(" "));
        assert_eq!(
            verify_head(&auth, &secrets, &at_most, None, now),
            Ok(HeadCheck::BodyRequired)
        );
        let later = now + Duration::from_secs(3600);
        assert_eq!(
            verify_head(&auth, &secrets, &at_most, None, later),
            Err(AuthError::Stale)
        );
        let hmac = AuthConfig::Hmac {
            header: "x-sig".into(),
            algorithm: HmacAlgorithm::Sha256,
            encoding: MacEncoding::Hex,
            prefix: Some("sha256=".into()),
        };
        for (value, expected) in [
            (
                format!("sha256={}", hex::encode([1u8; 32])),
                Ok(HeadCheck::BodyRequired),
            ),
            (hex::encode([1u8; 32]), Err(AuthError::Malformed)),
            (
                format!("sha256={}", "zz".repeat(32)),
                Err(AuthError::Malformed),
            ),
            (
                format!("sha256={}", hex::encode([1u8; 20])),
                Err(AuthError::Malformed),
            ),
        ] {
            let h = headers(&[("x-sig", &value)]);
            assert_eq!(
                verify_head(&hmac, &secrets, &h, None, now),
                expected,
                "{value}"
            );
        }
    }

    #[test]
    fn an_unparsable_forwarded_hop_from_a_trusted_proxy_is_refused() {
        // The proxy itself is inside the allowlist: taking the proxy for the client would let
        // anything it forwards in.
        let allow: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let proxies: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer: SocketAddr = "10.2.2.2:1234".parse().unwrap();
        for xff in ["not-an-ip", "203.0.113.7, garbage", "10.1.1.1, ", "unknown"] {
            let h = headers(&[("x-forwarded-for", xff)]);
            assert!(check_ip(&allow, &proxies, peer, &h).is_err(), "{xff}");
        }
        // Garbage left of the first untrusted hop was written by the client: it does not matter.
        let h = headers(&[("x-forwarded-for", "garbage, 10.9.9.9")]);
        let allow_client: Vec<IpNet> = vec!["10.9.9.9/32".parse().unwrap()];
        assert_eq!(
            check_ip(&allow_client, &[], peer, &h),
            Err(AuthError::IpNotAllowed)
        );
        let proxies_only: Vec<IpNet> = vec!["10.2.2.2/32".parse().unwrap()];
        assert_eq!(check_ip(&allow_client, &proxies_only, peer, &h), Ok(()));
    }

    #[test]
    fn ipv4_mapped_ipv6_addresses_match_ipv4_networks_and_back() {
        let allow: Vec<IpNet> = vec!["203.0.113.0/24".parse().unwrap()];
        let mapped: SocketAddr = "[::ffff:203.0.113.7]:1234".parse().unwrap();
        let outside: SocketAddr = "[::ffff:198.51.100.1]:1234".parse().unwrap();
        let none = HeaderMap::new();
        assert_eq!(check_ip(&allow, &[], mapped, &none), Ok(()));
        assert_eq!(
            check_ip(&allow, &[], outside, &none),
            Err(AuthError::IpNotAllowed)
        );
        // An allowlist written in the mapped form matches plain IPv4 peers.
        let allow_mapped: Vec<IpNet> = vec!["::ffff:203.0.113.0/120".parse().unwrap()];
        let v4: SocketAddr = "203.0.113.7:1234".parse().unwrap();
        assert_eq!(check_ip(&allow_mapped, &[], v4, &none), Ok(()));
        // A proxy seen through an IPv6 socket is still trusted, and the hop it names too.
        let proxies: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let proxy: SocketAddr = "[::ffff:10.2.2.2]:1234".parse().unwrap();
        let h = headers(&[("x-forwarded-for", "::ffff:203.0.113.9")]);
        assert_eq!(check_ip(&allow, &proxies, proxy, &h), Ok(()));
    }

    #[test]
    fn forwarded_for_is_trusted_only_from_proxies() {
        let allow: Vec<IpNet> = vec!["203.0.113.0/24".parse().unwrap()];
        let proxies: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let h = headers(&[("x-forwarded-for", "203.0.113.7, 10.1.1.1")]);
        let via_proxy: SocketAddr = "10.2.2.2:1234".parse().unwrap();
        let direct: SocketAddr = "198.51.100.1:1234".parse().unwrap();
        assert_eq!(check_ip(&allow, &proxies, via_proxy, &h), Ok(()));
        assert_eq!(
            check_ip(&allow, &proxies, direct, &h),
            Err(AuthError::IpNotAllowed)
        );
        assert_eq!(
            check_ip(&allow, &[], via_proxy, &h),
            Err(AuthError::IpNotAllowed)
        );
    }
}
