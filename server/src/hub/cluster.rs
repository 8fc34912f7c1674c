//! What the hub needs from a cluster bus ([`ClusterLink`]), so the hub does not depend on
//! the bus: the bus implements this and the hub publishes through it.

use axum::extract::ws::Utf8Bytes;

use flowline_protocol::{ChannelId, Seq, UserId};

use super::audience::Audience;

/// The hub's side of a cluster bus (phases `pubsub`/`queue`). Every call returns at once;
/// the bus queues the work for its own tasks.
pub trait ClusterLink: Send + Sync + 'static {
    /// Publish a committed message (concurrent appends of one channel may publish out of
    /// seq order; receivers sequence).
    fn publish_message(&self, channel: ChannelId, seq: Seq, event: &Utf8Bytes);
    /// Publish a non-`message` event for `audience`.
    fn publish_event(&self, audience: &Audience, event: &Utf8Bytes);
    /// `user` has their first session on this node.
    fn user_online(&self, user: UserId);
    /// `user`'s last session on this node ended.
    fn user_offline(&self, user: UserId);
}
