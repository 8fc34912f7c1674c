//! Raw form → typed [`Scenario`]: one function per TOML table, each checking its own keys
//! and the few rules that join it to a table validated before it. Every problem of every
//! table is collected, so one error lists them all; nothing is half-applied.
//!
//! ```text
//! RawScenario ─▶ run ─▶ cluster ─▶ population ─▶ personas ─▶ load ─▶ target ─▶ thresholds ─▶ faults
//!                                        └── users ─────────────────▶┘   ▲ cluster, personas
//! ```

mod cluster;
mod faults;
mod load;
mod personas;
mod population;
mod run;
mod target;
mod thresholds;

use crate::error::ScenarioError;
use crate::scenario::model::Scenario;
use crate::scenario::raw::RawScenario;

/// Validate a parsed file; `name` labels the error. The seed is filled in here when the
/// file has none (and kept in the raw form, so `to_toml` writes it).
pub(super) fn validate(mut raw: RawScenario, name: &str) -> Result<Scenario, ScenarioError> {
    let mut p = Vec::new();
    let run = run::run(&mut raw.run, &mut p);
    let cluster = cluster::cluster(&raw.cluster, &mut p);
    let population = population::population(&raw.population, &mut p);
    let personas = personas::personas(&raw.personas, &mut p);
    let load = load::load(&raw.load, raw.population.users, &mut p);
    let target = target::target(raw.target.as_ref(), &cluster, &personas, &mut p);
    let thresholds = thresholds::thresholds(&raw.thresholds, &mut p);
    faults::faults(&raw.faults, cluster.isolation, &mut p);
    if !p.is_empty() {
        return Err(ScenarioError::Invalid {
            source_name: name.into(),
            problems: p,
        });
    }
    Ok(Scenario {
        name: run.name,
        description: run.description,
        duration: run.duration,
        warmup: run.warmup,
        drain: run.drain,
        seed: run.seed,
        cluster,
        population,
        personas,
        load,
        thresholds,
        faults: raw.faults.clone(),
        target,
        raw,
    })
}
