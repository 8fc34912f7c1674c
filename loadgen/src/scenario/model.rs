//! The typed scenario: what a run is made of once the file is validated (durations,
//! counts, enums; defaults filled in). Personas, distributions and the generic target
//! have files of their own beside this one.

use std::time::Duration;

use flowline_chaos::fault::FaultSpec;
use flowline_protocol::Phase;

use crate::scenario::dist::Dist;
use crate::scenario::isolation::Isolation;
use crate::scenario::persona::Persona;
use crate::scenario::raw::RawScenario;
use crate::scenario::target::WsTarget;
use crate::threshold::Threshold;

/// Where the cluster comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    /// Architecture phase (used by the harness to start nodes).
    pub phase: Phase,
    /// Number of nodes the harness starts.
    pub nodes: u32,
    /// An already running cluster to load instead of starting one.
    pub external: Option<External>,
    /// How the run's processes are separated on the network (`[cluster] isolation`).
    pub isolation: Isolation,
    /// The nodes' ping interval (`[cluster] heartbeat`, `--heartbeat-ms` of each node the
    /// run starts); `None`: the node's default, 15 s.
    pub heartbeat: Option<Duration>,
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
    /// The file as written (with the seed filled in): what `to_toml` writes back and
    /// `apply` starts from.
    pub(super) raw: RawScenario,
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
    /// Replace `cluster.isolation`.
    pub isolation: Option<Isolation>,
}

impl Scenario {
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
                "phase {}, {} node(s){}",
                self.cluster.phase.as_str(),
                self.cluster.nodes,
                match self.cluster.isolation {
                    Isolation::None => "",
                    Isolation::Netns => " in network namespaces",
                }
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
