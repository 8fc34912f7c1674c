//! The API as a whole: the OpenAPI frame, the routes in their body-limit groups, and the
//! OpenAPI document built from those very routes (so it cannot drift from them), completed
//! for the node's configuration by `contract.rs`.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use flowline_protocol::api::ADMIN_HEADER;

use super::{
    accounts, admin, channels, contract, messages, presence, reactions, spaces, threads, uploads,
};
use crate::config::Config;
use crate::node::Node;

/// The document's frame: title, version, security schemes, tags. Paths come from the
/// router.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Flowline chat node HTTP API",
        description = "HTTP API of a Flowline chat node. The WebSocket protocol at `/ws` is described in docs/protocol.md.\n\nEvery error answers `{code, message}` (`ApiErrorBody`). A request the node cannot parse — a body that is not JSON of the operation's schema or lacks `Content-Type: application/json`, a path id or query value that is not an integer in range — is `400 bad_request`; a body over the size limit `413 too_long`; storage down `503 unavailable`."
    ),
    paths(openapi_json),
    modifiers(&Security),
    tags(
        (name = "auth", description = "Sign up, log in, log out"),
        (name = "spaces", description = "Spaces, members and channels"),
        (name = "channels", description = "Channels, DMs and message history"),
        (name = "uploads", description = "File attachments"),
        (name = "actions", description = "Chat actions (what bots use): post, edit, delete, react, thread, typing, presence; rate limited, POST message idempotent with Idempotency-Key"),
        (name = "admin", description = "Bulk provisioning for load tests"),
        (name = "meta", description = "This description"),
    )
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "admin",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new(ADMIN_HEADER))),
        );
    }
}

/// Prefix under which [`routes`] is mounted.
const PREFIX: &str = "/api/v1";

/// The routes under `/api/v1` in three groups by body limit (main, upload, admin), and
/// the OpenAPI document describing all of them (paths carry the `/api/v1` prefix).
struct Api {
    main: Router<Arc<Node>>,
    upload: Router<Arc<Node>>,
    admin: Router<Arc<Node>>,
    doc: utoipa::openapi::OpenApi,
}

fn api() -> Api {
    let (main, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(accounts::signup))
        .routes(routes!(accounts::login))
        .routes(routes!(accounts::logout))
        .routes(routes!(accounts::me))
        .routes(routes!(spaces::space_create, spaces::space_list))
        .routes(routes!(spaces::space_join))
        .routes(routes!(spaces::space_leave))
        .routes(routes!(spaces::space_members))
        .routes(routes!(spaces::channel_create, spaces::channel_list))
        .routes(routes!(channels::dm_open))
        .routes(routes!(channels::channel_messages))
        .routes(routes!(uploads::upload_get))
        // The chat actions (the WebSocket ops over HTTP, `actions.rs`).
        .routes(routes!(messages::message_post))
        .routes(routes!(messages::message_edit, messages::message_delete))
        .routes(routes!(reactions::reaction_add, reactions::reaction_remove))
        .routes(routes!(threads::thread_start))
        .routes(routes!(presence::typing_post))
        .routes(routes!(presence::presence_set))
        .split_for_parts();
    let (upload, upload_doc) = OpenApiRouter::new()
        .routes(routes!(uploads::upload_create))
        .split_for_parts();
    let (admin, admin_doc) = OpenApiRouter::new()
        .routes(routes!(admin::admin_provision))
        .split_for_parts();
    doc.merge(upload_doc);
    doc.merge(admin_doc);
    let paths = std::mem::take(&mut doc.paths.paths);
    doc.paths.paths = paths
        .into_iter()
        .map(|(path, item)| (format!("{PREFIX}{path}"), item))
        .collect();
    Api {
        main,
        upload,
        admin,
        doc,
    }
}

/// The OpenAPI 3 document of the HTTP API as a node with `config` serves it, as JSON.
fn openapi_document(doc: &utoipa::openapi::OpenApi, config: &Config) -> String {
    let rendered = serde_json::to_value(doc).and_then(|mut doc| {
        contract::complete(&mut doc, config);
        serde_json::to_string_pretty(&doc)
    });
    rendered.unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot render the OpenAPI document");
        format!("{{\"error\":\"cannot render the OpenAPI document: {e}\"}}")
    })
}

pub(crate) fn routes(config: &Config) -> Router<Arc<Node>> {
    let admin_limit = config.limits.max_http_body.saturating_mul(64);
    // Room for the multipart framing around a file of the maximum size; the exact limit
    // is enforced while streaming.
    let upload_limit = usize::try_from(config.features.upload_max_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(64 * 1024);
    let Api {
        main,
        upload,
        admin,
        doc,
    } = api();
    let document: Arc<str> = openapi_document(&doc, config).into();
    main.layer(DefaultBodyLimit::max(config.limits.max_http_body))
        .merge(upload.layer(DefaultBodyLimit::max(upload_limit)))
        .merge(admin.layer(DefaultBodyLimit::max(admin_limit)))
        .route("/openapi.json", get(move || openapi_json(document.clone())))
}

/// The OpenAPI 3 document of this API.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    responses((status = 200, description = "OpenAPI 3 document", content_type = "application/json", body = Object))
)]
async fn openapi_json(document: Arc<str>) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        document.to_string(),
    )
        .into_response()
}
