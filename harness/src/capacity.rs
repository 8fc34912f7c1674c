//! What a run needs of this machine, computed before anything starts: how many loadgen
//! workers, how many processes carry each client link, how many files each process holds,
//! which source addresses the users connect from and how many connections share one
//! (source, destination) pair; checked against this machine's limits (files per process,
//! ephemeral ports, files of the whole system). `flowline run` picks the workers and the
//! client-link processes from it, or refuses with the computed need (exit 2).
//!
//! ```text
//!  users ─hash─▶ home node i (loadgen's target_index) ─▶ users on node i (exact count)
//!  node i:         users_i + FILE_RESERVE files                       ≤ files per process
//!  worker w:       ⌈users / workers⌉ + FILE_RESERVE files              ≤ files per process
//!  client-node i:  2 × users_i / processes + FILE_RESERVE per process ≤ files per process
//!  (source, dest): users of one 127.0.0.x block homed on one node      ≤ ephemeral ports
//!  proxy → node i: users_i from 127.0.0.1                              ≤ ephemeral ports
//! ```

use anyhow::bail;
use flowline_loadgen::plan::MAX_USERS_PER_WORKER;
use flowline_loadgen::scenario::{Isolation, Scenario};
use flowline_loadgen::worker::target_index;

/// Files a process keeps beyond its users' sockets: listeners, logs, the database pool,
/// Redis, the coordinator, the runtime's own.
pub const FILE_RESERVE: u64 = 400;

/// Up to this many users in all, the client links live in the harness process itself
/// (two sockets per user: at most 16,000 of its 20,000 files).
pub const IN_PROCESS_LINK_USERS: u32 = 8_000;

/// Users per source address (loadgen binds users `i` to 127.0.0.(1 + i / this)).
pub const USERS_PER_SOURCE: u32 = flowline_loadgen::worker::USERS_PER_SOURCE;

/// The kernel spreads a link's new connections over its processes by a hash: leave this
/// share of each process's files free for an uneven spread.
const SPREAD_MARGIN: f64 = 0.9;

/// This machine's limits that a run can hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Files one process may hold (RLIMIT_NOFILE, inherited by every child).
    pub files_per_process: u64,
    /// Ephemeral ports: connections one (source, destination) pair can have.
    pub ports: u64,
    /// Files the whole system may still open (fs.file-max less those open).
    pub system_files: u64,
}

impl Limits {
    /// This machine's limits now.
    pub fn of_machine() -> Self {
        let files_per_process =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .map(|(soft, _)| soft)
                .unwrap_or(1024);
        let ports = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|s| {
                let mut it = s.split_whitespace().filter_map(|n| n.parse::<u64>().ok());
                Some(it.next_back()?.saturating_sub(it.next()?) + 1)
            })
            .unwrap_or(28_232);
        let system_files = std::fs::read_to_string("/proc/sys/fs/file-nr")
            .ok()
            .and_then(|s| {
                let n: Vec<u64> = s
                    .split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect();
                Some(n.get(2)?.saturating_sub(*n.first()?))
            })
            .unwrap_or(u64::MAX);
        Limits {
            files_per_process,
            ports,
            system_files,
        }
    }
}

/// What one run needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    /// Simulated users.
    pub users: u32,
    /// Nodes (or generic target URLs) the users are spread over.
    pub nodes: usize,
    /// Users on the busiest node (exact: the same hash loadgen uses).
    pub users_per_node: u64,
    /// Files the busiest node holds.
    pub files_per_node: u64,
    /// Loadgen worker processes.
    pub workers: usize,
    /// Files the fullest worker holds.
    pub files_per_worker: u64,
    /// Processes carrying each client link: 0 when the links live in the harness process
    /// (or are not the run's: a remote Toxiproxy, an isolated run).
    pub link_processes: usize,
    /// Files the fullest client-link process holds (0 when `link_processes` is 0).
    pub files_per_link_process: u64,
    /// Source addresses 127.0.0.1 ..= 127.0.0.(source_addresses).
    pub source_addresses: u32,
    /// Most connections sharing one (source, destination) pair.
    pub connections_per_pair: u64,
    /// Files of the whole run.
    pub total_files: u64,
}

/// How the run's client links are carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkMode {
    /// The embedded chaos proxy; `Some(n)`: `n` processes per link as asked
    /// (`--client-link-processes`), `None`: as the users need.
    Embedded(Option<usize>),
    /// Not the run's to carry: a remote Toxiproxy, or no links (isolated run).
    Elsewhere,
}

impl Need {
    /// What scenario `s` needs with `workers` (None: pick) and client links carried as
    /// `links` say, on a machine with `limits`; an error says what does not fit, with the
    /// computed need.
    pub fn of(
        s: &Scenario,
        workers: Option<usize>,
        links: LinkMode,
        limits: Limits,
    ) -> anyhow::Result<Need> {
        let users = s.population.users;
        let links = if s.cluster.isolation == Isolation::Netns && s.target.is_none() {
            LinkMode::Elsewhere
        } else {
            links
        };
        let nodes = match (&s.target, &s.cluster.external) {
            (Some(t), _) => t.urls.len(),
            (None, Some(e)) => e.ws.len(),
            (None, None) => s.cluster.nodes as usize,
        }
        .max(1);
        // Exact home-node counts, per source block too (users from one block homed on
        // one node share a (source, destination) pair).
        let blocks = users.div_ceil(USERS_PER_SOURCE).max(1) as usize;
        let mut per_node = vec![0u64; nodes];
        let mut per_pair = vec![0u64; nodes * blocks];
        for u in 0..users {
            let n = target_index(u, 0, nodes);
            per_node[n] += 1;
            per_pair[(u / USERS_PER_SOURCE) as usize * nodes + n] += 1;
        }
        let users_per_node = per_node.iter().copied().max().unwrap_or(0);
        let files = limits.files_per_process;
        let room = files.saturating_sub(FILE_RESERVE).max(1);
        let workers = workers.unwrap_or_else(|| {
            (users as u64)
                .div_ceil((MAX_USERS_PER_WORKER as u64).min(room))
                .max(1) as usize
        });
        let users_per_worker = (users as u64).div_ceil(workers.max(1) as u64);
        let link_processes = match links {
            LinkMode::Elsewhere => 0,
            LinkMode::Embedded(Some(n)) => n,
            LinkMode::Embedded(None) if users <= IN_PROCESS_LINK_USERS => 0,
            LinkMode::Embedded(None) => {
                let per_process = ((room as f64 * SPREAD_MARGIN) / 2.0).max(1.0) as u64;
                users_per_node.div_ceil(per_process).max(1) as usize
            }
        };
        let files_per_link_process = if link_processes == 0 {
            0
        } else {
            (2 * users_per_node).div_ceil(link_processes as u64) + FILE_RESERVE
        };
        let proxied = links != LinkMode::Elsewhere;
        let total_files = users as u64 * if proxied { 4 } else { 2 }
            + FILE_RESERVE * (nodes + workers + link_processes * nodes + 1) as u64;
        Ok(Need {
            users,
            nodes,
            users_per_node,
            files_per_node: users_per_node + FILE_RESERVE,
            workers,
            files_per_worker: users_per_worker + FILE_RESERVE,
            link_processes,
            files_per_link_process,
            source_addresses: blocks as u32,
            // Each link's processes connect to their node from 127.0.0.1.
            connections_per_pair: per_pair.iter().copied().max().unwrap_or(0).max(if proxied {
                users_per_node
            } else {
                0
            }),
            total_files,
        })
    }

    /// One line: what the run needs.
    pub fn describe(&self) -> String {
        let links = if self.link_processes == 0 {
            String::new()
        } else {
            format!(
                ", each client link {} process(es) of ≤ {} files",
                self.link_processes, self.files_per_link_process
            )
        };
        format!(
            "{} users: {} node(s) of ≤ {} users ({} files), {} worker(s) of ≤ {} files{links}, \
             source addresses 127.0.0.1–{}, ≤ {} connections per (source, destination) pair, \
             {} files in all",
            self.users,
            self.nodes,
            self.users_per_node,
            self.files_per_node,
            self.workers,
            self.files_per_worker,
            self.source_addresses,
            self.connections_per_pair,
            self.total_files
        )
    }

    /// Refuse what this machine cannot hold, saying what the run needs and what would fit.
    pub fn check(&self, limits: Limits) -> anyhow::Result<()> {
        let files = limits.files_per_process;
        let room = files.saturating_sub(FILE_RESERVE).max(1);
        let mut problems = Vec::new();
        if self.files_per_node > files {
            problems.push(format!(
                "a node would hold {} files (its users' connections and {FILE_RESERVE} more) \
                 but a process may hold {files}: use at least {} nodes (cluster.nodes or --nodes)",
                self.files_per_node,
                (self.users as u64).div_ceil(room * 95 / 100)
            ));
        }
        if self.files_per_worker > files
            || self.files_per_worker - FILE_RESERVE > MAX_USERS_PER_WORKER as u64
        {
            problems.push(format!(
                "a worker would hold {} users ({} files; at most {MAX_USERS_PER_WORKER} users and \
                 {files} files each): use at least {} workers (--workers, or leave it out)",
                self.files_per_worker - FILE_RESERVE,
                self.files_per_worker,
                (self.users as u64).div_ceil((MAX_USERS_PER_WORKER as u64).min(room))
            ));
        }
        if self.files_per_link_process > files {
            problems.push(format!(
                "a client-link process would hold {} files (two per connection) but a process \
                 may hold {files}: use at least {} processes per link (--client-link-processes, \
                 or leave it out)",
                self.files_per_link_process,
                (2 * self.users_per_node).div_ceil(room)
            ));
        }
        if self.connections_per_pair > limits.ports {
            problems.push(format!(
                "{} connections would share one (source, destination) pair but there are {} \
                 ephemeral ports (net.ipv4.ip_local_port_range): use more nodes",
                self.connections_per_pair, limits.ports
            ));
        }
        if self.total_files > limits.system_files {
            problems.push(format!(
                "the run would open {} files but the system has {} left (fs.file-max)",
                self.total_files, limits.system_files
            ));
        }
        if self.source_addresses > 250 {
            problems.push(format!(
                "{} source addresses are needed but loadgen uses at most 250 (127.0.0.1–250)",
                self.source_addresses
            ));
        }
        if problems.is_empty() {
            return Ok(());
        }
        bail!(
            "this machine cannot hold the run: {}. Computed need: {}. This machine: {} files \
             per process (RLIMIT_NOFILE), {} ephemeral ports per (source, destination) pair, \
             {} files left in the system",
            problems.join("; "),
            self.describe(),
            files,
            limits.ports,
            limits.system_files
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MACHINE: Limits = Limits {
        files_per_process: 20_000,
        ports: 28_232,
        system_files: 2_400_000,
    };

    fn scenario(users: u32, nodes: u32) -> Scenario {
        Scenario::parse(
            "c",
            &format!(
                "[run]\nname = \"c\"\nduration = \"5s\"\n[cluster]\nphase = \"pubsub\"\n\
                 nodes = {nodes}\n[population]\nusers = {users}\n"
            ),
        )
        .unwrap()
    }

    #[test]
    fn a_hundred_thousand_users_on_seven_nodes_fit_with_spread_links() {
        let need = Need::of(
            &scenario(100_000, 7),
            None,
            LinkMode::Embedded(None),
            MACHINE,
        )
        .unwrap();
        need.check(MACHINE).unwrap();
        assert_eq!(need.workers, 7, "{need:?}");
        assert!((14_000..15_000).contains(&need.users_per_node), "{need:?}");
        assert_eq!(need.link_processes, 2, "{need:?}");
        assert!(need.files_per_link_process < 20_000, "{need:?}");
        assert_eq!(need.source_addresses, 5, "{need:?}");
        assert!(need.connections_per_pair < MACHINE.ports, "{need:?}");
        // Small runs keep their links in the harness process.
        let small = Need::of(&scenario(2_000, 1), None, LinkMode::Embedded(None), MACHINE).unwrap();
        assert_eq!((small.link_processes, small.workers), (0, 1));
        let forced = Need::of(
            &scenario(2_000, 1),
            None,
            LinkMode::Embedded(Some(3)),
            MACHINE,
        )
        .unwrap();
        assert_eq!(forced.link_processes, 3);
    }

    #[test]
    fn what_does_not_fit_is_refused_with_the_computed_need() {
        // 100k users on one node: the node cannot hold their files.
        let need = Need::of(
            &scenario(100_000, 1),
            None,
            LinkMode::Embedded(None),
            MACHINE,
        )
        .unwrap();
        let e = need.check(MACHINE).unwrap_err().to_string();
        assert!(
            e.contains("a node would hold 100400 files")
                && e.contains("use at least 6 nodes")
                && e.contains("Computed need: 100000 users: 1 node(s)")
                && e.contains("20000 files per process"),
            "{e}"
        );
        // Too few workers, given by hand.
        let need = Need::of(
            &scenario(40_000, 4),
            Some(2),
            LinkMode::Embedded(None),
            MACHINE,
        )
        .unwrap();
        let e = need.check(MACHINE).unwrap_err().to_string();
        assert!(e.contains("use at least 3 workers"), "{e}");
        // A link forced onto one process (12.5k users per node: 25k files).
        let need = Need::of(
            &scenario(50_000, 4),
            None,
            LinkMode::Embedded(Some(1)),
            MACHINE,
        )
        .unwrap();
        let e = need.check(MACHINE).unwrap_err().to_string();
        assert!(e.contains("use at least 2 processes per link"), "{e}");
        // Few ports.
        let tight = Limits {
            ports: 5_000,
            ..MACHINE
        };
        let need = Need::of(&scenario(40_000, 4), None, LinkMode::Embedded(None), tight).unwrap();
        let e = need.check(tight).unwrap_err().to_string();
        assert!(e.contains("ephemeral ports"), "{e}");
    }
}
