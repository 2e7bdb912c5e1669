//! A whole request through the router, with the fuzz configuration (the standard endpoints of
//! `fixtures/endpoints.rs` and the variants of `fuzz/src/lib.rs`): routing, method, IP (with
//! `X-Forwarded-For`), declared length, credentials in the head, the body's signature, parse
//! and envelope, ending in the messages that would be handed to delivery
//! (`webhook_bridge::http::offline`, the same steps as a served request).
//!
//! Input: a flags byte, an endpoint byte, then a path line, header lines (`name: value`) up to
//! an empty line, and the body. Flags: bit 0 — sign the body with the endpoint's real secret
//! (as its provider would, overriding fuzzed credential headers) and send it to the endpoint's
//! path; bit 1 — use the fuzzed path line instead; bits 2–3 — the method (POST unless 3); bit 4
//! — the peer is 203.0.113.9 instead of 127.0.0.1.
//!
//! Invariants: no panic; nothing is delivered (messages or a reply) unless the request carries
//! valid credentials for its endpoint and passes its IP check; every message is JSON with a
//! routing key of its endpoint; a reply carries the provider's configured handshake secret
//! (isendu's API secret); a request signed with the right secret, sent as POST to its endpoint
//! from an allowed address, is never refused as unauthorized (except by a provider with a
//! handshake, which refuses the wrong ones); every answer maps to a status code.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::SystemTime;

use crate::config;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use webhook_bridge::auth::{self, Credentials};
use webhook_bridge::http::answer::{Answer, Refusal};
use webhook_bridge::http::{Prepared, Router, offline};

fn router() -> &'static Router {
    static ROUTER: OnceLock<Router> = OnceLock::new();
    ROUTER.get_or_init(|| Router::new(&config().endpoints))
}

/// The next line of `rest` (without its newline), and what follows it.
fn line(rest: &[u8]) -> (&[u8], &[u8]) {
    match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &rest[rest.len()..]),
    }
}

/// One input.
pub fn run(data: &[u8]) {
    let [flags, pick, rest @ ..] = data else {
        return;
    };
    let config = config();
    let endpoint = &config.endpoints[usize::from(*pick) % config.endpoints.len()];
    let sign = flags & 1 != 0;
    let method = match (flags >> 2) & 3 {
        3 => Method::GET,
        _ => Method::POST,
    };
    let peer: SocketAddr = if flags & 16 != 0 {
        ([203, 0, 113, 9], 40000).into()
    } else {
        ([127, 0, 0, 1], 40000).into()
    };
    let (path_line, mut rest) = line(rest);
    let mut headers = HeaderMap::new();
    loop {
        let (l, tail) = line(rest);
        rest = tail;
        if l.is_empty() {
            break;
        }
        let Some(colon) = l.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&l[..colon]),
            HeaderValue::from_bytes(l[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    let body = rest;
    let mut path = endpoint.path.clone();
    if sign {
        let now = SystemTime::now();
        let secret = &endpoint.secrets[0];
        let signed = auth::sign(&endpoint.auth, secret, body, now, "msg_fuzz");
        for (name, value) in signed.headers {
            headers.insert(name, value);
        }
        for (name, value) in (endpoint.provider.sender_headers)(body, now) {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        }
        if let Some(token) = signed.path_suffix {
            path = format!("{path}/{token}");
        }
    }
    if flags & 2 != 0 || !sign {
        path = String::from_utf8_lossy(path_line).into_owned();
    }

    let result = offline(config, router(), peer, &method, &path, &headers, body);

    // Every outcome maps to an answer without panicking.
    let answer: Answer = match &result {
        Ok(Prepared::Messages(m)) => Answer::Accepted {
            published: m.len(),
            duplicates: 0,
        },
        Ok(Prepared::Reply(r)) => Answer::Handshake(r.clone()),
        Err(refusal) => (*refusal).into(),
    };
    let status = answer.into_response().status();

    let routed = router().route(&path).and_then(|r| {
        let ep = config.endpoints.get(r.endpoint)?;
        Some((ep, r.token(&path).map(str::to_owned)))
    });
    match &result {
        Ok(delivered) => {
            assert_eq!(status, 200);
            let (ep, token) = routed.expect("delivered without an endpoint");
            assert_eq!(method, Method::POST);
            // Authenticated for the endpoint it was routed to, from an allowed address.
            let creds = Credentials {
                headers: &headers,
                path_token: token.as_deref(),
                body,
                now: SystemTime::now(),
            };
            assert_eq!(
                auth::verify(&ep.auth, &ep.secrets, &creds),
                Ok(()),
                "delivered unauthenticated to {}",
                ep.name
            );
            assert!(
                auth::check_ip(&ep.allow_ips, &ep.trusted_proxies, peer, &headers).is_ok(),
                "delivered from a refused address to {}",
                ep.name
            );
            match delivered {
                Prepared::Messages(messages) => {
                    assert!(messages.len() <= webhook_bridge::providers::MAX_EVENTS_PER_REQUEST);
                    let prefix = ep.provider.prefix(&ep.options, &ep.name);
                    for m in messages {
                        assert!(
                            m.routing_key.starts_with(&format!("{prefix}.")),
                            "{} from {}",
                            m.routing_key,
                            ep.name
                        );
                        serde_json::from_slice::<serde::de::IgnoredAny>(&m.body)
                            .expect("message is JSON");
                    }
                }
                Prepared::Reply(reply) => crate::assert_reply(ep, reply),
            }
        }
        Err(refusal) => {
            assert!(
                status.is_client_error() || status.is_server_error(),
                "{refusal:?}"
            );
            let allowed = auth::check_ip(
                &endpoint.allow_ips,
                &endpoint.trusted_proxies,
                peer,
                &headers,
            )
            .is_ok();
            let intact = sign
                && flags & 2 == 0
                && method == Method::POST
                && allowed
                && body.len() <= endpoint.max_body
                && !headers.contains_key(http::header::CONTENT_LENGTH);
            if intact && endpoint.provider.handshake_secret.is_none() {
                assert_ne!(
                    *refusal,
                    Refusal::Unauthorized,
                    "signed request refused: {}",
                    endpoint.name
                );
            }
        }
    }
}
