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
use flowline_protocol::ws::Message;
use flowline_protocol::{ChannelId, Seq, SpaceId, UserId};

use super::{Credentials, NewMessage, ProvisionedIds, Result, Storage, check_provision};
use crate::auth::TokenHash;
use crate::error::{Error, StorageError};

/// Postgres-backed [`Storage`].
#[derive(Clone)]
pub struct PgStorage {
    pool: PgPool,
}

type ChannelRow = (i64, Option<i64>, String, String, i64);
type MessageRow = (i64, i64, i64, i64, String, Option<String>, i64);

const CHANNEL_COLS: &str = "c.id, c.space_id, c.name, c.kind, c.last_seq";
const MESSAGE_COLS: &str = "channel_id, seq, id, author_id, body, nonce, created_at";

fn kind_str(kind: ChannelKind) -> &'static str {
    match kind {
        ChannelKind::Public => "public",
        ChannelKind::Private => "private",
        ChannelKind::Dm => "dm",
    }
}

fn to_channel((id, space, name, kind, last_seq): ChannelRow) -> Channel {
    let kind = match kind.as_str() {
        "public" => ChannelKind::Public,
        "private" => ChannelKind::Private,
        _ => ChannelKind::Dm,
    };
    Channel {
        id,
        space,
        name,
        kind,
        last_seq,
    }
}

fn to_message((channel, seq, id, author, body, nonce, created_at): MessageRow) -> Message {
    Message {
        channel,
        seq,
        id,
        author,
        body,
        nonce,
        created_at,
        ..Message::default()
    }
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

/// SQL condition "user $2 can read channel c" (c: channels row, $2: user id).
const CAN_READ: &str = "(
    (c.kind = 'public' AND EXISTS (SELECT 1 FROM space_members sm WHERE sm.space_id = c.space_id AND sm.user_id = $2))
 OR (c.kind = 'private'
     AND EXISTS (SELECT 1 FROM channel_members cm WHERE cm.channel_id = c.id AND cm.user_id = $2)
     AND EXISTS (SELECT 1 FROM space_members sm WHERE sm.space_id = c.space_id AND sm.user_id = $2))
 OR (c.kind = 'dm' AND (c.dm_low = $2 OR c.dm_high = $2)))";

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
            })
        }
        .boxed()
    }

    fn space_channels(&self, space: SpaceId, user: UserId) -> BoxFuture<'_, Result<Vec<Channel>>> {
        async move {
            let sql = format!("SELECT {CHANNEL_COLS} FROM channels c WHERE c.space_id = $1 AND {CAN_READ} ORDER BY c.id");
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
                "SELECT c.id FROM channels c JOIN space_members sm ON sm.space_id = c.space_id AND sm.user_id = $1
                 WHERE c.kind = 'public'
                    OR (c.kind = 'private' AND EXISTS
                        (SELECT 1 FROM channel_members cm WHERE cm.channel_id = c.id AND cm.user_id = $1))
                 UNION
                 SELECT cm.channel_id FROM channel_members cm JOIN channels c ON c.id = cm.channel_id
                 WHERE cm.user_id = $1 AND c.kind = 'dm'
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
            let row: Option<(i64, i64)> = sqlx::query_as(
                "WITH s AS (UPDATE channels SET last_seq = last_seq + 1 WHERE id = $1 RETURNING last_seq)
                 INSERT INTO messages (channel_id, seq, author_id, body, nonce, created_at)
                 SELECT $1, s.last_seq, $2, $3, $4, $5 FROM s
                 RETURNING seq, id",
            )
            .bind(msg.channel)
            .bind(msg.author)
            .bind(&msg.body)
            .bind(&msg.nonce)
            .bind(msg.created_at)
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
                        "SELECT {MESSAGE_COLS} FROM messages WHERE channel_id = $1 AND seq > $2
                         AND ($3::bigint IS NULL OR seq < $3) ORDER BY seq LIMIT $4"
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
                        "SELECT * FROM (SELECT {MESSAGE_COLS} FROM messages WHERE channel_id = $1
                         AND ($2::bigint IS NULL OR seq < $2) ORDER BY seq DESC LIMIT $3) t ORDER BY seq"
                    );
                    sqlx::query_as(&sql)
                        .bind(channel)
                        .bind(before)
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await?
                }
            };
            Ok(rows.into_iter().map(to_message).collect())
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
