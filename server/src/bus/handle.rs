//! [`Bus`]: the node's handle on the cluster bus — connecting to Redis, starting the bus
//! tasks, queueing envelopes for the publisher (the hub publishes through it as its
//! [`ClusterLink`]) and asking the presence registry.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use redis::aio::ConnectionManager;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use flowline_protocol::{ChannelId, Seq, UserId};

use super::envelope::{Body, Envelope};
use super::gaps::gap_loop;
use super::inbox::Inbox;
use super::link::{CONNECT_TIMEOUT, Link, RESPONSE_TIMEOUT, Transport};
use super::origins::Origins;
use super::presence::{self, PresenceOp};
use super::publisher::publish_loop;
use super::{pubsub, queue};
use crate::clock::now_ms;
use crate::config::{Config, Phase};
use crate::error::Error;
use crate::hub::{Audience, ClusterLink};
use crate::members::MemberChange;
use crate::metrics::Metrics;
use crate::storage::Storage;

/// Envelopes waiting for the publisher task; beyond this a publish is dropped and counted.
const PUBLISH_QUEUE: usize = 65_536;

/// The cluster bus of one node. Build it with [`Bus::connect`], start its tasks with
/// [`Bus::start`]; the hub publishes through it; presence queries
/// ([`online_users`](Self::online_users), [`is_online`](Self::is_online),
/// [`user_nodes`](Self::user_nodes)) answer for the whole cluster.
pub struct Bus {
    link: Arc<Link>,
    out: mpsc::Sender<Envelope>,
    out_rx: parking_lot::Mutex<Option<mpsc::Receiver<Envelope>>>,
    presence: mpsc::Sender<PresenceOp>,
    presence_rx: parking_lot::Mutex<Option<mpsc::Receiver<PresenceOp>>>,
    tasks: TaskTracker,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("origin", &self.link.origin)
            .field("prefix", &self.link.prefix)
            .field("transport", &self.link.transport)
            .finish_non_exhaustive()
    }
}

fn bus_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Bus(format!("{what}: {e}"))
}

impl Bus {
    /// Connect to the configured Redis (phases `pubsub`/`queue`); fails with a clear
    /// error if it does not answer.
    pub async fn connect(config: &Config, metrics: Arc<Metrics>) -> Result<Arc<Bus>, Error> {
        let transport = match config.phase {
            Phase::Pubsub => Transport::Pubsub,
            Phase::Queue => Transport::Queue,
            other => {
                return Err(Error::Config(format!("phase {other} has no cluster bus")));
            }
        };
        let url = config
            .redis_url
            .as_deref()
            .ok_or_else(|| Error::Config("this phase needs --redis-url".into()))?;
        let cluster = config
            .cluster_id
            .as_deref()
            .ok_or_else(|| Error::Config("this phase needs --cluster-id".into()))?;
        let client = redis::Client::open(url).map_err(|e| bus_error("bad Redis URL", e))?;
        let manager_config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1);
        let mut query = tokio::time::timeout(
            CONNECT_TIMEOUT * 2,
            ConnectionManager::new_with_config(client.clone(), manager_config),
        )
        .await
        .map_err(|_| bus_error(&format!("Redis at {url} does not answer"), "timed out"))?
        .map_err(|e| bus_error(&format!("cannot connect to Redis at {url}"), e))?;
        let prefix = format!("flowline:{cluster}:");
        let start_ids = if transport == Transport::Queue {
            queue::tail_ids(&mut query, &prefix)
                .await
                .map_err(|e| bus_error("reading the stream positions", e))?
        } else {
            Vec::new()
        };
        let (out, out_rx) = mpsc::channel(PUBLISH_QUEUE);
        let (presence, presence_rx) = mpsc::channel(PUBLISH_QUEUE);
        let link = Link {
            node_id: config.node_id.clone(),
            origin: format!("{}#{:08x}", config.node_id, rand::random::<u32>()),
            prefix,
            transport,
            client,
            query,
            presence_ttl: config.presence_ttl,
            presence_resync: AtomicBool::new(false),
            start_ids,
            origins: Origins::default(),
            metrics,
        };
        Ok(Arc::new(Bus {
            link: Arc::new(link),
            out,
            out_rx: parking_lot::Mutex::new(Some(out_rx)),
            presence,
            presence_rx: parking_lot::Mutex::new(Some(presence_rx)),
            tasks: TaskTracker::new(),
        }))
    }

    /// The Redis key/channel prefix, `flowline:<cluster_id>:`.
    pub fn prefix(&self) -> &str {
        &self.link.prefix
    }

    /// A handle on the bus's Redis query connection (multiplexed; cloning is cheap), for
    /// the cluster-wide rate limits and idempotency keys.
    pub fn redis(&self) -> ConnectionManager {
        self.link.query.clone()
    }

    /// Which Redis mechanism this bus uses.
    pub fn transport(&self) -> Transport {
        self.link.transport
    }

    /// Start the publisher, receiver, gap and presence tasks; they stop with `shutdown`.
    /// What arrives goes to `inbox` (the node's hub); gaps are filled from `storage`.
    pub fn start(
        &self,
        inbox: Arc<dyn Inbox>,
        storage: Arc<dyn Storage>,
        shutdown: CancellationToken,
    ) {
        let out_rx = self.out_rx.lock().take();
        let presence_rx = self.presence_rx.lock().take();
        let (Some(out_rx), Some(presence_rx)) = (out_rx, presence_rx) else {
            return; // already started
        };
        let link = &self.link;
        self.tasks
            .spawn(publish_loop(link.clone(), out_rx, shutdown.clone()));
        match link.transport {
            Transport::Pubsub => self.tasks.spawn(pubsub::receive_loop(
                link.clone(),
                inbox.clone(),
                shutdown.clone(),
            )),
            Transport::Queue => self.tasks.spawn(queue::receive_loop(
                link.clone(),
                inbox.clone(),
                shutdown.clone(),
            )),
        };
        self.tasks.spawn(gap_loop(
            link.clone(),
            inbox.clone(),
            storage,
            shutdown.clone(),
        ));
        self.tasks.spawn(presence::registry_loop(
            link.clone(),
            inbox,
            presence_rx,
            shutdown,
        ));
        self.tasks.close();
    }

    /// Wait (up to `limit`) for the bus tasks to finish after shutdown.
    pub async fn stopped(&self, limit: Duration) {
        if tokio::time::timeout(limit, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("bus tasks did not stop in time");
        }
    }

    fn publish(&self, body: Body) {
        let env = Envelope {
            origin: self.link.origin.clone(),
            sent_ms: now_ms(),
            n: 0,
            body,
        };
        let is_message = env.is_message();
        if self.out.try_send(env).is_err() && is_message {
            self.link.metrics.bus_undelivered.increment(1);
        }
    }

    fn presence_op(&self, op: PresenceOp) {
        if self.presence.try_send(op).is_err() {
            self.link.presence_resync.store(true, Ordering::Release);
        }
    }

    /// Tell the other nodes that space membership changed (they forget their cache of it).
    pub fn publish_members(&self, member: MemberChange) {
        self.publish(Body::Membership { member });
    }

    /// Which of `users` have a session on a live node of the cluster (order kept).
    pub async fn online_users(&self, users: &[UserId]) -> redis::RedisResult<Vec<UserId>> {
        presence::online_users(&self.link, users).await
    }

    /// Does `user` have a session on a live node of the cluster?
    pub async fn is_online(&self, user: UserId) -> redis::RedisResult<bool> {
        Ok(!self.online_users(&[user]).await?.is_empty())
    }

    /// The live nodes holding a session of `user`.
    pub async fn user_nodes(&self, user: UserId) -> redis::RedisResult<Vec<String>> {
        presence::user_nodes(&self.link, user).await
    }
}

impl ClusterLink for Bus {
    fn publish_message(&self, channel: ChannelId, seq: Seq, event: &Utf8Bytes) {
        self.publish(Body::Message {
            channel,
            seq,
            event: event.as_str().to_owned(),
        });
    }

    fn publish_event(&self, audience: &Audience, event: &Utf8Bytes) {
        self.publish(Body::Event {
            audience: audience.clone(),
            event: event.as_str().to_owned(),
        });
    }

    fn user_online(&self, user: UserId) {
        self.presence_op(PresenceOp::Online(user));
    }

    fn user_offline(&self, user: UserId) {
        self.presence_op(PresenceOp::Offline(user));
    }
}
