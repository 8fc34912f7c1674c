//! Flowline's reference chat node (work in progress: see issue "The reference chat node").

pub mod cli;
