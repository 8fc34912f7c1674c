//! [`LocalKeys`]: idempotency keys kept in this node's memory (phases `single` and
//! `postgres`, which have one node). A concurrent retry waits on the first attempt's
//! watch channel; expired keys are swept as new ones arrive.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::watch;
use tokio::time::Instant;

use flowline_protocol::UserId;

use crate::idempotency::record::{Claim, Recorded};
use crate::refusal::Refusal;

/// Keys held before expired ones are swept (checked every [`SWEEP_EVERY`] new keys).
const SWEEP_AT: usize = 100_000;
/// New keys between two sweep checks.
const SWEEP_EVERY: u64 = 1024;
/// Most keys held at once: beyond it (a million keys within one TTL) a new key is
/// answered `unavailable` rather than growing without bound.
const MAX_KEYS: usize = 1_000_000;

type Key = (UserId, String);

enum Slot {
    Pending {
        /// Closed (its sender dropped) when the first attempt finished.
        done: watch::Receiver<()>,
    },
    Done {
        rec: Recorded,
        at: Instant,
    },
}

/// Idempotency keys of this node.
pub struct LocalKeys {
    ttl: Duration,
    slots: DashMap<Key, Slot>,
    inserted: AtomicU64,
}

/// A fresh key's claim: recorded or released by [`LocalKeys::finish`].
pub struct LocalGuard {
    key: Key,
    _done: watch::Sender<()>,
}

impl LocalKeys {
    /// Keys kept `ttl` after their first answer.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            slots: DashMap::new(),
            inserted: AtomicU64::new(0),
        }
    }

    /// Claim `(user, key)` (the caller compares the fingerprint of a recorded answer).
    pub fn claim(&self, user: UserId, key: &str) -> Result<Claim<LocalGuard>, Refusal> {
        self.sweep();
        // Counted before `entry` locks a shard: `len` locks them all.
        let full = self.slots.len() >= MAX_KEYS;
        let k = (user, key.to_owned());
        let fresh = |slot: &mut Option<Slot>| {
            let (tx, rx) = watch::channel(());
            *slot = Some(Slot::Pending { done: rx });
            LocalGuard {
                key: k.clone(),
                _done: tx,
            }
        };
        match self.slots.entry(k.clone()) {
            dashmap::Entry::Occupied(mut e) => match e.get() {
                Slot::Done { rec, at } if at.elapsed() < self.ttl => Ok(Claim::Done(rec.clone())),
                Slot::Pending { .. } => Ok(Claim::Pending),
                Slot::Done { .. } => {
                    let mut slot = None;
                    let guard = fresh(&mut slot);
                    if let Some(s) = slot {
                        e.insert(s);
                    }
                    Ok(Claim::Fresh(guard))
                }
            },
            dashmap::Entry::Vacant(e) => {
                if full {
                    return Err(Refusal::unavailable());
                }
                let mut slot = None;
                let guard = fresh(&mut slot);
                if let Some(s) = slot {
                    e.insert(s);
                }
                self.inserted.fetch_add(1, Ordering::Relaxed);
                Ok(Claim::Fresh(guard))
            }
        }
    }

    /// Wait (until `deadline` at most) for the pending first attempt of `(user, key)`.
    pub async fn wait(&self, user: UserId, key: &str, deadline: Instant) {
        let rx = match self.slots.get(&(user, key.to_owned())).as_deref() {
            Some(Slot::Pending { done, .. }) => done.clone(),
            _ => return,
        };
        let mut rx = rx;
        // Err once the sender is dropped: the first attempt finished.
        let _ = tokio::time::timeout_at(deadline, rx.changed()).await;
    }

    /// Record the first answer (`keep`) or release the key; wakes the waiting retries.
    pub fn finish(&self, guard: LocalGuard, rec: &Recorded, keep: bool) {
        if keep {
            self.slots.insert(
                guard.key.clone(),
                Slot::Done {
                    rec: rec.clone(),
                    at: Instant::now(),
                },
            );
        } else {
            self.slots.remove(&guard.key);
        }
        drop(guard);
    }

    fn sweep(&self) {
        if self.slots.len() < SWEEP_AT
            || !self
                .inserted
                .load(Ordering::Relaxed)
                .is_multiple_of(SWEEP_EVERY)
        {
            return;
        }
        let ttl = self.ttl;
        self.slots.retain(|_, s| match s {
            Slot::Done { at, .. } => at.elapsed() < ttl,
            Slot::Pending { .. } => true,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_expire_after_the_ttl() {
        let keys = LocalKeys::new(Duration::from_millis(100));
        let rec = Recorded {
            fingerprint: "f".into(),
            status: 201,
            body: "b".into(),
        };
        let Ok(Claim::Fresh(g)) = keys.claim(1, "k") else {
            panic!("fresh key")
        };
        assert!(matches!(keys.claim(1, "k"), Ok(Claim::Pending)));
        keys.finish(g, &rec, true);
        assert!(matches!(keys.claim(1, "k"), Ok(Claim::Done(r)) if r == rec));
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(matches!(keys.claim(1, "k"), Ok(Claim::Fresh(_))));
    }
}
