//! `Idempotency-Key`: a retried `POST` answers the first result instead of acting twice.
//!
//! ```text
//!  request(key) ──► claim(user, key, fingerprint)
//!                     ├─ fresh   → act (in its own task: a dropped client cannot abandon it
//!                     │            half way) → record → answer
//!                     ├─ pending → wait for the first one's record (concurrent retry) → replay
//!                     ├─ done    → replay (header `Idempotent-Replayed: true`)
//!                     └─ same key, other request → 409 `conflict`
//! ```
//!
//! A key belongs to one user; it is kept for the TTL after the first answer
//! (`--idempotency-ttl-secs`, default 24 h). Answers with 2xx and 4xx are recorded; a
//! 5xx or 429 releases the key (nothing was done), so a retry acts again.
//! Where the keys live: `local.rs` (this node; phases `single`, `postgres`,
//! which have one node) or `cluster.rs` (Redis, cluster-wide; phases `pubsub`
//! and `queue`).

use std::future::Future;
use std::time::Duration;

use flowline_protocol::UserId;
use flowline_protocol::actions::MAX_IDEMPOTENCY_KEY;
use flowline_protocol::ws::ErrorCode;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

mod cluster;
mod local;
mod record;

use crate::refusal::Refusal;
pub use cluster::RedisKeys;
pub use local::LocalKeys;
pub use record::{Claim, Recorded};

/// Longest a retry waits for a concurrent first attempt with the same key before it is
/// answered 409 (the first attempt is still running: retry later).
pub const WAIT_FOR_FIRST: Duration = Duration::from_secs(10);

/// The answer of an idempotent request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: String,
    /// Replayed from an earlier request with the same key.
    pub replayed: bool,
}

/// Where the keys live.
pub enum Idempotency {
    /// On this node.
    Local(LocalKeys),
    /// In Redis, shared by the cluster.
    Redis(RedisKeys),
}

/// The fingerprint of a request: its method, path and canonical body.
pub fn fingerprint(method: &str, path: &str, body: &impl Serialize) -> String {
    let mut h = Sha256::new();
    h.update(method.as_bytes());
    h.update([0]);
    h.update(path.as_bytes());
    h.update([0]);
    h.update(serde_json::to_vec(body).unwrap_or_default());
    hex::encode(h.finalize())
}

/// Check an `Idempotency-Key` value: 1 to [`MAX_IDEMPOTENCY_KEY`] bytes of printable
/// ASCII.
pub fn check_key(key: &str) -> Result<(), Refusal> {
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Refusal::err(
            ErrorCode::BadRequest,
            format!(
                "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters"
            ),
        );
    }
    Ok(())
}

/// Is an answer with this status kept for retries? 5xx and 429 mean nothing was done.
fn keep(status: u16) -> bool {
    status < 500 && status != 429
}

impl Idempotency {
    /// Run `act` once per `(user, key)`: the first request acts, any later one with the
    /// same key and fingerprint gets the first answer (waiting for it if it is still
    /// running). `act` runs in its own task, so it completes and is recorded even if the
    /// caller goes away.
    pub async fn run<F, Fut>(
        &self,
        user: UserId,
        key: &str,
        fingerprint: String,
        act: F,
    ) -> Result<Answer, Refusal>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = (u16, String)> + Send + 'static,
    {
        check_key(key)?;
        let deadline = tokio::time::Instant::now() + WAIT_FOR_FIRST;
        let mut act = Some(act);
        loop {
            let claim = match self {
                Self::Local(k) => k.claim(user, key).map(|c| c.map_fresh(Guard::Local)),
                Self::Redis(k) => k
                    .claim(user, key, &fingerprint)
                    .await
                    .map(|c| c.map_fresh(Guard::Redis)),
            }?;
            match claim {
                Claim::Done(rec) => {
                    if rec.fingerprint != fingerprint {
                        return Refusal::err(
                            ErrorCode::Conflict,
                            "this Idempotency-Key was used for a different request",
                        );
                    }
                    return Ok(Answer {
                        status: rec.status,
                        body: rec.body,
                        replayed: true,
                    });
                }
                Claim::Pending => {
                    if tokio::time::Instant::now() >= deadline {
                        return Refusal::err(
                            ErrorCode::Conflict,
                            "a request with this Idempotency-Key is still in progress; retry later",
                        );
                    }
                    match self {
                        Self::Local(k) => k.wait(user, key, deadline).await,
                        Self::Redis(_) => tokio::time::sleep(RedisKeys::POLL).await,
                    }
                }
                Claim::Fresh(guard) => {
                    let Some(act) = act.take() else {
                        return Err(Refusal::unavailable());
                    };
                    let task = tokio::spawn(act());
                    let (status, body) = match task.await {
                        Ok(answer) => answer,
                        Err(e) => {
                            tracing::error!(error = %e, "an idempotent action failed");
                            (500, String::new())
                        }
                    };
                    let rec = Recorded {
                        fingerprint,
                        status,
                        body,
                    };
                    let kept = keep(status);
                    match (guard, self) {
                        (Guard::Local(g), Self::Local(k)) => k.finish(g, &rec, kept),
                        (Guard::Redis(g), Self::Redis(k)) => k.finish(g, &rec, kept).await,
                        _ => {}
                    }
                    return Ok(Answer {
                        status: rec.status,
                        body: rec.body,
                        replayed: false,
                    });
                }
            }
        }
    }
}

/// The claim of a fresh key, released or recorded by `finish`.
enum Guard {
    Local(crate::idempotency::local::LocalGuard),
    Redis(crate::idempotency::cluster::RedisGuard),
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn keys() -> Arc<Idempotency> {
        Arc::new(Idempotency::Local(LocalKeys::new(Duration::from_secs(60))))
    }

    #[tokio::test]
    async fn a_retry_replays_and_concurrent_retries_act_once() {
        let idem = keys();
        let acted = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (idem, acted) = (idem.clone(), acted.clone());
            tasks.push(tokio::spawn(async move {
                idem.run(1, "k1", "fp".into(), move || async move {
                    acted.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    (201, "{\"id\":1}".to_owned())
                })
                .await
            }));
        }
        let mut replayed = 0;
        for t in tasks {
            let a = t.await.unwrap().unwrap();
            assert_eq!((a.status, a.body.as_str()), (201, "{\"id\":1}"));
            replayed += usize::from(a.replayed);
        }
        assert_eq!(acted.load(Ordering::SeqCst), 1);
        assert_eq!(replayed, 7);
        // Another user's same key is another key; a different request is refused.
        let other = idem
            .run(2, "k1", "fp".into(), || async { (201, "2".to_owned()) })
            .await
            .unwrap();
        assert!(!other.replayed);
        let clash = idem
            .run(1, "k1", "other".into(), || async { (201, "3".to_owned()) })
            .await
            .unwrap_err();
        assert_eq!(clash.code, ErrorCode::Conflict);
    }

    #[tokio::test]
    async fn a_failure_releases_the_key() {
        let idem = keys();
        let first = idem
            .run(1, "k", "fp".into(), || async { (503, "{}".to_owned()) })
            .await
            .unwrap();
        assert_eq!(first.status, 503);
        let second = idem
            .run(1, "k", "fp".into(), || async { (201, "ok".to_owned()) })
            .await
            .unwrap();
        assert_eq!((second.status, second.replayed), (201, false));
    }

    #[test]
    fn keys_are_checked() {
        assert!(check_key("abc-123_x").is_ok());
        assert!(check_key("").is_err());
        assert!(check_key("has space").is_err());
        assert!(check_key(&"k".repeat(256)).is_err());
    }
}
