//! Phase `queue`: envelopes go into Redis Streams, `flowline:<cluster>:q:<shard>` with
//! 16 shards (a channel always maps to the same shard, so one channel's envelopes stay
//! in one stream, in append order), each trimmed with `MAXLEN ~ 100000`.
//!
//! Every node reads every shard with one blocking `XREAD`, from the last entry id it has
//! read (starting at the streams' ends when it starts: what happened before is in
//! Postgres, where a client's resume reads it). No consumer group: every node needs
//! every entry, and the position is the node's own. After a lost connection the reader
//! reconnects and continues from its ids, so it catches up with nothing lost and nothing
//! read twice.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::streams::{StreamRangeReply, StreamReadReply};
use tokio_util::sync::CancellationToken;

use super::envelope::{Envelope, receive};
use super::inbox::Inbox;
use super::link::{Backoff, Link, RESPONSE_TIMEOUT};

/// Number of stream shards.
pub(super) const SHARDS: i64 = 16;
/// Approximate length each shard is trimmed to.
const MAXLEN: usize = 100_000;
/// How long one XREAD blocks waiting for entries.
const BLOCK_MS: u64 = 1000;
/// Entries read per shard per XREAD at most.
const READ_COUNT: usize = 1000;

fn shard_key(prefix: &str, shard: i64) -> String {
    format!("{prefix}q:{shard}")
}

fn keys(prefix: &str) -> Vec<String> {
    (0..SHARDS).map(|s| shard_key(prefix, s)).collect()
}

/// Add one XADD to a batch: channel envelopes go to the channel's shard, user-addressed
/// events to shard 0.
pub(super) fn add_append(pipe: &mut redis::Pipeline, prefix: &str, env: &Envelope, payload: &str) {
    let shard = env.channel().map_or(0, |c| c.rem_euclid(SHARDS));
    pipe.cmd("XADD")
        .arg(shard_key(prefix, shard))
        .arg("MAXLEN")
        .arg("~")
        .arg(MAXLEN)
        .arg("*")
        .arg("e")
        .arg(payload)
        .ignore();
}

/// The id of the last entry of every shard ("0-0" for a shard that does not exist yet).
pub(super) async fn tail_ids(
    conn: &mut ConnectionManager,
    prefix: &str,
) -> redis::RedisResult<Vec<String>> {
    let mut pipe = redis::pipe();
    for key in keys(prefix) {
        pipe.cmd("XREVRANGE")
            .arg(key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1);
    }
    let replies: Vec<StreamRangeReply> = pipe.query_async(conn).await?;
    Ok(replies
        .into_iter()
        .map(|r| {
            r.ids
                .into_iter()
                .next()
                .map_or_else(|| "0-0".to_owned(), |e| e.id)
        })
        .collect())
}

/// Read every shard from the node's positions and hand entries to the node; reconnect
/// with backoff and continue from the same positions.
pub(super) async fn receive_loop(
    link: Arc<Link>,
    inbox: Arc<dyn Inbox>,
    shutdown: CancellationToken,
) {
    let keys = keys(&link.prefix);
    let mut ids = link.start_ids.clone();
    let mut backoff = Backoff::new();
    let mut connected_before = false;
    'connect: loop {
        let mut conn = match link
            .connection(Duration::from_millis(BLOCK_MS) + RESPONSE_TIMEOUT)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "bus reader cannot reach Redis");
                if !backoff.wait(&shutdown).await {
                    return;
                }
                continue;
            }
        };
        if connected_before {
            link.metrics.bus_reconnects.increment(1);
            tracing::info!("bus reader reconnected to Redis; catching up");
        }
        connected_before = true;
        backoff.reset();
        loop {
            let mut xread = redis::cmd("XREAD");
            xread
                .arg("COUNT")
                .arg(READ_COUNT)
                .arg("BLOCK")
                .arg(BLOCK_MS)
                .arg("STREAMS")
                .arg(&keys)
                .arg(&ids);
            let read = xread.query_async::<Option<StreamReadReply>>(&mut conn);
            let reply = tokio::select! {
                () = shutdown.cancelled() => return,
                r = read => r,
            };
            let reply = match reply {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "bus reader lost Redis; will resume from its position");
                    if !backoff.wait(&shutdown).await {
                        return;
                    }
                    continue 'connect;
                }
            };
            for stream in reply.map(|r| r.keys).unwrap_or_default() {
                let Some(i) = keys.iter().position(|k| *k == stream.key) else {
                    continue;
                };
                for entry in stream.ids {
                    if let Some(redis::Value::BulkString(payload)) = entry.map.get("e") {
                        receive(&link, inbox.as_ref(), payload);
                    }
                    ids[i] = entry.id;
                }
            }
        }
    }
}
