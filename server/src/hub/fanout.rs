//! [`Hub`]: the node's local fan-out — which sessions are subscribed to which channel,
//! which users have sessions here, the per-channel ordering lock of [`Hub::post`], and
//! (with a cluster bus attached) the per-channel sequencing of messages from other nodes.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use dashmap::DashMap;
use tokio::sync::Mutex;

use flowline_protocol::ws::{Message, ServerEvent};
use flowline_protocol::{ChannelId, Seq, UserId};

use super::audience::Audience;
use super::cluster::ClusterLink;
use super::outbound::{Delivery, Outbound, SessionId, Subscriber, offer};
use super::sequence::{Gap, Sequencer};
use crate::error::StorageError;
use crate::metrics::Metrics;
use crate::storage::{NewMessage, Storage};

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

/// Local subscriptions and per-channel ordering.
pub struct Hub {
    subs: DashMap<ChannelId, HashMap<SessionId, Subscriber>>,
    users: DashMap<UserId, HashMap<SessionId, Subscriber>>,
    order: DashMap<ChannelId, Arc<Mutex<()>>>,
    metrics: Arc<Metrics>,
    /// The cluster bus (phases `pubsub`/`queue`), attached once at start-up.
    cluster: OnceLock<Arc<dyn ClusterLink>>,
    /// Per-channel sequencing, used only with a bus.
    sequencer: Sequencer,
}

impl Hub {
    /// An empty hub reporting into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            subs: DashMap::new(),
            users: DashMap::new(),
            order: DashMap::new(),
            metrics,
            cluster: OnceLock::new(),
            sequencer: Sequencer::default(),
        }
    }

    /// Attach the cluster bus: from now on [`post`](Self::post) and [`emit`](Self::emit)
    /// also publish, and messages are sequenced per channel. Only the first call counts.
    pub fn attach_cluster(&self, link: Arc<dyn ClusterLink>) {
        let _ = self.cluster.set(link);
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
        if first && let Some(cluster) = self.cluster.get() {
            cluster.user_online(user);
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
            if removed && let Some(cluster) = self.cluster.get() {
                cluster.user_offline(user);
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
        if let Some(cluster) = self.cluster.get() {
            cluster.publish_event(audience, text);
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
    ///
    /// Without a bus, the channel's lock orders append and delivery. With one, appends of
    /// a channel run concurrently (storage orders them on the channel's row) and the
    /// sequencer delivers in seq order, as it does for other nodes' messages: a hot
    /// channel's sends no longer queue behind each other's round trips on this node.
    pub async fn post(&self, storage: &dyn Storage, msg: NewMessage) -> Result<Message, PostError> {
        let Some(cluster) = self.cluster.get() else {
            let lock = self.order.entry(msg.channel).or_default().clone();
            let _ordered = lock.lock().await;
            let (stored, text) = self.append(storage, msg).await?;
            self.deliver(stored.channel, stored.seq, &text);
            return Ok(stored);
        };
        let (stored, text) = self.append(storage, msg).await?;
        self.accept(stored.channel, stored.seq, &text);
        cluster.publish_message(stored.channel, stored.seq, &text);
        Ok(stored)
    }

    /// Append `msg` (timed) and serialize its `message` event.
    async fn append(
        &self,
        storage: &dyn Storage,
        msg: NewMessage,
    ) -> Result<(Message, Utf8Bytes), PostError> {
        let started = Instant::now();
        let stored = storage.append_message(msg).await?;
        self.metrics
            .storage_append_seconds
            .record(started.elapsed().as_secs_f64());
        let text: Utf8Bytes = serde_json::to_string(&ServerEvent::Message(stored.clone()))?.into();
        Ok((stored, text))
    }

    /// Sequence one `message` event of `channel` (cluster phases): deliver it if it is
    /// the next seq (then any held successors), drop it if already delivered, hold it if
    /// a seq before it is missing. Returns the number of local queues it reached now.
    pub fn accept(&self, channel: ChannelId, seq: Seq, text: &Utf8Bytes) -> usize {
        self.sequencer.accept(channel, seq, text, |seq, text| {
            self.deliver(channel, seq, text)
        })
    }

    /// Tell the sequencer the channel's latest committed seq, if it has not seen the
    /// channel yet (a session subscribing read it from storage), so a message that
    /// overtakes its predecessor on the bus opens a gap instead of setting the baseline.
    pub fn note_seq(&self, channel: ChannelId, seq: Seq) {
        if self.cluster.get().is_none() {
            return;
        }
        self.sequencer
            .note_seq(channel, seq, |seq, text| self.deliver(channel, seq, text));
    }

    /// Channels whose gap has been open longer than `wait`.
    pub fn overdue_gaps(&self, wait: Duration) -> Vec<Gap> {
        self.sequencer.overdue_gaps(wait)
    }

    /// Give up on a channel's missing seqs: deliver everything held, in order, and return
    /// how many seqs were skipped (phase `pubsub`: they are lost for this node).
    pub fn skip_gaps(&self, channel: ChannelId) -> u64 {
        self.sequencer
            .skip_gaps(channel, |seq, text| self.deliver(channel, seq, text))
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
    use tokio::sync::mpsc;

    use super::super::outbound::SessionShared;
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
