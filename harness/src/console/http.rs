//! The console's routes. Every one needs the run's token, as `?token=` (the page's URL
//! carries it) or `Authorization: Bearer <token>`: 401 without it, 403 with another.
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | / | the page |
//! | GET | /api/info | the run: scenario, phases' lengths, links, nodes, fault kinds |
//! | GET | /api/stream | Server-Sent Events, one `frame` a second (JSON: numbers, charts) |
//! | POST | /api/faults | inject a fault (JSON: kind, target, duration, parameters): 201; 400 bad input; 409 not now |
//! | DELETE | /api/faults/{id} | heal a manual fault: 200; 404 not active |
//! | DELETE | /api/faults | heal every manual fault: 200 |

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get};
use futures_util::Stream;
use serde_json::{Value, json};

use super::manual::Refused;
use super::{Console, lock};

/// The console's router.
pub fn router(console: Console) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/info", get(info))
        .route("/api/stream", get(stream))
        .route("/api/faults", delete(heal_all).post(inject))
        .route("/api/faults/{id}", delete(heal))
        .layer(axum::middleware::from_fn_with_state(
            console.clone(),
            need_token,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .with_state(console)
}

/// Compare without stopping at the first difference.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "error": message, "status": status.as_u16() })),
    )
        .into_response()
}

async fn need_token(State(c): State<Console>, req: Request, next: Next) -> Response {
    let from_query = req.uri().query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
    });
    let from_header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|v| v.trim().to_string());
    match from_header.or(from_query) {
        None => error(
            StatusCode::UNAUTHORIZED,
            "the console needs the run's token: open the URL `flowline run` printed \
             (…/?token=…) or send `Authorization: Bearer <token>`",
        ),
        Some(t) if !same(&t, c.token()) => error(
            StatusCode::FORBIDDEN,
            "wrong token: this is not the token of this run",
        ),
        Some(_) => next.run(req).await,
    }
}

async fn page() -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "no-store")],
        Html(super::page::HTML.as_str()),
    )
}

async fn info(State(c): State<Console>) -> impl IntoResponse {
    axum::Json(lock(&c.inner.info).clone())
}

async fn stream(State(c): State<Console>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = c.inner.frames.subscribe();
    // The newest frame first (it is at most a second old), then each new one.
    let first = Some(rx.borrow().clone()).filter(|f| f.len() > 2);
    let frames = futures_util::stream::unfold((rx, first), |(mut rx, first)| async move {
        if let Some(f) = first {
            return Some((Ok(Event::default().event("frame").data(&*f)), (rx, None)));
        }
        rx.changed().await.ok()?;
        let f = rx.borrow_and_update().clone();
        Some((Ok(Event::default().event("frame").data(&*f)), (rx, None)))
    });
    Sse::new(frames).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

fn answer(r: Result<Value, Refused>, ok: StatusCode) -> Response {
    match r {
        Ok(v) => (ok, axum::Json(v)).into_response(),
        Err(e) => error(
            StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
            &e.message,
        ),
    }
}

async fn inject(State(c): State<Console>, body: Bytes) -> Response {
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("the body is not JSON: {e}"),
            );
        }
    };
    answer(c.inject(&body).await, StatusCode::CREATED)
}

async fn heal(State(c): State<Console>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<usize>() else {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("{id:?} is not a fault number"),
        );
    };
    answer(c.heal(id).await, StatusCode::OK)
}

async fn heal_all(State(c): State<Console>) -> Response {
    answer(c.heal_all().await, StatusCode::OK)
}
