//! Integration tests of the `flowline` harness, through the real binary.

mod report;
#[allow(dead_code)] // helpers for the run tests, which land with `flowline run`
mod util;
