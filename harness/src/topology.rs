//! A run's topology: the names of the nodes and chaos links a scenario will have, built
//! once here (the cluster start and the generic target create exactly these), and the
//! checks that every fault hits one of them.
//!
//! ```text
//! reference cluster:  client-node<i> ─▶ node<i> ─▶ node<i>-postgres / node<i>-redis
//! external cluster:   client-node<i> ─▶ (someone else's node)
//! generic target:     client-target<i> ─▶ target.urls[i-1]   (ws:// only)
//! isolated (netns):   hosts worker<i>, node<i>, postgres, redis on one bridge; no links
//! ```

use anyhow::bail;
use flowline_chaos::fault::FaultKind;
use flowline_loadgen::scenario::{Isolation, Scenario};

use crate::needs::Needs;

/// Name of node `i` (1-based).
fn node_name(i: usize) -> String {
    format!("node{i}")
}

/// Name of the chaos link between the workers and node `i` (1-based).
fn client_link_name(i: usize) -> String {
    format!("client-node{i}")
}

/// Name of the chaos link in front of a generic target's `i`-th URL (1-based).
pub fn generic_link_name(i: usize) -> String {
    format!("client-target{i}")
}

/// One node of the run and its links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLinks {
    /// `node<i>`.
    pub id: String,
    /// `client-node<i>`: workers to the node.
    pub client: String,
    /// `node<i>-postgres`, when the run starts the node and its phase needs Postgres.
    pub postgres: Option<String>,
    /// `node<i>-redis`, when the run starts the node and its phase needs Redis.
    pub redis: Option<String>,
}

/// One URL of a generic WebSocket target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetLink {
    /// The URL as the scenario gives it.
    pub url: String,
    /// `client-target<i>` (i = its position from 1), or none for a URL used directly
    /// (see [`generic_url_proxied`]).
    pub link: Option<String>,
}

/// The nodes and links of one run, before anything is started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// The reference cluster's (or an external cluster's) nodes; none for a generic target.
    pub nodes: Vec<NodeLinks>,
    /// The nodes are someone else's: only their client links are the run's.
    pub external: bool,
    /// A generic WebSocket target's URLs; empty for a cluster.
    pub target: Vec<TargetLink>,
}

impl Topology {
    /// The topology `flowline run` gives scenario `s`.
    pub fn of(s: &Scenario) -> Self {
        if let Some(t) = &s.target {
            return Topology {
                nodes: Vec::new(),
                external: false,
                target: target_links(&t.urls),
            };
        }
        let needs = Needs::for_phase(s.cluster.phase.as_str()).unwrap_or_default();
        let external = s.cluster.external.as_ref().map(|e| e.ws.len());
        let count = external.unwrap_or(s.cluster.nodes as usize);
        let nodes = (1..=count)
            .map(|i| {
                let id = node_name(i);
                let started = external.is_none();
                NodeLinks {
                    client: client_link_name(i),
                    postgres: (started && needs.postgres).then(|| format!("{id}-postgres")),
                    redis: (started && needs.redis).then(|| format!("{id}-redis")),
                    id,
                }
            })
            .collect();
        Topology {
            nodes,
            external: external.is_some(),
            target: Vec::new(),
        }
    }

    /// Every name a fault may target: links and (started) nodes, in order.
    pub fn names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for n in &self.nodes {
            names.push(n.client.clone());
            if !self.external {
                names.push(n.id.clone());
                names.extend(n.postgres.iter().cloned());
                names.extend(n.redis.iter().cloned());
            }
        }
        names.extend(self.target.iter().filter_map(|t| t.link.clone()));
        names
    }
}

/// The links of a generic target with these URLs.
fn target_links(urls: &[String]) -> Vec<TargetLink> {
    urls.iter()
        .enumerate()
        .map(|(i, url)| TargetLink {
            url: url.clone(),
            link: generic_url_proxied(url).then(|| generic_link_name(i + 1)),
        })
        .collect()
}

/// Whether the harness puts a generic target's URL behind a chaos link: plain `ws://`
/// only. A `wss://` handshake is TLS bound to the service's host name (SNI, certificate),
/// which a TCP proxy in between would break, so such URLs are used directly.
pub fn generic_url_proxied(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| u.scheme() == "ws")
}

/// Names the harness gives a scenario's links and nodes (fault targets). A generic
/// WebSocket target has one link per proxied URL (`client-target<i>`, `i` = position in
/// `target.urls` from 1) and no nodes.
pub fn target_names(s: &Scenario) -> Vec<String> {
    Topology::of(s).names()
}

/// Whether `name` matches a fault target glob (`*` matches any run of characters).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => name.strip_prefix(head).is_some_and(|rest| {
            (0..=rest.len()).any(|i| rest.is_char_boundary(i) && glob_match(tail, &rest[i..]))
        }),
    }
}

/// The hosts of an isolated run that faults may target: its nodes, the services its phase
/// needs, and its workers (as many as the users need; `--workers` may add more, checked
/// against the run's network when it starts).
pub fn host_names(s: &Scenario) -> Vec<String> {
    let needs = Needs::for_phase(s.cluster.phase.as_str()).unwrap_or_default();
    let workers = (s.population.users as usize)
        .div_ceil(flowline_loadgen::plan::MAX_USERS_PER_WORKER)
        .max(1);
    let mut hosts: Vec<String> = (1..=s.cluster.nodes as usize).map(node_name).collect();
    if needs.postgres {
        hosts.push("postgres".into());
    }
    if needs.redis {
        hosts.push("redis".into());
    }
    hosts.extend((1..=workers).map(|i| format!("worker{i}")));
    hosts
}

/// The faults of an isolated run (`cluster.isolation = "netns"`): kernel faults and
/// `bandwidth` on hosts, process faults on nodes; no link faults, since the hosts talk
/// over the run's bridge rather than through proxies.
fn check_isolated_faults(s: &Scenario) -> anyhow::Result<()> {
    let hosts = host_names(s);
    for (i, f) in s.faults.iter().enumerate() {
        let on_host = f.kind.is_kernel() || f.kind == FaultKind::Bandwidth;
        if !on_host && !f.kind.is_process() {
            bail!(
                "fault #{} ({}) is a link fault (`{}`, made by the chaos proxy), and an isolated \
                 run (isolation = \"netns\") has no link proxies: its hosts talk over the run's \
                 bridge. Between hosts the kernel makes loss, partition, block_new, bandwidth \
                 and unplug; or run without isolation",
                i + 1,
                f.display_label(),
                f.kind.as_str()
            );
        }
        let names: Vec<&String> = if on_host {
            hosts.iter().collect()
        } else {
            hosts.iter().filter(|h| h.starts_with("node")).collect()
        };
        if !names.iter().any(|n| glob_match(&f.target, n)) {
            bail!(
                "fault #{} ({}) targets {:?}, which matches no {} of this isolated run (phase {}: {})",
                i + 1,
                f.display_label(),
                f.target,
                if on_host { "host" } else { "node" },
                s.cluster.phase.as_str(),
                names
                    .iter()
                    .map(|n| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if let Some(peer) = &f.peer
            && !hosts.iter().any(|n| glob_match(peer, n))
        {
            bail!(
                "fault #{} ({}) has peer {peer:?}, which matches no host of this run ({})",
                i + 1,
                f.display_label(),
                hosts.join(", ")
            );
        }
    }
    Ok(())
}

/// Every fault must hit something this run will have, checked before anything starts.
pub fn check_fault_targets(s: &Scenario) -> anyhow::Result<()> {
    if s.cluster.isolation == Isolation::Netns && s.target.is_none() {
        return check_isolated_faults(s);
    }
    let topology = Topology::of(s);
    let names = topology.names();
    if s.target.is_some() {
        return check_generic_faults(s, &topology.target, &names);
    }
    for (i, f) in s.faults.iter().enumerate() {
        if !names.iter().any(|n| glob_match(&f.target, n)) {
            bail!(
                "fault #{} ({}) targets {:?}, which matches nothing in this run (phase {}, {} node(s): {})",
                i + 1,
                f.display_label(),
                f.target,
                s.cluster.phase.as_str(),
                s.cluster.nodes,
                names.join(", ")
            );
        }
    }
    Ok(())
}

/// The faults of a scenario with a generic WebSocket target: link faults on its
/// `client-target<i>` links only; process faults have no node to act on.
fn check_generic_faults(s: &Scenario, urls: &[TargetLink], names: &[String]) -> anyhow::Result<()> {
    for (i, f) in s.faults.iter().enumerate() {
        if f.kind.is_process() {
            bail!(
                "fault #{} ({}) is a process fault ({}), but this scenario drives a generic \
                 WebSocket service ([target] kind = \"websocket\"): the run starts no nodes \
                 to {} — only link faults on client-target<i> apply",
                i + 1,
                f.display_label(),
                f.kind.as_str(),
                f.kind.as_str()
            );
        }
        if !names.iter().any(|n| glob_match(&f.target, n)) {
            let links: Vec<String> = urls
                .iter()
                .filter_map(|t| Some(format!("{} → {}", t.link.as_ref()?, t.url)))
                .collect();
            let direct: Vec<&str> = urls
                .iter()
                .filter(|t| t.link.is_none())
                .map(|t| t.url.as_str())
                .collect();
            let mut msg = format!(
                "fault #{} ({}) targets {:?}, which matches no proxy of this run: a generic \
                 WebSocket target has one link per ws:// URL ({})",
                i + 1,
                f.display_label(),
                f.target,
                if links.is_empty() {
                    "none here".to_string()
                } else {
                    links.join(", ")
                }
            );
            if !direct.is_empty() {
                msg.push_str(&format!(
                    "; {} used directly, without a proxy (a TLS handshake cannot pass a TCP \
                     proxy), so no link fault applies to it",
                    direct.join(", ")
                ));
            }
            bail!(msg);
        }
    }
    Ok(())
}

/// What `flowline run` cannot pass on for a generic target: its workers get the URLs as
/// one comma-separated `--targets` list.
pub fn check_generic_urls(s: &Scenario) -> anyhow::Result<()> {
    for u in s.target.iter().flat_map(|t| &t.urls) {
        if u.contains(',') {
            bail!(
                "target.urls: {u:?} contains a comma, which `flowline run` cannot pass to its \
                 workers; write it percent-encoded (%2C)"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_fault_targets() {
        assert!(glob_match("client-node*", "client-node12"));
        assert!(glob_match("node*-redis", "node2-redis"));
        assert!(!glob_match("node*-redis", "node2-postgres"));
        assert!(glob_match("node2", "node2"));
        assert!(!glob_match("node2", "node22"));
    }

    /// A scenario with a generic WebSocket target on two URLs and `faults` appended.
    fn generic(faults: &str) -> Scenario {
        let text = format!(
            r#"
[run]
name = "g"
duration = "5s"

[target]
kind = "websocket"
urls = ["ws://127.0.0.1:9100/a?x=1", "ws://127.0.0.1:9101/"]
message = "hi"

[population]
users = 10
{faults}"#
        );
        Scenario::parse("g", &text).unwrap()
    }

    const FAULT: &str = "\n[[faults]]\nat = \"1s\"\nduration = \"1s\"\n";

    #[test]
    fn generic_targets_have_client_target_links_and_no_nodes() {
        let s = generic("");
        assert_eq!(target_names(&s), ["client-target1", "client-target2"]);
        let ok = generic(&format!(
            "{FAULT}kind = \"latency\"\nlatency = \"200ms\"\ntarget = \"client-*\"\n{FAULT}kind = \"down\"\ntarget = \"client-target2\"\n"
        ));
        check_fault_targets(&ok).unwrap();
        assert!(generic_url_proxied("ws://example.com/x"));
        assert!(!generic_url_proxied("wss://example.com/x"));
    }

    #[test]
    fn generic_targets_refuse_process_faults_and_faults_on_no_link() {
        for kind in [
            "kind = \"kill\"\nrestart_after = \"1s\"",
            "kind = \"pause\"",
        ] {
            let s = generic(&format!("{FAULT}{kind}\ntarget = \"node1\"\n"));
            let e = format!("{:#}", check_fault_targets(&s).unwrap_err());
            assert!(
                e.contains("fault #1")
                    && e.contains("process fault")
                    && e.contains("generic WebSocket service")
                    && e.contains("starts no nodes"),
                "{e}"
            );
        }
        let s = generic(&format!(
            "{FAULT}kind = \"down\"\ntarget = \"client-node1\"\n"
        ));
        let e = format!("{:#}", check_fault_targets(&s).unwrap_err());
        assert!(
            e.contains("\"client-node1\", which matches no proxy of this run")
                && e.contains("client-target1 → ws://127.0.0.1:9100/a?x=1"),
            "{e}"
        );
        // A wss:// URL (TLS) gets no link: a fault aimed at its position matches nothing
        // and the message says why.
        let s = generic(&format!(
            "{FAULT}kind = \"down\"\ntarget = \"client-target2\"\n"
        ));
        let urls = vec![
            "ws://127.0.0.1:9100/".to_string(),
            "wss://chat.example.com/socket".to_string(),
        ];
        let links = target_links(&urls);
        let names: Vec<String> = links.iter().filter_map(|t| t.link.clone()).collect();
        assert_eq!(names, ["client-target1"]);
        let e = format!(
            "{:#}",
            check_generic_faults(&s, &links, &names).unwrap_err()
        );
        assert!(
            e.contains("matches no proxy of this run")
                && e.contains("wss://chat.example.com/socket used directly"),
            "{e}"
        );
    }

    #[test]
    fn isolated_runs_take_faults_on_hosts_and_nodes_not_links() {
        let isolated = |fault: &str| {
            Scenario::parse(
                "i",
                &format!(
                    "[run]\nname = \"i\"\nduration = \"5s\"\n[cluster]\nphase = \"queue\"\n\
                     nodes = 2\nisolation = \"netns\"\n[population]\nusers = 20000\n\
                     [[faults]]\nat = \"1s\"\n{fault}\n"
                ),
            )
            .unwrap()
        };
        assert_eq!(
            host_names(&isolated(
                "kind = \"pause\"\nduration = \"1s\"\ntarget = \"node1\""
            )),
            ["node1", "node2", "postgres", "redis", "worker1", "worker2"]
        );
        for ok in [
            "kind = \"partition\"\ntarget = \"node2\"\npeer = \"redis\"\ndirection = \"to\"",
            "kind = \"loss\"\npercent = 5.0\ntarget = \"worker*\"",
            "kind = \"bandwidth\"\nrate = 100\ntarget = \"postgres\"",
            "kind = \"kill\"\ntarget = \"node2\"",
        ] {
            check_fault_targets(&isolated(ok)).unwrap_or_else(|e| panic!("{ok}: {e:#}"));
        }
        let e = check_fault_targets(&isolated("kind = \"down\"\ntarget = \"node1-redis\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no link proxies"), "{e}");
        let e = check_fault_targets(&isolated("kind = \"kill\"\ntarget = \"redis\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("matches no node"), "{e}");
        let e = check_fault_targets(&isolated(
            "kind = \"partition\"\ntarget = \"node1\"\npeer = \"mongo\"",
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("peer \"mongo\""), "{e}");
    }
}
