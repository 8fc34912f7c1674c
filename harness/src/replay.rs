//! `flowline replay RUN`: run a finished run again from its own scenario.toml (seed
//! included, so the same users, channels, traffic and fault times) and say what differs.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use flowline_loadgen::scenario::Overrides;

use crate::preflight::ScenarioSource;
use crate::run::RunOptions;
use crate::runfolder::RunFolder;

/// Replays run folder `run` (into `out`, default: beside it) with Postgres/Redis found as
/// `services` says, prints the differences, returns the new run's exit status.
pub async fn replay(
    run: &Path,
    out: Option<PathBuf>,
    services: crate::services::Options,
) -> anyhow::Result<ExitCode> {
    let original = RunFolder::load(run)?;
    let text = original.scenario_toml.clone().with_context(|| {
        format!(
            "{} has no scenario.toml: it cannot be replayed",
            run.display()
        )
    })?;
    let out = match out {
        Some(o) => o,
        None => run
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf(),
    };
    // Run as the original ran: users straight to the nodes if it had no client links.
    let direct_clients = original.direct_clients();
    eprintln!(
        "flowline: replaying {} (same scenario and seed{})",
        run.display(),
        if direct_clients {
            ", client links direct"
        } else {
            ""
        }
    );
    let opts = RunOptions {
        scenario: ScenarioSource::Text(run.join("scenario.toml").display().to_string(), text),
        out,
        overrides: Overrides::default(),
        services,
        workers: None,
        toxiproxy_url: None,
        metrics_host: None,
        workers_timeout: crate::run::WORKERS_TIMEOUT,
        client_link_processes: None,
        direct_clients,
        console: None,
    };
    let outcome = crate::run::run(opts).await?;
    let again = RunFolder::load(&outcome.dir)?;
    print!("{}", differences(&original, &again));
    Ok(outcome.exit_code())
}

/// A text account of what differs between two runs of the same scenario and seed.
pub fn differences(a: &RunFolder, b: &RunFolder) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "original: {}", a.dir.display());
    let _ = writeln!(s, "replay:   {}", b.dir.display());
    let same_seed = a.text(&["seed"]) == b.text(&["seed"]);
    let _ = writeln!(
        s,
        "seed: {} {}",
        b.text(&["seed"]).unwrap_or_else(|| "?".into()),
        same(same_seed)
    );
    let links = |r: &RunFolder| {
        if r.direct_clients() {
            "direct"
        } else {
            "proxied"
        }
    };
    let _ = writeln!(
        s,
        "client links: {} {}",
        links(b),
        same(links(a) == links(b))
    );
    let _ = writeln!(s, "totals:");
    for k in [
        "sent",
        "acked",
        "delivered",
        "errors",
        "disconnects",
        "reconnects",
    ] {
        let p = format!("totals.{k}");
        s.push_str(&line(k, a.num(&[&p]), b.num(&[&p]), false));
    }
    s.push_str(&line(
        "peak users",
        a.num(&["peak_users"]),
        b.num(&["peak_users"]),
        false,
    ));
    let _ = writeln!(s, "latency (ms):");
    let mut tags: Vec<&String> = a.histograms.keys().collect();
    for t in b.histograms.keys() {
        if !tags.contains(&t) {
            tags.push(t);
        }
    }
    for tag in tags {
        for (q, n) in [(0.5, "p50"), (0.99, "p99"), (0.999, "p99.9")] {
            let v = |r: &RunFolder| {
                r.histograms
                    .get(tag.as_str())
                    .filter(|h| !h.is_empty())
                    .map(|h| h.value_at_quantile(q) as f64 / 1000.0)
            };
            s.push_str(&line(&format!("{tag} {n}"), v(a), v(b), false));
        }
    }
    let _ = writeln!(s, "correctness:");
    for k in ["expected", "lost", "duplicated", "reordered", "gaps"] {
        let p = format!("correctness.{k}");
        s.push_str(&line(k, a.num(&[&p]), b.num(&[&p]), true));
    }
    let va = a.passed();
    let vb = b.passed();
    let _ = writeln!(
        s,
        "verdict: {} → {} {}",
        verdict(va),
        verdict(vb),
        same(va == vb)
    );
    s
}

/// One compared value: `exact` values (correctness counts) must be equal, others are
/// shown as a relative change.
fn line(label: &str, x: Option<f64>, y: Option<f64>, exact: bool) -> String {
    let (Some(x), Some(y)) = (x, y) else {
        return format!("  {label:28} n/a\n");
    };
    let verdict = if x == y {
        "same".to_string()
    } else if exact {
        format!("DIFFERENT ({:+})", y - x)
    } else if x != 0.0 {
        format!("{:+.1}%", (y - x) / x * 100.0)
    } else {
        format!("{:+}", y - x)
    };
    format!("  {label:28} {x:>12.2} → {y:>12.2}  {verdict}\n")
}

/// The mark after a value the replay should have kept.
fn same(equal: bool) -> &'static str {
    if equal { "(same)" } else { "(DIFFERENT)" }
}

fn verdict(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "PASS",
        Some(false) => "FAIL",
        None => "?",
    }
}
