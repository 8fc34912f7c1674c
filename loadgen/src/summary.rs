//! The typed `summary.json`: [`Summary`] and the parts it holds that are not another
//! module's report (run facts, node and loadgen cost, node log errors, tick marks), plus
//! the progress line. The aggregator (module `aggregate`) fills it and is its one writer.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::checker::CorrectnessReport;
use crate::histogram::Percentiles;
use crate::threshold::ThresholdResult;
use crate::wire::Counters;

/// Facts about the run that the harness knows and the workers do not.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunMeta {
    /// When the run started (RFC 3339 or any text the harness chooses).
    pub started_at: String,
    /// Phase actually run.
    pub phase: String,
    /// Nodes actually started.
    pub nodes: u32,
    /// Free notes (e.g. "node2 was killed at 20s").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Source revision of the harness that ran it (`git describe`), when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Flowline version of the harness that ran it, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flowline_version: Option<String>,
    /// The users connected straight to the nodes (`flowline run --direct-clients`): no
    /// client-link proxy in between. `flowline replay` runs the same way.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub direct_clients: bool,
}

/// The run's result, written as `summary.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Every threshold held and every worker finished.
    pub passed: bool,
    /// Scenario name.
    pub scenario: String,
    /// Seed used.
    pub seed: u64,
    /// What the harness told us.
    pub meta: RunMeta,
    /// Workers started.
    pub workers: usize,
    /// Workers that sent their `done` line.
    pub workers_done: usize,
    /// Seconds of measurement (ticks flagged `measuring`).
    pub measured_s: f64,
    /// Counters over the measured window.
    pub measured: Counters,
    /// Counters over the whole run (warm-up and drain included).
    pub totals: Counters,
    /// Peak users connected at once.
    pub peak_users: u64,
    /// Seconds from the run's start until the peak was first reached (to the second: how
    /// long connecting everybody took, ramp included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_users_at_s: Option<u64>,
    /// What the loadgen workers themselves cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loadgen: Option<LoadgenCost>,
    /// Sends per second over the measured window.
    pub sends_per_s: f64,
    /// Deliveries per second over the measured window.
    pub deliveries_per_s: f64,
    /// Latency percentiles, µs, by metric: `ack` and `delivery` over the measured window
    /// and the drain, `connect` and `hello` over the whole run (users connect in the
    /// warm-up).
    pub latency_us: BTreeMap<String, Percentiles>,
    /// Correctness checker's verdict (all acked messages of the run).
    pub correctness: CorrectnessReport,
    /// Threshold outcomes.
    pub thresholds: Vec<ThresholdResult>,
    /// HTTP personas run on goose (login storm, history paging, uploads): requests,
    /// status codes and latency by kind, and goose's HTML reports in the run folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<crate::wire::HttpReport>,
    /// Chat actions the node refused for a rate limit (HTTP 429, WebSocket
    /// `rate_limited`): how many, how many per second, second by second. Absent when
    /// there were none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limited: Option<RateLimited>,
    /// Which shard's ticks came late, twice or never (seconds by shard).
    #[serde(default)]
    pub ticks: TickReport,
    /// Reasons the run is incomplete, if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// What each node process the harness started cost, read at the end of the run (a
    /// node restarted by a fault counts from its restart).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes_cost: Vec<NodeCost>,
    /// What each data-plane process of the client links cost (`client-node<i>.p<j>`),
    /// read at the end of the run; absent when the links lived in the harness.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links_cost: Vec<NodeCost>,
    /// What the harness process itself cost (`node`: `harness`): its aggregator, chaos
    /// API and, up to 8,000 users, the client links; absent for the standalone loadgen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub harness_cost: Option<NodeCost>,
    /// Warnings and errors the run's nodes logged (their logs in `logs/`), grouped by
    /// cause; absent when they logged none (and for the standalone loadgen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_errors: Option<NodeErrors>,
    /// What the coordinator measured of the worker processes: clock offsets, round trips,
    /// start skew, lost workers (absent for the standalone loadgen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinator: Option<crate::coordinator::CoordinatorReport>,
}

/// Rate-limited answers of a run (`summary.json` `rate_limited`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RateLimited {
    /// Over the whole run.
    pub count: u64,
    /// Over the measured window.
    pub measured: u64,
    /// Per second over the measured window.
    pub per_s: f64,
    /// The busiest second's count.
    pub peak_per_s: u64,
    /// `[second, count]` of every second with any (as timeline.csv's `t_s`).
    pub timeline: Vec<(u64, u64)>,
}

impl RateLimited {
    /// From `(second, count, measuring)` of every second; `None` when nothing was
    /// refused.
    pub fn of(
        seconds: impl IntoIterator<Item = (u64, u64, bool)>,
        measured_s: f64,
    ) -> Option<Self> {
        let mut r = RateLimited::default();
        for (t, n, measuring) in seconds {
            if n == 0 {
                continue;
            }
            r.count += n;
            if measuring {
                r.measured += n;
            }
            r.peak_per_s = r.peak_per_s.max(n);
            r.timeline.push((t, n));
        }
        if r.count == 0 {
            return None;
        }
        if measured_s > 0.0 {
            r.per_s = r.measured as f64 / measured_s;
        }
        Some(r)
    }
}

/// The WARN and ERROR lines of the nodes' logs, grouped by cause.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeErrors {
    /// WARN lines over all nodes.
    pub warnings: u64,
    /// ERROR lines over all nodes.
    pub errors: u64,
    /// Distinct messages after normalisation.
    pub distinct: u64,
    /// The most frequent messages, most frequent first (at most 5).
    pub top: Vec<NodeLogMessage>,
}

impl NodeErrors {
    /// WARN and ERROR lines together.
    pub fn total(&self) -> u64 {
        self.warnings + self.errors
    }
}

/// One cause the nodes logged: a message with timestamps, ids, numbers and durations
/// replaced by `#`, so equal causes count together.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeLogMessage {
    /// `WARN` or `ERROR`.
    pub level: String,
    /// The normalised message (module path, spans and fields included).
    pub message: String,
    /// Lines with this message over all nodes.
    pub count: u64,
    /// The nodes that logged it.
    pub nodes: Vec<String>,
    /// The first such line as logged (without timestamp and level).
    pub example: String,
}

/// What one process (a node, a data-plane process, the harness) cost over the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeCost {
    /// `node<i>` (or the process's name: `client-node<i>.p<j>`, `harness`).
    pub node: String,
    /// CPU seconds (user + system).
    pub cpu_s: f64,
    /// Peak resident set size, KiB.
    pub peak_rss_kib: u64,
}

/// A tick arriving when a second at least this much newer has already been seen (or after
/// its shard's `done` line) is late: merged all the same, but marked.
pub const LATE_AFTER_S: u64 = 5;

/// How complete the per-second ticks were, by shard.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TickReport {
    /// Seconds of the run: the last second any shard reported.
    pub seconds: u64,
    /// Ticks that arrived late ([`LATE_AFTER_S`]); merged into their second all the same.
    #[serde(default)]
    pub late: Vec<ShardSeconds>,
    /// Seconds a shard never reported (within its own ticks, or after its last tick when
    /// it sent no `done` line): that shard's samples are missing from those seconds.
    #[serde(default)]
    pub missing: Vec<ShardSeconds>,
    /// Seconds a shard reported more than once; only the first tick was merged.
    #[serde(default)]
    pub duplicate: Vec<ShardSeconds>,
}

impl TickReport {
    /// No tick late, missing or repeated.
    pub fn is_complete(&self) -> bool {
        self.late.is_empty() && self.missing.is_empty() && self.duplicate.is_empty()
    }
}

/// Seconds (interval numbers `t`, as in timeline.csv's `t_s`) of one shard.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardSeconds {
    /// Shard index (worker `i` of `--shard i/N`).
    pub shard: usize,
    /// Seconds, ascending.
    pub seconds: Vec<u64>,
}

impl fmt::Display for ShardSeconds {
    /// `shard 1: seconds 4-6, 9`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard {}: second", self.shard)?;
        if self.seconds.len() != 1 {
            write!(f, "s")?;
        }
        let mut i = 0;
        let mut first = true;
        while i < self.seconds.len() {
            let start = self.seconds[i];
            let mut end = start;
            while i + 1 < self.seconds.len() && self.seconds[i + 1] == end + 1 {
                i += 1;
                end += 1;
            }
            write!(f, "{}{start}", if first { " " } else { ", " })?;
            if end > start {
                write!(f, "-{end}")?;
            }
            first = false;
            i += 1;
        }
        Ok(())
    }
}

pub(crate) fn by_shard(map: &BTreeMap<usize, Vec<u64>>) -> Vec<ShardSeconds> {
    map.iter()
        .filter(|(_, s)| !s.is_empty())
        .map(|(&shard, s)| {
            let mut seconds = s.clone();
            seconds.sort_unstable();
            seconds.dedup();
            ShardSeconds { shard, seconds }
        })
        .collect()
}

/// The generator's own cost over the whole run, summed over worker processes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadgenCost {
    /// Workers that reported their usage.
    pub workers: usize,
    /// CPU seconds (user + system).
    pub cpu_s: f64,
    /// Sum of the workers' peak resident set sizes, KiB.
    pub peak_rss_kib: u64,
    /// `peak_rss_kib` per peak connected user (process baseline included).
    pub rss_kib_per_user: f64,
    /// CPU µs per delivery received (acks and own echoes not counted).
    pub cpu_us_per_delivery: f64,
}

/// A live view of the run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// Time since the run's start (latest tick).
    pub elapsed: Duration,
    /// Users connected now (sum over workers).
    pub users: u64,
    /// Sends in the latest second.
    pub sends_per_s: u64,
    /// Deliveries in the latest second.
    pub deliveries_per_s: u64,
    /// p99 delivery latency of the latest second, µs.
    pub p99_delivery_us: Option<u64>,
    /// Errors so far.
    pub errors: u64,
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p99 = self.p99_delivery_us.map_or_else(
            || "-".to_string(),
            |us| format!("{:.1}ms", us as f64 / 1000.0),
        );
        write!(
            f,
            "{:>5.0}s  users {:>6}  sends/s {:>6}  deliveries/s {:>7}  p99 delivery {:>8}  errors {}",
            self.elapsed.as_secs_f64(),
            self.users,
            self.sends_per_s,
            self.deliveries_per_s,
            p99,
            self.errors
        )
    }
}
