//! [`Inbox`]: the small interface through which the bus hands what it receives to the
//! node's local fan-out (the hub implements it), so the bus never needs the whole node.

use std::time::Duration;

use axum::extract::ws::Utf8Bytes;

use flowline_protocol::{ChannelId, Seq, UserId};

use crate::hub::{Audience, Gap, Hub};
use crate::members::MemberChange;

/// What the bus needs of the node's local fan-out.
pub trait Inbox: Send + Sync + 'static {
    /// Sequence and deliver one `message` event of another node.
    fn accept(&self, channel: ChannelId, seq: Seq, text: &Utf8Bytes) -> usize;
    /// Deliver another node's non-`message` event to this node's sessions in `audience`.
    fn emit_local(&self, audience: &Audience, text: &Utf8Bytes) -> usize;
    /// Channels whose seq gap has been open longer than `wait`.
    fn overdue_gaps(&self, wait: Duration) -> Vec<Gap>;
    /// Give up on a channel's missing seqs; returns how many were skipped.
    fn skip_gaps(&self, channel: ChannelId) -> u64;
    /// Users with a session on this node (the presence registry's rewrite).
    fn local_users(&self) -> Vec<UserId>;
    /// Another node changed space membership: forget what this node cached of it.
    /// (The hub caches none; the node's inbox forwards this to its membership cache.)
    fn forget_members(&self, _change: &MemberChange) {}
}

impl Inbox for Hub {
    fn accept(&self, channel: ChannelId, seq: Seq, text: &Utf8Bytes) -> usize {
        Hub::accept(self, channel, seq, text)
    }

    fn emit_local(&self, audience: &Audience, text: &Utf8Bytes) -> usize {
        Hub::emit_local(self, audience, text)
    }

    fn overdue_gaps(&self, wait: Duration) -> Vec<Gap> {
        Hub::overdue_gaps(self, wait)
    }

    fn skip_gaps(&self, channel: ChannelId) -> u64 {
        Hub::skip_gaps(self, channel)
    }

    fn local_users(&self) -> Vec<UserId> {
        Hub::local_users(self)
    }
}
