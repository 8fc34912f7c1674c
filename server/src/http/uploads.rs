//! File uploads: `POST /api/v1/uploads` (multipart, one field `file`) and
//! `GET /api/v1/uploads/{id}`.
//!
//! An upload streams into a temporary file under `<data_dir>/uploads/tmp` while its
//! sha256 and size are computed; only a complete, allowed, within-limit upload is renamed
//! to `<data_dir>/uploads/<sha256>` (content-addressed: identical files share one copy)
//! and recorded in storage. Anything else — too large, refused type, client gone halfway,
//! storage down — drops the temporary file (deleted on drop, also when the request
//! future is cancelled) and leaves no row.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Json;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use flowline_protocol::AttachmentId;
use flowline_protocol::ws::{Attachment, ErrorCode};

use super::error::{ApiError, ApiResult};
use super::extract::{ApiPath, Caller};
use crate::clock::now_ms;
use crate::node::Node;
use crate::storage::NewAttachment;

/// Longest file name kept, characters.
const MAX_FILENAME: usize = 255;

/// Multipart body of `POST /api/v1/uploads`.
#[allow(dead_code)] // describes the body for the OpenAPI document only
#[derive(utoipa::ToSchema)]
pub(super) struct UploadForm {
    /// The file, with its file name and content type in the part's headers.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// Where uploaded files live.
fn uploads_dir(node: &Node) -> PathBuf {
    node.config.features.data_dir.join("uploads")
}

fn too_large(max: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::TooLarge,
        format!("uploads are limited to {max} bytes"),
    )
}

/// Upload a file.
#[utoipa::path(
    post,
    path = "/uploads",
    tag = "uploads",
    security(("bearer" = [])),
    request_body(content = UploadForm, content_type = "multipart/form-data",
        description = "One part named `file` with a file name and an allowed content type"),
    responses(
        (status = 201, description = "Stored", body = Attachment),
        (status = 400, description = "No `file` part, or a bad file name", body = flowline_protocol::api::ApiErrorBody),
        (status = 401, description = "Missing or invalid token", body = flowline_protocol::api::ApiErrorBody),
        (status = 413, description = "`too_large`: over the node's size limit", body = flowline_protocol::api::ApiErrorBody),
        (status = 415, description = "`unsupported_type`: content type not allowed", body = flowline_protocol::api::ApiErrorBody),
    )
)]
pub(super) async fn upload_create(
    State(node): State<Arc<Node>>,
    caller: Caller,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<(StatusCode, Json<Attachment>)> {
    let mut multipart =
        multipart.map_err(|r| ApiError::new(r.status(), ErrorCode::BadRequest, r.body_text()))?;
    let features = &node.config.features;
    let max = features.upload_max_bytes;
    let multipart_error = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large(max)
        } else {
            ApiError::bad(ErrorCode::BadRequest, e.body_text())
        }
    };
    loop {
        let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? else {
            return Err(ApiError::bad(
                ErrorCode::BadRequest,
                "the form needs a part named `file`",
            ));
        };
        if field.name() != Some("file") {
            continue;
        }
        let filename = clean_filename(field.file_name())?;
        let content_type = field.content_type().unwrap_or("").to_owned();
        if !features.type_allowed(&content_type) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::UnsupportedType,
                format!(
                    "content type {content_type:?} is not allowed (allowed: {})",
                    features.upload_types.join(", ")
                ),
            ));
        }
        let dir = uploads_dir(&node);
        let tmp_dir = dir.join("tmp");
        tokio::fs::create_dir_all(&tmp_dir)
            .await
            .map_err(ApiError::internal)?;
        let tmp = tempfile::Builder::new()
            .prefix("upload-")
            .suffix(".part")
            .tempfile_in(&tmp_dir)
            .map_err(ApiError::internal)?;
        // The path guard deletes the file on every early return and on cancellation.
        let (file, tmp_path) = tmp.into_parts();
        let mut file = tokio::fs::File::from_std(file);
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
            size += chunk.len() as u64;
            if size > max {
                return Err(too_large(max));
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(ApiError::internal)?;
        }
        file.sync_all().await.map_err(ApiError::internal)?;
        drop(file);
        let sha256 = hex::encode(hasher.finalize());
        let target = dir.join(&sha256);
        let existed = tokio::fs::try_exists(&target).await.unwrap_or(false);
        tmp_path
            .persist(&target)
            .map_err(|e| ApiError::internal(e.error))?;
        let new = NewAttachment {
            uploader: caller.user.id,
            filename,
            content_type,
            size,
            sha256,
            created_at: now_ms() as i64,
        };
        return match node.storage.insert_attachment(new).await {
            Ok(a) => Ok((StatusCode::CREATED, Json(a))),
            Err(e) => {
                // No row: do not keep a file nobody can reference.
                if !existed {
                    let _ = tokio::fs::remove_file(&target).await;
                }
                Err(e.into())
            }
        };
    }
}

/// The last path component of a client file name, checked.
fn clean_filename(name: Option<&str>) -> ApiResult<String> {
    let name = name
        .map(|n| n.rsplit(['/', '\\']).next().unwrap_or("").trim())
        .unwrap_or("");
    let n = name.chars().count();
    if n == 0 || n > MAX_FILENAME || name.chars().any(char::is_control) || name == ".." {
        return Err(ApiError::bad(
            ErrorCode::BadRequest,
            format!(
                "the `file` part needs a file name of 1 to {MAX_FILENAME} printable characters"
            ),
        ));
    }
    Ok(name.to_owned())
}

/// Download an uploaded file.
#[utoipa::path(
    get,
    path = "/uploads/{id}",
    tag = "uploads",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "Attachment id")),
    responses(
        (status = 200, description = "The file's bytes, with its content type", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 401, description = "Missing or invalid token", body = flowline_protocol::api::ApiErrorBody),
        (status = 403, description = "Neither the uploader nor a reader of a message carrying it", body = flowline_protocol::api::ApiErrorBody),
        (status = 404, description = "No such attachment", body = flowline_protocol::api::ApiErrorBody),
    )
)]
pub(super) async fn upload_get(
    State(node): State<Arc<Node>>,
    caller: Caller,
    ApiPath(id): ApiPath<AttachmentId>,
) -> ApiResult<Response> {
    let Some((att, _)) = node.storage.attachments(&[id]).await?.into_iter().next() else {
        return Err(ApiError::not_found("attachment not found"));
    };
    if !node.storage.can_download(id, caller.user.id).await? {
        return Err(ApiError::forbidden(
            "not a member of a channel where this file was posted",
        ));
    }
    let path = content_path(&uploads_dir(&node), &att.sha256)?;
    let bytes = match tokio::fs::read(&path).await {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::not_found(
                "the file's content is not on this node",
            ));
        }
        Err(e) => return Err(ApiError::internal(e)),
    };
    let content_type = HeaderValue::from_str(&att.content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let safe_name: String = att
        .filename
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{safe_name}\""))
        .unwrap_or(HeaderValue::from_static("attachment"));
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_DISPOSITION, disposition),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        bytes,
    )
        .into_response())
}

/// The content file of a sha256 (refusing anything that is not 64 hex digits).
fn content_path(dir: &Path, sha256: &str) -> ApiResult<PathBuf> {
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::internal(format!(
            "stored sha256 {sha256:?} is malformed"
        )));
    }
    Ok(dir.join(sha256))
}
