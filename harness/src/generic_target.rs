//! Starting the system under test when it is a generic WebSocket service
//! (`[target] kind = "websocket"`): a `client-target<i>` link in front of each `ws://`
//! URL, nothing else started, nothing provisioned.

use anyhow::Context;
use flowline_chaos::events::EventLog;
use flowline_loadgen::scenario::Scenario;
use serde_json::json;

use crate::links::{LinkSet, host_port, via};
use crate::topology::{TargetLink, Topology};

/// A generic WebSocket service (`[target] kind = "websocket"`): no nodes, no services,
/// nothing provisioned. Each `ws://` URL gets a chaos link `client-target<i>` and the
/// workers connect through it (path and query kept), carried by `link_processes`
/// processes when the users need more than one; a `wss://` URL is used directly, and so
/// is every URL when `links` is `None` (`--direct-clients`).
/// Returns the synthetic plan and the workers' URLs.
pub async fn generic_target(
    scenario: &Scenario,
    urls: &[String],
    links: Option<&LinkSet>,
    events: &EventLog,
    link_processes: usize,
) -> anyhow::Result<(flowline_loadgen::plan::Plan, Vec<String>)> {
    let mut targets = Vec::with_capacity(urls.len());
    let Some(links) = links else {
        eprintln!("flowline: --direct-clients: the workers connect straight to the target URLs");
        targets.extend(urls.iter().cloned());
        return Ok((synthetic_plan(scenario), targets));
    };
    for TargetLink { url, link } in &Topology::of(scenario).target {
        let Some(name) = link else {
            eprintln!(
                "flowline: target {url} is used directly (TLS cannot pass a TCP proxy): no link \
                 fault applies to it"
            );
            targets.push(url.clone());
            continue;
        };
        let listen = links
            .create_client(name, &host_port(url)?, link_processes)
            .await
            .with_context(|| {
                let hint = match links {
                    LinkSet::Local(_) => {
                        "; the embedded chaos proxy forwards to loopback addresses only: for a \
                     service on another host put the links on a Toxiproxy that can reach it \
                     (--toxiproxy-url), or run without proxies (`flowline loadgen --scenario`)"
                    }
                    LinkSet::Remote { .. } => "",
                };
                format!("cannot put the chaos link {name} in front of {url}{hint}")
            })?;
        let proxied = via(url, &listen)?;
        eprintln!("flowline: {name} {listen} → {url} (generic WebSocket service)");
        // What the run put in front of the service, as node starts are for the cluster.
        let _ = events.record(
            "start",
            "link",
            vec![name.clone()],
            name,
            json!({"url": url, "listen": listen, "workers_use": proxied}),
        );
        targets.push(proxied);
    }
    Ok((synthetic_plan(scenario), targets))
}

/// The generic target's population: users only, nothing provisioned.
fn synthetic_plan(scenario: &Scenario) -> flowline_loadgen::plan::Plan {
    let plan = flowline_loadgen::plan::Plan::synthetic(scenario);
    eprintln!(
        "flowline: generic WebSocket target: {} users, nothing to provision",
        plan.users.len()
    );
    plan
}
