//! `/dms` and `/channels/{id}/messages`: opening a DM, and a channel's stored history.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::Deserialize;

use flowline_protocol::api::{Channel, OpenDm};
use flowline_protocol::ws::{ErrorCode, Message};
use flowline_protocol::{ChannelId, Seq};

use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath, Caller};
use crate::node::Node;

/// Open (or find) the DM channel with another user.
#[utoipa::path(post, path = "/dms", tag = "channels", security(("bearer" = [])),
    request_body = OpenDm,
    responses((status = 200, description = "Existing DM", body = Channel), (status = 201, description = "New DM", body = Channel),
        (status = 400, description = "A DM with oneself", body = flowline_protocol::api::ApiErrorBody), (status = 401, description = "Missing or invalid token", body = flowline_protocol::api::ApiErrorBody), (status = 404, description = "No such user", body = flowline_protocol::api::ApiErrorBody)))]
pub(super) async fn dm_open(
    State(node): State<Arc<Node>>,
    caller: Caller,
    ApiJson(body): ApiJson<OpenDm>,
) -> ApiResult<(StatusCode, Json<Channel>)> {
    if body.user_id == caller.user.id {
        return Err(ApiError::bad(
            ErrorCode::BadRequest,
            "a DM needs another user",
        ));
    }
    if node.storage.user(body.user_id).await?.is_none() {
        return Err(ApiError::not_found("user not found"));
    }
    let (channel, created) = node.storage.open_dm(caller.user.id, body.user_id).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(channel)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct HistoryQuery {
    /// Only messages with seq < before.
    before: Option<Seq>,
    /// Only messages with seq > after.
    after: Option<Seq>,
    /// At most this many (default 50; 0 counts as 1, more than the node's maximum as the
    /// maximum).
    #[param(value_type = Option<i64>, minimum = 0, maximum = 4294967295_i64)]
    limit: Option<u32>,
}

/// Stored messages of a channel (edits, tombstones, reactions, threads, attachments
/// included), oldest first.
#[utoipa::path(get, path = "/channels/{id}/messages", tag = "channels", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Channel id"), HistoryQuery),
    responses((status = 200, body = Vec<Message>), (status = 401, description = "Missing or invalid token", body = flowline_protocol::api::ApiErrorBody), (status = 403, description = "Not a member", body = flowline_protocol::api::ApiErrorBody), (status = 404, description = "No such channel", body = flowline_protocol::api::ApiErrorBody)))]
pub(super) async fn channel_messages(
    State(node): State<Arc<Node>>,
    caller: Caller,
    ApiPath(id): ApiPath<ChannelId>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<Message>>> {
    let Query(q) = query?;
    node.membership.check_channel(caller.user.id, id).await?;
    let limit = q
        .limit
        .unwrap_or(50)
        .clamp(1, node.config.limits.max_history);
    Ok(Json(
        node.storage.messages(id, q.before, q.after, limit).await?,
    ))
}
