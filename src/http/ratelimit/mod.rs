//! Rate limiting: what the recording handlers call ([`Limits`]), and where each limit lives.
//!
//! - The per-(client IP, page URL) quotas of the recording endpoints and of `/bulk-visits` items
//!   are node-local ([`local::RateLimits`]) unless `--redis` is given: then every node checks
//!   them in one Redis ([`redis::RedisLimits`]), so a client gets the quota once per cluster,
//!   not once per node. While Redis cannot be reached, the node falls back to its local
//!   limiter, and goes back to Redis by itself when it answers again.
//! - The per-IP ceiling over every route is always per node ([`local::ip_ceiling_layer`]): it
//!   stops floods against one node, which is a node's own concern, and sharing it would put a
//!   Redis round trip in front of every request, `/health` and `/metrics` included.

pub mod local;
pub mod redis;

use std::net::IpAddr;

pub use local::{
    ClientIpKey, INLINE_PURGE_EVERY, IpCeilingConfig, PURGE_EVERY, RateLimits, ip_ceiling_config,
    ip_ceiling_layer,
};

use self::redis::{Quota, RedisLimits};
use crate::config::ServeArgs;
use crate::http::error::ApiError;

/// The per-(client IP, page URL) limits of the recording path: shared through Redis when one is
/// configured and answering, the node's own otherwise.
pub struct Limits {
    local: RateLimits,
    /// `None` without `--redis`.
    shared: Option<RedisLimits>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("local", &self.local)
            .field("shared", &self.shared.is_some())
            .finish()
    }
}

impl Limits {
    /// The limits `args` configure. Fails only on a `--redis` URL that is not one; a Redis that
    /// does not answer is not an error (the node starts on its local limits).
    pub fn new(args: &ServeArgs) -> anyhow::Result<Self> {
        let shared = match args.redis.as_deref().filter(|url| !url.is_empty()) {
            Some(url) => Some(RedisLimits::new(
                url,
                Quota::per_minute(args.rate_limit_per_minute),
                Quota::per_minute(args.bulk_rate_limit_per_minute),
            )?),
            None => None,
        };
        Ok(Self {
            local: RateLimits::new(
                args.rate_limit_per_minute,
                args.bulk_rate_limit_per_minute,
                args.limiter_max_keys,
            ),
            shared,
        })
    }

    /// Connects to Redis, if configured, and logs whether the limits are shared: what a server
    /// does once before it accepts requests (a failure only means starting on local limits).
    pub async fn connect(&self) {
        if let Some(shared) = &self.shared {
            shared.connect().await;
        }
    }

    /// One recording request (`/visit`, `GET /?url=`, `/pixel.gif`, `/visit/{page_id}`).
    ///
    /// The Redis check is boxed: inline, its future would grow every recording handler's, with
    /// Redis or without.
    pub async fn check_visit(&self, ip: IpAddr, url: &str) -> Result<(), ApiError> {
        if let Some(shared) = &self.shared
            && let Some(verdicts) = Box::pin(shared.check_visits(ip, &[url])).await
        {
            return verdicts.into_iter().next().unwrap_or(Ok(()));
        }
        self.local.check_visit(ip, url)
    }

    /// The items of one `/bulk-visits` request, in order: `true` for each item within its quota
    /// (and now counted in it). With Redis, one round trip for all of them.
    pub async fn check_bulk(&self, ip: IpAddr, urls: &[&str]) -> Vec<bool> {
        if let Some(shared) = &self.shared
            && let Some(verdicts) = Box::pin(shared.check_bulk_items(ip, urls)).await
        {
            return verdicts.iter().map(Result::is_ok).collect();
        }
        urls.iter()
            .map(|url| self.local.check_bulk_item(ip, url).is_ok())
            .collect()
    }

    /// With `--redis`: whether the last check got Redis's answer, i.e. the limits are shared
    /// right now; `None` without `--redis`.
    pub fn redis_up(&self) -> Option<bool> {
        self.shared.as_ref().map(RedisLimits::is_up)
    }

    /// Drops the local keys whose quota has refilled (see [`RateLimits::purge`]); Redis keys
    /// expire by themselves.
    pub fn purge(&self) {
        self.local.purge();
    }

    /// Keys held by the local limiters, for `/metrics`.
    pub fn key_count(&self) -> usize {
        self.local.key_count()
    }
}
