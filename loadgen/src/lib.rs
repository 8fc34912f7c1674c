//! Flowline's load generator (work in progress).

pub mod cli;
