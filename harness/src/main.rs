//! The `flowline` binary: parses the command line and dispatches to the crates' entry points.
//!
//! Exit status: whatever the subcommand returns; an error that escapes a subcommand is
//! printed once with its chain of causes and exits 2 ("could not be carried out").

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Flowline: a load-testing and chaos harness with a reference chat cluster.
#[derive(Debug, Parser)]
#[command(name = "flowline", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one reference chat node (HTTP API + WebSocket).
    Server(flowline_server::cli::Args),
    /// Run a share of a scenario's simulated users (one worker process).
    Loadgen(flowline_loadgen::cli::Args),
    /// Work with scenario files (check them).
    Scenario(flowline_harness::cli::ScenarioArgs),
    /// Fault injection: a Toxiproxy-compatible proxy and fault schedules.
    Chaos(flowline_chaos::cli::Args),
    /// Run a scenario: start a cluster, drive it, inject faults, write a run folder and
    /// report (exit 0: thresholds held, 1: a threshold failed, 2: not carried out).
    ///
    /// A scenario with `[target] kind = "websocket"` drives that generic WebSocket
    /// service instead of the reference cluster, with the same run folder: no nodes or
    /// services are started and nothing is provisioned. Each ws:// URL of `target.urls`
    /// is reached through a chaos link `client-target<i>` (i = its position, from 1), so
    /// link faults (latency, partitions, ... on `client-target<i>` or `client-*`) apply
    /// to the service; wss:// URLs are used directly and take no faults. Node faults
    /// (kill, pause) are refused with exit 2.
    ///
    /// With `--launcher kubernetes` the workers are the pods of an Indexed Job in the
    /// cluster of the current kubeconfig context (or `--kube-context`, or the pod the
    /// harness runs in): the run creates a ConfigMap (scenario, plan), a Service for its
    /// coordinator and the Job in `--namespace`, the pods (`--image`) connect back to
    /// `--coordinator-advertise`, the run folder and report are a local run's, and
    /// everything created is deleted (by the label flowline.dev/run) however the run
    /// ends. The pods load `--nodes-url`, `--reference-cluster` or a `[target]`; no node
    /// is started and no fault injected. Bad input, an unreachable cluster or a missing
    /// namespace exit 2 before anything is created. See docs/kubernetes.md.
    Run(flowline_harness::cli::RunArgs),
    /// Compare finished runs side by side (table + compare.html).
    Compare(flowline_harness::cli::CompareArgs),
    /// Run a finished run again from its scenario.toml and seed; say what differs.
    Replay(flowline_harness::cli::ReplayArgs),
    /// Write report.html of a run folder again from its files.
    Report(flowline_harness::cli::ReportArgs),
    /// Kubernetes: print the objects `flowline run --launcher kubernetes` creates.
    K8s(flowline_harness::kubernetes::cli::K8sArgs),
    /// Internal: run PROGRAM so that it dies with its parent (used by `flowline run` for
    /// throwaway Postgres/Redis).
    #[command(hide = true)]
    ChildExec {
        /// Program to execute.
        program: String,
        /// Its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    // First, on the main thread: a child of `flowline run` dies with it, even on SIGKILL.
    if let Err(e) = flowline_harness::child::die_with_parent_from_env() {
        eprintln!("flowline: {e:#}");
        return ExitCode::from(2);
    }
    let cli = Cli::parse();
    if let Command::ChildExec { program, args } = &cli.command {
        let e = flowline_harness::child::exec(program, args);
        eprintln!("flowline: child-exec: {e:#}");
        return ExitCode::from(2);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLOWLINE_LOG")
                // Proxy start/stop lines are per link and per run: noise at info.
                .unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new("info,flowline_chaos::proxy=warn")
                }),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal: children of `flowline run` log to files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // A data-plane process carries one share of a link that is already spread over
    // processes: one thread does it without a multi-thread runtime's cross-thread wake-ups
    // and work stealing on every forwarded message.
    let data_plane = matches!(
        &cli.command,
        Command::Chaos(flowline_chaos::cli::Args {
            command: flowline_chaos::cli::Command::DataPlane(_)
        })
    );
    let mut builder = if data_plane {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("flowline: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Server(args) => flowline_server::cli::main(args).await,
            Command::Loadgen(args) => flowline_loadgen::cli::main(args).await,
            Command::Scenario(args) => flowline_harness::cli::scenario_main(args).await,
            Command::Chaos(args) => flowline_chaos::cli::main(args).await,
            Command::Run(args) => flowline_harness::cli::run_main(args).await,
            Command::Compare(args) => flowline_harness::cli::compare_main(args).await,
            Command::Replay(args) => flowline_harness::cli::replay_main(args).await,
            Command::Report(args) => flowline_harness::cli::report_main(args).await,
            Command::K8s(args) => flowline_harness::kubernetes::cli::k8s_main(args).await,
            Command::ChildExec { .. } => unreachable!("handled before the runtime starts"),
        }
    });
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("flowline: error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(2)
        }
    }
}
