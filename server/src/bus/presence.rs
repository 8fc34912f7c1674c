//! The cluster's presence registry in Redis: which node holds which user (the registry
//! task keeping this node's entries, and the queries every node may ask).
//!
//! ```text
//!  flowline:<cluster>:presence:nodes          SET of node ids that have registered
//!  flowline:<cluster>:presence:alive:<node>   heartbeat key, PX = presence TTL
//!  flowline:<cluster>:presence:users:<node>   SET of user ids with a session there,
//!                                             PX = presence TTL, refreshed by the beat
//! ```
//!
//! Each node beats every third of the TTL and rewrites its whole user set after every
//! (re)connect. A user is online if some node's alive key exists and that node's set
//! holds them; a node that dies (or loses Redis) stops beating, and its users go offline
//! for the rest of the cluster within one TTL. A node shutting down cleanly removes its
//! entries at once.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use redis::aio::MultiplexedConnection;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use flowline_protocol::UserId;

use super::inbox::Inbox;
use super::link::{Backoff, Link, RESPONSE_TIMEOUT};

/// A change to this node's entries in the registry.
#[derive(Debug, Clone, Copy)]
pub(super) enum PresenceOp {
    Online(UserId),
    Offline(UserId),
}

/// Users written per SADD at most when rewriting a node's set.
const CHUNK: usize = 5000;

fn nodes_key(prefix: &str) -> String {
    format!("{prefix}presence:nodes")
}

fn alive_key(prefix: &str, node: &str) -> String {
    format!("{prefix}presence:alive:{node}")
}

fn users_key(prefix: &str, node: &str) -> String {
    format!("{prefix}presence:users:{node}")
}

fn ttl_ms(bus: &Link) -> u64 {
    u64::try_from(bus.presence_ttl.as_millis()).unwrap_or(u64::MAX)
}

/// Rewrite this node's entries from the hub's current users.
async fn resync(
    bus: &Link,
    inbox: &dyn Inbox,
    conn: &mut MultiplexedConnection,
) -> redis::RedisResult<()> {
    let users_key = users_key(&bus.prefix, &bus.node_id);
    let users = inbox.local_users();
    let mut pipe = redis::pipe();
    pipe.atomic();
    pipe.cmd("DEL").arg(&users_key).ignore();
    for chunk in users.chunks(CHUNK) {
        pipe.cmd("SADD").arg(&users_key).arg(chunk).ignore();
    }
    pipe.cmd("SADD")
        .arg(nodes_key(&bus.prefix))
        .arg(&bus.node_id)
        .ignore();
    add_beat(&mut pipe, bus);
    pipe.query_async::<()>(conn).await
}

fn add_beat(pipe: &mut redis::Pipeline, bus: &Link) {
    let ttl = ttl_ms(bus);
    pipe.cmd("SET")
        .arg(alive_key(&bus.prefix, &bus.node_id))
        .arg(&bus.origin)
        .arg("PX")
        .arg(ttl)
        .ignore();
    pipe.cmd("PEXPIRE")
        .arg(users_key(&bus.prefix, &bus.node_id))
        .arg(ttl)
        .ignore();
}

/// Keep this node's registry entries current: apply online/offline changes, beat, and
/// rewrite everything after a reconnect or a dropped change.
pub(super) async fn registry_loop(
    bus: Arc<Link>,
    inbox: Arc<dyn Inbox>,
    mut rx: mpsc::Receiver<PresenceOp>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new();
    let mut connected_before = false;
    let users_key = users_key(&bus.prefix, &bus.node_id);
    loop {
        let mut conn = match bus.connection(RESPONSE_TIMEOUT).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "presence registry cannot reach Redis");
                if !backoff.wait(&shutdown).await {
                    return;
                }
                continue;
            }
        };
        // Changes queued so far are part of the hub's current state: drop them, then
        // write that state.
        while rx.try_recv().is_ok() {}
        bus.presence_resync.store(false, Ordering::Release);
        if let Err(e) = resync(&bus, inbox.as_ref(), &mut conn).await {
            tracing::warn!(error = %e, "presence registry: rewrite failed");
            if !backoff.wait(&shutdown).await {
                return;
            }
            continue;
        }
        if connected_before {
            bus.metrics.bus_reconnects.increment(1);
        }
        connected_before = true;
        backoff.reset();
        let mut beat = tokio::time::interval(bus.presence_ttl / 3);
        beat.tick().await;
        let failed = loop {
            let mut pipe = redis::pipe();
            tokio::select! {
                () = shutdown.cancelled() => {
                    // Leave at once instead of waiting for the TTL.
                    let mut pipe = redis::pipe();
                    pipe.cmd("DEL").arg(&users_key).arg(alive_key(&bus.prefix, &bus.node_id)).ignore();
                    pipe.cmd("SREM").arg(nodes_key(&bus.prefix)).arg(&bus.node_id).ignore();
                    let _ = tokio::time::timeout(RESPONSE_TIMEOUT, pipe.query_async::<()>(&mut conn)).await;
                    return;
                }
                op = rx.recv() => {
                    let Some(op) = op else { return };
                    let mut next = Some(op);
                    while let Some(op) = next {
                        match op {
                            PresenceOp::Online(u) => pipe.cmd("SADD").arg(&users_key).arg(u).ignore(),
                            PresenceOp::Offline(u) => pipe.cmd("SREM").arg(&users_key).arg(u).ignore(),
                        };
                        next = rx.try_recv().ok();
                    }
                    // A set created by SADD has no TTL yet: renew it with the change.
                    add_beat(&mut pipe, &bus);
                }
                _ = beat.tick() => {
                    if bus.presence_resync.swap(false, Ordering::AcqRel) {
                        if let Err(e) = resync(&bus, inbox.as_ref(), &mut conn).await {
                            break e;
                        }
                        continue;
                    }
                    add_beat(&mut pipe, &bus);
                }
            }
            if let Err(e) = pipe.query_async::<()>(&mut conn).await {
                break e;
            }
        };
        tracing::warn!(error = %failed, "presence registry lost Redis; reconnecting");
        if !backoff.wait(&shutdown).await {
            return;
        }
    }
}

/// Live nodes (alive key present) and the ones among `users` each holds.
async fn live_sets(bus: &Link, users: &[UserId]) -> redis::RedisResult<Vec<(String, Vec<bool>)>> {
    let mut conn = bus.query.clone();
    let nodes: Vec<String> = redis::cmd("SMEMBERS")
        .arg(nodes_key(&bus.prefix))
        .query_async(&mut conn)
        .await?;
    if nodes.is_empty() || users.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for node in &nodes {
        pipe.cmd("EXISTS").arg(alive_key(&bus.prefix, node));
        pipe.cmd("SMISMEMBER")
            .arg(users_key(&bus.prefix, node))
            .arg(users);
    }
    let replies: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
    let mut out = Vec::new();
    for (node, pair) in nodes.into_iter().zip(replies.chunks(2)) {
        let [alive, members] = pair else { continue };
        let alive: bool = redis::from_redis_value_ref(alive)?;
        if alive {
            let members: Vec<bool> = redis::from_redis_value_ref(members)?;
            out.push((node, members));
        }
    }
    Ok(out)
}

/// Which of `users` are held by a live node (order kept, no duplicates added).
pub(super) async fn online_users(bus: &Link, users: &[UserId]) -> redis::RedisResult<Vec<UserId>> {
    let sets = live_sets(bus, users).await?;
    Ok(users
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            sets.iter()
                .any(|(_, m)| m.get(*i).copied().unwrap_or(false))
        })
        .map(|(_, u)| *u)
        .collect())
}

/// The live nodes holding `user`.
pub(super) async fn user_nodes(bus: &Link, user: UserId) -> redis::RedisResult<Vec<String>> {
    let sets = live_sets(bus, &[user]).await?;
    Ok(sets
        .into_iter()
        .filter(|(_, m)| m.first().copied().unwrap_or(false))
        .map(|(n, _)| n)
        .collect())
}
