//! Wire types shared by the Flowline chat node, the load generator and the harness.
//!
//! Everything that crosses a process boundary is defined here, once:
//!
//! * [`ws`]: the WebSocket protocol at `/ws` (JSON text frames, one object per frame,
//!   tagged by `"type"`), its error codes and its close codes;
//! * [`api`]: the JSON bodies of the HTTP API under `/api/v1`;
//! * [`actions`]: the chat actions over HTTP (post, edit, delete, react, thread, typing,
//!   presence), their bodies, and the idempotency and rate-limit headers;
//! * [`announce`]: the one-line JSON announcements child processes print on stdout so a
//!   supervisor (the harness) can find them.
//!
//! The protocol is versioned by [`PROTOCOL_VERSION`]; a client states the version it
//! speaks in `hello` and the node refuses versions it does not know.
//! `docs/protocol.md` is the human description of everything in this crate.

pub mod actions;
pub mod announce;
pub mod api;
pub mod phase;
pub mod ws;

pub use phase::Phase;

/// Version of the WebSocket protocol described by [`ws`]. Bumped on any incompatible change.
pub const PROTOCOL_VERSION: u32 = 1;

/// Identifier of a user (assigned by storage, positive).
pub type UserId = i64;
/// Identifier of a space (a Discord "server"/guild).
pub type SpaceId = i64;
/// Identifier of a channel: a space channel, a DM, or a thread.
pub type ChannelId = i64;
/// Identifier of a message, unique across the cluster.
pub type MessageId = i64;
/// Identifier of an uploaded file (attachment).
pub type AttachmentId = i64;
/// Per-channel sequence number: the first message of a channel has seq 1, and seqs are
/// strictly increasing and gapless within a channel.
pub type Seq = i64;
