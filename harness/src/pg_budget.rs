//! How many Postgres connections each node of a run may hold. Every node opens two pools
//! (`--db-pool-size` 16 and `--db-send-pool-size` 8 by default), so 7 nodes want 168
//! connections, more than a stock Postgres allows (`max_connections` 100, some of them
//! used by other clients). Past the server's limit new connections are refused, every
//! pool waits out its acquire timeout and a connect storm turns into refused hellos. So
//! before the nodes start, the harness asks the server what is left and, when the
//! defaults do not fit, gives each node smaller pools that do (one third for appends), or
//! refuses the run (exit 2) when not even the smallest pools fit.

use std::time::Duration;

use anyhow::Context;
use sqlx::Connection;

use flowline_server::config::{DEFAULT_DB_POOL_SIZE, DEFAULT_DB_SEND_POOL_SIZE};

/// Connections left free for the harness's own (creating and dropping the run's
/// database, a node's one-connection migration pool while it starts).
pub const MARGIN: u32 = 2;
/// The smallest pools a node runs with: 2 for everything else, 1 for appends.
pub const MIN_PER_NODE: u32 = 3;

/// The pool sizes every node of the run gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pools {
    /// `--db-pool-size`.
    pub other: u32,
    /// `--db-send-pool-size`.
    pub send: u32,
}

impl Pools {
    /// The nodes' own defaults.
    pub const DEFAULT: Pools = Pools {
        other: DEFAULT_DB_POOL_SIZE,
        send: DEFAULT_DB_SEND_POOL_SIZE,
    };

    /// Connections one node may hold.
    pub fn per_node(self) -> u32 {
        self.other + self.send
    }

    /// The node flags that set them.
    pub fn args(self) -> [String; 4] {
        [
            "--db-pool-size".into(),
            self.other.to_string(),
            "--db-send-pool-size".into(),
            self.send.to_string(),
        ]
    }
}

/// Pools for each of `nodes` nodes when the server has `free` connections left: the
/// defaults when they fit (with [`MARGIN`]), else an equal share, a third of it (at least
/// one) for appends; an error naming the need when a share is under [`MIN_PER_NODE`].
pub fn plan(free: u32, nodes: u32) -> anyhow::Result<Pools> {
    if nodes == 0 {
        return Ok(Pools::DEFAULT);
    }
    let usable = free.saturating_sub(MARGIN);
    if usable >= nodes * Pools::DEFAULT.per_node() {
        return Ok(Pools::DEFAULT);
    }
    let share = usable / nodes;
    if share < MIN_PER_NODE {
        anyhow::bail!(
            "Postgres has {free} connection(s) left for this run, and its {nodes} node(s) need \
             at least {need} ({MIN_PER_NODE} each, {MARGIN} for the harness; {want} for the \
             nodes' default pools of {} + {}): raise the server's max_connections, end \
             other clients, or run fewer nodes",
            Pools::DEFAULT.other,
            Pools::DEFAULT.send,
            need = nodes * MIN_PER_NODE + MARGIN,
            want = nodes * Pools::DEFAULT.per_node() + MARGIN,
        );
    }
    let send = (share / 3).max(1);
    Ok(Pools {
        other: share - send,
        send,
    })
}

/// Connections the server at `url` has left for clients like ours:
/// `max_connections - superuser_reserved_connections - (client connections now)`.
/// Counts the reserved slots as taken although the run connects as whoever `url` names
/// (often a superuser): a plan that fits without them fits for any role.
pub async fn free_connections(url: &str) -> anyhow::Result<u32> {
    let mut c = tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(url))
        .await
        .context("connecting to Postgres to read its connection limit timed out")?
        .context("connecting to Postgres to read its connection limit")?;
    // Our own connection is counted as in use: it closes right after, a margin of one.
    let (free,): (i64,) = sqlx::query_as(
        "SELECT current_setting('max_connections')::bigint
              - current_setting('superuser_reserved_connections')::bigint
              - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')",
    )
    .fetch_one(&mut c)
    .await
    .context("reading Postgres's max_connections and the connections in use")?;
    c.close().await.ok();
    Ok(u32::try_from(free.max(0)).unwrap_or(u32::MAX))
}

/// What to say when the plan is not the defaults.
pub fn note(free: u32, nodes: u32, pools: Pools) -> Option<String> {
    (pools != Pools::DEFAULT).then(|| {
        format!(
            "Postgres has {free} connection(s) left: each of the {nodes} node(s) gets pools of \
             {} + {} (defaults {} + {} need {}; raise max_connections for them)",
            pools.other,
            pools.send,
            Pools::DEFAULT.other,
            Pools::DEFAULT.send,
            nodes * Pools::DEFAULT.per_node() + MARGIN,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_kept_when_they_fit() {
        assert_eq!(plan(300, 7).unwrap(), Pools::DEFAULT);
        assert_eq!(plan(7 * 24 + MARGIN, 7).unwrap(), Pools::DEFAULT);
        assert_eq!(plan(90, 2).unwrap(), Pools::DEFAULT);
    }

    #[test]
    fn a_stock_postgres_is_shared_equally_with_a_third_for_appends() {
        // max_connections 100, 3 reserved, 7 in use: 90 left for 7 nodes.
        let p = plan(90, 7).unwrap();
        assert_eq!(p, Pools { other: 8, send: 4 });
        assert!(7 * p.per_node() + MARGIN <= 90);
        // One short of the defaults also shares.
        let p = plan(7 * 24 + MARGIN - 1, 7).unwrap();
        assert_eq!(p, Pools { other: 16, send: 7 });
        // The smallest share keeps one connection for appends.
        assert_eq!(plan(3 + MARGIN, 1).unwrap(), Pools { other: 2, send: 1 });
    }

    #[test]
    fn too_few_connections_are_refused_with_the_need() {
        let e = plan(20, 7).unwrap_err().to_string();
        assert!(e.contains("20 connection(s) left"), "{e}");
        assert!(e.contains("need at least 23"), "{e}");
        assert!(
            e.contains("170 for the nodes' default pools of 16 + 8"),
            "{e}"
        );
        assert!(plan(0, 1).is_err());
    }

    #[test]
    fn the_note_is_only_for_reduced_pools() {
        assert_eq!(note(300, 7, Pools::DEFAULT), None);
        let n = note(90, 7, plan(90, 7).unwrap()).unwrap();
        assert!(
            n.contains("each of the 7 node(s) gets pools of 8 + 4"),
            "{n}"
        );
        assert!(n.contains("need 170"), "{n}");
        assert_eq!(
            Pools { other: 8, send: 4 }.args(),
            ["--db-pool-size", "8", "--db-send-pool-size", "4"].map(String::from)
        );
    }

    /// The real server's answer agrees with its settings and what is in use.
    #[tokio::test]
    async fn free_connections_reads_the_real_server() {
        let url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let free = free_connections(&url).await.unwrap();
        let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
        let (max, reserved): (i64, i64) = sqlx::query_as(
            "SELECT current_setting('max_connections')::bigint,
                    current_setting('superuser_reserved_connections')::bigint",
        )
        .fetch_one(&mut c)
        .await
        .unwrap();
        // The reserved slots and this test's own connection (at least) are not free.
        assert!(
            i64::from(free) < max - reserved,
            "free {free} of max {max}, {reserved} reserved"
        );
        assert!(free > 0, "the test server has room for this test");
    }

    #[tokio::test]
    async fn an_unreachable_server_is_an_error_that_says_so() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = free_connections(&format!("postgres://postgres@127.0.0.1:{port}/x"))
            .await
            .unwrap_err();
        assert!(format!("{e:#}").contains("connection limit"), "{e:#}");
    }
}
