//! `flowline loadgen` and `flowline scenario`: flags and entry points.

use std::process::ExitCode;

/// Run a share of a scenario's simulated users as one worker process.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Entry point of `flowline loadgen`.
pub async fn main(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}

/// Work with scenario files.
#[derive(Debug, clap::Args)]
pub struct ScenarioArgs {}

/// Entry point of `flowline scenario`.
pub async fn scenario_main(_args: ScenarioArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
