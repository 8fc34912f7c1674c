//! `/channels/{id}/messages/{msg}/thread` (POST): starting a thread over HTTP —
//! `chat::start_thread`, the function behind the WebSocket `start_thread`; members get
//! `thread_created` when it is new. Idempotent by nature: a second start answers the
//! existing thread (200).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use flowline_protocol::actions::{StartThread, Thread};
use flowline_protocol::api::ApiErrorBody;
use flowline_protocol::{ChannelId, MessageId};

use super::actions::{answer, json, rate};
use super::extract::{ApiJson, ApiPath, Caller};
use crate::membership::Access;
use crate::node::Node;

/// Start a thread on a message (a child channel with its own seqs, readable by the
/// parent channel's members), or get the one it has.
#[utoipa::path(post, path = "/channels/{id}/messages/{msg}/thread", tag = "actions", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Channel id"), ("msg" = i64, Path, description = "Parent message id")),
    request_body = StartThread,
    responses(
        (status = 201, description = "A new thread", body = Thread),
        (status = 200, description = "The message's existing thread", body = Thread),
        (status = 400, description = "Bad name, or no live message", body = ApiErrorBody),
        (status = 401, description = "Missing or invalid token", body = ApiErrorBody),
        (status = 403, description = "Not a member", body = ApiErrorBody),
        (status = 404, description = "No such channel", body = ApiErrorBody),
        (status = 429, description = "Rate limited", body = ApiErrorBody, headers(("retry-after" = u64, description = "Seconds to wait"))),
        (status = 503, description = "Storage unavailable", body = ApiErrorBody)))]
pub(super) async fn thread_start(
    State(node): State<Arc<Node>>,
    caller: Caller,
    ApiPath((channel, id)): ApiPath<(ChannelId, MessageId)>,
    ApiJson(body): ApiJson<StartThread>,
) -> Response {
    let rated = match rate(&node, &caller, Some(channel)).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let mut access = Access::new(caller.user.id);
    let done = node
        .chat
        .start_thread(&mut access, channel, id, body.name)
        .await;
    let created = done.as_ref().is_ok_and(|d| !d.events.is_empty());
    rated.headers(answer(&node, done, |t| {
        let status = if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        json(
            status,
            &Thread {
                channel: t.channel,
                id: t.id,
                seq: t.seq,
                thread: t.thread,
            },
        )
    }))
}
