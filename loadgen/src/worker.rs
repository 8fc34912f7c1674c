//! The worker engine: runs one shard of a plan's users (being written).

use std::sync::Arc;
use std::time::SystemTime;

use tokio_util::sync::CancellationToken;

use crate::error::{LoadgenError, Result};
use crate::plan::{Plan, Shard};
use crate::scenario::Scenario;

/// What one worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The scenario (overrides already applied).
    pub scenario: Arc<Scenario>,
    /// The provisioned plan.
    pub plan: Arc<Plan>,
    /// Which users of the plan this worker runs.
    pub shard: Shard,
    /// WebSocket URLs of the nodes; user `i` uses `targets[i % len]`.
    pub targets: Vec<String>,
    /// Common start time of all workers (`None`: now), so their seconds line up.
    pub start_at: Option<SystemTime>,
    /// Runtime threads (each records into its own histograms).
    pub threads: usize,
}

/// Run the shard to the end of the drain, calling `on_line` with every stdout line
/// (tick lines, then the done line).
pub async fn run(
    cfg: WorkerConfig,
    cancel: CancellationToken,
    mut on_line: impl FnMut(&str),
) -> Result<()> {
    let _ = (&cfg, &cancel, &mut on_line);
    Err(LoadgenError::Invalid(
        "the worker engine is not built yet".into(),
    ))
}
