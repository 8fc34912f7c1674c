//! The storage contract every implementation keeps: the value types it takes and
//! returns, and its traits, one per job ([`Accounts`], [`Spaces`], [`Messages`],
//! [`Attachments`], [`Provisioning`]), gathered in [`Storage`].

use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use flowline_protocol::api::{Channel, ChannelKind, Provision, ProvisionedSpace, Space, User};
use flowline_protocol::ws::{Attachment, Message, MessageKind, Origin, Quote, ThreadSummary};
use flowline_protocol::{AttachmentId, ChannelId, MessageId, Seq, SpaceId, UserId};

use crate::auth::TokenHash;
use crate::error::StorageError;

/// A user and their password hash (PHC string; `None` for provisioned users).
pub type Credentials = (User, Option<String>);

/// Result of a storage call.
pub type Result<T> = std::result::Result<T, StorageError>;

/// A message to append; storage assigns its id and seq.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Target channel.
    pub channel: ChannelId,
    /// Author.
    pub author: UserId,
    /// Text.
    pub body: String,
    /// Client nonce, echoed.
    pub nonce: Option<String>,
    /// Creation time, Unix ms.
    pub created_at: i64,
    /// How the body is read (references below are already checked by the caller).
    pub kind: MessageKind,
    /// `reply`: the answered message (same channel).
    pub reply_to: Option<MessageId>,
    /// `quote`: the quoted message (same channel) and excerpt.
    pub quote: Option<Quote>,
    /// `forward`: where the message comes from.
    pub forwarded_from: Option<Origin>,
    /// Attachments (already uploaded, checked by the caller), in order.
    pub attachments: Vec<Attachment>,
}

impl NewMessage {
    /// A plain text message.
    pub fn text(
        channel: ChannelId,
        author: UserId,
        body: String,
        nonce: Option<String>,
        created_at: i64,
    ) -> Self {
        Self {
            channel,
            author,
            body,
            nonce,
            created_at,
            kind: MessageKind::Text,
            reply_to: None,
            quote: None,
            forwarded_from: None,
            attachments: Vec::new(),
        }
    }
}

/// A thread channel's link to its parent message (never changes once created).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadLink {
    /// The channel of the parent message.
    pub parent_channel: ChannelId,
    /// The parent message.
    pub parent_id: MessageId,
    /// Its seq in the parent channel.
    pub parent_seq: Seq,
    /// The thread's name, if given.
    pub name: Option<String>,
}

/// Result of [`Storage::react`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReactionChange {
    /// The message's seq.
    pub seq: Seq,
    /// Whether the set changed (false: the reaction was already there / not there).
    pub changed: bool,
    /// The emoji's count after the call.
    pub count: u32,
}

/// An uploaded file's metadata to record.
#[derive(Debug, Clone)]
pub struct NewAttachment {
    /// Who uploaded it.
    pub uploader: UserId,
    /// Client file name.
    pub filename: String,
    /// Content type (already checked against the allowed list).
    pub content_type: String,
    /// Size, bytes.
    pub size: u64,
    /// Hex sha256 of the content (its file name under the uploads dir).
    pub sha256: String,
    /// Upload time, Unix ms.
    pub created_at: i64,
}

/// Ids created by [`Storage::provision`], in request order.
#[derive(Debug, Clone, Default)]
pub struct ProvisionedIds {
    /// One id per user index.
    pub users: Vec<UserId>,
    /// One entry per space.
    pub spaces: Vec<ProvisionedSpace>,
    /// One channel per DM pair.
    pub dms: Vec<ChannelId>,
}

/// Users and their session tokens.
pub trait Accounts: Send + Sync + 'static {
    /// Create a user; `Conflict` if the name is taken.
    fn create_user<'a>(
        &'a self,
        username: &'a str,
        password_hash: &'a str,
    ) -> BoxFuture<'a, Result<User>>;
    /// A user and their password hash (PHC string; `None` for provisioned users).
    fn user_credentials<'a>(
        &'a self,
        username: &'a str,
    ) -> BoxFuture<'a, Result<Option<Credentials>>>;
    /// A user by id.
    fn user(&self, id: UserId) -> BoxFuture<'_, Result<Option<User>>>;
    /// Remember a session token (by hash) for a user.
    fn insert_token(&self, user: UserId, hash: TokenHash) -> BoxFuture<'_, Result<()>>;
    /// The user a token belongs to.
    fn user_by_token(&self, hash: TokenHash) -> BoxFuture<'_, Result<Option<User>>>;
    /// Revoke a token; `true` if it existed.
    fn delete_token(&self, hash: TokenHash) -> BoxFuture<'_, Result<bool>>;
    /// The users of several tokens in one call (unknown tokens left out), for the
    /// batched sign-in of a connect storm (`crate::batch`). The default asks one by one;
    /// Postgres answers in one query.
    fn users_by_tokens<'a>(
        &'a self,
        hashes: &'a [TokenHash],
    ) -> BoxFuture<'a, Result<Vec<(TokenHash, User)>>> {
        async move {
            let mut out = Vec::with_capacity(hashes.len());
            for &h in hashes {
                if let Some(u) = self.user_by_token(h).await? {
                    out.push((h, u));
                }
            }
            Ok(out)
        }
        .boxed()
    }
}

/// Spaces, channels, DMs and who may read what (the authorization rules of the module doc).
pub trait Spaces: Send + Sync + 'static {
    /// Create a space owned (and joined) by `owner`.
    fn create_space<'a>(&'a self, owner: UserId, name: &'a str) -> BoxFuture<'a, Result<Space>>;
    /// A space by id.
    fn space(&self, id: SpaceId) -> BoxFuture<'_, Result<Option<Space>>>;
    /// Spaces a user belongs to, by id.
    fn spaces_of(&self, user: UserId) -> BoxFuture<'_, Result<Vec<Space>>>;
    /// Add a member (idempotent); `NotFound` if the space does not exist.
    fn join_space(&self, space: SpaceId, user: UserId) -> BoxFuture<'_, Result<()>>;
    /// Remove a member (idempotent).
    fn leave_space(&self, space: SpaceId, user: UserId) -> BoxFuture<'_, Result<()>>;
    /// Members of a space, by id.
    fn space_members(&self, space: SpaceId) -> BoxFuture<'_, Result<Vec<User>>>;
    /// Is `user` a member of `space`?
    fn is_space_member(&self, space: SpaceId, user: UserId) -> BoxFuture<'_, Result<bool>>;
    /// Create a public (`members` empty and `kind` public) or private channel in a space.
    fn create_channel<'a>(
        &'a self,
        space: SpaceId,
        name: &'a str,
        kind: ChannelKind,
        members: &'a [UserId],
    ) -> BoxFuture<'a, Result<Channel>>;
    /// Channels of a space that `user` can read, by id.
    fn space_channels(&self, space: SpaceId, user: UserId) -> BoxFuture<'_, Result<Vec<Channel>>>;
    /// The DM channel of two distinct users, created if missing; `true` if created.
    fn open_dm(&self, a: UserId, b: UserId) -> BoxFuture<'_, Result<(Channel, bool)>>;
    /// A channel by id.
    fn channel(&self, id: ChannelId) -> BoxFuture<'_, Result<Option<Channel>>>;
    /// May `user` read (and so subscribe to and post in) `channel`? `false` if missing.
    fn can_read(&self, channel: ChannelId, user: UserId) -> BoxFuture<'_, Result<bool>>;
    /// [`can_read`](Self::can_read) of several (channel, user) pairs, asked on the message
    /// path (sessions re-checking the access they remembered before a write,
    /// `membership::Membership::authorize`, batched across the node's sessions): answers
    /// in the order asked, from the message path's own budget, so a send never waits
    /// behind a connect storm's reads (Postgres: one query on the `send` pool). The
    /// default asks `can_read` one by one.
    fn recheck_reads<'a>(
        &'a self,
        pairs: &'a [(ChannelId, UserId)],
    ) -> BoxFuture<'a, Result<Vec<bool>>> {
        async move {
            let mut out = Vec::with_capacity(pairs.len());
            for &(c, u) in pairs {
                out.push(self.can_read(c, u).await?);
            }
            Ok(out)
        }
        .boxed()
    }
    /// Every channel `user` can read, by id.
    fn readable_channels(&self, user: UserId) -> BoxFuture<'_, Result<Vec<ChannelId>>>;
    /// [`readable_channels`](Self::readable_channels) of several users in one call, as
    /// (user, channel) pairs. The default asks one by one; Postgres answers in one query.
    fn readable_channels_of<'a>(
        &'a self,
        users: &'a [UserId],
    ) -> BoxFuture<'a, Result<Vec<(UserId, ChannelId)>>> {
        async move {
            let mut out = Vec::new();
            for &u in users {
                out.extend(self.readable_channels(u).await?.into_iter().map(|c| (u, c)));
            }
            Ok(out)
        }
        .boxed()
    }
    /// The spaces of several users in one call, as (user, space) pairs. The default asks
    /// one by one; Postgres answers in one query.
    fn spaces_of_users<'a>(
        &'a self,
        users: &'a [UserId],
    ) -> BoxFuture<'a, Result<Vec<(UserId, SpaceId)>>> {
        async move {
            let mut out = Vec::new();
            for &u in users {
                out.extend(self.spaces_of(u).await?.into_iter().map(|s| (u, s.id)));
            }
            Ok(out)
        }
        .boxed()
    }
    /// Users sharing at least one space with `user` (`user` included if in any space).
    fn co_members(&self, user: UserId) -> BoxFuture<'_, Result<Vec<UserId>>>;
}

/// Channel logs: appends with gapless seqs, reads, edits, deletes, reactions and threads.
pub trait Messages: Send + Sync + 'static {
    /// Latest seq of each existing channel in `channels`.
    fn last_seqs<'a>(
        &'a self,
        channels: &'a [ChannelId],
    ) -> BoxFuture<'a, Result<Vec<(ChannelId, Seq)>>>;
    /// Append a message, assigning the channel's next seq; durable when this returns.
    fn append_message(&self, msg: NewMessage) -> BoxFuture<'_, Result<Message>>;
    /// Messages by seq range, oldest first: with `after`, the first `limit` messages
    /// with seq > after (and < before if given); otherwise the last `limit` with
    /// seq < before (or the latest).
    fn messages(
        &self,
        channel: ChannelId,
        before: Option<Seq>,
        after: Option<Seq>,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<Message>>>;
    /// One message of a channel by id (tombstones included); `None` if not there.
    fn message(&self, channel: ChannelId, id: MessageId) -> BoxFuture<'_, Result<Option<Message>>>;
    /// Replace the body of a live (not deleted) message and set `edited_at`; `None` if the
    /// message is missing or deleted. The caller checks authorship.
    fn edit_message(
        &self,
        channel: ChannelId,
        id: MessageId,
        body: String,
        at: i64,
    ) -> BoxFuture<'_, Result<Option<Message>>>;
    /// Turn a message into a tombstone (empty body, no attachments or reactions, seq kept);
    /// `None` if missing or already deleted.
    fn delete_message(
        &self,
        channel: ChannelId,
        id: MessageId,
        at: i64,
    ) -> BoxFuture<'_, Result<Option<Message>>>;
    /// Add (`add`) or remove `user`'s `emoji` on a live message, at most once per user,
    /// emoji and message even under concurrent calls; `None` if the message is missing
    /// or deleted.
    fn react<'a>(
        &'a self,
        channel: ChannelId,
        id: MessageId,
        user: UserId,
        emoji: &'a str,
        add: bool,
    ) -> BoxFuture<'a, Result<Option<ReactionChange>>>;
    /// Start a thread on a live message of a non-thread channel, or return the existing
    /// one (`false`). `None` if the message is missing or deleted.
    fn create_thread<'a>(
        &'a self,
        channel: ChannelId,
        id: MessageId,
        name: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<(ThreadSummary, Seq, bool)>>>;
    /// The parent of a thread channel; `None` for any other channel.
    fn thread_link(&self, channel: ChannelId) -> BoxFuture<'_, Result<Option<ThreadLink>>>;
}

/// Uploaded files' metadata and who may download them.
pub trait Attachments: Send + Sync + 'static {
    /// Record an uploaded file's metadata.
    fn insert_attachment(&self, a: NewAttachment) -> BoxFuture<'_, Result<Attachment>>;
    /// Attachments by id with their uploader, in the order asked (missing ones left out).
    fn attachments<'a>(
        &'a self,
        ids: &'a [AttachmentId],
    ) -> BoxFuture<'a, Result<Vec<(Attachment, UserId)>>>;
    /// May `user` download the attachment: its uploader, or a reader of a channel where a
    /// live message carries it. `false` if it does not exist.
    fn can_download(&self, id: AttachmentId, user: UserId) -> BoxFuture<'_, Result<bool>>;
}

/// Bulk creation of users, spaces, channels and DMs for load tests.
pub trait Provisioning: Send + Sync + 'static {
    /// Bulk provisioning: users (with the given token hashes, one per user, and no
    /// usable password), spaces with members and channels, DMs.
    fn provision<'a>(
        &'a self,
        req: &'a Provision,
        tokens: &'a [TokenHash],
    ) -> BoxFuture<'a, Result<ProvisionedIds>>;
}

/// Where a chat node keeps users, sessions, spaces, channels and messages: every part
/// of the contract, so the node holds one `Arc<dyn Storage>`.
pub trait Storage: Accounts + Spaces + Messages + Attachments + Provisioning {
    /// Is storage reachable?
    fn ping(&self) -> BoxFuture<'_, Result<()>>;
}

/// Check a provisioning request's indices before touching storage.
pub(crate) fn check_provision(req: &Provision, tokens: usize) -> Result<()> {
    let n = req.users;
    if tokens != n as usize {
        return Err(StorageError::Invalid("one token per user".into()));
    }
    let bad = |i: u32| i >= n;
    for s in &req.spaces {
        if s.members.is_empty() {
            return Err(StorageError::Invalid(format!(
                "space {:?} needs at least its owner as member",
                s.name
            )));
        }
        if s.members.iter().copied().any(bad) {
            return Err(StorageError::Invalid(format!(
                "space {:?}: user index out of range",
                s.name
            )));
        }
        for c in &s.channels {
            if let Some(m) = &c.members
                && m.iter().copied().any(bad)
            {
                return Err(StorageError::Invalid(format!(
                    "channel {:?}: user index out of range",
                    c.name
                )));
            }
        }
    }
    for &(a, b) in &req.dms {
        if bad(a) || bad(b) || a == b {
            return Err(StorageError::Invalid(format!(
                "dm ({a}, {b}): needs two distinct user indices in range"
            )));
        }
    }
    Ok(())
}
