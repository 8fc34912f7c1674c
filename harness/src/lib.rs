//! The `flowline` harness: brings a cluster up, runs a scenario against it, injects faults,
//! and writes the run folder and its report (`flowline run / compare / replay / report`).

pub mod child;
pub mod cli;
pub mod compare;
pub mod faults;
/// `flowline run --phases`: one scenario over several phases with one seed, then compared.
pub mod phases;
pub mod replay;
pub mod report;
pub mod run;
pub mod runfolder;
pub mod services;
pub mod supervisor;
pub mod svg;
