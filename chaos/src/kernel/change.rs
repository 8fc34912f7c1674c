//! The three things a kernel fault changes in a run's network, each with its undo.
//!
//! | change | applied with | undone with |
//! |---|---|---|
//! | [`Change::Filter`] | a base chain of its own in a host's table (`nft -f -`) | `delete chain` |
//! | [`Change::Qdisc`] | `tc qdisc add dev <dev> root ...` | `tc qdisc del dev <dev> root` |
//! | [`Change::LinkDown`] | `ip link set <dev> down` | `ip link set <dev> up` |
//!
//! A chain per fault (rather than rules in a shared chain) makes the undo one command
//! that cannot remove another fault's rules; overlapping unplugs of one cable are
//! counted, and the cable goes back up when the last of them heals.

use super::command::{nft_in, run};
use super::network::Network;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// One change to the network, reversible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// A base chain `chain` on the input hook of namespace `netns`, holding `rules`.
    Filter {
        /// Namespace of the receiving host.
        netns: String,
        /// Chain name, unique per fault.
        chain: String,
        /// nft rules, one per line.
        rules: Vec<String>,
    },
    /// A root qdisc on `dev` (shapes what leaves through it).
    Qdisc {
        /// Namespace of the device.
        netns: String,
        /// Device.
        dev: String,
        /// Everything after `root`, e.g. `tbf rate 800kbit burst 10kb latency 200ms`.
        args: Vec<String>,
    },
    /// `dev` set down: its peer loses carrier, as if the cable were pulled.
    LinkDown {
        /// Namespace of the device.
        netns: String,
        /// Device.
        dev: String,
        /// Namespace of the host at the other end (its `eth0`).
        host_netns: String,
    },
}

impl Change {
    /// Put the change in place.
    pub(crate) fn apply(&self, net: &Network) -> Result<()> {
        match self {
            Change::Filter {
                netns,
                chain,
                rules,
            } => {
                let mut script = format!(
                    "table inet {} {{\n  chain {chain} {{\n    type filter hook input priority -10; policy accept;\n",
                    net.table()
                );
                for r in rules {
                    script.push_str("    ");
                    script.push_str(r);
                    script.push('\n');
                }
                script.push_str("  }\n}\n");
                nft_in(netns, &script).map(drop)
            }
            Change::Qdisc { netns, dev, args } => {
                let mut a = vec!["-n", netns, "qdisc", "add", "dev", dev, "root"];
                a.extend(args.iter().map(String::as_str));
                run("tc", &a).map(drop)
            }
            Change::LinkDown { netns, dev, .. } => {
                if !net.acquire(&format!("{netns}/{dev}")) {
                    return Ok(()); // already down for another fault
                }
                let r = run("ip", &["-n", netns, "link", "set", dev, "down"]);
                if r.is_err() {
                    net.release(&format!("{netns}/{dev}"));
                }
                r.map(drop)
            }
        }
    }

    /// Undo the change.
    pub(crate) fn revert(&self, net: &Network) -> Result<()> {
        match self {
            Change::Filter { netns, chain, .. } => nft_in(
                netns,
                &format!("delete chain inet {} {chain}\n", net.table()),
            )
            .map(drop),
            Change::Qdisc { netns, dev, .. } => {
                run("tc", &["-n", netns, "qdisc", "del", "dev", dev, "root"]).map(drop)
            }
            Change::LinkDown {
                netns,
                dev,
                host_netns,
            } => {
                if !net.release(&format!("{netns}/{dev}")) {
                    return Ok(()); // another fault still holds it down
                }
                run("ip", &["-n", netns, "link", "set", dev, "up"])?;
                wait_until_up(&[(netns, dev), (host_netns, "eth0")])
            }
        }
    }
}

/// Wait until both ends of a cable that was set up again are operational. The kernel
/// turns carrier on from a deferred work item (linkwatch, up to a second later), and
/// until then the device drops what it is given: a heal must not be reported before the
/// cable carries packets.
fn wait_until_up(ends: &[(&String, &str)]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    for (netns, dev) in ends {
        loop {
            let out = run("ip", &["-n", netns, "link", "show", "dev", dev])?;
            if out.contains("state UP") {
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::Network {
                    reason: format!("{dev} in {netns} is not up 5 s after being set up: {out}"),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

/// Apply `changes` in order; on a failure, undo those applied and return the error.
pub(crate) fn apply_all(net: &Network, changes: &[Change]) -> Result<()> {
    for (i, c) in changes.iter().enumerate() {
        if let Err(e) = c.apply(net) {
            for done in changes[..i].iter().rev() {
                let _ = done.revert(net);
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Undo `changes` in reverse order; every one is tried, the first failure returned.
pub(crate) fn revert_all(net: &Network, changes: &[Change]) -> Result<()> {
    let mut first = None;
    for c in changes.iter().rev() {
        if let Err(e) = c.revert(net) {
            tracing::error!(error = %e, "kernel: cannot undo {c:?}");
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}
