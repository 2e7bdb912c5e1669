//! What refusing a forged request costs: a 1 MiB body under a Standard Webhooks header stuffed
//! with 3,900 short bogus `v1,` signatures (what fits in the 32 KiB request head) must be
//! refused without a MAC per signature. Prints the time per request next to the time of verifying one
//! genuine 1 MiB request, for docs and comparisons:
//! `cargo test --release --test suite -- --nocapture auth_cost::`.

use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use http::{HeaderMap, HeaderValue};
use webhook_bridge::auth::{self, AuthConfig, AuthError, Credentials, HmacAlgorithm, MacEncoding};
use webhook_bridge::secret::Secret;

const BODY_LEN: usize = 1024 * 1024;
const BOGUS: usize = 3_900;

fn secret() -> Secret {
    Secret::new("whsec_ZmFrZS1jb3N0LXRlc3Qta2V5LTAwMDE=")
}

fn standard() -> AuthConfig {
    AuthConfig::StandardWebhooks {
        tolerance: Duration::from_secs(300),
    }
}

/// Genuine headers for `body`, then the signature header replaced by `signatures` if given.
fn headers(auth: &AuthConfig, body: &[u8], signatures: Option<String>) -> HeaderMap {
    let signed = auth::sign(auth, &secret(), body, SystemTime::now(), "msg_cost");
    let mut h = HeaderMap::new();
    for (k, v) in signed.headers {
        h.append(k, v);
    }
    if let Some(list) = signatures {
        h.insert("webhook-signature", HeaderValue::from_str(&list).unwrap());
    }
    h
}

/// Mean wall time of `verify` over `runs` runs, and its result.
fn time_verify(
    auth: &AuthConfig,
    h: &HeaderMap,
    body: &[u8],
    runs: u32,
) -> (Duration, Result<(), AuthError>) {
    let creds = Credentials {
        headers: h,
        path_token: None,
        body,
        now: SystemTime::now(),
    };
    let secrets = [secret()];
    let mut result = Ok(());
    let started = Instant::now();
    for _ in 0..runs {
        result = auth::verify(auth, &secrets, &creds);
    }
    (started.elapsed() / runs, result)
}

#[test]
fn a_signature_flood_over_a_large_body_is_refused_at_the_cost_of_at_most_one_mac() {
    let body = vec![b'x'; BODY_LEN];
    let auth = standard();

    let genuine = headers(&auth, &body, None);
    let (one_mac, result) = time_verify(&auth, &genuine, &body, 3);
    assert_eq!(result, Ok(()));

    // Short entries, so that 3,900 of them fit in the head: `v1,` and 3 bytes of base64.
    let bogus: Vec<String> = (0..BOGUS)
        .map(|i| format!("v1,{}", B64.encode([(i % 251) as u8, (i / 251) as u8, 7])))
        .collect();
    let flood = headers(&auth, &body, Some(bogus.join(" ")));
    assert!(
        flood.get("webhook-signature").unwrap().len() < 32 * 1024,
        "fits in a request head"
    );
    let (flooded, result) = time_verify(&auth, &flood, &body, 3);
    assert!(result.is_err());

    // As many as allowed, each of the length of a MAC.
    let most: Vec<String> = (0..auth::MAX_SIGNATURES)
        .map(|i| format!("v1,{}", B64.encode([i as u8; 32])))
        .collect();
    let most = headers(&auth, &body, Some(most.join(" ")));
    let (at_most, result) = time_verify(&auth, &most, &body, 3);
    assert_eq!(result, Err(AuthError::Mismatch));

    println!(
        "1 MiB body, one secret: genuine {one_mac:?}; {BOGUS} bogus signatures {flooded:?}; \
         {} bogus signatures {at_most:?}",
        auth::MAX_SIGNATURES
    );
    // Refusing the flood costs no more than the one MAC a genuine request costs (measured on
    // this machine, with slack for a busy one), and never seconds.
    assert!(
        flooded <= one_mac * 3 + Duration::from_millis(50),
        "flood {flooded:?} vs one MAC {one_mac:?}"
    );
    assert!(
        at_most <= one_mac * 3 + Duration::from_millis(50),
        "{} signatures {at_most:?} vs one MAC {one_mac:?}",
        auth::MAX_SIGNATURES
    );
}

#[test]
fn an_hmac_signature_of_the_wrong_length_costs_no_mac() {
    let auth = AuthConfig::Hmac {
        header: "x-sig".into(),
        algorithm: HmacAlgorithm::Sha256,
        encoding: MacEncoding::Hex,
        prefix: None,
    };
    let body = vec![b'x'; BODY_LEN];
    let genuine = headers(&auth, &body, None);
    let (one_mac, result) = time_verify(&auth, &genuine, &body, 3);
    assert_eq!(result, Ok(()));
    // 16 KiB of hex: decodable, 8,192 bytes, not a SHA-256 MAC.
    let mut h = HeaderMap::new();
    h.insert(
        "x-sig",
        HeaderValue::from_str(&"ab".repeat(8 * 1024)).unwrap(),
    );
    let (refused, result) = time_verify(&auth, &h, &body, 3);
    assert_eq!(result, Err(AuthError::Malformed));
    println!("1 MiB body, hmac: genuine {one_mac:?}; 16 KiB signature refused in {refused:?}");
    assert!(
        refused * 4 < one_mac,
        "refused in {refused:?}, one MAC {one_mac:?}"
    );
}
