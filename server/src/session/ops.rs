//! Dispatching a client's text frame to its operation, and the WebSocket side of each
//! op: the chat actions themselves are transport-independent ([`crate::chat`]); here
//! they are answered (`ack`, `ok`, `thread_created`, `error`) and their events emitted
//! after the answer.

use std::collections::{BTreeMap, HashSet};

use flowline_protocol::ws::{ClientOp, ErrorCode, ServerEvent, close};
use flowline_protocol::{ChannelId, MessageId, Seq};
use tokio::time::Instant;

use super::connection::{Flow, Session};
use super::frame::{classify_bad_frame, json_depth_exceeds, op_req_id, probe_req_id};
use super::hello::Register;
use crate::chat::{Done, SendRequest};
use crate::refusal::Refusal;

/// Default `history` page.
const DEFAULT_HISTORY: u32 = 50;

/// The rate-limit buckets an op draws from (`crate::ratelimit`): `Some(channel)` for the
/// chat actions (the token's bucket, and the channel's for one on a channel's messages),
/// `None` for reads, subscriptions, pings and typing, which are not limited.
fn rate_scope(op: &ClientOp) -> Option<Option<ChannelId>> {
    match op {
        ClientOp::Send { channel, .. }
        | ClientOp::Edit { channel, .. }
        | ClientOp::Delete { channel, .. }
        | ClientOp::React { channel, .. }
        | ClientOp::Unreact { channel, .. }
        | ClientOp::StartThread { channel, .. } => Some(Some(*channel)),
        ClientOp::SetPresence { .. } => Some(None),
        // Typing is bounded by its own throttle (`chat/throttle.rs`).
        ClientOp::Typing { .. }
        | ClientOp::Hello { .. }
        | ClientOp::Subscribe { .. }
        | ClientOp::Unsubscribe { .. }
        | ClientOp::GetPresence { .. }
        | ClientOp::History { .. }
        | ClientOp::Ping { .. } => None,
    }
}

impl Session {
    /// Parse one text frame and run its op.
    pub(super) async fn on_text(&mut self, text: &str) -> Flow {
        let max_depth = self.node.config.limits.max_json_depth;
        if json_depth_exceeds(text, max_depth) {
            self.error(
                probe_req_id(text),
                ErrorCode::TooDeep,
                format!("JSON nested deeper than {max_depth}"),
            )
            .await;
            return Err(close::PROTOCOL_ERROR);
        }
        let op = match serde_json::from_str::<ClientOp>(text) {
            Ok(op) => op,
            Err(e) => {
                let (code, msg) = classify_bad_frame(text, &e);
                self.error(probe_req_id(text), code, msg).await;
                return Ok(());
            }
        };
        let Some(user) = self.user.as_ref().map(|u| u.id) else {
            return match op {
                ClientOp::Hello {
                    token,
                    v,
                    resume,
                    subscribe_all,
                    presence,
                } => self.hello(&token, v, resume, subscribe_all, presence).await,
                _ => {
                    self.error(
                        op_req_id(&op),
                        ErrorCode::NotAuthenticated,
                        "send `hello` with a token first",
                    )
                    .await;
                    Ok(())
                }
            };
        };
        if !matches!(op, ClientOp::Ping { .. }) {
            self.idle_at = Instant::now() + self.node.roster.idle_after();
            self.node.roster.activity(user).await;
        }
        if let (Some(scope), Some(token)) = (rate_scope(&op), self.token)
            && let Err(limited) = self.node.rates.check(&token, scope).await
        {
            self.node.metrics.rate_limited.increment(1);
            self.event(&ServerEvent::Error {
                req_id: op_req_id(&op),
                code: ErrorCode::RateLimited,
                message: limited.message(),
                retry_after_ms: Some(
                    u64::try_from(limited.retry_after.as_millis()).unwrap_or(u64::MAX),
                ),
            })
            .await;
            return Ok(());
        }
        match op {
            ClientOp::Hello { .. } => {
                self.error(None, ErrorCode::NotAuthenticated, "already authenticated")
                    .await;
            }
            ClientOp::Subscribe { req_id, channels } => self.subscribe(req_id, channels).await,
            ClientOp::Unsubscribe { req_id, channels } => {
                self.node.hub.unsubscribe(self.id, &channels);
                for c in &channels {
                    self.subscribed.remove(c);
                }
                self.event(&ServerEvent::Unsubscribed { req_id, channels })
                    .await;
            }
            ClientOp::Send {
                req_id,
                channel,
                body,
                nonce,
                kind,
                reply_to,
                quote,
                forward_of,
                attachments,
            } => {
                let req = SendRequest {
                    channel,
                    body,
                    nonce,
                    kind,
                    reply_to,
                    quote,
                    forward_of,
                    attachments,
                };
                let done = self.node.chat.send(&mut self.access, req).await;
                self.answer(Some(req_id), done, |m| ServerEvent::Ack {
                    req_id,
                    channel,
                    id: m.id,
                    seq: m.seq,
                    created_at: m.created_at,
                })
                .await;
            }
            ClientOp::Edit {
                req_id,
                channel,
                id,
                body,
            } => {
                let done = self
                    .node
                    .chat
                    .edit(&mut self.access, channel, id, body)
                    .await;
                self.answer(Some(req_id), done, |()| ServerEvent::Ok { req_id })
                    .await;
            }
            ClientOp::Delete {
                req_id,
                channel,
                id,
            } => {
                let done = self.node.chat.delete(&mut self.access, channel, id).await;
                self.answer(Some(req_id), done, |()| ServerEvent::Ok { req_id })
                    .await;
            }
            ClientOp::React {
                req_id,
                channel,
                id,
                emoji,
            } => self.react(req_id, channel, id, emoji, true).await,
            ClientOp::Unreact {
                req_id,
                channel,
                id,
                emoji,
            } => self.react(req_id, channel, id, emoji, false).await,
            ClientOp::StartThread {
                req_id,
                channel,
                id,
                name,
            } => {
                let done = self
                    .node
                    .chat
                    .start_thread(&mut self.access, channel, id, name)
                    .await;
                self.answer(Some(req_id), done, |t| t.event(Some(req_id)))
                    .await;
            }
            ClientOp::Typing { channel } => {
                match self.node.chat.typing(&mut self.access, channel).await {
                    Ok(done) => self.node.chat.emit(done.events),
                    Err(r) => self.refuse(None, r).await,
                }
            }
            ClientOp::SetPresence {
                req_id,
                status,
                custom,
            } => match self.node.roster.set_status(user, status, custom).await {
                Ok(change) => {
                    if let Some(req_id) = req_id {
                        self.event(&ServerEvent::Ok { req_id }).await;
                    }
                    if let Some(p) = change {
                        self.node.roster.announce(p).await;
                    }
                }
                Err(r) => self.refuse(req_id, r).await,
            },
            ClientOp::GetPresence { req_id, users } => {
                match self.node.roster.query(user, &users).await {
                    Ok(presence) => {
                        self.event(&ServerEvent::PresenceList { req_id, presence })
                            .await;
                    }
                    Err(r) => self.refuse(Some(req_id), r).await,
                }
            }
            ClientOp::History {
                req_id,
                channel,
                before,
                after,
                limit,
            } => self.history(req_id, channel, before, after, limit).await,
            ClientOp::Ping { req_id, ts } => self.event(&ServerEvent::Pong { req_id, ts }).await,
        }
        Ok(())
    }

    /// Answer a chat action: its result as `answer(result)`, then its events for others;
    /// or the refusal.
    async fn answer<T>(
        &self,
        req_id: Option<u64>,
        done: Result<Done<T>, Refusal>,
        answer: impl FnOnce(&T) -> ServerEvent,
    ) {
        match done {
            Ok(Done { result, events }) => {
                self.event(&answer(&result)).await;
                self.node.chat.emit(events);
            }
            Err(r) => self.refuse(req_id, r).await,
        }
    }

    /// `react` (`add`) or `unreact`, answered `ok`.
    async fn react(
        &mut self,
        req_id: u64,
        channel: ChannelId,
        id: MessageId,
        emoji: String,
        add: bool,
    ) {
        let done = self
            .node
            .chat
            .react(&mut self.access, channel, id, emoji, add)
            .await;
        self.answer(Some(req_id), done, |()| ServerEvent::Ok { req_id })
            .await;
    }

    /// `subscribe`: all or nothing; already subscribed channels are not listed again.
    async fn subscribe(&mut self, req_id: Option<u64>, channels: Vec<ChannelId>) {
        for &c in &channels {
            if let Err(r) = self.node.membership.authorize(&mut self.access, c).await {
                self.refuse(req_id, r).await;
                return;
            }
        }
        let fresh: Vec<ChannelId> = channels
            .into_iter()
            .filter(|c| !self.subscribed.contains(c))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let result = self
            .attach(&fresh, &BTreeMap::new(), Register::Already, |seqs| {
                ServerEvent::Subscribed {
                    req_id,
                    channels: seqs,
                }
            })
            .await;
        if let Err(e) = result {
            self.refuse(req_id, Refusal::from(&e.storage)).await;
            if e.announced {
                // `subscribed` went out but its replay could not be read: the client
                // resumes from its last seq after reconnecting (no gap written).
                self.sub.shared.kick(close::TRY_AGAIN);
            }
        }
    }

    /// `history`: a page of stored messages of a readable channel.
    async fn history(
        &mut self,
        req_id: u64,
        channel: ChannelId,
        before: Option<Seq>,
        after: Option<Seq>,
        limit: Option<u32>,
    ) {
        if let Err(r) = self
            .node
            .membership
            .authorize(&mut self.access, channel)
            .await
        {
            self.refuse(Some(req_id), r).await;
            return;
        }
        let limit = limit
            .unwrap_or(DEFAULT_HISTORY)
            .clamp(1, self.node.config.limits.max_history);
        match self
            .node
            .storage
            .messages(channel, before, after, limit)
            .await
        {
            Ok(messages) => {
                self.event(&ServerEvent::History {
                    req_id,
                    channel,
                    messages,
                })
                .await
            }
            Err(e) => self.refuse(Some(req_id), Refusal::from(&e)).await,
        }
    }
}
