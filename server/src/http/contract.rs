//! What the OpenAPI document owes to rules shared by many handlers and to the node's
//! configuration rather than to one handler's declaration: the error statuses every
//! operation of a kind can answer (a body that is not the schema's JSON, a path id or query
//! value out of range, a missing token, storage down), the bounds the node enforces on names
//! and passwords, and the content types a download may carry. Applied to the document as
//! JSON once per node (`api.rs`), so no handler can forget them.

use serde_json::{Map, Value, json};

use crate::config::Config;

/// A user, space or channel name: no control characters (`char::is_control`, Unicode
/// category Cc). Lengths are declared beside it.
const NAME_PATTERN: &str = r"^[^\u0000-\u001F\u007F-\u009F]*$";

/// A username: a name without whitespace (`char::is_whitespace`, Unicode White_Space).
const USERNAME_PATTERN: &str =
    r"^[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$";

/// Longest password, characters (`accounts::signup`).
pub(super) const MAX_PASSWORD_CHARS: usize = 1024;

/// Complete `doc` (the document as built from the handlers, paths prefixed) for `config`.
pub(super) fn complete(doc: &mut Value, config: &Config) {
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        bound_names(schemas, config.limits.max_name_chars);
    }
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for op in item.values_mut() {
                if let Some(op) = op.as_object_mut() {
                    shared_statuses(path, op);
                }
            }
        }
    }
    if let Some(ok) = doc.pointer_mut("/paths/~1api~1v1~1uploads~1{id}/get/responses/200") {
        download_types(ok, &config.features.upload_types);
    }
    if let Some(form) =
        doc.pointer_mut("/paths/~1api~1v1~1uploads/post/requestBody/content/multipart~1form-data")
    {
        form["encoding"] =
            json!({"file": {"contentType": config.features.upload_types.join(", ")}});
    }
}

/// An error answer with the `{code, message}` body.
fn error(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ApiErrorBody"}}}
    })
}

/// Declare `status` on `op` with `description`; where the handler declared it already,
/// add the description to its own.
fn declare(op: &mut Map<String, Value>, status: &str, description: &str) {
    let responses = op
        .entry("responses")
        .or_insert_with(|| json!({}))
        .as_object_mut();
    let Some(responses) = responses else {
        return;
    };
    match responses.get_mut(status) {
        Some(existing) => {
            let own = existing["description"].as_str().unwrap_or("").to_owned();
            existing["description"] = Value::String(if own.is_empty() {
                description.to_owned()
            } else {
                format!("{own}; or {description}")
            });
        }
        None => {
            responses.insert(status.to_owned(), error(description));
        }
    }
}

/// The statuses an operation answers because of what it takes, not what it does.
fn shared_statuses(path: &str, op: &mut Map<String, Value>) {
    let json_body = op
        .get("requestBody")
        .and_then(|b| b.pointer("/content/application~1json"))
        .is_some();
    if json_body {
        declare(
            op,
            "400",
            "`bad_request`: the body is not JSON of the request schema, is sent without \
             `Content-Type: application/json`, or did not arrive within the body read bound",
        );
        declare(
            op,
            "413",
            "`too_long`: the body is over the node's size limit",
        );
    }
    let has_params = op
        .get("parameters")
        .and_then(Value::as_array)
        .is_some_and(|p| !p.is_empty());
    if has_params {
        declare(
            op,
            "400",
            "`bad_request`: a path id or query value that is not an integer of the declared range",
        );
    }
    let bearer = op
        .get("security")
        .and_then(Value::as_array)
        .is_some_and(|s| s.iter().any(|r| r.get("bearer").is_some()));
    if bearer {
        declare(
            op,
            "401",
            "`invalid_token`: no `Authorization: Bearer <token>`, or an unknown or revoked token",
        );
    }
    if !path.ends_with("/openapi.json") {
        declare(
            op,
            "503",
            "`unavailable`: storage failed; nothing was done, retry",
        );
    }
}

/// Length and character bounds of every name a request carries, as the handlers check
/// them (`extract::check_name`, `check_username`).
fn bound_names(schemas: &mut Map<String, Value>, max: usize) {
    let mut set = |schema: &str, field: &str, bounds: Value| {
        if let Some(prop) = schemas
            .get_mut(schema)
            .and_then(|s| s.pointer_mut(&format!("/properties/{field}")))
            .and_then(Value::as_object_mut)
            && let Value::Object(bounds) = bounds
        {
            prop.extend(bounds);
        }
    };
    let name = || json!({"minLength": 1, "maxLength": max, "pattern": NAME_PATTERN});
    set(
        "Credentials",
        "username",
        json!({"minLength": 1, "maxLength": max, "pattern": USERNAME_PATTERN}),
    );
    set(
        "Credentials",
        "password",
        json!({"minLength": 1, "maxLength": MAX_PASSWORD_CHARS}),
    );
    set("CreateSpace", "name", name());
    set("CreateChannel", "name", name());
    set("ProvisionSpace", "name", name());
    set("ProvisionChannel", "name", name());
    // `<prefix><index>` must be a username: the index takes at least one character.
    set(
        "Provision",
        "username_prefix",
        json!({"maxLength": max.saturating_sub(1), "pattern": USERNAME_PATTERN}),
    );
}

/// A download carries the content type stored at upload: one of the node's allowed types.
fn download_types(ok: &mut Value, types: &[String]) {
    let content: Map<String, Value> = types
        .iter()
        .map(|t| {
            (
                t.clone(),
                json!({"schema": {"type": "string", "format": "binary"}}),
            )
        })
        .collect();
    ok["content"] = Value::Object(content);
}
