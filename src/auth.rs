//! Request authentication: one verifier per scheme, all constant-time, plus the IP allowlist.
//!
//! Verifiers see only headers, the path token and the raw body; they know nothing of providers
//! or HTTP responses. [`sign`] is the exact inverse, used by `webhook-bridge send` and the tests,
//! so what we verify and what we would send can never drift apart.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

use crate::config::{AuthConfig, HmacAlgorithm, MacEncoding, Secret};

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

/// Check the peer (or, behind a trusted proxy, the client named in `X-Forwarded-For`).
pub fn check_ip(
    allow: &[IpNet],
    trusted_proxies: &[IpNet],
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<(), AuthError> {
    if allow.is_empty() {
        return Ok(());
    }
    let client = client_ip(trusted_proxies, peer.ip(), headers);
    if allow.iter().any(|net| net.contains(&client)) {
        Ok(())
    } else {
        Err(AuthError::IpNotAllowed)
    }
}

/// The address the request really came from: walk `X-Forwarded-For` from the right while the hop
/// is a trusted proxy; the first untrusted hop is the client. Without a trusted peer the header is
/// ignored, so a client cannot forge its way into the allowlist.
pub fn client_ip(trusted_proxies: &[IpNet], peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    let trusted = |ip: &IpAddr| trusted_proxies.iter().any(|n| n.contains(ip));
    if !trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    for hop in hops.iter().rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !trusted(&ip) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
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

fn decode_mac(value: &str, encoding: MacEncoding) -> Result<Vec<u8>, AuthError> {
    let decoded = match encoding {
        MacEncoding::Hex => hex::decode(value).map_err(|_| AuthError::Malformed)?,
        MacEncoding::Base64 => B64.decode(value).map_err(|_| AuthError::Malformed)?,
    };
    if decoded.is_empty() {
        return Err(AuthError::Malformed);
    }
    Ok(decoded)
}

/// `Mac::verify_slice` is constant-time and rejects a MAC of the wrong length outright.
fn verify_mac(algorithm: HmacAlgorithm, key: &[u8], parts: &[&[u8]], mac: &[u8]) -> bool {
    match algorithm {
        HmacAlgorithm::Sha256 => {
            let Ok(mut m) = Hmac::<Sha256>::new_from_slice(key) else {
                return false;
            };
            parts.iter().for_each(|p| m.update(p));
            m.verify_slice(mac).is_ok()
        }
        HmacAlgorithm::Sha512 => {
            let Ok(mut m) = Hmac::<Sha512>::new_from_slice(key) else {
                return false;
            };
            parts.iter().for_each(|p| m.update(p));
            m.verify_slice(mac).is_ok()
        }
    }
}

/// HMAC of `parts`. HMAC takes keys of any length, so `None` does not happen in practice; the
/// callers then send an empty signature, which never verifies.
fn compute_mac(algorithm: HmacAlgorithm, key: &[u8], parts: &[&[u8]]) -> Option<Vec<u8>> {
    fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Option<Vec<u8>> {
        let mut m = <M as hmac::digest::KeyInit>::new_from_slice(key).ok()?;
        parts.iter().for_each(|p| m.update(p));
        Some(m.finalize().into_bytes().to_vec())
    }
    match algorithm {
        HmacAlgorithm::Sha256 => run::<Hmac<Sha256>>(key, parts),
        HmacAlgorithm::Sha512 => run::<Hmac<Sha512>>(key, parts),
    }
}

/// Error of a Standard Webhooks key that is not `whsec_<base64>` (or plain base64).
#[derive(Debug, thiserror::Error)]
#[error("a Standard Webhooks secret must be base64, optionally prefixed with whsec_")]
pub struct BadWebhookKey;

/// Decode a Standard Webhooks signing key.
pub fn standard_webhooks_key(secret: &Secret) -> Result<Vec<u8>, BadWebhookKey> {
    let raw = secret.expose();
    let encoded = raw.strip_prefix("whsec_").unwrap_or(raw);
    match B64.decode(encoded) {
        Ok(key) if !key.is_empty() => Ok(key),
        _ => Err(BadWebhookKey),
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

/// How a sender would present `secret` for `body`: headers to add and a path suffix.
#[derive(Debug, Default)]
pub struct Signed {
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub path_suffix: Option<String>,
}

/// Sign `body` the way a provider using `auth` would. `webhook_id` is used by Standard Webhooks.
pub fn sign(
    auth: &AuthConfig,
    secret: &Secret,
    body: &[u8],
    now: SystemTime,
    webhook_id: &str,
) -> Signed {
    let mut out = Signed::default();
    let mut push = |name: HeaderName, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            out.headers.push((name, v));
        }
    };
    match auth {
        AuthConfig::Bearer => push(
            http::header::AUTHORIZATION,
            format!("Bearer {}", secret.expose()),
        ),
        AuthConfig::Basic { username } => {
            let user = username.as_deref().unwrap_or("webhook");
            let creds = B64.encode(format!("{user}:{}", secret.expose()));
            push(http::header::AUTHORIZATION, format!("Basic {creds}"));
        }
        AuthConfig::Header { header } => {
            if let Ok(name) = header_name(header) {
                push(name, secret.expose().to_string());
            }
        }
        AuthConfig::PathToken => out.path_suffix = Some(secret.expose().to_string()),
        AuthConfig::Hmac {
            header,
            algorithm,
            encoding,
            prefix,
        } => {
            let mac =
                compute_mac(*algorithm, secret.expose().as_bytes(), &[body]).unwrap_or_default();
            let encoded = match encoding {
                MacEncoding::Hex => hex::encode(mac),
                MacEncoding::Base64 => B64.encode(mac),
            };
            if let Ok(name) = header_name(header) {
                push(
                    name,
                    format!("{}{encoded}", prefix.as_deref().unwrap_or("")),
                );
            }
        }
        AuthConfig::StandardWebhooks { .. } => {
            let ts = now
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
                .to_string();
            let key = standard_webhooks_key(secret).unwrap_or_default();
            let mac = compute_mac(
                HmacAlgorithm::Sha256,
                &key,
                &[webhook_id.as_bytes(), b".", ts.as_bytes(), b".", body],
            )
            .unwrap_or_default();
            push(
                HeaderName::from_static("webhook-id"),
                webhook_id.to_string(),
            );
            push(HeaderName::from_static("webhook-timestamp"), ts);
            push(
                HeaderName::from_static("webhook-signature"),
                format!("v1,{}", B64.encode(mac)),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let auth = AuthConfig::default_for(crate::config::ProviderKind::Wegocod).unwrap();
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
