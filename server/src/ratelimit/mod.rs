//! [`RateLimiter`]: the token buckets of the chat actions, per token and per channel, one
//! check for both transports (the WebSocket op dispatch and the HTTP action routes).
//!
//! ```text
//!  action(token, channel?) ──► Redis GCRA, both buckets in one script (pubsub/queue)
//!                               │ Redis fails → fall back to this node's buckets
//!                              └► this node's buckets (governor; single/postgres)
//!          ──► Ok(Standing: limit, remaining, reset)   → X-RateLimit-* headers
//!          ──► Err(Limited: retry after)               → 429 / `rate_limited`
//! ```
//!
//! The buckets are GCRA (generic cell rate algorithm: a token bucket kept as one
//! timestamp), here and in Redis alike. Where the phase has Redis the buckets are shared
//! by the cluster; otherwise each node keeps its own (the phases without Redis have one
//! node).

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{NotUntil, Quota};

use flowline_protocol::ChannelId;

use crate::auth::TokenHash;
use crate::config::{Bucket, RateConfig};
mod cluster;

pub use cluster::RedisBuckets;

/// Which bucket refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The caller's token.
    Token,
    /// The channel.
    Channel,
}

impl Scope {
    /// Its name in messages and docs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Channel => "channel",
        }
    }
}

/// The caller's bucket after an allowed action (the per-token one, else the channel's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// The bucket's size.
    pub limit: u32,
    /// Tokens left.
    pub remaining: u32,
    /// Time until the bucket is full again.
    pub reset: Duration,
}

/// A refused action: which bucket, and when to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// The bucket that is empty.
    pub scope: Scope,
    /// Its size.
    pub limit: u32,
    /// Time until one token is back.
    pub retry_after: Duration,
    /// Time until the bucket is full again.
    pub reset: Duration,
}

impl Limited {
    /// The human message of a `rate_limited` answer.
    pub fn message(&self) -> String {
        format!(
            "rate limited ({} bucket of {}): retry after {} ms",
            self.scope.as_str(),
            self.limit,
            self.retry_after.as_millis()
        )
    }
}

type Keyed<K> =
    governor::RateLimiter<K, DashMapStateStore<K>, DefaultClock, StateInformationMiddleware>;

/// This node's buckets of one kind (`None`: off).
struct Local<K: std::hash::Hash + Eq + Clone> {
    bucket: Bucket,
    limiter: Keyed<K>,
}

impl<K: std::hash::Hash + Eq + Clone> Local<K> {
    fn new(bucket: Bucket) -> Option<Self> {
        let per_sec = NonZeroU32::new(bucket.per_sec)?;
        let burst = NonZeroU32::new(bucket.burst).unwrap_or(per_sec);
        let quota = Quota::per_second(per_sec).allow_burst(burst);
        Some(Self {
            bucket,
            limiter: governor::RateLimiter::keyed(quota).with_middleware(),
        })
    }

    fn check(&self, key: &K, scope: Scope, clock: &DefaultClock) -> Result<Standing, Limited> {
        let period = period(self.bucket);
        match self.limiter.check_key(key) {
            Ok(s) => {
                let remaining = s.remaining_burst_capacity();
                Ok(Standing {
                    limit: self.bucket.burst,
                    remaining,
                    reset: period * self.bucket.burst.saturating_sub(remaining),
                })
            }
            Err(not_until) => Err(self.limited(&not_until, scope, clock)),
        }
    }

    fn limited(
        &self,
        not_until: &NotUntil<<DefaultClock as Clock>::Instant>,
        scope: Scope,
        clock: &DefaultClock,
    ) -> Limited {
        let retry_after = not_until.wait_time_from(clock.now());
        Limited {
            scope,
            limit: self.bucket.burst,
            retry_after,
            reset: retry_after + period(self.bucket) * self.bucket.burst.saturating_sub(1),
        }
    }

    fn tidy(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// Time one token takes to come back.
pub(crate) fn period(b: Bucket) -> Duration {
    Duration::from_secs(1) / b.per_sec.max(1)
}

/// The rate limits of one node.
pub struct RateLimiter {
    config: RateConfig,
    token: Option<Local<TokenHash>>,
    channel: Option<Local<ChannelId>>,
    redis: Option<RedisBuckets>,
    clock: DefaultClock,
}

impl RateLimiter {
    /// Buckets of `config`, in Redis (shared by the cluster) when `redis` is given, with
    /// this node's own as the fallback when Redis fails.
    pub fn new(config: RateConfig, redis: Option<RedisBuckets>) -> Self {
        Self {
            config,
            token: Local::new(config.token),
            channel: Local::new(config.channel),
            redis,
            clock: DefaultClock::default(),
        }
    }

    /// Take one token from the caller's bucket and, for an action on a channel, from the
    /// channel's. `Ok(None)`: no bucket applies.
    pub async fn check(
        &self,
        token: &TokenHash,
        channel: Option<ChannelId>,
    ) -> Result<Option<Standing>, Limited> {
        let applies =
            self.config.token.is_on() || (channel.is_some() && self.config.channel.is_on());
        if !applies {
            return Ok(None);
        }
        if let Some(redis) = &self.redis {
            match redis.check(&self.config, token, channel).await {
                Ok(outcome) => return outcome,
                Err(e) => {
                    tracing::warn!(error = %e, "rate limits: Redis failed; using this node's buckets");
                }
            }
        }
        self.check_local(token, channel)
    }

    fn check_local(
        &self,
        token: &TokenHash,
        channel: Option<ChannelId>,
    ) -> Result<Option<Standing>, Limited> {
        let mut standing = None;
        if let Some(t) = &self.token {
            standing = Some(t.check(token, Scope::Token, &self.clock)?);
        }
        if let (Some(c), Some(channel)) = (&self.channel, channel) {
            let s = c.check(&channel, Scope::Channel, &self.clock)?;
            standing.get_or_insert(s);
        }
        Ok(standing)
    }

    /// Forget buckets that are full again (call now and then).
    pub fn tidy(&self) {
        if let Some(t) = &self.token {
            t.tidy();
        }
        if let Some(c) = &self.channel {
            c.tidy();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_token_gets_its_burst_then_is_refused_with_a_retry_time() {
        let limits = RateLimiter::new(
            RateConfig {
                token: Bucket {
                    per_sec: 10,
                    burst: 3,
                },
                channel: Bucket::OFF,
            },
            None,
        );
        let (a, b) = ([1u8; 32], [2u8; 32]);
        for left in (0..3).rev() {
            let s = limits.check(&a, Some(1)).await.unwrap().unwrap();
            assert_eq!((s.limit, s.remaining), (3, left));
        }
        let refused = limits.check(&a, Some(1)).await.unwrap_err();
        assert_eq!(refused.scope, Scope::Token);
        assert!(
            refused.retry_after > Duration::ZERO
                && refused.retry_after <= Duration::from_millis(100),
            "{refused:?}"
        );
        // Another token has its own bucket.
        assert!(limits.check(&b, Some(1)).await.is_ok());
    }

    #[tokio::test]
    async fn a_channel_bucket_is_shared_by_every_token() {
        let limits = RateLimiter::new(
            RateConfig {
                token: Bucket::OFF,
                channel: Bucket {
                    per_sec: 1,
                    burst: 2,
                },
            },
            None,
        );
        assert!(limits.check(&[1; 32], Some(7)).await.is_ok());
        assert!(limits.check(&[2; 32], Some(7)).await.is_ok());
        let refused = limits.check(&[3; 32], Some(7)).await.unwrap_err();
        assert_eq!(refused.scope, Scope::Channel);
        assert!(limits.check(&[3; 32], Some(8)).await.is_ok());
        // No channel, no channel bucket.
        assert_eq!(limits.check(&[3; 32], None).await, Ok(None));
    }
}
