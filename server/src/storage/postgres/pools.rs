//! [`PgStorage`]: the connection pool, migrations on connect, and the liveness ping.

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::error::{Error, StorageError};
use crate::storage::contract::{Result, Storage};

/// Time allowed to open the start-up connection (migrations).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Postgres-backed [`Storage`].
#[derive(Clone)]
pub struct PgStorage {
    pub(super) pool: PgPool,
}

impl PgStorage {
    /// Connect (pool of `pool_size`, waits for a connection bounded by `acquire_timeout`)
    /// and apply `migrations/`.
    pub async fn connect(
        url: &str,
        pool_size: u32,
        acquire_timeout: std::time::Duration,
    ) -> std::result::Result<Self, Error> {
        // Migrate over a connection of its own, so start-up (and its clear error when
        // Postgres is away) does not depend on how short the acquire timeout is.
        let setup = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect(url)
            .await
            .map_err(StorageError::Database)?;
        sqlx::migrate!("../migrations").run(&setup).await?;
        setup.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(pool_size)
            .acquire_timeout(acquire_timeout)
            .connect_lazy(url)
            .map_err(StorageError::Database)?;
        Ok(Self { pool })
    }

    /// Use an existing pool whose database is already migrated.
    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool }
    }
}

impl Storage for PgStorage {
    fn ping(&self) -> BoxFuture<'_, Result<()>> {
        async move {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(())
        }
        .boxed()
    }
}
