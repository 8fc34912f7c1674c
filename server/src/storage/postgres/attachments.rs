//! Uploaded files' metadata in Postgres.

use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use flowline_protocol::ws::Attachment;
use flowline_protocol::{AttachmentId, UserId};

use super::pools::PgStorage;
use super::rows::{CAN_READ, conflict};
use crate::error::StorageError;
use crate::storage::contract::{Attachments, NewAttachment, Result};

impl Attachments for PgStorage {
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
            .fetch_one(&mut *self.conn().await?)
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
            .fetch_all(&mut *self.conn().await?)
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
                .fetch_one(&mut *self.conn().await?)
                .await?;
            Ok(yes)
        }
        .boxed()
    }
}
