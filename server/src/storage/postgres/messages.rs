//! Channel logs in Postgres: appends (committed in batches by `appends.rs`), reads, edits, tombstones, reactions and threads.

use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use flowline_protocol::ws::{Message, ThreadSummary};
use flowline_protocol::{ChannelId, MessageId, Seq, UserId};

use super::pools::PgStorage;
use super::rows::{MESSAGE_SELECT, MessageRow, to_message};
use crate::error::StorageError;
use crate::storage::contract::{Messages, NewMessage, ReactionChange, Result, ThreadLink};

impl Messages for PgStorage {
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
                    .fetch_all(&mut *self.conn().await?)
                    .await?;
            Ok(rows)
        }
        .boxed()
    }

    fn append_message(&self, msg: NewMessage) -> BoxFuture<'_, Result<Message>> {
        async move {
            let (msg, seq, id) = self.appends.append(msg).await?;
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
                        .fetch_all(&mut *self.conn().await?)
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
                        .fetch_all(&mut *self.conn().await?)
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
                .fetch_optional(&mut *self.conn().await?)
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
            .execute(&mut *self.conn().await?)
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
            let mut conn = self.conn().await?;
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
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
            drop(conn); // before the read below takes its own connection
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
                .fetch_optional(&mut *self.conn().await?)
                .await?;
            let Some((seq, changed)) = row else {
                return Ok(None);
            };
            let (count,): (i64,) = sqlx::query_as(
                "SELECT count(*) FROM reactions WHERE message_id = $1 AND emoji = $2",
            )
            .bind(id)
            .bind(emoji)
            .fetch_one(&mut *self.conn().await?)
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
            .fetch_optional(&mut *self.conn().await?)
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
                .fetch_optional(&mut *self.conn().await?)
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
            .fetch_optional(&mut *self.conn().await?)
            .await?;
            if let Some((tid,)) = created {
                return Ok(Some((summary((tid, name.to_owned(), 0, None)), seq, true)));
            }
            // Lost a race with a concurrent start: answer with the winner's thread.
            let row: (i64, String, i64, Option<i64>) = sqlx::query_as(existing)
                .bind(id)
                .fetch_one(&mut *self.conn().await?)
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
            .fetch_optional(&mut *self.conn().await?)
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
}
