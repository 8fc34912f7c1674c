//! The scenario file as TOML has it: one serde struct per table, `deny_unknown_fields`
//! everywhere, every value optional that has a default. Nothing here is checked beyond
//! types; `validate` turns this into the typed [`Scenario`](crate::scenario::Scenario),
//! and the raw form is kept beside it so `to_toml` writes back what the file said.

use std::collections::BTreeMap;
use std::time::Duration;

use flowline_chaos::fault::FaultSpec;
use flowline_protocol::Phase;
use serde::{Deserialize, Serialize};

use crate::scenario::dist::Dist;
use crate::scenario::persona::HttpKind;
use crate::scenario::target::{Expect, TargetKind, TimeUnit};

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawScenario {
    pub(super) run: RawRun,
    #[serde(default)]
    pub(super) cluster: RawCluster,
    pub(super) population: RawPopulation,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) personas: Vec<RawPersona>,
    #[serde(default)]
    pub(super) load: RawLoad,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) thresholds: Vec<RawThreshold>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) faults: Vec<FaultSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) target: Option<RawTarget>,
}

/// `[target]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTarget {
    pub(super) kind: TargetKind,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) urls: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) subprotocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) hello: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) expect: Option<Expect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) room: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) room_size: Option<u32>,
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub(super) join_grace: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) match_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) match_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) time_unit: Option<TimeUnit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) match_regex: Option<String>,
}

/// `[run]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRun {
    pub(super) name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) description: Option<String>,
    #[serde(with = "humantime_serde")]
    pub(super) duration: Duration,
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub(super) warmup: Option<Duration>,
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub(super) drain: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) seed: Option<u64>,
}

/// `[cluster]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) phase: Option<Phase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) nodes: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) http: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) ws: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) admin_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) isolation: Option<crate::scenario::isolation::Isolation>,
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub(super) heartbeat: Option<Duration>,
}

/// `[population]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPopulation {
    pub(super) users: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) spaces: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) channels_per_space: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) members: Option<Dist>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) dm_share: Option<f64>,
}

/// One `[[personas]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPersona {
    pub(super) name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) weight: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) messages_per_minute: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) body_bytes: Option<Dist>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) typing: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) reactions_per_minute: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) thread_reply_share: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) history_per_minute: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) presence_per_minute: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) uploads_per_minute: Option<f64>,
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub(super) reconnect_every: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) http: Option<HttpKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) requests_per_minute: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) retry_share: Option<f64>,
}

/// `load.model`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum RawModel {
    #[default]
    Closed,
    Open,
}

/// `[load]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLoad {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) model: Option<RawModel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) connect_rate: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) stages: Vec<RawStage>,
}

/// One entry of `load.stages`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStage {
    #[serde(with = "humantime_serde")]
    pub(super) duration: Duration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) target: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) rate: Option<f64>,
}

/// One `[[thresholds]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawThreshold {
    pub(super) expr: String,
}
