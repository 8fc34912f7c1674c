//! [`Batcher`]: coalesces concurrent storage lookups of one kind into one query, so a
//! connect storm costs a handful of queries in flight instead of one (or several) per
//! connecting session, and never holds more than [`IN_FLIGHT`] pool connections.
//!
//! ```text
//!  get(keys) ─► queue ─► worker: take every queued request (up to MAX_KEYS keys)
//!                                 ─► fetch(all their keys): ONE storage query
//!                                 ─► answer each request with its keys' values
//! ```
//!
//! A request is answered by a query that started after it was queued (the worker only
//! takes requests already in the queue), so a batched read sees everything committed
//! before the caller asked, exactly like the single read it replaces. With nothing
//! queued the first request starts its query at once: batching adds no wait when idle.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, OnceLock};

use futures_util::future::BoxFuture;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::error::StorageError;
use crate::storage;

/// Queries of one batcher running at once (the next batch gathers while one runs).
pub const IN_FLIGHT: usize = 2;
/// Keys in one query at most.
const MAX_KEYS: usize = 1000;

/// Answers a batch: the value of every key that has one (missing keys get none).
pub type Fetch<K, V> =
    Arc<dyn Fn(Vec<K>) -> BoxFuture<'static, storage::Result<HashMap<K, V>>> + Send + Sync>;

struct Job<K, V> {
    keys: Vec<K>,
    reply: oneshot::Sender<storage::Result<Vec<(K, V)>>>,
}

/// Coalesces lookups of one kind (see the module doc).
pub struct Batcher<K, V> {
    fetch: Fetch<K, V>,
    /// The worker's queue, created (and the worker spawned) on first use, so a batcher can
    /// be built outside a runtime.
    queue: OnceLock<mpsc::UnboundedSender<Job<K, V>>>,
}

impl<K, V> Batcher<K, V>
where
    K: Eq + Hash + Clone + Send + 'static,
    V: Clone + Send + 'static,
{
    /// A batcher answering with `fetch`.
    pub fn new(fetch: Fetch<K, V>) -> Self {
        Self {
            fetch,
            queue: OnceLock::new(),
        }
    }

    /// The values of `keys` that have one, in the order of `keys`.
    pub async fn get_many(&self, keys: Vec<K>) -> storage::Result<Vec<(K, V)>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(work(self.fetch.clone(), rx));
            tx
        });
        let (reply, answer) = oneshot::channel();
        queue.send(Job { keys, reply }).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// The value of `key`, if it has one.
    pub async fn get(&self, key: K) -> storage::Result<Option<V>> {
        Ok(self.get_many(vec![key]).await?.pop().map(|(_, v)| v))
    }
}

/// The worker ended (the runtime is shutting down).
fn gone() -> StorageError {
    StorageError::Database(sqlx::Error::PoolClosed)
}

async fn work<K, V>(fetch: Fetch<K, V>, mut rx: mpsc::UnboundedReceiver<Job<K, V>>)
where
    K: Eq + Hash + Clone + Send + 'static,
    V: Clone + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        // Everything queued while waiting for a slot joins this batch.
        let mut jobs = vec![first];
        let mut n = jobs[0].keys.len();
        while n < MAX_KEYS {
            match rx.try_recv() {
                Ok(job) => {
                    n += job.keys.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let mut keys: Vec<K> = jobs.iter().flat_map(|j| j.keys.iter().cloned()).collect();
        let mut seen = std::collections::HashSet::with_capacity(keys.len());
        keys.retain(|k| seen.insert(k.clone()));
        let fetch = fetch.clone();
        tokio::spawn(async move {
            let result = fetch(keys).await;
            drop(permit);
            match result {
                Ok(values) => {
                    for job in jobs {
                        let found = job
                            .keys
                            .into_iter()
                            .filter_map(|k| values.get(&k).map(|v| (k.clone(), v.clone())))
                            .collect();
                        let _ = job.reply.send(Ok(found));
                    }
                }
                Err(e) => {
                    for job in jobs {
                        let _ = job.reply.send(Err(e.copy()));
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use futures_util::FutureExt;

    use super::*;

    /// A batcher doubling its keys, counting queries and the largest batch.
    fn doubling(queries: Arc<AtomicUsize>, largest: Arc<AtomicUsize>) -> Batcher<u32, u32> {
        Batcher::new(Arc::new(move |keys: Vec<u32>| {
            let (queries, largest) = (queries.clone(), largest.clone());
            async move {
                queries.fetch_add(1, Ordering::SeqCst);
                largest.fetch_max(keys.len(), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                if keys.contains(&13) {
                    return Err(StorageError::Database(sqlx::Error::PoolTimedOut));
                }
                Ok(keys
                    .into_iter()
                    .filter(|k| k % 2 == 0)
                    .map(|k| (k, 2 * k))
                    .collect())
            }
            .boxed()
        }))
    }

    #[tokio::test]
    async fn concurrent_lookups_share_a_few_queries() {
        let (queries, largest) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let b = Arc::new(doubling(queries.clone(), largest.clone()));
        // 13 fails its batch (see `doubling`): left out here.
        let tasks: Vec<_> = (0..200u32)
            .filter(|&k| k != 13)
            .map(|k| {
                let b = b.clone();
                tokio::spawn(async move { (k, b.get(k).await.unwrap()) })
            })
            .collect();
        for t in tasks {
            let (k, v) = t.await.unwrap();
            assert_eq!(v, (k % 2 == 0).then_some(2 * k), "key {k}");
        }
        let q = queries.load(Ordering::SeqCst);
        assert!(q <= 4, "199 lookups took {q} queries");
        assert!(largest.load(Ordering::SeqCst) >= 100);
        let many = b.get_many(vec![4, 5, 6, 4]).await.unwrap();
        assert_eq!(many, [(4, 8), (6, 12), (4, 8)]);
        assert!(b.get_many(Vec::new()).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_failed_query_fails_each_of_its_requests_alike() {
        let b = doubling(Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (x, y) = tokio::join!(b.get(13), b.get(2));
        for r in [x.map(|_| ()), y.map(|_| ())] {
            // Either both shared the failing query or `2` got its own.
            if let Err(e) = r {
                assert!(matches!(
                    e,
                    StorageError::Database(sqlx::Error::PoolTimedOut)
                ));
            }
        }
        assert!(b.get(13).await.is_err());
        assert_eq!(b.get(2).await.unwrap(), Some(4));
    }
}
