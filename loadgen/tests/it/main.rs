//! Integration tests of the load generator: one binary, modules per area.

mod anomalies;
mod bots;
mod engine;
mod faulty_proxy;
mod features;
mod frame_toxics;
mod generic;
mod metrics;
mod streamed;
mod util;
