//! [`PgStorage`]: the connection pool, migrations on connect, and the liveness ping.

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::error::{Error, StorageError};
use crate::storage::contract::{Result, Storage};

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
        let pool = PgPoolOptions::new()
            .max_connections(pool_size)
            .acquire_timeout(acquire_timeout)
            .connect(url)
            .await
            .map_err(StorageError::Database)?;
        sqlx::migrate!("../migrations").run(&pool).await?;
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
