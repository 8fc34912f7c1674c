//! `flowline chaos data-plane`: one process of a spread link (see [`crate::spread`]). It
//! listens on the link's address beside its sibling processes (`SO_REUSEPORT`), applies
//! each whole state its controller writes on stdin (one JSON line: enabled, toxics),
//! answers on stdout with the state's `seq` and its counters (also once a second), and
//! exits when stdin closes: the controller, or the process that held it, is gone.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::controller::Controller;
use crate::spread::{PlaneReport, PlaneState};
use crate::toxic::ToxicSpec;

/// Flags of `flowline chaos data-plane` (started by a controller, not by hand).
#[derive(Debug, clap::Args)]
pub struct PlaneArgs {
    /// The link's name (`client-node1`).
    #[arg(long)]
    pub name: String,
    /// The link's address, shared with its other processes.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Where connections are forwarded (`host:port`).
    #[arg(long)]
    pub upstream: String,
    /// Allow non-loopback addresses.
    #[arg(long)]
    pub allow_non_loopback: bool,
}

/// Serve one share of a spread link until stdin closes.
pub async fn run(a: PlaneArgs) -> anyhow::Result<ExitCode> {
    let c = Controller::with_policy(a.allow_non_loopback);
    c.create_shared(&a.name, a.listen, &a.upstream)
        .await
        .with_context(|| format!("cannot listen on {} for {}", a.listen, a.name))?;
    let mut out = tokio::io::stdout();
    let mut applied = 0u64;
    report(&c, &a.name, applied, None, &mut out).await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Ok(Some(line)) = line else { break };
                let (seq, error) = match apply(&c, &a.name, &line).await {
                    Ok(seq) => (seq, None),
                    Err((seq, e)) => {
                        tracing::error!(proxy = %a.name, "chaos data plane: {e:#}");
                        (seq, Some(format!("{e:#}")))
                    }
                };
                applied = applied.max(seq);
                report(&c, &a.name, applied, error, &mut out).await?;
            }
            _ = tick.tick() => report(&c, &a.name, applied, None, &mut out).await?,
        }
    }
    // The controller is gone: cut every connection and leave.
    c.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// Apply one state line; its `seq`, with the error if it could not be applied.
async fn apply(c: &Controller, name: &str, line: &str) -> Result<u64, (u64, anyhow::Error)> {
    let state: PlaneState =
        serde_json::from_str(line).map_err(|e| (0, anyhow::anyhow!("bad state line: {e}")))?;
    let seq = state.seq;
    let mut toxics = Vec::with_capacity(state.toxics.len());
    for t in &state.toxics {
        let spec = serde_json::to_vec(t)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .and_then(|b| ToxicSpec::from_create_json(&b).map_err(|e| anyhow::anyhow!("{e}")))
            .map_err(|e| (seq, e.context("bad toxic")))?;
        toxics.push(spec);
    }
    c.set_toxics(name, toxics)
        .map_err(|e| (seq, anyhow::anyhow!("{e}")))?;
    c.set_enabled(name, state.enabled)
        .await
        .map_err(|e| (seq, anyhow::anyhow!("{e}")))?;
    Ok(seq)
}

async fn report(
    c: &Controller,
    name: &str,
    applied: u64,
    error: Option<String>,
    out: &mut tokio::io::Stdout,
) -> anyhow::Result<()> {
    let (connections, [up_received, up_sent, down_received, down_sent]) = c.counters(name)?;
    let rep = PlaneReport {
        applied,
        connections,
        up_received,
        up_sent,
        down_received,
        down_sent,
        error,
    };
    let mut line = serde_json::to_string(&rep)?;
    line.push('\n');
    out.write_all(line.as_bytes()).await?;
    out.flush().await?;
    Ok(())
}
