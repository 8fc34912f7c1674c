//! `/channels/{id}/messages` (POST) and `/channels/{id}/messages/{msg}` (PATCH, DELETE):
//! posting, editing and deleting over HTTP — `chat::send`, `edit`, `delete`, the
//! functions behind the WebSocket ops, so subscribers get the same `message`,
//! `message_edited` and `message_deleted` events in the same seq space.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use flowline_protocol::actions::{EditMessage, PostMessage};
use flowline_protocol::api::ApiErrorBody;
use flowline_protocol::ws::Message;
use flowline_protocol::{ChannelId, MessageId};

use super::actions::{answer, idempotency_key, idempotent, json, rate, recordable, refused};
use super::extract::{ApiJson, ApiPath, Caller};
use crate::chat::SendRequest;
use crate::idempotency::fingerprint;
use crate::membership::Access;
use crate::node::Node;

/// Post a message of any kind (text, markdown, reply, quote, forward, with attachments),
/// exactly like the WebSocket `send`: every subscriber gets `message` with the channel's
/// next seq. With `Idempotency-Key`, a retry answers the first result (marked
/// `Idempotent-Replayed: true`) instead of posting twice.
#[utoipa::path(post, path = "/channels/{id}/messages", tag = "actions", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Channel id"),
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 printable ASCII characters; a retry with the same key and request answers the first result (kept 24 h by default, see docs/protocol.md)", example = "deploy-42-done")),
    request_body(content = PostMessage, examples(
        ("text" = (value = json!({"body": "deploy finished ✅", "nonce": "bot-42"}))),
        ("reply" = (value = json!({"body": "on it", "kind": "reply", "reply_to": 1001}))),
        ("quote" = (value = json!({"body": "agreed", "kind": "quote", "quote": {"id": 1001, "excerpt": "ship it"}}))),
        ("forward" = (value = json!({"kind": "forward", "forward_of": {"channel": 7, "id": 1001}}))))),
    responses(
        (status = 201, description = "Posted (or, with `Idempotent-Replayed: true`, posted by the first request with this key)", body = Message,
            headers(("x-ratelimit-limit" = u32, description = "Size of the caller's bucket"), ("x-ratelimit-remaining" = u32, description = "Tokens left"), ("x-ratelimit-reset" = u64, description = "Epoch seconds when the bucket is full again"), ("idempotent-replayed" = String, description = "`true` on a replayed answer"))),
        (status = 400, description = "Bad input: body too long or empty, bad reference, bad Idempotency-Key", body = ApiErrorBody),
        (status = 401, description = "Missing or invalid token", body = ApiErrorBody),
        (status = 403, description = "Not a member of the channel", body = ApiErrorBody),
        (status = 404, description = "No such channel", body = ApiErrorBody),
        (status = 409, description = "Idempotency-Key reused for another request, or its first request still running", body = ApiErrorBody),
        (status = 429, description = "Rate limited", body = ApiErrorBody,
            headers(("retry-after" = u64, description = "Seconds to wait"), ("x-ratelimit-limit" = u32), ("x-ratelimit-remaining" = u32), ("x-ratelimit-reset" = u64))),
        (status = 503, description = "Storage unavailable; nothing was posted", body = ApiErrorBody)))]
pub(super) async fn message_post(
    State(node): State<Arc<Node>>,
    caller: Caller,
    ApiPath(channel): ApiPath<ChannelId>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<PostMessage>,
) -> Response {
    let key = match idempotency_key(&headers) {
        Ok(k) => k,
        Err(r) => return refused(r),
    };
    let rated = match rate(&node, &caller, Some(channel)).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let print = fingerprint("POST", &format!("/channels/{channel}/messages"), &body);
    let user = caller.user.id;
    let act_node = node.clone();
    let act = move || async move {
        let req = SendRequest {
            channel,
            body: body.body,
            nonce: body.nonce,
            kind: body.kind,
            reply_to: body.reply_to,
            quote: body.quote,
            forward_of: body.forward_of,
            attachments: body.attachments,
        };
        let done = act_node.chat.send(&mut Access::new(user), req).await;
        recordable(answer(&act_node, done, |m| json(StatusCode::CREATED, &m))).await
    };
    let resp = idempotent(&node, &caller, key, print, act).await;
    rated.headers(resp)
}

/// Replace the body of one's own message, like the WebSocket `edit`: members get
/// `message_edited`.
#[utoipa::path(patch, path = "/channels/{id}/messages/{msg}", tag = "actions", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Channel id"), ("msg" = i64, Path, description = "Message id")),
    request_body = EditMessage,
    responses(
        (status = 204, description = "Edited"),
        (status = 400, description = "Bad body, or the message was deleted", body = ApiErrorBody),
        (status = 401, description = "Missing or invalid token", body = ApiErrorBody),
        (status = 403, description = "Not a member, or not the author", body = ApiErrorBody),
        (status = 404, description = "No such channel or message", body = ApiErrorBody),
        (status = 429, description = "Rate limited", body = ApiErrorBody, headers(("retry-after" = u64, description = "Seconds to wait"))),
        (status = 503, description = "Storage unavailable", body = ApiErrorBody)))]
pub(super) async fn message_edit(
    State(node): State<Arc<Node>>,
    caller: Caller,
    ApiPath((channel, id)): ApiPath<(ChannelId, MessageId)>,
    ApiJson(body): ApiJson<EditMessage>,
) -> Response {
    let rated = match rate(&node, &caller, Some(channel)).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let mut access = Access::new(caller.user.id);
    let done = node.chat.edit(&mut access, channel, id, body.body).await;
    rated.headers(answer(&node, done, |()| {
        StatusCode::NO_CONTENT.into_response()
    }))
}

/// Delete one's own message (it stays in history as a tombstone), like the WebSocket
/// `delete`: members get `message_deleted`.
#[utoipa::path(delete, path = "/channels/{id}/messages/{msg}", tag = "actions", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Channel id"), ("msg" = i64, Path, description = "Message id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Already deleted", body = ApiErrorBody),
        (status = 401, description = "Missing or invalid token", body = ApiErrorBody),
        (status = 403, description = "Not a member, or not the author", body = ApiErrorBody),
        (status = 404, description = "No such channel or message", body = ApiErrorBody),
        (status = 429, description = "Rate limited", body = ApiErrorBody, headers(("retry-after" = u64, description = "Seconds to wait"))),
        (status = 503, description = "Storage unavailable", body = ApiErrorBody)))]
pub(super) async fn message_delete(
    State(node): State<Arc<Node>>,
    caller: Caller,
    ApiPath((channel, id)): ApiPath<(ChannelId, MessageId)>,
) -> Response {
    let rated = match rate(&node, &caller, Some(channel)).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let mut access = Access::new(caller.user.id);
    let done = node.chat.delete(&mut access, channel, id).await;
    rated.headers(answer(&node, done, |()| {
        StatusCode::NO_CONTENT.into_response()
    }))
}
