//! The cluster bus of phases `pubsub` and `queue`: carries every node's messages and
//! events to every other node through Redis, and keeps the cluster's presence registry.
//!
//! ```text
//!   Hub::post / Hub::emit ──► Bus::publish_* ──► bounded queue ──► publisher task
//!                                                                  │ pipelined batch
//!                     pubsub: PUBLISH flowline:<cluster>:bus       ▼
//!                     queue:  XADD flowline:<cluster>:q:<shard> MAXLEN ~ N
//!                                                                  │
//!   other nodes' receiver task ◄── SUBSCRIBE (pubsub) / XREAD from its last ids (queue)
//!        │ skip own envelopes, lag histogram
//!        ├─► Hub::accept(channel, seq, event)   (sequenced, see hub.rs)
//!        └─► Hub::emit_local(audience, event)
//!   gap task: every 50 ms, gaps open longer than 1 s are skipped and counted (pubsub),
//!             gaps open longer than 500 ms are filled from Postgres (queue)
//! ```
//!
//! Every key and channel starts with `flowline:<cluster_id>:`, so clusters and tests
//! share one Redis and are torn down with `DEL flowline:<cluster_id>:*`.
//!
//! Delivery semantics, per node:
//! * `pubsub` — at most once. Envelopes published while the publisher cannot reach Redis
//!   are dropped and counted (`flowline_bus_undelivered_total`); envelopes published while
//!   a subscriber is cut off never reach it, and it counts the seq gaps it skips.
//! * `queue` — exactly once per node for messages. The publisher keeps what it could not
//!   append in an in-memory outbox (bounded) and appends it after reconnecting; the
//!   reader resumes each shard stream from the last entry id it read; a gap that stays
//!   open (an envelope lost with a crashed publisher's outbox, or trimmed away) is filled
//!   from Postgres, where every acked message is committed before it is published.
//!   Duplicates (outbox re-sent after a fill) are dropped by seq. Events (no seq) are
//!   delivered once per node unless their publisher dies with them in its outbox.

mod presence;
mod pubsub;
mod queue;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use redis::AsyncConnectionConfig;
use redis::aio::{ConnectionManager, MultiplexedConnection};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use flowline_protocol::ws::ServerEvent;
use flowline_protocol::{ChannelId, Seq, UserId};

use crate::app::{App, now_ms};
use crate::config::{Config, Phase};
use crate::error::Error;
use crate::hub::{Audience, Gap};
use crate::metrics::Metrics;

/// Envelopes waiting for the publisher task; beyond this a publish is dropped and counted.
const PUBLISH_QUEUE: usize = 65_536;
/// Envelopes sent in one pipelined round trip.
const BATCH: usize = 512;
/// Envelopes the `queue` publisher keeps while Redis is unreachable (oldest dropped first;
/// receivers then fill those messages from Postgres).
const OUTBOX_MAX: usize = 200_000;
/// How long a seq gap may stay open before a `pubsub` node skips it: a successor
/// published by another node overtakes its predecessor whenever the two publishers' lags
/// differ, and skipping early turns that reordering into loss (with 250 ms, a loaded
/// 3-node run skipped 0.3–0.8 % of envelopes without any fault). A real loss stalls the
/// channel's later messages on that node for this long.
const PUBSUB_GAP_WAIT: Duration = Duration::from_secs(1);
/// The same for `queue`, where resolving reads the messages from Postgres (lossless), so
/// waiting only saves reads.
const QUEUE_GAP_WAIT: Duration = Duration::from_millis(500);
/// Time allowed to connect to Redis, and for a reply.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);

/// What one envelope carries.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Body {
    /// A committed message: its serialized `message` event.
    Message {
        /// Channel.
        channel: ChannelId,
        /// Seq in the channel.
        seq: Seq,
        /// The serialized `message` event.
        event: String,
    },
    /// Any other event and who it is for.
    Event {
        /// Who receives it.
        audience: Audience,
        /// The serialized event.
        event: String,
    },
}

/// One unit on the bus, serialized as JSON.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Envelope {
    /// Publishing node's incarnation (`<node id>#<random>`); a node skips its own.
    pub origin: String,
    /// Unix ms when it was published (for `flowline_bus_lag_seconds`).
    pub sent_ms: u64,
    /// The content.
    #[serde(flatten)]
    pub body: Body,
}

impl Envelope {
    fn is_message(&self) -> bool {
        matches!(self.body, Body::Message { .. })
    }

    /// The channel it belongs to, if any (picks the `queue` shard).
    fn channel(&self) -> Option<ChannelId> {
        match &self.body {
            Body::Message { channel, .. }
            | Body::Event {
                audience: Audience::Channel(channel),
                ..
            } => Some(*channel),
            Body::Event { .. } => None,
        }
    }
}

/// Which Redis mechanism carries the envelopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Redis PUBLISH/SUBSCRIBE on one channel (at most once).
    Pubsub,
    /// Redis Streams, sharded by channel (durable, resumable).
    Queue,
}

/// A change to this node's entries in the presence registry.
#[derive(Debug, Clone, Copy)]
enum PresenceOp {
    Online(UserId),
    Offline(UserId),
}

/// The cluster bus of one node. Build it with [`Bus::connect`]; the hub publishes
/// through it; presence queries ([`online_users`](Self::online_users),
/// [`is_online`](Self::is_online), [`user_nodes`](Self::user_nodes)) answer for the whole
/// cluster.
pub struct Bus {
    node_id: String,
    origin: String,
    prefix: String,
    transport: Transport,
    client: redis::Client,
    /// For presence queries (reconnects by itself).
    query: ConnectionManager,
    out: mpsc::Sender<Envelope>,
    out_rx: parking_lot::Mutex<Option<mpsc::Receiver<Envelope>>>,
    presence: mpsc::Sender<PresenceOp>,
    presence_rx: parking_lot::Mutex<Option<mpsc::Receiver<PresenceOp>>>,
    /// Set when a presence change could not be queued: the registry task rewrites this
    /// node's whole entry.
    presence_resync: AtomicBool,
    presence_ttl: Duration,
    /// `queue`: the last entry id of every shard when the node started.
    start_ids: Vec<String>,
    metrics: Arc<Metrics>,
    tasks: TaskTracker,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("origin", &self.origin)
            .field("prefix", &self.prefix)
            .field("transport", &self.transport)
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
        Ok(Arc::new(Bus {
            node_id: config.node_id.clone(),
            origin: format!("{}#{:08x}", config.node_id, rand::random::<u32>()),
            prefix,
            transport,
            client,
            query,
            out,
            out_rx: parking_lot::Mutex::new(Some(out_rx)),
            presence,
            presence_rx: parking_lot::Mutex::new(Some(presence_rx)),
            presence_resync: AtomicBool::new(false),
            presence_ttl: config.presence_ttl,
            start_ids,
            metrics,
            tasks: TaskTracker::new(),
        }))
    }

    /// The Redis key/channel prefix, `flowline:<cluster_id>:`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Which Redis mechanism this bus uses.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// Start the publisher, receiver, gap and presence tasks; they stop with `shutdown`.
    pub(crate) fn start(self: &Arc<Self>, app: Arc<App>, shutdown: CancellationToken) {
        let out_rx = self.out_rx.lock().take();
        let presence_rx = self.presence_rx.lock().take();
        let (Some(out_rx), Some(presence_rx)) = (out_rx, presence_rx) else {
            return; // already started
        };
        self.tasks
            .spawn(publish_loop(self.clone(), out_rx, shutdown.clone()));
        match self.transport {
            Transport::Pubsub => self.tasks.spawn(pubsub::receive_loop(
                self.clone(),
                app.clone(),
                shutdown.clone(),
            )),
            Transport::Queue => self.tasks.spawn(queue::receive_loop(
                self.clone(),
                app.clone(),
                shutdown.clone(),
            )),
        };
        self.tasks
            .spawn(gap_loop(self.clone(), app.clone(), shutdown.clone()));
        self.tasks.spawn(presence::registry_loop(
            self.clone(),
            app,
            presence_rx,
            shutdown,
        ));
        self.tasks.close();
    }

    /// Wait (up to `limit`) for the bus tasks to finish after shutdown.
    pub(crate) async fn stopped(&self, limit: Duration) {
        if tokio::time::timeout(limit, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("bus tasks did not stop in time");
        }
    }

    /// Publish a committed message (the hub calls this in seq order per channel).
    pub fn publish_message(&self, channel: ChannelId, seq: Seq, event: &Utf8Bytes) {
        self.publish(Body::Message {
            channel,
            seq,
            event: event.as_str().to_owned(),
        });
    }

    /// Publish a non-`message` event for `audience`.
    pub fn publish_event(&self, audience: &Audience, event: &Utf8Bytes) {
        self.publish(Body::Event {
            audience: audience.clone(),
            event: event.as_str().to_owned(),
        });
    }

    fn publish(&self, body: Body) {
        let env = Envelope {
            origin: self.origin.clone(),
            sent_ms: now_ms(),
            body,
        };
        let is_message = env.is_message();
        if self.out.try_send(env).is_err() && is_message {
            self.metrics.bus_undelivered.increment(1);
        }
    }

    /// Handle one envelope received from Redis.
    fn receive(&self, app: &App, payload: &[u8]) {
        let env: Envelope = match serde_json::from_slice(payload) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable bus envelope skipped");
                return;
            }
        };
        if env.origin == self.origin {
            return;
        }
        self.metrics.bus_received.increment(1);
        let lag_ms = now_ms().saturating_sub(env.sent_ms);
        self.metrics.bus_lag_seconds.record(lag_ms as f64 / 1000.0);
        match env.body {
            Body::Message {
                channel,
                seq,
                event,
            } => {
                app.hub.accept(channel, seq, &event.into());
            }
            Body::Event { audience, event } => {
                app.hub.emit_local(&audience, &event.into());
            }
        }
    }

    /// A fresh multiplexed connection whose replies may take up to `response` (longer
    /// than any BLOCK we send on it).
    async fn connection(&self, response: Duration) -> redis::RedisResult<MultiplexedConnection> {
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(response));
        self.client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
    }

    /// Mark `user` online on this node (the hub calls this for a user's first session).
    pub fn user_online(&self, user: UserId) {
        self.presence_op(PresenceOp::Online(user));
    }

    /// Remove `user` from this node (the hub calls this when their last session ends).
    pub fn user_offline(&self, user: UserId) {
        self.presence_op(PresenceOp::Offline(user));
    }

    fn presence_op(&self, op: PresenceOp) {
        if self.presence.try_send(op).is_err() {
            self.presence_resync.store(true, Ordering::Release);
        }
    }

    /// Which of `users` have a session on a live node of the cluster (order kept).
    pub async fn online_users(&self, users: &[UserId]) -> redis::RedisResult<Vec<UserId>> {
        presence::online_users(self, users).await
    }

    /// Does `user` have a session on a live node of the cluster?
    pub async fn is_online(&self, user: UserId) -> redis::RedisResult<bool> {
        Ok(!self.online_users(&[user]).await?.is_empty())
    }

    /// The live nodes holding a session of `user`.
    pub async fn user_nodes(&self, user: UserId) -> redis::RedisResult<Vec<String>> {
        presence::user_nodes(self, user).await
    }
}

/// Exponential backoff for reconnecting: 50 ms doubling to 2 s.
struct Backoff(Duration);

impl Backoff {
    const FIRST: Duration = Duration::from_millis(50);
    const MAX: Duration = Duration::from_secs(2);

    fn new() -> Self {
        Backoff(Self::FIRST)
    }

    fn reset(&mut self) {
        self.0 = Self::FIRST;
    }

    /// Sleep for the current delay (or until shutdown); returns false on shutdown.
    async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let d = self.0;
        self.0 = (self.0 * 2).min(Self::MAX);
        tokio::select! {
            () = shutdown.cancelled() => false,
            () = tokio::time::sleep(d) => true,
        }
    }
}

/// Send queued envelopes to Redis in pipelined batches; reconnect with backoff.
async fn publish_loop(
    bus: Arc<Bus>,
    mut rx: mpsc::Receiver<Envelope>,
    shutdown: CancellationToken,
) {
    let durable = bus.transport == Transport::Queue;
    let metrics = bus.metrics.clone();
    let mut outbox: VecDeque<Envelope> = VecDeque::new();
    let mut conn: Option<MultiplexedConnection> = None;
    let mut backoff = Backoff::new();
    let mut connected_before = false;
    let drop_all = |outbox: &mut VecDeque<Envelope>| {
        let lost = outbox.drain(..).filter(Envelope::is_message).count();
        metrics.bus_undelivered.increment(lost as u64);
    };
    loop {
        if outbox.is_empty() {
            tokio::select! {
                () = shutdown.cancelled() => return,
                env = rx.recv() => match env {
                    Some(env) => outbox.push_back(env),
                    None => return,
                },
            }
        }
        while let Ok(env) = rx.try_recv() {
            outbox.push_back(env);
        }
        if outbox.len() > OUTBOX_MAX {
            let excess = outbox.len() - OUTBOX_MAX;
            let lost = outbox.drain(..excess).filter(Envelope::is_message).count();
            metrics.bus_undelivered.increment(lost as u64);
        }
        let c = match &mut conn {
            Some(c) => c,
            None => match bus.connection(RESPONSE_TIMEOUT).await {
                Ok(c) => {
                    if connected_before {
                        metrics.bus_reconnects.increment(1);
                        tracing::info!("bus publisher reconnected to Redis");
                    }
                    connected_before = true;
                    backoff.reset();
                    conn.insert(c)
                }
                Err(e) => {
                    tracing::debug!(error = %e, "bus publisher cannot reach Redis");
                    if !durable {
                        drop_all(&mut outbox);
                    }
                    if !backoff.wait(&shutdown).await {
                        return;
                    }
                    continue;
                }
            },
        };
        let n = outbox.len().min(BATCH);
        let mut pipe = redis::pipe();
        for env in outbox.iter().take(n) {
            let payload = match serde_json::to_string(env) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode a bus envelope");
                    continue;
                }
            };
            match bus.transport {
                Transport::Pubsub => pubsub::add_publish(&mut pipe, &bus.prefix, &payload),
                Transport::Queue => queue::add_append(&mut pipe, &bus.prefix, env, &payload),
            }
        }
        match pipe.query_async::<()>(c).await {
            Ok(()) => {
                outbox.drain(..n);
                metrics.bus_published.increment(n as u64);
            }
            Err(e) => {
                tracing::warn!(error = %e, "bus publish failed; reconnecting");
                conn = None;
                if !durable {
                    drop_all(&mut outbox);
                }
                if !backoff.wait(&shutdown).await {
                    return;
                }
            }
        }
    }
}

/// Resolve seq gaps that stay open: skip and count them (`pubsub`) or read the missing
/// messages from storage (`queue`).
async fn gap_loop(bus: Arc<Bus>, app: Arc<App>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let wait = match bus.transport {
            Transport::Pubsub => PUBSUB_GAP_WAIT,
            Transport::Queue => QUEUE_GAP_WAIT,
        };
        for gap in app.hub.overdue_gaps(wait) {
            match bus.transport {
                Transport::Pubsub => {
                    let missed = app.hub.skip_gaps(gap.channel);
                    bus.metrics.bus_undelivered.increment(missed);
                }
                Transport::Queue => fill_gap(&bus, &app, gap).await,
            }
        }
    }
}

/// Read a gap's messages from storage and sequence them; on a storage failure the gap
/// stays open and is retried on the next pass.
async fn fill_gap(bus: &Bus, app: &App, gap: Gap) {
    let missing = gap.first_held - gap.last - 1;
    let limit = u32::try_from(missing.clamp(1, 500)).unwrap_or(500);
    let started = std::time::Instant::now();
    let read = app
        .storage
        .messages(gap.channel, Some(gap.first_held), Some(gap.last), limit)
        .await;
    bus.metrics
        .storage_messages_seconds
        .record(started.elapsed().as_secs_f64());
    match read {
        Ok(messages) if messages.is_empty() => {
            // Not in storage (cannot happen with gapless seqs, unless the channel is
            // gone): give up rather than stall the channel.
            let missed = app.hub.skip_gaps(gap.channel);
            bus.metrics.bus_undelivered.increment(missed);
        }
        Ok(messages) => {
            for m in messages {
                let (channel, seq) = (m.channel, m.seq);
                match serde_json::to_string(&ServerEvent::Message(m)) {
                    Ok(text) => {
                        app.hub.accept(channel, seq, &text.into());
                    }
                    Err(e) => tracing::error!(error = %e, "serializing a gap message"),
                }
            }
        }
        Err(e) => {
            app.metrics.storage_errors.increment(1);
            tracing::warn!(error = %e, channel = gap.channel, "cannot fill a seq gap from storage yet");
        }
    }
}
