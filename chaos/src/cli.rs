//! `flowline chaos`: flags and entry point.

use std::process::ExitCode;

/// Fault injection: serve the Toxiproxy API.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Entry point of `flowline chaos`.
pub async fn main(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
