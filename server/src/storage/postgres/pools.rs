//! [`PgStorage`]: its two connection pools, migrations on connect, and the liveness ping.
//!
//! The message path has its own budget: message appends (`send`, committed in batches by
//! [`Appends`]) draw from the `send` pool (and so do the writes' membership rechecks,
//! `Spaces::recheck_reads`), everything
//! else (sign-in, subscribe and resume reads, history, presence audiences, gap fills,
//! HTTP) from the `other` pool, so a connect storm's reads never make a send wait for a
//! connection. Each wait for a connection is bounded (the acquire timeout: then the call
//! fails with `unavailable`) and recorded in `flowline_db_pool_wait_seconds{pool}`. A
//! connection idle under [`PING_IDLE`] is not pinged again before use (sqlx pinged it
//! when it was released).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use metrics::Histogram;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Connection, Postgres};

use super::appends::Appends;
use crate::error::{Error, StorageError};
use crate::metrics::Metrics;
use crate::storage::contract::{Result, Storage};

/// Time allowed to open the start-up connection (migrations).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A pooled connection idle at least this long is pinged before it is used (one that
/// was used since passed sqlx's ping on release moments ago).
const PING_IDLE: Duration = Duration::from_secs(1);

/// Sizes of the two pools and the longest wait for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSizes {
    /// Connections for message appends.
    pub send: u32,
    /// Connections for everything else.
    pub other: u32,
    /// Longest wait for a connection before the call fails (`unavailable`).
    pub acquire_timeout: Duration,
}

/// Postgres-backed [`Storage`].
#[derive(Clone)]
pub struct PgStorage {
    /// Everything but message appends.
    other: PgPool,
    /// Message appends (through [`Appends`], which commits them in batches).
    send: PgPool,
    /// The group commit of appends over `send`.
    pub(super) appends: Arc<Appends>,
    /// Wait histograms (`send`, `other`), when the node records metrics.
    waits: Option<(Histogram, Histogram)>,
}

impl PgStorage {
    /// Apply `migrations/` and open both pools (lazily: connections open on first use, up
    /// to each pool's size); record waits into `metrics` if given.
    pub async fn connect(
        url: &str,
        sizes: PoolSizes,
        metrics: Option<&Metrics>,
    ) -> std::result::Result<Self, Error> {
        // Migrate over a pool of its own, so start-up (and its clear error when Postgres
        // is away) does not depend on how short the acquire timeout is.
        let setup = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect(url)
            .await
            .map_err(StorageError::Database)?;
        sqlx::migrate!("../migrations").run(&setup).await?;
        setup.close().await;
        let pool = |size: u32| {
            PgPoolOptions::new()
                .max_connections(size)
                .acquire_timeout(sizes.acquire_timeout)
                // sqlx pings every connection when it goes back to the pool; pinging it
                // again when taken out doubles the round trips of a busy pool's calls
                // (on a loaded machine a round trip costs 0.1–1 s), so only a connection
                // idle for PING_IDLE is tested before use.
                .test_before_acquire(false)
                .before_acquire(|conn, meta| {
                    async move {
                        if meta.idle_for >= PING_IDLE {
                            conn.ping().await?;
                        }
                        Ok(true)
                    }
                    .boxed()
                })
                .connect_lazy(url)
                .map_err(StorageError::Database)
        };
        let other = pool(sizes.other)?;
        let send = pool(sizes.send)?;
        let waits = metrics.map(|m| (m.db_pool_wait_send.clone(), m.db_pool_wait_other.clone()));
        let appends = Arc::new(Appends::new(
            send.clone(),
            sizes.acquire_timeout,
            waits.as_ref().map(|w| w.0.clone()),
            metrics.map(|m| m.db_append_statements.clone()),
        ));
        Ok(Self {
            other,
            send,
            appends,
            waits,
        })
    }

    /// Use an existing pool (for both kinds of call) whose database is already migrated.
    pub fn from_pool(pool: PgPool) -> Self {
        let max_wait = pool.options().get_acquire_timeout();
        Self {
            appends: Arc::new(Appends::new(pool.clone(), max_wait, None, None)),
            other: pool.clone(),
            send: pool,
            waits: None,
        }
    }

    /// A connection of the `other` pool (waits bounded and recorded).
    pub(super) async fn conn(&self) -> std::result::Result<PoolConnection<Postgres>, sqlx::Error> {
        acquire(&self.other, self.waits.as_ref().map(|w| &w.1)).await
    }

    /// A connection of the `send` pool (waits bounded and recorded).
    pub(super) async fn send_conn(
        &self,
    ) -> std::result::Result<PoolConnection<Postgres>, sqlx::Error> {
        acquire(&self.send, self.waits.as_ref().map(|w| &w.0)).await
    }
}

async fn acquire(
    pool: &PgPool,
    wait: Option<&Histogram>,
) -> std::result::Result<PoolConnection<Postgres>, sqlx::Error> {
    let started = Instant::now();
    let conn = pool.acquire().await;
    if let Some(h) = wait {
        h.record(started.elapsed().as_secs_f64());
    }
    conn
}

impl Storage for PgStorage {
    fn ping(&self) -> BoxFuture<'_, Result<()>> {
        async move {
            sqlx::query("SELECT 1")
                .execute(&mut *self.conn().await?)
                .await?;
            Ok(())
        }
        .boxed()
    }
}
