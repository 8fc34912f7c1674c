//! A `[[faults]]` entry resolved against the run's network: which layer makes it,
//! whether it fits (checked when the schedule is made, before anything starts), and the
//! changes it makes when it fires.

use crate::error::{Error, Result};
use crate::fault::{FaultError, FaultKind, FaultSpec};

use super::{Change, Host, Network, Scope, kind_of};

/// Whether the kernel makes this fault: kernel-only kinds, and `bandwidth` whose target
/// names hosts of the network.
pub(crate) fn uses_kernel(spec: &FaultSpec, net: Option<&Network>) -> bool {
    spec.kind.is_kernel()
        || (spec.kind == FaultKind::Bandwidth
            && net.is_some_and(|n| !matching(n, &spec.target).is_empty()))
}

/// Hosts whose name starts with `_` are the run's plumbing (the harness's own port into
/// the network): no fault targets them or counts them as a peer, so faults never cut
/// the harness from the hosts it watches.
fn faultable(net: &Network) -> impl Iterator<Item = &Host> {
    net.hosts().iter().filter(|h| !h.name().starts_with('_'))
}

fn matching<'a>(net: &'a Network, glob: &str) -> Vec<&'a Host> {
    match glob::Pattern::new(glob) {
        Ok(p) => faultable(net).filter(|h| p.matches(h.name())).collect(),
        Err(_) => Vec::new(),
    }
}

fn host_list(net: &Network) -> String {
    let names: Vec<&str> = faultable(net).map(|h| h.name()).collect();
    names.join(", ")
}

/// Check a fault against the network (`None`: the run has no hosts in namespaces).
pub(crate) fn check(
    index: usize,
    spec: &FaultSpec,
    net: Option<&Network>,
) -> Result<(), FaultError> {
    let err = |reason: String| FaultError {
        index,
        kind: spec.kind.as_str(),
        target: spec.target.clone(),
        reason,
    };
    if !uses_kernel(spec, net) {
        if spec.direction.is_some() {
            return Err(err(match net {
                None => "`direction` applies to faults between hosts, and this run has no hosts in network namespaces (flowline run --isolation netns); links take `stream`".into(),
                Some(n) => format!("`direction` applies to faults between hosts, and the target names none (hosts: {}); links take `stream`", host_list(n)),
            }));
        }
        return Ok(());
    }
    let Some(net) = net else {
        return Err(err(format!(
            "`{}` is made by the kernel between hosts in network namespaces, and this run has none (flowline run --isolation netns)",
            spec.kind.as_str()
        )));
    };
    if spec.kind == FaultKind::Bandwidth {
        if spec.stream.is_some() || spec.toxicity.is_some() {
            return Err(err("between hosts, bandwidth takes `direction` (to/from/both), not `stream`/`toxicity`, which are for proxy links".into()));
        }
        if spec.rate == Some(0) {
            return Err(err("rate must be positive (KB/s)".into()));
        }
    }
    let targets = matching(net, &spec.target);
    if targets.is_empty() {
        return Err(err(format!(
            "target matches no host (hosts: {})",
            host_list(net)
        )));
    }
    let kind = kind_of(spec.kind).ok_or_else(|| err("not a kernel fault".into()))?;
    if let Some(peer) = &spec.peer {
        if !kind.between_hosts() {
            return Err(err(
                "`peer` does not apply: this kind acts on the targets' whole cables".into(),
            ));
        }
        if peers(net, spec, &targets).is_empty() {
            return Err(err(format!(
                "peer {peer:?} matches no host besides the targets (hosts: {})",
                host_list(net)
            )));
        }
    }
    Ok(())
}

fn peers<'a>(net: &'a Network, spec: &FaultSpec, targets: &[&Host]) -> Vec<&'a Host> {
    match &spec.peer {
        Some(p) => matching(net, p),
        None => faultable(net)
            .filter(|h| !targets.iter().any(|t| t.name() == h.name()))
            .collect(),
    }
}

/// A kernel fault ready to apply.
#[derive(Debug)]
pub(crate) struct Plan {
    /// Host names the target matched.
    pub(crate) targets: Vec<String>,
    /// Host names of the other end (empty for faults on whole cables).
    pub(crate) peers: Vec<String>,
    /// What to change.
    pub(crate) changes: Vec<Change>,
}

/// The changes fault `index` makes in `net`.
pub(crate) fn plan(index: usize, spec: &FaultSpec, net: &Network) -> Result<Plan> {
    check(index, spec, Some(net))?;
    let kind = kind_of(spec.kind).ok_or_else(|| Error::Network {
        reason: format!("`{}` is not a kernel fault", spec.kind.as_str()),
    })?;
    let targets = matching(net, &spec.target);
    let peers = if kind.between_hosts() {
        peers(net, spec, &targets)
    } else {
        Vec::new()
    };
    let scope = Scope {
        index,
        spec,
        network: net,
        targets,
        peers,
        direction: spec.direction.unwrap_or_default(),
    };
    Ok(Plan {
        targets: scope.targets.iter().map(|h| h.name().to_string()).collect(),
        peers: scope.peers.iter().map(|h| h.name().to_string()).collect(),
        changes: kind.changes(&scope),
    })
}
