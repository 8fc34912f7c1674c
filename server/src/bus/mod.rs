//! The cluster bus of phases `pubsub` and `queue`: carries every node's messages and
//! events to every other node through Redis, and keeps the cluster's presence registry.
//!
//! ```text
//!   Hub::post / Hub::emit ──► Bus::publish_* ──► bounded queue ──► publisher task
//!                                                                  │ pipelined batch
//!                     pubsub: PUBLISH flowline:<cluster>:bus       ▼
//!                     queue:  XADD flowline:<cluster>:q:<shard> MAXLEN ~ N
//!                                                                  │
//!   other nodes' receiver task ◄── SUBSCRIBE (pubsub) / XREAD from its last ids (queue)
//!        │ skip own envelopes, lag histogram
//!        ├─► Hub::accept(channel, seq, event)   (sequenced, see hub.rs)
//!        └─► Hub::emit_local(audience, event)
//!   gap task: every 50 ms, gaps open longer than 500 ms are filled from Postgres
//!             (queue); gaps open longer than 1 s are filled from Postgres if nothing
//!             was lost on the bus, else skipped and counted (pubsub, `origins.rs`)
//! ```
//!
//! The bus sees the node only through two small interfaces: it hands what it receives to
//! an [`Inbox`] (the hub) and fills gaps through the `Storage` trait; the hub publishes
//! through the bus as its `ClusterLink`. Files: `handle.rs` ([`Bus`]), `link.rs` (what
//! the tasks share), `envelope.rs`, `publisher.rs`, `pubsub.rs` / `queue.rs` (receivers),
//! `gaps.rs`, `origins.rs` (pubsub: late or lost?), `presence.rs` (the registry),
//! `inbox.rs`.
//!
//! Every key and channel starts with `flowline:<cluster_id>:`, so clusters and tests
//! share one Redis and are torn down with `DEL flowline:<cluster_id>:*`.
//!
//! Delivery semantics, per node:
//! * `pubsub` — at most once. Envelopes published while the publisher cannot reach Redis
//!   are dropped and counted (`flowline_bus_undelivered_total`); envelopes published while
//!   a subscriber is cut off never reach it, and it counts the seq gaps it skips. A gap
//!   with no such loss behind it (a message whose publisher's append returned late) is
//!   filled from Postgres, so a run without faults loses nothing.
//! * `queue` — exactly once per node for messages. The publisher keeps what it could not
//!   append in an in-memory outbox (bounded) and appends it after reconnecting; the
//!   reader resumes each shard stream from the last entry id it read; a gap that stays
//!   open (an envelope lost with a crashed publisher's outbox, or trimmed away) is filled
//!   from Postgres, where every acked message is committed before it is published.
//!   Duplicates (outbox re-sent after a fill) are dropped by seq. Events (no seq) are
//!   delivered once per node unless their publisher dies with them in its outbox.

mod envelope;
mod gaps;
mod handle;
mod inbox;
mod link;
mod origins;
mod presence;
mod publisher;
mod pubsub;
mod queue;

pub use envelope::{Body, Envelope};
pub use handle::Bus;
pub use inbox::Inbox;
pub use link::Transport;
