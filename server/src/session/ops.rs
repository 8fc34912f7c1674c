//! The chat-feature operations of a session: message kinds on `send`, `edit`, `delete`,
//! `react`/`unreact`, `start_thread`, `typing`, `set_presence`, and presence on connect
//! and disconnect.
//!
//! Answers (`ack`, `ok`, `error`, the requester's `thread_created`) go to the session
//! itself; every event for others leaves through [`crate::hub::Hub::emit`] (or
//! [`crate::hub::Hub::post`] for messages) so a cluster bus can carry it across nodes.

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;

use flowline_protocol::api::User;
use flowline_protocol::ws::{
    Attachment, ErrorCode, Message, MessageKind, MessageRef, Origin, Presence, PresenceStatus,
    Quote, ServerEvent, ThreadSummary,
};
use flowline_protocol::{AttachmentId, ChannelId, MessageId, UserId};

use super::{MAX_NONCE, Session};
use crate::app::{App, now_ms};
use crate::error::StorageError;
use crate::hub::{Audience, PostError};
use crate::storage::{NewMessage, ThreadLink};

/// Longest reaction emoji: a unicode sequence (flags, skin tones and ZWJ families stay
/// well below) or a `:name:`, in characters.
pub(super) const MAX_EMOJI_CHARS: usize = 34;

/// A `send` as received.
pub(super) struct SendOp {
    pub req_id: u64,
    pub channel: ChannelId,
    pub body: String,
    pub nonce: Option<String>,
    pub kind: MessageKind,
    pub reply_to: Option<MessageId>,
    pub quote: Option<Quote>,
    pub forward_of: Option<MessageRef>,
    pub attachments: Vec<AttachmentId>,
}

/// Why an operation was refused: the error code and message to answer with.
type Refusal = (ErrorCode, String);

fn refuse<T>(code: ErrorCode, message: impl Into<String>) -> Result<T, Refusal> {
    Err((code, message.into()))
}

/// Serialize `ev` and hand it to the hub for `audience`.
pub(crate) fn emit(app: &App, audience: &Audience, ev: &ServerEvent) {
    match serde_json::to_string(ev) {
        Ok(text) => {
            let text: Utf8Bytes = text.into();
            app.hub.emit(audience, &text);
        }
        Err(e) => tracing::error!(error = %e, "serializing an event"),
    }
}

/// Announce a presence change to every user sharing a space with its user.
pub(crate) async fn announce_presence(app: &App, p: Presence) {
    match app.storage.co_members(p.user_id).await {
        Ok(users) if !users.is_empty() => {
            emit(app, &Audience::Users(users), &ServerEvent::Presence(p));
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot announce presence: storage failed"),
    }
}

/// Presence of those of `users` who are not offline. In a cluster, users connected to
/// other nodes are online per the bus's registry (their chosen status and text are known
/// to their own node only).
pub(crate) async fn presence_snapshot(app: &App, users: &[UserId]) -> Vec<Presence> {
    let mut snapshot = app.features.presence.snapshot(users).await;
    if let Some(bus) = app.hub.bus() {
        match bus.online_users(users).await {
            Ok(online) => {
                let known: std::collections::HashSet<UserId> =
                    snapshot.iter().map(|p| p.user_id).collect();
                snapshot.extend(
                    online
                        .into_iter()
                        .filter(|u| !known.contains(u))
                        .map(|user_id| Presence {
                            user_id,
                            status: PresenceStatus::Online,
                            custom: None,
                        }),
                );
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the cluster's presence registry"),
        }
    }
    snapshot
}

/// A user joined a space: its members and the joiner learn each other's presence (they
/// shared no space before, so neither was told).
pub(crate) async fn presence_on_join(app: &App, joiner: UserId, members: &[UserId]) {
    let mut everyone = members.to_vec();
    everyone.push(joiner);
    let others: Vec<UserId> = members.iter().copied().filter(|&u| u != joiner).collect();
    for p in presence_snapshot(app, &everyone).await {
        let audience = if p.user_id == joiner {
            Audience::Users(others.clone())
        } else {
            Audience::Users(vec![joiner])
        };
        emit(app, &audience, &ServerEvent::Presence(p));
    }
}

/// Is `emoji` a unicode emoji sequence or a `:name:`?
pub(super) fn valid_emoji(emoji: &str) -> Result<(), Refusal> {
    let n = emoji.chars().count();
    if n == 0 || n > MAX_EMOJI_CHARS {
        return refuse(
            ErrorCode::TooLong,
            format!("emoji must have 1 to {MAX_EMOJI_CHARS} characters"),
        );
    }
    if let Some(name) = emoji.strip_prefix(':').and_then(|e| e.strip_suffix(':')) {
        let ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+'));
        return if ok {
            Ok(())
        } else {
            refuse(
                ErrorCode::BadRequest,
                ":name: emoji use letters, digits, _ - + only",
            )
        };
    }
    // A unicode emoji: no ASCII (except the keycap digits #*0-9 followed by U+20E3), no
    // whitespace or control characters.
    let keycap = emoji.contains('\u{20E3}');
    let ok = emoji.chars().all(|c| {
        !c.is_control()
            && !c.is_whitespace()
            && (!c.is_ascii() || (keycap && (c.is_ascii_digit() || c == '#' || c == '*')))
    });
    if ok {
        Ok(())
    } else {
        refuse(
            ErrorCode::BadRequest,
            "emoji must be a unicode emoji or :name:",
        )
    }
}

impl Session {
    fn check_body(&self, body: &str, allow_empty: bool) -> Result<(), Refusal> {
        let max = self.app.config.limits.max_body_chars;
        let n = body.chars().count();
        if (n == 0 && !allow_empty) || n > max {
            return refuse(
                ErrorCode::TooLong,
                format!("body must have 1 to {max} characters"),
            );
        }
        Ok(())
    }

    /// Answer `Err` refusals uniformly.
    fn answer(&self, req_id: Option<u64>, r: Result<(), Refusal>) {
        if let Err((code, msg)) = r {
            if code == ErrorCode::Unavailable {
                self.app.metrics.storage_errors.increment(1);
            }
            self.error(req_id, code, msg);
        }
    }

    /// A referenced message of `channel`, live (not deleted).
    async fn live_message(
        &self,
        channel: ChannelId,
        id: MessageId,
        what: &str,
    ) -> Result<Message, Refusal> {
        match self.app.storage.message(channel, id).await {
            Ok(Some(m)) if m.deleted_at.is_none() => Ok(m),
            Ok(Some(_)) => refuse(
                ErrorCode::InvalidReference,
                format!("{what}: message {id} was deleted"),
            ),
            Ok(None) => refuse(
                ErrorCode::InvalidReference,
                format!("{what}: no message {id} in channel {channel}"),
            ),
            Err(e) => Err(storage_refusal(&e)),
        }
    }

    /// Build the message a `send` asks for, checking every reference.
    async fn build_message(&mut self, user: &User, op: SendOp) -> Result<NewMessage, Refusal> {
        if op.nonce.as_ref().is_some_and(|n| n.len() > MAX_NONCE) {
            return refuse(
                ErrorCode::TooLong,
                format!("nonce longer than {MAX_NONCE} bytes"),
            );
        }
        let max_att = self.app.config.features.max_attachments;
        if op.attachments.len() > max_att {
            return refuse(
                ErrorCode::TooLong,
                format!("at most {max_att} attachments per message"),
            );
        }
        let mismatch = |field: &str| -> Result<(), Refusal> {
            refuse(
                ErrorCode::InvalidReference,
                format!("`{field}` does not go with kind {:?}", op.kind),
            )
        };
        if op.reply_to.is_some() && op.kind != MessageKind::Reply {
            mismatch("reply_to")?;
        }
        if op.quote.is_some() && op.kind != MessageKind::Quote {
            mismatch("quote")?;
        }
        if op.forward_of.is_some() && op.kind != MessageKind::Forward {
            mismatch("forward_of")?;
        }
        if op.kind != MessageKind::Forward {
            self.check_body(&op.body, !op.attachments.is_empty())?;
        }
        self.authorize(user, op.channel).await?;
        let mut msg = NewMessage::text(op.channel, user.id, op.body, op.nonce, now_ms() as i64);
        msg.kind = op.kind;
        match op.kind {
            MessageKind::Text | MessageKind::Markdown => {}
            MessageKind::Reply => {
                let Some(id) = op.reply_to else {
                    return refuse(ErrorCode::InvalidReference, "kind reply needs `reply_to`");
                };
                self.live_message(op.channel, id, "reply_to").await?;
                msg.reply_to = Some(id);
            }
            MessageKind::Quote => {
                let Some(q) = op.quote else {
                    return refuse(ErrorCode::InvalidReference, "kind quote needs `quote`");
                };
                if q.excerpt.is_empty() {
                    return refuse(ErrorCode::InvalidReference, "the quoted excerpt is empty");
                }
                let quoted = self.live_message(op.channel, q.id, "quote").await?;
                if !quoted.body.contains(&q.excerpt) {
                    return refuse(
                        ErrorCode::InvalidReference,
                        format!("the excerpt does not occur in message {}", q.id),
                    );
                }
                msg.quote = Some(q);
            }
            MessageKind::Forward => {
                let Some(r) = op.forward_of else {
                    return refuse(
                        ErrorCode::InvalidReference,
                        "kind forward needs `forward_of`",
                    );
                };
                if let Err((code, m)) = self.authorize(user, r.channel).await {
                    let code = if code == ErrorCode::Unavailable {
                        code
                    } else {
                        ErrorCode::InvalidReference
                    };
                    return Err((code, format!("forward_of: {m}")));
                }
                let orig = self.live_message(r.channel, r.id, "forward_of").await?;
                // The forwarded copy carries the original's body and files, and the
                // first origin if the original was itself a forward.
                msg.forwarded_from = Some(orig.forwarded_from.clone().unwrap_or(Origin {
                    channel: orig.channel,
                    id: orig.id,
                    author: orig.author,
                    created_at: orig.created_at,
                }));
                msg.body = orig.body;
                msg.attachments = orig.attachments;
            }
        }
        if !op.attachments.is_empty() {
            msg.attachments
                .extend(self.own_attachments(user.id, &op.attachments).await?);
            if msg.attachments.len() > max_att {
                return refuse(
                    ErrorCode::TooLong,
                    format!("at most {max_att} attachments per message"),
                );
            }
        }
        Ok(msg)
    }

    /// The caller's own uploads with these ids, in order.
    async fn own_attachments(
        &self,
        user: UserId,
        ids: &[AttachmentId],
    ) -> Result<Vec<Attachment>, Refusal> {
        let mut unique = ids.to_vec();
        unique.sort_unstable();
        unique.dedup();
        if unique.len() != ids.len() {
            return refuse(ErrorCode::InvalidReference, "an attachment is listed twice");
        }
        let found = self
            .app
            .storage
            .attachments(ids)
            .await
            .map_err(|e| storage_refusal(&e))?;
        let mut out = Vec::with_capacity(ids.len());
        for &id in ids {
            match found.iter().find(|(a, _)| a.id == id) {
                Some((a, uploader)) if *uploader == user => out.push(a.clone()),
                _ => {
                    return refuse(
                        ErrorCode::InvalidReference,
                        format!("attachment {id} is not an upload of yours"),
                    );
                }
            }
        }
        Ok(out)
    }

    /// `send`: any kind; `ack` when durable; a reply in a thread updates the parent.
    pub(super) async fn send(&mut self, user: &User, op: SendOp) {
        let req_id = op.req_id;
        let channel = op.channel;
        let new = match self.build_message(user, op).await {
            Ok(m) => m,
            Err((code, msg)) => return self.answer(Some(req_id), Err((code, msg))),
        };
        match self.app.hub.post(self.app.storage.as_ref(), new).await {
            Ok(m) => {
                self.app.metrics.messages_in.increment(1);
                self.event(&ServerEvent::Ack {
                    req_id,
                    channel,
                    id: m.id,
                    seq: m.seq,
                    created_at: m.created_at,
                });
                self.thread_reply(&m).await;
            }
            Err(PostError::Storage(StorageError::NotFound(_))) => {
                self.error(Some(req_id), ErrorCode::NotFound, "channel does not exist");
            }
            Err(e) => self.unavailable(Some(req_id), &e),
        }
    }

    /// If `m` was posted in a thread, tell the parent channel's members.
    async fn thread_reply(&self, m: &Message) {
        let features = &self.app.features;
        let link = match features.thread_links.get(&m.channel).map(|l| l.clone()) {
            Some(l) => l,
            None => match self.app.storage.thread_link(m.channel).await {
                Ok(l) => {
                    features.thread_links.insert(m.channel, l.clone());
                    l
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot look up a thread's parent");
                    return;
                }
            },
        };
        let Some(ThreadLink {
            parent_channel,
            parent_id,
            parent_seq,
            name,
        }) = link
        else {
            return;
        };
        // The thread's seq is its reply count; concurrent replies may announce out of
        // order, so clients keep the largest.
        emit(
            &self.app,
            &Audience::Channel(parent_channel),
            &ServerEvent::ThreadUpdated {
                channel: parent_channel,
                id: parent_id,
                seq: parent_seq,
                thread: ThreadSummary {
                    channel: m.channel,
                    name,
                    replies: u32::try_from(m.seq).unwrap_or(u32::MAX),
                    last_reply_at: Some(m.created_at),
                },
            },
        );
    }

    /// The caller's own live message, for edit and delete.
    async fn own_message(
        &mut self,
        user: &User,
        channel: ChannelId,
        id: MessageId,
    ) -> Result<Message, Refusal> {
        self.authorize(user, channel).await?;
        let m = match self.app.storage.message(channel, id).await {
            Ok(Some(m)) => m,
            Ok(None) => {
                return refuse(
                    ErrorCode::NotFound,
                    format!("no message {id} in channel {channel}"),
                );
            }
            Err(e) => return Err(storage_refusal(&e)),
        };
        if m.author != user.id {
            return refuse(
                ErrorCode::Forbidden,
                "only the author can edit or delete a message",
            );
        }
        if m.deleted_at.is_some() {
            return refuse(
                ErrorCode::InvalidReference,
                format!("message {id} was deleted"),
            );
        }
        Ok(m)
    }

    /// `edit`: author only; members get `message_edited`.
    pub(super) async fn edit(
        &mut self,
        user: &User,
        req_id: u64,
        channel: ChannelId,
        id: MessageId,
        body: String,
    ) {
        let r = async {
            self.check_body(&body, false)?;
            self.own_message(user, channel, id).await?;
            let at = now_ms() as i64;
            match self.app.storage.edit_message(channel, id, body, at).await {
                Ok(Some(m)) => {
                    self.event(&ServerEvent::Ok { req_id });
                    emit(
                        &self.app,
                        &Audience::Channel(channel),
                        &ServerEvent::MessageEdited {
                            channel,
                            id,
                            seq: m.seq,
                            body: m.body,
                            edited_at: m.edited_at.unwrap_or(at),
                        },
                    );
                    Ok(())
                }
                Ok(None) => refuse(
                    ErrorCode::InvalidReference,
                    format!("message {id} was deleted"),
                ),
                Err(e) => Err(storage_refusal(&e)),
            }
        }
        .await;
        self.answer(Some(req_id), r);
    }

    /// `delete`: author only; the message becomes a tombstone; members get `message_deleted`.
    pub(super) async fn delete(
        &mut self,
        user: &User,
        req_id: u64,
        channel: ChannelId,
        id: MessageId,
    ) {
        let r = async {
            self.own_message(user, channel, id).await?;
            let at = now_ms() as i64;
            match self.app.storage.delete_message(channel, id, at).await {
                Ok(Some(m)) => {
                    self.event(&ServerEvent::Ok { req_id });
                    emit(
                        &self.app,
                        &Audience::Channel(channel),
                        &ServerEvent::MessageDeleted {
                            channel,
                            id,
                            seq: m.seq,
                            deleted_at: m.deleted_at.unwrap_or(at),
                        },
                    );
                    Ok(())
                }
                Ok(None) => refuse(
                    ErrorCode::InvalidReference,
                    format!("message {id} was already deleted"),
                ),
                Err(e) => Err(storage_refusal(&e)),
            }
        }
        .await;
        self.answer(Some(req_id), r);
    }

    /// `react`/`unreact`: once per user per emoji per message; members get `reaction`
    /// when the set changed.
    pub(super) async fn react(
        &mut self,
        user: &User,
        req_id: u64,
        channel: ChannelId,
        id: MessageId,
        emoji: String,
        add: bool,
    ) {
        let r = async {
            valid_emoji(&emoji)?;
            self.authorize(user, channel).await?;
            match self
                .app
                .storage
                .react(channel, id, user.id, &emoji, add)
                .await
            {
                Ok(Some(change)) => {
                    self.event(&ServerEvent::Ok { req_id });
                    if change.changed {
                        emit(
                            &self.app,
                            &Audience::Channel(channel),
                            &ServerEvent::Reaction {
                                channel,
                                id,
                                seq: change.seq,
                                user_id: user.id,
                                emoji,
                                added: add,
                                count: change.count,
                            },
                        );
                    }
                    Ok(())
                }
                Ok(None) => refuse(
                    ErrorCode::NotFound,
                    format!("no live message {id} in channel {channel}"),
                ),
                Err(e) => Err(storage_refusal(&e)),
            }
        }
        .await;
        self.answer(Some(req_id), r);
    }

    /// `start_thread`: answered by `thread_created`; members get it too when it is new.
    pub(super) async fn start_thread(
        &mut self,
        user: &User,
        req_id: u64,
        channel: ChannelId,
        id: MessageId,
        name: Option<String>,
    ) {
        let r = async {
            if let Some(n) = &name {
                let max = self.app.config.limits.max_name_chars;
                let len = n.chars().count();
                if len == 0 || len > max || n.chars().any(char::is_control) {
                    return refuse(
                        ErrorCode::TooLong,
                        format!("thread name must have 1 to {max} printable characters"),
                    );
                }
            }
            self.authorize(user, channel).await?;
            match self
                .app
                .storage
                .create_thread(channel, id, name.as_deref())
                .await
            {
                Ok(Some((thread, seq, created))) => {
                    let ev = |req_id| ServerEvent::ThreadCreated {
                        req_id,
                        channel,
                        id,
                        seq,
                        thread: thread.clone(),
                    };
                    self.event(&ev(Some(req_id)));
                    if created {
                        emit(&self.app, &Audience::Channel(channel), &ev(None));
                    }
                    Ok(())
                }
                Ok(None) => refuse(
                    ErrorCode::InvalidReference,
                    format!("no live message {id} in channel {channel}"),
                ),
                Err(StorageError::Invalid(m)) => refuse(ErrorCode::InvalidReference, m),
                Err(e) => Err(storage_refusal(&e)),
            }
        }
        .await;
        self.answer(Some(req_id), r);
    }

    /// `typing`: members only, throttled, never stored, never answered (but refusals are).
    pub(super) async fn typing(&mut self, user: &User, channel: ChannelId) {
        if let Err((code, msg)) = self.authorize(user, channel).await {
            return self.error(None, code, msg);
        }
        let f = &self.app.config.features;
        if !self
            .app
            .features
            .typing
            .allow(user.id, channel, f.typing_interval)
        {
            return;
        }
        emit(
            &self.app,
            &Audience::Channel(channel),
            &ServerEvent::Typing {
                channel,
                user_id: user.id,
                expires_ms: u64::try_from(f.typing_expires.as_millis()).unwrap_or(u64::MAX),
            },
        );
    }

    /// `set_presence`: status and custom text; co-members get `presence`.
    pub(super) async fn set_presence(
        &mut self,
        user: &User,
        req_id: Option<u64>,
        status: PresenceStatus,
        custom: Option<String>,
    ) {
        let max = self.app.config.features.max_status_chars;
        let custom = custom.filter(|c| !c.is_empty());
        if let Some(c) = &custom
            && (c.chars().count() > max || c.chars().any(char::is_control))
        {
            return self.error(
                req_id,
                ErrorCode::TooLong,
                format!("custom status must have at most {max} printable characters"),
            );
        }
        let change = self
            .app
            .features
            .presence
            .set(user.id, status, custom)
            .await;
        if let Some(req_id) = req_id {
            self.event(&ServerEvent::Ok { req_id });
        }
        if let Some(p) = change {
            announce_presence(&self.app, p).await;
        }
    }

    /// Presence after `hello`: online (unless reconnecting within the grace period), and
    /// the snapshot of co-members for `ready` (empty unless `snapshot`).
    pub(super) async fn presence_on_connect(
        &self,
        user: UserId,
        snapshot: bool,
    ) -> (Vec<Presence>, Option<Presence>) {
        let change = self.app.features.presence.connect(user).await;
        if !snapshot {
            return (Vec::new(), change);
        }
        let users = match self.app.storage.co_members(user).await {
            Ok(users) => users,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read presence snapshot: storage failed");
                return (Vec::new(), change);
            }
        };
        (presence_snapshot(&self.app, &users).await, change)
    }

    /// A frame from an authenticated user: activity (back from idle).
    pub(super) async fn presence_activity(&self, user: UserId) {
        if let Some(p) = self.app.features.presence.activity(user).await {
            announce_presence(&self.app, p).await;
        }
    }

    /// The idle check came due.
    pub(super) async fn presence_idle_check(&mut self, user: UserId) {
        let idle_after = self.app.config.features.idle_after;
        let (next, change) = self
            .app
            .features
            .presence
            .check_idle(user, idle_after)
            .await;
        self.idle_at = next;
        if let Some(p) = change {
            announce_presence(&self.app, p).await;
        }
    }
}

/// The session ended: after the grace period, the user turns offline unless a session of
/// theirs came back meanwhile.
pub(super) fn presence_on_disconnect(app: &Arc<App>, user: UserId) {
    let Some(epoch) = app.features.presence.disconnect(user) else {
        return;
    };
    let app = app.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = tokio::time::sleep(app.config.features.presence_grace) => {}
            () = app.shutdown.cancelled() => return,
        }
        // Reconnected to another node of the cluster meanwhile: not offline.
        if let Some(bus) = app.hub.bus()
            && bus.is_online(user).await.unwrap_or(false)
        {
            return;
        }
        if let Some(p) = app.features.presence.expire(user, epoch).await {
            announce_presence(&app, p).await;
        }
    });
}

fn storage_refusal(e: &StorageError) -> Refusal {
    match e {
        StorageError::NotFound(what) => (ErrorCode::NotFound, format!("{what} not found")),
        StorageError::Invalid(m) => (ErrorCode::BadRequest, m.clone()),
        other => {
            tracing::warn!(error = %other, "storage failed during a session");
            (
                ErrorCode::Unavailable,
                "storage is unavailable; nothing was done, retry later".into(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emoji_forms() {
        assert!(valid_emoji("👍").is_ok());
        assert!(valid_emoji("👨‍👩‍👧").is_ok());
        assert!(valid_emoji(":party_parrot:").is_ok());
        assert!(valid_emoji("1️⃣").is_ok());
        assert!(valid_emoji("lol").is_err());
        assert!(valid_emoji("::").is_err());
        assert!(valid_emoji(": x:").is_err());
        assert!(valid_emoji("").is_err());
        assert_eq!(
            valid_emoji(&":a".repeat(40)).unwrap_err().0,
            ErrorCode::TooLong
        );
    }
}
