//! Flowline's reference chat node: HTTP API and WebSocket protocol (see
//! `docs/protocol.md`), in-memory or Postgres storage, bounded local fan-out, and the Redis
//! cluster bus of phases `pubsub` and `queue` (`docs/phases.md`).
//!
//! Start one in-process with [`run`] (tests do); `flowline server` ([`cli`]) wraps it.
//!
//! Modules, bottom floor first (each uses only modules on its own floor or below):
//!
//! | floor | module | what it is |
//! |---|---|---|
//! | values | [`error`], `clock`, [`metrics`], [`features`], [`config`], [`auth`], `refusal` | errors, time, Prometheus, settings, passwords/tokens, the one storage-error → client-error mapping |
//! | state | [`storage`] | the storage contract and its two implementations |
//! | state | [`hub`] | local fan-out: subscriptions, per-channel order, cluster sequencing |
//! | state | [`bus`] | the Redis cluster bus; sees the hub through `bus::Inbox`, storage through `Storage` |
//! | state | `batch`, `lookups` | concurrent storage lookups of one kind coalesced into one query; the connect path's batched reads (token, readable channels, latest seqs, replays) |
//! | state | `members` | the node's membership cache (who is in which space), forgotten on changes |
//! | state | `membership` | who may read what; the audience of a user's presence |
//! | state | `presence` | presence: the per-node state machine and the `Roster` that announces it |
//! | state | `ratelimit` (`ratelimit/cluster`: Redis) | the token buckets of the chat actions, per token and per channel (this node's, or the cluster's in Redis) |
//! | state | `idempotency` (`idempotency/{local,cluster}`) | `Idempotency-Key`: a retried POST answers the first result (this node's keys, or the cluster's in Redis) |
//! | state | `chat` | the chat actions (send, edit, delete, react, thread, typing), transport-independent |
//! | state | `sessions`, `node` | the open sessions registry; `Node`, everything above assembled |
//! | runners | `session` | one WebSocket session: reader, ops, writer |
//! | runners | `http` | the HTTP API |
//! | runners | `server` | [`run`]: open, serve, drain |
//! | runners | `accept` | the HTTP accept loop: header and body read time bounded |
//! | runners | [`cli`] | `flowline server` |

mod accept;
pub mod auth;
mod batch;
pub mod bus;
mod chat;
pub mod cli;
mod clock;
pub mod config;
pub mod error;
pub mod features;
mod http;
pub mod hub;
mod idempotency;
mod lookups;
mod members;
mod membership;
pub mod metrics;
mod node;
mod presence;
mod ratelimit;
mod refusal;
mod server;
mod session;
mod sessions;
pub mod storage;

pub use config::{Argon2Cost, Bucket, Config, Limits, Phase, RateConfig};
pub use error::{Error, StorageError};
pub use refusal::status_of;
pub use server::{run, run_with_ready};
