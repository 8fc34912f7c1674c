//! Integration tests of the load generator: one binary, modules per area.

mod engine;
mod features;
mod generic;
mod metrics;
mod util;
