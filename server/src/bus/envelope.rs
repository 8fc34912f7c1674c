//! The unit on the bus ([`Envelope`]: a committed message or an addressed event, as JSON)
//! and what a node does with one it receives ([`receive`]).

use std::time::Instant;

use axum::extract::ws::Utf8Bytes;

use flowline_protocol::{ChannelId, Seq};

use super::inbox::Inbox;
use super::link::{Link, Transport};
use crate::clock::now_ms;
use crate::hub::Audience;
use crate::members::MemberChange;

/// What one envelope carries.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Body {
    /// A committed message: its serialized `message` event.
    Message {
        /// Channel.
        channel: ChannelId,
        /// Seq in the channel.
        seq: Seq,
        /// The serialized `message` event.
        event: String,
    },
    /// Any other event and who it is for.
    Event {
        /// Who receives it.
        audience: Audience,
        /// The serialized event.
        event: String,
    },
    /// Space membership changed: every node forgets what it cached of it.
    Membership {
        /// What changed.
        member: MemberChange,
    },
    /// `pubsub`: nothing else to publish for a while; "I am alive, and this is my number"
    /// (see `origins.rs`).
    Beacon,
}

/// One unit on the bus, serialized as JSON.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Envelope {
    /// Publishing node's incarnation (`<node id>#<random>`); a node skips its own.
    pub origin: String,
    /// Unix ms when it was published (for `flowline_bus_lag_seconds`).
    pub sent_ms: u64,
    /// `pubsub`: this origin's envelope number (1, 2, …; a number whose envelope was
    /// dropped is not reused), so receivers notice what they lost. 0: unnumbered (`queue`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub n: u64,
    /// The content.
    #[serde(flatten)]
    pub body: Body,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Envelope {
    pub(super) fn is_message(&self) -> bool {
        matches!(self.body, Body::Message { .. })
    }

    /// The channel it belongs to, if any (picks the `queue` shard).
    pub(super) fn channel(&self) -> Option<ChannelId> {
        match &self.body {
            Body::Message { channel, .. }
            | Body::Event {
                audience: Audience::Channel(channel),
                ..
            } => Some(*channel),
            Body::Event { .. } | Body::Membership { .. } | Body::Beacon => None,
        }
    }
}

/// Handle one envelope received from Redis: skip this node's own, record the lag, and
/// hand it to the hub.
pub(super) fn receive(link: &Link, inbox: &dyn Inbox, payload: &[u8]) {
    let env: Envelope = match serde_json::from_slice(payload) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "undecodable bus envelope skipped");
            return;
        }
    };
    if env.origin == link.origin {
        return;
    }
    if link.transport == Transport::Pubsub {
        link.origins.heard(&env.origin, env.n, Instant::now());
    }
    if matches!(env.body, Body::Beacon) {
        return;
    }
    link.metrics.bus_received.increment(1);
    let lag_ms = now_ms().saturating_sub(env.sent_ms);
    link.metrics.bus_lag_seconds.record(lag_ms as f64 / 1000.0);
    match env.body {
        Body::Message {
            channel,
            seq,
            event,
        } => {
            inbox.accept(channel, seq, &Utf8Bytes::from(event));
        }
        Body::Event { audience, event } => {
            inbox.emit_local(&audience, &Utf8Bytes::from(event));
        }
        Body::Membership { member } => inbox.forget_members(&member),
        Body::Beacon => {}
    }
}
