//! [`RedisBuckets`]: the rate-limit buckets of a cluster, in Redis (phases `pubsub` and
//! `queue`), so a client spreading its requests over the nodes meets one limit.
//!
//! One Lua script checks the token's and the channel's bucket together and takes a token
//! from each only if both have one (GCRA: a bucket is one key holding its "theoretical
//! arrival time", ms on Redis's own clock, so node clocks do not matter). Keys are
//! `<prefix>rl:t:<token hash>` and `<prefix>rl:c:<channel>` and expire once full again.

use std::time::Duration;

use redis::aio::ConnectionManager;

use flowline_protocol::ChannelId;

use crate::auth::TokenHash;
use crate::config::{Bucket, RateConfig};
use crate::ratelimit::{Limited, Scope, Standing, period};

/// GCRA over the buckets in `KEYS` (ARGV: per key, ms per token and burst). Returns
/// `{1, remaining, 0, reset_ms}` (of the first key) when allowed, or
/// `{0, index of the refusing key, retry_after_ms, reset_ms}`.
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tats = {}
for i, key in ipairs(KEYS) do
  local p = tonumber(ARGV[2 * i - 1])
  local b = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  local allow_at = tat + p - p * b
  if allow_at > now then
    return {0, i, math.ceil(allow_at - now), math.ceil(tat - now)}
  end
  tats[i] = tat + p
end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, string.format('%.3f', tats[i]), 'PX', math.ceil(tats[i] - now) + 1000)
end
local p = tonumber(ARGV[1])
local b = tonumber(ARGV[2])
return {1, math.floor((now + p * b - tats[1]) / p), 0, math.ceil(tats[1] - now)}
";

/// The cluster's buckets in Redis.
pub struct RedisBuckets {
    conn: ConnectionManager,
    prefix: String,
    script: redis::Script,
}

impl RedisBuckets {
    /// Buckets under `prefix` (`flowline:<cluster>:`).
    pub fn new(conn: ConnectionManager, prefix: &str) -> Self {
        Self {
            conn,
            prefix: format!("{prefix}rl:"),
            script: redis::Script::new(SCRIPT),
        }
    }

    /// Take a token from the caller's and the channel's bucket (those that are on).
    /// The outer `Err` is Redis failing (the caller falls back to the node's buckets).
    pub async fn check(
        &self,
        config: &RateConfig,
        token: &TokenHash,
        channel: Option<ChannelId>,
    ) -> redis::RedisResult<Result<Option<Standing>, Limited>> {
        let mut buckets: Vec<(Scope, Bucket, String)> = Vec::with_capacity(2);
        if config.token.is_on() {
            let key = format!("{}t:{}", self.prefix, hex::encode(&token[..16]));
            buckets.push((Scope::Token, config.token, key));
        }
        if let Some(c) = channel.filter(|_| config.channel.is_on()) {
            buckets.push((
                Scope::Channel,
                config.channel,
                format!("{}c:{c}", self.prefix),
            ));
        }
        if buckets.is_empty() {
            return Ok(Ok(None));
        }
        let mut inv = self.script.prepare_invoke();
        for (_, b, key) in &buckets {
            let ms = period(*b).as_secs_f64() * 1000.0;
            inv.key(key).arg(ms).arg(b.burst.max(1));
        }
        let mut conn = self.conn.clone();
        let (allowed, n, retry_ms, reset_ms): (i64, i64, i64, i64) =
            inv.invoke_async(&mut conn).await?;
        let ms = |v: i64| Duration::from_millis(u64::try_from(v).unwrap_or(0));
        if allowed == 1 {
            let b = buckets[0].1;
            return Ok(Ok(Some(Standing {
                limit: b.burst,
                remaining: u32::try_from(n).unwrap_or(0).min(b.burst),
                reset: ms(reset_ms),
            })));
        }
        let index = usize::try_from(n - 1).unwrap_or(0).min(buckets.len() - 1);
        let (scope, b, _) = &buckets[index];
        Ok(Err(Limited {
            scope: *scope,
            limit: b.burst,
            retry_after: ms(retry_ms).max(Duration::from_millis(1)),
            reset: ms(reset_ms),
        }))
    }
}
