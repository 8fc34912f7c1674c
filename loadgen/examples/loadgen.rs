//! `flowline loadgen` on its own: the same command line as the `flowline` binary's
//! `loadgen` subcommand, in a binary that builds only this crate. Benchmarks use it
//! (`cargo build --release -p flowline-loadgen --example loadgen`) to avoid a release
//! build of the whole workspace.

use std::process::ExitCode;

use clap::Parser;

/// Run a share of a scenario's simulated users (see `flowline loadgen --help`).
#[derive(Debug, Parser)]
#[command(name = "loadgen")]
struct Cli {
    #[command(flatten)]
    args: flowline_loadgen::cli::Args,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(flowline_loadgen::cli::main(cli.args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadgen: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
