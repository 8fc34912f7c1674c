//! `flowline run / compare / replay / report`: flags and entry points.

use std::path::PathBuf;
use std::process::ExitCode;

/// Compare finished runs side by side.
#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// Run folders (`runs/<timestamp>-<scenario>`).
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Where to write the HTML page (default: compare.html beside the first run).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Entry point of `flowline compare`.
pub async fn compare_main(args: CompareArgs) -> anyhow::Result<ExitCode> {
    let path = crate::compare::compare(&args.runs, args.out.as_deref())?;
    eprintln!("flowline: comparison written to {}", path.display());
    Ok(ExitCode::SUCCESS)
}

/// (Re)write report.html of a run folder from its files.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// The run folder.
    pub run: PathBuf,
}

/// Entry point of `flowline report`.
pub async fn report_main(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let path = crate::report::write(&args.run)?;
    println!("{}", path.display());
    Ok(ExitCode::SUCCESS)
}
