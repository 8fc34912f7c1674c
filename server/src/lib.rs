//! Flowline's reference chat node: HTTP API and WebSocket protocol (see
//! `docs/protocol.md`), in-memory or Postgres storage, bounded local fan-out, and the Redis cluster bus of
//! phases `pubsub` and `queue` ([`bus`]).
//!
//! Start one in-process with [`run`] (tests do); `flowline server` ([`cli`]) wraps it.

mod app;
pub mod auth;
pub mod bus;
pub mod cli;
pub mod config;
pub mod error;
mod http;
pub mod hub;
pub mod metrics;
mod session;
pub mod storage;

pub use app::{run, run_with_ready};
pub use config::{Argon2Cost, Config, Limits, Phase};
pub use error::{Error, StorageError};
