//! Error types of the chat node library: start-up errors ([`Error`]) and storage errors
//! ([`StorageError`]).

/// Why the node could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The cluster bus (Redis) could not be set up.
    #[error("cluster bus (Redis): {0}")]
    Bus(String),
    /// Storage could not be opened.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// Applying database migrations failed.
    #[error("applying database migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Serving failed (accept loop).
    #[error("serving failed: {0}")]
    Io(#[from] std::io::Error),
}

/// A storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The referenced row does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A unique name is already taken.
    #[error("{0} already exists")]
    Conflict(String),
    /// The request is inconsistent (e.g. an index out of range).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The database failed or is unreachable.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl StorageError {
    /// A copy for each caller of a batched query that failed (`StorageError` is not
    /// `Clone`): the same variant, so callers retry and refuse exactly as for their own
    /// query.
    pub fn copy(&self) -> StorageError {
        match self {
            StorageError::NotFound(what) => StorageError::NotFound(what),
            StorageError::Conflict(s) => StorageError::Conflict(s.clone()),
            StorageError::Invalid(s) => StorageError::Invalid(s.clone()),
            StorageError::Database(sqlx::Error::PoolTimedOut) => {
                StorageError::Database(sqlx::Error::PoolTimedOut)
            }
            StorageError::Database(sqlx::Error::PoolClosed) => {
                StorageError::Database(sqlx::Error::PoolClosed)
            }
            StorageError::Database(other) => {
                StorageError::Database(sqlx::Error::Protocol(other.to_string()))
            }
        }
    }
}
