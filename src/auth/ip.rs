//! The IP allowlist, and the client address behind trusted proxies.
//!
//! Addresses are compared in their canonical form: an IPv4-mapped IPv6 address
//! (`::ffff:203.0.113.7`, what a dual-stack socket reports for an IPv4 client) is the IPv4
//! address, and matches IPv4 networks as well as networks written in the mapped form.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;

use super::AuthError;

/// Check the peer (or, behind a trusted proxy, the client named in `X-Forwarded-For`).
/// `IpNotAllowed` when the client is not in `allow`; `ForwardedMalformed` when a trusted proxy
/// sent an `X-Forwarded-For` hop that does not parse. Both are answered 403.
pub fn check_ip(
    allow: &[IpNet],
    trusted_proxies: &[IpNet],
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<(), AuthError> {
    if allow.is_empty() {
        return Ok(());
    }
    let client = client_ip(trusted_proxies, peer.ip(), headers)?;
    if any_contains(allow, client) {
        Ok(())
    } else {
        Err(AuthError::IpNotAllowed)
    }
}

/// The address the request really came from: walk `X-Forwarded-For` from the right while the hop
/// is a trusted proxy; the first untrusted hop is the client. Without a trusted peer the header is
/// ignored, so a client cannot forge its way into the allowlist.
///
/// Every hop read on the way was written by a trusted proxy, so one that is not an address (`ip`
/// or `ip:port`) is refused with `ForwardedMalformed`, rather than taking the proxy for the
/// client. What lies left of the client was written by the client and is not read.
pub fn client_ip(
    trusted_proxies: &[IpNet],
    peer: IpAddr,
    headers: &HeaderMap,
) -> Result<IpAddr, AuthError> {
    let peer = peer.to_canonical();
    if !any_contains(trusted_proxies, peer) {
        return Ok(peer);
    }
    let mut client = peer;
    let values: Vec<&[u8]> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    for value in values.iter().rev() {
        for hop in value.rsplit(|&b| b == b',') {
            let ip = parse_hop(hop).ok_or(AuthError::ForwardedMalformed)?;
            client = ip;
            if !any_contains(trusted_proxies, ip) {
                return Ok(client);
            }
        }
    }
    Ok(client)
}

/// One `X-Forwarded-For` element: an address, optionally with a port (`1.2.3.4:5678`,
/// `[2001:db8::1]:443`), in canonical form.
fn parse_hop(hop: &[u8]) -> Option<IpAddr> {
    let hop = std::str::from_utf8(hop).ok()?.trim();
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

/// Whether any of `nets` holds `ip` (canonical), IPv4 networks and IPv4-mapped IPv6 networks
/// alike.
fn any_contains(nets: &[IpNet], ip: IpAddr) -> bool {
    let mapped = match ip {
        IpAddr::V4(v4) => Some(IpAddr::V6(v4.to_ipv6_mapped())),
        IpAddr::V6(_) => None,
    };
    nets.iter()
        .any(|net| net.contains(&ip) || mapped.is_some_and(|m| net.contains(&m)))
}
