//! The chat actions — `send`, `edit`, `delete`, `react`/`unreact`, `start_thread`,
//! `typing` — written once, independent of the transport: each takes the caller's
//! access and a typed request and returns a typed result plus the events others see
//! (`Done`), or a `Refusal`. The WebSocket ops call them (`session/ops.rs`); an HTTP
//! route for the same action calls the same function.
//!
//! Files: `context.rs` ([`Chat`], [`Done`], `Events`), one file per action.

mod context;
mod edit;
mod react;
mod send;
mod thread;
mod throttle;
mod typing;

pub use context::{Chat, Done};
pub use send::SendRequest;
