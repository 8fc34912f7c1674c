//! `[cluster]`: the phase and node count the harness starts, or an external cluster's
//! addresses, how the run's processes are isolated on the network, and the nodes' ping
//! interval.

use std::time::Duration;

use flowline_protocol::Phase;

use crate::scenario::isolation::Isolation;
use crate::scenario::model::{Cluster, External};
use crate::scenario::raw::RawCluster;

pub(super) fn cluster(raw: &RawCluster, p: &mut Vec<String>) -> Cluster {
    let external = if raw.http.is_empty() {
        if !raw.ws.is_empty() {
            p.push("cluster.ws needs cluster.http (the admin API) too".into());
        }
        None
    } else {
        let ws = if raw.ws.is_empty() {
            raw.http.iter().map(|h| ws_from_http(h)).collect()
        } else {
            raw.ws.clone()
        };
        if ws.len() != raw.http.len() {
            p.push(format!(
                "cluster.ws has {} URLs but cluster.http has {}",
                ws.len(),
                raw.http.len()
            ));
        }
        Some(External {
            http: raw.http.clone(),
            ws,
            admin_secret: raw.admin_secret.clone(),
        })
    };
    let phase = raw.phase.unwrap_or_default();
    let nodes = raw.nodes.unwrap_or(match phase {
        Phase::Single | Phase::Postgres => 1,
        Phase::Pubsub | Phase::Queue => 3,
    });
    if nodes == 0 {
        p.push("cluster.nodes must be at least 1".into());
    }
    if matches!(phase, Phase::Single | Phase::Postgres) && nodes > 1 && external.is_none() {
        p.push(format!(
            "phase {} runs exactly one node, got cluster.nodes = {nodes}",
            phase.as_str()
        ));
    }
    let isolation = raw.isolation.unwrap_or_default();
    if isolation == Isolation::Netns && external.is_some() {
        p.push(
            "cluster.isolation = \"netns\" puts the nodes the run starts in network namespaces, \
             and an external cluster (cluster.http) is not started by the run"
                .into(),
        );
    }
    let heartbeat = raw.heartbeat;
    if let Some(h) = heartbeat {
        if external.is_some() {
            p.push(
                "cluster.heartbeat sets the ping interval of the nodes the run starts; an \
                 external cluster (cluster.http) keeps its own"
                    .into(),
            );
        }
        if h < MIN_HEARTBEAT || h > MAX_HEARTBEAT {
            p.push(format!(
                "cluster.heartbeat must be between {} and {}, got {}",
                humantime::format_duration(MIN_HEARTBEAT),
                humantime::format_duration(MAX_HEARTBEAT),
                humantime::format_duration(h)
            ));
        }
    }
    Cluster {
        phase,
        nodes,
        external,
        isolation,
        heartbeat,
    }
}

/// Shortest `cluster.heartbeat`: a node's ping timer works to the millisecond, and a
/// peer is dropped after two silent intervals.
const MIN_HEARTBEAT: Duration = Duration::from_millis(100);
/// Longest `cluster.heartbeat`: beyond it a dead peer holds its session for over 20 min.
const MAX_HEARTBEAT: Duration = Duration::from_secs(600);

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
