//! Starting the system under test when it is the reference cluster: Postgres/Redis
//! ([`Services`]), one `flowline server` per node behind its `node<i>-postgres` /
//! `node<i>-redis` links (their Postgres pools sized to the server's connection limit,
//! `pg_budget`), a `client-node<i>` link in front of each (or an external
//! cluster's nodes behind their client links), then the population provisioned through
//! node1's admin API.
//!
//! With `--isolation netns` each node runs in its host's namespace, listens on its
//! bridge address, and reaches Postgres/Redis at theirs: no link proxies (the hosts talk
//! over the bridge, where kernel faults act). The harness reaches a node's admin API and
//! metrics through a loopback forward; workers use the node's own address.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flowline_chaos::events::EventLog;
use flowline_loadgen::scenario::Scenario;
use flowline_protocol::announce::Announce;
use serde_json::json;

use crate::isolation::Isolated;
use crate::links::{LinkSet, host_port, via};
use crate::metrics_targets::MetricsTargets;
use crate::needs::Needs;
use crate::pg_budget;
use crate::services::Services;
use crate::supervisor::{Spec, Supervisor, wait_announce};
use crate::topology::Topology;

/// How long a node has to announce itself.
const NODE_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A node the harness started.
#[derive(Debug, Clone)]
pub struct Node {
    /// `node<i>`.
    pub id: String,
    /// Where it listens (direct, not through a proxy).
    pub addr: String,
    /// Direct HTTP base URL.
    pub http: String,
    /// Prometheus endpoint.
    pub metrics: String,
    /// WebSocket URL the workers use: through the node's `client-node<i>` proxy, or the
    /// node's own in an isolated run (no link proxies there) or with `--direct-clients`.
    pub ws_proxied: String,
}

/// What starting the reference cluster needs from the run.
pub struct ClusterCtx<'a> {
    /// How to find Postgres/Redis.
    pub services: &'a crate::services::Options,
    /// The run folder.
    pub dir: &'a Path,
    /// Owner of the node processes.
    pub sup: &'a Supervisor,
    /// Where the links are created.
    pub links: &'a LinkSet,
    /// The run's events.jsonl.
    pub events: &'a EventLog,
    /// The run's id (cluster id, database name).
    pub run_id: &'a str,
    /// The nodes' admin secret.
    pub secret: String,
    /// The run's network, with `--isolation netns`.
    pub net: Option<&'a Isolated>,
    /// Processes carrying each client link (0: the harness process itself); see
    /// [`crate::capacity`].
    pub link_processes: usize,
    /// Workers connect straight to the nodes (`--direct-clients`): no client links.
    pub direct_clients: bool,
}

/// Put client link `name` in front of the node serving `ws` (carried by `processes`
/// data-plane processes when nonzero) and record it in events.jsonl (a direct run
/// records none); returns the WebSocket URL the workers use.
async fn client_link(
    links: &LinkSet,
    events: &EventLog,
    name: &str,
    ws: &str,
    processes: usize,
) -> anyhow::Result<String> {
    let upstream = host_port(ws)?;
    let listen = links.create_client(name, &upstream, processes).await?;
    let workers_use = via(ws, &listen)?;
    let _ = events.record(
        "start",
        "link",
        vec![name.to_string()],
        name,
        json!({"upstream": upstream, "listen": listen, "workers_use": workers_use}),
    );
    Ok(workers_use)
}

/// What the cluster start leaves for teardown, filled as it goes (a start that fails
/// half-way leaves what it had started).
#[derive(Default)]
pub struct Cluster {
    /// Postgres/Redis of the run, if it needs them.
    pub services: Option<Services>,
    /// The nodes started (or the external cluster's nodes).
    pub nodes: Vec<Node>,
}

/// Nodes (or an external cluster) behind `client-node<i>` links, the population
/// provisioned through node1's admin API; returns the plan and the workers' URLs.
pub async fn start_cluster(
    scenario: &Scenario,
    ctx: ClusterCtx<'_>,
    state: &mut Cluster,
    targets_file: &mut MetricsTargets,
) -> anyhow::Result<(flowline_loadgen::plan::Plan, Vec<String>)> {
    let ClusterCtx {
        services: services_opts,
        dir,
        sup,
        links,
        events,
        run_id,
        secret,
        net,
        link_processes,
        direct_clients,
    } = ctx;
    let phase = scenario.cluster.phase.as_str();
    // Client links: none in an isolated run (the hosts talk over its bridge) or with
    // --direct-clients.
    let proxied = net.is_none() && !direct_clients;
    if direct_clients {
        eprintln!("flowline: --direct-clients: the workers connect straight to the nodes");
    }
    let topology = Topology::of(scenario);
    let heartbeat_ms = scenario.cluster.heartbeat.map(|h| h.as_millis() as u64);
    // Nodes, or an external cluster.
    let (http_base, admin_secret) = if let Some(ext) = &scenario.cluster.external {
        for (i, (ws, node)) in ext.ws.iter().zip(&topology.nodes).enumerate() {
            let ws_proxied = if proxied {
                client_link(links, events, &node.client, ws, link_processes).await?
            } else {
                ws.clone()
            };
            state.nodes.push(Node {
                id: node.id.clone(),
                addr: host_port(ws)?,
                http: ext.http.get(i).cloned().unwrap_or_default(),
                metrics: String::new(),
                ws_proxied,
            });
        }
        let http = ext
            .http
            .first()
            .cloned()
            .context("external cluster without http URL")?;
        let secret = ext
            .admin_secret
            .clone()
            .context("external cluster without admin_secret: cannot provision users")?;
        (http, secret)
    } else {
        let needs = Needs::for_phase(phase)?;
        let services = Services::resolve(needs, services_opts, dir, run_id, sup, net).await?;
        for n in &services.notes {
            eprintln!("flowline: {n}");
        }
        let db = services.database_url.clone();
        let admin_db = services.admin_url.clone();
        let redis = services.redis_url.clone();
        state.services = Some(services);
        // Pools that fit the server's connection limit (the defaults when they do).
        let pools = match &admin_db {
            Some(admin_db) => {
                let nodes = topology
                    .nodes
                    .iter()
                    .filter(|n| n.postgres.is_some())
                    .count();
                let nodes = u32::try_from(nodes).unwrap_or(u32::MAX);
                let free = pg_budget::free_connections(admin_db).await?;
                let pools = pg_budget::plan(free, nodes)?;
                if let Some(note) = pg_budget::note(free, nodes, pools) {
                    eprintln!("flowline: {note}");
                }
                pools
            }
            None => pg_budget::Pools::DEFAULT,
        };
        for node in &topology.nodes {
            let node_id = node.id.clone();
            let listen = match net {
                Some(net) => format!("{}:0", net.host(&node_id)?.addr()),
                None => "127.0.0.1:0".into(),
            };
            let mut args: Vec<String> = vec![
                "server".into(),
                "--phase".into(),
                phase.into(),
                "--listen".into(),
                listen,
                "--node-id".into(),
                node_id.clone(),
                "--admin-secret".into(),
                secret.clone(),
                // Provisioning mints users in bulk; sign-ups in scenarios stay cheap.
                "--argon2-memory-kib".into(),
                "64".into(),
                "--argon2-iterations".into(),
                "1".into(),
            ];
            if let Some(ms) = heartbeat_ms {
                args.extend(["--heartbeat-ms".into(), ms.to_string()]);
            }
            if let (Some(db), Some(name)) = (&db, &node.postgres) {
                let url = match net {
                    Some(_) => db.clone(),
                    None => via(db, &links.create(name, &host_port(db)?).await?)?,
                };
                args.extend(["--database-url".into(), url]);
                if pools != pg_budget::Pools::DEFAULT {
                    args.extend(pools.args());
                }
            }
            if let (Some(redis), Some(name)) = (&redis, &node.redis) {
                let url = match net {
                    Some(_) => redis.clone(),
                    None => via(redis, &links.create(name, &host_port(redis)?).await?)?,
                };
                args.extend([
                    "--redis-url".into(),
                    url,
                    "--cluster-id".into(),
                    run_id.to_string(),
                ]);
            }
            let mut spec = Spec::flowline(&node_id)?
                .args(args)
                .env("FLOWLINE_LOG", "warn");
            if let Some(net) = net {
                spec = spec.in_netns(net.netns(&node_id)?);
            }
            let mut spawned = sup.spawn(spec)?;
            let announce =
                wait_announce(&mut spawned, NODE_READY_TIMEOUT, &sup.log_path(&node_id)).await?;
            let Announce::Listening {
                addr,
                mut http,
                ws,
                mut metrics,
                pid,
                heartbeat_ms: announced_heartbeat,
                ..
            } = announce
            else {
                bail!("{node_id} announced something other than `listening`");
            };
            if let Some(asked) = heartbeat_ms
                && announced_heartbeat != Some(asked)
            {
                bail!(
                    "{node_id} was asked for a {asked} ms heartbeat but announced {}",
                    announced_heartbeat.map_or("none".to_string(), |ms| format!("{ms} ms"))
                );
            }
            if let Some(net) = net {
                // The harness is outside the network: admin API and metrics via a forward.
                let fwd = net
                    .forward(
                        addr.parse().with_context(|| {
                            format!("{node_id} announced a bad address {addr:?}")
                        })?,
                    )
                    .await?;
                http = via(&http, &fwd.to_string())?
                    .trim_end_matches('/')
                    .to_string();
                metrics = via(&metrics, &fwd.to_string())?;
            }
            // Keep draining its stdout so it never blocks.
            tokio::spawn(async move { while spawned.lines.recv().await.is_some() {} });
            let ws_proxied = if proxied {
                client_link(links, events, &node.client, &ws, link_processes).await?
            } else {
                ws.clone()
            };
            // The heartbeat the node itself announced (its default when the scenario
            // sets none).
            let mut start = json!({"pid": pid, "addr": addr});
            if let Some(ms) = announced_heartbeat {
                start["heartbeat_ms"] = json!(ms);
            }
            let _ = events.node_event("start", &node_id, start);
            eprintln!("flowline: {node_id} pid {pid} on {addr}; metrics {metrics}");
            targets_file.add(&node_id, "flowline-node", &metrics);
            state.nodes.push(Node {
                id: node_id,
                addr,
                http,
                metrics,
                ws_proxied,
            });
        }
        let http = state
            .nodes
            .first()
            .map(|n| n.http.clone())
            .context("no node")?;
        (http, secret)
    };
    if scenario.cluster.external.is_some() {
        links.check_faults_on_remote(scenario).await?;
    }

    // Provision the population.
    let t = Instant::now();
    let plan = flowline_loadgen::plan::provision(scenario, &http_base, &admin_secret)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("provisioning the scenario's users through the admin API failed")?;
    eprintln!(
        "flowline: provisioned {} users, {} channels in {:.1}s",
        plan.users.len(),
        plan.channels.len(),
        t.elapsed().as_secs_f64()
    );
    let targets = state.nodes.iter().map(|n| n.ws_proxied.clone()).collect();
    Ok((plan, targets))
}
