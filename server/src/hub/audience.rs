//! Who a non-`message` event is for ([`Audience`]).

use flowline_protocol::{ChannelId, UserId};

/// Who a non-`message` event (edit, delete, reaction, thread, typing, presence) is for.
///
/// Events travel as (audience, serialized event), so a cluster bus can forward them to
/// every node unchanged and each node hands them to its own sessions with `Hub::emit`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    /// Every session subscribed to the channel.
    Channel(ChannelId),
    /// Every authenticated session of these users.
    Users(Vec<UserId>),
}
