//! The coordinator protocol (docs/coordinator.md): how a worker process finds the harness
//! over TCP, proves it runs the same build and scenario, has its clock measured, starts
//! with every other worker at one instant, and streams its `tick`/`done` lines.
//!
//! | module | what it is for |
//! |---|---|
//! | [`message`] | every control message, the version, build id, scenario hash, line framing |
//! | [`client`] | the worker's side: connect, hello, pongs, start, the socket as an `Output` |
//! | [`report`] | what the coordinator measured (summary.json `coordinator`) |
//!
//! The coordinator's side lives in the harness (`flowline_harness::coordinator`).

pub mod client;
pub mod message;
pub mod report;

pub use message::{FromWorker, Hello, PROTOCOL_VERSION, ToWorker, build_id, scenario_hash};
pub use report::{CoordinatorReport, WorkerClock};
