//! The HTTP API under `/api/v1` (paths listed in `flowline_protocol::api`): handlers,
//! the bearer-token extractor and the JSON error type.
//!
//! Every handler carries a `#[utoipa::path]` description and is mounted through
//! `utoipa_axum`'s router, so the OpenAPI document served at `/api/v1/openapi.json` is
//! built from the very routes that serve requests and cannot drift from them.

mod uploads;

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Deserialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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

/// The document's frame: title, version, security schemes, tags. Paths come from the
/// router.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Flowline chat node HTTP API",
        description = "HTTP API of a Flowline chat node. The WebSocket protocol at `/ws` is described in docs/protocol.md."
    ),
    modifiers(&Security),
    tags(
        (name = "auth", description = "Sign up, log in, log out"),
        (name = "spaces", description = "Spaces, members and channels"),
        (name = "channels", description = "Channels, DMs and message history"),
        (name = "uploads", description = "File attachments"),
        (name = "admin", description = "Bulk provisioning for load tests"),
        (name = "meta", description = "This description"),
    )
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "admin",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new(ADMIN_HEADER))),
        );
    }
}

/// Prefix under which [`routes`] is mounted.
const PREFIX: &str = "/api/v1";

/// The OpenAPI document as served (built once per process; identical for every config).
static OPENAPI_JSON: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The routes under `/api/v1` in three groups by body limit (main, upload, admin), and
/// the OpenAPI document describing all of them (paths carry the `/api/v1` prefix).
struct Api {
    main: Router<Arc<App>>,
    upload: Router<Arc<App>>,
    admin: Router<Arc<App>>,
    doc: utoipa::openapi::OpenApi,
}

fn api() -> Api {
    let (main, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(signup))
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(me))
        .routes(routes!(space_create, space_list))
        .routes(routes!(space_join))
        .routes(routes!(space_leave))
        .routes(routes!(space_members))
        .routes(routes!(channel_create, channel_list))
        .routes(routes!(dm_open))
        .routes(routes!(channel_messages))
        .routes(routes!(uploads::upload_get))
        .routes(routes!(openapi_json))
        .split_for_parts();
    let (upload, upload_doc) = OpenApiRouter::new()
        .routes(routes!(uploads::upload_create))
        .split_for_parts();
    let (admin, admin_doc) = OpenApiRouter::new()
        .routes(routes!(admin_provision))
        .split_for_parts();
    doc.merge(upload_doc);
    doc.merge(admin_doc);
    let paths = std::mem::take(&mut doc.paths.paths);
    doc.paths.paths = paths
        .into_iter()
        .map(|(path, item)| (format!("{PREFIX}{path}"), item))
        .collect();
    Api {
        main,
        upload,
        admin,
        doc,
    }
}

/// The OpenAPI 3 document of the HTTP API, as JSON.
pub fn openapi_document() -> &'static str {
    OPENAPI_JSON.get_or_init(|| {
        api().doc.to_pretty_json().unwrap_or_else(|e| {
            format!("{{\"error\":\"cannot render the OpenAPI document: {e}\"}}")
        })
    })
}

pub(crate) fn routes(config: &Config) -> Router<Arc<App>> {
    let admin_limit = config.limits.max_http_body.saturating_mul(64);
    // Room for the multipart framing around a file of the maximum size; the exact limit
    // is enforced while streaming.
    let upload_limit = usize::try_from(config.features.upload_max_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(64 * 1024);
    let Api {
        main,
        upload,
        admin,
        ..
    } = api();
    main.layer(DefaultBodyLimit::max(config.limits.max_http_body))
        .merge(upload.layer(DefaultBodyLimit::max(upload_limit)))
        .merge(admin.layer(DefaultBodyLimit::max(admin_limit)))
}

/// The OpenAPI 3 document of this API.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    responses((status = 200, description = "OpenAPI 3 document", content_type = "application/json", body = Object))
)]
async fn openapi_json() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        openapi_document(),
    )
        .into_response()
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

/// Create a user (password hashed with argon2id).
#[utoipa::path(post, path = "/auth/signup", tag = "auth",
    request_body = Credentials,
    responses((status = 201, body = User), (status = 400, description = "Bad name or password", body = flowline_protocol::api::ApiErrorBody), (status = 409, description = "Name taken", body = flowline_protocol::api::ApiErrorBody)))]
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

/// Log in: a session token for the WebSocket `hello` and `Authorization: Bearer`.
#[utoipa::path(post, path = "/auth/login", tag = "auth",
    request_body = Credentials,
    responses((status = 200, body = Session), (status = 401, description = "`invalid_credentials`", body = flowline_protocol::api::ApiErrorBody)))]
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

/// Revoke the caller's token and close its WebSockets (4012).
#[utoipa::path(post, path = "/auth/logout", tag = "auth", security(("bearer" = [])),
    responses((status = 204, description = "Logged out"), (status = 401, description = "Missing or invalid token", body = flowline_protocol::api::ApiErrorBody)))]
async fn logout(State(app): State<Arc<App>>, caller: Caller) -> ApiResult<StatusCode> {
    app.storage.delete_token(caller.token).await?;
    app.kick_token(caller.token);
    Ok(StatusCode::NO_CONTENT)
}

/// The caller.
#[utoipa::path(get, path = "/users/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = User), (status = 401, description = "Missing or invalid token", body = flowline_protocol::api::ApiErrorBody)))]
async fn me(caller: Caller) -> Json<User> {
    Json(caller.user)
}

/// Create a space; the creator owns and joins it.
#[utoipa::path(post, path = "/spaces", tag = "spaces", security(("bearer" = [])),
    request_body = CreateSpace,
    responses((status = 201, body = Space), (status = 400, description = "Bad name", body = flowline_protocol::api::ApiErrorBody), (status = 401, description = "Missing or invalid token", body = flowline_protocol::api::ApiErrorBody)))]
async fn space_create(
    State(app): State<Arc<App>>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateSpace>,
) -> ApiResult<(StatusCode, Json<Space>)> {
    check_name("space name", &body.name, app.config.limits.max_name_chars)?;
    let space = app.storage.create_space(caller.user.id, &body.name).await?;
    Ok((StatusCode::CREATED, Json(space)))
}

/// Spaces the caller belongs to.
#[utoipa::path(get, path = "/spaces", tag = "spaces", security(("bearer" = [])),
    responses((status = 200, body = Vec<Space>), (status = 401, description = "Missing or invalid token", body = flowline_protocol::api::ApiErrorBody)))]
async fn space_list(State(app): State<Arc<App>>, caller: Caller) -> ApiResult<Json<Vec<Space>>> {
    Ok(Json(app.storage.spaces_of(caller.user.id).await?))
}

/// Join a space (idempotent).
#[utoipa::path(post, path = "/spaces/{id}/join", tag = "spaces", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Space id")),
    responses((status = 200, body = Space), (status = 401, description = "Missing or invalid token", body = flowline_protocol::api::ApiErrorBody), (status = 404, description = "No such space", body = flowline_protocol::api::ApiErrorBody)))]
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
    let members: Vec<_> = app
        .storage
        .space_members(id)
        .await?
        .into_iter()
        .map(|u| u.id)
        .collect();
    crate::session::ops::presence_on_join(&app, caller.user.id, &members).await;
    Ok(Json(space))
}

/// Leave a space (its owner cannot).
#[utoipa::path(post, path = "/spaces/{id}/leave", tag = "spaces", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Space id")),
    responses((status = 204, description = "Left"), (status = 400, description = "The owner cannot leave", body = flowline_protocol::api::ApiErrorBody), (status = 401, description = "Missing or invalid token", body = flowline_protocol::api::ApiErrorBody), (status = 404, description = "No such space", body = flowline_protocol::api::ApiErrorBody)))]
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

/// Members of a space (members only).
#[utoipa::path(get, path = "/spaces/{id}/members", tag = "spaces", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Space id")),
    responses((status = 200, body = Vec<User>), (status = 401, description = "Missing or invalid token", body = flowline_protocol::api::ApiErrorBody), (status = 403, description = "Not a member", body = flowline_protocol::api::ApiErrorBody), (status = 404, description = "No such space", body = flowline_protocol::api::ApiErrorBody)))]
async fn space_members(
    State(app): State<Arc<App>>,
    caller: Caller,
    ApiPath(id): ApiPath<SpaceId>,
) -> ApiResult<Json<Vec<User>>> {
    member_space(&app, id, &caller).await?;
    Ok(Json(app.storage.space_members(id).await?))
}

/// Create a public channel (no `members`) or a private one (listed members plus the
/// creator, all space members).
#[utoipa::path(post, path = "/spaces/{id}/channels", tag = "spaces", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Space id")),
    request_body = CreateChannel,
    responses((status = 201, body = Channel), (status = 400, description = "Bad name or member", body = flowline_protocol::api::ApiErrorBody), (status = 401, description = "Missing or invalid token", body = flowline_protocol::api::ApiErrorBody), (status = 403, description = "Not a member", body = flowline_protocol::api::ApiErrorBody), (status = 404, description = "No such space", body = flowline_protocol::api::ApiErrorBody)))]
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

/// Channels of a space the caller can read (threads are not listed).
#[utoipa::path(get, path = "/spaces/{id}/channels", tag = "spaces", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Space id")),
    responses((status = 200, body = Vec<Channel>), (status = 401, description = "Missing or invalid token", body = flowline_protocol::api::ApiErrorBody), (status = 403, description = "Not a member", body = flowline_protocol::api::ApiErrorBody), (status = 404, description = "No such space", body = flowline_protocol::api::ApiErrorBody)))]
async fn channel_list(
    State(app): State<Arc<App>>,
    caller: Caller,
    ApiPath(id): ApiPath<SpaceId>,
) -> ApiResult<Json<Vec<Channel>>> {
    member_space(&app, id, &caller).await?;
    Ok(Json(app.storage.space_channels(id, caller.user.id).await?))
}

/// Open (or find) the DM channel with another user.
#[utoipa::path(post, path = "/dms", tag = "channels", security(("bearer" = [])),
    request_body = OpenDm,
    responses((status = 200, description = "Existing DM", body = Channel), (status = 201, description = "New DM", body = Channel),
        (status = 400, description = "A DM with oneself", body = flowline_protocol::api::ApiErrorBody), (status = 401, description = "Missing or invalid token", body = flowline_protocol::api::ApiErrorBody), (status = 404, description = "No such user", body = flowline_protocol::api::ApiErrorBody)))]
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

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct HistoryQuery {
    /// Only messages with seq < before.
    before: Option<Seq>,
    /// Only messages with seq > after.
    after: Option<Seq>,
    /// At most this many (default 50, clamped to the node's maximum).
    limit: Option<u32>,
}

/// Stored messages of a channel (edits, tombstones, reactions, threads, attachments
/// included), oldest first.
#[utoipa::path(get, path = "/channels/{id}/messages", tag = "channels", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Channel id"), HistoryQuery),
    responses((status = 200, body = Vec<Message>), (status = 401, description = "Missing or invalid token", body = flowline_protocol::api::ApiErrorBody), (status = 403, description = "Not a member", body = flowline_protocol::api::ApiErrorBody), (status = 404, description = "No such channel", body = flowline_protocol::api::ApiErrorBody)))]
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

/// Bulk provisioning (enabled by the node's admin secret).
#[utoipa::path(post, path = "/admin/provision", tag = "admin", security(("admin" = [])),
    request_body = Provision,
    responses((status = 200, body = Provisioned), (status = 400, description = "Inconsistent request", body = flowline_protocol::api::ApiErrorBody), (status = 403, description = "Missing or wrong admin header", body = flowline_protocol::api::ApiErrorBody),
        (status = 404, description = "Admin API disabled", body = flowline_protocol::api::ApiErrorBody), (status = 409, description = "A username is taken", body = flowline_protocol::api::ApiErrorBody)))]
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
