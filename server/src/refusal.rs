//! Why an operation was refused, in the client's terms: the one mapping from storage
//! errors to client error codes, and from error codes to HTTP statuses, shared by the
//! WebSocket ops and the HTTP API (docs/protocol.md, "Error codes").
//!
//! | storage error | code          | HTTP |
//! |---------------|---------------|------|
//! | `NotFound`    | `not_found`   | 404  |
//! | `Conflict`    | `conflict`    | 409  |
//! | `Invalid`     | `bad_request` | 400  |
//! | `Database`    | `unavailable` | 503  |

use axum::http::StatusCode;
use flowline_protocol::ws::ErrorCode;

use crate::error::StorageError;

/// A refused operation: the error code and the message to answer with. Nothing was done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The client-facing error code.
    pub code: ErrorCode,
    /// Human text the client can act on.
    pub message: String,
}

/// Message of every `unavailable` answer.
pub const UNAVAILABLE: &str = "storage is unavailable; nothing was done, retry later";

impl Refusal {
    /// A refusal with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// `Err` of a refusal, for `?` in functions returning `Result<T, Refusal>`.
    pub fn err<T>(code: ErrorCode, message: impl Into<String>) -> Result<T, Self> {
        Err(Self::new(code, message))
    }

    /// Storage failed (not the client's fault): `unavailable`.
    pub fn unavailable() -> Self {
        Self::new(ErrorCode::Unavailable, UNAVAILABLE)
    }

    /// The HTTP status that goes with the code.
    pub fn status(&self) -> StatusCode {
        status_of(self.code)
    }
}

/// The HTTP status of an error code (the WebSocket sends the code alone).
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::BadRequest
        | ErrorCode::UnknownOp
        | ErrorCode::TooLong
        | ErrorCode::TooDeep
        | ErrorCode::UnsupportedVersion
        | ErrorCode::InvalidReference => StatusCode::BAD_REQUEST,
        ErrorCode::NotAuthenticated | ErrorCode::InvalidToken | ErrorCode::InvalidCredentials => {
            StatusCode::UNAUTHORIZED
        }
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::UnsupportedType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<&StorageError> for Refusal {
    /// The one mapping from storage errors to client errors. A database failure is
    /// logged here, once, since the client only learns "retry later".
    fn from(e: &StorageError) -> Self {
        match e {
            StorageError::NotFound(what) => {
                Self::new(ErrorCode::NotFound, format!("{what} not found"))
            }
            StorageError::Conflict(what) => {
                Self::new(ErrorCode::Conflict, format!("{what} already exists"))
            }
            StorageError::Invalid(m) => Self::new(ErrorCode::BadRequest, m.clone()),
            StorageError::Database(db) => {
                tracing::warn!(error = %db, "storage failed");
                Self::unavailable()
            }
        }
    }
}

impl From<StorageError> for Refusal {
    fn from(e: StorageError) -> Self {
        Self::from(&e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_errors_map_to_one_code_and_status_each() {
        let cases = [
            (StorageError::NotFound("space"), ErrorCode::NotFound, 404),
            (
                StorageError::Conflict("user".into()),
                ErrorCode::Conflict,
                409,
            ),
            (
                StorageError::Invalid("x".into()),
                ErrorCode::BadRequest,
                400,
            ),
            (
                StorageError::Database(sqlx::Error::PoolTimedOut),
                ErrorCode::Unavailable,
                503,
            ),
        ];
        for (e, code, status) in cases {
            let r = Refusal::from(&e);
            assert_eq!((r.code, r.status().as_u16()), (code, status), "{e}");
        }
    }
}
