//! The HTTP API's error answer ([`ApiError`]: a status and `{code, message}`), built from
//! a [`Refusal`] (so a storage error maps exactly as it does on the WebSocket) or from
//! axum's rejections.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use flowline_protocol::api::ApiErrorBody;
use flowline_protocol::ws::ErrorCode;

use crate::error::StorageError;
use crate::refusal::Refusal;

/// An HTTP error answer: status plus `{code, message}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
    pub(super) fn bad(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub(super) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
    }
    pub(super) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
    }
    pub(super) fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "internal error in the HTTP API");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "internal error",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ApiErrorBody {
            code: self.code,
            message: self.message,
        };
        let mut resp = (self.status, Json(body)).into_response();
        if self.status == StatusCode::PAYLOAD_TOO_LARGE {
            // The oversized body was not read, so this connection cannot carry another
            // request; say so, or a keep-alive client reuses it and hits a broken pipe.
            resp.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        resp
    }
}

impl From<Refusal> for ApiError {
    /// The status that goes with the code (the one table in `refusal.rs`).
    fn from(r: Refusal) -> Self {
        Self::new(r.status(), r.code, r.message)
    }
}

impl From<StorageError> for ApiError {
    /// Through the one storage-error mapping the WebSocket ops use too.
    fn from(e: StorageError) -> Self {
        Refusal::from(&e).into()
    }
}

impl From<JsonRejection> for ApiError {
    /// One convention for every body the node cannot use (docs/protocol.md): 413 `too_long`
    /// for one over the size limit, else 400 `bad_request` — not JSON, not of the schema,
    /// no `Content-Type: application/json` (axum's own 422 and 415), or a read that failed
    /// (the body read bound).
    fn from(r: JsonRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::TooLong,
                r.body_text(),
            )
        } else {
            Self::bad(ErrorCode::BadRequest, r.body_text())
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        Self::bad(ErrorCode::BadRequest, r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::bad(ErrorCode::BadRequest, r.body_text())
    }
}

/// What every handler returns.
pub(super) type ApiResult<T> = Result<T, ApiError>;
