//! Helpers shared by the integration tests: an in-process chat node, a small scenario,
//! and running a scenario's shards as in-process workers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use flowline_loadgen::aggregate::{Aggregator, RunMeta, Summary};
use flowline_loadgen::plan::{Plan, Shard};
use flowline_loadgen::scenario::Scenario;
use flowline_loadgen::worker::{self, WorkerConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Admin secret of the test nodes.
pub const SECRET: &str = "it-secret";

/// A node running in this process; stopped on drop.
pub struct Node {
    /// `http://127.0.0.1:port`.
    pub http: String,
    /// `ws://127.0.0.1:port/ws`.
    pub ws: String,
    shutdown: CancellationToken,
    /// The node's data directory (uploads), removed when the test ends.
    _data: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Start a phase-`single` node on 127.0.0.1:0 with the admin API enabled.
pub async fn start_node() -> Node {
    start_node_with(|_| {}).await
}

/// [`start_node`], adjusting the node's configuration first (e.g. its rate limits).
pub async fn start_node_with(adjust: impl FnOnce(&mut flowline_server::Config)) -> Node {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let mut config = flowline_server::Config::new("node1", flowline_server::Phase::Single);
    config.admin_secret = Some(SECRET.into());
    adjust(&mut config);
    // Uploads go to a throwaway directory, removed with the node (not into the source tree).
    let data = tempfile::tempdir().unwrap();
    config.features.data_dir = data.path().to_path_buf();
    let shutdown = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let token = shutdown.clone();
    tokio::spawn(async move {
        let r = flowline_server::run_with_ready(config, listener, token, move |_| {
            let _ = tx.send(());
        })
        .await;
        if let Err(e) = r {
            eprintln!("node failed: {e}");
        }
    });
    tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .expect("node did not start within 10 s")
        .expect("node failed to start");
    Node {
        http: format!("http://{addr}"),
        ws: format!("ws://{addr}/ws"),
        shutdown,
        _data: data,
    }
}

/// A small closed-model scenario: `users` users in channels of ~20, a few seconds.
pub fn small_scenario(users: u32, seed: u64) -> Scenario {
    scenario_with(users, seed, "")
}

/// [`small_scenario`] plus extra TOML (e.g. another persona).
pub fn scenario_with(users: u32, seed: u64, extra: &str) -> Scenario {
    let text = format!(
        r#"
[run]
name = "it-small"
duration = "3s"
warmup = "1s"
drain = "1s"
seed = {seed}

[population]
users = {users}
spaces = 2
channels_per_space = {cps}
members = {{ dist = "fixed", value = 20 }}
dm_share = 0.1

[[personas]]
name = "chatty"
messages_per_minute = 60
body_bytes = {{ dist = "uniform", min = 10, max = 200 }}

{extra}

[load]
connect_rate = 2000

[[thresholds]]
expr = "lost == 0"

[[thresholds]]
expr = "delivery.p99 < 2s"
"#,
        cps = users.div_ceil(40)
    );
    Scenario::parse("it-small", &text).unwrap()
}

/// Run one in-process worker per entry of `targets` (shard i of `targets.len()` against
/// `targets[i]`, all starting together); returns each shard's report lines.
pub async fn run_workers(
    scenario: &Arc<Scenario>,
    plan: &Arc<Plan>,
    targets: Vec<Vec<String>>,
    threads: usize,
) -> Vec<Vec<String>> {
    let count = targets.len();
    let start_at = Some(std::time::SystemTime::now());
    let mut joins = Vec::new();
    for (index, targets) in targets.into_iter().enumerate() {
        let cfg = WorkerConfig {
            scenario: scenario.clone(),
            plan: plan.clone(),
            shard: Shard { index, count },
            targets,
            start_at,
            clock_offset_us: 0,
            threads,
            metrics: None,
            out: None,
        };
        joins.push(tokio::spawn(async move {
            let mut lines = Vec::new();
            worker::run(cfg, CancellationToken::new(), |l| lines.push(l.to_string()))
                .await
                .unwrap();
            lines
        }));
    }
    let mut out = Vec::new();
    for j in joins {
        out.push(j.await.unwrap());
    }
    out
}

/// The summary of shards' report lines.
pub fn summarize(scenario: &Scenario, lines: &[Vec<String>]) -> Summary {
    let mut agg = Aggregator::new(scenario, lines.len());
    for (w, shard) in lines.iter().enumerate() {
        for l in shard {
            agg.ingest(w, l).unwrap();
        }
    }
    agg.summarize(RunMeta::default())
}
