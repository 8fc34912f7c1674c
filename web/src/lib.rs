//! Flowline's browser chat client, served by every node at `/`.
//!
//! The client is plain HTML, CSS and JavaScript (no framework, no CDN: it works offline)
//! embedded in the binary at compile time. [`router`] serves it:
//!
//! | path | what | caching |
//! |---|---|---|
//! | `/` | the page (`index.html`), asset links carry `?v=<content hash>` | `no-cache` (revalidate with the ETag) |
//! | `/assets/app.js`, `/assets/app.css`, `/assets/favicon.svg` | the assets | 1 year, `immutable` (a new build changes `?v=`) |
//!
//! Every answer has a strong `ETag` (sha256 of the content) and honours `If-None-Match`
//! with 304. The page is served with a Content-Security-Policy that allows only the
//! node's own scripts, styles, images and WebSocket, so a message body can never run
//! script even if rendering had a bug. See `docs/web-client.md`.

use std::sync::LazyLock;

use axum::Router;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

/// One embedded file with its precomputed headers.
struct Asset {
    body: Bytes,
    content_type: &'static str,
    cache_control: &'static str,
    etag: String,
}

impl Asset {
    fn new(body: Bytes, content_type: &'static str, cache_control: &'static str) -> Self {
        let etag = format!("\"{}\"", short_hash(&body));
        Self {
            body,
            content_type,
            cache_control,
            etag,
        }
    }

    fn respond(&self, req: &HeaderMap, extra: &[(header::HeaderName, &'static str)]) -> Response {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(self.cache_control),
        );
        if let Ok(v) = HeaderValue::from_str(&self.etag) {
            headers.insert(header::ETAG, v);
        }
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        for (name, value) in extra {
            headers.insert(name.clone(), HeaderValue::from_static(value));
        }
        let matches = req
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|t| t.trim() == self.etag || t.trim() == "*")
            });
        if matches {
            return (StatusCode::NOT_MODIFIED, headers).into_response();
        }
        (StatusCode::OK, headers, self.body.clone()).into_response()
    }
}

fn short_hash(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..12])
}

const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");
const FAVICON: &str = include_str!("../assets/favicon.svg");
const INDEX_TEMPLATE: &str = include_str!("../assets/index.html");

/// Cache policy of assets: their URL changes with their content.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// Content-Security-Policy of the page: nothing but the node's own resources.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; \
connect-src 'self' ws: wss:; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

struct Assets {
    index: Asset,
    js: Asset,
    css: Asset,
    favicon: Asset,
}

static ASSETS: LazyLock<Assets> = LazyLock::new(|| {
    // The page links assets as `/assets/x?v=<hash of x>` so they can be cached forever.
    let index = INDEX_TEMPLATE
        .replace("{{APP_JS_V}}", &short_hash(APP_JS.as_bytes()))
        .replace("{{APP_CSS_V}}", &short_hash(APP_CSS.as_bytes()));
    Assets {
        index: Asset::new(Bytes::from(index), "text/html; charset=utf-8", "no-cache"),
        js: Asset::new(
            Bytes::from_static(APP_JS.as_bytes()),
            "text/javascript; charset=utf-8",
            IMMUTABLE,
        ),
        css: Asset::new(
            Bytes::from_static(APP_CSS.as_bytes()),
            "text/css; charset=utf-8",
            IMMUTABLE,
        ),
        favicon: Asset::new(
            Bytes::from_static(FAVICON.as_bytes()),
            "image/svg+xml",
            IMMUTABLE,
        ),
    }
});

/// The client's routes: `GET /` and `GET /assets/{file}`. Merge it into a node's router
/// (`Router::merge`); it needs no state.
pub fn router<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/", get(index))
        .route("/assets/{file}", get(asset))
}

async fn index(req: HeaderMap) -> Response {
    ASSETS.index.respond(
        &req,
        &[
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
    )
}

async fn asset(Path(file): Path<String>, req: HeaderMap) -> Response {
    let a = &*ASSETS;
    let asset = match file.as_str() {
        "app.js" => &a.js,
        "app.css" => &a.css,
        "favicon.svg" => &a.favicon,
        _ => {
            return (
                StatusCode::NOT_FOUND,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "no such asset\n",
            )
                .into_response();
        }
    };
    asset.respond(&req, &[])
}

/// The page's HTML as served (asset links filled in); for tests and tools.
pub fn index_html() -> &'static str {
    std::str::from_utf8(&ASSETS.index.body).unwrap_or_default()
}
