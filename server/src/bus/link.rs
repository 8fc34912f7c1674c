//! [`Link`]: what every bus task shares — the node's identity on the bus, the Redis
//! client and key prefix, the transport, timeouts and the reconnect [`Backoff`].

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::aio::{ConnectionManager, MultiplexedConnection};
use tokio_util::sync::CancellationToken;

use super::origins::Origins;
use crate::metrics::Metrics;

/// Time allowed to connect to Redis.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time allowed for a Redis reply.
pub(super) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);

/// Which Redis mechanism carries the envelopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Redis PUBLISH/SUBSCRIBE on one channel (at most once).
    Pubsub,
    /// Redis Streams, sharded by channel (durable, resumable).
    Queue,
}

/// The node's connection to the bus, shared by its tasks.
pub(super) struct Link {
    pub(super) node_id: String,
    /// This process's incarnation, `<node id>#<random>`: a node skips its own envelopes.
    pub(super) origin: String,
    /// `flowline:<cluster>:`.
    pub(super) prefix: String,
    pub(super) transport: Transport,
    pub(super) client: redis::Client,
    /// For presence queries (reconnects by itself).
    pub(super) query: ConnectionManager,
    pub(super) presence_ttl: Duration,
    /// Set when a presence change could not be queued: the registry task rewrites this
    /// node's whole entry.
    pub(super) presence_resync: AtomicBool,
    /// `queue`: the last entry id of every shard when the node started.
    pub(super) start_ids: Vec<String>,
    /// `pubsub`: the other nodes' envelope numbers and liveness (late or lost?).
    pub(super) origins: Origins,
    pub(super) metrics: Arc<Metrics>,
}

impl Link {
    /// A fresh multiplexed connection whose replies may take up to `response` (longer
    /// than any BLOCK we send on it).
    pub(super) async fn connection(
        &self,
        response: Duration,
    ) -> redis::RedisResult<MultiplexedConnection> {
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(response));
        self.client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
    }
}

/// Exponential backoff for reconnecting: 50 ms doubling to 2 s.
pub(super) struct Backoff(Duration);

impl Backoff {
    const FIRST: Duration = Duration::from_millis(50);
    const MAX: Duration = Duration::from_secs(2);

    pub(super) fn new() -> Self {
        Backoff(Self::FIRST)
    }

    pub(super) fn reset(&mut self) {
        self.0 = Self::FIRST;
    }

    /// Sleep for the current delay (or until shutdown); returns false on shutdown.
    pub(super) async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let d = self.0;
        self.0 = (self.0 * 2).min(Self::MAX);
        tokio::select! {
            () = shutdown.cancelled() => false,
            () = tokio::time::sleep(d) => true,
        }
    }
}
