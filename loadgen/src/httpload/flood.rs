//! The flooder (`http = "flood"`): posts into its first channel at `requests_per_minute`,
//! on purpose far over the node's rate limits, and ignores every 429 (no `Retry-After`,
//! no key, no retry). What the node stored is recorded like any send (`ok`); what it
//! refused as `error`, so a refused post that reached anyone is the checker's `g1a`.
//! The run shows the refusals as `rate_limited` per second, and the other users' delivery
//! latency beside them.

use goose::goose::{GooseMethod, GooseUser};
use goose::prelude::TransactionResult;

use crate::httpload::bot::{stored, text};
use crate::httpload::shared::{Session, Shared, timed};
use crate::nonce::nonce;
use crate::wire::Outcome;

/// Post once more, whatever the last answer was.
pub(super) async fn step(shared: &Shared, user: &mut GooseUser) -> TransactionResult {
    let Some(s) = user.get_session_data_mut::<Session>() else {
        return Ok(());
    };
    let Some(&channel) = s.user.channels.first() else {
        return Ok(());
    };
    s.sent_n += 1;
    let (n, index, token) = (s.sent_n, s.user.index, s.token.clone());
    let len = shared.persona.body_bytes.mean().round().max(1.0) as usize;
    let body = serde_json::json!({
        "body": text("flood", index, n, len),
        "nonce": nonce(index, n, shared.log.unix_us(std::time::Instant::now())),
    });
    let path = format!("/api/v1/channels/{channel}/messages");
    shared.log.count(|c| c.op("flood_post"));
    let (status, resp) = timed(shared, user, "flood_post", GooseMethod::Post, &path, |rb| {
        rb.bearer_auth(token).json(&body)
    })
    .await?;
    let (answer, outcome) = match status {
        201 => match stored(resp).await {
            Some(a) => (Some(a), Outcome::Ok),
            None => (None, Outcome::Unknown),
        },
        0 => (None, Outcome::Unknown),
        _ => (None, Outcome::Error),
    };
    if answer.is_some() {
        shared.log.count(|c| c.op("flood_post_ok"));
    }
    shared.log.record(channel, index, n, answer, outcome);
    Ok(())
}
