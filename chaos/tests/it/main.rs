//! Integration tests of the chaos crate: real TCP on 127.0.0.1, real child processes.

mod compat;
mod effects;
mod metrics;
mod process;
mod schedule;
mod util;
