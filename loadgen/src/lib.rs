//! Flowline's load generator: scenario files, the deterministic population plan and its
//! provisioning, the worker engine (simulated users over WebSockets), metrics shipping,
//! aggregation, the correctness checker and the run-folder outputs.
//!
//! ```text
//! scenario.toml ─▶ Scenario ─▶ plan::provision ─▶ plan.json
//!                                                   │
//!        flowline loadgen --shard I/N (worker) ◀────┘  × N processes
//!            │ coordinator protocol (TCP): hello, start; then wire::Output:
//!            │ tick lines (1/s), one done line
//!            ▼ (the harness's coordinator hands them on)
//!        aggregate::Aggregator ─▶ checker + thresholds ─▶ summary.json,
//!                                  histograms.hlog, timeline.csv
//! ```
//!
//! | module | what it is for |
//! |---|---|
//! | [`scenario`] | the scenario file: raw form, validation per table, typed model |
//! | [`plan`], [`schedule`] | who the users are (plan.json) and when each one acts |
//! | [`worker`] | one shard's users: threads, connect/reconnect, chat and generic users |
//! | [`httpload`] | HTTP personas on goose (login, history, upload, bot, flood), one file each |
//! | [`nonce`] | the nonce every chat send carries (sender, counter, send time) |
//! | [`generic`] | a generic WebSocket target's frame templates, matcher and per-user receipts |
//! | [`wire`] | **what a worker reports**: tick and done lines, and the output they go through |
//! | [`recorder`], [`histogram`] | per-thread seconds; latency histograms and their encoding |
//! | [`receipts`] | what a chat recipient received of a channel, compacted into seq ranges |
//! | [`anomaly`] | the named delivery anomalies, their counts and offenders (data only: the checker fills them, thresholds name them) |
//! | [`checker`] | did every acked message reach everyone due it (chat, generic); every named anomaly (chat) |
//! | [`aggregate`], [`summary`], [`threshold`] | workers' lines → summary.json (typed in `summary`), hlog, timeline; thresholds |
//! | [`coordinator`] | the worker side of the coordinator protocol (hello, clocks, start), its messages |
//! | [`collect`] | the loop workers' lines → aggregator → progress → verdict (run and standalone) |
//! | [`metrics`] | a worker's Prometheus endpoint |
//! | [`resources`], [`upload`], [`error`], [`cli`] | process cost, uploads, errors, flags |

pub mod aggregate;
pub mod anomaly;
pub mod checker;
pub mod cli;
pub mod collect;
pub mod coordinator;
pub mod error;
pub mod generic;
pub mod histogram;
pub mod httpload;
pub mod metrics;
pub mod nonce;
pub mod plan;
pub mod receipts;
pub mod recorder;
pub mod resources;
pub mod scenario;
pub mod schedule;
pub mod summary;
pub mod threshold;
pub mod upload;
pub mod wire;
pub mod worker;

pub use error::{LoadgenError, Result};
