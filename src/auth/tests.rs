//! Unit tests of the verifiers, `sign` and the IP checks.
use super::*;
use http::HeaderValue;
use ipnet::IpNet;
use std::net::SocketAddr;

fn creds<'a>(headers: &'a HeaderMap, body: &'a [u8], token: Option<&'a str>) -> Credentials<'a> {
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
