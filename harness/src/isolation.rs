//! `flowline run --isolation netns`: the run's hosts, each in a network namespace of its
//! own on a bridge the run creates ([`flowline_chaos::Network`]), and the harness's ways
//! in, since the hosts have no route out.
//!
//! ```text
//!            run's bridge (10.98.0.0/24, exists only inside the run's namespaces)
//!   ┌──────────┬────────┬────────┬──────────┬───────┬─────────┬─────────┐
//!  _harness   node1    node2   postgres    redis  worker1   worker2
//!   ▲ listeners the harness binds in there (coordinator): workers reach the harness
//!   └─ forwards: 127.0.0.1:<port> ─▶ a host (admin API, metrics, the services' admin)
//!   relays: an external Postgres/Redis given by URL appears as host `postgres`/`redis`
//! ```
//!
//! - `_harness` is the harness's own port into the network: sockets the harness creates
//!   inside it (a forward's outgoing connections, a listener for the workers) belong to
//!   it. Names starting with `_` are plumbing: no fault targets them or counts them as a
//!   peer (see `flowline_chaos::kernel`).
//! - Every name carries the harness's pid and the run id; the namespaces (and with them
//!   the veths, bridge, qdiscs and nft tables) are removed at teardown, on drop (panic),
//!   and by the next netns run when this one was killed with SIGKILL.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use flowline_chaos::kernel::forward::Forward;
use flowline_chaos::{Host, Network};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::needs::Needs;
use crate::topology::Topology;

/// The harness's own host on the run's bridge.
pub const HARNESS_HOST: &str = "_harness";

/// The hosts of a run: the harness's port, its nodes, the services its phase needs, its
/// workers (by name: `workers::name`).
pub fn host_names(
    topology: &Topology,
    needs: Needs,
    workers: impl IntoIterator<Item = String>,
) -> Vec<String> {
    let mut hosts = vec![HARNESS_HOST.to_string()];
    hosts.extend(topology.nodes.iter().map(|n| n.id.clone()));
    if needs.postgres {
        hosts.push("postgres".into());
    }
    if needs.redis {
        hosts.push("redis".into());
    }
    hosts.extend(workers);
    hosts
}

/// Why this process cannot isolate a run, if it cannot (no root / CAP_NET_ADMIN).
pub fn check_privileges() -> anyhow::Result<()> {
    flowline_chaos::kernel::network::check_privileges()
        .map_err(|e| anyhow::anyhow!("--isolation netns: {e}"))
}

/// A run's network and what the harness opened into it.
pub struct Isolated {
    network: Arc<Network>,
    forwards: std::sync::Mutex<Vec<Forward>>,
    stop: CancellationToken,
}

impl std::fmt::Debug for Isolated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Isolated")
            .field("run", &self.network.run_id())
            .finish_non_exhaustive()
    }
}

impl Isolated {
    /// Create the network of run `run_id` with these hosts; leftovers of dead runs are
    /// removed first, and said so on stderr.
    pub async fn create(run_id: &str, hosts: &[String]) -> anyhow::Result<Self> {
        check_privileges()?;
        let run_id = run_id.to_string();
        let hosts = hosts.to_vec();
        let network = tokio::task::spawn_blocking(move || {
            let names: Vec<&str> = hosts.iter().map(String::as_str).collect();
            Network::create(&run_id, &names)
        })
        .await
        .context("creating the run's network panicked")?
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("cannot create the run's network namespaces")?;
        let left = network.leftovers_removed();
        if !left.is_empty() {
            eprintln!(
                "flowline: removed {} network namespace(s) left by dead runs: {}",
                left.len(),
                left.join(", ")
            );
        }
        let names: Vec<&str> = network.hosts().iter().map(|h| h.name()).collect();
        eprintln!(
            "flowline: network namespaces {}-<host> for {} (bridge 10.98.0.0/24, no route out)",
            network
                .hosts()
                .first()
                .map(|h| h
                    .netns()
                    .trim_end_matches(HARNESS_HOST)
                    .trim_end_matches('-'))
                .unwrap_or_default(),
            names.join(", ")
        );
        Ok(Isolated {
            network: Arc::new(network),
            forwards: std::sync::Mutex::new(Vec::new()),
            stop: CancellationToken::new(),
        })
    }

    /// The run's network (for the fault schedule).
    pub fn network(&self) -> Arc<Network> {
        self.network.clone()
    }

    /// The host named `name`.
    pub fn host(&self, name: &str) -> anyhow::Result<&Host> {
        self.network
            .host(name)
            .with_context(|| format!("the run's network has no host {name}"))
    }

    /// `ip netns` name of host `name`.
    pub fn netns(&self, name: &str) -> anyhow::Result<String> {
        Ok(self.host(name)?.netns().to_string())
    }

    /// A loopback port of the harness that reaches `target` on the bridge (opened from
    /// `_harness`, so faults between hosts never cut the harness's own access).
    pub async fn forward(&self, target: SocketAddr) -> anyhow::Result<SocketAddr> {
        let host = self.host(HARNESS_HOST)?.clone();
        let f = Forward::start(host, target)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("cannot forward a loopback port to {target}"))?;
        let local = f.local_addr();
        self.forwards
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(f);
        Ok(local)
    }

    /// A listener of the harness on the bridge (`_harness`'s address), which every host
    /// of the run can reach: how workers reach a coordinator on the harness.
    pub async fn listen(&self, port: u16) -> anyhow::Result<TcpListener> {
        bind_in(self.host(HARNESS_HOST)?.clone(), port).await
    }

    /// Make `outside` (an external server given by URL, `host:port`) appear on the bridge
    /// as host `name` at `port`: connections to it are carried to `outside` from the
    /// harness's namespace. Faults on host `name` act on the traffic between the nodes and
    /// the relay. Returns the address the hosts use.
    pub async fn relay(&self, name: &str, port: u16, outside: &str) -> anyhow::Result<SocketAddr> {
        let listener = bind_in(self.host(name)?.clone(), port).await?;
        let addr = listener.local_addr()?;
        let outside = outside.to_string();
        let stop = self.stop.clone();
        tokio::spawn(async move {
            loop {
                let (mut inbound, _) = tokio::select! {
                    () = stop.cancelled() => return,
                    r = listener.accept() => match r {
                        Ok(c) => c,
                        Err(_) => continue,
                    },
                };
                let outside = outside.clone();
                tokio::spawn(async move {
                    match TcpStream::connect(&outside).await {
                        Ok(mut out) => {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                        }
                        Err(e) => tracing::warn!("relay to {outside} failed: {e}"),
                    }
                });
            }
        });
        Ok(addr)
    }

    /// Stop the forwards and relays and delete every namespace of the run. Idempotent;
    /// processes still inside keep their namespace alive until they exit.
    pub fn remove(&self) {
        self.stop.cancel();
        self.forwards
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        if let Err(e) = self.network.remove() {
            eprintln!("flowline: warning: removing the run's network namespaces: {e}");
        }
    }
}

impl Drop for Isolated {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A listener bound inside `host`'s namespace, on its bridge address.
async fn bind_in(host: Host, port: u16) -> anyhow::Result<TcpListener> {
    let addr = SocketAddr::from((host.addr(), port));
    let name = host.name().to_string();
    let std = tokio::task::spawn_blocking(move || host.enter(|| std::net::TcpListener::bind(addr)))
        .await
        .context("binding inside a namespace panicked")?
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .with_context(|| format!("cannot listen on {addr} in host {name}"))?;
    std.set_nonblocking(true)?;
    Ok(TcpListener::from_std(std)?)
}
