//! `/auth/*` and `/users/me`: sign up, log in, log out, who am I.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use flowline_protocol::api::{Credentials, Session, User};
use flowline_protocol::ws::ErrorCode;

use super::contract::MAX_PASSWORD_CHARS;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, Caller, check_username};
use crate::auth;
use crate::node::Node;

/// Create a user (password hashed with argon2id).
#[utoipa::path(post, path = "/auth/signup", tag = "auth",
    request_body = Credentials,
    responses((status = 201, body = User), (status = 400, description = "Bad name or password", body = flowline_protocol::api::ApiErrorBody), (status = 409, description = "Name taken", body = flowline_protocol::api::ApiErrorBody)))]
pub(super) async fn signup(
    State(node): State<Arc<Node>>,
    ApiJson(c): ApiJson<Credentials>,
) -> ApiResult<(StatusCode, Json<User>)> {
    check_username("username", &c.username, node.config.limits.max_name_chars)?;
    let n = c.password.chars().count();
    if n == 0 || n > MAX_PASSWORD_CHARS {
        return Err(ApiError::bad(
            ErrorCode::TooLong,
            format!("password must have 1 to {MAX_PASSWORD_CHARS} characters"),
        ));
    }
    let cost = node.config.argon2;
    let hash = tokio::task::spawn_blocking(move || auth::hash_password(cost, &c.password))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let user = node.storage.create_user(&c.username, &hash).await?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// Log in: a session token for the WebSocket `hello` and `Authorization: Bearer`.
#[utoipa::path(post, path = "/auth/login", tag = "auth",
    request_body = Credentials,
    responses((status = 200, body = Session), (status = 401, description = "`invalid_credentials`", body = flowline_protocol::api::ApiErrorBody)))]
pub(super) async fn login(
    State(node): State<Arc<Node>>,
    ApiJson(c): ApiJson<Credentials>,
) -> ApiResult<Json<Session>> {
    let refused = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::InvalidCredentials,
            "wrong username or password",
        )
    };
    let Some((user, Some(stored))) = node.storage.user_credentials(&c.username).await? else {
        return Err(refused());
    };
    let ok = tokio::task::spawn_blocking(move || auth::verify_password(&stored, &c.password))
        .await
        .map_err(ApiError::internal)?;
    if !ok {
        return Err(refused());
    }
    let (token, hash) = auth::new_token();
    node.storage.insert_token(user.id, hash).await?;
    Ok(Json(Session { token, user }))
}

/// Revoke the caller's token and close its WebSockets (4012).
#[utoipa::path(post, path = "/auth/logout", tag = "auth", security(("bearer" = [])),
    responses((status = 204, description = "Logged out"), (status = 401, description = "Missing or invalid token", body = flowline_protocol::api::ApiErrorBody)))]
pub(super) async fn logout(State(node): State<Arc<Node>>, caller: Caller) -> ApiResult<StatusCode> {
    node.storage.delete_token(caller.token).await?;
    node.sessions.kick_token(caller.token);
    Ok(StatusCode::NO_CONTENT)
}

/// The caller.
#[utoipa::path(get, path = "/users/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = User), (status = 401, description = "Missing or invalid token", body = flowline_protocol::api::ApiErrorBody)))]
pub(super) async fn me(caller: Caller) -> Json<User> {
    Json(caller.user)
}
