//! The Toxiproxy 2.x HTTP API over a [`Controller`]: same paths, JSON shapes, status codes
//! and error body (`{"error": "...", "status": N}`), so any Toxiproxy client works.
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | /proxies | 200 `{name: proxy}` |
//! | POST | /proxies | 201 proxy; 400 missing field; 409 exists |
//! | POST | /populate | 201 `{"proxies": [..]}` |
//! | GET | /proxies/{p} | 200 proxy; 404 |
//! | POST, PATCH | /proxies/{p} | 200 proxy (listen/upstream/enabled) |
//! | DELETE | /proxies/{p} | 204 |
//! | GET | /proxies/{p}/toxics | 200 `[toxic]` |
//! | POST | /proxies/{p}/toxics | 200 toxic; 400 bad type/stream; 409 exists |
//! | GET | /proxies/{p}/toxics/{t} | 200 toxic; 404 |
//! | POST, PATCH | /proxies/{p}/toxics/{t} | 200 toxic (attributes, toxicity) |
//! | DELETE | /proxies/{p}/toxics/{t} | 204 |
//! | POST | /reset | 204 (enable all, remove all toxics) |
//! | GET | /version | 200 `{"version": ".."}` |
//! | GET | /metrics | 200 Prometheus text |
//!
//! A proxy spread over several data-plane processes ([`Controller::create_spread`]) is
//! one proxy here: every change reaches all of its processes before the answer, and
//! `GET /proxies/{p}` lists them under `processes` (pid, live connections).
//!
//! Requests from browsers (`User-Agent: Mozilla/...`) get 403, as in Toxiproxy, so a web
//! page cannot reach the local API.

use std::collections::BTreeMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::controller::{Controller, ProxyConfig, ProxyUpdate};
use crate::error::Error;
use crate::proxy::ProxyInfo;
use crate::toxic::ToxicSpec;

/// The Toxiproxy version this API mimics (clients compare it).
pub const TOXIPROXY_VERSION: &str = "2.12.0";

/// An API error in Toxiproxy's shape.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

#[derive(Serialize)]
struct ErrorBody {
    error: String,
    status: u16,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        if status >= 500 {
            tracing::error!(error = %self.0, "chaos api: internal error");
        }
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody {
            error: self.0.to_string(),
            status,
        };
        (code, axum::Json(body)).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| Error::BadRequestBody(e.to_string()))
}

/// The router of the API (mount it or serve it with [`serve_api`]).
pub fn router(controller: Controller) -> Router {
    Router::new()
        .route("/reset", post(reset))
        .route("/proxies", get(proxy_index).post(proxy_create))
        .route("/populate", post(populate))
        .route(
            "/proxies/{proxy}",
            get(proxy_show)
                .post(proxy_update)
                .patch(proxy_update)
                .delete(proxy_delete),
        )
        .route(
            "/proxies/{proxy}/toxics",
            get(toxic_index).post(toxic_create),
        )
        .route(
            "/proxies/{proxy}/toxics/{toxic}",
            get(toxic_show)
                .post(toxic_update)
                .patch(toxic_update)
                .delete(toxic_delete),
        )
        .route("/version", get(version))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(1024 * 1024))
        .layer(axum::middleware::from_fn(stop_browsers))
        .with_state(controller)
}

/// As Toxiproxy: refuse browsers, so a web page cannot drive the local API (CSRF).
async fn stop_browsers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let browser = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ua| ua.starts_with("Mozilla/"));
    if browser {
        return (StatusCode::FORBIDDEN, "User agent not allowed\n").into_response();
    }
    next.run(req).await
}

/// Serve the API on `listener` until `shutdown` is cancelled. The proxies are left as
/// they are; call [`Controller::shutdown`] to remove them.
pub async fn serve_api(
    controller: Controller,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(controller))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn reset(State(c): State<Controller>) -> ApiResult<StatusCode> {
    c.reset().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn proxy_index(State(c): State<Controller>) -> axum::Json<BTreeMap<String, ProxyInfo>> {
    axum::Json(c.list().into_iter().map(|p| (p.name.clone(), p)).collect())
}

async fn proxy_create(State(c): State<Controller>, body: Bytes) -> ApiResult<Response> {
    let cfg: ProxyConfig = parse(&body)?;
    if cfg.name.is_empty() {
        return Err(Error::MissingField("name".into()).into());
    }
    if cfg.upstream.is_empty() {
        return Err(Error::MissingField("upstream".into()).into());
    }
    let info = c.create(cfg).await?;
    Ok((StatusCode::CREATED, axum::Json(info)).into_response())
}

#[derive(Serialize)]
struct Populated {
    proxies: Vec<ProxyInfo>,
}

async fn populate(State(c): State<Controller>, body: Bytes) -> ApiResult<Response> {
    let cfgs: Vec<ProxyConfig> = parse(&body)?;
    let proxies = c.populate(cfgs).await?;
    Ok((StatusCode::CREATED, axum::Json(Populated { proxies })).into_response())
}

async fn proxy_show(
    State(c): State<Controller>,
    Path(proxy): Path<String>,
) -> ApiResult<axum::Json<ProxyInfo>> {
    Ok(axum::Json(c.get(&proxy)?))
}

async fn proxy_update(
    State(c): State<Controller>,
    Path(proxy): Path<String>,
    body: Bytes,
) -> ApiResult<axum::Json<ProxyInfo>> {
    c.get(&proxy)?; // 404 before 400, as Toxiproxy
    let upd: ProxyUpdate = parse(&body)?;
    Ok(axum::Json(c.update(&proxy, upd).await?))
}

async fn proxy_delete(
    State(c): State<Controller>,
    Path(proxy): Path<String>,
) -> ApiResult<StatusCode> {
    c.delete(&proxy)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn toxic_index(
    State(c): State<Controller>,
    Path(proxy): Path<String>,
) -> ApiResult<axum::Json<Vec<ToxicSpec>>> {
    Ok(axum::Json(c.toxics(&proxy)?))
}

async fn toxic_create(
    State(c): State<Controller>,
    Path(proxy): Path<String>,
    body: Bytes,
) -> ApiResult<axum::Json<ToxicSpec>> {
    c.get(&proxy)?;
    let spec = ToxicSpec::from_create_json(&body)?;
    let added = c.add_toxic(&proxy, spec)?;
    // A spread link answers once every one of its processes holds the toxic.
    c.settled(&proxy).await?;
    Ok(axum::Json(added))
}

async fn toxic_show(
    State(c): State<Controller>,
    Path((proxy, toxic)): Path<(String, String)>,
) -> ApiResult<axum::Json<ToxicSpec>> {
    Ok(axum::Json(c.toxic(&proxy, &toxic)?))
}

async fn toxic_update(
    State(c): State<Controller>,
    Path((proxy, toxic)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<axum::Json<ToxicSpec>> {
    let updated = c.update_toxic(&proxy, &toxic, |old| old.updated_from_json(&body))?;
    c.settled(&proxy).await?;
    Ok(axum::Json(updated))
}

async fn toxic_delete(
    State(c): State<Controller>,
    Path((proxy, toxic)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    c.remove_toxic(&proxy, &toxic)?;
    c.settled(&proxy).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn version() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json;charset=utf-8")],
        format!(
            "{{\"version\": \"{TOXIPROXY_VERSION}\", \"flowline\": \"{}\"}}\n",
            env!("CARGO_PKG_VERSION")
        ),
    )
        .into_response()
}

async fn metrics(State(c): State<Controller>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        c.metrics_text(),
    )
        .into_response()
}
