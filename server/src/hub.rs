//! Local fan-out: which sessions are subscribed to which channel, and the per-channel
//! ordering lock.
//!
//! ```text
//!  send op ──► Hub::post ──lock(channel)──► Storage::append (seq n, durable)
//!                                   │
//!                                   ├─► serialize `message` event ONCE
//!                                   └─► Hub::deliver: try_send(Arc bytes) into every
//!                                       subscriber's bounded queue ──► writer task ──► socket
//!                                       (queue full ⇒ kick with 4008, never block)
//! ```
//!
//! Seq assignment and delivery happen under the channel's async mutex, so every
//! subscriber's queue receives a channel's messages in seq order. A cross-node bus (phases
//! `pubsub`/`queue`, a later issue) slots in at [`Hub::deliver`]: a node publishes the
//! serialized event on the bus after commit, and every node (itself included) calls
//! `deliver` for what the bus hands it, in seq order.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};

use axum::extract::ws::Utf8Bytes;
use dashmap::DashMap;
use tokio::sync::{Mutex, Notify, mpsc};

use flowline_protocol::ws::{Message, ServerEvent, close};
use flowline_protocol::{ChannelId, Seq, UserId};

use crate::error::StorageError;
use crate::metrics::Metrics;
use crate::storage::{NewMessage, Storage};

/// Identifier of one WebSocket session within a node.
pub type SessionId = u64;

/// What a session's writer task is asked to do, in order.
///
/// Every variant is one pointer wide (plus the tag) on purpose: each session's bounded
/// queue allocates its slots in blocks, so the item size is paid per idle connection.
#[derive(Debug)]
pub enum Outbound {
    /// A live `message` event of a subscribed channel, shared by every recipient.
    Live(Arc<Delivery>),
    /// Any other event (ack, error, ready, ...), written as is.
    Direct(Box<Utf8Bytes>),
    /// Hold live messages of these channels until their `Replay` arrives.
    Hold(Box<[ChannelId]>),
    /// For each channel: write its stored messages, then the held live ones with seq above
    /// both `floor` and the replayed ones, then continue live.
    Replay(Box<[Replay]>),
}

/// One serialized `message` event on its way to every subscriber of its channel.
#[derive(Debug)]
pub struct Delivery {
    /// Channel of the message.
    pub channel: ChannelId,
    /// Its seq, used to drop duplicates after a resume.
    pub seq: Seq,
    /// The serialized event.
    pub text: Utf8Bytes,
}

/// Replay of one channel (see [`Outbound::Replay`]).
#[derive(Debug)]
pub struct Replay {
    /// The channel.
    pub channel: ChannelId,
    /// Live messages at or below this seq are already known to the client.
    pub floor: Seq,
    /// Stored messages to write first, ascending.
    pub frames: Vec<(Seq, Utf8Bytes)>,
}

/// State a session shares with the hub and its own tasks.
#[derive(Debug)]
pub struct SessionShared {
    close: Notify,
    close_code: AtomicU16,
    /// Unix ms of the last frame received from the peer.
    pub last_seen_ms: AtomicU64,
}

impl SessionShared {
    /// Ask the writer to close the socket with `code` (0: close without a frame).
    /// The first request wins; returns whether this one did. Wakes every waiter (the
    /// reader and the writer both wait on it).
    pub fn kick(&self, code: u16) -> bool {
        let first = self
            .close_code
            .compare_exchange(u16::MAX, code, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        self.close.notify_waiters();
        first
    }

    /// Wait until someone calls [`kick`](Self::kick); returns the close code.
    pub async fn kicked(&self) -> u16 {
        loop {
            // Register before checking, so a kick between the check and the await is seen.
            let notified = self.close.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let code = self.close_code.load(Ordering::Acquire);
            if code != u16::MAX {
                return code;
            }
            notified.await;
        }
    }

    /// A fresh shared state.
    pub fn new(now_ms: u64) -> Self {
        Self {
            close: Notify::new(),
            close_code: AtomicU16::new(u16::MAX),
            last_seen_ms: AtomicU64::new(now_ms),
        }
    }
}

/// A subscribed session as the hub sees it.
#[derive(Debug, Clone)]
pub struct Subscriber {
    /// The session's bounded outbound queue.
    pub tx: mpsc::Sender<Outbound>,
    /// To kick it when the queue is full.
    pub shared: Arc<SessionShared>,
}

/// Queue `item` for a session; a full queue makes it a slow consumer (kicked, counted).
/// Returns false if the item was not queued.
pub fn offer(sub: &Subscriber, item: Outbound, metrics: &Metrics) -> bool {
    match sub.tx.try_send(item) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            if sub.shared.kick(close::SLOW_CONSUMER) {
                metrics.slow_consumer_disconnects.increment(1);
            }
            false
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

/// Why posting a message failed.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    /// Storage refused or failed; nothing was delivered.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The event could not be serialized (a bug).
    #[error("serializing the message event: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Who a non-`message` event (edit, delete, reaction, thread, typing, presence) is for.
///
/// Events travel as (audience, serialized event), so a cluster bus can forward them to
/// every node unchanged and each node hands them to its own sessions with [`Hub::emit`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    /// Every session subscribed to the channel.
    Channel(ChannelId),
    /// Every authenticated session of these users.
    Users(Vec<UserId>),
}

/// Local subscriptions and per-channel ordering.
pub struct Hub {
    subs: DashMap<ChannelId, HashMap<SessionId, Subscriber>>,
    users: DashMap<UserId, HashMap<SessionId, Subscriber>>,
    order: DashMap<ChannelId, Arc<Mutex<()>>>,
    metrics: Arc<Metrics>,
}

impl Hub {
    /// An empty hub reporting into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            subs: DashMap::new(),
            users: DashMap::new(),
            order: DashMap::new(),
            metrics,
        }
    }

    /// Subscribe a session to channels (idempotent).
    pub fn subscribe(&self, session: SessionId, sub: &Subscriber, channels: &[ChannelId]) {
        for &c in channels {
            self.subs.entry(c).or_default().insert(session, sub.clone());
        }
    }

    /// Unsubscribe a session from channels.
    pub fn unsubscribe(&self, session: SessionId, channels: &[ChannelId]) {
        for c in channels {
            let now_empty = self.subs.get_mut(c).is_some_and(|mut m| {
                m.remove(&session);
                m.is_empty()
            });
            if now_empty {
                self.subs.remove_if(c, |_, m| m.is_empty());
            }
        }
    }

    /// Record an authenticated session of `user` (for [`Audience::Users`]).
    pub fn register_user(&self, user: UserId, session: SessionId, sub: &Subscriber) {
        self.users
            .entry(user)
            .or_default()
            .insert(session, sub.clone());
    }

    /// Forget a session of `user`; returns whether the user has no session left here.
    pub fn unregister_user(&self, user: UserId, session: SessionId) -> bool {
        let now_empty = self.users.get_mut(&user).is_none_or(|mut m| {
            m.remove(&session);
            m.is_empty()
        });
        if now_empty {
            self.users.remove_if(&user, |_, m| m.is_empty());
        }
        now_empty
    }

    /// Number of this node's authenticated sessions of `user`.
    pub fn user_sessions(&self, user: UserId) -> usize {
        self.users.get(&user).map_or(0, |m| m.len())
    }

    /// Queue one serialized non-`message` event to this node's sessions in `audience`.
    /// Returns the number queued. Feature code calls this for ephemeral and update events;
    /// in the cluster phases the bus calls it on every node for what other nodes emitted.
    pub fn emit(&self, audience: &Audience, text: &Utf8Bytes) -> usize {
        let mut n = 0;
        let mut send = |sub: &Subscriber| {
            if offer(sub, Outbound::Direct(Box::new(text.clone())), &self.metrics) {
                n += 1;
            }
        };
        match audience {
            Audience::Channel(c) => {
                if let Some(subs) = self.subs.get(c) {
                    subs.values().for_each(&mut send);
                }
            }
            Audience::Users(users) => {
                for u in users {
                    if let Some(subs) = self.users.get(u) {
                        subs.values().for_each(&mut send);
                    }
                }
            }
        }
        n
    }

    /// Number of sessions subscribed to a channel.
    pub fn subscriber_count(&self, channel: ChannelId) -> usize {
        self.subs.get(&channel).map_or(0, |m| m.len())
    }

    /// Store a message and deliver it to the channel's subscribers, in seq order.
    /// Returns once the message is durable (and queued to local subscribers).
    pub async fn post(&self, storage: &dyn Storage, msg: NewMessage) -> Result<Message, PostError> {
        let lock = self.order.entry(msg.channel).or_default().clone();
        let _ordered = lock.lock().await;
        let stored = storage.append_message(msg).await?;
        let text: Utf8Bytes = serde_json::to_string(&ServerEvent::Message(stored.clone()))?.into();
        self.deliver(stored.channel, stored.seq, &text);
        Ok(stored)
    }

    /// Queue one serialized `message` event to every local subscriber of `channel`.
    /// Callers deliver a channel's messages in seq order. Returns the number queued.
    pub fn deliver(&self, channel: ChannelId, seq: Seq, text: &Utf8Bytes) -> usize {
        let Some(subs) = self.subs.get(&channel) else {
            return 0;
        };
        let delivery = Arc::new(Delivery {
            channel,
            seq,
            text: text.clone(),
        });
        let mut n = 0;
        for sub in subs.values() {
            if offer(sub, Outbound::Live(delivery.clone()), &self.metrics) {
                n += 1;
            }
        }
        drop(subs);
        self.metrics.deliveries.increment(n as u64);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emit_reaches_exactly_the_audience() {
        let hub = Hub::new(Arc::new(Metrics::new("test")));
        let mut rxs = Vec::new();
        for (session, user, channel) in [(1u64, 10i64, 7i64), (2, 10, 8), (3, 11, 7)] {
            let (tx, rx) = mpsc::channel(4);
            let sub = Subscriber {
                tx,
                shared: Arc::new(SessionShared::new(0)),
            };
            hub.register_user(user, session, &sub);
            hub.subscribe(session, &sub, &[channel]);
            rxs.push(rx);
        }
        let text: Utf8Bytes = "{}".into();
        assert_eq!(hub.emit(&Audience::Channel(7), &text), 2);
        assert_eq!(hub.emit(&Audience::Users(vec![10]), &text), 2);
        assert_eq!(hub.emit(&Audience::Users(vec![11, 12]), &text), 1);
        assert!(!hub.unregister_user(10, 1));
        assert!(hub.unregister_user(10, 2));
        assert_eq!(hub.user_sessions(10), 0);
        assert_eq!(hub.emit(&Audience::Users(vec![10]), &text), 0);
        let queued: Vec<usize> = rxs.iter().map(|rx| rx.len()).collect();
        assert_eq!(queued, [2, 1, 2]);
    }

    #[test]
    fn queue_items_stay_small() {
        assert!(
            std::mem::size_of::<Outbound>() <= 24,
            "{}",
            std::mem::size_of::<Outbound>()
        );
    }
}
