//! In-memory storage for phase `single`: nothing to set up, lost on exit.
//!
//! Metadata sits under one `RwLock` (held only for map look-ups, never across `.await`);
//! each channel's log is a `Vec` in a `DashMap` shard, so appends to different channels
//! rarely contend.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};

use dashmap::DashMap;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use parking_lot::RwLock;

use flowline_protocol::api::{Channel, ChannelKind, Provision, ProvisionedSpace, Space, User};
use flowline_protocol::ws::{Attachment, Message, MessageRef, ReactionCount, ThreadSummary};
use flowline_protocol::{AttachmentId, ChannelId, MessageId, Seq, SpaceId, UserId};

use super::contract::{
    Accounts, Attachments, Credentials, Messages, NewAttachment, NewMessage, ProvisionedIds,
    Provisioning, ReactionChange, Result, Spaces, Storage, ThreadLink, check_provision,
};
use crate::auth::TokenHash;
use crate::error::StorageError;

#[derive(Debug, Clone)]
struct ChannelRow {
    space: Option<SpaceId>,
    name: String,
    kind: ChannelKind,
    members: BTreeSet<UserId>,
    /// Threads only: the parent message.
    parent: Option<ThreadLink>,
}

#[derive(Default)]
struct Inner {
    users: HashMap<UserId, (String, Option<String>)>,
    by_name: HashMap<String, UserId>,
    tokens: HashMap<TokenHash, UserId>,
    spaces: BTreeMap<SpaceId, Space>,
    space_members: HashMap<SpaceId, BTreeSet<UserId>>,
    user_spaces: HashMap<UserId, BTreeSet<SpaceId>>,
    channels: BTreeMap<ChannelId, ChannelRow>,
    space_channels: HashMap<SpaceId, Vec<ChannelId>>,
    user_dms: HashMap<UserId, BTreeSet<ChannelId>>,
    dms: HashMap<(UserId, UserId), ChannelId>,
    /// Parent message id → its thread channel.
    threads: HashMap<MessageId, ChannelId>,
    /// Channel → its thread channels.
    thread_children: HashMap<ChannelId, Vec<ChannelId>>,
    /// Uploaded files and their uploader.
    attachments: HashMap<AttachmentId, (Attachment, UserId)>,
    /// Messages carrying each attachment.
    attachment_uses: HashMap<AttachmentId, Vec<(ChannelId, MessageId)>>,
    next_attachment: i64,
    next_user: i64,
    next_space: i64,
    next_channel: i64,
}

impl Inner {
    fn new_user(&mut self, name: &str, hash: Option<String>) -> Result<UserId> {
        if self.by_name.contains_key(name) {
            return Err(StorageError::Conflict(format!("user {name:?}")));
        }
        self.next_user += 1;
        let id = self.next_user;
        self.users.insert(id, (name.to_owned(), hash));
        self.by_name.insert(name.to_owned(), id);
        Ok(id)
    }

    fn new_space(&mut self, owner: UserId, name: &str) -> Space {
        self.next_space += 1;
        let space = Space {
            id: self.next_space,
            name: name.to_owned(),
            owner,
        };
        self.spaces.insert(space.id, space.clone());
        self.join(space.id, owner);
        space
    }

    fn join(&mut self, space: SpaceId, user: UserId) {
        self.space_members.entry(space).or_default().insert(user);
        self.user_spaces.entry(user).or_default().insert(space);
    }

    fn new_channel(
        &mut self,
        space: Option<SpaceId>,
        name: &str,
        kind: ChannelKind,
        members: BTreeSet<UserId>,
    ) -> ChannelId {
        self.next_channel += 1;
        let id = self.next_channel;
        if let Some(s) = space
            && kind != ChannelKind::Thread
        {
            self.space_channels.entry(s).or_default().push(id);
        }
        if kind == ChannelKind::Dm {
            for &u in &members {
                self.user_dms.entry(u).or_default().insert(id);
            }
        }
        self.channels.insert(
            id,
            ChannelRow {
                space,
                name: name.to_owned(),
                kind,
                members,
                parent: None,
            },
        );
        id
    }

    fn new_dm(&mut self, a: UserId, b: UserId) -> (ChannelId, bool) {
        let key = (a.min(b), a.max(b));
        if let Some(&id) = self.dms.get(&key) {
            return (id, false);
        }
        let id = self.new_channel(
            None,
            &format!("dm-{}-{}", key.0, key.1),
            ChannelKind::Dm,
            BTreeSet::from([a, b]),
        );
        self.dms.insert(key, id);
        (id, true)
    }

    fn is_member(&self, space: SpaceId, user: UserId) -> bool {
        self.space_members
            .get(&space)
            .is_some_and(|m| m.contains(&user))
    }

    fn can_read(&self, ch: &ChannelRow, user: UserId) -> bool {
        match (ch.kind, ch.space) {
            (ChannelKind::Dm, _) => ch.members.contains(&user),
            (ChannelKind::Thread, _) => ch.parent.as_ref().is_some_and(|p| {
                self.channels
                    .get(&p.parent_channel)
                    .is_some_and(|pc| pc.kind != ChannelKind::Thread && self.can_read(pc, user))
            }),
            (ChannelKind::Public, Some(s)) => self.is_member(s, user),
            (ChannelKind::Private, Some(s)) => {
                ch.members.contains(&user) && self.is_member(s, user)
            }
            (_, None) => false,
        }
    }

    fn user(&self, id: UserId) -> Option<User> {
        self.users.get(&id).map(|(name, _)| User {
            id,
            username: name.clone(),
        })
    }
}

/// One channel's messages and who reacted with what.
#[derive(Default)]
struct Log {
    msgs: Vec<Message>,
    reactors: HashMap<(MessageId, String), HashSet<UserId>>,
}

/// In-memory [`Storage`].
#[derive(Default)]
pub struct MemoryStorage {
    inner: RwLock<Inner>,
    logs: DashMap<ChannelId, Log>,
    /// Message id → (channel, seq).
    ids: DashMap<MessageId, (ChannelId, Seq)>,
    next_message: AtomicI64,
}

impl MemoryStorage {
    /// Empty storage.
    pub fn new() -> Self {
        Self::default()
    }

    fn last_seq(&self, channel: ChannelId) -> Seq {
        self.logs.get(&channel).map_or(0, |l| l.msgs.len() as Seq)
    }

    /// Run `f` on a message of `channel` under its log's lock; `None` if not there.
    fn with_message<T>(
        &self,
        channel: ChannelId,
        id: MessageId,
        f: impl FnOnce(&mut Message, &mut HashMap<(MessageId, String), HashSet<UserId>>) -> T,
    ) -> Option<T> {
        let (c, seq) = *self.ids.get(&id)?;
        if c != channel {
            return None;
        }
        let mut log = self.logs.get_mut(&channel)?;
        let Log { msgs, reactors } = &mut *log;
        let m = msgs.get_mut(usize::try_from(seq - 1).ok()?)?;
        Some(f(m, reactors))
    }

    fn to_channel(&self, id: ChannelId, row: &ChannelRow) -> Channel {
        Channel {
            id,
            space: row.space,
            name: row.name.clone(),
            kind: row.kind,
            last_seq: self.last_seq(id),
            parent: row.parent.as_ref().map(|p| MessageRef {
                channel: p.parent_channel,
                id: p.parent_id,
            }),
        }
    }
}

impl Accounts for MemoryStorage {
    fn create_user<'a>(&'a self, username: &'a str, hash: &'a str) -> BoxFuture<'a, Result<User>> {
        async move {
            let id = self
                .inner
                .write()
                .new_user(username, Some(hash.to_owned()))?;
            Ok(User {
                id,
                username: username.to_owned(),
            })
        }
        .boxed()
    }

    fn user_credentials<'a>(
        &'a self,
        username: &'a str,
    ) -> BoxFuture<'a, Result<Option<Credentials>>> {
        async move {
            let inner = self.inner.read();
            Ok(inner.by_name.get(username).and_then(|&id| {
                inner.users.get(&id).map(|(n, h)| {
                    (
                        User {
                            id,
                            username: n.clone(),
                        },
                        h.clone(),
                    )
                })
            }))
        }
        .boxed()
    }

    fn user(&self, id: UserId) -> BoxFuture<'_, Result<Option<User>>> {
        async move { Ok(self.inner.read().user(id)) }.boxed()
    }

    fn insert_token(&self, user: UserId, hash: TokenHash) -> BoxFuture<'_, Result<()>> {
        async move {
            self.inner.write().tokens.insert(hash, user);
            Ok(())
        }
        .boxed()
    }

    fn user_by_token(&self, hash: TokenHash) -> BoxFuture<'_, Result<Option<User>>> {
        async move {
            let inner = self.inner.read();
            Ok(inner.tokens.get(&hash).and_then(|&id| inner.user(id)))
        }
        .boxed()
    }

    fn delete_token(&self, hash: TokenHash) -> BoxFuture<'_, Result<bool>> {
        async move { Ok(self.inner.write().tokens.remove(&hash).is_some()) }.boxed()
    }
}

impl Spaces for MemoryStorage {
    fn create_space<'a>(&'a self, owner: UserId, name: &'a str) -> BoxFuture<'a, Result<Space>> {
        async move { Ok(self.inner.write().new_space(owner, name)) }.boxed()
    }

    fn space(&self, id: SpaceId) -> BoxFuture<'_, Result<Option<Space>>> {
        async move { Ok(self.inner.read().spaces.get(&id).cloned()) }.boxed()
    }

    fn spaces_of(&self, user: UserId) -> BoxFuture<'_, Result<Vec<Space>>> {
        async move {
            let inner = self.inner.read();
            Ok(inner
                .user_spaces
                .get(&user)
                .into_iter()
                .flatten()
                .filter_map(|s| inner.spaces.get(s).cloned())
                .collect())
        }
        .boxed()
    }

    fn join_space(&self, space: SpaceId, user: UserId) -> BoxFuture<'_, Result<()>> {
        async move {
            let mut inner = self.inner.write();
            if !inner.spaces.contains_key(&space) {
                return Err(StorageError::NotFound("space"));
            }
            inner.join(space, user);
            Ok(())
        }
        .boxed()
    }

    fn leave_space(&self, space: SpaceId, user: UserId) -> BoxFuture<'_, Result<()>> {
        async move {
            let mut inner = self.inner.write();
            if let Some(m) = inner.space_members.get_mut(&space) {
                m.remove(&user);
            }
            if let Some(s) = inner.user_spaces.get_mut(&user) {
                s.remove(&space);
            }
            Ok(())
        }
        .boxed()
    }

    fn space_members(&self, space: SpaceId) -> BoxFuture<'_, Result<Vec<User>>> {
        async move {
            let inner = self.inner.read();
            Ok(inner
                .space_members
                .get(&space)
                .into_iter()
                .flatten()
                .filter_map(|&u| inner.user(u))
                .collect())
        }
        .boxed()
    }

    fn is_space_member(&self, space: SpaceId, user: UserId) -> BoxFuture<'_, Result<bool>> {
        async move { Ok(self.inner.read().is_member(space, user)) }.boxed()
    }

    fn create_channel<'a>(
        &'a self,
        space: SpaceId,
        name: &'a str,
        kind: ChannelKind,
        members: &'a [UserId],
    ) -> BoxFuture<'a, Result<Channel>> {
        async move {
            let mut inner = self.inner.write();
            if !inner.spaces.contains_key(&space) {
                return Err(StorageError::NotFound("space"));
            }
            let members: BTreeSet<UserId> = members.iter().copied().collect();
            let id = inner.new_channel(Some(space), name, kind, members);
            Ok(Channel {
                id,
                space: Some(space),
                name: name.to_owned(),
                kind,
                last_seq: 0,
                parent: None,
            })
        }
        .boxed()
    }

    fn space_channels(&self, space: SpaceId, user: UserId) -> BoxFuture<'_, Result<Vec<Channel>>> {
        async move {
            let inner = self.inner.read();
            Ok(inner
                .space_channels
                .get(&space)
                .into_iter()
                .flatten()
                .filter_map(|id| {
                    let row = inner.channels.get(id)?;
                    inner.can_read(row, user).then(|| self.to_channel(*id, row))
                })
                .collect())
        }
        .boxed()
    }

    fn open_dm(&self, a: UserId, b: UserId) -> BoxFuture<'_, Result<(Channel, bool)>> {
        async move {
            if a == b {
                return Err(StorageError::Invalid(
                    "a DM needs two distinct users".into(),
                ));
            }
            let mut inner = self.inner.write();
            if !inner.users.contains_key(&a) || !inner.users.contains_key(&b) {
                return Err(StorageError::NotFound("user"));
            }
            let (id, created) = inner.new_dm(a, b);
            let row = inner
                .channels
                .get(&id)
                .ok_or(StorageError::NotFound("channel"))?;
            Ok((self.to_channel(id, row), created))
        }
        .boxed()
    }

    fn channel(&self, id: ChannelId) -> BoxFuture<'_, Result<Option<Channel>>> {
        async move {
            let inner = self.inner.read();
            Ok(inner.channels.get(&id).map(|row| self.to_channel(id, row)))
        }
        .boxed()
    }

    fn can_read(&self, channel: ChannelId, user: UserId) -> BoxFuture<'_, Result<bool>> {
        async move {
            let inner = self.inner.read();
            Ok(inner
                .channels
                .get(&channel)
                .is_some_and(|row| inner.can_read(row, user)))
        }
        .boxed()
    }

    fn readable_channels(&self, user: UserId) -> BoxFuture<'_, Result<Vec<ChannelId>>> {
        async move {
            let inner = self.inner.read();
            let mut out: Vec<ChannelId> = Vec::new();
            for s in inner.user_spaces.get(&user).into_iter().flatten() {
                for id in inner.space_channels.get(s).into_iter().flatten() {
                    if let Some(row) = inner.channels.get(id)
                        && inner.can_read(row, user)
                    {
                        out.push(*id);
                    }
                }
            }
            out.extend(inner.user_dms.get(&user).into_iter().flatten());
            let threads: Vec<ChannelId> = out
                .iter()
                .flat_map(|c| inner.thread_children.get(c).into_iter().flatten())
                .copied()
                .collect();
            out.extend(threads);
            out.sort_unstable();
            Ok(out)
        }
        .boxed()
    }

    fn co_members(&self, user: UserId) -> BoxFuture<'_, Result<Vec<UserId>>> {
        async move {
            let inner = self.inner.read();
            let mut out: BTreeSet<UserId> = BTreeSet::new();
            for s in inner.user_spaces.get(&user).into_iter().flatten() {
                out.extend(inner.space_members.get(s).into_iter().flatten());
            }
            Ok(out.into_iter().collect())
        }
        .boxed()
    }
}

impl Messages for MemoryStorage {
    fn last_seqs<'a>(
        &'a self,
        channels: &'a [ChannelId],
    ) -> BoxFuture<'a, Result<Vec<(ChannelId, Seq)>>> {
        async move {
            let inner = self.inner.read();
            Ok(channels
                .iter()
                .filter(|c| inner.channels.contains_key(c))
                .map(|&c| (c, self.last_seq(c)))
                .collect())
        }
        .boxed()
    }

    fn append_message(&self, msg: NewMessage) -> BoxFuture<'_, Result<Message>> {
        async move {
            let parent = match self.inner.read().channels.get(&msg.channel) {
                None => return Err(StorageError::NotFound("channel")),
                Some(row) => row.parent.clone(),
            };
            let m = {
                let mut log = self.logs.entry(msg.channel).or_default();
                let m = Message {
                    channel: msg.channel,
                    seq: log.msgs.len() as Seq + 1,
                    id: self.next_message.fetch_add(1, Ordering::Relaxed) + 1,
                    author: msg.author,
                    body: msg.body,
                    nonce: msg.nonce,
                    created_at: msg.created_at,
                    kind: msg.kind,
                    reply_to: msg.reply_to,
                    quote: msg.quote,
                    forwarded_from: msg.forwarded_from,
                    attachments: msg.attachments,
                    ..Message::default()
                };
                log.msgs.push(m.clone());
                self.ids.insert(m.id, (m.channel, m.seq));
                m
            };
            if !m.attachments.is_empty() {
                let mut inner = self.inner.write();
                for a in &m.attachments {
                    inner
                        .attachment_uses
                        .entry(a.id)
                        .or_default()
                        .push((m.channel, m.id));
                }
            }
            // A reply in a thread updates the parent message's summary (the thread's log
            // lock is released first: both may sit in one DashMap shard).
            if let Some(p) = parent {
                self.with_message(p.parent_channel, p.parent_id, |pm, _| {
                    if let Some(t) = &mut pm.thread
                        && t.replies < m.seq as u32
                    {
                        t.replies = m.seq as u32;
                        t.last_reply_at = Some(m.created_at);
                    }
                });
            }
            Ok(m)
        }
        .boxed()
    }

    fn messages(
        &self,
        channel: ChannelId,
        before: Option<Seq>,
        after: Option<Seq>,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<Message>>> {
        async move {
            let Some(log) = self.logs.get(&channel) else {
                return Ok(Vec::new());
            };
            let log = &log.msgs;
            // seq s sits at index s-1.
            let len = log.len() as Seq;
            let hi = before.map_or(len, |b| (b - 1).clamp(0, len)); // last seq included
            let limit = Seq::from(limit);
            let (lo, hi) = match after {
                Some(a) => {
                    let lo = a.clamp(0, len) + 1;
                    (lo, hi.min(lo + limit - 1))
                }
                None => ((hi - limit + 1).max(1), hi),
            };
            if lo > hi {
                return Ok(Vec::new());
            }
            Ok(log[(lo - 1) as usize..hi as usize].to_vec())
        }
        .boxed()
    }

    fn message(&self, channel: ChannelId, id: MessageId) -> BoxFuture<'_, Result<Option<Message>>> {
        async move { Ok(self.with_message(channel, id, |m, _| m.clone())) }.boxed()
    }

    fn edit_message(
        &self,
        channel: ChannelId,
        id: MessageId,
        body: String,
        at: i64,
    ) -> BoxFuture<'_, Result<Option<Message>>> {
        async move {
            Ok(self
                .with_message(channel, id, |m, _| {
                    if m.deleted_at.is_some() {
                        return None;
                    }
                    m.body = body;
                    m.edited_at = Some(at);
                    Some(m.clone())
                })
                .flatten())
        }
        .boxed()
    }

    fn delete_message(
        &self,
        channel: ChannelId,
        id: MessageId,
        at: i64,
    ) -> BoxFuture<'_, Result<Option<Message>>> {
        async move {
            Ok(self
                .with_message(channel, id, |m, reactors| {
                    if m.deleted_at.is_some() {
                        return None;
                    }
                    m.deleted_at = Some(at);
                    m.body.clear();
                    m.attachments.clear();
                    m.quote = None;
                    m.forwarded_from = None;
                    for r in m.reactions.drain(..) {
                        reactors.remove(&(id, r.emoji));
                    }
                    Some(m.clone())
                })
                .flatten())
        }
        .boxed()
    }

    fn react<'a>(
        &'a self,
        channel: ChannelId,
        id: MessageId,
        user: UserId,
        emoji: &'a str,
        add: bool,
    ) -> BoxFuture<'a, Result<Option<ReactionChange>>> {
        async move {
            Ok(self
                .with_message(channel, id, |m, reactors| {
                    if m.deleted_at.is_some() {
                        return None;
                    }
                    let users = reactors.entry((id, emoji.to_owned())).or_default();
                    let changed = if add {
                        users.insert(user)
                    } else {
                        users.remove(&user)
                    };
                    let count = users.len() as u32;
                    if count == 0 {
                        reactors.remove(&(id, emoji.to_owned()));
                    }
                    match m.reactions.iter().position(|r| r.emoji == emoji) {
                        Some(i) if count == 0 => {
                            m.reactions.remove(i);
                        }
                        Some(i) => m.reactions[i].count = count,
                        None if count > 0 => m.reactions.push(ReactionCount {
                            emoji: emoji.to_owned(),
                            count,
                        }),
                        None => {}
                    }
                    Some(ReactionChange {
                        seq: m.seq,
                        changed,
                        count,
                    })
                })
                .flatten())
        }
        .boxed()
    }

    fn create_thread<'a>(
        &'a self,
        channel: ChannelId,
        id: MessageId,
        name: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<(ThreadSummary, Seq, bool)>>> {
        async move {
            let Some((seq, live)) =
                self.with_message(channel, id, |m, _| (m.seq, m.deleted_at.is_none()))
            else {
                return Ok(None);
            };
            // Holding the metadata lock makes concurrent starts create one thread; the
            // log lock taken inside is never held while taking the metadata lock.
            let mut inner = self.inner.write();
            let space = match inner.channels.get(&channel) {
                None => return Ok(None),
                Some(row) if row.kind == ChannelKind::Thread => {
                    return Err(StorageError::Invalid(
                        "a thread cannot be started inside a thread".into(),
                    ));
                }
                Some(row) => row.space,
            };
            if inner.threads.contains_key(&id) {
                let summary = self
                    .with_message(channel, id, |m, _| m.thread.clone())
                    .flatten();
                return Ok(summary.map(|s| (s, seq, false)));
            }
            if !live {
                return Ok(None);
            }
            let name = name.unwrap_or("thread");
            let tid = inner.new_channel(space, name, ChannelKind::Thread, BTreeSet::new());
            if let Some(row) = inner.channels.get_mut(&tid) {
                row.parent = Some(ThreadLink {
                    parent_channel: channel,
                    parent_id: id,
                    parent_seq: seq,
                    name: Some(name.to_owned()),
                });
            }
            inner.threads.insert(id, tid);
            inner.thread_children.entry(channel).or_default().push(tid);
            let summary = ThreadSummary {
                channel: tid,
                name: Some(name.to_owned()),
                replies: 0,
                last_reply_at: None,
            };
            self.with_message(channel, id, |m, _| m.thread = Some(summary.clone()));
            drop(inner);
            Ok(Some((summary, seq, true)))
        }
        .boxed()
    }

    fn thread_link(&self, channel: ChannelId) -> BoxFuture<'_, Result<Option<ThreadLink>>> {
        async move {
            Ok(self
                .inner
                .read()
                .channels
                .get(&channel)
                .and_then(|r| r.parent.clone()))
        }
        .boxed()
    }
}

impl Attachments for MemoryStorage {
    fn insert_attachment(&self, a: NewAttachment) -> BoxFuture<'_, Result<Attachment>> {
        async move {
            let mut inner = self.inner.write();
            inner.next_attachment += 1;
            let att = Attachment {
                id: inner.next_attachment,
                filename: a.filename,
                content_type: a.content_type,
                size: a.size,
                sha256: a.sha256,
            };
            inner.attachments.insert(att.id, (att.clone(), a.uploader));
            Ok(att)
        }
        .boxed()
    }

    fn attachments<'a>(
        &'a self,
        ids: &'a [AttachmentId],
    ) -> BoxFuture<'a, Result<Vec<(Attachment, UserId)>>> {
        async move {
            let inner = self.inner.read();
            Ok(ids
                .iter()
                .filter_map(|id| inner.attachments.get(id).cloned())
                .collect())
        }
        .boxed()
    }

    fn can_download(&self, id: AttachmentId, user: UserId) -> BoxFuture<'_, Result<bool>> {
        async move {
            let uses = {
                let inner = self.inner.read();
                match inner.attachments.get(&id) {
                    None => return Ok(false),
                    Some((_, uploader)) if *uploader == user => return Ok(true),
                    Some(_) => {}
                }
                inner
                    .attachment_uses
                    .get(&id)
                    .map(|u| {
                        u.iter()
                            .filter(|(c, _)| {
                                inner
                                    .channels
                                    .get(c)
                                    .is_some_and(|row| inner.can_read(row, user))
                            })
                            .copied()
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
            };
            // Only a live message still carries it.
            Ok(uses.into_iter().any(|(c, m)| {
                self.with_message(c, m, |msg, _| msg.deleted_at.is_none())
                    .unwrap_or(false)
            }))
        }
        .boxed()
    }
}

impl Provisioning for MemoryStorage {
    fn provision<'a>(
        &'a self,
        req: &'a Provision,
        tokens: &'a [TokenHash],
    ) -> BoxFuture<'a, Result<ProvisionedIds>> {
        async move {
            check_provision(req, tokens.len())?;
            let mut inner = self.inner.write();
            for i in 0..req.users {
                let name = format!("{}{i}", req.username_prefix);
                if inner.by_name.contains_key(&name) {
                    return Err(StorageError::Conflict(format!("user {name:?}")));
                }
            }
            let mut out = ProvisionedIds::default();
            for (i, hash) in tokens.iter().enumerate() {
                let id = inner.new_user(&format!("{}{i}", req.username_prefix), None)?;
                inner.tokens.insert(*hash, id);
                out.users.push(id);
            }
            let users = out.users.clone();
            let uid = |i: &u32| users[*i as usize];
            for s in &req.spaces {
                let space = inner.new_space(uid(&s.members[0]), &s.name);
                for m in &s.members {
                    inner.join(space.id, uid(m));
                }
                let mut channels = Vec::with_capacity(s.channels.len());
                for c in &s.channels {
                    let (kind, members) = match &c.members {
                        None => (ChannelKind::Public, BTreeSet::new()),
                        Some(m) => (ChannelKind::Private, m.iter().map(uid).collect()),
                    };
                    channels.push(inner.new_channel(Some(space.id), &c.name, kind, members));
                }
                out.spaces.push(ProvisionedSpace {
                    id: space.id,
                    channels,
                });
            }
            for (a, b) in &req.dms {
                let (id, _) = inner.new_dm(uid(a), uid(b));
                out.dms.push(id);
            }
            Ok(out)
        }
        .boxed()
    }
}

impl Storage for MemoryStorage {
    fn ping(&self) -> BoxFuture<'_, Result<()>> {
        async { Ok(()) }.boxed()
    }
}
