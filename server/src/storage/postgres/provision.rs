//! Bulk provisioning in Postgres: ids reserved with `nextval`, every table filled with
//! one `UNNEST` statement, all in one transaction, then the tables analyzed.

use std::collections::HashMap;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use flowline_protocol::api::{Provision, ProvisionedSpace};

use super::pools::PgStorage;
use super::rows::conflict;
use crate::auth::TokenHash;
use crate::error::StorageError;
use crate::storage::contract::{ProvisionedIds, Provisioning, Result, check_provision};

/// Refreshes the planner's statistics of every table a provisioning fills.
const ANALYZE_PROVISIONED: &str =
    "ANALYZE users, tokens, spaces, space_members, channels, channel_members";

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

impl Provisioning for PgStorage {
    fn provision<'a>(
        &'a self,
        req: &'a Provision,
        tokens: &'a [TokenHash],
    ) -> BoxFuture<'a, Result<ProvisionedIds>> {
        async move {
            check_provision(req, tokens.len())?;
            let n = req.users as usize;
            let mut conn = self.conn().await?;
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            // Users and their tokens.
            let user_ids = reserve_ids(&mut tx, "users", n).await?;
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
            let space_ids = reserve_ids(&mut tx, "spaces", req.spaces.len()).await?;
            let n_channels: usize = req.spaces.iter().map(|s| s.channels.len()).sum();
            let channel_ids = reserve_ids(&mut tx, "channels", n_channels).await?;
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
                let dm_ids = reserve_ids(&mut tx, "channels", req.dms.len()).await?;
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
            // The tables just grew from nothing to the run's size in one statement each,
            // and autovacuum analyzes them only a minute or more later: until then the
            // planner believes them empty and joins users, members and channels by
            // sequential scans. At 100k users one connect storm read 140 million user rows
            // that way and starved every node's pool. Fresh statistics make every connect
            // read an index lookup. The rows are committed: a failed ANALYZE is only slow.
            if let Err(e) = sqlx::query(ANALYZE_PROVISIONED).execute(&mut *conn).await {
                tracing::warn!(error = %e, "cannot analyze the provisioned tables; the first queries may scan them");
            }
            Ok(out)
        }
        .boxed()
    }
}
