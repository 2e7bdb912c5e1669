//! Request authentication: the schemes an endpoint can use ([`AuthConfig`], as written in its
//! `auth` table), one verifier per scheme, all constant-time, the IP allowlist ([`ip`]), and
//! [`sign`], the exact inverse of the verifiers, used by `webhook-bridge send` and the tests, so
//! what we verify and what we would send can never drift apart.
//!
//! Verifiers see only headers, the path token and the raw body; they know nothing of providers,
//! configuration files or HTTP responses.

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
use self::mac::{decode_mac, verify_mac};
pub use self::sign::{Signed, sign};

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

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MacEncoding {
    #[default]
    Hex,
    Base64,
}

/// Why a request was not authenticated. The HTTP layer answers 401 (403 for `IpNotAllowed`)
/// with a generic body; the variant only goes to metrics and logs.
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

/// Verify `creds` against any of `secrets` (several during a rotation).
pub fn verify(
    auth: &AuthConfig,
    secrets: &[Secret],
    creds: &Credentials<'_>,
) -> Result<(), AuthError> {
    match auth {
        AuthConfig::Bearer => {
            let value = single_header(creds.headers, &http::header::AUTHORIZATION)?;
            let token = strip_scheme(value, "Bearer").ok_or(AuthError::Malformed)?;
            any_secret_eq(secrets, token.as_bytes())
        }
        AuthConfig::Basic { username } => {
            let value = single_header(creds.headers, &http::header::AUTHORIZATION)?;
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
            match (password_ok, user_ok) {
                (Ok(()), true) => Ok(()),
                _ => Err(AuthError::Mismatch),
            }
        }
        AuthConfig::Header { header } => {
            let name = header_name(header)?;
            let value = single_header(creds.headers, &name)?;
            any_secret_eq(secrets, value.as_bytes())
        }
        AuthConfig::PathToken => {
            let token = creds.path_token.ok_or(AuthError::Missing)?;
            any_secret_eq(secrets, token.as_bytes())
        }
        AuthConfig::Hmac {
            header,
            algorithm,
            encoding,
            prefix,
        } => {
            let name = header_name(header)?;
            let value = single_header(creds.headers, &name)?.trim();
            let value = match prefix {
                Some(p) => value.strip_prefix(p.as_str()).ok_or(AuthError::Malformed)?,
                None => value,
            };
            let mac = decode_mac(value, *encoding)?;
            for secret in secrets {
                if verify_mac(*algorithm, secret.expose().as_bytes(), &[creds.body], &mac) {
                    return Ok(());
                }
            }
            Err(AuthError::Mismatch)
        }
        AuthConfig::StandardWebhooks { tolerance } => {
            verify_standard_webhooks(secrets, creds, *tolerance)
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
    // Evaluate every secret so timing does not reveal which one matched.
    let mut ok = subtle::Choice::from(0);
    for secret in secrets {
        ok |= digest_eq(secret.expose().as_bytes(), given);
    }
    if bool::from(ok) {
        Ok(())
    } else {
        Err(AuthError::Mismatch)
    }
}

fn verify_standard_webhooks(
    secrets: &[Secret],
    creds: &Credentials<'_>,
    tolerance: Duration,
) -> Result<(), AuthError> {
    let id = single_header(creds.headers, &HeaderName::from_static("webhook-id"))?;
    let ts = single_header(creds.headers, &HeaderName::from_static("webhook-timestamp"))?;
    let sigs = single_header(creds.headers, &HeaderName::from_static("webhook-signature"))?;
    let ts_secs: u64 = ts.trim().parse().map_err(|_| AuthError::Malformed)?;
    let now = creds
        .now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if now.abs_diff(ts_secs) > tolerance.as_secs() {
        return Err(AuthError::Stale);
    }
    let mut candidates = Vec::new();
    for item in sigs.split_whitespace() {
        if let Some(encoded) = item.strip_prefix("v1,") {
            // An undecodable or empty signature never matches; others in the list still may.
            if let Ok(mac) = B64.decode(encoded)
                && !mac.is_empty()
            {
                candidates.push(mac);
            }
        }
    }
    if candidates.is_empty() {
        return Err(AuthError::Malformed);
    }
    let parts: [&[u8]; 5] = [id.as_bytes(), b".", ts.as_bytes(), b".", creds.body];
    for secret in secrets {
        let Ok(key) = standard_webhooks_key(secret) else {
            continue;
        };
        for mac in &candidates {
            if verify_mac(HmacAlgorithm::Sha256, &key, &parts, mac) {
                return Ok(());
            }
        }
    }
    Err(AuthError::Mismatch)
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
