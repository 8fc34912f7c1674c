//! `/spaces/*`: spaces, joining and leaving, members, and a space's channels.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use flowline_protocol::SpaceId;
use flowline_protocol::api::{Channel, ChannelKind, CreateChannel, CreateSpace, Space, User};
use flowline_protocol::ws::ErrorCode;

use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath, Caller, check_name};
use crate::members::MemberChange;
use crate::node::Node;

/// Create a space; the creator owns and joins it.
#[utoipa::path(post, path = "/spaces", tag = "spaces", security(("bearer" = [])),
    request_body = CreateSpace,
    responses((status = 201, body = Space), (status = 400, description = "Bad name", body = flowline_protocol::api::ApiErrorBody), (status = 401, description = "Missing or invalid token", body = flowline_protocol::api::ApiErrorBody)))]
pub(super) async fn space_create(
    State(node): State<Arc<Node>>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateSpace>,
) -> ApiResult<(StatusCode, Json<Space>)> {
    check_name("space name", &body.name, node.config.limits.max_name_chars)?;
    let space = node
        .storage
        .create_space(caller.user.id, &body.name)
        .await?;
    node.members_changed(MemberChange::Member {
        space: space.id,
        user: caller.user.id,
    });
    Ok((StatusCode::CREATED, Json(space)))
}

/// Spaces the caller belongs to.
#[utoipa::path(get, path = "/spaces", tag = "spaces", security(("bearer" = [])),
    responses((status = 200, body = Vec<Space>), (status = 401, description = "Missing or invalid token", body = flowline_protocol::api::ApiErrorBody)))]
pub(super) async fn space_list(
    State(node): State<Arc<Node>>,
    caller: Caller,
) -> ApiResult<Json<Vec<Space>>> {
    Ok(Json(node.storage.spaces_of(caller.user.id).await?))
}

/// Join a space (idempotent).
#[utoipa::path(post, path = "/spaces/{id}/join", tag = "spaces", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Space id")),
    responses((status = 200, body = Space), (status = 401, description = "Missing or invalid token", body = flowline_protocol::api::ApiErrorBody), (status = 404, description = "No such space", body = flowline_protocol::api::ApiErrorBody)))]
pub(super) async fn space_join(
    State(node): State<Arc<Node>>,
    caller: Caller,
    ApiPath(id): ApiPath<SpaceId>,
) -> ApiResult<Json<Space>> {
    let space = node
        .storage
        .space(id)
        .await?
        .ok_or_else(|| ApiError::not_found("space not found"))?;
    node.storage.join_space(id, caller.user.id).await?;
    node.members_changed(MemberChange::Member {
        space: id,
        user: caller.user.id,
    });
    let members = node.membership.members(id).await?;
    node.roster.on_join(caller.user.id, &members).await;
    Ok(Json(space))
}

/// Leave a space (its owner cannot).
#[utoipa::path(post, path = "/spaces/{id}/leave", tag = "spaces", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Space id")),
    responses((status = 204, description = "Left"), (status = 400, description = "The owner cannot leave", body = flowline_protocol::api::ApiErrorBody), (status = 401, description = "Missing or invalid token", body = flowline_protocol::api::ApiErrorBody), (status = 404, description = "No such space", body = flowline_protocol::api::ApiErrorBody)))]
pub(super) async fn space_leave(
    State(node): State<Arc<Node>>,
    caller: Caller,
    ApiPath(id): ApiPath<SpaceId>,
) -> ApiResult<StatusCode> {
    let space = node
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
    node.storage.leave_space(id, caller.user.id).await?;
    // The caller's sessions stop posting there: on this node now, on the others when the
    // bus delivers the change (at the latest after `membership::RECHECK`).
    node.members_changed(MemberChange::Left {
        space: id,
        user: caller.user.id,
    });
    Ok(StatusCode::NO_CONTENT)
}

/// Members of a space (members only).
#[utoipa::path(get, path = "/spaces/{id}/members", tag = "spaces", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Space id")),
    responses((status = 200, body = Vec<User>), (status = 401, description = "Missing or invalid token", body = flowline_protocol::api::ApiErrorBody), (status = 403, description = "Not a member", body = flowline_protocol::api::ApiErrorBody), (status = 404, description = "No such space", body = flowline_protocol::api::ApiErrorBody)))]
pub(super) async fn space_members(
    State(node): State<Arc<Node>>,
    caller: Caller,
    ApiPath(id): ApiPath<SpaceId>,
) -> ApiResult<Json<Vec<User>>> {
    node.membership.member_space(id, caller.user.id).await?;
    Ok(Json(node.storage.space_members(id).await?))
}

/// Create a public channel (no `members`) or a private one (listed members plus the
/// creator, all space members).
#[utoipa::path(post, path = "/spaces/{id}/channels", tag = "spaces", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Space id")),
    request_body = CreateChannel,
    responses((status = 201, body = Channel), (status = 400, description = "Bad name or member", body = flowline_protocol::api::ApiErrorBody), (status = 401, description = "Missing or invalid token", body = flowline_protocol::api::ApiErrorBody), (status = 403, description = "Not a member", body = flowline_protocol::api::ApiErrorBody), (status = 404, description = "No such space", body = flowline_protocol::api::ApiErrorBody)))]
pub(super) async fn channel_create(
    State(node): State<Arc<Node>>,
    caller: Caller,
    ApiPath(id): ApiPath<SpaceId>,
    ApiJson(body): ApiJson<CreateChannel>,
) -> ApiResult<(StatusCode, Json<Channel>)> {
    check_name(
        "channel name",
        &body.name,
        node.config.limits.max_name_chars,
    )?;
    node.membership.member_space(id, caller.user.id).await?;
    let (kind, members) = match body.members {
        None => (ChannelKind::Public, Vec::new()),
        Some(mut members) => {
            members.push(caller.user.id);
            members.sort_unstable();
            members.dedup();
            for &m in &members {
                if !node.membership.is_space_member(id, m).await? {
                    return Err(ApiError::bad(
                        ErrorCode::BadRequest,
                        format!("user {m} is not a member of this space"),
                    ));
                }
            }
            (ChannelKind::Private, members)
        }
    };
    let channel = node
        .storage
        .create_channel(id, &body.name, kind, &members)
        .await?;
    Ok((StatusCode::CREATED, Json(channel)))
}

/// Channels of a space the caller can read (threads are not listed).
#[utoipa::path(get, path = "/spaces/{id}/channels", tag = "spaces", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Space id")),
    responses((status = 200, body = Vec<Channel>), (status = 401, description = "Missing or invalid token", body = flowline_protocol::api::ApiErrorBody), (status = 403, description = "Not a member", body = flowline_protocol::api::ApiErrorBody), (status = 404, description = "No such space", body = flowline_protocol::api::ApiErrorBody)))]
pub(super) async fn channel_list(
    State(node): State<Arc<Node>>,
    caller: Caller,
    ApiPath(id): ApiPath<SpaceId>,
) -> ApiResult<Json<Vec<Channel>>> {
    node.membership.member_space(id, caller.user.id).await?;
    Ok(Json(node.storage.space_channels(id, caller.user.id).await?))
}
