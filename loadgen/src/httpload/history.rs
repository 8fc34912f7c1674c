//! History paging (`http = "history"`): `GET /api/v1/channels/{id}/messages?before=…`
//! back to the start of a channel, then the next channel's newest page.

use goose::goose::{GooseMethod, GooseUser};
use goose::prelude::TransactionResult;

use crate::httpload::shared::{Session, Shared, timed};

/// Fetch the next page.
pub(super) async fn step(shared: &Shared, user: &mut GooseUser) -> TransactionResult {
    let Some(s) = user.get_session_data::<Session>() else {
        return Ok(());
    };
    let Some(&channel) = s
        .user
        .channels
        .get(s.channel % s.user.channels.len().max(1))
    else {
        return Ok(());
    };
    let path = match s.before {
        Some(b) => format!("/api/v1/channels/{channel}/messages?limit=50&before={b}"),
        None => format!("/api/v1/channels/{channel}/messages?limit=50"),
    };
    let token = s.token.clone();
    let (status, resp) = timed(shared, user, "history", GooseMethod::Get, &path, |rb| {
        rb.bearer_auth(token)
    })
    .await?;
    let page = match (status, resp) {
        (200, Some(r)) => r
            .json::<Vec<flowline_protocol::ws::Message>>()
            .await
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    if let Some(s) = user.get_session_data_mut::<Session>() {
        // Page back until the start of the channel, then the next channel's newest.
        match page.iter().map(|m| m.seq).min() {
            Some(min) if min > 1 => s.before = Some(min),
            _ => {
                s.before = None;
                s.channel += 1;
            }
        }
    }
    Ok(())
}
