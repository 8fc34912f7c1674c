//! What the chat-action routes share: the rate-limit check and its headers, the 429
//! answer, answering a [`Done`] (emitting its events like the WebSocket does), and the
//! `Idempotency-Key` wrapper. The routes themselves are mounted in `api.rs`.
//!
//! The actions are the ones of [`crate::chat`], the very functions the WebSocket ops
//! call: the HTTP side only parses, rates and answers (docs/protocol.md, "Bots: chat
//! actions over HTTP").

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use flowline_protocol::ChannelId;
use flowline_protocol::actions::{
    IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, RATE_LIMIT_LIMIT, RATE_LIMIT_REMAINING, RATE_LIMIT_RESET,
};
use flowline_protocol::api::ApiErrorBody;
use flowline_protocol::ws::ErrorCode;

use super::error::ApiError;
use super::extract::Caller;
use crate::chat::Done;
use crate::idempotency::Answer;
use crate::node::Node;
use crate::ratelimit::{Limited, Standing};
use crate::refusal::Refusal;

/// Response header: seconds (fractional) until the bucket is full again (Discord's
/// `X-RateLimit-Reset-After`, beside GitHub's epoch-seconds `X-RateLimit-Reset`).
pub(super) const RATE_LIMIT_RESET_AFTER: &str = "x-ratelimit-reset-after";
/// Response header: which bucket refused (`token` or `channel`).
pub(super) const RATE_LIMIT_SCOPE: &str = "x-ratelimit-scope";

/// The caller's standing after a rate check: its headers go on every answer.
pub(super) struct Rated(Option<Standing>);

/// Take one token from the caller's bucket (and the channel's, for an action on one):
/// `Err` is the 429 answer.
pub(super) async fn rate(
    node: &Node,
    caller: &Caller,
    channel: Option<ChannelId>,
) -> Result<Rated, Response> {
    match node.rates.check(&caller.token, channel).await {
        Ok(standing) => Ok(Rated(standing)),
        Err(limited) => {
            node.metrics.rate_limited.increment(1);
            Err(too_many(&limited))
        }
    }
}

fn header_value(v: impl ToString) -> HeaderValue {
    HeaderValue::from_str(&v.to_string()).unwrap_or(HeaderValue::from_static("0"))
}

fn epoch_after(d: Duration) -> u64 {
    (SystemTime::now() + d)
        .duration_since(UNIX_EPOCH)
        .map_or(0, |e| e.as_secs() + u64::from(e.subsec_nanos() > 0))
}

fn set(headers: &mut HeaderMap, name: &'static str, v: impl ToString) {
    headers.insert(HeaderName::from_static(name), header_value(v));
}

/// 429 `rate_limited` with `Retry-After` (whole seconds, rounded up) and the
/// `X-RateLimit-*` headers of the bucket that refused.
fn too_many(l: &Limited) -> Response {
    let body = ApiErrorBody {
        code: ErrorCode::RateLimited,
        message: l.message(),
    };
    let mut resp = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
    let h = resp.headers_mut();
    let retry = l.retry_after.as_millis().div_ceil(1000).max(1);
    h.insert(header::RETRY_AFTER, header_value(retry));
    set(h, RATE_LIMIT_LIMIT, l.limit);
    set(h, RATE_LIMIT_REMAINING, 0);
    set(h, RATE_LIMIT_RESET, epoch_after(l.reset));
    set(
        h,
        RATE_LIMIT_RESET_AFTER,
        format!("{:.3}", l.reset.as_secs_f64()),
    );
    set(h, RATE_LIMIT_SCOPE, l.scope.as_str());
    resp
}

impl Rated {
    /// `resp` with the `X-RateLimit-*` headers of the caller's bucket.
    pub(super) fn headers(&self, mut resp: Response) -> Response {
        if let Some(s) = self.0 {
            let h = resp.headers_mut();
            set(h, RATE_LIMIT_LIMIT, s.limit);
            set(h, RATE_LIMIT_REMAINING, s.remaining);
            set(h, RATE_LIMIT_RESET, epoch_after(s.reset));
            set(
                h,
                RATE_LIMIT_RESET_AFTER,
                format!("{:.3}", s.reset.as_secs_f64()),
            );
        }
        resp
    }
}

/// The answer of a refused action: the status of its code (`refusal.rs`), `{code, message}`.
pub(super) fn refused(r: Refusal) -> Response {
    ApiError::from(r).into_response()
}

/// Answer a chat action like the WebSocket does: its result as `ok(result)` and then its
/// events for others (every node in a cluster), or the refusal.
pub(super) fn answer<T>(
    node: &Node,
    done: Result<Done<T>, Refusal>,
    ok: impl FnOnce(T) -> Response,
) -> Response {
    match done {
        Ok(Done { result, events }) => {
            let resp = ok(result);
            node.chat.emit(events);
            resp
        }
        Err(r) => refused(r),
    }
}

/// `status` with `value` as its JSON body.
pub(super) fn json(status: StatusCode, value: &impl Serialize) -> Response {
    match serde_json::to_string(value) {
        Ok(text) => (status, [(header::CONTENT_TYPE, "application/json")], text).into_response(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}

/// The `Idempotency-Key` of a request, if it has one (`Err`: not valid UTF-8).
pub(super) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Refusal> {
    match headers.get(IDEMPOTENCY_KEY) {
        None => Ok(None),
        Some(v) => match v.to_str() {
            Ok(s) => Ok(Some(s.to_owned())),
            Err(_) => Err(Refusal::new(
                ErrorCode::BadRequest,
                "Idempotency-Key must be printable ASCII",
            )),
        },
    }
}

/// Run `act` (answering `(status, JSON body)`) at most once per `Idempotency-Key` of the
/// caller: a repeat of the same request gets the first answer, marked
/// `Idempotent-Replayed: true`. Without a key, `act` simply runs.
pub(super) async fn idempotent<Fut>(
    node: &Arc<Node>,
    caller: &Caller,
    key: Option<String>,
    fingerprint: String,
    act: impl FnOnce() -> Fut,
) -> Response
where
    Fut: std::future::Future<Output = (u16, String)> + Send + 'static,
{
    let Answer {
        status,
        body,
        replayed,
    } = match key {
        None => {
            let (status, body) = act().await;
            Answer {
                status,
                body,
                replayed: false,
            }
        }
        Some(key) => match node
            .idempotency
            .run(caller.user.id, &key, fingerprint, act)
            .await
        {
            Ok(a) => a,
            Err(r) => return refused(r),
        },
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    if replayed {
        node.metrics.idempotent_replays.increment(1);
        resp.headers_mut().insert(
            HeaderName::from_static(IDEMPOTENT_REPLAYED),
            HeaderValue::from_static("true"),
        );
    }
    resp
}

/// `(status, JSON body)` of a response built by [`answer`], for recording.
pub(super) async fn recordable(resp: Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    (status, body)
}
