//! Flowline's fault injection: a Toxiproxy-compatible fault proxy, process faults, and
//! fault schedules that fire on time, are recorded, and are always healed.
//!
//! # Module map (each file imports only from the lines above it)
//!
//! | module | what it holds |
//! |---|---|
//! | [`fault`] | one `[[faults]]` entry as written in a scenario, and its validation (it asks [`frame_select`] whether a frame fault's selection holds) |
//! | [`frame_select`] | which server → client WebSocket messages a frame toxic takes (`nth`, `every`, JSON-pointer `match`); serde_json alone |
//! | `error` | [`Error`] and the Toxiproxy status code of each API error |
//! | [`kernel`] | a run's hosts in network namespaces ([`Network`]) and one file per kernel fault behind `KernelFault` |
//! | [`netem`] | whether this kernel has the netem qdisc (std alone; `fault` and `kernel` ask it) |
//! | `toxic` | [`ToxicSpec`] (the API's JSON) and one file per toxic behind the `Toxic` trait; `toxic::framer` follows WebSocket frames for the `frame_*` toxics |
//! | `link` | one proxied connection: reader → toxic chain → writer, per direction |
//! | [`spread`] | a link whose data plane is spread over `flowline chaos data-plane` processes sharing one address (`SO_REUSEPORT`): their start, the state pushed to them, their answers |
//! | `proxy` | one proxy: listener (or its spread processes), its toxics, its connections |
//! | [`metrics`] | fault metrics (`flowline_chaos_*`, Prometheus) |
//! | [`controller`] | [`Controller`], the set of proxies: every operation of the API |
//! | [`api`] | the Toxiproxy HTTP API over a controller |
//! | [`plane`] | `flowline chaos data-plane`: one process of a spread link, driven over stdin |
//! | [`client`] | a client of a remote Toxiproxy API |
//! | [`process`], [`events`] | process faults (kill, pause); events.jsonl |
//! | [`schedule`] | [`Schedule`]: faults fired on time against [`Targets`] (or injected by hand while it runs), always healed |
//! | [`cli`] | `flowline chaos` (serve, heal, list, run) |
//!
//! - [`Controller`]: an in-process set of TCP proxies with toxics (latency, bandwidth,
//!   slow_close, timeout, reset_peer, slicer, limit_data, and `blackhole`, a one-way
//!   partition; and the frame toxics `frame_drop`, `frame_duplicate`, `frame_delay`,
//!   `frame_reorder`, `frame_corrupt` on selected server → client WebSocket messages),
//!   enable/disable (a partition), and [`Controller::heal_all`].
//! - [`api`]: the Toxiproxy 2.x HTTP API over a controller (`flowline chaos serve`).
//! - [`ProcessTarget`]: SIGKILL (+ restart by the owner), SIGSTOP/SIGCONT.
//! - [`kernel`]: a run's hosts in network namespaces ([`Network`]) and the faults the
//!   kernel makes between them (loss, partition, block_new, bandwidth, unplug, and the
//!   netem kinds where the kernel has netem).
//! - [`Schedule`]: a scenario's `[[faults]]` ([`fault::FaultSpec`]) run against
//!   [`Targets`] (local controller or a remote Toxiproxy via [`ToxiproxyClient`], plus
//!   nodes), written to events.jsonl ([`EventLog`]).
//!
//! # Usage (what the harness does)
//!
//! ```no_run
//! # async fn demo(faults: Vec<flowline_chaos::fault::FaultSpec>) -> Result<(), flowline_chaos::Error> {
//! use std::sync::Arc;
//! use flowline_chaos::{Controller, EventLog, Links, PidProcess, Schedule, Targets};
//!
//! let chaos = Controller::new();
//! // One proxy per link; port 0 picks a free port, `info.listen` says which.
//! let info = chaos
//!     .create_proxy("node1-redis", "127.0.0.1:0".parse().unwrap(), "127.0.0.1:6379")
//!     .await?;
//! println!("point node1 at redis://{}", info.listen);
//!
//! let events = EventLog::create("runs/x/events.jsonl".as_ref(), std::time::Instant::now())?;
//! events.node_event("start", "node1", serde_json::json!({"pid": 4242}))?;
//! let targets = Targets::new(Links::Local(chaos.clone()))
//!     .with_node(Arc::new(PidProcess { node_id: "node1".into(), pid: 4242 }));
//! let mut schedule = Schedule::new(faults, targets, events)?.run(tokio::time::Instant::now());
//! // ... run the load ...
//! schedule.wait().await; // or stop early:
//! schedule.shutdown().await?; // heals every active fault (dropping it heals too)
//! chaos.shutdown().await; // removes every proxy (dropping the last clone does too)
//! # Ok(()) }
//! ```
//!
//! For `flowline chaos serve`, see [`cli`]; to serve the API in-process, bind a listener
//! and call [`api::serve_api`].

#![warn(missing_docs)]

pub mod api;
pub mod cli;
pub mod client;
pub mod controller;
pub mod error;
pub mod events;
pub mod fault;
pub mod frame_select;
pub mod kernel;
mod link;
pub mod metrics;
pub mod netem;
pub mod plane;
pub mod process;
mod proxy;
pub mod schedule;
pub mod spread;
pub mod toxic;

pub use api::serve_api;
pub use client::ToxiproxyClient;
pub use controller::{Controller, ProxyConfig, ProxyUpdate};
pub use error::{Error, Result};
pub use events::{Event, EventLog};
pub use kernel::{Host, Network};
pub use metrics::FaultMetrics;
pub use process::{PidProcess, ProcessTarget};
pub use proxy::ProxyInfo;
pub use schedule::{ActiveFault, Links, Schedule, ScheduleHandle, Targets};
pub use spread::{DataPlane, PlaneInfo};
pub use toxic::{Direction, FrameAction, FrameSelect, ToxicKind, ToxicSpec};
