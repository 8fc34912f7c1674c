//! `flowline server`: flags and entry point of a chat node process.
//!
//! Binds `--listen`, opens storage, prints one [`Announce::Listening`] JSON line on stdout
//! once ready, and serves until SIGTERM/SIGINT (then closes WebSockets with 1001, drains
//! and exits 0).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use flowline_protocol::announce::Announce;
use tokio_util::sync::CancellationToken;

use clap::builder::TypedValueParser;

use crate::config::{Argon2Cost, Bucket, Config, Limits, Phase, RateConfig};

/// Run one reference chat node.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Architecture phase: `single` (in memory), `postgres`, or a cluster node sharing
    /// Postgres with its peers and fanning out through Redis: `pubsub` (at most once) or
    /// `queue` (Redis Streams, catches up after an outage). See docs/phases.md.
    #[arg(
        long,
        default_value = "single",
        value_parser = clap::builder::PossibleValuesParser::new(Phase::NAMES)
            .try_map(|s| s.parse::<Phase>()),
    )]
    pub phase: Phase,
    /// Address to listen on; port 0 picks a free port (announced on stdout).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Postgres URL (phases other than `single`).
    #[arg(long, env = "FLOWLINE_DATABASE_URL")]
    pub database_url: Option<String>,
    /// This node's id (`node<i>` in clusters).
    #[arg(long, default_value = "node1")]
    pub node_id: String,
    /// Enables `POST /api/v1/admin/provision` for callers sending this value in
    /// `x-flowline-admin`. Without it the admin API answers 404.
    #[arg(long, env = "FLOWLINE_ADMIN_SECRET", hide_env_values = true)]
    pub admin_secret: Option<String>,
    /// Redis URL (phases `pubsub`/`queue`).
    #[arg(long, env = "FLOWLINE_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Cluster id shared by the nodes of one cluster (phases `pubsub`/`queue`): every Redis
    /// key and channel of the cluster starts with `flowline:<cluster-id>:`, so several
    /// clusters share one Redis. 1 to 200 characters of [A-Za-z0-9_-].
    #[arg(long, env = "FLOWLINE_CLUSTER_ID")]
    pub cluster_id: Option<String>,
    /// Presence TTL, ms (phases `pubsub`/`queue`): a node beats every third of it, and a
    /// dead node's users go offline for the rest of the cluster within it.
    #[arg(long, default_value_t = 10_000)]
    pub presence_ttl_ms: u64,
    /// Argon2id memory per password hash, KiB. Trade-off: every sign-up and log-in costs
    /// this much memory and proportional CPU on the node; lower it (e.g. 64) for load-test
    /// clusters that sign up many users, keep the default (OWASP's 19456) for anything
    /// holding real passwords. Existing hashes keep the cost they were made with.
    #[arg(long, default_value_t = Argon2Cost::default().memory_kib)]
    pub argon2_memory_kib: u32,
    /// Argon2id passes (time cost); same trade-off as the memory cost.
    #[arg(long, default_value_t = Argon2Cost::default().iterations)]
    pub argon2_iterations: u32,
    /// Argon2id lanes (parallelism).
    #[arg(long, default_value_t = Argon2Cost::default().parallelism)]
    pub argon2_parallelism: u32,
    /// Largest WebSocket message, bytes (larger: close 1009).
    #[arg(long, default_value_t = Limits::default().max_frame_bytes)]
    pub max_frame_bytes: usize,
    /// Longest message body, characters.
    #[arg(long, default_value_t = Limits::default().max_body_chars)]
    pub max_body_chars: usize,
    /// Deepest JSON nesting in a frame (deeper: error + close 4010).
    #[arg(long, default_value_t = Limits::default().max_json_depth)]
    pub max_json_depth: usize,
    /// Events a connection did not ask for (fan-out) queued before it is cut off as a slow
    /// consumer (4008); as many answers to its own requests may wait on top, then its
    /// socket is not read until they are written.
    #[arg(long, default_value_t = Limits::default().outbound_queue)]
    pub outbound_queue: usize,
    /// Most concurrent WebSocket sessions (more: 503).
    #[arg(long, default_value_t = Limits::default().max_connections)]
    pub max_connections: usize,
    /// Largest HTTP request body, bytes (the admin API allows 64×).
    #[arg(long, default_value_t = Limits::default().max_http_body)]
    pub max_http_body: usize,
    /// WebSocket read buffer per connection, bytes (at least 256). Clients' frames are
    /// small; a larger one costs memory on every idle connection (the whole buffer is
    /// zeroed, so resident), a frame larger than it grows that connection's buffer.
    #[arg(long, default_value_t = crate::config::DEFAULT_WS_READ_BUFFER)]
    pub ws_read_buffer: usize,
    /// Server ping interval, ms; a peer silent for twice this is dropped (4009).
    #[arg(long, default_value_t = 15_000)]
    pub heartbeat_ms: u64,
    /// Time a new WebSocket has to authenticate, ms (then 4001).
    #[arg(long, default_value_t = 5_000)]
    pub auth_timeout_ms: u64,
    /// Longest time an HTTP request (or the `/ws` upgrade) may take to send its headers,
    /// ms, counted from its first byte; past it the connection is closed without an
    /// answer, so a client trickling bytes (slowloris) cannot pin connections.
    #[arg(long, default_value_t = 10_000)]
    pub header_read_timeout_ms: u64,
    /// Longest time an HTTP request may take to send its body, ms; past it the request
    /// is refused (400 `bad_request`, nothing applied) and the connection closed.
    #[arg(long, default_value_t = 30_000)]
    pub body_read_timeout_ms: u64,
    /// Time given to sessions to close on shutdown, ms.
    #[arg(long, default_value_t = 5_000)]
    pub drain_timeout_ms: u64,
    /// Postgres connections for everything but message appends (sign-in, subscribe and
    /// resume reads, history, presence, bus gap fills, HTTP).
    #[arg(long, default_value_t = crate::config::DEFAULT_DB_POOL_SIZE)]
    pub db_pool_size: u32,
    /// Postgres connections reserved for message appends: a send never waits behind the
    /// other pool's work (a connect storm) for a connection.
    #[arg(long, default_value_t = crate::config::DEFAULT_DB_SEND_POOL_SIZE)]
    pub db_send_pool_size: u32,
    /// Longest wait for a Postgres pool connection, ms; a storage call that waits longer
    /// fails with `unavailable` instead of queueing behind a starved pool.
    #[arg(long, default_value_t = 5_000)]
    pub db_acquire_timeout_ms: u64,
    /// Chat actions (send, edit, delete, react, thread, presence; over HTTP or WebSocket)
    /// each token may take per second; 0 turns the per-token limit off. Over it: HTTP 429,
    /// WebSocket `rate_limited`. Cluster-wide in phases `pubsub`/`queue` (Redis), per
    /// node otherwise.
    #[arg(long, default_value_t = RateConfig::TOKEN.per_sec)]
    pub rate_token_per_sec: u32,
    /// Largest burst of chat actions per token (bucket size).
    #[arg(long, default_value_t = RateConfig::TOKEN.burst)]
    pub rate_token_burst: u32,
    /// Actions on one channel's messages (send, edit, delete, react, thread) per second,
    /// all users together; 0 turns the per-channel limit off.
    #[arg(long, default_value_t = RateConfig::CHANNEL.per_sec)]
    pub rate_channel_per_sec: u32,
    /// Largest burst of actions on one channel (bucket size).
    #[arg(long, default_value_t = RateConfig::CHANNEL.burst)]
    pub rate_channel_burst: u32,
    /// How long an `Idempotency-Key` is remembered after its first answer, seconds (in
    /// Redis for phases `pubsub`/`queue`, in the node's memory otherwise).
    #[arg(long, default_value_t = crate::config::DEFAULT_IDEMPOTENCY_TTL.as_secs())]
    pub idempotency_ttl_secs: u64,
    /// Chat feature flags (uploads, presence).
    #[command(flatten)]
    pub features: crate::features::FeatureArgs,
}

impl Args {
    /// The node configuration these flags describe (not yet validated).
    pub fn to_config(&self) -> Config {
        let mut c = Config::new(self.node_id.clone(), self.phase);
        c.database_url = self.database_url.clone();
        c.admin_secret = self.admin_secret.clone();
        c.redis_url = self.redis_url.clone();
        c.cluster_id = self.cluster_id.clone();
        c.presence_ttl = Duration::from_millis(self.presence_ttl_ms);
        c.db_pool_size = self.db_pool_size;
        c.db_send_pool_size = self.db_send_pool_size;
        c.db_acquire_timeout = Duration::from_millis(self.db_acquire_timeout_ms);
        c.argon2 = Argon2Cost {
            memory_kib: self.argon2_memory_kib,
            iterations: self.argon2_iterations,
            parallelism: self.argon2_parallelism,
        };
        c.limits = Limits {
            max_frame_bytes: self.max_frame_bytes,
            max_body_chars: self.max_body_chars,
            max_json_depth: self.max_json_depth,
            outbound_queue: self.outbound_queue,
            max_connections: self.max_connections,
            max_http_body: self.max_http_body,
            ..Limits::default()
        };
        c.heartbeat = Duration::from_millis(self.heartbeat_ms);
        c.ws_read_buffer = self.ws_read_buffer;
        c.auth_timeout = Duration::from_millis(self.auth_timeout_ms);
        c.drain_timeout = Duration::from_millis(self.drain_timeout_ms);
        c.header_read_timeout = Duration::from_millis(self.header_read_timeout_ms);
        c.body_read_timeout = Duration::from_millis(self.body_read_timeout_ms);
        c.features = self.features.to_features(&self.node_id);
        c.rate = RateConfig {
            token: Bucket {
                per_sec: self.rate_token_per_sec,
                burst: self.rate_token_burst,
            },
            channel: Bucket {
                per_sec: self.rate_channel_per_sec,
                burst: self.rate_channel_burst,
            },
        };
        c.idempotency_ttl = Duration::from_secs(self.idempotency_ttl_secs);
        c
    }
}

/// Entry point of `flowline server`.
pub async fn main(args: Args) -> anyhow::Result<ExitCode> {
    let config = args
        .to_config()
        .validate()
        .context("invalid server flags")?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let shutdown = CancellationToken::new();
    let signals = tokio::spawn(wait_for_signal(shutdown.clone()));
    let node_id = config.node_id.clone();
    let heartbeat_ms = config.heartbeat_ms();
    let result = crate::server::run_with_ready(config, listener, shutdown.clone(), move |addr| {
        let line = Announce::Listening {
            node_id,
            addr: addr.to_string(),
            http: format!("http://{addr}"),
            ws: format!("ws://{addr}/ws"),
            metrics: format!("http://{addr}/metrics"),
            pid: std::process::id(),
            heartbeat_ms: Some(heartbeat_ms),
        };
        match serde_json::to_string(&line) {
            Ok(text) => {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{text}");
                let _ = out.flush();
            }
            Err(e) => tracing::error!(error = %e, "cannot encode the announce line"),
        }
    })
    .await;
    signals.abort();
    result.context("the node failed")?;
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; only SIGINT stops the node");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    shutdown.cancel();
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn flags_become_a_valid_config() {
        let w = Wrapper::try_parse_from([
            "flowline",
            "--phase",
            "postgres",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            "postgres://x@127.0.0.1/db",
            "--node-id",
            "node3",
            "--argon2-memory-kib",
            "64",
            "--outbound-queue",
            "32",
            "--heartbeat-ms",
            "500",
            "--rate-token-per-sec",
            "5",
            "--rate-channel-per-sec",
            "0",
            "--body-read-timeout-ms",
            "2500",
            "--ws-read-buffer",
            "512",
        ])
        .unwrap();
        let c = w.args.to_config().validate().unwrap();
        assert_eq!(c.phase, Phase::Postgres);
        assert_eq!(c.node_id, "node3");
        assert_eq!(c.argon2.memory_kib, 64);
        assert_eq!(c.limits.outbound_queue, 32);
        assert_eq!(c.heartbeat, Duration::from_millis(500));
        assert_eq!(c.auth_timeout, Duration::from_secs(5));
        assert_eq!(c.ws_read_buffer, 512);
        assert_eq!(
            (c.rate.token, c.rate.channel.is_on()),
            (
                Bucket {
                    per_sec: 5,
                    burst: RateConfig::TOKEN.burst
                },
                false
            )
        );
        assert_eq!(c.idempotency_ttl, Duration::from_secs(24 * 3600));
        let w = Wrapper::try_parse_from([
            "flowline",
            "--rate-token-per-sec",
            "5",
            "--rate-token-burst",
            "0",
        ])
        .unwrap();
        let err = w.args.to_config().validate().unwrap_err().to_string();
        assert!(err.contains("--rate-token-burst"), "{err}");
        assert_eq!(c.body_read_timeout, Duration::from_millis(2500));
        assert_eq!(c.header_read_timeout, Duration::from_secs(10));
    }

    #[test]
    fn invalid_combinations_are_refused() {
        let w = Wrapper::try_parse_from(["flowline", "--phase", "postgres"]).unwrap();
        let missing_url = w.args.to_config().validate();
        assert!(missing_url.is_err() || std::env::var("FLOWLINE_DATABASE_URL").is_ok());
        let w = Wrapper::try_parse_from(["flowline", "--outbound-queue", "0"]).unwrap();
        assert!(w.args.to_config().validate().is_err());
        let w = Wrapper::try_parse_from(["flowline", "--header-read-timeout-ms", "0"]).unwrap();
        assert!(w.args.to_config().validate().is_err());
        let w = Wrapper::try_parse_from(["flowline", "--ws-read-buffer", "255"]).unwrap();
        let err = w.args.to_config().validate().unwrap_err().to_string();
        assert!(
            err.contains("--ws-read-buffer must be at least 256"),
            "{err}"
        );
        let w = Wrapper::try_parse_from(["flowline"]).unwrap();
        assert_eq!(w.args.to_config().ws_read_buffer, 1024);
        assert!(Wrapper::try_parse_from(["flowline", "--phase", "mesh"]).is_err());
    }

    #[test]
    fn cluster_phases_need_redis_and_a_cluster_id() {
        let base = [
            "flowline",
            "--phase",
            "queue",
            "--database-url",
            "postgres://x@127.0.0.1/db",
        ];
        let parse = |extra: &[&str]| {
            let args: Vec<&str> = base.iter().chain(extra).copied().collect();
            Wrapper::try_parse_from(args).unwrap().args.to_config()
        };
        let no_cluster = parse(&["--redis-url", "redis://127.0.0.1:1"]);
        if std::env::var("FLOWLINE_CLUSTER_ID").is_err() {
            let err = no_cluster.validate().unwrap_err().to_string();
            assert!(err.contains("--cluster-id"), "{err}");
        }
        let bad_id = parse(&["--redis-url", "redis://x", "--cluster-id", "a:b"]);
        let err = bad_id.validate().unwrap_err().to_string();
        assert!(err.contains("cluster id"), "{err}");
        let ok = parse(&["--redis-url", "redis://x", "--cluster-id", "run-1"])
            .validate()
            .unwrap();
        assert_eq!(ok.cluster_id.as_deref(), Some("run-1"));
        assert_eq!(ok.presence_ttl, Duration::from_secs(10));
    }
}
