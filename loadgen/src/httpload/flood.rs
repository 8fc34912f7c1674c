//! The flooder (`http = "flood"`): posts into its first channel at `requests_per_minute`,
//! on purpose far over the node's rate limits, and ignores every 429 (no `Retry-After`,
//! no key, no retry). What the node stored is recorded like any send (`ok`); what it
//! refused as `error`, so a refused post that reached anyone is the checker's `g1a`.
//! The run shows the refusals as `rate_limited` per second, and the other users' delivery
//! latency beside them.
//!
//! It keeps its rate whatever the node's latency. One request per goose transaction
//! would make at most one post per round trip: on a loaded node (a post taking > 50 ms)
//! fewer than the default 20 a second per token, and the flood would never be refused.
//! So each transaction sends at once every post due by the flooder's own clock
//! ([`Pace`]: `requests_per_minute / 60` a second from its first post), at most
//! [`MAX_IN_FLIGHT`], and returns when all are answered:
//!
//! ```text
//! step ── due = Pace::take(now) ──▶ due × POST …/messages, concurrently (user's client)
//!   ▲                                  each: timed, 429 → rate_limited, PostLog record
//!   └── goose wait (50–150 % of 60 s / rate) ◀── all answered
//! ```
//! The requests go through the goose user's reqwest client directly (goose's `request`
//! needs the user exclusively, one at a time), so goose's own report does not list them;
//! they are timed and counted by status into `summary.json` `http.flood_post` all the
//! same. The rate holds for round trips up to `MAX_IN_FLIGHT / rate` (640 ms at
//! 50 posts/s); a slower node gets `MAX_IN_FLIGHT` posts a round trip and the backlog is
//! dropped, never sent in a rush later.

use std::time::Instant;

use futures_util::future::join_all;
use goose::goose::GooseUser;
use goose::prelude::TransactionResult;

use crate::httpload::bot::{stored, text};
use crate::httpload::pace::Pace;
use crate::httpload::shared::{Session, Shared, timed_direct};
use crate::nonce::nonce;
use crate::wire::Outcome;

/// Most posts of one flooder in flight at once.
pub(super) const MAX_IN_FLIGHT: u64 = 32;

/// Send every post due now, at once, whatever the last answers were.
pub(super) async fn step(shared: &Shared, user: &mut GooseUser) -> TransactionResult {
    let per_s = shared.persona.requests_per_minute / 60.0;
    let Some(s) = user.get_session_data_mut::<Session>() else {
        return Ok(());
    };
    let Some(&channel) = s.user.channels.first() else {
        return Ok(());
    };
    let now = Instant::now();
    let due = s
        .pace
        .get_or_insert_with(|| Pace::new(now, per_s))
        .take(now, MAX_IN_FLIGHT);
    if due == 0 {
        return Ok(());
    }
    let first = s.sent_n + 1;
    s.sent_n += due;
    let (index, token) = (s.user.index, s.token.clone());
    let url = user.build_url(&format!("/api/v1/channels/{channel}/messages"))?;
    let client = user.client.clone();
    let posts = (first..first + due).map(|n| {
        let (client, url, token) = (&client, &url, &token);
        async move {
            let len = shared.persona.body_bytes.mean().round().max(1.0) as usize;
            let body = serde_json::json!({
                "body": text("flood", index, n, len),
                "nonce": nonce(index, n, shared.log.unix_us(Instant::now())),
            });
            shared.log.count(|c| c.op("flood_post"));
            let rb = client.post(url).bearer_auth(token).json(&body);
            let (status, resp) = timed_direct(shared, "flood_post", rb).await;
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
        }
    });
    join_all(posts).await;
    Ok(())
}
