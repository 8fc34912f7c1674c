//! Flowline's Toxiproxy-compatible fault proxy (work in progress).

pub mod cli;
pub mod fault;
