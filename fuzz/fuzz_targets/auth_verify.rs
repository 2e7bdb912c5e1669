//! Every verifier against arbitrary headers, path token and body: the first byte picks the
//! scheme, the next lines are header values and a path token, the rest is the body. Whatever
//! the input, `verify` must not panic; and what `sign` produces for that body must verify, and
//! stop verifying once the body changes (for the schemes that cover the body).
#![no_main]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use libfuzzer_sys::fuzz_target;
use webhook_bridge::auth::{self, Credentials};
use webhook_bridge::auth::{AuthConfig, HmacAlgorithm, MacEncoding};
use webhook_bridge::secret::Secret;
use webhook_bridge_fuzz::split_headers;

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

fuzz_target!(|data: &[u8]| {
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
    let _ = auth::verify(
        auth,
        &secrets,
        &Credentials {
            headers: &headers,
            path_token: token,
            body,
            now,
        },
    );

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
});
