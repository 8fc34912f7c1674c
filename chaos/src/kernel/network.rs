//! A run's network: one network namespace per host, joined by a bridge that lives in a
//! namespace of its own, so that nothing of the run touches the machine's own namespace.
//!
//! ```text
//!   flowline-<pid>-<run>-node1          flowline-<pid>-<run>            flowline-<pid>-<run>-redis
//!  ┌──────────────────────┐          ┌──────────────────────┐          ┌──────────────────────┐
//!  │ eth0 10.98.0.2/24    ├── veth ──┤ h1 ─┐ br0 ┌─ h2       ├── veth ──┤ eth0 10.98.0.3/24    │
//!  │ lo, table inet       │          │     └─────┘          │          │ lo, table inet       │
//!  │   flowline_<run>     │          │ (no address, no IP)  │          │   flowline_<run>     │
//!  └──────────────────────┘          └──────────────────────┘          └──────────────────────┘
//! ```
//!
//! - Addresses exist only inside the host namespaces and no namespace has a default
//!   route, so nothing on the bridge can reach or be reached from outside the run.
//! - Every name carries the owner's pid and the run id. [`Network::create`] first removes
//!   the namespaces of runs whose owner is dead (a `flowline run` killed with SIGKILL),
//!   and says so; live runs of other processes are never touched.
//! - Each host namespace gets an nft table `inet flowline_<run>` whose one rule keeps
//!   connection tracking on from the first packet: a fault that matches `ct state` later
//!   then sees connections opened before it as established, not as new.
//! - Dropping the [`Network`] (or [`Network::remove`]) deletes the namespaces, which
//!   takes their veths, bridge, qdiscs and tables with them.

use std::collections::HashMap;
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sched::CloneFlags;
use parking_lot::Mutex;

use super::command::{nft_in, run};
use crate::error::{Error, Result};

/// Where `ip netns` keeps its named namespaces.
const NETNS_DIR: &str = "/run/netns";
/// Every namespace of every run starts with this.
pub const PREFIX: &str = "flowline-";
/// The hosts' subnet. It exists only inside the run's namespaces.
const SUBNET: [u8; 3] = [10, 98, 0];
/// Host addresses go from .2 to .251 of the /24.
const MAX_HOSTS: usize = 250;

/// One host of a run: a network namespace with one address on the run's bridge.
#[derive(Debug, Clone)]
pub struct Host {
    name: String,
    netns: String,
    addr: Ipv4Addr,
    port: String,
}

impl Host {
    /// The host's name in the scenario (`node2`, `redis`, `worker1`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name of its network namespace (`ip netns exec <netns> ...`).
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// The path of its namespace file, for `setns(2)`.
    pub fn netns_path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.netns)
    }

    /// Its address on the run's bridge.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The name of the host's cable end on the bridge (in the switch namespace).
    pub(crate) fn port(&self) -> &str {
        &self.port
    }

    /// Run `f` on a short-lived thread that has joined the host's namespace: sockets it
    /// creates belong to the host (bind, connect, then hand them back to any thread).
    pub fn enter<R: Send>(&self, f: impl FnOnce() -> R + Send) -> Result<R> {
        let ns = File::open(self.netns_path()).map_err(|e| Error::Network {
            reason: format!("cannot open namespace of host {}: {e}", self.name),
        })?;
        std::thread::scope(|s| {
            s.spawn(move || {
                nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| Error::Network {
                    reason: format!("cannot enter namespace of host {}: {e}", self.name),
                })?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|_| {
                Err(Error::Network {
                    reason: format!("a thread in host {} panicked", self.name),
                })
            })
        })
    }

    /// A command that runs `program` inside the host's namespace.
    pub fn command(&self, program: &str) -> std::process::Command {
        let mut c = std::process::Command::new("ip");
        c.args(["netns", "exec", &self.netns, program]);
        c
    }
}

/// The network of one run: its hosts, their namespaces and the bridge between them.
#[derive(Debug)]
pub struct Network {
    run: String,
    switch: String,
    table: String,
    hosts: Vec<Host>,
    leftovers: Vec<String>,
    /// How many active unplug faults hold each port down (see `Change::LinkDown`).
    holds: Mutex<HashMap<String, usize>>,
    removed: AtomicBool,
}

impl Network {
    /// Build the network of run `run_id` with these hosts (names: letters, digits, `-`
    /// and `_`). Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN). Leftovers of dead runs are
    /// removed first ([`leftovers_removed`](Self::leftovers_removed) lists them). On
    /// failure nothing of the new network is left.
    pub fn create(run_id: &str, hosts: &[&str]) -> Result<Network> {
        check_privileges()?;
        check_hosts(hosts)?;
        let run_name = sanitize(run_id);
        if run_name.is_empty() {
            return Err(Error::Network {
                reason: format!("run id {run_id:?} has no letter or digit to name namespaces"),
            });
        }
        let leftovers = remove_leftovers()?;
        let owner = std::process::id();
        let mut net = Network {
            switch: format!("{PREFIX}{owner}-{run_name}"),
            table: format!("flowline_{}", run_name.replace('-', "_")),
            run: run_name,
            hosts: Vec::new(),
            leftovers,
            holds: Mutex::new(HashMap::new()),
            removed: AtomicBool::new(false),
        };
        // From here on, dropping `net` on an error removes what was made.
        run("ip", &["netns", "add", &net.switch])?;
        run("ip", &["-n", &net.switch, "link", "set", "lo", "up"])?;
        run(
            "ip",
            &["-n", &net.switch, "link", "add", "br0", "type", "bridge"],
        )?;
        run("ip", &["-n", &net.switch, "link", "set", "br0", "up"])?;
        for (i, name) in hosts.iter().enumerate() {
            let host = Host {
                name: name.to_string(),
                netns: format!("{}-{name}", net.switch),
                addr: Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], i as u8 + 2),
                port: format!("h{}", i + 1),
            };
            run("ip", &["netns", "add", &host.netns])?;
            net.hosts.push(host.clone());
            net.plug_host(&host)?;
        }
        Ok(net)
    }

    fn plug_host(&self, h: &Host) -> Result<()> {
        let (ns, sw) = (h.netns.as_str(), self.switch.as_str());
        run(
            "ip",
            &[
                "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", &h.port,
                "netns", sw,
            ],
        )?;
        let cidr = format!("{}/24", h.addr);
        run("ip", &["-n", ns, "addr", "add", &cidr, "dev", "eth0"])?;
        run("ip", &["-n", ns, "link", "set", "eth0", "up"])?;
        run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        run(
            "ip",
            &["-n", sw, "link", "set", &h.port, "master", "br0", "up"],
        )?;
        nft_in(
            ns,
            &format!(
                "table inet {} {{\n  chain conntrack {{\n    type filter hook input priority 0; policy accept;\n    ct state established counter\n  }}\n}}\n",
                self.table
            ),
        )?;
        Ok(())
    }

    /// The run id as used in names.
    pub fn run_id(&self) -> &str {
        &self.run
    }

    /// The hosts, in the order given to [`create`](Self::create).
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The host named `name`.
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// Namespaces of dead runs that [`create`](Self::create) removed.
    pub fn leftovers_removed(&self) -> &[String] {
        &self.leftovers
    }

    /// The namespace that holds the bridge.
    pub(crate) fn switch(&self) -> &str {
        &self.switch
    }

    /// The nft table (family `inet`) in every host namespace.
    pub(crate) fn table(&self) -> &str {
        &self.table
    }

    /// Take a hold on `key`; true if it is the first.
    pub(crate) fn acquire(&self, key: &str) -> bool {
        let mut holds = self.holds.lock();
        let n = holds.entry(key.to_string()).or_insert(0);
        *n += 1;
        *n == 1
    }

    /// Release a hold on `key`; true if it was the last.
    pub(crate) fn release(&self, key: &str) -> bool {
        let mut holds = self.holds.lock();
        match holds.get_mut(key) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            _ => {
                holds.remove(key);
                true
            }
        }
    }

    /// Delete every namespace of the network, hosts first, then the switch. Idempotent;
    /// every namespace is tried and the first failure returned.
    pub fn remove(&self) -> Result<()> {
        if self.removed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let mut first = None;
        let names = self.hosts.iter().map(|h| h.netns.as_str());
        for ns in names.chain(std::iter::once(self.switch.as_str())) {
            if let Err(e) = delete_netns(ns) {
                tracing::error!(error = %e, "kernel: cannot delete namespace {ns}");
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = self.remove();
    }
}

/// Delete a named namespace; one that is already gone is fine.
fn delete_netns(ns: &str) -> Result<()> {
    if !Path::new(NETNS_DIR).join(ns).exists() {
        return Ok(());
    }
    run("ip", &["netns", "del", ns]).map(drop)
}

/// Letters, digits and `-` of `id`, at most 40 of them.
fn sanitize(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect::<String>()
        .split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-")
        .chars()
        .take(40)
        .collect::<String>()
        .trim_end_matches('-')
        .to_string()
}

fn check_hosts(hosts: &[&str]) -> Result<()> {
    let bad = |reason: String| Err(Error::Network { reason });
    if hosts.len() > MAX_HOSTS {
        return bad(format!(
            "{} hosts asked for, a run's network has room for {MAX_HOSTS}",
            hosts.len()
        ));
    }
    for (i, h) in hosts.iter().enumerate() {
        let ok = !h.is_empty()
            && h.len() <= 32
            && h.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok {
            return bad(format!(
                "host name {h:?} must be 1 to 32 letters, digits, `-` or `_`"
            ));
        }
        if hosts[..i].contains(h) {
            return bad(format!("host name {h:?} is given twice"));
        }
    }
    Ok(())
}

/// Whether this process may make namespaces: `ip netns add` needs CAP_SYS_ADMIN (it
/// mounts), everything else CAP_NET_ADMIN.
pub fn check_privileges() -> Result<()> {
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let missing: Vec<&str> = [
        (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
        (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
    ]
    .into_iter()
    .filter(|(bit, _)| eff & (1 << bit) == 0)
    .map(|(_, name)| name)
    .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::Network {
            reason: format!(
                "network namespaces need root (this process lacks {}); run as root or without network isolation",
                missing.join(" and ")
            ),
        })
    }
}

/// The pid that owns a namespace named `flowline-<pid>-...`.
fn owner_of(ns: &str) -> Option<u32> {
    ns.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()
}

/// Namespaces of runs whose owner process is gone.
pub fn leftovers() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut dead: Vec<String> = dir
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| owner_of(n).is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()))
        .collect();
    // Longest first: hosts before their switch.
    dead.sort_by_key(|n| std::cmp::Reverse(n.len()));
    dead
}

/// Remove the namespaces of dead runs, ending what still runs inside them (the
/// processes of a run killed with SIGKILL that did not die with it). Returns their names.
pub fn remove_leftovers() -> Result<Vec<String>> {
    let dead = leftovers();
    for ns in &dead {
        if let Ok(pids) = run("ip", &["netns", "pids", ns]) {
            for pid in pids
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        delete_netns(ns)?;
    }
    if !dead.is_empty() {
        tracing::warn!(
            "kernel: removed {} namespace(s) left by dead runs: {}",
            dead.len(),
            dead.join(", ")
        );
    }
    Ok(dead)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_become_short_safe_names() {
        assert_eq!(
            sanitize("20260101-120000-Asym Partition"),
            "20260101-120000-asym-partition"
        );
        assert_eq!(sanitize("--a__b--"), "a-b");
        assert_eq!(sanitize(&"x".repeat(60)).len(), 40);
        assert_eq!(sanitize("!!!"), "");
    }

    #[test]
    fn owners_are_read_from_names() {
        assert_eq!(owner_of("flowline-4242-run-node1"), Some(4242));
        assert_eq!(owner_of("flowline-run-node1"), None);
        assert_eq!(owner_of("other-4242"), None);
    }

    #[test]
    fn host_names_are_checked() {
        assert!(check_hosts(&["node1", "redis", "worker_2"]).is_ok());
        for bad in [vec!["node 1"], vec![""], vec!["a", "a"], vec!["a/b"]] {
            assert!(check_hosts(&bad).is_err(), "{bad:?}");
        }
    }
}
