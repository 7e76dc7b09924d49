//! The node-local limiters, both on `governor`: the per-(client IP, page URL) quotas
//! ([`RateLimits`]; the only ones without `--redis`, the fallback with it) and the per-IP ceiling
//! ([`ip_ceiling_layer`], always per node).
//!
//! 1. Per (client IP, page URL) on the recording endpoints: [`RateLimits`], `governor` keyed
//!    limiters checked inside the handlers (the URL is in the body).
//! 2. A per-IP ceiling on every route: [`ip_ceiling_layer`], a `tower_governor` layer keyed by
//!    the resolved [`ClientIp`] (IPv6 by /64, so one host cannot rotate through its prefix),
//!    answering `429` in our JSON shape with a `Retry-After` rounded *up*.
//!
//! The key is a 64-bit keyed hash of (IP, URL) rather than the pair itself, so a key costs the
//! same few bytes whatever the URL's length, and the table hashes it with one multiply instead of
//! running SipHash over an address and a hash again (measured with `examples/limiter_bench.rs`:
//! ~1.1 → ~0.6–0.7 µs a check from two threads, most keys new). The hash is keyed per process, so
//! clients cannot aim two pairs at one key; by chance, two of a million pairs share one with
//! odds of about 1 in 37 million. Keys are bounded twice: a timer purges the ones whose
//! quota has fully refilled ([`RateLimits::purge`]), and a hard cap refuses new keys when even
//! a purge leaves the table full — memory stays bounded however many distinct IPs and URLs an
//! attacker sends. At the cap, the purge that might make room runs at most once per
//! [`INLINE_PURGE_EVERY`]: a scan of a million keys costs tens of milliseconds, and running one
//! per refused request would turn a key flood into a CPU flood on the async workers.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::response::IntoResponse;
use governor::clock::{Clock, DefaultClock, QuantaInstant};
use governor::middleware::NoOpMiddleware;
use governor::{Quota, RateLimiter};
use tower_governor::GovernorLayer;
use tower_governor::errors::GovernorError;
use tower_governor::governor::{GovernorConfig, GovernorConfigBuilder};
use tower_governor::key_extractor::KeyExtractor;

use crate::http::client_ip::ClientIp;
use crate::http::error::ApiError;

/// A keyed hash of (client IP, page URL): see [`RateLimits::key`].
type Key = u64;

/// The limiters' table: a [`Key`] is already the output of a keyed hash, so the table's own
/// hash of it only needs to be cheap (Fx: one multiply), not DoS-resistant (SipHash).
type KeyTable = governor::state::keyed::DashMapStateStore<Key, rustc_hash::FxBuildHasher>;

/// Shortest time between two purges run by a request that found the key table full.
pub const INLINE_PURGE_EVERY: Duration = Duration::from_secs(1);

/// One keyed limiter with its cap.
struct Limiter {
    name: &'static str,
    inner: RateLimiter<Key, KeyTable, DefaultClock>,
    /// Most keys held; a new key beyond it is refused.
    max_keys: usize,
    /// Reference point of `last_inline_purge`.
    epoch: Instant,
    /// When a request last purged the full table, in ms after `epoch` (0: never).
    last_inline_purge: AtomicU64,
    /// Purges run by requests (not the timer), for tests and the example.
    inline_purges: AtomicU64,
}

impl Limiter {
    fn per_minute(name: &'static str, per_minute: u32, max_keys: usize) -> Option<Self> {
        let n = NonZeroU32::new(per_minute)?;
        Some(Self {
            name,
            inner: RateLimiter::dashmap_with_hasher(Quota::per_minute(n), Default::default()),
            max_keys,
            epoch: Instant::now(),
            last_inline_purge: AtomicU64::new(0),
            inline_purges: AtomicU64::new(0),
        })
    }

    /// Purges the full table unless a request did so less than [`INLINE_PURGE_EVERY`] ago;
    /// only the request that wins the race pays for the scan.
    fn purge_if_due(&self) {
        // +1 so that "never purged" (0) is always due.
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        let last = self.last_inline_purge.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= INLINE_PURGE_EVERY.as_millis() as u64;
        if due
            && self
                .last_inline_purge
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.inline_purges.fetch_add(1, Ordering::Relaxed);
            self.inner.retain_recent();
        }
    }

    fn check(&self, key: &Key) -> Result<(), ApiError> {
        if self.inner.len() >= self.max_keys {
            self.purge_if_due();
            if self.inner.len() >= self.max_keys {
                // Fail closed: a full table means a flood of new keys, and admitting them
                // unlimited would make the cap a bypass.
                metrics::counter!("footfall_rate_limited_total", "limiter" => self.name)
                    .increment(1);
                return Err(ApiError::TooManyRequests { retry_after: 60 });
            }
        }
        self.inner.check_key(key).map_err(|not_until| {
            metrics::counter!("footfall_rate_limited_total", "limiter" => self.name).increment(1);
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::TooManyRequests {
                retry_after: wait.as_secs_f64().ceil().max(1.0) as u64,
            }
        })
    }
}

/// The limits of the recording path; a limit configured as 0 is absent.
pub struct RateLimits {
    visit: Option<Limiter>,
    bulk: Option<Limiter>,
    hasher: std::collections::hash_map::RandomState,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("visit", &self.visit.is_some())
            .field("bulk", &self.bulk.is_some())
            .finish()
    }
}

impl RateLimits {
    pub fn new(visit_per_minute: u32, bulk_per_minute: u32, max_keys: usize) -> Self {
        Self {
            visit: Limiter::per_minute("visit", visit_per_minute, max_keys),
            bulk: Limiter::per_minute("bulk", bulk_per_minute, max_keys),
            hasher: Default::default(),
        }
    }

    fn key(&self, ip: IpAddr, url: &str) -> Key {
        self.hasher.hash_one((ip, url))
    }

    /// One recording request (`/visit`, `GET /?url=`, `/pixel.gif`, `/visit/{page_id}`).
    pub fn check_visit(&self, ip: IpAddr, url: &str) -> Result<(), ApiError> {
        match &self.visit {
            Some(limiter) => limiter.check(&self.key(ip, url)),
            None => Ok(()),
        }
    }

    /// One `/bulk-visits` item.
    pub fn check_bulk_item(&self, ip: IpAddr, url: &str) -> Result<(), ApiError> {
        match &self.bulk {
            Some(limiter) => limiter.check(&self.key(ip, url)),
            None => Ok(()),
        }
    }

    /// Drops the keys whose quota has refilled: they behave exactly like absent keys.
    ///
    /// The tables are not shrunk afterwards. Their capacity stays at its high-water mark, which
    /// the key cap bounds (about 85 bytes a key), and the next burst of keys reuses it. Shrinking
    /// on every purge was measured (`examples/limiter_memory.rs`) to let resident memory creep
    /// up from one burst to the next — each regrowth allocates fresh tables that the allocator
    /// places around the freed ones — to above the unshrunk high-water mark.
    pub fn purge(&self) {
        for limiter in [&self.visit, &self.bulk].into_iter().flatten() {
            limiter.inner.retain_recent();
        }
    }

    /// Keys held now, for `/metrics`.
    pub fn key_count(&self) -> usize {
        [&self.visit, &self.bulk]
            .into_iter()
            .flatten()
            .map(|l| l.inner.len())
            .sum()
    }

    /// Purges run by requests that found a key table full (see [`INLINE_PURGE_EVERY`]).
    pub fn inline_purges(&self) -> u64 {
        [&self.visit, &self.bulk]
            .into_iter()
            .flatten()
            .map(|l| l.inline_purges.load(Ordering::Relaxed))
            .sum()
    }
}

/// How often stale keys are purged.
pub const PURGE_EVERY: Duration = Duration::from_secs(2);

/// The key of the per-IP ceiling: the resolved client IP, IPv6 reduced to its /64.
#[derive(Debug, Clone)]
pub struct ClientIpKey;

impl ClientIpKey {
    pub fn bucket(ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V6(v6) => {
                let mut seg = v6.segments();
                seg[4..].fill(0);
                IpAddr::from(seg)
            }
            v4 => v4,
        }
    }
}

impl KeyExtractor for ClientIpKey {
    type Key = IpAddr;

    fn extract<T>(&self, req: &axum::http::Request<T>) -> Result<IpAddr, GovernorError> {
        req.extensions()
            .get::<ClientIp>()
            .map(|ClientIp(ip)| Self::bucket(*ip))
            .ok_or(GovernorError::UnableToExtractKey)
    }
}

pub type IpCeilingConfig = GovernorConfig<ClientIpKey, NoOpMiddleware<QuantaInstant>>;

/// The per-IP ceiling's configuration: `per_second` requests per second with bursts of
/// `burst`; `None` when `per_second` is 0 (disabled).
pub fn ip_ceiling_config(per_second: u32, burst: u32) -> Option<Arc<IpCeilingConfig>> {
    if per_second == 0 {
        return None;
    }
    // tower_governor's `per_second(n)` means one token every n seconds: give the interval.
    // At least 1 ns: a zero period makes `finish()` return `None`, which would silently turn
    // an absurdly high rate into no ceiling at all.
    let interval = Duration::from_nanos((1_000_000_000 / u64::from(per_second)).max(1));
    GovernorConfigBuilder::default()
        .key_extractor(ClientIpKey)
        .period(interval)
        .burst_size(burst.max(1))
        .finish()
        .map(Arc::new)
}

/// The per-IP ceiling as a layer, answering `429` with our body and an honest `Retry-After`.
pub fn ip_ceiling_layer(
    config: Arc<IpCeilingConfig>,
) -> GovernorLayer<ClientIpKey, NoOpMiddleware<QuantaInstant>, axum::body::Body> {
    GovernorLayer::new(config).error_handler(|error| {
        let api_error = match error {
            // tower_governor rounds the wait down to whole seconds (0 for sub-second waits):
            // the real wait is below wait_time + 1, so that is a Retry-After that always works.
            GovernorError::TooManyRequests { wait_time, .. } => {
                metrics::counter!("footfall_rate_limited_total", "limiter" => "ip").increment(1);
                ApiError::TooManyRequests {
                    retry_after: wait_time + 1,
                }
            }
            GovernorError::UnableToExtractKey => {
                ApiError::Internal(anyhow::anyhow!("the per-IP ceiling found no client IP"))
            }
            GovernorError::Other { msg, .. } => {
                ApiError::Internal(anyhow::anyhow!("per-IP ceiling: {msg:?}"))
            }
        };
        api_error.into_response()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eleventh_visit_in_a_minute_is_refused_with_a_retry_after() {
        let limits = RateLimits::new(10, 20, 1000);
        let ip: IpAddr = "1.2.3.4".parse().unwrap();
        for _ in 0..10 {
            limits.check_visit(ip, "https://a.com/").unwrap();
        }
        match limits.check_visit(ip, "https://a.com/") {
            Err(ApiError::TooManyRequests { retry_after }) => assert!(retry_after >= 1),
            other => panic!("expected 429, got {other:?}"),
        }
        // Another page, or another client, has its own quota.
        limits.check_visit(ip, "https://a.com/other").unwrap();
        limits
            .check_visit("1.2.3.5".parse().unwrap(), "https://a.com/")
            .unwrap();
    }

    #[test]
    fn zero_disables_a_limit() {
        let limits = RateLimits::new(0, 0, 10);
        let ip: IpAddr = "1.2.3.4".parse().unwrap();
        for _ in 0..100 {
            limits.check_visit(ip, "https://a.com/").unwrap();
            limits.check_bulk_item(ip, "https://a.com/").unwrap();
        }
    }

    #[test]
    fn the_key_table_never_grows_past_its_cap() {
        let limits = RateLimits::new(10, 20, 100);
        let ip: IpAddr = "1.2.3.4".parse().unwrap();
        let mut refused = 0;
        for i in 0..1000 {
            if limits
                .check_visit(ip, &format!("https://a.com/{i}"))
                .is_err()
            {
                refused += 1;
            }
        }
        assert!(limits.key_count() <= 100);
        assert_eq!(refused, 900);
    }

    #[test]
    fn a_full_key_table_is_scanned_at_most_once_per_interval() {
        let limits = RateLimits::new(10, 20, 100);
        let ip: IpAddr = "1.2.3.4".parse().unwrap();
        for i in 0..100 {
            limits
                .check_visit(ip, &format!("https://a.com/{i}"))
                .unwrap();
        }
        // Thousands of new keys at the cap: every one refused, but only the first pays for a
        // scan of the table (the keys are fresh, so the scan frees nothing).
        for i in 100..5_000 {
            assert!(
                limits
                    .check_visit(ip, &format!("https://a.com/{i}"))
                    .is_err()
            );
        }
        assert_eq!(limits.inline_purges(), 1);
        assert_eq!(limits.key_count(), 100);
    }

    #[test]
    fn an_absurdly_high_ip_rate_still_builds_a_ceiling() {
        assert!(ip_ceiling_config(u32::MAX, 10).is_some());
        assert!(ip_ceiling_config(50, 100).is_some());
        assert!(ip_ceiling_config(0, 100).is_none());
    }
}
