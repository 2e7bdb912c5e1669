//! The IP allowlist, and the client address behind trusted proxies.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;

use super::AuthError;

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
