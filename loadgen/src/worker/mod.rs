//! The worker engine: runs one shard of a plan's users, each a lightweight task holding
//! one WebSocket, and reports once a second through an [`Output`](crate::wire::Output).
//!
//! ```text
//! shard.rs   run(): targets, threads, merge of their seconds ──▶ tick lines, done line
//!   └─ thread.rs   one runtime per thread: ticker + user tasks ──▶ ThreadMsg
//!        └─ chat.rs | generic.rs   a user (persona traffic, frames in and out)
//!             └─ driver.rs   connect / session / reconnect with backoff (connect.rs,
//!                  the WebSocket handshake in handshake.rs)
//! context.rs  what a thread's users share (clock, targets, Recorder, History)
//! history.rs  what they record for the checker (acked sends, receipts)
//! ```
//! Users of the Flowline cluster are `chat.rs` (feature traffic in `chat/features.rs`,
//! protocol frames in `chat/frames.rs`); users of a generic WebSocket service are
//! `generic.rs`; HTTP personas run on goose beside them (`crate::httpload`).

mod chat;
mod connect;
mod context;
mod driver;
mod generic;
mod handshake;
mod history;
mod shard;
mod thread;

pub use chat::frames::{Peek, nonce, parse_nonce};
pub use connect::{USERS_PER_SOURCE, target_index};
pub use shard::{WorkerConfig, run, run_to};
