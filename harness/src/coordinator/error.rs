//! Why the coordinator could not start a run (each is exit 2 for `flowline run`).

/// The workers could not all be gathered, measured and started.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// The deadline passed before every shard said hello.
    #[error(
        "{} of {shards} worker(s) did not say hello within {timeout:?}: missing shard(s) {}",
        missing.len(),
        list(missing)
    )]
    Missing {
        /// Shards never heard from.
        missing: Vec<usize>,
        /// Shards of the run.
        shards: usize,
        /// The deadline (`--workers-timeout`).
        timeout: std::time::Duration,
    },
    /// A worker runs another build, scenario, seed, shard count or protocol version.
    #[error("worker shard {shard} ({peer}) refused: {reason}")]
    Refused {
        /// Its shard.
        shard: usize,
        /// Its address (and host name, if it gave one).
        peer: String,
        /// What differs.
        reason: String,
    },
    /// A worker went away, or did not answer the clock pings, before the start.
    #[error("worker shard {shard} ({peer}) was lost before the start: {reason}")]
    Lost {
        /// Its shard.
        shard: usize,
        /// Its address.
        peer: String,
        /// What happened.
        reason: String,
    },
    /// The listener failed.
    #[error("accepting worker connections: {0}")]
    Accept(#[source] std::io::Error),
}

fn list(shards: &[usize]) -> String {
    shards
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
