//! What handlers take from a request: JSON bodies and path ids whose rejections are
//! [`ApiError`]s, the authenticated [`Caller`], and the shared name check.

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts};
use axum::http::StatusCode;
use axum::http::request::Parts;

use flowline_protocol::api::User;
use flowline_protocol::ws::ErrorCode;

use super::error::{ApiError, ApiResult};
use crate::auth::{self, TokenHash};
use crate::node::Node;

#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub(super) struct ApiJson<T>(pub(super) T);

/// `Path` whose rejection is an [`ApiError`].
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub(super) struct ApiPath<T>(pub(super) T);

/// The authenticated caller (from `Authorization: Bearer <token>`).
pub(super) struct Caller {
    pub(super) user: User,
    pub(super) token: TokenHash,
}

impl FromRequestParts<Arc<Node>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, node: &Arc<Node>) -> Result<Self, ApiError> {
        let unauthorized =
            |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::InvalidToken, m);
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| unauthorized("missing Authorization: Bearer <token>"))?;
        let token = header
            .strip_prefix("Bearer ")
            .ok_or_else(|| unauthorized("Authorization must be `Bearer <token>`"))?;
        let hash = auth::token_hash(token.trim());
        match node.storage.user_by_token(hash).await? {
            Some(user) => Ok(Caller { user, token: hash }),
            None => Err(unauthorized("unknown or revoked token")),
        }
    }
}

/// A username: a name (see [`check_name`]) without whitespace. Sign-up and admin
/// provisioning both apply it.
pub(super) fn check_username(what: &str, name: &str, max: usize) -> ApiResult<()> {
    check_name(what, name, max)?;
    if name.chars().any(char::is_whitespace) {
        return Err(ApiError::bad(
            ErrorCode::BadRequest,
            format!("{what} must not contain whitespace"),
        ));
    }
    Ok(())
}

/// A user, space or channel name: 1 to `max` characters, no control characters.
pub(super) fn check_name(what: &str, name: &str, max: usize) -> ApiResult<()> {
    let n = name.chars().count();
    if n == 0 || n > max {
        return Err(ApiError::bad(
            ErrorCode::TooLong,
            format!("{what} must have 1 to {max} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::bad(
            ErrorCode::BadRequest,
            format!("{what} contains control characters"),
        ));
    }
    Ok(())
}
