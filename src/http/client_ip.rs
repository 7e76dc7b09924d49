//! Who is asking: the client IP, resolved once per request from the TCP peer and the
//! trusted-proxy list, and stored as a [`ClientIp`] request extension everything else reads.
//!
//! `X-Forwarded-For` (then `X-Real-IP`) is believed only when the peer is a trusted proxy; the
//! right-most address that is not itself a trusted proxy wins, and values that are not IP
//! addresses are skipped. A forged header from an untrusted peer changes nothing, so rotating
//! it cannot dodge a rate limit.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use ipnet::IpNet;

use crate::domain::canonical_ip;
use crate::http::error::ApiError;

/// The resolved client address of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientIp(pub IpAddr);

/// The proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Arc<Vec<IpNet>>);

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self(Arc::new(nets))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client address of a request from `peer` carrying `headers`.
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical_ip(peer);
        if !self.contains(peer) {
            return peer;
        }
        // Walked from the right without collecting: this runs for every request.
        let forwarded = || {
            headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(parse_forwarded_ip)
        };
        if let Some(client) = forwarded().rev().find(|ip| !self.contains(*ip)) {
            return client;
        }
        if let Some(real) = headers
            .get("x-real-ip")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_forwarded_ip)
        {
            return real;
        }
        // Every hop is a trusted proxy: the left-most is the closest thing to a client.
        forwarded().next().unwrap_or(peer)
    }
}

/// One entry of a forwarding header: an IP, possibly with a port or in brackets.
fn parse_forwarded_ip(raw: &str) -> Option<IpAddr> {
    let raw = raw.trim();
    raw.parse::<IpAddr>()
        .ok()
        .or_else(|| raw.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            raw.strip_prefix('[')
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|r| r.parse().ok())
        })
        .map(canonical_ip)
}

/// The client address of `request`, from its TCP peer (connect info) and headers.
pub fn of_request<B>(trusted: &TrustedProxies, request: &axum::http::Request<B>) -> ClientIp {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    // Without connect info (in-process tests driving the router) the request is local.
    let peer = peer.unwrap_or(IpAddr::from([127, 0, 0, 1]));
    ClientIp(trusted.resolve(peer, request.headers()))
}

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<ClientIp>()
            .copied()
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("the client IP layer is missing")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, v.parse().unwrap());
        }
        map
    }

    fn loopback_trusted() -> TrustedProxies {
        TrustedProxies::new(vec![
            "127.0.0.0/8".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ])
    }

    #[test]
    fn untrusted_peers_cannot_forge_their_address() {
        let t = loopback_trusted();
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        let h = headers(&[("x-forwarded-for", "1.2.3.4"), ("x-real-ip", "5.6.7.8")]);
        assert_eq!(t.resolve(peer, &h), peer);
    }

    #[test]
    fn the_rightmost_untrusted_forwarded_address_wins() {
        let t = loopback_trusted();
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4, garbage, 127.0.0.2")]);
        assert_eq!(t.resolve(peer, &h), "1.2.3.4".parse::<IpAddr>().unwrap());
        let h = headers(&[("x-real-ip", "9.9.9.9")]);
        assert_eq!(t.resolve(peer, &h), "9.9.9.9".parse::<IpAddr>().unwrap());
        let h = headers(&[("x-forwarded-for", "not-an-ip")]);
        assert_eq!(t.resolve(peer, &h), peer);
        let h = headers(&[("x-forwarded-for", "[2001:db8::1]:443")]);
        assert_eq!(
            t.resolve(peer, &h),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
    }
}
