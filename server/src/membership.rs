//! Who may read what, in one place for the HTTP API and the WebSocket ops: channel access
//! (reading a channel is also the right to subscribe to and post in it), space membership,
//! and the audience of a user's presence (who shares a small space with them, from the
//! node's [`MemberCache`]).
//!
//! The rules themselves live in storage ([`crate::storage::Spaces::can_read`]); this module
//! turns them into answers ([`Refusal`]s) and remembers what a caller was already allowed
//! ([`Access`]), so a session does not ask storage again for every op. What it remembers
//! is dropped when its user leaves a space ([`MemberChange::Left`], through this node or,
//! by the bus's `membership` envelope, another node of the cluster) and re-checked after
//! [`RECHECK`] anyway (an envelope the at-most-once bus lost), so a session opened before
//! its user left cannot keep posting.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use futures_util::FutureExt;

use flowline_protocol::api::Space;
use flowline_protocol::ws::ErrorCode;
use flowline_protocol::{ChannelId, SpaceId, UserId};

use crate::batch::Batcher;
use crate::members::{MemberCache, MemberChange};
use crate::refusal::Refusal;
use crate::storage::{self, Storage};

/// How long a remembered "may read this channel" holds before [`Membership::authorize`]
/// asks storage again: the longest a session keeps posting after its user left the space
/// through another node when the leave's bus envelope was lost.
pub const RECHECK: Duration = Duration::from_secs(1);

/// A caller and the channels they have been found to read, each with when it was found.
/// A WebSocket session keeps one for its lifetime.
#[derive(Debug, Default)]
pub struct Access {
    /// The caller.
    pub user: UserId,
    readable: HashMap<ChannelId, Instant>,
    /// The user's leave count on this node when `readable` was last emptied.
    leaves_seen: u64,
}

impl Access {
    /// A caller nothing is known about yet.
    pub fn new(user: UserId) -> Self {
        Self {
            user,
            readable: HashMap::new(),
            leaves_seen: 0,
        }
    }

    /// Remember channels found readable elsewhere (e.g. every channel of `hello`).
    pub fn allow(&mut self, channels: impl IntoIterator<Item = ChannelId>) {
        let now = Instant::now();
        self.readable.extend(channels.into_iter().map(|c| (c, now)));
    }

    /// Is `channel` known to be readable (found so within [`RECHECK`])?
    pub fn allows(&self, channel: ChannelId) -> bool {
        self.readable
            .get(&channel)
            .is_some_and(|at| at.elapsed() < RECHECK)
    }
}

/// Membership checks over the node's storage, and the node's [`MemberCache`].
pub struct Membership {
    storage: Arc<dyn Storage>,
    cache: MemberCache,
    /// Per user, how many times they left a space through this node.
    leaves: DashMap<UserId, u64>,
    /// The rechecks of [`Self::authorize`], batched: every session of a busy node
    /// rechecks before nearly every write (a user writing less than once a second always
    /// does), and one round trip per write was what bounded a node's sends per second.
    rechecks: Batcher<(ChannelId, UserId), bool>,
}

impl Membership {
    /// Checks answered by `storage`.
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        let s = storage.clone();
        let rechecks = Batcher::new(Arc::new(move |pairs: Vec<(ChannelId, UserId)>| {
            let s = s.clone();
            async move {
                let answers = s.recheck_reads(&pairs).await?;
                Ok(pairs.into_iter().zip(answers).collect())
            }
            .boxed()
        }));
        Self {
            cache: MemberCache::new(storage.clone()),
            storage,
            leaves: DashMap::new(),
            rechecks,
        }
    }

    /// Forget cached membership that `change` may have made stale (this node's own
    /// changes, and the bus's `membership` envelopes of the others). After a
    /// [`MemberChange::Left`], every session's remembered access of that user on this
    /// node is dropped before its next op.
    pub fn forget(&self, change: &MemberChange) {
        self.cache.forget(change);
        if let MemberChange::Left { user, .. } = *change {
            *self.leaves.entry(user).or_insert(0) += 1;
        }
    }

    /// May the caller read (subscribe to, post in) `channel`? `not_found` if it does not
    /// exist, `forbidden` if they are not a member, `unavailable` if storage failed.
    /// Answered from `access` unless this node learnt since that the user left a space,
    /// or it was found more than [`RECHECK`] ago.
    pub async fn authorize(&self, access: &mut Access, channel: ChannelId) -> Result<(), Refusal> {
        let leaves = self.leaves.get(&access.user).map_or(0, |n| *n);
        if leaves != access.leaves_seen {
            access.readable.clear();
            access.leaves_seen = leaves;
        }
        if access.allows(channel) {
            return Ok(());
        }
        access.readable.remove(&channel);
        // On the message path's budget: a write's recheck must not queue behind a
        // connect storm's reads for a connection.
        if !self
            .rechecks
            .get((channel, access.user))
            .await?
            .unwrap_or(false)
        {
            self.refuse_channel(channel).await?;
        }
        access.readable.insert(channel, Instant::now());
        Ok(())
    }

    /// The same check, remembering nothing.
    pub async fn check_channel(&self, user: UserId, channel: ChannelId) -> Result<(), Refusal> {
        if self.storage.can_read(channel, user).await? {
            return Ok(());
        }
        self.refuse_channel(channel).await
    }

    /// Why a channel found unreadable is refused: `not_found` if it does not exist,
    /// else `forbidden`.
    async fn refuse_channel(&self, channel: ChannelId) -> Result<(), Refusal> {
        match self.storage.channel(channel).await? {
            None => Refusal::err(
                ErrorCode::NotFound,
                format!("channel {channel} does not exist"),
            ),
            Some(_) => Refusal::err(
                ErrorCode::Forbidden,
                format!("not a member of channel {channel}"),
            ),
        }
    }

    /// May `user` read `channel`? (`false` if it does not exist.)
    pub async fn can_read(&self, channel: ChannelId, user: UserId) -> storage::Result<bool> {
        self.storage.can_read(channel, user).await
    }

    /// The space, if `user` is a member: `not_found` if it does not exist, `forbidden` if
    /// they are not a member.
    pub async fn member_space(&self, space: SpaceId, user: UserId) -> Result<Space, Refusal> {
        let space = self
            .storage
            .space(space)
            .await?
            .ok_or_else(|| Refusal::new(ErrorCode::NotFound, "space not found"))?;
        if !self.storage.is_space_member(space.id, user).await? {
            return Refusal::err(ErrorCode::Forbidden, "not a member of this space");
        }
        Ok(space)
    }

    /// Is `user` a member of `space`?
    pub async fn is_space_member(&self, space: SpaceId, user: UserId) -> storage::Result<bool> {
        self.storage.is_space_member(space, user).await
    }

    /// Who is told about `user`'s presence: the members of each of `user`'s spaces that
    /// have at most `max_space` members (`user` included if in such a space). Larger
    /// spaces are lazy: their members learn presence only by asking (`docs/protocol.md`).
    /// From the node's cache: no storage query once the spaces were read.
    pub async fn presence_audience(
        &self,
        user: UserId,
        max_space: usize,
    ) -> storage::Result<Vec<UserId>> {
        let mut audience = HashSet::new();
        for &space in self.cache.spaces_of(user).await?.iter() {
            let members = self.cache.members(space).await?;
            if members.len() <= max_space {
                audience.extend(members.iter().copied());
            }
        }
        let mut audience: Vec<UserId> = audience.into_iter().collect();
        audience.sort_unstable();
        Ok(audience)
    }

    /// Those of `users` who share a space (of any size) with `caller`, order kept, from
    /// the node's cache.
    pub async fn sharing_a_space(
        &self,
        caller: UserId,
        users: &[UserId],
    ) -> storage::Result<Vec<UserId>> {
        let asked: HashSet<UserId> = users.iter().copied().collect();
        let mut found = HashSet::new();
        for &space in self.cache.spaces_of(caller).await?.iter() {
            let members = self.cache.members(space).await?;
            found.extend(members.iter().copied().filter(|u| asked.contains(u)));
        }
        let mut seen = HashSet::new();
        Ok(users
            .iter()
            .copied()
            .filter(|u| found.contains(u) && seen.insert(*u))
            .collect())
    }

    /// Members of `space` (from the node's cache).
    pub async fn members(&self, space: SpaceId) -> storage::Result<Arc<[UserId]>> {
        self.cache.members(space).await
    }
}
