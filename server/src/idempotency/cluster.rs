//! [`RedisKeys`]: idempotency keys kept in Redis under the cluster prefix (phases
//! `pubsub` and `queue`), so a retry through another node of the cluster is answered
//! the first result too.
//!
//! A key is `<prefix>idem:<user>:<key>`: `SET NX` claims it as pending (expiring after
//! [`PENDING_TTL`] in case its node dies mid-request), the first answer replaces it for
//! the TTL; a release deletes it. Retries poll a pending key every [`RedisKeys::POLL`].

use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

use flowline_protocol::UserId;

use crate::idempotency::record::{Claim, Recorded};
use crate::refusal::Refusal;

/// How long a claimed key stays pending if its node never finishes it.
pub const PENDING_TTL: Duration = Duration::from_secs(60);

/// What a key holds.
#[derive(Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum Stored {
    Pending { fingerprint: String },
    Done(Recorded),
}

/// Idempotency keys in Redis, shared by the cluster.
pub struct RedisKeys {
    conn: ConnectionManager,
    prefix: String,
    ttl: Duration,
}

/// A fresh key's claim: recorded or released by [`RedisKeys::finish`].
pub struct RedisGuard {
    key: String,
}

fn unavailable(e: &redis::RedisError) -> Refusal {
    tracing::warn!(error = %e, "idempotency keys: Redis failed");
    Refusal::unavailable()
}

impl RedisKeys {
    /// Interval at which a retry looks at a pending key again.
    pub const POLL: Duration = Duration::from_millis(20);

    /// Keys under `prefix` (`flowline:<cluster>:`), kept `ttl` after their first answer.
    pub fn new(conn: ConnectionManager, prefix: &str, ttl: Duration) -> Self {
        Self {
            conn,
            prefix: format!("{prefix}idem:"),
            ttl,
        }
    }

    /// Claim `(user, key)` for a request with `fingerprint`.
    pub async fn claim(
        &self,
        user: UserId,
        key: &str,
        fingerprint: &str,
    ) -> Result<Claim<RedisGuard>, Refusal> {
        let k = format!("{}{user}:{key}", self.prefix);
        let pending = serde_json::to_string(&Stored::Pending {
            fingerprint: fingerprint.to_owned(),
        })
        .map_err(|_| Refusal::unavailable())?;
        let mut conn = self.conn.clone();
        let opts = redis::SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(redis::SetExpiry::PX(millis(PENDING_TTL)));
        let set: Option<String> = conn
            .set_options(&k, pending, opts)
            .await
            .map_err(|e| unavailable(&e))?;
        if set.is_some() {
            return Ok(Claim::Fresh(RedisGuard { key: k }));
        }
        let got: Option<String> = conn.get(&k).await.map_err(|e| unavailable(&e))?;
        match got.and_then(|s| serde_json::from_str::<Stored>(&s).ok()) {
            Some(Stored::Done(rec)) => Ok(Claim::Done(rec)),
            // Pending, or gone since the SET (expired or released): look again.
            _ => Ok(Claim::Pending),
        }
    }

    /// Record the first answer (`keep`) or release the key. A failure is logged: the
    /// key then expires as pending, and retries are answered `conflict` until it does.
    pub async fn finish(&self, guard: RedisGuard, rec: &Recorded, keep: bool) {
        let mut conn = self.conn.clone();
        let result: redis::RedisResult<()> = if keep {
            match serde_json::to_string(&Stored::Done(rec.clone())) {
                Ok(v) => conn.pset_ex(&guard.key, v, millis(self.ttl)).await,
                Err(e) => {
                    tracing::error!(error = %e, "encoding an idempotent answer");
                    conn.del(&guard.key).await
                }
            }
        } else {
            conn.del(&guard.key).await
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "idempotency keys: cannot record an answer in Redis");
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}
