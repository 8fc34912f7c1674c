//! `/channels/{id}/messages/{msg}/reactions/{emoji}` (PUT, DELETE): adding and removing
//! one's reaction over HTTP — `chat::react`, the function behind the WebSocket `react` /
//! `unreact`; members get `reaction` when the set changed. Both are idempotent by nature
//! (a reaction is there or not), so they need no `Idempotency-Key`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use flowline_protocol::api::ApiErrorBody;
use flowline_protocol::{ChannelId, MessageId};

use super::actions::{answer, rate};
use super::extract::{ApiPath, Caller};
use crate::membership::Access;
use crate::node::Node;

/// Add one's reaction (a unicode emoji, percent-encoded in the path, or `:name:`).
/// Idempotent: adding it again answers 204 and tells nobody.
#[utoipa::path(put, path = "/channels/{id}/messages/{msg}/reactions/{emoji}", tag = "actions", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Channel id"), ("msg" = i64, Path, description = "Message id"),
        ("emoji" = String, Path, description = "A unicode emoji (percent-encoded) or `:name:`", example = ":party_parrot:")),
    responses(
        (status = 204, description = "The reaction is there"),
        (status = 400, description = "Not an emoji", body = ApiErrorBody),
        (status = 401, description = "Missing or invalid token", body = ApiErrorBody),
        (status = 403, description = "Not a member", body = ApiErrorBody),
        (status = 404, description = "No such channel or live message", body = ApiErrorBody),
        (status = 429, description = "Rate limited", body = ApiErrorBody, headers(("retry-after" = u64, description = "Seconds to wait"))),
        (status = 503, description = "Storage unavailable", body = ApiErrorBody)))]
pub(super) async fn reaction_add(
    State(node): State<Arc<Node>>,
    caller: Caller,
    ApiPath((channel, id, emoji)): ApiPath<(ChannelId, MessageId, String)>,
) -> Response {
    react(&node, &caller, channel, id, emoji, true).await
}

/// Remove one's reaction. Idempotent: removing one that is not there answers 204.
#[utoipa::path(delete, path = "/channels/{id}/messages/{msg}/reactions/{emoji}", tag = "actions", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Channel id"), ("msg" = i64, Path, description = "Message id"),
        ("emoji" = String, Path, description = "A unicode emoji (percent-encoded) or `:name:`", example = ":party_parrot:")),
    responses(
        (status = 204, description = "The reaction is not there"),
        (status = 400, description = "Not an emoji", body = ApiErrorBody),
        (status = 401, description = "Missing or invalid token", body = ApiErrorBody),
        (status = 403, description = "Not a member", body = ApiErrorBody),
        (status = 404, description = "No such channel or live message", body = ApiErrorBody),
        (status = 429, description = "Rate limited", body = ApiErrorBody, headers(("retry-after" = u64, description = "Seconds to wait"))),
        (status = 503, description = "Storage unavailable", body = ApiErrorBody)))]
pub(super) async fn reaction_remove(
    State(node): State<Arc<Node>>,
    caller: Caller,
    ApiPath((channel, id, emoji)): ApiPath<(ChannelId, MessageId, String)>,
) -> Response {
    react(&node, &caller, channel, id, emoji, false).await
}

async fn react(
    node: &Node,
    caller: &Caller,
    channel: ChannelId,
    id: MessageId,
    emoji: String,
    add: bool,
) -> Response {
    let rated = match rate(node, caller, Some(channel)).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let mut access = Access::new(caller.user.id);
    let done = node.chat.react(&mut access, channel, id, emoji, add).await;
    rated.headers(answer(node, done, |()| {
        StatusCode::NO_CONTENT.into_response()
    }))
}
