//! Flowline's load generator: scenario files, the deterministic population plan and its
//! provisioning, the worker engine (simulated users over WebSockets), metrics shipping,
//! aggregation, the correctness checker and the run-folder outputs.
//!
//! ```text
//! scenario.toml ─▶ Scenario ─▶ plan::provision ─▶ plan.json
//!                                                   │
//!        flowline loadgen --shard I/N (worker) ◀────┘  × N processes
//!            │ stdout: tick lines (1/s), one done line
//!            ▼
//!        aggregate::Aggregator ─▶ checker + thresholds ─▶ summary.json,
//!                                  histograms.hlog, timeline.csv
//! ```

pub mod aggregate;
pub mod checker;
pub mod cli;
pub mod error;
pub mod generic;
pub mod httpload;
pub mod metrics;
pub mod plan;
pub mod prom;
pub mod scenario;
pub mod schedule;
pub mod threshold;
pub mod upload;
pub mod wire;
pub mod worker;

pub use error::{LoadgenError, Result};
