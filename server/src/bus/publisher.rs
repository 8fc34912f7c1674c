//! The publisher task: sends queued envelopes to Redis in pipelined batches and
//! reconnects with backoff. `pubsub` drops what it cannot send (counted); `queue` keeps
//! it in a bounded outbox and appends it after reconnecting.

use std::collections::VecDeque;
use std::sync::Arc;

use redis::aio::MultiplexedConnection;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::envelope::Envelope;
use super::link::{Backoff, Link, RESPONSE_TIMEOUT, Transport};
use super::{pubsub, queue};

/// Envelopes sent in one pipelined round trip.
const BATCH: usize = 512;
/// Envelopes the `queue` publisher keeps while Redis is unreachable (oldest dropped first;
/// receivers then fill those messages from Postgres).
const OUTBOX_MAX: usize = 200_000;

/// Send queued envelopes to Redis in pipelined batches; reconnect with backoff.
pub(super) async fn publish_loop(
    link: Arc<Link>,
    mut rx: mpsc::Receiver<Envelope>,
    shutdown: CancellationToken,
) {
    let durable = link.transport == Transport::Queue;
    let metrics = link.metrics.clone();
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
            None => match link.connection(RESPONSE_TIMEOUT).await {
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
            match link.transport {
                Transport::Pubsub => pubsub::add_publish(&mut pipe, &link.prefix, &payload),
                Transport::Queue => queue::add_append(&mut pipe, &link.prefix, env, &payload),
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
