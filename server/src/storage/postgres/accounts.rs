//! Users and session tokens in Postgres.

use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use flowline_protocol::UserId;
use flowline_protocol::api::User;

use super::pools::PgStorage;
use super::rows::conflict;
use crate::auth::TokenHash;
use crate::storage::contract::{Accounts, Credentials, Result};

impl Accounts for PgStorage {
    fn create_user<'a>(&'a self, username: &'a str, hash: &'a str) -> BoxFuture<'a, Result<User>> {
        async move {
            let (id,): (i64,) = sqlx::query_as(
                "INSERT INTO users (username, password_hash) VALUES ($1, $2) RETURNING id",
            )
            .bind(username)
            .bind(hash)
            .fetch_one(&mut *self.conn().await?)
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
                    .fetch_optional(&mut *self.conn().await?)
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
                    .fetch_optional(&mut *self.conn().await?)
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
                .execute(&mut *self.conn().await?)
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
            .fetch_optional(&mut *self.conn().await?)
            .await?;
            Ok(row.map(|(id, username)| User { id, username }))
        }
        .boxed()
    }

    fn users_by_tokens<'a>(
        &'a self,
        hashes: &'a [TokenHash],
    ) -> BoxFuture<'a, Result<Vec<(TokenHash, User)>>> {
        async move {
            if hashes.is_empty() {
                return Ok(Vec::new());
            }
            let keys: Vec<&[u8]> = hashes.iter().map(|h| &h[..]).collect();
            let rows: Vec<(Vec<u8>, i64, String)> = sqlx::query_as(
                "SELECT t.token_hash, u.id, u.username FROM tokens t JOIN users u ON u.id = t.user_id
                 WHERE t.token_hash = ANY($1)",
            )
            .bind(&keys)
            .fetch_all(&mut *self.conn().await?)
            .await?;
            Ok(rows
                .into_iter()
                .filter_map(|(hash, id, username)| {
                    Some((TokenHash::try_from(hash.as_slice()).ok()?, User { id, username }))
                })
                .collect())
        }
        .boxed()
    }

    fn delete_token(&self, hash: TokenHash) -> BoxFuture<'_, Result<bool>> {
        async move {
            let r = sqlx::query("DELETE FROM tokens WHERE token_hash = $1")
                .bind(&hash[..])
                .execute(&mut *self.conn().await?)
                .await?;
            Ok(r.rows_affected() > 0)
        }
        .boxed()
    }
}
