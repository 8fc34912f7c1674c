//! How Postgres rows become protocol values, and the SQL fragments several queries share.

use flowline_protocol::api::{Channel, ChannelKind};
use flowline_protocol::ws::{
    Attachment, Message, MessageKind, MessageRef, Origin, Quote, ReactionCount, ThreadSummary,
};

use crate::error::StorageError;
use crate::storage::contract::Result;

pub(super) type ChannelRow = (
    i64,
    Option<i64>,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
);

pub(super) const CHANNEL_COLS: &str =
    "c.id, c.space_id, c.name, c.kind, c.last_seq, c.parent_id, c.parent_message_id";

/// One stored message with its thread summary, reaction counts and attachments (the last
/// two as JSON text aggregated in the same query).
#[derive(sqlx::FromRow)]
pub(super) struct MessageRow {
    channel_id: i64,
    seq: i64,
    id: i64,
    author_id: i64,
    body: String,
    nonce: Option<String>,
    created_at: i64,
    kind: String,
    reply_to: Option<i64>,
    quote_id: Option<i64>,
    quote_excerpt: Option<String>,
    fwd_channel: Option<i64>,
    fwd_id: Option<i64>,
    fwd_author: Option<i64>,
    fwd_created: Option<i64>,
    edited_at: Option<i64>,
    deleted_at: Option<i64>,
    thread_id: Option<i64>,
    thread_name: Option<String>,
    thread_replies: Option<i64>,
    thread_last: Option<i64>,
    reactions: Option<String>,
    attachments: Option<String>,
}

/// Columns of [`MessageRow`]; the message table is `m`.
pub(super) const MESSAGE_SELECT: &str =
    "SELECT m.channel_id, m.seq, m.id, m.author_id, m.body, m.nonce,
    m.created_at, m.kind, m.reply_to, m.quote_id, m.quote_excerpt, m.fwd_channel, m.fwd_id,
    m.fwd_author, m.fwd_created, m.edited_at, m.deleted_at,
    t.id AS thread_id, t.name AS thread_name, t.last_seq AS thread_replies,
    t.last_message_at AS thread_last,
    (SELECT json_agg(json_build_object('emoji', r.emoji, 'count', r.n) ORDER BY r.o)::text
       FROM (SELECT emoji, count(*) AS n, min(ord) AS o FROM reactions
             WHERE message_id = m.id GROUP BY emoji) r) AS reactions,
    (SELECT json_agg(json_build_object('id', a.id, 'filename', a.filename,
        'content_type', a.content_type, 'size', a.size, 'sha256', a.sha256)
        ORDER BY ma.position)::text
       FROM message_attachments ma JOIN attachments a ON a.id = ma.attachment_id
       WHERE ma.message_id = m.id) AS attachments
  FROM messages m LEFT JOIN channels t ON t.parent_message_id = m.id";

pub(super) fn message_kind_str(kind: MessageKind) -> &'static str {
    match kind {
        MessageKind::Text => "text",
        MessageKind::Markdown => "markdown",
        MessageKind::Reply => "reply",
        MessageKind::Quote => "quote",
        MessageKind::Forward => "forward",
    }
}

pub(super) fn parse_message_kind(s: &str) -> MessageKind {
    match s {
        "markdown" => MessageKind::Markdown,
        "reply" => MessageKind::Reply,
        "quote" => MessageKind::Quote,
        "forward" => MessageKind::Forward,
        _ => MessageKind::Text,
    }
}

pub(super) fn kind_str(kind: ChannelKind) -> &'static str {
    match kind {
        ChannelKind::Public => "public",
        ChannelKind::Private => "private",
        ChannelKind::Dm => "dm",
        ChannelKind::Thread => "thread",
    }
}

pub(super) fn to_channel(
    (id, space, name, kind, last_seq, parent_id, parent_message): ChannelRow,
) -> Channel {
    let kind = match kind.as_str() {
        "public" => ChannelKind::Public,
        "private" => ChannelKind::Private,
        "thread" => ChannelKind::Thread,
        _ => ChannelKind::Dm,
    };
    Channel {
        id,
        space,
        name,
        kind,
        last_seq,
        parent: parent_id
            .zip(parent_message)
            .map(|(channel, id)| MessageRef { channel, id }),
    }
}

pub(super) fn to_message(r: MessageRow) -> Result<Message> {
    let json = |what: &str, e: serde_json::Error| {
        StorageError::Invalid(format!("stored {what} of message {} unreadable: {e}", r.id))
    };
    let reactions: Vec<ReactionCount> = match &r.reactions {
        Some(t) => serde_json::from_str(t).map_err(|e| json("reactions", e))?,
        None => Vec::new(),
    };
    let attachments: Vec<Attachment> = match &r.attachments {
        Some(t) => serde_json::from_str(t).map_err(|e| json("attachments", e))?,
        None => Vec::new(),
    };
    Ok(Message {
        channel: r.channel_id,
        seq: r.seq,
        id: r.id,
        author: r.author_id,
        body: r.body,
        nonce: r.nonce,
        created_at: r.created_at,
        kind: parse_message_kind(&r.kind),
        reply_to: r.reply_to,
        quote: r.quote_id.map(|id| Quote {
            id,
            excerpt: r.quote_excerpt.unwrap_or_default(),
        }),
        forwarded_from: match (r.fwd_channel, r.fwd_id, r.fwd_author, r.fwd_created) {
            (Some(channel), Some(id), Some(author), Some(created_at)) => Some(Origin {
                channel,
                id,
                author,
                created_at,
            }),
            _ => None,
        },
        edited_at: r.edited_at,
        deleted_at: r.deleted_at,
        reactions,
        thread: r.thread_id.map(|channel| ThreadSummary {
            channel,
            name: r.thread_name,
            replies: u32::try_from(r.thread_replies.unwrap_or(0)).unwrap_or(u32::MAX),
            last_reply_at: r.thread_last,
        }),
        attachments,
    })
}

/// Map a unique violation to `Conflict`, anything else to `Database`.
pub(super) fn conflict(what: impl Into<String>) -> impl FnOnce(sqlx::Error) -> StorageError {
    let what = what.into();
    move |e| match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StorageError::Conflict(what),
        sqlx::Error::Database(d) if d.is_foreign_key_violation() => {
            StorageError::NotFound("referenced row")
        }
        _ => StorageError::Database(e),
    }
}

/// SQL condition "user $2 can read channel c" (c: channels row, $2: user id). A thread
/// is readable by whoever can read its parent channel (threads do not nest).
pub(super) const CAN_READ: &str = "(
    (c.kind = 'public' AND EXISTS (SELECT 1 FROM space_members sm WHERE sm.space_id = c.space_id AND sm.user_id = $2))
 OR (c.kind = 'private'
     AND EXISTS (SELECT 1 FROM channel_members cm WHERE cm.channel_id = c.id AND cm.user_id = $2)
     AND EXISTS (SELECT 1 FROM space_members sm WHERE sm.space_id = c.space_id AND sm.user_id = $2))
 OR (c.kind = 'dm' AND (c.dm_low = $2 OR c.dm_high = $2))
 OR (c.kind = 'thread' AND EXISTS (SELECT 1 FROM channels p WHERE p.id = c.parent_id AND (
        (p.kind = 'public' AND EXISTS (SELECT 1 FROM space_members sm WHERE sm.space_id = p.space_id AND sm.user_id = $2))
     OR (p.kind = 'private'
         AND EXISTS (SELECT 1 FROM channel_members cm WHERE cm.channel_id = p.id AND cm.user_id = $2)
         AND EXISTS (SELECT 1 FROM space_members sm WHERE sm.space_id = p.space_id AND sm.user_id = $2))
     OR (p.kind = 'dm' AND (p.dm_low = $2 OR p.dm_high = $2))))))";
