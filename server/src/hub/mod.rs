//! Local fan-out: which sessions are subscribed to which channel, and the per-channel
//! ordering lock. The hub sits below the bus and the sessions: it knows neither.
//!
//! ```text
//!  send op ──► Hub::post ──lock(channel)──► Storage::append (seq n, durable)
//!                                   │
//!                                   ├─► serialize `message` event ONCE
//!                                   └─► Hub::deliver: try_send(Arc bytes) into every
//!                                       subscriber's bounded queue ──► writer task ──► socket
//!                                       (queue full ⇒ kick with 4008, never block)
//! ```
//!
//! Without a bus (phases `single`, `postgres`), seq assignment and delivery happen under
//! the channel's async mutex, so every subscriber's queue receives a channel's messages in
//! seq order. With one, this node's appends of a channel run concurrently (storage orders
//! them on the channel row) and the sequencer below restores seq order.
//!
//! In the cluster phases (`pubsub`, `queue`) the bus is attached as a [`ClusterLink`]
//! ([`Hub::attach_cluster`]):
//!
//! ```text
//!  Hub::post (no lock) ─► commit (seq n) ─► accept(n) ─► deliver to local subscribers
//!                                └─► Bus::publish(Message{channel, n, event}) ─► Redis
//!  Redis ─► Bus receiver (envelopes of OTHER nodes only) ─► accept(n) ─► deliver
//!  Hub::emit ─► emit_local  +  Bus::publish(Event{audience, event}) ─► Redis ─► emit_local
//! ```
//!
//! A node delivers its own messages locally and skips its own envelopes on the bus, so its
//! local clients keep being served while Redis is away, and nothing is delivered twice.
//! [`Hub::accept`] sequences each channel (`sequence.rs`): it delivers seq `last + 1`,
//! drops `≤ last` (duplicates, e.g. a queue outbox re-sent after a gap fill), and holds
//! anything above `last + 1` until the gap closes. Gaps arise because two nodes publish one
//! channel's consecutive seqs over separate connections, or because an envelope was lost;
//! the bus closes a gap that stays open ([`Hub::overdue_gaps`]): `queue` reads the missing
//! seqs from Postgres, `pubsub` too unless they may have been lost on the bus (then it
//! skips them and counts them as undelivered).
//!
//! Files: `fanout.rs` ([`Hub`]), `outbound.rs` (a session's queue items and handle),
//! `sequence.rs` (cluster sequencing), `audience.rs` (who an event is for), `cluster.rs`
//! (what the hub needs from a bus).

mod audience;
mod cluster;
mod fanout;
mod outbound;
mod sequence;

pub use audience::Audience;
pub use cluster::ClusterLink;
pub use fanout::{Hub, PostError};
pub use outbound::{Delivery, Outbound, Replay, SessionId, SessionShared, Subscriber, offer};
pub use sequence::Gap;
