//! `flowline run SCENARIO --phases single,postgres,pubsub,queue`: the same load against
//! several architecture phases, then their comparison.
//!
//! ```text
//! scenario + flags ─▶ one seed (given, from the file, or drawn once; printed)
//!   ─▶ parent folder <out>/<timestamp>-<scenario>-phases/
//!   ─▶ for each phase in order: `flowline run` into <parent>/<phase>/ (same seed, users,
//!      flags; only the phase differs)
//!   ─▶ compare of the runs carried out ─▶ <parent>/compare.html + the table
//!   ─▶ one line per phase (PASSED / FAILED / not carried out) and the exit status:
//!      2 if a phase could not be carried out, else 1 if a phase failed a threshold, else 0
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use flowline_loadgen::scenario::Phase;

use crate::preflight::load_scenario;
use crate::run::{RunOptions, create_run_dir};

/// What became of one phase.
#[derive(Debug)]
pub enum PhaseResult {
    /// Carried out; every threshold held.
    Passed(PathBuf),
    /// Carried out; a threshold failed (or a worker did not finish).
    Failed(PathBuf),
    /// Could not be carried out (the error, with its causes).
    NotCarriedOut(String),
}

/// Parse `--phases` (`single,postgres,pubsub,queue`): known names, each at most once.
pub fn parse_phases(list: &[String]) -> anyhow::Result<Vec<Phase>> {
    let mut phases: Vec<Phase> = Vec::new();
    for name in list.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let p = name
            .parse::<Phase>()
            .map_err(anyhow::Error::msg)
            .context("--phases")?;
        anyhow::ensure!(!phases.contains(&p), "--phases: {name} is given twice");
        phases.push(p);
    }
    anyhow::ensure!(
        !phases.is_empty(),
        "--phases: give at least one phase (single, postgres, pubsub, queue)"
    );
    Ok(phases)
}

/// Run the scenario once per phase with one seed, compare the runs, and return the exit
/// status. `Err` only when nothing could be started (bad flags or scenario: exit 2).
pub async fn run_phases(base: RunOptions, phases: &[Phase]) -> anyhow::Result<ExitCode> {
    // The scenario is checked and the seed settled before anything runs.
    let scenario = load_scenario(&base.scenario, &base.overrides)?;
    anyhow::ensure!(
        scenario.target.is_none(),
        "--phases compares the reference cluster's phases; a generic WebSocket target has none"
    );
    let seed = scenario.seed;
    eprintln!(
        "flowline: phases {} with seed {seed} for all",
        phases
            .iter()
            .map(|p| p.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    // The parent folder names no database or keys: its id need not stay claimed.
    let (parent, _) = create_run_dir(&base.out, &format!("{}-phases", scenario.name))?;
    eprintln!("flowline: phase runs under {}", parent.display());

    let mut results: Vec<(Phase, PhaseResult)> = Vec::new();
    for &phase in phases {
        eprintln!("\nflowline: === phase {} ===", phase.as_str());
        let mut opts = base.clone();
        opts.out = parent.join(phase.as_str());
        opts.overrides.seed = Some(seed);
        opts.overrides.phase = Some(phase);
        let result = match crate::run::run(opts).await {
            Ok(o) if o.summary.passed => PhaseResult::Passed(o.dir),
            Ok(o) => PhaseResult::Failed(o.dir),
            Err(e) => {
                let text = format!("{e:#}");
                eprintln!("flowline: phase {} not carried out: {text}", phase.as_str());
                let interrupted = text.starts_with("interrupted by");
                results.push((phase, PhaseResult::NotCarriedOut(text)));
                if interrupted {
                    break;
                }
                continue;
            }
        };
        results.push((phase, result));
    }

    let dirs: Vec<PathBuf> = results
        .iter()
        .filter_map(|(_, r)| match r {
            PhaseResult::Passed(d) | PhaseResult::Failed(d) => Some(d.clone()),
            PhaseResult::NotCarriedOut(_) => None,
        })
        .collect();
    eprintln!();
    let compare_path = parent.join("compare.html");
    let compared = if dirs.is_empty() {
        eprintln!("flowline: no phase was carried out; nothing to compare");
        false
    } else {
        match crate::compare::compare(&dirs, Some(&compare_path)) {
            Ok(p) => {
                eprintln!("flowline: comparison written to {}", p.display());
                true
            }
            Err(e) => {
                eprintln!("flowline: the comparison could not be written: {e:#}");
                false
            }
        }
    };

    eprintln!(
        "\nflowline: phases (seed {seed}), under {}:",
        parent.display()
    );
    for (phase, r) in &results {
        let line = match r {
            PhaseResult::Passed(d) => format!("PASSED  {}", d.display()),
            PhaseResult::Failed(d) => format!("FAILED  {} (a threshold failed)", d.display()),
            PhaseResult::NotCarriedOut(e) => format!("not carried out: {e}"),
        };
        eprintln!("  {:<9} {line}", phase.as_str());
    }
    for phase in phases.iter().skip(results.len()) {
        eprintln!("  {:<9} not started (interrupted)", phase.as_str());
    }
    let not_carried_out = results.len() < phases.len()
        || results
            .iter()
            .any(|(_, r)| matches!(r, PhaseResult::NotCarriedOut(_)));
    let failed = results
        .iter()
        .any(|(_, r)| matches!(r, PhaseResult::Failed(_)));
    let code = if not_carried_out || !compared {
        2
    } else if failed {
        1
    } else {
        0
    };
    eprintln!(
        "flowline: exit {code}: {}",
        match code {
            2 => "a phase (or the comparison) could not be carried out",
            1 => "every phase was carried out; a threshold failed",
            _ => "every phase was carried out and held every threshold",
        }
    );
    Ok(ExitCode::from(code))
}
