//! Everything `flowline run` checks before it starts anything: read the scenario, apply
//! the flags, and check its faults against the run's [`Topology`](crate::topology).
//! `flowline scenario check` runs the same checks, so a scenario that passes it is not
//! refused by `flowline run` for a reason it could have known.

use std::path::PathBuf;

use anyhow::Context;
use flowline_loadgen::scenario::{Overrides, Phase, Scenario};

use crate::{capacity, topology};

/// The embedded default scenario (`flowline run` without a file).
pub const QUICKSTART: &str = include_str!("../../scenarios/quickstart.toml");

/// Where the scenario comes from.
#[derive(Debug, Clone)]
pub enum ScenarioSource {
    /// `scenarios/quickstart.toml`, compiled in.
    Embedded,
    /// A file.
    File(PathBuf),
    /// Text already read (replay), with the name used in messages.
    Text(String, String),
}

/// Read the scenario and apply the flags; any problem here means exit 2.
pub fn load_scenario(src: &ScenarioSource, o: &Overrides) -> anyhow::Result<Scenario> {
    let s = match src {
        ScenarioSource::Embedded => {
            Scenario::parse("scenarios/quickstart.toml (embedded)", QUICKSTART)
        }
        ScenarioSource::File(p) => Scenario::from_path(p),
        ScenarioSource::Text(name, text) => Scenario::parse(name, text),
    }
    .map_err(|e| anyhow::anyhow!("{e}"))
    .context("bad scenario")?;
    prepare(s, o)
}

/// Apply the flags to a parsed scenario, as the run will use it.
pub fn prepare(s: Scenario, o: &Overrides) -> anyhow::Result<Scenario> {
    let s = s
        .apply(o)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("the scenario is not valid with the flags given")?;
    // Phases without cross-node fan-out run one node (DESIGN.md): several would not see
    // each other's messages, which measures nothing useful.
    let single_node = matches!(s.cluster.phase, Phase::Single | Phase::Postgres);
    if single_node && s.cluster.nodes > 1 && s.cluster.external.is_none() && s.target.is_none() {
        eprintln!(
            "flowline: phase {} runs one node; using 1 instead of {}",
            s.cluster.phase.as_str(),
            s.cluster.nodes
        );
        let one = Overrides {
            nodes: Some(1),
            ..Overrides::default()
        };
        return s
            .apply(&one)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context("the scenario is not valid with one node");
    }
    Ok(s)
}

/// `--direct-clients`: the workers connect straight to the nodes (or the generic target's
/// URLs), so no `client-node<i>` / `client-target<i>` link exists and a fault on one is
/// refused, naming it, before anything starts. Links behind the nodes (`node<i>-redis`,
/// ...) and process faults are kept.
pub fn check_direct_clients(s: &Scenario) -> anyhow::Result<()> {
    let topology = topology::Topology::of(s);
    let clients: Vec<String> = topology
        .nodes
        .iter()
        .map(|n| n.client.clone())
        .chain(topology.target.iter().filter_map(|t| t.link.clone()))
        .collect();
    for (i, f) in s.faults.iter().enumerate() {
        if let Some(hit) = clients.iter().find(|c| topology::glob_match(&f.target, c)) {
            anyhow::bail!(
                "fault #{} ({}) targets {:?}, which names the client link {hit}: with \
                 --direct-clients the workers connect straight to the nodes, with no client \
                 link to fault; drop --direct-clients, or remove the fault (a copy of the \
                 scenario without it is the direct baseline of a proxied run)",
                i + 1,
                f.display_label(),
                f.target,
            );
        }
    }
    Ok(())
}

/// The topology checks of a loaded scenario: every fault hits a node or link the run will
/// have, generic target URLs the workers can be given. `remote_proxy`: the links go on a
/// Toxiproxy (`--toxiproxy-url`). What the run needs of this machine is [`need`].
pub fn check(s: &Scenario, remote_proxy: bool) -> anyhow::Result<()> {
    // An external cluster behind a remote Toxiproxy may have more links than the run
    // creates (the compose cluster's node<i>-postgres / node<i>-redis): checked against
    // the Toxiproxy's proxies once it is reached.
    if !remote_proxy || s.cluster.external.is_none() {
        topology::check_fault_targets(s)?;
    }
    if s.target.is_some() {
        topology::check_generic_urls(s)?;
    }
    Ok(())
}

/// What scenario `s` needs of this machine with `workers` and `link_processes` (None:
/// picked), refused (with the computed need) if the machine cannot hold it.
pub fn need(
    s: &Scenario,
    workers: Option<usize>,
    link_processes: Option<usize>,
    remote_proxy: bool,
) -> anyhow::Result<capacity::Need> {
    let limits = capacity::Limits::of_machine();
    let links = if remote_proxy {
        capacity::LinkMode::Elsewhere
    } else {
        capacity::LinkMode::Embedded(link_processes)
    };
    let need = capacity::Need::of(s, workers, links, limits)?;
    need.check(limits)?;
    Ok(need)
}
