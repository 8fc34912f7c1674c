//! Spaces, channels, DMs and read access in Postgres.

use std::sync::LazyLock;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use sqlx::Postgres;
use sqlx::postgres::PgArguments;
use sqlx::query::QueryAs;

use flowline_protocol::api::{Channel, ChannelKind, Space, User};
use flowline_protocol::{ChannelId, SpaceId, UserId};

use super::pools::PgStorage;
use super::rows::{CAN_READ, CHANNEL_COLS, ChannelRow, conflict, kind_str, to_channel};
use crate::error::StorageError;
use crate::storage::contract::{Result, Spaces};

impl Spaces for PgStorage {
    fn create_space<'a>(&'a self, owner: UserId, name: &'a str) -> BoxFuture<'a, Result<Space>> {
        async move {
            let mut conn = self.conn().await?;
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
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
                    .fetch_optional(&mut *self.conn().await?)
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
            .fetch_all(&mut *self.conn().await?)
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
                .execute(&mut *self.conn().await?)
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
                .execute(&mut *self.conn().await?)
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
            .fetch_all(&mut *self.conn().await?)
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
            .fetch_one(&mut *self.conn().await?)
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
            let mut conn = self.conn().await?;
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
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
            let rows: Vec<ChannelRow> = sqlx::query_as(&sql).bind(space).bind(user).fetch_all(&mut *self.conn().await?).await?;
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
            let mut conn = self.conn().await?;
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
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
                .fetch_optional(&mut *self.conn().await?)
                .await?;
            Ok(row.map(to_channel))
        }
        .boxed()
    }

    fn can_read(&self, channel: ChannelId, user: UserId) -> BoxFuture<'_, Result<bool>> {
        async move {
            let (yes,): (bool,) = can_read_query(channel, user)
                .fetch_one(&mut *self.conn().await?)
                .await?;
            Ok(yes)
        }
        .boxed()
    }

    fn recheck_reads<'a>(
        &'a self,
        pairs: &'a [(ChannelId, UserId)],
    ) -> BoxFuture<'a, Result<Vec<bool>>> {
        async move {
            if pairs.is_empty() {
                return Ok(Vec::new());
            }
            let channels: Vec<i64> = pairs.iter().map(|p| p.0).collect();
            let users: Vec<i64> = pairs.iter().map(|p| p.1).collect();
            let rows: Vec<(i64, bool)> = sqlx::query_as(RECHECK_READS_SQL.as_str())
                .bind(&channels)
                .bind(&users)
                .fetch_all(&mut *self.send_conn().await?)
                .await?;
            let mut out = vec![false; pairs.len()];
            for (ord, yes) in rows {
                if let Some(slot) = usize::try_from(ord - 1).ok().and_then(|i| out.get_mut(i)) {
                    *slot = yes;
                }
            }
            Ok(out)
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
            .fetch_all(&mut *self.conn().await?)
            .await?;
            Ok(rows.into_iter().map(|r| r.0).collect())
        }
        .boxed()
    }

    fn readable_channels_of<'a>(
        &'a self,
        users: &'a [UserId],
    ) -> BoxFuture<'a, Result<Vec<(UserId, ChannelId)>>> {
        async move {
            if users.is_empty() {
                return Ok(Vec::new());
            }
            // `readable_channels` for every user of $1 at once.
            let rows: Vec<(i64, i64)> = sqlx::query_as(
                "WITH q AS (SELECT DISTINCT unnest($1::bigint[]) AS uid),
                 r AS (
                 SELECT q.uid, c.id FROM q JOIN space_members sm ON sm.user_id = q.uid
                   JOIN channels c ON c.space_id = sm.space_id
                 WHERE c.kind = 'public'
                    OR (c.kind = 'private' AND EXISTS
                        (SELECT 1 FROM channel_members cm WHERE cm.channel_id = c.id AND cm.user_id = q.uid))
                 UNION
                 SELECT cm.user_id, cm.channel_id FROM channel_members cm JOIN channels c ON c.id = cm.channel_id
                 WHERE cm.user_id = ANY($1) AND c.kind = 'dm')
                 SELECT uid, id FROM r
                 UNION
                 SELECT r.uid, t.id FROM channels t JOIN r ON t.parent_id = r.id WHERE t.kind = 'thread'
                 ORDER BY 1, 2",
            )
            .bind(users)
            .fetch_all(&mut *self.conn().await?)
            .await?;
            Ok(rows)
        }
        .boxed()
    }

    fn spaces_of_users<'a>(
        &'a self,
        users: &'a [UserId],
    ) -> BoxFuture<'a, Result<Vec<(UserId, SpaceId)>>> {
        async move {
            if users.is_empty() {
                return Ok(Vec::new());
            }
            let rows: Vec<(i64, i64)> = sqlx::query_as(
                "SELECT m.user_id, m.space_id FROM space_members m JOIN spaces s ON s.id = m.space_id
                 WHERE m.user_id = ANY($1) ORDER BY 1, 2",
            )
            .bind(users)
            .fetch_all(&mut *self.conn().await?)
            .await?;
            Ok(rows)
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
            .fetch_all(&mut *self.conn().await?)
            .await?;
            Ok(rows.into_iter().map(|r| r.0).collect())
        }
        .boxed()
    }
}

/// `can_read`'s statement, built once.
static CAN_READ_SQL: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT EXISTS (SELECT 1 FROM channels c WHERE c.id = $1 AND {CAN_READ})")
});

/// May each user read each channel? `$1` the channels, `$2` the users (pairwise); one row
/// (position from 1, answer) per pair.
static RECHECK_READS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT q.ord, EXISTS (SELECT 1 FROM channels c WHERE c.id = q.cid AND {})
         FROM UNNEST($1::bigint[], $2::bigint[]) WITH ORDINALITY AS q(cid, uid, ord)",
        CAN_READ.replace("$2", "q.uid")
    )
});

/// May `user` read `channel`? (One row, one column.)
fn can_read_query(
    channel: ChannelId,
    user: UserId,
) -> QueryAs<'static, Postgres, (bool,), PgArguments> {
    sqlx::query_as(CAN_READ_SQL.as_str())
        .bind(channel)
        .bind(user)
}
