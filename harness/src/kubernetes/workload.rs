//! What the workers of a Kubernetes run load and where they connect: the scenario's
//! system under test as the pods see it (a generic `[target]`, an external cluster by URL,
//! or the reference cluster of `deploy/kubernetes/`), and the plan they share.

use std::path::Path;

use anyhow::{Context, bail};
use flowline_loadgen::plan::Plan;
use flowline_loadgen::scenario::{External, Scenario};

/// The headless Service of `deploy/kubernetes/`'s node StatefulSet.
pub const REFERENCE_NODE_SERVICE: &str = "flowline-node";
/// The port the reference nodes listen on.
pub const REFERENCE_NODE_PORT: u16 = 8080;

/// The HTTP base URLs of the reference cluster's `nodes` nodes in `namespace` (the
/// StatefulSet's pods by their stable DNS names).
pub fn reference_urls(namespace: &str, nodes: u32) -> Vec<String> {
    (0..nodes)
        .map(|i| {
            format!(
                "http://{REFERENCE_NODE_SERVICE}-{i}.{REFERENCE_NODE_SERVICE}.{namespace}.svc:{REFERENCE_NODE_PORT}"
            )
        })
        .collect()
}

/// Point the scenario at nodes given by URL (`--nodes-url`, `--reference-cluster`): they
/// become its external cluster, provisioned with `admin_secret`.
pub fn use_nodes(
    s: &mut Scenario,
    http: &[String],
    admin_secret: Option<&str>,
) -> anyhow::Result<()> {
    if s.target.is_some() {
        bail!("--nodes-url / --reference-cluster do not apply to a scenario with [target]");
    }
    for u in http {
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            bail!("--nodes-url {u:?}: expected an http:// or https:// base URL");
        }
    }
    let admin_secret = admin_secret
        .map(str::to_string)
        .or_else(|| s.cluster.external.as_ref()?.admin_secret.clone());
    s.cluster.external = Some(External {
        http: http.to_vec(),
        ws: http.iter().map(|h| ws_from_http(h)).collect(),
        admin_secret,
    });
    Ok(())
}

/// The WebSocket URLs the workers connect to; an error when the scenario's system under
/// test would be started by the harness (the launcher starts workers only).
pub fn targets(s: &Scenario) -> anyhow::Result<Vec<String>> {
    if let Some(t) = &s.target {
        return Ok(t.urls.clone());
    }
    if let Some(ext) = &s.cluster.external {
        return Ok(ext.ws.clone());
    }
    bail!(
        "the Kubernetes launcher starts workers only: give the nodes they load with \
         --nodes-url URL[,URL] (or [cluster] http in the scenario), --reference-cluster for \
         the cluster of deploy/kubernetes/, or a scenario with [target]"
    )
}

/// The plan the manifests carry without provisioning anything: `--plan FILE` (e.g. from
/// `flowline loadgen --provision-only`), or the synthetic plan of a generic target.
pub fn offline_plan(s: &Scenario, plan: Option<&Path>) -> anyhow::Result<Plan> {
    if let Some(p) = plan {
        let plan = Plan::read(p).map_err(|e| anyhow::anyhow!("{e}"))?;
        if plan.scenario != s.name {
            bail!(
                "{} is the plan of scenario {:?}, not {:?}",
                p.display(),
                plan.scenario,
                s.name
            );
        }
        return Ok(plan);
    }
    if s.target.is_some() {
        return Ok(Plan::synthetic(s));
    }
    bail!(
        "the workers of the reference cluster need a provisioned plan: give --plan FILE \
         (`flowline loadgen --scenario S --target http://NODE --admin-secret X \
         --provision-only --out DIR` writes DIR/plan.json)"
    )
}

/// The plan as the ConfigMap carries it.
pub fn plan_json(plan: &Plan) -> anyhow::Result<String> {
    serde_json::to_string(plan).context("cannot serialize the plan")
}

fn ws_from_http(http: &str) -> String {
    let base = http.trim_end_matches('/');
    let ws = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_string()
    };
    format!("{ws}/ws")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_urls_name_the_statefulset_pods() {
        assert_eq!(
            reference_urls("load", 2),
            [
                "http://flowline-node-0.flowline-node.load.svc:8080",
                "http://flowline-node-1.flowline-node.load.svc:8080"
            ]
        );
        assert_eq!(ws_from_http("https://a:1/"), "wss://a:1/ws");
    }
}
