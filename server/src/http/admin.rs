//! `/admin/provision`: bulk provisioning for load tests, enabled by the node's admin
//! secret.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::HeaderMap;

use flowline_protocol::api::{
    ADMIN_HEADER, MAX_PROVISION_USERS, Provision, Provisioned, ProvisionedUser,
};
use flowline_protocol::ws::ErrorCode;

use super::error::{ApiError, ApiResult};
use super::extract::{check_name, check_username};
use crate::auth::{self, TokenHash};
use crate::members::MemberChange;
use crate::node::Node;

/// Bulk provisioning (enabled by the node's admin secret).
#[utoipa::path(post, path = "/admin/provision", tag = "admin", security(("admin" = [])),
    request_body = Provision,
    responses((status = 200, body = Provisioned), (status = 400, description = "Inconsistent request: an index out of range, more than `MAX_PROVISION_USERS` (100000) users, a name sign-up or creation would refuse", body = flowline_protocol::api::ApiErrorBody), (status = 403, description = "Missing or wrong admin header", body = flowline_protocol::api::ApiErrorBody),
        (status = 404, description = "Admin API disabled", body = flowline_protocol::api::ApiErrorBody), (status = 409, description = "A username is taken", body = flowline_protocol::api::ApiErrorBody)))]
pub(super) async fn admin_provision(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    body: Result<Json<Provision>, JsonRejection>,
) -> ApiResult<Json<Provisioned>> {
    let Some(secret) = node.config.admin_secret.as_deref() else {
        return Err(ApiError::not_found("not found"));
    };
    let given = headers.get(ADMIN_HEADER).and_then(|v| v.to_str().ok());
    if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), secret.as_bytes())) {
        return Err(ApiError::forbidden(format!(
            "missing or wrong {ADMIN_HEADER} header"
        )));
    }
    let Json(req) = body?;
    check(&req, node.config.limits.max_name_chars)?;
    let (tokens, hashes): (Vec<String>, Vec<TokenHash>) =
        (0..req.users).map(|_| auth::new_token()).unzip();
    let ids = node.storage.provision(&req, &hashes).await?;
    node.members_changed(MemberChange::All);
    Ok(Json(Provisioned {
        users: ids
            .users
            .into_iter()
            .zip(tokens)
            .map(|(id, token)| ProvisionedUser { id, token })
            .collect(),
        spaces: ids.spaces,
        dms: ids.dms,
    }))
}

/// Everything about a request that storage does not check: the number of users is
/// bounded before anything is allocated for them, and every name follows the rules of
/// the API that creates one of its kind (sign-up, space and channel creation).
fn check(req: &Provision, max_name: usize) -> ApiResult<()> {
    if req.users > MAX_PROVISION_USERS {
        return Err(ApiError::bad(
            ErrorCode::BadRequest,
            format!("users must be at most {MAX_PROVISION_USERS} per request"),
        ));
    }
    // The longest generated name holds every character of the prefix.
    let longest = format!("{}{}", req.username_prefix, req.users.saturating_sub(1));
    check_username("username (<username_prefix><index>)", &longest, max_name)?;
    for s in &req.spaces {
        check_name("space name", &s.name, max_name)?;
        for c in &s.channels {
            check_name("channel name", &c.name, max_name)?;
        }
    }
    Ok(())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
