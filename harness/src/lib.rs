//! The `flowline` harness: brings a cluster up, runs a scenario against it, injects faults,
//! and writes the run folder and its report (`flowline run / compare / replay`).

pub mod services;
pub mod supervisor;
