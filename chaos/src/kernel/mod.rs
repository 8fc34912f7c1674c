//! Faults the kernel makes between hosts in network namespaces: the run's network
//! ([`Network`]: one namespace, veth and address per host on a bridge of the run) and
//! one file per fault kind behind the small `KernelFault` interface.
//!
//! # The contract a kernel fault keeps
//!
//! A kind never touches the kernel itself: from the hosts the fault resolved to (its
//! `Scope`) it returns a list of `Change`s, each of which knows how to apply and undo
//! itself. The schedule applies them in order (undoing the applied ones if one fails)
//! and undoes them in reverse when the fault heals, when the run ends, and when the
//! schedule is dropped. So a kind is a pure function from parameters to changes, and
//! every heal path is the same code.
//!
//! Where each kind acts, and why there:
//!
//! | kind | change | where |
//! |---|---|---|
//! | `loss`, `partition`, `block_new` | nft drop rule | input hook of each *receiving* host: a sender sees silence (a timeout), never an error from its own stack |
//! | `bandwidth`, `delay`, `reorder`, `duplicate`, `corrupt` | root qdisc (tbf, netem) | egress of the host's `eth0` (`to`) and of its bridge port (`from`) |
//! | `unplug` | link down | the host's bridge port: the host sees NO-CARRIER, like a pulled cable |
//!
//! Directions are from the target's side: `to` is traffic the targets send to their
//! peers, `from` traffic they receive from them, `both` (the default) both.
//!
//! Hosts whose name starts with `_` (the harness's own port into the network) are
//! plumbing: no target or peer glob matches them.

mod bandwidth;
mod block_new;
mod change;
mod command;
mod corrupt;
mod delay;
mod duplicate;
pub mod forward;
mod loss;
pub use crate::netem;
pub mod network;
mod partition;
mod reorder;
mod resolve;
mod unplug;

pub(crate) use change::{Change, apply_all, revert_all};
pub use network::{Host, Network};
pub(crate) use resolve::{check, plan, uses_kernel};

use crate::fault::{FaultKind, FaultSpec, HostDirection};

/// A kind of kernel fault: what it changes for the hosts it resolved to.
pub(crate) trait KernelFault: Sync {
    /// Whether the fault acts on flows between targets and peers (so `peer` applies),
    /// rather than on each target's whole cable.
    fn between_hosts(&self) -> bool {
        true
    }

    /// The changes that put the fault in place.
    fn changes(&self, scope: &Scope<'_>) -> Vec<Change>;
}

/// The kernel fault of a kind, if the kernel makes that kind. `bandwidth` is here too:
/// the schedule uses it when the fault names hosts rather than proxy links.
pub(crate) fn kind_of(kind: FaultKind) -> Option<&'static dyn KernelFault> {
    Some(match kind {
        FaultKind::Loss => &loss::Loss,
        FaultKind::Partition => &partition::Partition,
        FaultKind::BlockNew => &block_new::BlockNew,
        FaultKind::Bandwidth => &bandwidth::Bandwidth,
        FaultKind::Unplug => &unplug::Unplug,
        FaultKind::Delay => &delay::Delay,
        FaultKind::Reorder => &reorder::Reorder,
        FaultKind::Duplicate => &duplicate::Duplicate,
        FaultKind::Corrupt => &corrupt::Corrupt,
        _ => return None,
    })
}

/// A fault resolved against a network: which hosts it acts on, between whom, which way.
#[derive(Debug)]
pub(crate) struct Scope<'a> {
    /// The fault's 1-based position, for unique chain names.
    pub(crate) index: usize,
    /// The fault as written.
    pub(crate) spec: &'a FaultSpec,
    /// The run's network.
    pub(crate) network: &'a Network,
    /// Hosts matched by `target`.
    pub(crate) targets: Vec<&'a Host>,
    /// Hosts matched by `peer` (default: every host that is not a target).
    pub(crate) peers: Vec<&'a Host>,
    /// Which way traffic is hit.
    pub(crate) direction: HostDirection,
}

impl Scope<'_> {
    fn to(&self) -> bool {
        matches!(self.direction, HostDirection::To | HostDirection::Both)
    }

    fn from(&self) -> bool {
        matches!(self.direction, HostDirection::From | HostDirection::Both)
    }

    /// Drop packets matching `expr` (an nft match, may be empty) on the flows the fault
    /// covers: one chain in each receiving host, matching the senders' addresses.
    pub(crate) fn drop_inbound(&self, expr: &str) -> Vec<Change> {
        let mut flows = Vec::new();
        if self.to() {
            flows.extend(self.peers.iter().map(|p| (*p, &self.targets)));
        }
        if self.from() {
            flows.extend(self.targets.iter().map(|t| (*t, &self.peers)));
        }
        let mut out = Vec::new();
        for (n, (receiver, senders)) in flows.into_iter().enumerate() {
            let addrs: Vec<String> = senders
                .iter()
                .filter(|s| s.name() != receiver.name())
                .map(|s| s.addr().to_string())
                .collect();
            if addrs.is_empty() {
                continue;
            }
            out.push(Change::Filter {
                netns: receiver.netns().to_string(),
                chain: format!("f{}_{}_{n}", self.index, self.spec.kind.as_str()),
                rules: vec![format!("ip saddr {{ {} }} {expr} drop", addrs.join(", "))],
            });
        }
        out
    }

    /// A root qdisc `args` on each target's cable, per direction: on the host's `eth0`
    /// for what it sends, on its bridge port for what it receives.
    pub(crate) fn egress_qdiscs(&self, args: &[String]) -> Vec<Change> {
        let mut out = Vec::new();
        for t in &self.targets {
            if self.to() {
                out.push(Change::Qdisc {
                    netns: t.netns().to_string(),
                    dev: "eth0".into(),
                    args: args.to_vec(),
                });
            }
            if self.from() {
                out.push(Change::Qdisc {
                    netns: self.network.switch().to_string(),
                    dev: t.port().to_string(),
                    args: args.to_vec(),
                });
            }
        }
        out
    }

    /// Each target's bridge port set down.
    pub(crate) fn cables_down(&self) -> Vec<Change> {
        self.targets
            .iter()
            .map(|t| Change::LinkDown {
                netns: self.network.switch().to_string(),
                dev: t.port().to_string(),
                host_netns: t.netns().to_string(),
            })
            .collect()
    }
}

/// A percentage for tc (`5%`); at most 4 decimals.
pub(crate) fn percent(p: Option<f64>) -> String {
    format!("{}%", (p.unwrap_or(0.0) * 10_000.0).round() / 10_000.0)
}

/// A duration for tc, in microseconds (`1500us`).
pub(crate) fn tc_time(d: Option<std::time::Duration>) -> String {
    format!("{}us", d.map_or(0, |d| d.as_micros()))
}
