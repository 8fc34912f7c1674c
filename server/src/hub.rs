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
//! subscriber's queue receives a channel's messages in seq order.
//!
//! In the cluster phases (`pubsub`, `queue`) a [`Bus`] is attached ([`Hub::attach_bus`]):
//!
//! ```text
//!  Hub::post ─► commit (seq n) ─► accept(n) ─► deliver to local subscribers
//!                                └─► Bus::publish(Message{channel, n, event}) ─► Redis
//!  Redis ─► Bus receiver (envelopes of OTHER nodes only) ─► accept(n) ─► deliver
//!  Hub::emit ─► emit_local  +  Bus::publish(Event{audience, event}) ─► Redis ─► emit_local
//! ```
//!
//! A node delivers its own messages locally and skips its own envelopes on the bus, so its
//! local clients keep being served while Redis is away, and nothing is delivered twice.
//! [`Hub::accept`] sequences each channel: it delivers seq `last + 1`, drops `≤ last`
//! (duplicates, e.g. a queue outbox re-sent after a gap fill), and holds anything above
//! `last + 1` until the gap closes. Gaps arise because two nodes publish one channel's
//! consecutive seqs over separate connections, or because an envelope was lost; the bus
//! closes a gap that stays open ([`Hub::overdue_gaps`]): `pubsub` skips it and counts the
//! missing seqs as undelivered, `queue` reads them from Postgres.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use dashmap::DashMap;
use tokio::sync::{Mutex, Notify, mpsc};

use flowline_protocol::ws::{Message, ServerEvent, close};
use flowline_protocol::{ChannelId, Seq, UserId};

use crate::bus::Bus;
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
        Ok(()) => {
            metrics.outbound_queued.increment(1.0);
            true
        }
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

/// Most messages held for one channel while a gap is open; beyond it the gap is overdue
/// at once.
const MAX_HELD: usize = 10_000;

/// Delivery state of one channel in the cluster phases (see the module doc).
#[derive(Debug, Default)]
struct Sequence {
    /// Highest seq delivered here (`None`: this node has not seen the channel yet).
    last: Option<Seq>,
    /// Messages above `last + 1`, waiting for the gap to close.
    held: BTreeMap<Seq, Utf8Bytes>,
}

/// A channel whose sequence has a gap (see [`Hub::overdue_gaps`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// The channel.
    pub channel: ChannelId,
    /// Highest seq delivered.
    pub last: Seq,
    /// Lowest seq held; the gap is `last + 1 .. first_held`.
    pub first_held: Seq,
}

/// Local subscriptions and per-channel ordering.
pub struct Hub {
    subs: DashMap<ChannelId, HashMap<SessionId, Subscriber>>,
    users: DashMap<UserId, HashMap<SessionId, Subscriber>>,
    order: DashMap<ChannelId, Arc<Mutex<()>>>,
    metrics: Arc<Metrics>,
    /// The cluster bus (phases `pubsub`/`queue`), attached once at start-up.
    bus: OnceLock<Arc<Bus>>,
    /// Per-channel sequencing, used only with a bus.
    seqs: DashMap<ChannelId, Arc<parking_lot::Mutex<Sequence>>>,
    /// Channels with an open gap, and since when.
    gapped: DashMap<ChannelId, Instant>,
}

impl Hub {
    /// An empty hub reporting into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            subs: DashMap::new(),
            users: DashMap::new(),
            order: DashMap::new(),
            metrics,
            bus: OnceLock::new(),
            seqs: DashMap::new(),
            gapped: DashMap::new(),
        }
    }

    /// Attach the cluster bus: from now on [`post`](Self::post) and [`emit`](Self::emit)
    /// also publish, and messages are sequenced per channel. Only the first call counts.
    pub fn attach_bus(&self, bus: Arc<Bus>) {
        let _ = self.bus.set(bus);
    }

    /// The attached bus, if any (cluster phases).
    pub fn bus(&self) -> Option<&Arc<Bus>> {
        self.bus.get()
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
    /// With a bus, the user's first session here marks them online in the cluster's
    /// presence registry.
    pub fn register_user(&self, user: UserId, session: SessionId, sub: &Subscriber) {
        let first = {
            let mut entry = self.users.entry(user).or_default();
            entry.insert(session, sub.clone());
            entry.len() == 1
        };
        if first && let Some(bus) = self.bus.get() {
            bus.user_online(user);
        }
    }

    /// Forget a session of `user`; returns whether the user has no session left here.
    /// With a bus, the user's last session here removes this node from their presence.
    pub fn unregister_user(&self, user: UserId, session: SessionId) -> bool {
        let mut removed = false;
        let now_empty = self.users.get_mut(&user).is_none_or(|mut m| {
            removed = m.remove(&session).is_some();
            m.is_empty()
        });
        if now_empty {
            self.users.remove_if(&user, |_, m| m.is_empty());
            if removed && let Some(bus) = self.bus.get() {
                bus.user_offline(user);
            }
        }
        now_empty
    }

    /// Users with at least one authenticated session on this node.
    pub fn local_users(&self) -> Vec<UserId> {
        self.users.iter().map(|e| *e.key()).collect()
    }

    /// Number of this node's authenticated sessions of `user`.
    pub fn user_sessions(&self, user: UserId) -> usize {
        self.users.get(&user).map_or(0, |m| m.len())
    }

    /// Send one serialized non-`message` event to the sessions in `audience` on every
    /// node: queued here at once, and published on the bus in the cluster phases.
    /// Returns the number queued on this node. Feature code calls this for ephemeral and
    /// update events.
    pub fn emit(&self, audience: &Audience, text: &Utf8Bytes) -> usize {
        if let Some(bus) = self.bus.get() {
            bus.publish_event(audience, text);
        }
        self.emit_local(audience, text)
    }

    /// Queue one serialized non-`message` event to this node's sessions in `audience`
    /// only (the bus calls this for events other nodes emitted). Returns the number queued.
    pub fn emit_local(&self, audience: &Audience, text: &Utf8Bytes) -> usize {
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
        let started = Instant::now();
        let stored = storage.append_message(msg).await?;
        self.metrics
            .storage_append_seconds
            .record(started.elapsed().as_secs_f64());
        let text: Utf8Bytes = serde_json::to_string(&ServerEvent::Message(stored.clone()))?.into();
        match self.bus.get() {
            None => {
                self.deliver(stored.channel, stored.seq, &text);
            }
            Some(bus) => {
                // Still under the channel lock: this node publishes a channel's messages
                // in seq order.
                self.accept(stored.channel, stored.seq, &text);
                bus.publish_message(stored.channel, stored.seq, &text);
            }
        }
        Ok(stored)
    }

    /// Sequence one `message` event of `channel` (cluster phases): deliver it if it is
    /// the next seq (then any held successors), drop it if already delivered, hold it if
    /// a seq before it is missing. Returns the number of local queues it reached now.
    pub fn accept(&self, channel: ChannelId, seq: Seq, text: &Utf8Bytes) -> usize {
        let cell = self.sequence(channel);
        let mut st = cell.lock();
        match st.last {
            Some(last) if seq <= last => return 0,
            Some(last) if seq > last + 1 => {
                st.held.insert(seq, text.clone());
                self.gapped.entry(channel).or_insert_with(Instant::now);
                if st.held.len() > MAX_HELD {
                    // Make it overdue now: the bus resolves it on its next pass.
                    self.gapped
                        .insert(channel, Instant::now() - Duration::from_secs(3600));
                }
                return 0;
            }
            _ => {}
        }
        let mut n = self.deliver(channel, seq, text);
        st.last = Some(seq);
        n += self.drain_held(channel, &mut st);
        n
    }

    fn sequence(&self, channel: ChannelId) -> Arc<parking_lot::Mutex<Sequence>> {
        if let Some(cell) = self.seqs.get(&channel) {
            return cell.clone();
        }
        self.seqs.entry(channel).or_default().clone()
    }

    /// Deliver held messages that now follow `last` without a gap.
    fn drain_held(&self, channel: ChannelId, st: &mut Sequence) -> usize {
        let mut n = 0;
        while let Some(entry) = st.held.first_entry() {
            let seq = *entry.key();
            let last = st.last.unwrap_or(0);
            if seq <= last {
                entry.remove();
            } else if seq == last + 1 {
                let text = entry.remove();
                n += self.deliver(channel, seq, &text);
                st.last = Some(seq);
            } else {
                break;
            }
        }
        if st.held.is_empty() {
            self.gapped.remove(&channel);
        }
        n
    }

    /// Tell the sequencer the channel's latest committed seq, if it has not seen the
    /// channel yet (a session subscribing read it from storage), so a message that
    /// overtakes its predecessor on the bus opens a gap instead of setting the baseline.
    pub fn note_seq(&self, channel: ChannelId, seq: Seq) {
        if self.bus.get().is_none() {
            return;
        }
        let cell = self.sequence(channel);
        let mut st = cell.lock();
        if st.last.is_none() {
            st.last = Some(seq);
            self.drain_held(channel, &mut st);
        }
    }

    /// Channels whose gap has been open longer than `wait`.
    pub fn overdue_gaps(&self, wait: Duration) -> Vec<Gap> {
        let now = Instant::now();
        let overdue: Vec<ChannelId> = self
            .gapped
            .iter()
            .filter(|e| now.duration_since(*e.value()) >= wait)
            .map(|e| *e.key())
            .collect();
        overdue
            .into_iter()
            .filter_map(|channel| {
                let cell = self.seqs.get(&channel)?.clone();
                let st = cell.lock();
                let (&first_held, _) = st.held.first_key_value()?;
                Some(Gap {
                    channel,
                    last: st.last.unwrap_or(0),
                    first_held,
                })
            })
            .collect()
    }

    /// Give up on a channel's missing seqs: deliver everything held, in order, and return
    /// how many seqs were skipped (phase `pubsub`: they are lost for this node).
    pub fn skip_gaps(&self, channel: ChannelId) -> u64 {
        let Some(cell) = self.seqs.get(&channel).map(|c| c.clone()) else {
            return 0;
        };
        let mut st = cell.lock();
        let mut skipped = 0;
        while let Some((&first, _)) = st.held.first_key_value() {
            let last = st.last.unwrap_or(0);
            if first > last + 1 {
                skipped += first - last - 1;
                st.last = Some(first - 1);
            }
            self.drain_held(channel, &mut st);
        }
        self.gapped.remove(&channel);
        u64::try_from(skipped).unwrap_or(0)
    }

    /// Queue one serialized `message` event to every local subscriber of `channel`.
    /// Callers deliver a channel's messages in seq order. Returns the number queued.
    pub fn deliver(&self, channel: ChannelId, seq: Seq, text: &Utf8Bytes) -> usize {
        let Some(subs) = self.subs.get(&channel) else {
            return 0;
        };
        let started = Instant::now();
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
        self.metrics
            .fanout_seconds
            .record(started.elapsed().as_secs_f64());
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
    fn accept_orders_holds_and_skips_per_channel() {
        let hub = Hub::new(Arc::new(Metrics::new("test")));
        let (tx, mut rx) = mpsc::channel(64);
        let sub = Subscriber {
            tx,
            shared: Arc::new(SessionShared::new(0)),
        };
        hub.subscribe(1, &sub, &[7]);
        let t = |s: Seq| Utf8Bytes::from(s.to_string());
        let mut got = || {
            let mut seqs = Vec::new();
            while let Ok(Outbound::Live(d)) = rx.try_recv() {
                seqs.push(d.seq);
            }
            seqs
        };
        hub.accept(7, 1, &t(1));
        hub.accept(7, 3, &t(3)); // overtook 2: held
        assert_eq!(got(), [1]);
        assert_eq!(hub.overdue_gaps(Duration::ZERO).len(), 1);
        hub.accept(7, 2, &t(2));
        hub.accept(7, 2, &t(2)); // duplicate
        assert_eq!(got(), [2, 3]);
        assert!(hub.overdue_gaps(Duration::ZERO).is_empty());
        hub.accept(7, 6, &t(6));
        hub.accept(7, 9, &t(9));
        assert_eq!(
            hub.overdue_gaps(Duration::ZERO),
            [Gap {
                channel: 7,
                last: 3,
                first_held: 6
            }]
        );
        assert!(hub.overdue_gaps(Duration::from_secs(60)).is_empty());
        assert_eq!(hub.skip_gaps(7), 2 + 2, "4, 5, 7 and 8 skipped");
        assert_eq!(got(), [6, 9]);
        hub.accept(7, 5, &t(5)); // late: already skipped
        hub.accept(7, 10, &t(10));
        assert_eq!(got(), [10]);
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
