//! The scenario's fault schedule, wired to this run: link faults go to the run's
//! proxies (the in-process chaos controller, or a remote Toxiproxy with
//! `--toxiproxy-url`), process faults to the node children of the
//! [`Supervisor`] (kill, restart on the same address, pause, resume), and with
//! `--isolation netns` kernel faults to the run's network (hosts `node<i>`, `postgres`,
//! `redis`, `worker<i>`: loss, partition, block_new, bandwidth, unplug; see
//! `flowline_chaos::kernel`). The schedule heals every fault when it is stopped or
//! dropped, and the namespaces go with the run's network whatever ends the run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use flowline_chaos::events::EventLog;
use flowline_chaos::fault::FaultSpec;
use flowline_chaos::process::ProcessTarget;
use flowline_chaos::schedule::{Links, Schedule, ScheduleHandle, Targets};
use flowline_chaos::{FaultMetrics, Network};
use flowline_protocol::announce::Announce;
use futures_util::future::BoxFuture;
use serde_json::json;

use crate::cluster::Node;
use crate::supervisor::{Supervisor, wait_announce};

/// How long a restarted node has to announce itself.
const RESTART_TIMEOUT: Duration = Duration::from_secs(30);

/// One node child as a process-fault target.
struct NodeProcess {
    node_id: String,
    /// Where it listened: a restart listens there again, so the client proxy still points
    /// at it.
    addr: String,
    sup: Supervisor,
    events: EventLog,
}

impl ProcessTarget for NodeProcess {
    fn node_id(&self) -> &str {
        &self.node_id
    }

    fn pid(&self) -> Option<u32> {
        self.sup.pid(&self.node_id)
    }

    fn restart(&self) -> BoxFuture<'_, flowline_chaos::Result<()>> {
        Box::pin(async move {
            let fail = |reason: String| flowline_chaos::Error::Restart {
                node: self.node_id.clone(),
                reason,
            };
            let mut args = self
                .sup
                .spec(&self.node_id)
                .ok_or_else(|| fail("unknown node".into()))?
                .args;
            if let Some(i) = args.iter().position(|a| a == "--listen")
                && let Some(v) = args.get_mut(i + 1)
            {
                v.clone_from(&self.addr);
            }
            // The killed process must be reaped before its name can be reused.
            self.sup.wait(&self.node_id, Duration::from_secs(5)).await;
            let mut spawned = self
                .sup
                .respawn(&self.node_id, Some(args))
                .map_err(|e| fail(format!("{e:#}")))?;
            let log = self.sup.log_path(&self.node_id);
            let announce = wait_announce(&mut spawned, RESTART_TIMEOUT, &log)
                .await
                .map_err(|e| fail(format!("{e:#}")))?;
            tokio::spawn(async move { while spawned.lines.recv().await.is_some() {} });
            if let Announce::Listening { pid, addr, .. } = announce {
                let _ = self.events.node_event(
                    "restart",
                    &self.node_id,
                    json!({"pid": pid, "addr": addr}),
                );
            }
            Ok(())
        })
    }
}

/// The process targets of a run's nodes.
pub struct NodeTargets {
    nodes: Vec<Arc<dyn ProcessTarget>>,
}

impl NodeTargets {
    /// Targets for the nodes the supervisor started (external nodes are not faultable).
    pub fn new(sup: Supervisor, events: EventLog, nodes: &[Node]) -> Self {
        let nodes = nodes
            .iter()
            .filter(|n| sup.spec(&n.id).is_some())
            .map(|n| {
                Arc::new(NodeProcess {
                    node_id: n.id.clone(),
                    addr: n.addr.clone(),
                    sup: sup.clone(),
                    events: events.clone(),
                }) as Arc<dyn ProcessTarget>
            })
            .collect();
        Self { nodes }
    }
}

/// A running fault schedule; [`FaultRunner::stop`] heals everything.
pub struct FaultRunner {
    handle: Arc<ScheduleHandle>,
}

impl FaultRunner {
    /// Validate the faults against this run's links, nodes and hosts and start firing them,
    /// each at `zero + at` (`zero` = start of measurement).
    pub fn start(
        faults: &[FaultSpec],
        links: Links,
        metrics: FaultMetrics,
        events: EventLog,
        nodes: Arc<NodeTargets>,
        network: Option<Arc<Network>>,
        zero: Instant,
    ) -> anyhow::Result<Self> {
        // Faults the local controller cannot see in its proxies (process faults, links on
        // a remote Toxiproxy) are reported to `metrics`, the chaos API's /metrics.
        let mut targets = Targets::new(links).with_metrics(metrics);
        for n in &nodes.nodes {
            targets = targets.with_node(n.clone());
        }
        if let Some(net) = network {
            targets = targets.with_network(net);
        }
        let schedule = Schedule::new(faults.to_vec(), targets, events)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context("bad [[faults]] in the scenario")?;
        let handle = Arc::new(schedule.run(tokio::time::Instant::from_std(zero)));
        Ok(Self { handle })
    }

    /// The running schedule (the run console injects and heals faults by hand through it).
    pub fn handle(&self) -> Arc<ScheduleHandle> {
        self.handle.clone()
    }

    /// Faults that could not be injected.
    pub fn errors(&self) -> Vec<String> {
        self.handle.errors()
    }

    /// Stop firing and heal every active fault.
    pub async fn stop(self) {
        for e in self.handle.errors() {
            tracing::warn!("fault not injected: {e}");
        }
        // Healing cancels the schedule's tasks; the last holder of the handle drops them.
        if let Err(e) = self.handle.heal_all().await {
            tracing::warn!("healing faults: {e}");
        }
    }
}
