//! Every verifier against arbitrary headers, path token and body: the first byte picks the
//! scheme, the next lines are header values and a path token, the rest is the body. Whatever
//! the input, `verify` and `verify_head` must not panic and must agree (a refusal from the head
//! is the refusal `verify` gives; what `verify` accepts the head does not refuse); what `sign`
//! produces for that body must verify, and stop verifying once the body changes (for the
//! schemes that cover the body); and a Standard Webhooks signature list with bogus entries
//! around the right one verifies up to `MAX_SIGNATURES` entries and is malformed beyond.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::split_headers;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use http::{HeaderMap, HeaderValue};
use webhook_bridge::auth::{self, AuthError, Credentials, HeadCheck, MAX_SIGNATURES};
use webhook_bridge::auth::{AuthConfig, HmacAlgorithm, MacEncoding};
use webhook_bridge::secret::Secret;

fn schemes() -> Vec<AuthConfig> {
    vec![
        AuthConfig::Bearer,
        AuthConfig::Basic {
            username: Some("shop".into()),
        },
        AuthConfig::Basic { username: None },
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
            header: "x-sig".into(),
            algorithm: HmacAlgorithm::Sha512,
            encoding: MacEncoding::Base64,
            prefix: Some("sha512=".into()),
        },
        AuthConfig::StandardWebhooks {
            tolerance: Duration::from_secs(300),
        },
    ]
}

/// One input.
pub fn run(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let schemes = schemes();
    let auth = &schemes[pick as usize % schemes.len()];
    let secrets = [
        Secret::new("whsec_ZnV6ei1zZWNyZXQtb25l"),
        Secret::new("fuzz-secret-two"),
    ];
    let (headers, rest) = split_headers(
        rest,
        &[
            "authorization",
            "x-token",
            "x-sig",
            "webhook-id",
            "webhook-timestamp",
            "webhook-signature",
        ],
    );
    let (token, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &rest[rest.len()..]),
    };
    let token = std::str::from_utf8(token).ok();
    // Let the fuzzer get past the freshness check: "now" is the timestamp it sent.
    let now = headers
        .get("webhook-timestamp")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .and_then(|s| UNIX_EPOCH.checked_add(Duration::from_secs(s)))
        .unwrap_or_else(SystemTime::now);
    let full = auth::verify(
        auth,
        &secrets,
        &Credentials {
            headers: &headers,
            path_token: token,
            body,
            now,
        },
    );
    let head = auth::verify_head(auth, &secrets, &headers, token, now);
    match head {
        Err(e) => assert_eq!(full, Err(e), "{auth:?}"),
        Ok(HeadCheck::Authenticated) => {
            assert!(!auth::needs_body(auth));
            assert_eq!(full, Ok(()), "{auth:?}");
        }
        Ok(HeadCheck::BodyRequired) => assert!(auth::needs_body(auth)),
    }
    if full.is_ok() {
        assert!(head.is_ok(), "{auth:?}");
    }

    // sign ∘ verify round trip over the fuzzed body.
    let now = SystemTime::now();
    let signed = auth::sign(auth, &secrets[0], body, now, "msg_fuzz");
    let mut h = HeaderMap::new();
    for (k, v) in signed.headers {
        h.append(k, v);
    }
    let creds = |body| Credentials {
        headers: &h,
        path_token: signed.path_suffix.as_deref(),
        body,
        now,
    };
    assert_eq!(
        auth::verify(auth, &secrets, &creds(body)),
        Ok(()),
        "{auth:?}"
    );
    if matches!(
        auth,
        AuthConfig::Hmac { .. } | AuthConfig::StandardWebhooks { .. }
    ) {
        let mut other = body.to_vec();
        other.push(b' ');
        assert!(auth::verify(auth, &secrets, &creds(&other)).is_err());
    }

    if matches!(auth, AuthConfig::StandardWebhooks { .. }) {
        check_signature_lists(auth, &secrets, &h, body, now);
    }
}

/// The valid signature among bogus entries cut from `body` (of every length, most not a MAC):
/// verifies while the list has at most `MAX_SIGNATURES` entries, malformed beyond.
fn check_signature_lists(
    auth: &AuthConfig,
    secrets: &[Secret],
    signed: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) {
    let Some(valid) = signed
        .get("webhook-signature")
        .and_then(|v| v.to_str().ok())
    else {
        return;
    };
    let count = body
        .first()
        .map_or(0, |&b| usize::from(b) % (MAX_SIGNATURES + 4));
    let position = body.get(1).map_or(0, |&b| usize::from(b) % (count + 1));
    let mut entries: Vec<String> = body
        .chunks(body.len().div_ceil(count.max(1)).max(1))
        .take(count)
        .map(|chunk| format!("v1,{}", B64.encode(chunk)))
        .collect();
    entries.resize_with(count, || "v1,".to_string());
    entries.insert(position, valid.to_string());
    let Ok(list) = HeaderValue::from_str(&entries.join(" ")) else {
        return;
    };
    let mut h = signed.clone();
    h.insert("webhook-signature", list);
    let result = auth::verify(
        auth,
        secrets,
        &Credentials {
            headers: &h,
            path_token: None,
            body,
            now,
        },
    );
    if entries.len() <= MAX_SIGNATURES {
        assert_eq!(result, Ok(()), "{} entries", entries.len());
    } else {
        assert_eq!(
            result,
            Err(AuthError::Malformed),
            "{} entries",
            entries.len()
        );
    }
}
