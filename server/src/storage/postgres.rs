//! Postgres storage for phase `postgres` (sqlx, runtime-checked queries).
//!
//! A message append is one statement: it bumps `channels.last_seq` and inserts the
//! message with that seq, so it commits atomically, seqs are gapless, and the channel
//! row lock orders concurrent senders (also across nodes). The caller acks only after it
//! returns, i.e. after commit. Bulk provisioning reserves ids with `nextval` and inserts
//! every table with one `UNNEST` statement inside one transaction.

use std::collections::HashMap;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use sqlx::postgres::{PgPool, PgPoolOptions};

use flowline_protocol::api::{Channel, ChannelKind, Provision, ProvisionedSpace, Space, User};
use flowline_protocol::ws::{
    Attachment, Message, MessageKind, MessageRef, Origin, Quote, ReactionCount, ThreadSummary,
};
use flowline_protocol::{AttachmentId, ChannelId, MessageId, Seq, SpaceId, UserId};

use super::{
    Credentials, NewAttachment, NewMessage, ProvisionedIds, ReactionChange, Result, Storage,
    ThreadLink, check_provision,
};
use crate::auth::TokenHash;
use crate::error::{Error, StorageError};

/// Postgres-backed [`Storage`].
#[derive(Clone)]
pub struct PgStorage {
    pool: PgPool,
}

type ChannelRow = (
    i64,
    Option<i64>,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
);

const CHANNEL_COLS: &str =
    "c.id, c.space_id, c.name, c.kind, c.last_seq, c.parent_id, c.parent_message_id";

/// One stored message with its thread summary, reaction counts and attachments (the last
/// two as JSON text aggregated in the same query).
#[derive(sqlx::FromRow)]
struct MessageRow {
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
const MESSAGE_SELECT: &str = "SELECT m.channel_id, m.seq, m.id, m.author_id, m.body, m.nonce,
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

fn message_kind_str(kind: MessageKind) -> &'static str {
    match kind {
        MessageKind::Text => "text",
        MessageKind::Markdown => "markdown",
        MessageKind::Reply => "reply",
        MessageKind::Quote => "quote",
        MessageKind::Forward => "forward",
    }
}

fn parse_message_kind(s: &str) -> MessageKind {
    match s {
        "markdown" => MessageKind::Markdown,
        "reply" => MessageKind::Reply,
        "quote" => MessageKind::Quote,
        "forward" => MessageKind::Forward,
        _ => MessageKind::Text,
    }
}

fn kind_str(kind: ChannelKind) -> &'static str {
    match kind {
        ChannelKind::Public => "public",
        ChannelKind::Private => "private",
        ChannelKind::Dm => "dm",
        ChannelKind::Thread => "thread",
    }
}

fn to_channel((id, space, name, kind, last_seq, parent_id, parent_message): ChannelRow) -> Channel {
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

fn to_message(r: MessageRow) -> Result<Message> {
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
fn conflict(what: impl Into<String>) -> impl FnOnce(sqlx::Error) -> StorageError {
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
const CAN_READ: &str = "(
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

impl PgStorage {
    /// Connect (pool of `pool_size`) and apply `migrations/`.
    pub async fn connect(url: &str, pool_size: u32) -> std::result::Result<Self, Error> {
        let pool = PgPoolOptions::new()
            .max_connections(pool_size)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(StorageError::Database)?;
        sqlx::migrate!("../migrations").run(&pool).await?;
        Ok(Self { pool })
    }

    /// Use an existing pool whose database is already migrated.
    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Reserve `n` ids of a table's identity column.
    async fn reserve_ids(
        tx: &mut sqlx::PgConnection,
        table: &str,
        n: usize,
    ) -> std::result::Result<Vec<i64>, sqlx::Error> {
        let sql = format!(
            "SELECT nextval(pg_get_serial_sequence('{table}', 'id')) FROM generate_series(1, $1)"
        );
        let rows: Vec<(i64,)> = sqlx::query_as(&sql)
            .bind(n as i64)
            .fetch_all(&mut *tx)
            .await?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }
}

impl Storage for PgStorage {
    fn ping(&self) -> BoxFuture<'_, Result<()>> {
        async move {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(())
        }
        .boxed()
    }

    fn create_user<'a>(&'a self, username: &'a str, hash: &'a str) -> BoxFuture<'a, Result<User>> {
        async move {
            let (id,): (i64,) = sqlx::query_as(
                "INSERT INTO users (username, password_hash) VALUES ($1, $2) RETURNING id",
            )
            .bind(username)
            .bind(hash)
            .fetch_one(&self.pool)
            .await
            .map_err(conflict(format!("user {username:?}")))?;
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
            let row: Option<(i64, String, Option<String>)> =
                sqlx::query_as("SELECT id, username, password_hash FROM users WHERE username = $1")
                    .bind(username)
                    .fetch_optional(&self.pool)
                    .await?;
            Ok(row.map(|(id, username, hash)| (User { id, username }, hash)))
        }
        .boxed()
    }

    fn user(&self, id: UserId) -> BoxFuture<'_, Result<Option<User>>> {
        async move {
            let row: Option<(i64, String)> =
                sqlx::query_as("SELECT id, username FROM users WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
            Ok(row.map(|(id, username)| User { id, username }))
        }
        .boxed()
    }

    fn insert_token(&self, user: UserId, hash: TokenHash) -> BoxFuture<'_, Result<()>> {
        async move {
            sqlx::query("INSERT INTO tokens (token_hash, user_id) VALUES ($1, $2)")
                .bind(&hash[..])
                .bind(user)
                .execute(&self.pool)
                .await
                .map_err(conflict("token"))?;
            Ok(())
        }
        .boxed()
    }

    fn user_by_token(&self, hash: TokenHash) -> BoxFuture<'_, Result<Option<User>>> {
        async move {
            let row: Option<(i64, String)> = sqlx::query_as(
                "SELECT u.id, u.username FROM tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1",
            )
            .bind(&hash[..])
            .fetch_optional(&self.pool)
            .await?;
            Ok(row.map(|(id, username)| User { id, username }))
        }
        .boxed()
    }

    fn delete_token(&self, hash: TokenHash) -> BoxFuture<'_, Result<bool>> {
        async move {
            let r = sqlx::query("DELETE FROM tokens WHERE token_hash = $1")
                .bind(&hash[..])
                .execute(&self.pool)
                .await?;
            Ok(r.rows_affected() > 0)
        }
        .boxed()
    }

    fn create_space<'a>(&'a self, owner: UserId, name: &'a str) -> BoxFuture<'a, Result<Space>> {
        async move {
            let mut tx = self.pool.begin().await?;
            let (id,): (i64,) =
                sqlx::query_as("INSERT INTO spaces (name, owner_id) VALUES ($1, $2) RETURNING id")
                    .bind(name)
                    .bind(owner)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(conflict("space"))?;
            sqlx::query("INSERT INTO space_members (space_id, user_id) VALUES ($1, $2)")
                .bind(id)
                .bind(owner)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Space {
                id,
                name: name.to_owned(),
                owner,
            })
        }
        .boxed()
    }

    fn space(&self, id: SpaceId) -> BoxFuture<'_, Result<Option<Space>>> {
        async move {
            let row: Option<(i64, String, i64)> =
                sqlx::query_as("SELECT id, name, owner_id FROM spaces WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
            Ok(row.map(|(id, name, owner)| Space { id, name, owner }))
        }
        .boxed()
    }

    fn spaces_of(&self, user: UserId) -> BoxFuture<'_, Result<Vec<Space>>> {
        async move {
            let rows: Vec<(i64, String, i64)> = sqlx::query_as(
                "SELECT s.id, s.name, s.owner_id FROM spaces s JOIN space_members m ON m.space_id = s.id
                 WHERE m.user_id = $1 ORDER BY s.id",
            )
            .bind(user)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows.into_iter().map(|(id, name, owner)| Space { id, name, owner }).collect())
        }
        .boxed()
    }

    fn join_space(&self, space: SpaceId, user: UserId) -> BoxFuture<'_, Result<()>> {
        async move {
            sqlx::query("INSERT INTO space_members (space_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(space)
                .bind(user)
                .execute(&self.pool)
                .await
                .map_err(|e| match &e {
                    sqlx::Error::Database(d) if d.is_foreign_key_violation() => StorageError::NotFound("space"),
                    _ => StorageError::Database(e),
                })?;
            Ok(())
        }
        .boxed()
    }

    fn leave_space(&self, space: SpaceId, user: UserId) -> BoxFuture<'_, Result<()>> {
        async move {
            sqlx::query("DELETE FROM space_members WHERE space_id = $1 AND user_id = $2")
                .bind(space)
                .bind(user)
                .execute(&self.pool)
                .await?;
            Ok(())
        }
        .boxed()
    }

    fn space_members(&self, space: SpaceId) -> BoxFuture<'_, Result<Vec<User>>> {
        async move {
            let rows: Vec<(i64, String)> = sqlx::query_as(
                "SELECT u.id, u.username FROM space_members m JOIN users u ON u.id = m.user_id
                 WHERE m.space_id = $1 ORDER BY u.id",
            )
            .bind(space)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(|(id, username)| User { id, username })
                .collect())
        }
        .boxed()
    }

    fn is_space_member(&self, space: SpaceId, user: UserId) -> BoxFuture<'_, Result<bool>> {
        async move {
            let (yes,): (bool,) = sqlx::query_as(
                "SELECT EXISTS (SELECT 1 FROM space_members WHERE space_id = $1 AND user_id = $2)",
            )
            .bind(space)
            .bind(user)
            .fetch_one(&self.pool)
            .await?;
            Ok(yes)
        }
        .boxed()
    }

    fn create_channel<'a>(
        &'a self,
        space: SpaceId,
        name: &'a str,
        kind: ChannelKind,
        members: &'a [UserId],
    ) -> BoxFuture<'a, Result<Channel>> {
        async move {
            let mut tx = self.pool.begin().await?;
            let (id,): (i64,) = sqlx::query_as(
                "INSERT INTO channels (space_id, name, kind) VALUES ($1, $2, $3) RETURNING id",
            )
            .bind(space)
            .bind(name)
            .bind(kind_str(kind))
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(d) if d.is_foreign_key_violation() => {
                    StorageError::NotFound("space")
                }
                _ => StorageError::Database(e),
            })?;
            if !members.is_empty() {
                sqlx::query(
                    "INSERT INTO channel_members (channel_id, user_id)
                     SELECT $1, u FROM UNNEST($2::bigint[]) AS u ON CONFLICT DO NOTHING",
                )
                .bind(id)
                .bind(members)
                .execute(&mut *tx)
                .await
                .map_err(conflict("channel member"))?;
            }
            tx.commit().await?;
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
            let sql = format!("SELECT {CHANNEL_COLS} FROM channels c WHERE c.space_id = $1 AND c.kind <> 'thread' AND {CAN_READ} ORDER BY c.id");
            let rows: Vec<ChannelRow> = sqlx::query_as(&sql).bind(space).bind(user).fetch_all(&self.pool).await?;
            Ok(rows.into_iter().map(to_channel).collect())
        }
        .boxed()
    }

    fn open_dm(&self, a: UserId, b: UserId) -> BoxFuture<'_, Result<(Channel, bool)>> {
        async move {
            if a == b {
                return Err(StorageError::Invalid("a DM needs two distinct users".into()));
            }
            let (lo, hi) = (a.min(b), a.max(b));
            let mut tx = self.pool.begin().await?;
            let created: Option<(i64,)> = sqlx::query_as(
                "INSERT INTO channels (space_id, name, kind, dm_low, dm_high) VALUES (NULL, $1, 'dm', $2, $3)
                 ON CONFLICT (dm_low, dm_high) DO NOTHING RETURNING id",
            )
            .bind(format!("dm-{lo}-{hi}"))
            .bind(lo)
            .bind(hi)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(d) if d.is_foreign_key_violation() => StorageError::NotFound("user"),
                _ => StorageError::Database(e),
            })?;
            if let Some((id,)) = created {
                sqlx::query("INSERT INTO channel_members (channel_id, user_id) VALUES ($1, $2), ($1, $3)")
                    .bind(id)
                    .bind(lo)
                    .bind(hi)
                    .execute(&mut *tx)
                    .await?;
            }
            let sql = format!("SELECT {CHANNEL_COLS} FROM channels c WHERE c.dm_low = $1 AND c.dm_high = $2");
            let row: ChannelRow = sqlx::query_as(&sql).bind(lo).bind(hi).fetch_one(&mut *tx).await?;
            tx.commit().await?;
            Ok((to_channel(row), created.is_some()))
        }
        .boxed()
    }

    fn channel(&self, id: ChannelId) -> BoxFuture<'_, Result<Option<Channel>>> {
        async move {
            let sql = format!("SELECT {CHANNEL_COLS} FROM channels c WHERE c.id = $1");
            let row: Option<ChannelRow> = sqlx::query_as(&sql)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
            Ok(row.map(to_channel))
        }
        .boxed()
    }

    fn can_read(&self, channel: ChannelId, user: UserId) -> BoxFuture<'_, Result<bool>> {
        async move {
            let sql =
                format!("SELECT EXISTS (SELECT 1 FROM channels c WHERE c.id = $1 AND {CAN_READ})");
            let (yes,): (bool,) = sqlx::query_as(&sql)
                .bind(channel)
                .bind(user)
                .fetch_one(&self.pool)
                .await?;
            Ok(yes)
        }
        .boxed()
    }

    fn readable_channels(&self, user: UserId) -> BoxFuture<'_, Result<Vec<ChannelId>>> {
        async move {
            let rows: Vec<(i64,)> = sqlx::query_as(
                "WITH r AS (
                 SELECT c.id FROM channels c JOIN space_members sm ON sm.space_id = c.space_id AND sm.user_id = $1
                 WHERE c.kind = 'public'
                    OR (c.kind = 'private' AND EXISTS
                        (SELECT 1 FROM channel_members cm WHERE cm.channel_id = c.id AND cm.user_id = $1))
                 UNION
                 SELECT cm.channel_id FROM channel_members cm JOIN channels c ON c.id = cm.channel_id
                 WHERE cm.user_id = $1 AND c.kind = 'dm')
                 SELECT id FROM r
                 UNION
                 SELECT t.id FROM channels t JOIN r ON t.parent_id = r.id WHERE t.kind = 'thread'
                 ORDER BY 1",
            )
            .bind(user)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows.into_iter().map(|r| r.0).collect())
        }
        .boxed()
    }

    fn last_seqs<'a>(
        &'a self,
        channels: &'a [ChannelId],
    ) -> BoxFuture<'a, Result<Vec<(ChannelId, Seq)>>> {
        async move {
            if channels.is_empty() {
                return Ok(Vec::new());
            }
            let rows: Vec<(i64, i64)> =
                sqlx::query_as("SELECT id, last_seq FROM channels WHERE id = ANY($1) ORDER BY id")
                    .bind(channels)
                    .fetch_all(&self.pool)
                    .await?;
            Ok(rows)
        }
        .boxed()
    }

    fn append_message(&self, msg: NewMessage) -> BoxFuture<'_, Result<Message>> {
        async move {
            let att_ids: Vec<i64> = msg.attachments.iter().map(|a| a.id).collect();
            let fwd = msg.forwarded_from.as_ref();
            let row: Option<(i64, i64)> = sqlx::query_as(
                "WITH s AS (UPDATE channels SET last_seq = last_seq + 1, last_message_at = $5
                            WHERE id = $1 RETURNING last_seq),
                 ins AS (INSERT INTO messages (channel_id, seq, author_id, body, nonce, created_at,
                            kind, reply_to, quote_id, quote_excerpt,
                            fwd_channel, fwd_id, fwd_author, fwd_created)
                         SELECT $1, s.last_seq, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13 FROM s
                         RETURNING seq, id),
                 att AS (INSERT INTO message_attachments (message_id, attachment_id, position)
                         SELECT ins.id, a.id, a.pos::int
                         FROM ins, UNNEST($14::bigint[]) WITH ORDINALITY AS a(id, pos))
                 SELECT seq, id FROM ins",
            )
            .bind(msg.channel)
            .bind(msg.author)
            .bind(&msg.body)
            .bind(&msg.nonce)
            .bind(msg.created_at)
            .bind(message_kind_str(msg.kind))
            .bind(msg.reply_to)
            .bind(msg.quote.as_ref().map(|q| q.id))
            .bind(msg.quote.as_ref().map(|q| q.excerpt.as_str()))
            .bind(fwd.map(|o| o.channel))
            .bind(fwd.map(|o| o.id))
            .bind(fwd.map(|o| o.author))
            .bind(fwd.map(|o| o.created_at))
            .bind(&att_ids)
            .fetch_optional(&self.pool)
            .await?;
            let (seq, id) = row.ok_or(StorageError::NotFound("channel"))?;
            Ok(Message {
                channel: msg.channel,
                seq,
                id,
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
            })
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
            let rows: Vec<MessageRow> = match after {
                Some(after) => {
                    let sql = format!(
                        "{MESSAGE_SELECT} WHERE m.channel_id = $1 AND m.seq > $2
                         AND ($3::bigint IS NULL OR m.seq < $3) ORDER BY m.seq LIMIT $4"
                    );
                    sqlx::query_as(&sql)
                        .bind(channel)
                        .bind(after)
                        .bind(before)
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await?
                }
                None => {
                    let sql = format!(
                        "SELECT * FROM ({MESSAGE_SELECT} WHERE m.channel_id = $1
                         AND ($2::bigint IS NULL OR m.seq < $2) ORDER BY m.seq DESC LIMIT $3) t ORDER BY seq"
                    );
                    sqlx::query_as(&sql)
                        .bind(channel)
                        .bind(before)
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await?
                }
            };
            rows.into_iter().map(to_message).collect()
        }
        .boxed()
    }

    fn message(&self, channel: ChannelId, id: MessageId) -> BoxFuture<'_, Result<Option<Message>>> {
        async move {
            let sql = format!("{MESSAGE_SELECT} WHERE m.channel_id = $1 AND m.id = $2");
            let row: Option<MessageRow> = sqlx::query_as(&sql)
                .bind(channel)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
            row.map(to_message).transpose()
        }
        .boxed()
    }

    fn edit_message(
        &self,
        channel: ChannelId,
        id: MessageId,
        body: String,
        at: i64,
    ) -> BoxFuture<'_, Result<Option<Message>>> {
        async move {
            let r = sqlx::query(
                "UPDATE messages SET body = $3, edited_at = $4
                 WHERE channel_id = $1 AND id = $2 AND deleted_at IS NULL",
            )
            .bind(channel)
            .bind(id)
            .bind(&body)
            .bind(at)
            .execute(&self.pool)
            .await?;
            if r.rows_affected() == 0 {
                return Ok(None);
            }
            self.message(channel, id).await
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
            let mut tx = self.pool.begin().await?;
            let r = sqlx::query(
                "UPDATE messages SET deleted_at = $3, body = '', quote_id = NULL, quote_excerpt = NULL,
                    fwd_channel = NULL, fwd_id = NULL, fwd_author = NULL, fwd_created = NULL
                 WHERE channel_id = $1 AND id = $2 AND deleted_at IS NULL",
            )
            .bind(channel)
            .bind(id)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            if r.rows_affected() == 0 {
                return Ok(None);
            }
            sqlx::query("DELETE FROM reactions WHERE message_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM message_attachments WHERE message_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            self.message(channel, id).await
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
            // The primary key (message, emoji, user) keeps concurrent adds unique.
            let sql = if add {
                "WITH target AS (SELECT id, seq FROM messages
                                 WHERE channel_id = $1 AND id = $2 AND deleted_at IS NULL),
                      ch AS (INSERT INTO reactions (message_id, emoji, user_id)
                             SELECT id, $3, $4 FROM target ON CONFLICT DO NOTHING RETURNING 1)
                 SELECT seq, (SELECT count(*) FROM ch) FROM target"
            } else {
                "WITH target AS (SELECT id, seq FROM messages
                                 WHERE channel_id = $1 AND id = $2 AND deleted_at IS NULL),
                      ch AS (DELETE FROM reactions WHERE message_id = (SELECT id FROM target)
                             AND emoji = $3 AND user_id = $4 RETURNING 1)
                 SELECT seq, (SELECT count(*) FROM ch) FROM target"
            };
            let row: Option<(i64, i64)> = sqlx::query_as(sql)
                .bind(channel)
                .bind(id)
                .bind(emoji)
                .bind(user)
                .fetch_optional(&self.pool)
                .await?;
            let Some((seq, changed)) = row else {
                return Ok(None);
            };
            let (count,): (i64,) = sqlx::query_as(
                "SELECT count(*) FROM reactions WHERE message_id = $1 AND emoji = $2",
            )
            .bind(id)
            .bind(emoji)
            .fetch_one(&self.pool)
            .await?;
            Ok(Some(ReactionChange {
                seq,
                changed: changed > 0,
                count: u32::try_from(count).unwrap_or(u32::MAX),
            }))
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
            let target: Option<(i64, bool, String, Option<i64>)> = sqlx::query_as(
                "SELECT m.seq, m.deleted_at IS NULL, c.kind, c.space_id
                 FROM messages m JOIN channels c ON c.id = m.channel_id
                 WHERE m.channel_id = $1 AND m.id = $2",
            )
            .bind(channel)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
            let Some((seq, live, kind, space)) = target else {
                return Ok(None);
            };
            if kind == "thread" {
                return Err(StorageError::Invalid(
                    "a thread cannot be started inside a thread".into(),
                ));
            }
            let existing = "SELECT id, name, last_seq, last_message_at FROM channels WHERE parent_message_id = $1";
            let found: Option<(i64, String, i64, Option<i64>)> = sqlx::query_as(existing)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
            let summary = |(tid, name, replies, last): (i64, String, i64, Option<i64>)| ThreadSummary {
                channel: tid,
                name: Some(name),
                replies: u32::try_from(replies).unwrap_or(u32::MAX),
                last_reply_at: last,
            };
            if let Some(row) = found {
                return Ok(Some((summary(row), seq, false)));
            }
            if !live {
                return Ok(None);
            }
            let name = name.unwrap_or("thread");
            let created: Option<(i64,)> = sqlx::query_as(
                "INSERT INTO channels (space_id, name, kind, parent_id, parent_message_id)
                 VALUES ($1, $2, 'thread', $3, $4)
                 ON CONFLICT (parent_message_id) DO NOTHING RETURNING id",
            )
            .bind(space)
            .bind(name)
            .bind(channel)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
            if let Some((tid,)) = created {
                return Ok(Some((summary((tid, name.to_owned(), 0, None)), seq, true)));
            }
            // Lost a race with a concurrent start: answer with the winner's thread.
            let row: (i64, String, i64, Option<i64>) = sqlx::query_as(existing)
                .bind(id)
                .fetch_one(&self.pool)
                .await?;
            Ok(Some((summary(row), seq, false)))
        }
        .boxed()
    }

    fn thread_link(&self, channel: ChannelId) -> BoxFuture<'_, Result<Option<ThreadLink>>> {
        async move {
            let row: Option<(i64, i64, i64, String)> = sqlx::query_as(
                "SELECT t.parent_id, t.parent_message_id, m.seq, t.name
                 FROM channels t JOIN messages m ON m.id = t.parent_message_id
                 WHERE t.id = $1 AND t.kind = 'thread'",
            )
            .bind(channel)
            .fetch_optional(&self.pool)
            .await?;
            Ok(
                row.map(|(parent_channel, parent_id, parent_seq, name)| ThreadLink {
                    parent_channel,
                    parent_id,
                    parent_seq,
                    name: Some(name),
                }),
            )
        }
        .boxed()
    }

    fn co_members(&self, user: UserId) -> BoxFuture<'_, Result<Vec<UserId>>> {
        async move {
            let rows: Vec<(i64,)> = sqlx::query_as(
                "SELECT DISTINCT b.user_id FROM space_members a
                 JOIN space_members b ON b.space_id = a.space_id
                 WHERE a.user_id = $1 ORDER BY 1",
            )
            .bind(user)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows.into_iter().map(|r| r.0).collect())
        }
        .boxed()
    }

    fn insert_attachment(&self, a: NewAttachment) -> BoxFuture<'_, Result<Attachment>> {
        async move {
            let size = i64::try_from(a.size).map_err(|_| StorageError::Invalid("size".into()))?;
            let (id,): (i64,) = sqlx::query_as(
                "INSERT INTO attachments (uploader_id, filename, content_type, size, sha256, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            )
            .bind(a.uploader)
            .bind(&a.filename)
            .bind(&a.content_type)
            .bind(size)
            .bind(&a.sha256)
            .bind(a.created_at)
            .fetch_one(&self.pool)
            .await
            .map_err(conflict("attachment"))?;
            Ok(Attachment {
                id,
                filename: a.filename,
                content_type: a.content_type,
                size: a.size,
                sha256: a.sha256,
            })
        }
        .boxed()
    }

    fn attachments<'a>(
        &'a self,
        ids: &'a [AttachmentId],
    ) -> BoxFuture<'a, Result<Vec<(Attachment, UserId)>>> {
        async move {
            let rows: Vec<(i64, String, String, i64, String, i64)> = sqlx::query_as(
                "SELECT a.id, a.filename, a.content_type, a.size, a.sha256, a.uploader_id
                 FROM UNNEST($1::bigint[]) WITH ORDINALITY AS w(id, pos)
                 JOIN attachments a ON a.id = w.id ORDER BY w.pos",
            )
            .bind(ids)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(|(id, filename, content_type, size, sha256, uploader)| {
                    (
                        Attachment {
                            id,
                            filename,
                            content_type,
                            size: u64::try_from(size).unwrap_or(0),
                            sha256,
                        },
                        uploader,
                    )
                })
                .collect())
        }
        .boxed()
    }

    fn can_download(&self, id: AttachmentId, user: UserId) -> BoxFuture<'_, Result<bool>> {
        async move {
            let sql = format!(
                "SELECT EXISTS (SELECT 1 FROM attachments WHERE id = $1 AND uploader_id = $2)
                     OR EXISTS (SELECT 1 FROM message_attachments ma
                                JOIN messages m ON m.id = ma.message_id
                                JOIN channels c ON c.id = m.channel_id
                                WHERE ma.attachment_id = $1 AND m.deleted_at IS NULL AND {CAN_READ})"
            );
            let (yes,): (bool,) = sqlx::query_as(&sql)
                .bind(id)
                .bind(user)
                .fetch_one(&self.pool)
                .await?;
            Ok(yes)
        }
        .boxed()
    }

    fn provision<'a>(
        &'a self,
        req: &'a Provision,
        tokens: &'a [TokenHash],
    ) -> BoxFuture<'a, Result<ProvisionedIds>> {
        async move {
            check_provision(req, tokens.len())?;
            let n = req.users as usize;
            let mut tx = self.pool.begin().await?;
            // Users and their tokens.
            let user_ids = Self::reserve_ids(&mut tx, "users", n).await?;
            let names: Vec<String> = (0..n).map(|i| format!("{}{i}", req.username_prefix)).collect();
            sqlx::query("INSERT INTO users (id, username) SELECT * FROM UNNEST($1::bigint[], $2::text[])")
                .bind(&user_ids)
                .bind(&names)
                .execute(&mut *tx)
                .await
                .map_err(conflict(format!("a user named {:?}<index>", req.username_prefix)))?;
            let hashes: Vec<Vec<u8>> = tokens.iter().map(|h| h.to_vec()).collect();
            sqlx::query("INSERT INTO tokens (token_hash, user_id) SELECT * FROM UNNEST($1::bytea[], $2::bigint[])")
                .bind(&hashes)
                .bind(&user_ids)
                .execute(&mut *tx)
                .await?;
            let uid = |i: u32| user_ids[i as usize];

            // Spaces, members, channels, private channel members.
            let space_ids = Self::reserve_ids(&mut tx, "spaces", req.spaces.len()).await?;
            let n_channels: usize = req.spaces.iter().map(|s| s.channels.len()).sum();
            let channel_ids = Self::reserve_ids(&mut tx, "channels", n_channels).await?;
            let (mut s_names, mut s_owners) = (Vec::new(), Vec::new());
            let (mut m_space, mut m_user) = (Vec::new(), Vec::new());
            let (mut c_space, mut c_name, mut c_kind) = (Vec::new(), Vec::new(), Vec::new());
            let (mut cm_channel, mut cm_user) = (Vec::new(), Vec::new());
            let mut out = ProvisionedIds {
                users: user_ids.clone(),
                ..Default::default()
            };
            let mut next_channel = channel_ids.iter().copied();
            for (space, &sid) in req.spaces.iter().zip(&space_ids) {
                s_names.push(space.name.clone());
                s_owners.push(uid(space.members[0]));
                let mut seen = std::collections::HashSet::new();
                for &m in &space.members {
                    if seen.insert(m) {
                        m_space.push(sid);
                        m_user.push(uid(m));
                    }
                }
                let mut channels = Vec::with_capacity(space.channels.len());
                for c in &space.channels {
                    let cid = next_channel.next().ok_or(StorageError::Invalid("id reservation".into()))?;
                    c_space.push(sid);
                    c_name.push(c.name.clone());
                    c_kind.push(if c.members.is_some() { "private" } else { "public" });
                    if let Some(members) = &c.members {
                        let mut seen = std::collections::HashSet::new();
                        for &m in members {
                            if seen.insert(m) {
                                cm_channel.push(cid);
                                cm_user.push(uid(m));
                            }
                        }
                    }
                    channels.push(cid);
                }
                out.spaces.push(ProvisionedSpace { id: sid, channels });
            }
            sqlx::query("INSERT INTO spaces (id, name, owner_id) SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::bigint[])")
                .bind(&space_ids)
                .bind(&s_names)
                .bind(&s_owners)
                .execute(&mut *tx)
                .await?;
            sqlx::query("INSERT INTO space_members (space_id, user_id) SELECT * FROM UNNEST($1::bigint[], $2::bigint[])")
                .bind(&m_space)
                .bind(&m_user)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO channels (id, space_id, name, kind)
                 SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[])",
            )
            .bind(&channel_ids)
            .bind(&c_space)
            .bind(&c_name)
            .bind(&c_kind)
            .execute(&mut *tx)
            .await?;

            // DMs: create missing pairs, then look every pair up.
            let lows: Vec<i64> = req.dms.iter().map(|&(a, b)| uid(a).min(uid(b))).collect();
            let highs: Vec<i64> = req.dms.iter().map(|&(a, b)| uid(a).max(uid(b))).collect();
            if !req.dms.is_empty() {
                let dm_ids = Self::reserve_ids(&mut tx, "channels", req.dms.len()).await?;
                sqlx::query(
                    "INSERT INTO channels (id, space_id, name, kind, dm_low, dm_high)
                     SELECT id, NULL, 'dm-' || lo || '-' || hi, 'dm', lo, hi
                     FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[]) AS t(id, lo, hi)
                     ON CONFLICT (dm_low, dm_high) DO NOTHING",
                )
                .bind(&dm_ids)
                .bind(&lows)
                .bind(&highs)
                .execute(&mut *tx)
                .await?;
                let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
                    "SELECT c.id, c.dm_low, c.dm_high FROM channels c
                     JOIN UNNEST($1::bigint[], $2::bigint[]) AS t(lo, hi) ON c.dm_low = t.lo AND c.dm_high = t.hi",
                )
                .bind(&lows)
                .bind(&highs)
                .fetch_all(&mut *tx)
                .await?;
                let by_pair: HashMap<(i64, i64), i64> = rows.into_iter().map(|(id, lo, hi)| ((lo, hi), id)).collect();
                for (lo, hi) in lows.iter().zip(&highs) {
                    let id = *by_pair.get(&(*lo, *hi)).ok_or(StorageError::NotFound("dm channel"))?;
                    out.dms.push(id);
                    cm_channel.extend([id, id]);
                    cm_user.extend([*lo, *hi]);
                }
            }
            sqlx::query(
                "INSERT INTO channel_members (channel_id, user_id)
                 SELECT * FROM UNNEST($1::bigint[], $2::bigint[]) ON CONFLICT DO NOTHING",
            )
            .bind(&cm_channel)
            .bind(&cm_user)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(out)
        }
        .boxed()
    }
}
