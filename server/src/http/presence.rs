//! `/channels/{id}/typing` (POST) and `/users/me/presence` (PUT): the ephemeral signals
//! over HTTP — `chat::typing` and the roster's `set_status`, the functions behind the
//! WebSocket `typing` and `set_presence`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use flowline_protocol::ChannelId;
use flowline_protocol::actions::SetPresence;
use flowline_protocol::api::ApiErrorBody;

use super::actions::{answer, rate, refused};
use super::extract::{ApiJson, ApiPath, Caller};
use crate::membership::Access;
use crate::node::Node;

/// "I am typing in this channel": members get `typing` (at most one per user per channel
/// per typing interval; more are accepted and dropped, as on the WebSocket). Not rate
/// limited: the typing throttle already bounds it.
#[utoipa::path(post, path = "/channels/{id}/typing", tag = "actions", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Channel id")),
    responses(
        (status = 204, description = "Forwarded, or dropped by the typing throttle"),
        (status = 401, description = "Missing or invalid token", body = ApiErrorBody),
        (status = 403, description = "Not a member", body = ApiErrorBody),
        (status = 404, description = "No such channel", body = ApiErrorBody),
        (status = 503, description = "Storage unavailable", body = ApiErrorBody)))]
pub(super) async fn typing_post(
    State(node): State<Arc<Node>>,
    caller: Caller,
    ApiPath(channel): ApiPath<ChannelId>,
) -> Response {
    let mut access = Access::new(caller.user.id);
    let done = node.chat.typing(&mut access, channel).await;
    answer(&node, done, |()| StatusCode::NO_CONTENT.into_response())
}

/// Set one's presence and custom status text, like the WebSocket `set_presence`: members
/// of the user's spaces get `presence` when what they see changed (a user shows
/// `offline` while none of their WebSocket sessions is open). Idempotent.
#[utoipa::path(put, path = "/users/me/presence", tag = "actions", security(("bearer" = [])),
    request_body = SetPresence,
    responses(
        (status = 204, description = "Set"),
        (status = 400, description = "Custom text too long or not printable", body = ApiErrorBody),
        (status = 401, description = "Missing or invalid token", body = ApiErrorBody),
        (status = 429, description = "Rate limited", body = ApiErrorBody, headers(("retry-after" = u64, description = "Seconds to wait"))),
        (status = 503, description = "Presence unavailable", body = ApiErrorBody)))]
pub(super) async fn presence_set(
    State(node): State<Arc<Node>>,
    caller: Caller,
    ApiJson(body): ApiJson<SetPresence>,
) -> Response {
    let rated = match rate(&node, &caller, None).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let resp = match node
        .roster
        .set_status(caller.user.id, body.status, body.custom)
        .await
    {
        Ok(change) => {
            if let Some(p) = change {
                node.roster.announce(p).await;
            }
            StatusCode::NO_CONTENT.into_response()
        }
        Err(r) => refused(r),
    };
    rated.headers(resp)
}
