//! Phase `pubsub`: envelopes go through Redis PUBLISH/SUBSCRIBE on one channel,
//! `flowline:<cluster>:bus`, which every node subscribes to (every node needs every
//! envelope, so sharding the channel would not spare anyone traffic). At most once:
//! what is published while a node's subscriber connection is down never reaches it
//! (reconnecting counts as a miss, see `origins.rs`).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::envelope::receive;
use super::inbox::Inbox;
use super::link::{Backoff, CONNECT_TIMEOUT, Link, RESPONSE_TIMEOUT};

/// How often the subscriber pings Redis, so a silently dead link is noticed.
const PING_EVERY: Duration = Duration::from_secs(1);

fn channel(prefix: &str) -> String {
    format!("{prefix}bus")
}

/// Add one PUBLISH to a batch.
pub(super) fn add_publish(pipe: &mut redis::Pipeline, prefix: &str, payload: &str) {
    pipe.cmd("PUBLISH")
        .arg(channel(prefix))
        .arg(payload)
        .ignore();
}

/// Subscribe and hand every envelope to the node; on a lost connection, resubscribe
/// with backoff (counting the reconnect).
pub(super) async fn receive_loop(
    link: Arc<Link>,
    inbox: Arc<dyn Inbox>,
    shutdown: CancellationToken,
) {
    let name = channel(&link.prefix);
    let mut backoff = Backoff::new();
    let mut connected_before = false;
    loop {
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
            let mut ps = link.client.get_async_pubsub().await?;
            ps.subscribe(&name).await?;
            redis::RedisResult::Ok(ps)
        })
        .await;
        let ps = match connected {
            Ok(Ok(ps)) => ps,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "bus subscriber cannot reach Redis");
                if !backoff.wait(&shutdown).await {
                    return;
                }
                continue;
            }
            Err(_) => {
                tracing::debug!("bus subscriber: connecting to Redis timed out");
                if !backoff.wait(&shutdown).await {
                    return;
                }
                continue;
            }
        };
        if connected_before {
            // Whatever was published while it was down never reaches this node.
            link.origins.missed(std::time::Instant::now());
            link.metrics.bus_reconnects.increment(1);
            tracing::info!("bus subscriber reconnected to Redis");
        }
        connected_before = true;
        backoff.reset();
        let (mut sink, mut stream) = ps.split();
        let mut ping = tokio::time::interval(PING_EVERY);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                msg = stream.next() => match msg {
                    Some(msg) => receive(&link, inbox.as_ref(), msg.get_payload_bytes()),
                    None => {
                        tracing::warn!("bus subscriber lost Redis; resubscribing");
                        break;
                    }
                },
                _ = ping.tick() => {
                    let pong = tokio::time::timeout(RESPONSE_TIMEOUT, sink.ping::<redis::Value>()).await;
                    if !matches!(pong, Ok(Ok(_))) {
                        tracing::warn!("bus subscriber: Redis stopped answering; resubscribing");
                        break;
                    }
                }
            }
        }
    }
}
