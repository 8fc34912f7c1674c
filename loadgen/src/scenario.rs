//! Scenario files: raw TOML structs (`deny_unknown_fields`) → one `validate()` into the
//! typed [`Scenario`]; command-line [`Overrides`] merged in one place ([`Scenario::apply`]);
//! and the way back to TOML with the seed filled in ([`Scenario::to_toml`]).
//!
//! ```text
//! text ──toml+serde──▶ RawScenario ──validate()──▶ Scenario
//!   │ (error: line/col)       ▲                      │
//!   └─schema walk: every       └── apply(Overrides) ──┘ (edits the raw form, re-validates)
//!     unknown key with line/col
//! ```
//! `docs/scenarios.md` documents every key.

use std::path::Path;
use std::time::Duration;

use flowline_chaos::fault::FaultSpec;
use rand::Rng;
use rand_distr::Distribution;
use serde::{Deserialize, Serialize};

pub use crate::error::ScenarioError;
use crate::threshold::Threshold;

/// Architecture phase (shared with the node's `--phase`).
pub use flowline_protocol::Phase;

/// A distribution of a non-negative quantity (members per channel, body bytes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "dist", rename_all = "snake_case", deny_unknown_fields)]
pub enum Dist {
    /// Always `value`.
    Fixed { value: f64 },
    /// Uniform in `[min, max]`.
    Uniform { min: f64, max: f64 },
    /// Zipf over `min..=max` with `exponent` (> 0): mostly `min`, a heavy tail up to `max`
    /// (hot channels).
    Zipf { min: f64, max: f64, exponent: f64 },
}

impl Dist {
    /// A fixed value.
    pub fn fixed(value: f64) -> Self {
        Dist::Fixed { value }
    }

    fn check(&self, what: &str, problems: &mut Vec<String>) {
        let bad = |p: &mut Vec<String>, m: String| p.push(format!("{what}: {m}"));
        match *self {
            Dist::Fixed { value } if !(value.is_finite() && value >= 0.0) => {
                bad(problems, format!("value must be >= 0, got {value}"))
            }
            Dist::Uniform { min, max } | Dist::Zipf { min, max, .. }
                if !(min.is_finite() && max.is_finite() && min >= 0.0 && min <= max) =>
            {
                bad(problems, format!("need 0 <= min <= max, got {min}..{max}"))
            }
            Dist::Zipf { exponent, .. } if !(exponent.is_finite() && exponent > 0.0) => {
                bad(problems, format!("exponent must be > 0, got {exponent}"))
            }
            _ => {}
        }
    }

    /// Draw one value.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> f64 {
        match *self {
            Dist::Fixed { value } => value,
            Dist::Uniform { min, max } => {
                if max > min {
                    rng.random_range(min..=max)
                } else {
                    min
                }
            }
            Dist::Zipf { min, max, exponent } => {
                let n = (max - min).floor() + 1.0;
                match rand_distr::Zipf::new(n, exponent) {
                    Ok(z) => min + z.sample(rng) - 1.0,
                    Err(_) => min,
                }
            }
        }
    }

    /// The distribution's mean (approximate for Zipf), for summaries.
    pub fn mean(&self) -> f64 {
        match *self {
            Dist::Fixed { value } => value,
            Dist::Uniform { min, max } => (min + max) / 2.0,
            Dist::Zipf { min, max, exponent } => {
                let n = (max - min).floor() as u64 + 1;
                let (mut num, mut den) = (0.0, 0.0);
                for k in 1..=n.min(100_000) {
                    let w = (k as f64).powf(-exponent);
                    num += w * k as f64;
                    den += w;
                }
                min + num / den - 1.0
            }
        }
    }
}

// ---------------------------------------------------------------- raw (serde) form

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawScenario {
    run: RawRun,
    #[serde(default)]
    cluster: RawCluster,
    population: RawPopulation,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    personas: Vec<RawPersona>,
    #[serde(default)]
    load: RawLoad,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    thresholds: Vec<RawThreshold>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    faults: Vec<FaultSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target: Option<RawTarget>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    kind: TargetKind,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    urls: Vec<String>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    headers: std::collections::BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subprotocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hello: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expect: Option<Expect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    room: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    room_size: Option<u32>,
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    join_grace: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    match_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    match_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    time_unit: Option<TimeUnit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    match_regex: Option<String>,
}

/// What the load generator talks to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// The reference chat cluster (Flowline protocol).
    #[default]
    Flowline,
    /// Any WebSocket service, driven by frame templates.
    Websocket,
}

/// Correctness the generic target can check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// Only latency and counts.
    #[default]
    None,
    /// Every sent frame comes back to its sender.
    Echo,
    /// Every frame reaches every other member of the sender's room.
    Room,
}

/// Unit of a send time placeholder / matched time field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeUnit {
    /// Unix time, milliseconds.
    UnixMs,
    /// Unix time, microseconds.
    #[default]
    UnixUs,
    /// Nanoseconds of the loadgen's monotonic clock since the run's common start.
    MonoNs,
}

/// A generic WebSocket target (`[target] kind = "websocket"`).
#[derive(Debug, Clone, PartialEq)]
pub struct WsTarget {
    /// URLs; user `i` uses `urls[i % len]`.
    pub urls: Vec<String>,
    /// Extra handshake headers.
    pub headers: Vec<(String, String)>,
    /// `Sec-WebSocket-Protocol` to ask for.
    pub subprotocol: Option<String>,
    /// Frame sent once after connecting (template).
    pub hello: Option<String>,
    /// Frame sent at the persona's rate (template).
    pub message: String,
    /// Correctness check.
    pub expect: Expect,
    /// Room key template (users with the same rendered key share a room).
    pub room: String,
    /// Users per room: `{room}` is `user / room_size`.
    pub room_size: u32,
    /// A member is due a room's frames sent at least this long after it connected.
    pub join_grace: Duration,
    /// JSON pointer to the message id in received frames.
    pub match_id: Option<String>,
    /// JSON pointer to the send time in received frames.
    pub match_time: Option<String>,
    /// Unit of the matched send time.
    pub time_unit: TimeUnit,
    /// Regex with named groups `id` and/or `time` for text frames (instead of pointers).
    pub match_regex: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRun {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(with = "humantime_serde")]
    duration: Duration,
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    warmup: Option<Duration>,
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    drain: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    phase: Option<Phase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nodes: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    http: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    ws: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    admin_secret: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPopulation {
    users: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    spaces: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    channels_per_space: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    members: Option<Dist>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dm_share: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPersona {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    weight: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    messages_per_minute: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body_bytes: Option<Dist>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typing: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reactions_per_minute: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    thread_reply_share: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    history_per_minute: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    presence_per_minute: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    uploads_per_minute: Option<f64>,
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    reconnect_every: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    http: Option<HttpKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    requests_per_minute: Option<f64>,
}

/// What an HTTP persona does (run on goose instead of a WebSocket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpKind {
    /// Sign up once, then log in again and again (`POST /api/v1/auth/login`).
    Login,
    /// Page back through channel history (`GET /api/v1/channels/{id}/messages?before=`).
    History,
    /// Upload files (`POST /api/v1/uploads`).
    Upload,
}

impl HttpKind {
    /// The kind's name.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpKind::Login => "login",
            HttpKind::History => "history",
            HttpKind::Upload => "upload",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawModel {
    #[default]
    Closed,
    Open,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLoad {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    model: Option<RawModel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    connect_rate: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    stages: Vec<RawStage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    #[serde(with = "humantime_serde")]
    duration: Duration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rate: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawThreshold {
    expr: String,
}

/// Keys each table accepts, for listing *every* unknown key (serde stops at the first).
/// Kept beside the raw structs; `schema_matches_raw_structs` tests that they agree.
fn schema(path: &str) -> Option<&'static [&'static str]> {
    Some(match path {
        "" => &[
            "run",
            "cluster",
            "population",
            "personas",
            "load",
            "thresholds",
            "faults",
            "target",
        ],
        "target" => &[
            "kind",
            "urls",
            "headers",
            "subprotocol",
            "hello",
            "message",
            "expect",
            "room",
            "room_size",
            "join_grace",
            "match_id",
            "match_time",
            "time_unit",
            "match_regex",
        ],
        // Header names are free-form.
        "target.headers" => return None,
        "run" => &["name", "description", "duration", "warmup", "drain", "seed"],
        "cluster" => &["phase", "nodes", "http", "ws", "admin_secret"],
        "population" => &[
            "users",
            "spaces",
            "channels_per_space",
            "members",
            "dm_share",
        ],
        "population.members" | "personas.body_bytes" => {
            &["dist", "value", "min", "max", "exponent"]
        }
        "personas" => &[
            "name",
            "weight",
            "messages_per_minute",
            "body_bytes",
            "typing",
            "reactions_per_minute",
            "thread_reply_share",
            "history_per_minute",
            "presence_per_minute",
            "uploads_per_minute",
            "reconnect_every",
            "http",
            "requests_per_minute",
        ],
        "load" => &["model", "connect_rate", "stages"],
        "load.stages" => &["duration", "target", "rate"],
        "thresholds" => &["expr"],
        "faults" => &[
            "at",
            "duration",
            "kind",
            "target",
            "label",
            "stream",
            "toxicity",
            "latency",
            "jitter",
            "rate",
            "timeout",
            "delay",
            "average_size",
            "size_variation",
            "bytes",
            "restart_after",
            "allow_non_loopback",
        ],
        _ => return None,
    })
}

/// A key that no table of the scenario format knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnknownKey {
    /// Dotted path, e.g. `personas.mesages_per_minute`.
    pub key: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn unknown_keys(text: &str) -> Vec<UnknownKey> {
    use toml::de::{DeTable, DeValue};
    fn walk(text: &str, path: &str, table: &DeTable<'_>, out: &mut Vec<UnknownKey>) {
        let Some(known) = schema(path) else { return };
        for (k, v) in table.iter() {
            let key = k.get_ref().as_ref();
            let child = if path.is_empty() {
                key.to_string()
            } else {
                format!("{path}.{key}")
            };
            if !known.contains(&key) {
                let (line, column) = line_col(text, k.span().start);
                out.push(UnknownKey {
                    key: child,
                    line,
                    column,
                });
                continue;
            }
            match v.get_ref() {
                DeValue::Table(t) => walk(text, &child, t, out),
                DeValue::Array(items) => {
                    for item in items.iter() {
                        if let DeValue::Table(t) = item.get_ref() {
                            walk(text, &child, t, out);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    if let Ok(root) = DeTable::parse(text) {
        walk(text, "", root.get_ref(), &mut out);
    }
    out.sort_by_key(|u| (u.line, u.column));
    out
}

// ---------------------------------------------------------------- typed form

/// Where the cluster comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    /// Architecture phase (used by the harness to start nodes).
    pub phase: Phase,
    /// Number of nodes the harness starts.
    pub nodes: u32,
    /// An already running cluster to load instead of starting one.
    pub external: Option<External>,
}

/// An external cluster's addresses.
#[derive(Debug, Clone, PartialEq)]
pub struct External {
    /// HTTP base URLs, one per node (`http://127.0.0.1:8080`).
    pub http: Vec<String>,
    /// WebSocket URLs, one per node (derived from `http` as `ws://…/ws` when not given).
    pub ws: Vec<String>,
    /// Secret for `POST /api/v1/admin/provision`.
    pub admin_secret: Option<String>,
}

/// Who the simulated users are and how they are grouped.
#[derive(Debug, Clone, PartialEq)]
pub struct Population {
    /// Total number of simulated users.
    pub users: u32,
    /// Number of spaces; users are spread over them round-robin.
    pub spaces: u32,
    /// Private channels created in each space.
    pub channels_per_space: u32,
    /// Members per channel (clamped to 2..=users of the space).
    pub members: Dist,
    /// Share of users (0..=1) that also get a DM with another user.
    pub dm_share: f64,
}

/// A kind of user behaviour; each user gets one, drawn by weight.
#[derive(Debug, Clone, PartialEq)]
pub struct Persona {
    /// Name shown in summaries.
    pub name: String,
    /// Relative weight when assigning personas to users.
    pub weight: f64,
    /// Mean message rate per user (Poisson) in the closed model.
    pub messages_per_minute: f64,
    /// Body size in bytes.
    pub body_bytes: Dist,
    /// History fetches per minute (WebSocket `history`).
    pub history_per_minute: f64,
    /// Close the connection and resume this often (churn); `None`: stay connected.
    pub reconnect_every: Option<Duration>,
    /// Send `typing` before every message.
    pub typing: bool,
    /// Reactions per minute (`react` on the latest message seen).
    pub reactions_per_minute: f64,
    /// Share of messages that are thread replies (`start_thread` once, then sends into
    /// the thread channel).
    pub thread_reply_share: f64,
    /// Presence changes per minute (`set_presence`).
    pub presence_per_minute: f64,
    /// Attachment uploads per minute (`POST /api/v1/uploads`, then a `send` carrying it).
    pub uploads_per_minute: f64,
    /// An HTTP persona: its users run on goose (no WebSocket).
    pub http: Option<HttpKind>,
    /// HTTP persona: requests per minute per user.
    pub requests_per_minute: f64,
}

impl Persona {
    fn default_named(name: &str) -> Self {
        Persona {
            name: name.into(),
            weight: 1.0,
            messages_per_minute: 2.0,
            body_bytes: Dist::fixed(100.0),
            history_per_minute: 0.0,
            reconnect_every: None,
            typing: false,
            reactions_per_minute: 0.0,
            thread_reply_share: 0.0,
            presence_per_minute: 0.0,
            uploads_per_minute: 0.0,
            http: None,
            requests_per_minute: 60.0,
        }
    }
}

/// One step of a load shape: linear ramp to `value` over `duration`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stage {
    /// Length of the ramp.
    pub duration: Duration,
    /// Target users (closed model) or messages per second (open model) at the end.
    pub value: f64,
}

/// The traffic model.
#[derive(Debug, Clone, PartialEq)]
pub enum LoadModel {
    /// A fixed population of users, each sending at its persona's rate; stages give the
    /// target number of connected users over time (empty: everyone from the start).
    Closed {
        /// Ramps of connected users.
        stages: Vec<Stage>,
    },
    /// Messages arrive at a target rate regardless of how fast the node answers; latency is
    /// measured from the intended send time.
    Open {
        /// Ramps of the total message rate (per second).
        stages: Vec<Stage>,
    },
}

/// How load is applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Load {
    /// Closed or open model.
    pub model: LoadModel,
    /// Most new connections per second, over all workers.
    pub connect_rate: u32,
}

/// A validated scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    raw: RawScenario,
    /// Name (used in the run folder's name).
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Measured time (after warm-up).
    pub duration: Duration,
    /// Time from start before measurement (connections, first sends).
    pub warmup: Duration,
    /// Time after the last send for deliveries to arrive.
    pub drain: Duration,
    /// Seed of every random choice (filled in when the file has none).
    pub seed: u64,
    /// Which cluster.
    pub cluster: Cluster,
    /// Users, spaces, channels.
    pub population: Population,
    /// Behaviours (at least one).
    pub personas: Vec<Persona>,
    /// Traffic model.
    pub load: Load,
    /// Pass/fail conditions.
    pub thresholds: Vec<Threshold>,
    /// Chaos schedule, executed by the harness.
    pub faults: Vec<FaultSpec>,
    /// A generic WebSocket target instead of the reference cluster.
    pub target: Option<WsTarget>,
}

/// Command-line overrides, merged into a scenario in one place.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// Replace `run.seed`.
    pub seed: Option<u64>,
    /// Replace `cluster.phase`.
    pub phase: Option<Phase>,
    /// Replace `cluster.nodes`.
    pub nodes: Option<u32>,
    /// Replace `population.users`.
    pub users: Option<u32>,
    /// Replace `run.duration`.
    pub duration: Option<Duration>,
}

impl Scenario {
    /// Read and validate a scenario file.
    pub fn from_path(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Scenario::parse(&path.display().to_string(), &text)
    }

    /// Parse and validate scenario text; `name` is used in error messages.
    pub fn parse(name: &str, text: &str) -> Result<Scenario, ScenarioError> {
        let unknown = unknown_keys(text);
        match toml::from_str::<RawScenario>(text) {
            Ok(raw) if unknown.is_empty() => raw.validate(name),
            Ok(_) => Err(ScenarioError::Parse {
                source_name: name.into(),
                line: unknown[0].line,
                column: unknown[0].column,
                message: "unknown keys".into(),
                unknown_keys: unknown,
            }),
            Err(e) => {
                // Point at the first unknown key when there is one: serde may have
                // stopped at a later one.
                let (line, column) = match unknown.first() {
                    Some(u) => (u.line, u.column),
                    None => e.span().map_or((0, 0), |s| line_col(text, s.start)),
                };
                Err(ScenarioError::Parse {
                    source_name: name.into(),
                    line,
                    column,
                    message: e.message().trim().to_string(),
                    unknown_keys: unknown,
                })
            }
        }
    }

    /// A copy with the overrides applied, validated again.
    pub fn apply(&self, o: &Overrides) -> Result<Scenario, ScenarioError> {
        let mut raw = self.raw.clone();
        if let Some(seed) = o.seed {
            raw.run.seed = Some(seed);
        }
        if let Some(phase) = o.phase {
            raw.cluster.phase = Some(phase);
        }
        if let Some(nodes) = o.nodes {
            raw.cluster.nodes = Some(nodes);
        }
        if let Some(users) = o.users {
            // Closed-model stage targets are user counts out of the population: keep the
            // ramp's shape by scaling them with the population, so `--users 100` on a
            // scenario that ramps to 1,000 ramps to 100.
            let before = raw.population.users;
            if before > 0 && users != before {
                for stage in &mut raw.load.stages {
                    if let Some(t) = stage.target.as_mut() {
                        let scaled = (u64::from(*t) * u64::from(users)).div_ceil(u64::from(before));
                        *t = u32::try_from(scaled).unwrap_or(u32::MAX).min(users);
                    }
                }
            }
            raw.population.users = users;
        }
        if let Some(d) = o.duration {
            raw.run.duration = d;
        }
        raw.validate(&self.name)
    }

    /// The scenario as TOML, seed included; parsing it gives the same scenario.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string_pretty(&self.raw).unwrap_or_else(|e| {
            // Every raw field is a plain TOML value, so this cannot happen; keep the run
            // going with a comment rather than aborting at the end.
            format!("# could not serialise the scenario: {e}\n")
        });
        format!(
            "# Scenario as run (seed filled in); `flowline run` this file to replay it.\n{body}"
        )
    }

    /// Total wall time of a worker: warm-up + duration + drain.
    pub fn total_time(&self) -> Duration {
        self.warmup + self.duration + self.drain
    }

    /// A short human summary (used by `flowline scenario check`).
    pub fn summary(&self) -> String {
        let model = match &self.load.model {
            LoadModel::Closed { stages } => format!("closed model, {} stages", stages.len()),
            LoadModel::Open { stages } => {
                let peak = stages.iter().map(|s| s.value).fold(0.0, f64::max);
                format!("open model, {} stages, peak {peak} msg/s", stages.len())
            }
        };
        let cluster = match (&self.target, &self.cluster.external) {
            (Some(t), _) => format!(
                "websocket target ({} URL(s)), expect {:?}, rooms of {}",
                t.urls.len(),
                t.expect,
                t.room_size
            ),
            (None, Some(e)) => format!("external cluster ({} nodes)", e.http.len()),
            (None, None) => format!(
                "phase {}, {} node(s)",
                self.cluster.phase.as_str(),
                self.cluster.nodes
            ),
        };
        format!(
            "{name}: {users} users in {spaces} spaces x {cps} channels (members ~{members:.0}), \
             {personas} persona(s), {model}; {cluster}; warmup {w}, duration {d}, drain {dr}; \
             seed {seed}; {th} threshold(s), {f} fault(s)",
            name = self.name,
            users = self.population.users,
            spaces = self.population.spaces,
            cps = self.population.channels_per_space,
            members = self.population.members.mean(),
            personas = self.personas.len(),
            w = humantime::format_duration(self.warmup),
            d = humantime::format_duration(self.duration),
            dr = humantime::format_duration(self.drain),
            seed = self.seed,
            th = self.thresholds.len(),
            f = self.faults.len(),
        )
    }
}

fn ws_from_http(http: &str) -> String {
    let base = http.trim_end_matches('/');
    let ws = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_string()
    };
    format!("{ws}/ws")
}

fn stages(raw: &[RawStage], open: bool, problems: &mut Vec<String>) -> Vec<Stage> {
    raw.iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let n = i + 1;
            let value = match (open, s.target, s.rate) {
                (false, Some(t), None) => t as f64,
                (true, None, Some(r)) if r.is_finite() && r >= 0.0 => r,
                (true, None, Some(r)) => {
                    problems.push(format!("load.stages[{n}]: rate must be >= 0, got {r}"));
                    return None;
                }
                (false, _, _) => {
                    problems.push(format!(
                        "load.stages[{n}]: the closed model takes `target` (users), not `rate`"
                    ));
                    return None;
                }
                (true, _, _) => {
                    problems.push(format!(
                        "load.stages[{n}]: the open model takes `rate` (messages/s), not `target`"
                    ));
                    return None;
                }
            };
            Some(Stage {
                duration: s.duration,
                value,
            })
        })
        .collect()
}

/// Placeholders a frame template may use.
pub const PLACEHOLDERS: [&str; 8] = [
    "user", "seq", "msg_id", "unix_ms", "unix_us", "mono_ns", "room", "room_key",
];

/// Names of the `{…}` placeholders in a template (`{{`/`}}` are literal braces).
pub fn template_names(t: &str) -> std::result::Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let b = t.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'{' if b.get(i + 1) == Some(&b'{') => i += 2,
            b'}' if b.get(i + 1) == Some(&b'}') => i += 2,
            b'{' => {
                let rest = &t[i + 1..];
                let end = rest
                    .find('}')
                    .ok_or_else(|| format!("unclosed `{{` at byte {i}"))?;
                out.push(&rest[..end]);
                i += end + 2;
            }
            b'}' => return Err(format!("lone `}}` at byte {i} (write `}}}}`)")),
            _ => i += 1,
        }
    }
    Ok(out)
}

fn validate_target(t: &RawTarget, p: &mut Vec<String>) -> Option<WsTarget> {
    if t.kind == TargetKind::Flowline {
        if t.urls.len() + t.headers.len() > 0 || t.message.is_some() || t.hello.is_some() {
            p.push("target: kind = \"flowline\" takes no other keys (use [cluster])".into());
        }
        return None;
    }
    if t.urls.is_empty() {
        p.push("target.urls: give at least one ws:// URL".into());
    }
    for u in &t.urls {
        if !u.starts_with("ws://") {
            p.push(format!("target.urls: {u:?} is not a ws:// URL"));
        }
    }
    let check = |what: &str, tpl: &str, p: &mut Vec<String>| match template_names(tpl) {
        Ok(names) => {
            for n in names {
                if !PLACEHOLDERS.contains(&n) {
                    p.push(format!(
                        "target.{what}: unknown placeholder {{{n}}} (known: {})",
                        PLACEHOLDERS.join(", ")
                    ));
                }
            }
        }
        Err(e) => p.push(format!("target.{what}: {e}")),
    };
    let message = match &t.message {
        Some(m) => {
            check("message", m, p);
            m.clone()
        }
        None => {
            p.push("target.message: a frame template is required".into());
            String::new()
        }
    };
    if let Some(h) = &t.hello {
        check("hello", h, p);
    }
    let room = t.room.clone().unwrap_or_else(|| "{room}".into());
    check("room", &room, p);
    let room_size = t.room_size.unwrap_or(50);
    if room_size == 0 {
        p.push("target.room_size must be at least 1".into());
    }
    for (what, ptr) in [("match_id", &t.match_id), ("match_time", &t.match_time)] {
        if let Some(ptr) = ptr
            && !(ptr.is_empty() || ptr.starts_with('/'))
        {
            p.push(format!(
                "target.{what}: {ptr:?} is not a JSON pointer (starts with `/`)"
            ));
        }
    }
    if let Some(r) = &t.match_regex {
        match regex::Regex::new(r) {
            Ok(re) => {
                let names: Vec<_> = re.capture_names().flatten().collect();
                if !names.contains(&"id") && !names.contains(&"time") {
                    p.push("target.match_regex: needs a named group `id` and/or `time`".into());
                }
            }
            Err(e) => p.push(format!("target.match_regex: {e}")),
        }
        if t.match_id.is_some() || t.match_time.is_some() {
            p.push("target: give match_regex or match_id/match_time, not both".into());
        }
    }
    let expect = t.expect.unwrap_or_default();
    let has_id = t.match_id.is_some()
        || t.match_regex
            .as_ref()
            .is_some_and(|r| r.contains("?P<id>") || r.contains("?<id>"));
    if expect != Expect::None && !has_id {
        p.push("target.expect: checking echo/room delivery needs match_id (or a regex group `id`) with {msg_id} in the message".into());
    }
    if expect != Expect::None && !message.contains("{msg_id}") {
        p.push("target.expect: the message template must carry {msg_id}".into());
    }
    Some(WsTarget {
        urls: t.urls.clone(),
        headers: t
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        subprotocol: t.subprotocol.clone(),
        hello: t.hello.clone(),
        message,
        expect,
        room,
        room_size: room_size.max(1),
        join_grace: t.join_grace.unwrap_or(Duration::from_millis(500)),
        match_id: t.match_id.clone(),
        match_time: t.match_time.clone(),
        time_unit: t.time_unit.unwrap_or_default(),
        match_regex: t.match_regex.clone(),
    })
}

impl RawScenario {
    fn validate(mut self, name: &str) -> Result<Scenario, ScenarioError> {
        let mut p = Vec::new();
        let seed = *self.run.seed.get_or_insert_with(|| rand::rng().random());
        if self.run.name.trim().is_empty() {
            p.push("run.name must not be empty".into());
        }
        if self.run.duration.is_zero() {
            p.push("run.duration must be positive".into());
        }
        let external = if self.cluster.http.is_empty() {
            if !self.cluster.ws.is_empty() {
                p.push("cluster.ws needs cluster.http (the admin API) too".into());
            }
            None
        } else {
            let ws = if self.cluster.ws.is_empty() {
                self.cluster.http.iter().map(|h| ws_from_http(h)).collect()
            } else {
                self.cluster.ws.clone()
            };
            if ws.len() != self.cluster.http.len() {
                p.push(format!(
                    "cluster.ws has {} URLs but cluster.http has {}",
                    ws.len(),
                    self.cluster.http.len()
                ));
            }
            Some(External {
                http: self.cluster.http.clone(),
                ws,
                admin_secret: self.cluster.admin_secret.clone(),
            })
        };
        let phase = self.cluster.phase.unwrap_or_default();
        let nodes = self.cluster.nodes.unwrap_or(match phase {
            Phase::Single | Phase::Postgres => 1,
            Phase::Pubsub | Phase::Queue => 3,
        });
        if nodes == 0 {
            p.push("cluster.nodes must be at least 1".into());
        }
        if matches!(phase, Phase::Single | Phase::Postgres) && nodes > 1 && external.is_none() {
            p.push(format!(
                "phase {} runs exactly one node, got cluster.nodes = {nodes}",
                phase.as_str()
            ));
        }

        let pop = &self.population;
        if pop.users == 0 {
            p.push("population.users must be at least 1".into());
        }
        let spaces = pop.spaces.unwrap_or(1);
        let cps = pop.channels_per_space.unwrap_or(1);
        if spaces == 0 || spaces > pop.users.max(1) {
            p.push(format!(
                "population.spaces must be within 1..=users, got {spaces}"
            ));
        }
        if cps == 0 {
            p.push("population.channels_per_space must be at least 1".into());
        }
        let members = pop.members.clone().unwrap_or(Dist::fixed(50.0));
        members.check("population.members", &mut p);
        let dm_share = pop.dm_share.unwrap_or(0.0);
        if !(0.0..=1.0).contains(&dm_share) {
            p.push(format!(
                "population.dm_share must be within 0..=1, got {dm_share}"
            ));
        }

        let mut personas = Vec::new();
        for (i, rp) in self.personas.iter().enumerate() {
            let what = format!("personas[{}] ({})", i + 1, rp.name);
            let d = Persona::default_named(&rp.name);
            let persona = Persona {
                name: rp.name.clone(),
                weight: rp.weight.unwrap_or(d.weight),
                messages_per_minute: rp.messages_per_minute.unwrap_or(d.messages_per_minute),
                body_bytes: rp.body_bytes.clone().unwrap_or(d.body_bytes),
                history_per_minute: rp.history_per_minute.unwrap_or(0.0),
                reconnect_every: rp.reconnect_every,
                typing: rp.typing.unwrap_or(false),
                reactions_per_minute: rp.reactions_per_minute.unwrap_or(0.0),
                thread_reply_share: rp.thread_reply_share.unwrap_or(0.0),
                presence_per_minute: rp.presence_per_minute.unwrap_or(0.0),
                uploads_per_minute: rp.uploads_per_minute.unwrap_or(0.0),
                http: rp.http,
                requests_per_minute: rp.requests_per_minute.unwrap_or(d.requests_per_minute),
            };
            if rp.requests_per_minute.is_some() && rp.http.is_none() {
                p.push(format!(
                    "{what}: requests_per_minute needs http = \"login\"|\"history\"|\"upload\""
                ));
            }
            for (k, v) in [
                ("weight", persona.weight),
                ("messages_per_minute", persona.messages_per_minute),
                ("history_per_minute", persona.history_per_minute),
                ("reactions_per_minute", persona.reactions_per_minute),
                ("presence_per_minute", persona.presence_per_minute),
                ("uploads_per_minute", persona.uploads_per_minute),
                ("requests_per_minute", persona.requests_per_minute),
            ] {
                if !(v.is_finite() && v >= 0.0) {
                    p.push(format!("{what}: {k} must be >= 0, got {v}"));
                }
            }
            if !(0.0..=1.0).contains(&persona.thread_reply_share) {
                p.push(format!("{what}: thread_reply_share must be within 0..=1"));
            }
            if persona
                .reconnect_every
                .is_some_and(|d| d < Duration::from_millis(100))
            {
                p.push(format!("{what}: reconnect_every must be at least 100ms"));
            }
            persona
                .body_bytes
                .check(&format!("{what}.body_bytes"), &mut p);
            personas.push(persona);
        }
        if personas.is_empty() {
            personas.push(Persona::default_named("default"));
        }
        if personas.iter().map(|p| p.weight).sum::<f64>() <= 0.0 {
            p.push("personas: the weights must not all be 0".into());
        }

        let open = self.load.model == Some(RawModel::Open);
        let st = stages(&self.load.stages, open, &mut p);
        if open && st.is_empty() {
            p.push("load: the open model needs at least one stage with a `rate`".into());
        }
        if !open && st.iter().any(|s| s.value > pop.users as f64) {
            p.push("load.stages: a target exceeds population.users".into());
        }
        let model = if open {
            LoadModel::Open { stages: st }
        } else {
            LoadModel::Closed { stages: st }
        };
        let connect_rate = self.load.connect_rate.unwrap_or(5_000);
        if connect_rate == 0 {
            p.push("load.connect_rate must be at least 1".into());
        }

        let target = self
            .target
            .as_ref()
            .and_then(|t| validate_target(t, &mut p));
        if target.is_some() {
            if external.is_some() {
                p.push("target: a websocket target replaces [cluster] http/ws; give one".into());
            }
            if personas.iter().any(|x| x.http.is_some()) {
                p.push(
                    "personas: http personas need the Flowline cluster, not a websocket target"
                        .into(),
                );
            }
        }

        let mut thresholds = Vec::new();
        for (i, t) in self.thresholds.iter().enumerate() {
            match Threshold::parse(&t.expr) {
                Ok(th) => thresholds.push(th),
                Err(e) => p.push(format!("thresholds[{}]: {e}", i + 1)),
            }
        }
        for (i, f) in self.faults.iter().enumerate() {
            if let Err(e) = f.validate(i + 1) {
                p.push(e.to_string());
            }
        }

        if !p.is_empty() {
            return Err(ScenarioError::Invalid {
                source_name: name.into(),
                problems: p,
            });
        }
        let run = &self.run;
        Ok(Scenario {
            name: run.name.clone(),
            description: run.description.clone(),
            duration: run.duration,
            warmup: run.warmup.unwrap_or(Duration::from_secs(5)),
            drain: run.drain.unwrap_or(Duration::from_secs(3)),
            seed,
            cluster: Cluster {
                phase,
                nodes,
                external,
            },
            population: Population {
                users: pop.users,
                spaces,
                channels_per_space: cps,
                members,
                dm_share,
            },
            personas,
            load: Load {
                model,
                connect_rate,
            },
            thresholds,
            faults: self.faults.clone(),
            target,
            raw: self,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const FULL: &str = r#"
[run]
name = "full"
description = "every key"
duration = "10s"
warmup = "2s"
drain = "1s"
seed = 42

[cluster]
phase = "pubsub"
nodes = 2

[population]
users = 300
spaces = 3
channels_per_space = 4
members = { dist = "zipf", min = 3, max = 60, exponent = 1.2 }
dm_share = 0.1

[[personas]]
name = "chatty"
weight = 3
messages_per_minute = 6
body_bytes = { dist = "uniform", min = 20, max = 400 }
typing = true
reactions_per_minute = 1
thread_reply_share = 0.1
history_per_minute = 0.5
presence_per_minute = 0.2
uploads_per_minute = 0
reconnect_every = "30s"

[[personas]]
name = "lurker"
weight = 1
messages_per_minute = 0.2

[load]
model = "closed"
connect_rate = 1000
stages = [{ duration = "2s", target = 300 }]

[[thresholds]]
expr = "delivery.p99 < 250ms"

[[thresholds]]
expr = "lost == 0"

[[faults]]
at = "3s"
duration = "2s"
kind = "latency"
target = "client-node*"
latency = "50ms"
"#;

    #[test]
    fn shipped_scenarios_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        for name in ["quickstart", "capacity-10k", "fanout-limit"] {
            let s = Scenario::from_path(&dir.join(format!("{name}.toml")))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(s.name, name);
            assert_eq!(s.cluster.phase, Phase::Single);
        }
        let q = Scenario::from_path(&dir.join("quickstart.toml")).unwrap();
        assert!(q.total_time() < Duration::from_secs(60));
        assert_eq!(q.faults[0].target, "client-node*");
    }

    #[test]
    fn new_shipped_scenarios_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        let ws = Scenario::from_path(&dir.join("ws-broadcast.toml")).unwrap();
        let t = ws.target.as_ref().expect("a websocket target");
        assert_eq!((t.expect, t.room_size), (Expect::Room, 50));
        assert_eq!(t.headers, vec![("X-Load-Test".into(), "flowline".into())]);
        assert!(ws.summary().contains("websocket target"));
        let back = Scenario::parse("back", &ws.to_toml()).unwrap();
        assert_eq!(back, ws);
        let bench = Scenario::from_path(&dir.join("ws-broadcast-10k.toml")).unwrap();
        assert_eq!(bench.population.users, 10_000);
        assert!(bench.target.is_some());
        let login = Scenario::from_path(&dir.join("login-storm.toml")).unwrap();
        let kinds: Vec<_> = login.personas.iter().filter_map(|p| p.http).collect();
        assert_eq!(
            kinds,
            [HttpKind::Login, HttpKind::History, HttpKind::Upload]
        );
    }

    #[test]
    fn websocket_target_problems_are_reported() {
        let text = r#"
[run]
name = "x"
duration = "1s"
[target]
kind = "websocket"
urls = ["http://nope"]
message = '{{"id":{msg_idd}}}'
expect = "room"
match_id = "id"
bogus = 1
[population]
users = 2
"#;
        let err = Scenario::parse("t.toml", text).unwrap_err().to_string();
        assert!(err.contains("target.bogus"), "{err}");
        let text = text.replace("bogus = 1\n", "");
        let err = Scenario::parse("t.toml", &text).unwrap_err().to_string();
        for needle in [
            "not a ws:// URL",
            "unknown placeholder {msg_idd}",
            "not a JSON pointer",
            "must carry {msg_id}",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in {err}");
        }
        let no_msg = text.replace("message = '{{\"id\":{msg_idd}}}'\n", "");
        let err = Scenario::parse("t.toml", &no_msg).unwrap_err().to_string();
        assert!(err.contains("target.message"), "{err}");
    }

    #[test]
    fn full_example_parses() {
        let s = Scenario::parse("full.toml", FULL).unwrap();
        assert_eq!(s.seed, 42);
        assert_eq!(s.cluster.phase, Phase::Pubsub);
        assert_eq!(s.personas.len(), 2);
        assert_eq!(s.personas[0].reconnect_every, Some(Duration::from_secs(30)));
        assert_eq!(s.thresholds.len(), 2);
        assert_eq!(s.faults.len(), 1);
        assert!(s.summary().contains("300 users"));
    }

    #[test]
    fn schema_matches_raw_structs() {
        // Every key of the full example is known to the schema walk...
        assert_eq!(unknown_keys(FULL), vec![]);
        // ...and the schema accepts nothing serde refuses: an extra key in each table is
        // reported by both.
        for (table, line) in [
            ("[run]", "name = \"x\"\nduration = \"1s\"\nbogus = 1\n"),
            ("[population]", "users = 1\nbogus = 1\n"),
        ] {
            let text = format!(
                "{table}\n{line}\n{}",
                if table == "[run]" {
                    "[population]\nusers = 1\n"
                } else {
                    "[run]\nname = \"x\"\nduration = \"1s\"\n"
                }
            );
            assert!(toml::from_str::<RawScenario>(&text).is_err());
            assert_eq!(unknown_keys(&text).len(), 1, "{text}");
        }
    }

    #[test]
    fn unknown_keys_are_all_listed_with_positions() {
        let text = "[run]\nname = \"x\"\nduration = \"1s\"\nsed = 4\n\n[population]\nusers = 5\n\n[[personas]]\nname = \"p\"\nmesages_per_minute = 3\n";
        let err = Scenario::parse("t.toml", text).unwrap_err();
        match &err {
            ScenarioError::Parse {
                unknown_keys,
                line,
                column,
                ..
            } => {
                let keys: Vec<_> = unknown_keys.iter().map(|u| u.key.as_str()).collect();
                assert_eq!(keys, ["run.sed", "personas.mesages_per_minute"]);
                assert_eq!((unknown_keys[0].line, unknown_keys[0].column), (4, 1));
                assert_eq!((unknown_keys[1].line, unknown_keys[1].column), (11, 1));
                assert_eq!((*line, *column), (4, 1));
            }
            other => panic!("{other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("t.toml:4:1"), "{msg}");
        assert!(msg.contains("personas.mesages_per_minute"), "{msg}");
    }

    #[test]
    fn type_errors_carry_line_and_column() {
        let text = "[run]\nname = \"x\"\nduration = 5\n[population]\nusers = 1\n";
        let err = Scenario::parse("t.toml", text).unwrap_err();
        match err {
            ScenarioError::Parse { line, column, .. } => assert_eq!((line, column), (3, 12)),
            other => panic!("{other:?}"),
        }
        let text = "[run]\nname = \"x\"\nduration = \"1s\"\n[cluster]\nphase = \"solo\"\n[population]\nusers = 1\n";
        let err = Scenario::parse("t.toml", text).unwrap_err().to_string();
        assert!(err.contains(":5:9"), "{err}");
        assert!(err.contains("solo"), "{err}");
    }

    #[test]
    fn semantic_problems_are_all_reported() {
        let text = "[run]\nname = \"x\"\nduration = \"0s\"\n[population]\nusers = 10\ndm_share = 2.0\n[load]\nmodel = \"open\"\n[[thresholds]]\nexpr = \"delivery.p99 <\"\n[[faults]]\nat = \"1s\"\nkind = \"down\"\ntarget = \"x\"\nlatency = \"1s\"\n";
        let err = Scenario::parse("t.toml", text).unwrap_err();
        let ScenarioError::Invalid { problems, .. } = &err else {
            panic!("{err:?}")
        };
        let all = problems.join("\n");
        for needle in [
            "run.duration",
            "dm_share",
            "open model needs",
            "thresholds[1]",
            "`latency` does not apply",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in\n{all}");
        }
    }

    #[test]
    fn overrides_and_round_trip() {
        let s = Scenario::parse("full.toml", FULL).unwrap();
        let o = Overrides {
            seed: Some(7),
            phase: Some(Phase::Queue),
            nodes: Some(3),
            users: Some(500),
            duration: Some(Duration::from_secs(3)),
        };
        let s2 = s.apply(&o).unwrap();
        assert_eq!(
            (
                s2.seed,
                s2.cluster.phase,
                s2.cluster.nodes,
                s2.population.users
            ),
            (7, Phase::Queue, 3, 500)
        );
        assert_eq!(s2.duration, Duration::from_secs(3));
        let back = Scenario::parse("back.toml", &s2.to_toml()).unwrap();
        assert_eq!(back, s2);
    }

    #[test]
    fn users_override_scales_closed_stage_targets() {
        let text = include_str!("../../scenarios/quickstart.toml");
        let s = Scenario::parse("quickstart.toml", text).unwrap();
        let LoadModel::Closed { stages } = &s.load.model else {
            panic!("quickstart uses the closed model");
        };
        let before: Vec<f64> = stages.iter().map(|st| st.value).collect();
        let small = s
            .apply(&Overrides {
                users: Some(100),
                ..Overrides::default()
            })
            .unwrap();
        let LoadModel::Closed { stages } = &small.load.model else {
            panic!("still closed");
        };
        let after: Vec<f64> = stages.iter().map(|st| st.value).collect();
        assert_eq!(before.len(), after.len());
        for (b, a) in before.iter().zip(&after) {
            let expected = (b * 100.0 / f64::from(s.population.users))
                .ceil()
                .min(100.0);
            assert_eq!(*a, expected, "before {before:?} after {after:?}");
        }
        assert!(after.iter().all(|&a| a <= 100.0));
        assert!(after.iter().any(|&a| a > 0.0), "{after:?}");
    }

    #[test]
    fn missing_seed_is_filled_in_and_written_back() {
        let text = "[run]\nname = \"x\"\nduration = \"1s\"\n[population]\nusers = 3\n";
        let s = Scenario::parse("t", text).unwrap();
        let back = Scenario::parse("t", &s.to_toml()).unwrap();
        assert_eq!(back.seed, s.seed);
        assert!(s.to_toml().contains(&format!("seed = {}", s.seed)));
    }

    #[test]
    fn dist_sampling_stays_in_range() {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let z = Dist::Zipf {
            min: 2.0,
            max: 500.0,
            exponent: 1.1,
        };
        let xs: Vec<f64> = (0..2000).map(|_| z.sample(&mut rng)).collect();
        assert!(xs.iter().all(|&x| (2.0..=500.0).contains(&x)));
        let mut sorted = xs.clone();
        sorted.sort_by(f64::total_cmp);
        assert!(
            sorted[1000] < 20.0,
            "zipf should favour small values: median {}",
            sorted[1000]
        );
        assert!(
            sorted[1999] > 100.0,
            "zipf should have a heavy tail: max {}",
            sorted[1999]
        );
        let u = Dist::Uniform { min: 5.0, max: 6.0 };
        assert!((0..100).all(|_| (5.0..=6.0).contains(&u.sample(&mut rng))));
    }
}
