//! Integration tests of the `flowline` harness, through the real binary.

mod compose;
mod coordinator;
mod generic;
mod isolation;
mod logs;
mod phases;
mod prometheus;
mod report;
mod run;
mod scenarios;
mod scripts_test;
mod util;
