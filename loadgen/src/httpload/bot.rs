//! The bot (`http = "bot"`): a well-behaved integration acting over HTTP only. Its
//! actions cycle post, post, edit, react: a post goes to its channels in turn
//! (`POST /api/v1/channels/{id}/messages` with an `Idempotency-Key` and a nonce like a
//! WebSocket `send`), an edit replaces the body of its latest post (`PATCH`), a reaction
//! lands on it (`PUT …/reactions/{emoji}`). A share `retry_share` of the posts is sent a
//! second time with the same key, as a client that lost the answer would: the node must
//! answer the first result (`Idempotent-Replayed: true`, the same id and seq) and post
//! nothing. A 429 is waited out (`Retry-After`) and the post retried with its key; an
//! answer that never came is retried with its key once.
//!
//! Every post is recorded like a WebSocket send (`posts.rs`), so the checker holds the
//! bot's messages to the same rules: delivered to every subscriber, once.

use std::time::Duration;

use goose::goose::{GooseMethod, GooseUser};
use goose::prelude::TransactionResult;

use crate::httpload::shared::{Res, Session, Shared, timed};
use crate::nonce::nonce;
use crate::wire::Outcome;

/// Longest `Retry-After` the bot waits out before giving up on a post.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(5);
/// Attempts of one post (its first, after 429s, after a lost answer).
const MAX_ATTEMPTS: u32 = 4;
/// Reactions, in turn (percent-encoded 👍 🎉 ❤️ 😂).
const EMOJI: [&str; 4] = [
    "%F0%9F%91%8D",
    "%F0%9F%8E%89",
    "%E2%9D%A4%EF%B8%8F",
    "%F0%9F%98%82",
];

/// A message body of `len` bytes naming its author and number.
pub(super) fn text(who: &str, index: u32, n: u64, len: usize) -> String {
    let mut s = format!("{who} {index} #{n} ");
    while s.len() < len {
        s.push('.');
    }
    s.truncate(len.max(1));
    s
}

/// One action: post, post, edit, react, … (an edit or reaction before any post is a
/// post).
pub(super) async fn step(shared: &Shared, user: &mut GooseUser) -> TransactionResult {
    let Some(s) = user.get_session_data_mut::<Session>() else {
        return Ok(());
    };
    if s.user.channels.is_empty() {
        return Ok(());
    }
    let k = s.steps;
    s.steps += 1;
    match (k % 4, s.latest) {
        (2, Some((channel, id))) => edit(shared, user, channel, id, k).await,
        (3, Some((channel, id))) => react(shared, user, channel, id, k).await,
        _ => post(shared, user).await,
    }
}

/// Post one message; retry it with its key when due.
async fn post(shared: &Shared, user: &mut GooseUser) -> TransactionResult {
    let Some(s) = user.get_session_data_mut::<Session>() else {
        return Ok(());
    };
    s.sent_n += 1;
    let n = s.sent_n;
    let channel = s.user.channels[(n as usize - 1) % s.user.channels.len()];
    let index = s.user.index;
    let token = s.token.clone();
    // Retry every post that brings the retried share up to `retry_share`.
    let retry = (s.retried as f64) < shared.persona.retry_share * n as f64;
    if retry {
        s.retried += 1;
    }
    let key = format!("{}-{index}-{n}", shared.prefix);
    let len = shared.persona.body_bytes.mean().round().max(1.0) as usize;
    let body = serde_json::json!({
        "body": text("bot", index, n, len),
        "nonce": nonce(index, n, shared.log.unix_us(std::time::Instant::now())),
    });
    let path = format!("/api/v1/channels/{channel}/messages");
    shared.log.count(|c| c.op("bot_post"));
    let mut answer = None;
    let mut outcome = Outcome::Unknown;
    for attempt in 1..=MAX_ATTEMPTS {
        let (status, resp) = send(shared, user, "bot_post", &path, &token, &key, &body).await?;
        match status {
            201 => {
                answer = stored(resp).await;
                outcome = if answer.is_some() {
                    Outcome::Ok
                } else {
                    shared.error("http:bot_post:bad_body".into());
                    Outcome::Unknown
                };
                break;
            }
            429 if attempt < MAX_ATTEMPTS => {
                tokio::time::sleep(retry_after(resp.as_ref())).await;
            }
            // No answer: the post may or may not be stored; its key makes the retry safe.
            0 if attempt < MAX_ATTEMPTS => {}
            0 => break,
            _ => {
                outcome = Outcome::Error;
                break;
            }
        }
    }
    if let Some(a) = answer {
        shared.log.count(|c| c.op("bot_post_ok"));
        if let Some(s) = user.get_session_data_mut::<Session>() {
            s.latest = Some((channel, a.1));
        }
        if retry {
            replay(shared, user, &path, &token, &key, &body, a).await?;
        }
    }
    shared.log.record(channel, index, n, answer, outcome);
    Ok(())
}

/// Send the post again with its key: the first answer must come back, nothing posted.
async fn replay(
    shared: &Shared,
    user: &mut GooseUser,
    path: &str,
    token: &str,
    key: &str,
    body: &serde_json::Value,
    first: (flowline_protocol::Seq, flowline_protocol::MessageId),
) -> Res<()> {
    shared.log.count(|c| c.op("bot_retry"));
    let (status, resp) = send(shared, user, "bot_retry", path, token, key, body).await?;
    let replayed = resp
        .as_ref()
        .and_then(|r| r.headers().get("idempotent-replayed"))
        .is_some_and(|v| v == "true");
    let again = if status == 201 {
        stored(resp).await
    } else {
        None
    };
    match again {
        Some(a) if a == first && replayed => shared.log.count(|c| c.op("bot_retry_replayed")),
        // Stored a second time: the checker sees the nonce at two seqs (a duplicate).
        Some(_) => shared.error("http:bot_retry:posted_twice".into()),
        None if status == 201 => shared.error("http:bot_retry:bad_body".into()),
        // Refused or rate limited (counted by `timed`): nothing was posted.
        None => {}
    }
    Ok(())
}

/// One `POST` of a message with its `Idempotency-Key`.
async fn send(
    shared: &Shared,
    user: &mut GooseUser,
    name: &'static str,
    path: &str,
    token: &str,
    key: &str,
    body: &serde_json::Value,
) -> Res<(u16, Option<goose_reqwest::Response>)> {
    let (token, key) = (token.to_string(), key.to_string());
    timed(shared, user, name, GooseMethod::Post, path, |rb| {
        rb.bearer_auth(token)
            .header("idempotency-key", key)
            .json(body)
    })
    .await
}

/// The (seq, id) of a stored message answer.
pub(super) async fn stored(
    resp: Option<goose_reqwest::Response>,
) -> Option<(flowline_protocol::Seq, flowline_protocol::MessageId)> {
    let m = resp?.json::<flowline_protocol::ws::Message>().await.ok()?;
    Some((m.seq, m.id))
}

/// How long a 429 says to wait (`Retry-After`, whole seconds; at most
/// [`MAX_RETRY_WAIT`]).
fn retry_after(resp: Option<&goose_reqwest::Response>) -> Duration {
    resp.and_then(|r| r.headers().get("retry-after"))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::from_secs(1), Duration::from_secs)
        .min(MAX_RETRY_WAIT)
}

/// Replace the body of the bot's latest post.
async fn edit(
    shared: &Shared,
    user: &mut GooseUser,
    channel: flowline_protocol::ChannelId,
    id: flowline_protocol::MessageId,
    k: u64,
) -> TransactionResult {
    let Some(s) = user.get_session_data::<Session>() else {
        return Ok(());
    };
    let token = s.token.clone();
    let body = serde_json::json!({ "body": text("edited by bot", s.user.index, k, 40) });
    let path = format!("/api/v1/channels/{channel}/messages/{id}");
    shared.log.count(|c| c.op("bot_edit"));
    let (status, _) = timed(shared, user, "bot_edit", GooseMethod::Patch, &path, |rb| {
        rb.bearer_auth(token).json(&body)
    })
    .await?;
    if status == 204 {
        shared.log.count(|c| c.op("bot_edit_ok"));
    }
    Ok(())
}

/// React to the bot's latest post (the emoji in turn).
async fn react(
    shared: &Shared,
    user: &mut GooseUser,
    channel: flowline_protocol::ChannelId,
    id: flowline_protocol::MessageId,
    k: u64,
) -> TransactionResult {
    let Some(s) = user.get_session_data::<Session>() else {
        return Ok(());
    };
    let token = s.token.clone();
    let emoji = EMOJI[(k / 4) as usize % EMOJI.len()];
    let path = format!("/api/v1/channels/{channel}/messages/{id}/reactions/{emoji}");
    shared.log.count(|c| c.op("bot_react"));
    let (status, _) = timed(shared, user, "bot_react", GooseMethod::Put, &path, |rb| {
        rb.bearer_auth(token)
    })
    .await?;
    if status == 204 {
        shared.log.count(|c| c.op("bot_react_ok"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_the_asked_length() {
        assert_eq!(text("bot", 3, 7, 40).len(), 40);
        assert!(text("bot", 3, 7, 40).starts_with("bot 3 #7 "));
        assert_eq!(text("bot", 3, 7, 1).len(), 1);
    }
}
