//! What the coordinator measured of its workers (summary.json `coordinator`): each
//! worker's clock offset, round trip and start skew, and which ones were lost mid-run.

use serde::{Deserialize, Serialize};

/// The coordinator's part of summary.json.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CoordinatorReport {
    /// Protocol version the run used.
    pub version: u32,
    /// Start instant, Unix ms on the coordinator's clock.
    pub t0: u64,
    /// Every shard that said hello, in shard order.
    pub workers: Vec<WorkerClock>,
    /// Largest `start_skew_ms` (absolute), if every worker reported its start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_start_skew_ms: Option<f64>,
    /// How the workers' clocks were reconciled, in words (for the report).
    pub clocks: String,
}

/// One worker as the coordinator saw it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerClock {
    /// Shard index.
    pub shard: usize,
    /// Host name it gave, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Peer address of its connection.
    pub peer: String,
    /// Its clock minus the coordinator's, ms (from the ping with the shortest round trip;
    /// uncertain by half of `rtt_ms`).
    pub clock_offset_ms: f64,
    /// Shortest ping round trip, ms.
    pub rtt_ms: f64,
    /// When it started minus t0, ms, on the coordinator's clock (`None`: it never said).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_skew_ms: Option<f64>,
    /// Seconds after t0 its connection ended without a `done` line, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost_at_s: Option<f64>,
}

impl CoordinatorReport {
    /// One line for the verdict: offsets, start skew, lost workers.
    pub fn line(&self) -> String {
        let offsets = self.workers.iter().map(|w| w.clock_offset_ms);
        let lo = offsets.clone().fold(f64::INFINITY, f64::min);
        let hi = offsets.fold(f64::NEG_INFINITY, f64::max);
        let skew = self
            .max_start_skew_ms
            .map_or("not reported by every worker".to_string(), |s| {
                format!("{s:.1} ms max")
            });
        let lost: Vec<String> = self
            .workers
            .iter()
            .filter(|w| w.lost_at_s.is_some())
            .map(|w| format!("shard {}", w.shard))
            .collect();
        format!(
            "coordinator: {} workers (protocol {}), clock offsets {lo:.3}..{hi:.3} ms, start skew {skew}{}",
            self.workers.len(),
            self.version,
            if lost.is_empty() {
                String::new()
            } else {
                format!("; lost {}", lost.join(", "))
            }
        )
    }
}
