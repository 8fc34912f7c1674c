//! Integration tests of the load generator: one binary, modules per area.

mod anomalies;
mod engine;
mod faulty_proxy;
mod features;
mod generic;
mod metrics;
mod util;
