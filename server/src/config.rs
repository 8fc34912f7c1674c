//! Typed, validated configuration of one node ([`Config`]).

use std::time::Duration;

use crate::error::Error;

/// Architecture phase of the node (see DESIGN.md).
pub use flowline_protocol::Phase;

/// Argon2id cost parameters for password hashes.
///
/// Higher cost makes stolen hashes harder to crack but makes every sign-up and log-in
/// spend that much CPU and memory on the node; load-test clusters that create thousands
/// of users use a cheap setting (or the admin provisioning API, which hashes nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Cost {
    /// Memory per hash, KiB (OWASP minimum for argon2id: 19456).
    pub memory_kib: u32,
    /// Number of passes.
    pub iterations: u32,
    /// Degree of parallelism.
    pub parallelism: u32,
}

impl Default for Argon2Cost {
    fn default() -> Self {
        Self {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// Limits protecting the node from oversized or abusive input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest WebSocket message (and frame) accepted, bytes; larger closes with 1009.
    pub max_frame_bytes: usize,
    /// Longest message body, in characters.
    pub max_body_chars: usize,
    /// Longest user, space or channel name, in characters.
    pub max_name_chars: usize,
    /// Deepest JSON nesting accepted in a WebSocket frame.
    pub max_json_depth: usize,
    /// Fan-out frames queued per connection before it counts as a slow consumer; as many
    /// answers to its own requests may be queued on top (then its socket is not read).
    pub outbound_queue: usize,
    /// Largest HTTP request body, bytes (the admin provisioning API allows 64× this).
    pub max_http_body: usize,
    /// Most concurrent WebSocket sessions.
    pub max_connections: usize,
    /// Largest `history` page.
    pub max_history: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 64 * 1024,
            max_body_chars: 4000,
            max_name_chars: 100,
            max_json_depth: 16,
            outbound_queue: 256,
            max_http_body: 1024 * 1024,
            max_connections: 200_000,
            max_history: 200,
        }
    }
}

/// Default [`Config::db_pool_size`]: Postgres connections for everything but appends.
pub const DEFAULT_DB_POOL_SIZE: u32 = 16;
/// Default [`Config::db_send_pool_size`]: Postgres connections reserved for appends.
pub const DEFAULT_DB_SEND_POOL_SIZE: u32 = 8;

/// Default time an `Idempotency-Key` is kept after its first answer (Stripe's 24 h).
pub const DEFAULT_IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);

/// One token bucket: `per_sec` tokens added per second, at most `burst` saved up; each
/// limited action takes one. `per_sec == 0` turns the bucket off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// Tokens added per second (0: no limit).
    pub per_sec: u32,
    /// Most tokens saved up (the largest burst).
    pub burst: u32,
}

impl Bucket {
    /// No limit.
    pub const OFF: Bucket = Bucket {
        per_sec: 0,
        burst: 0,
    };

    /// Is this bucket limiting anything?
    pub fn is_on(&self) -> bool {
        self.per_sec > 0
    }
}

/// Rate limits of the chat actions (send, edit, delete, react, thread, typing, presence),
/// over HTTP and WebSocket alike (docs/protocol.md, "Rate limits").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateConfig {
    /// Per token (one login or provisioned token): every chat action.
    pub token: Bucket,
    /// Per channel, shared by everyone: the actions on one channel's messages.
    pub channel: Bucket,
}

impl RateConfig {
    /// Default per-token bucket: 20/s, bursts of 40 (a human never comes close; a bot
    /// gets Discord's order of magnitude).
    pub const TOKEN: Bucket = Bucket {
        per_sec: 20,
        burst: 40,
    };
    /// Default per-channel bucket: 200/s, bursts of 400 (the busiest channel of the
    /// shipped scenarios sees ~20/s).
    pub const CHANNEL: Bucket = Bucket {
        per_sec: 200,
        burst: 400,
    };
    /// No limit at all.
    pub const OFF: RateConfig = RateConfig {
        token: Bucket::OFF,
        channel: Bucket::OFF,
    };
}

impl Default for RateConfig {
    fn default() -> Self {
        Self {
            token: Self::TOKEN,
            channel: Self::CHANNEL,
        }
    }
}

/// Everything a node needs to run. Build one with [`Config::new`], adjust the public
/// fields, and pass it to [`crate::run`], which validates it.
#[derive(Debug, Clone)]
pub struct Config {
    /// The node's id, e.g. `node1`.
    pub node_id: String,
    /// Architecture phase.
    pub phase: Phase,
    /// Postgres URL (required for every phase but `single`).
    pub database_url: Option<String>,
    /// Most Postgres connections of the pool for everything but message appends
    /// (sign-in, subscribe/resume reads, history, presence, gap fills, HTTP).
    pub db_pool_size: u32,
    /// Most Postgres connections of the pool reserved for message appends, so a send never
    /// waits behind the other work for a connection.
    pub db_send_pool_size: u32,
    /// Longest wait for a pool connection before a storage call fails (`unavailable`).
    pub db_acquire_timeout: Duration,
    /// Secret enabling `/api/v1/admin/*`; `None` disables it (404).
    pub admin_secret: Option<String>,
    /// Password hashing cost.
    pub argon2: Argon2Cost,
    /// Input and queue limits.
    pub limits: Limits,
    /// Interval of server pings; a peer silent for twice this is dropped.
    pub heartbeat: Duration,
    /// Time a new WebSocket has to send a valid `hello`.
    pub auth_timeout: Duration,
    /// Time a write to one socket may take before the peer is dropped.
    pub write_timeout: Duration,
    /// Time given to sessions to close on shutdown.
    pub drain_timeout: Duration,
    /// WebSocket read buffer per connection, bytes (at least 256; see
    /// [`DEFAULT_WS_READ_BUFFER`]).
    pub ws_read_buffer: usize,
    /// Longest time from an HTTP request's first byte to the end of its headers; past it
    /// the connection is closed without an answer (slowloris).
    pub header_read_timeout: Duration,
    /// Longest time to read an HTTP request's body; past it the read fails and the
    /// request is refused (nothing applied).
    pub body_read_timeout: Duration,
    /// Chat feature settings (uploads, presence, typing).
    pub features: crate::features::Features,
    /// Redis URL (phases `pubsub` and `queue`).
    pub redis_url: Option<String>,
    /// Cluster id: every Redis key and channel of the cluster starts with
    /// `flowline:<cluster_id>:` (phases `pubsub` and `queue`).
    pub cluster_id: Option<String>,
    /// A node's presence entries expire this long after its last heartbeat (it beats
    /// every third of it), so a dead node's users go offline within this time.
    pub presence_ttl: Duration,
    /// Rate limits of the chat actions.
    pub rate: RateConfig,
    /// How long an `Idempotency-Key` is kept after its first answer.
    pub idempotency_ttl: Duration,
}

/// Default [`Config::ws_read_buffer`]: 1 KiB. Clients send small frames (a `send` with a
/// 100-byte body is ~250 bytes); every idle connection holds its buffer, zeroed and so
/// resident: at 4 KiB it was the largest single cost of a connected user (issue 17).
pub const DEFAULT_WS_READ_BUFFER: usize = 1024;

impl Config {
    /// A configuration with defaults for the given node and phase.
    pub fn new(node_id: impl Into<String>, phase: Phase) -> Self {
        Self {
            node_id: node_id.into(),
            phase,
            database_url: None,
            db_pool_size: DEFAULT_DB_POOL_SIZE,
            db_send_pool_size: DEFAULT_DB_SEND_POOL_SIZE,
            db_acquire_timeout: Duration::from_secs(5),
            admin_secret: None,
            argon2: Argon2Cost::default(),
            limits: Limits::default(),
            heartbeat: Duration::from_secs(15),
            auth_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(5),
            ws_read_buffer: DEFAULT_WS_READ_BUFFER,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            features: crate::features::Features::default(),
            redis_url: None,
            cluster_id: None,
            presence_ttl: Duration::from_secs(10),
            rate: RateConfig::default(),
            idempotency_ttl: DEFAULT_IDEMPOTENCY_TTL,
        }
    }

    /// [`heartbeat`](Self::heartbeat) in ms, as `ready` and the `listening` line state it.
    pub fn heartbeat_ms(&self) -> u64 {
        u64::try_from(self.heartbeat.as_millis()).unwrap_or(u64::MAX)
    }

    /// Check the values for consistency.
    pub fn validate(self) -> Result<Self, Error> {
        let bad = |m: &str| Err(Error::Config(m.to_owned()));
        if self.node_id.is_empty() {
            return bad("node id must not be empty");
        }
        if self.phase != Phase::Single && self.database_url.is_none() {
            return bad("this phase needs --database-url (or FLOWLINE_DATABASE_URL)");
        }
        if matches!(self.phase, Phase::Pubsub | Phase::Queue) {
            if self.redis_url.is_none() {
                return bad("this phase needs --redis-url (or FLOWLINE_REDIS_URL)");
            }
            match self.cluster_id.as_deref() {
                None => {
                    return bad("this phase needs --cluster-id (shared by the cluster's nodes)");
                }
                Some(id)
                    if id.is_empty()
                        || id.len() > 200
                        || !id
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
                {
                    return bad("cluster id must be 1 to 200 characters of [A-Za-z0-9_-]");
                }
                Some(_) => {}
            }
            if self.presence_ttl < Duration::from_millis(300) {
                return bad("presence TTL must be at least 300 ms");
            }
        }
        if self.admin_secret.as_deref() == Some("") {
            return bad("admin secret must not be empty");
        }
        let l = &self.limits;
        if l.max_frame_bytes < 256
            || l.max_body_chars == 0
            || l.max_name_chars == 0
            || l.max_json_depth < 2
            || l.outbound_queue == 0
            || l.max_http_body < 1024
            || l.max_connections == 0
            || l.max_history == 0
        {
            return bad("limits out of range");
        }
        if self.argon2.memory_kib < 8 * self.argon2.parallelism.max(1)
            || self.argon2.iterations == 0
            || self.argon2.parallelism == 0
        {
            return bad("argon2 cost out of range");
        }
        if self.heartbeat.is_zero()
            || self.auth_timeout.is_zero()
            || self.write_timeout.is_zero()
            || self.db_acquire_timeout.is_zero()
            || self.header_read_timeout.is_zero()
            || self.body_read_timeout.is_zero()
        {
            return bad("timeouts must be positive");
        }
        if self.db_pool_size == 0 || self.db_send_pool_size == 0 {
            return bad("pool size out of range");
        }
        if self.ws_read_buffer < 256 {
            return Err(Error::Config(format!(
                "--ws-read-buffer must be at least 256 bytes, not {}",
                self.ws_read_buffer
            )));
        }
        for (what, b) in [("token", self.rate.token), ("channel", self.rate.channel)] {
            if b.is_on() && b.burst == 0 {
                return Err(Error::Config(format!(
                    "--rate-{what}-burst must be at least 1 when --rate-{what}-per-sec is set"
                )));
            }
        }
        if self.idempotency_ttl < Duration::from_secs(1) {
            return bad("--idempotency-ttl-secs must be at least 1");
        }
        if let Err(m) = self.features.validate() {
            return bad(&m);
        }
        Ok(self)
    }
}
