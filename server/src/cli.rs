//! `flowline server`: flags and entry point of a chat node process.

use std::process::ExitCode;

/// Run one reference chat node.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Entry point of `flowline server`.
pub async fn main(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
