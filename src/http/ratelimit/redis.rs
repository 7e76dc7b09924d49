//! The per-(client IP, page URL) quotas shared by every node through one Redis (`--redis`).
//!
//! - **Same semantics as the local limiter**: GCRA with a burst of the whole per-minute quota,
//!   then one every `60 s / quota`; a refusal says how long to wait, rounded up to whole
//!   seconds, at least 1.
//! - **One atomic step per check**: [`GCRA_SCRIPT`], a Lua script run with EVALSHA (the `redis`
//!   crate's `Script` loads it again when Redis has lost it, e.g. after a restart). It takes the
//!   time from Redis's own `TIME`, so the nodes' clocks do not matter, and checks N keys in
//!   order, so a `/bulk-visits` request costs one round trip whatever its size.
//! - **The same key on every node**: `footfall:rl:{v|b}:` and the SHA-1 of the client IP and the
//!   URL ([`key`]); not the local limiter's per-process keyed hash, which differs from node to
//!   node by design.
//! - **Bounded memory**: a key expires (`PX`) when its bucket is full again.
//! - **Redis unreachable**: a check waits at most [`TIMEOUT`] for Redis, then the caller falls
//!   back to the node's local limiter; the outage is logged once, `/metrics` shows
//!   `footfall_rate_limit_redis_up 0` and counts the fallbacks, and for [`RETRY_AFTER`] every
//!   check goes straight to the local limiter. After that, one check tries Redis again (the
//!   connection manager reconnects underneath), and the first answer ends the outage.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ::redis::Script;
use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::http::error::ApiError;

/// Longest a check waits for Redis before it falls back to the local limiter.
pub const TIMEOUT: Duration = Duration::from_millis(200);

/// How long after a failure checks skip Redis before one tries it again.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The fixed part of every key: a footfall cluster owns this prefix in its Redis.
pub const KEY_PREFIX: &str = "footfall:rl:";

/// GCRA over `KEYS`, in order (the same key twice counts twice). `ARGV[1]`: the emission
/// interval, `ARGV[2]`: the burst tolerance (interval × (burst − 1)), both in µs. A key holds its
/// theoretical arrival time (µs, Redis's clock) and expires when that time has passed, i.e.
/// when the bucket is full again. Returns, per key, 0 (allowed and counted) or the µs to wait.
///
/// Times go through `string.format('%d')`: Lua numbers turn into strings with 14 significant
/// digits, and a time in µs has 16.
pub const GCRA_SCRIPT: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local waits = {}
for i, key in ipairs(KEYS) do
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  local wait = tat - tolerance - now
  if wait > 0 then
    waits[i] = wait
  else
    tat = tat + interval
    redis.call('SET', key, string.format('%d', tat),
      'PX', string.format('%d', math.ceil((tat - now) / 1000)))
    waits[i] = 0
  end
end
return waits
";

/// One quota as the script takes it; `None` from [`Quota::per_minute`] when the limit is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// µs between two requests once the burst is spent.
    interval_us: u64,
    /// µs of credit a full bucket holds beyond the next request: interval × (burst − 1).
    tolerance_us: u64,
}

impl Quota {
    /// `per_minute` at once, then one every `60 s / per_minute` (what `governor`'s
    /// `Quota::per_minute` is); `None` for 0 (no limit).
    pub fn per_minute(per_minute: u32) -> Option<Self> {
        let per_minute = u64::from(per_minute);
        if per_minute == 0 {
            return None;
        }
        let interval_us = (60_000_000 / per_minute).max(1);
        Some(Self {
            interval_us,
            tolerance_us: interval_us * (per_minute - 1),
        })
    }
}

/// The Redis key of (client IP, page URL) in the quota `tag` (`v` recording, `b` bulk items):
/// the same on every node, and a fixed length whatever the URL's.
///
/// SHA-1 (already in the tree through `redis`' `Script`) rather than a fast unkeyed hash:
/// without a per-process key, a weak hash would let a client pick a URL whose key is someone
/// else's and spend their quota.
pub fn key(tag: &str, ip: IpAddr, url: &str) -> String {
    let mut hash = sha1_smol::Sha1::new();
    // An address never contains a space, so "ip url" is unambiguous.
    hash.update(ip.to_string().as_bytes());
    hash.update(b" ");
    hash.update(url.as_bytes());
    format!("{KEY_PREFIX}{tag}:{}", hash.digest())
}

/// Never answered yet.
const UNKNOWN: u8 = 0;
/// The last check got an answer.
const UP: u8 = 1;
/// The last check got none: checks use the local limiter until `retry_at`.
const DOWN: u8 = 2;

/// The two shared quotas and the connection to Redis; a limit configured as 0 is absent.
pub struct RedisLimits {
    connection: ConnectionManager,
    script: Script,
    visit: Option<Quota>,
    bulk: Option<Quota>,
    /// The Redis URL without credentials, for log lines.
    target: String,
    /// [`UNKNOWN`], [`UP`] or [`DOWN`].
    state: AtomicU8,
    /// Reference point of `retry_at`.
    epoch: Instant,
    /// While [`DOWN`]: ms after `epoch` before which checks do not try Redis.
    retry_at: AtomicU64,
}

impl RedisLimits {
    /// A limiter on the Redis at `url`, which connects on first use (see [`Self::connect`]).
    /// Must be called inside a Tokio runtime (the connection manager starts a task).
    pub fn new(url: &str, visit: Option<Quota>, bulk: Option<Quota>) -> anyhow::Result<Self> {
        describe_metrics();
        let target = without_credentials(url);
        let client = ::redis::Client::open(url)
            .map_err(|e| anyhow::anyhow!("--redis {target} is not a Redis URL: {e}"))?;
        // One attempt per reconnection, bounded like a check: `RETRY_AFTER` is the retry loop.
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(0)
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT));
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| anyhow::anyhow!("Redis connection manager for {target}: {e}"))?;
        metrics::gauge!("footfall_rate_limit_redis_up").set(0.0);
        Ok(Self {
            connection,
            script: Script::new(GCRA_SCRIPT),
            visit,
            bulk,
            target,
            state: AtomicU8::new(UNKNOWN),
            epoch: Instant::now(),
            retry_at: AtomicU64::new(0),
        })
    }

    /// Tries Redis once (a `PING`, within [`TIMEOUT`]) and logs whether limits are shared.
    pub async fn connect(&self) {
        let mut connection = self.connection.clone();
        let ping = ::redis::cmd("PING");
        match tokio::time::timeout(TIMEOUT, ping.query_async::<()>(&mut connection)).await {
            Ok(Ok(())) => self.answered(),
            Ok(Err(e)) => self.unanswered(&e.to_string()),
            Err(_) => self.unanswered(&format!("no answer within {} ms", TIMEOUT.as_millis())),
        }
    }

    /// Recording requests of `ip` to `urls`: a verdict per URL, or `None` when Redis did not
    /// answer (the caller then asks its local limiter).
    pub async fn check_visits(
        &self,
        ip: IpAddr,
        urls: &[&str],
    ) -> Option<Vec<Result<(), ApiError>>> {
        self.check("visit", "v", self.visit, ip, urls).await
    }

    /// `/bulk-visits` items of `ip` to `urls`, in one round trip; as [`Self::check_visits`].
    pub async fn check_bulk_items(
        &self,
        ip: IpAddr,
        urls: &[&str],
    ) -> Option<Vec<Result<(), ApiError>>> {
        self.check("bulk", "b", self.bulk, ip, urls).await
    }

    async fn check(
        &self,
        limiter: &'static str,
        tag: &str,
        quota: Option<Quota>,
        ip: IpAddr,
        urls: &[&str],
    ) -> Option<Vec<Result<(), ApiError>>> {
        let Some(quota) = quota else {
            return Some(urls.iter().map(|_| Ok(())).collect());
        };
        if !self.may_try() {
            metrics::counter!("footfall_rate_limit_redis_fallbacks_total").increment(1);
            return None;
        }
        let mut invocation = self.script.prepare_invoke();
        for url in urls {
            invocation.key(key(tag, ip, url));
        }
        invocation.arg(quota.interval_us).arg(quota.tolerance_us);
        let mut connection = self.connection.clone();
        let answer = tokio::time::timeout(TIMEOUT, async {
            match invocation.invoke_async::<Vec<i64>>(&mut connection).await {
                // The connection was lost (Redis restarted, or never reached): the manager has
                // started a new one, which this second try waits for.
                Err(e) if e.is_io_error() || e.is_connection_dropped() => {
                    invocation.invoke_async::<Vec<i64>>(&mut connection).await
                }
                other => other,
            }
        })
        .await;
        let waits = match answer {
            Ok(Ok(waits)) if waits.len() == urls.len() => waits,
            Ok(Ok(waits)) => {
                let wrong = format!("{} verdicts for {} keys", waits.len(), urls.len());
                return self.fall_back(&wrong);
            }
            Ok(Err(e)) => return self.fall_back(&e.to_string()),
            Err(_) => {
                return self.fall_back(&format!("no answer within {} ms", TIMEOUT.as_millis()));
            }
        };
        self.answered();
        Some(
            waits
                .into_iter()
                .map(|wait_us| {
                    if wait_us <= 0 {
                        return Ok(());
                    }
                    metrics::counter!("footfall_rate_limited_total", "limiter" => limiter)
                        .increment(1);
                    Err(ApiError::TooManyRequests {
                        retry_after: (wait_us as u64).div_ceil(1_000_000).max(1),
                    })
                })
                .collect(),
        )
    }

    /// Whether the last check (or [`Self::connect`]) got an answer from Redis.
    pub fn is_up(&self) -> bool {
        self.state.load(Ordering::Relaxed) == UP
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Whether this check may ask Redis: always unless it is down; while it is, once
    /// [`RETRY_AFTER`] has passed, and then only the one check that wins the race (the others
    /// keep to the local limiter until that one has its answer).
    fn may_try(&self) -> bool {
        if self.state.load(Ordering::Relaxed) != DOWN {
            return true;
        }
        let now = self.now_ms();
        let retry_at = self.retry_at.load(Ordering::Relaxed);
        now >= retry_at
            && self
                .retry_at
                .compare_exchange(
                    retry_at,
                    now + TIMEOUT.as_millis() as u64 + 1,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    /// Redis answered: the limits are shared (again).
    fn answered(&self) {
        if self.state.load(Ordering::Relaxed) == UP {
            return;
        }
        let before = self.state.swap(UP, Ordering::Relaxed);
        if before == UP {
            return;
        }
        metrics::gauge!("footfall_rate_limit_redis_up").set(1.0);
        if before == DOWN {
            tracing::info!(
                redis = %self.target,
                "Redis answers again: the per-(IP, URL) rate limits are shared by all nodes again"
            );
        } else {
            tracing::info!(
                redis = %self.target,
                "the per-(IP, URL) rate limits are shared by all nodes through Redis"
            );
        }
    }

    /// Redis did not answer: the limits are this node's own until it does.
    fn unanswered(&self, cause: &str) {
        self.retry_at.store(
            self.now_ms() + RETRY_AFTER.as_millis() as u64,
            Ordering::Relaxed,
        );
        if self.state.swap(DOWN, Ordering::Relaxed) != DOWN {
            metrics::gauge!("footfall_rate_limit_redis_up").set(0.0);
            // Once per outage: the next line about Redis is the one saying it is back.
            tracing::warn!(
                redis = %self.target,
                cause,
                "Redis cannot be reached: the per-(IP, URL) rate limits are this node's own \
                 until it answers again (retried every {} s)",
                RETRY_AFTER.as_secs()
            );
        }
    }

    fn fall_back<T>(&self, cause: &str) -> Option<T> {
        metrics::counter!("footfall_rate_limit_redis_fallbacks_total").increment(1);
        self.unanswered(cause);
        None
    }
}

/// `url` for a log line: without user name and password.
fn without_credentials(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_password(None);
            let _ = parsed.set_username("");
            parsed.to_string()
        }
        Err(_) => "<not a URL>".to_owned(),
    }
}

fn describe_metrics() {
    metrics::describe_gauge!(
        "footfall_rate_limit_redis_up",
        "1 while the per-(IP, URL) rate limits are shared through Redis, 0 while this node \
         falls back to its own (or has not reached Redis yet)"
    );
    metrics::describe_counter!(
        "footfall_rate_limit_redis_fallbacks_total",
        "Rate-limit checks (a /bulk-visits request counts once) answered by this node's own \
         limiter because Redis could not be reached"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quota_is_a_burst_of_the_whole_minute_then_one_per_interval() {
        let ten = Quota::per_minute(10).unwrap();
        assert_eq!(ten.interval_us, 6_000_000);
        assert_eq!(ten.tolerance_us, 54_000_000);
        assert_eq!(Quota::per_minute(1).unwrap().tolerance_us, 0);
        assert!(Quota::per_minute(0).is_none());
    }

    #[test]
    fn every_node_derives_the_same_key_and_pairs_do_not_share_one() {
        let ip: IpAddr = "1.2.3.4".parse().unwrap();
        let a = key("v", ip, "https://a.com/");
        // Fixed, not seeded per process: a node started elsewhere derives exactly this
        // (`printf '1.2.3.4 https://a.com/' | sha1sum`).
        assert_eq!(a, "footfall:rl:v:e0360396d462226deeaa01c5d0afb4fe6954f80a");
        assert_eq!(a, key("v", ip, "https://a.com/"));
        assert_ne!(a, key("b", ip, "https://a.com/"));
        assert_ne!(a, key("v", ip, "https://a.com/x"));
        assert_ne!(a, key("v", "1.2.3.5".parse().unwrap(), "https://a.com/"));
        assert_eq!(a.len(), key("v", ip, &"x".repeat(2000)).len());
    }

    #[test]
    fn log_lines_name_redis_without_its_password() {
        let shown = without_credentials("redis://user:secret@cache.internal:6380/2");
        assert!(
            !shown.contains("secret") && !shown.contains("user"),
            "{shown}"
        );
        assert!(shown.contains("cache.internal:6380"), "{shown}");
    }
}
