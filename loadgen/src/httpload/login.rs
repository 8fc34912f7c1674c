//! The login storm (`http = "login"`): each user signs up once (a password hash on the
//! node), then logs in again and again (`POST /api/v1/auth/login`, an argon2 verify).

use goose::goose::{GooseMethod, GooseUser};
use goose::prelude::TransactionResult;

use crate::httpload::shared::{Res, Session, Shared, timed};

/// Sign the user up (once, when its goose user starts).
pub(super) async fn sign_up(
    shared: &Shared,
    user: &mut GooseUser,
    username: &str,
    password: &str,
) -> Res<()> {
    let body = serde_json::json!({ "username": username, "password": password });
    timed(
        shared,
        user,
        "signup",
        GooseMethod::Post,
        "/api/v1/auth/signup",
        |rb| rb.json(&body),
    )
    .await?;
    Ok(())
}

/// Log in once more, keeping the new token.
pub(super) async fn step(shared: &Shared, user: &mut GooseUser) -> TransactionResult {
    let Some(s) = user.get_session_data::<Session>() else {
        return Ok(());
    };
    let body = serde_json::json!({ "username": s.username, "password": s.password });
    let (status, resp) = timed(
        shared,
        user,
        "login",
        GooseMethod::Post,
        "/api/v1/auth/login",
        |rb| rb.json(&body),
    )
    .await?;
    if status == 200
        && let Some(r) = resp
        && let Ok(sess) = r.json::<flowline_protocol::api::Session>().await
        && let Some(s) = user.get_session_data_mut::<Session>()
    {
        s.token = sess.token;
    }
    Ok(())
}
