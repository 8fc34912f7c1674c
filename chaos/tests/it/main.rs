//! Integration tests of the chaos crate: real TCP on 127.0.0.1, real child processes, and
//! real traffic between hosts in network namespaces the tests make (kernel faults).

mod compat;
mod effects;
mod frames;
mod hosts;
mod kernel;
mod metrics;
mod process;
mod schedule;
mod util;
