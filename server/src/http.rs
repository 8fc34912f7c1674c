//! The HTTP API under `/api/v1` (paths listed in `flowline_protocol::api`): handlers,
//! the bearer-token extractor and the JSON error type.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use flowline_protocol::api::{
    ADMIN_HEADER, ApiErrorBody, Channel, ChannelKind, CreateChannel, CreateSpace, Credentials,
    OpenDm, Provision, Provisioned, ProvisionedUser, Session, Space, User,
};
use flowline_protocol::ws::{ErrorCode, Message};
use flowline_protocol::{ChannelId, Seq, SpaceId};

use crate::app::App;
use crate::auth::{self, TokenHash};
use crate::config::Config;
use crate::error::StorageError;

/// An HTTP error answer: status plus `{code, message}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
    fn bad(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
    }
    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
    }
    fn internal(e: impl std::fmt::Display) -> Self {
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

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NotFound(what) => Self::not_found(format!("{what} not found")),
            StorageError::Conflict(what) => Self::new(
                StatusCode::CONFLICT,
                ErrorCode::Conflict,
                format!("{what} already exists"),
            ),
            StorageError::Invalid(m) => Self::bad(ErrorCode::BadRequest, m),
            StorageError::Database(e) => {
                tracing::warn!(error = %e, "storage unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::Unavailable,
                    "storage is unavailable; retry later",
                )
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let status = r.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            ErrorCode::TooLong
        } else {
            ErrorCode::BadRequest
        };
        Self::new(status, code, r.body_text())
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

/// `Json` whose rejection is an [`ApiError`].
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
struct ApiJson<T>(T);

/// `Path` whose rejection is an [`ApiError`].
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
struct ApiPath<T>(T);

/// The authenticated caller (from `Authorization: Bearer <token>`).
struct Caller {
    user: User,
    token: TokenHash,
}

impl FromRequestParts<Arc<App>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
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
        match app.storage.user_by_token(hash).await? {
            Some(user) => Ok(Caller { user, token: hash }),
            None => Err(unauthorized("unknown or revoked token")),
        }
    }
}

type ApiResult<T> = Result<T, ApiError>;

pub(crate) fn routes(config: &Config) -> Router<Arc<App>> {
    let admin_limit = config.limits.max_http_body.saturating_mul(64);
    Router::new()
        .route("/auth/signup", post(signup))
        .route("/auth/login", post(login))
        .route("/auth/logout", post(logout))
        .route("/users/me", get(me))
        .route("/spaces", post(space_create).get(space_list))
        .route("/spaces/{id}/join", post(space_join))
        .route("/spaces/{id}/leave", post(space_leave))
        .route("/spaces/{id}/members", get(space_members))
        .route(
            "/spaces/{id}/channels",
            post(channel_create).get(channel_list),
        )
        .route("/dms", post(dm_open))
        .route("/channels/{id}/messages", get(channel_messages))
        .layer(DefaultBodyLimit::max(config.limits.max_http_body))
        .route(
            "/admin/provision",
            post(admin_provision).layer(DefaultBodyLimit::max(admin_limit)),
        )
}

fn check_name(what: &str, name: &str, max: usize) -> ApiResult<()> {
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

async fn signup(
    State(app): State<Arc<App>>,
    ApiJson(c): ApiJson<Credentials>,
) -> ApiResult<(StatusCode, Json<User>)> {
    check_name("username", &c.username, app.config.limits.max_name_chars)?;
    if c.username.chars().any(char::is_whitespace) {
        return Err(ApiError::bad(
            ErrorCode::BadRequest,
            "username must not contain whitespace",
        ));
    }
    if c.password.is_empty() || c.password.len() > 1024 {
        return Err(ApiError::bad(
            ErrorCode::TooLong,
            "password must have 1 to 1024 bytes",
        ));
    }
    let cost = app.config.argon2;
    let hash = tokio::task::spawn_blocking(move || auth::hash_password(cost, &c.password))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let user = app.storage.create_user(&c.username, &hash).await?;
    Ok((StatusCode::CREATED, Json(user)))
}

async fn login(
    State(app): State<Arc<App>>,
    ApiJson(c): ApiJson<Credentials>,
) -> ApiResult<Json<Session>> {
    let refused = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::InvalidCredentials,
            "wrong username or password",
        )
    };
    let Some((user, Some(stored))) = app.storage.user_credentials(&c.username).await? else {
        return Err(refused());
    };
    let ok = tokio::task::spawn_blocking(move || auth::verify_password(&stored, &c.password))
        .await
        .map_err(ApiError::internal)?;
    if !ok {
        return Err(refused());
    }
    let (token, hash) = auth::new_token();
    app.storage.insert_token(user.id, hash).await?;
    Ok(Json(Session { token, user }))
}

async fn logout(State(app): State<Arc<App>>, caller: Caller) -> ApiResult<StatusCode> {
    app.storage.delete_token(caller.token).await?;
    app.kick_token(caller.token);
    Ok(StatusCode::NO_CONTENT)
}

async fn me(caller: Caller) -> Json<User> {
    Json(caller.user)
}

async fn space_create(
    State(app): State<Arc<App>>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateSpace>,
) -> ApiResult<(StatusCode, Json<Space>)> {
    check_name("space name", &body.name, app.config.limits.max_name_chars)?;
    let space = app.storage.create_space(caller.user.id, &body.name).await?;
    Ok((StatusCode::CREATED, Json(space)))
}

async fn space_list(State(app): State<Arc<App>>, caller: Caller) -> ApiResult<Json<Vec<Space>>> {
    Ok(Json(app.storage.spaces_of(caller.user.id).await?))
}

async fn space_join(
    State(app): State<Arc<App>>,
    caller: Caller,
    ApiPath(id): ApiPath<SpaceId>,
) -> ApiResult<Json<Space>> {
    let space = app
        .storage
        .space(id)
        .await?
        .ok_or_else(|| ApiError::not_found("space not found"))?;
    app.storage.join_space(id, caller.user.id).await?;
    Ok(Json(space))
}

async fn space_leave(
    State(app): State<Arc<App>>,
    caller: Caller,
    ApiPath(id): ApiPath<SpaceId>,
) -> ApiResult<StatusCode> {
    let space = app
        .storage
        .space(id)
        .await?
        .ok_or_else(|| ApiError::not_found("space not found"))?;
    if space.owner == caller.user.id {
        return Err(ApiError::bad(
            ErrorCode::BadRequest,
            "the owner cannot leave their space",
        ));
    }
    app.storage.leave_space(id, caller.user.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The space, if the caller is a member (404 if missing, 403 if not a member).
async fn member_space(app: &App, space: SpaceId, caller: &Caller) -> ApiResult<Space> {
    let space = app
        .storage
        .space(space)
        .await?
        .ok_or_else(|| ApiError::not_found("space not found"))?;
    if !app
        .storage
        .is_space_member(space.id, caller.user.id)
        .await?
    {
        return Err(ApiError::forbidden("not a member of this space"));
    }
    Ok(space)
}

async fn space_members(
    State(app): State<Arc<App>>,
    caller: Caller,
    ApiPath(id): ApiPath<SpaceId>,
) -> ApiResult<Json<Vec<User>>> {
    member_space(&app, id, &caller).await?;
    Ok(Json(app.storage.space_members(id).await?))
}

async fn channel_create(
    State(app): State<Arc<App>>,
    caller: Caller,
    ApiPath(id): ApiPath<SpaceId>,
    ApiJson(body): ApiJson<CreateChannel>,
) -> ApiResult<(StatusCode, Json<Channel>)> {
    check_name("channel name", &body.name, app.config.limits.max_name_chars)?;
    member_space(&app, id, &caller).await?;
    let (kind, members) = match body.members {
        None => (ChannelKind::Public, Vec::new()),
        Some(mut members) => {
            members.push(caller.user.id);
            members.sort_unstable();
            members.dedup();
            for &m in &members {
                if !app.storage.is_space_member(id, m).await? {
                    return Err(ApiError::bad(
                        ErrorCode::BadRequest,
                        format!("user {m} is not a member of this space"),
                    ));
                }
            }
            (ChannelKind::Private, members)
        }
    };
    let channel = app
        .storage
        .create_channel(id, &body.name, kind, &members)
        .await?;
    Ok((StatusCode::CREATED, Json(channel)))
}

async fn channel_list(
    State(app): State<Arc<App>>,
    caller: Caller,
    ApiPath(id): ApiPath<SpaceId>,
) -> ApiResult<Json<Vec<Channel>>> {
    member_space(&app, id, &caller).await?;
    Ok(Json(app.storage.space_channels(id, caller.user.id).await?))
}

async fn dm_open(
    State(app): State<Arc<App>>,
    caller: Caller,
    ApiJson(body): ApiJson<OpenDm>,
) -> ApiResult<(StatusCode, Json<Channel>)> {
    if body.user_id == caller.user.id {
        return Err(ApiError::bad(
            ErrorCode::BadRequest,
            "a DM needs another user",
        ));
    }
    if app.storage.user(body.user_id).await?.is_none() {
        return Err(ApiError::not_found("user not found"));
    }
    let (channel, created) = app.storage.open_dm(caller.user.id, body.user_id).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(channel)))
}

#[derive(Debug, Deserialize)]
struct HistoryQuery {
    before: Option<Seq>,
    after: Option<Seq>,
    limit: Option<u32>,
}

async fn channel_messages(
    State(app): State<Arc<App>>,
    caller: Caller,
    ApiPath(id): ApiPath<ChannelId>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<Message>>> {
    let Query(q) = query?;
    if app.storage.channel(id).await?.is_none() {
        return Err(ApiError::not_found("channel not found"));
    }
    if !app.storage.can_read(id, caller.user.id).await? {
        return Err(ApiError::forbidden("not a member of this channel"));
    }
    let limit = q
        .limit
        .unwrap_or(50)
        .clamp(1, app.config.limits.max_history);
    Ok(Json(
        app.storage.messages(id, q.before, q.after, limit).await?,
    ))
}

async fn admin_provision(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Json<Provision>, JsonRejection>,
) -> ApiResult<Json<Provisioned>> {
    let Some(secret) = app.config.admin_secret.as_deref() else {
        return Err(ApiError::not_found("not found"));
    };
    let given = headers.get(ADMIN_HEADER).and_then(|v| v.to_str().ok());
    if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), secret.as_bytes())) {
        return Err(ApiError::forbidden(format!(
            "missing or wrong {ADMIN_HEADER} header"
        )));
    }
    let Json(req) = body?;
    if req.username_prefix.chars().count() > app.config.limits.max_name_chars / 2 {
        return Err(ApiError::bad(
            ErrorCode::TooLong,
            "username prefix too long",
        ));
    }
    let (tokens, hashes): (Vec<String>, Vec<TokenHash>) =
        (0..req.users).map(|_| auth::new_token()).unzip();
    let ids = app.storage.provision(&req, &hashes).await?;
    Ok(Json(Provisioned {
        users: ids
            .users
            .into_iter()
            .zip(tokens)
            .map(|(id, token)| ProvisionedUser { id, token })
            .collect(),
        spaces: ids.spaces,
        dms: ids.dms,
    }))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
