//! The publisher task: sends queued envelopes to Redis in pipelined batches and
//! reconnects with backoff. `pubsub` drops what it cannot send (counted), numbers its
//! envelopes and publishes a beacon when idle (so receivers tell lost from late, see
//! `origins.rs`); `queue` keeps what it cannot send in a bounded outbox and appends it
//! after reconnecting.

use std::collections::VecDeque;
use std::sync::Arc;

use redis::aio::MultiplexedConnection;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::envelope::{Body, Envelope};
use super::link::{Backoff, Link, RESPONSE_TIMEOUT, Transport};
use super::origins::BEACON_EVERY;
use super::{pubsub, queue};
use crate::clock::now_ms;

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
    let numbered = link.transport == Transport::Pubsub;
    let metrics = link.metrics.clone();
    let mut outbox: VecDeque<Envelope> = VecDeque::new();
    let mut conn: Option<MultiplexedConnection> = None;
    let mut backoff = Backoff::new();
    let mut connected_before = false;
    // `pubsub`: the next envelope number (see `origins.rs`).
    let mut next_n: u64 = 1;
    let drop_all = |outbox: &mut VecDeque<Envelope>, next_n: &mut u64| {
        let lost = outbox.drain(..).filter(Envelope::is_message).count();
        metrics.bus_undelivered.increment(lost as u64);
        // Receivers must see a hole even if nothing dropped had a number yet.
        *next_n += 1;
    };
    loop {
        if outbox.is_empty() {
            tokio::select! {
                () = shutdown.cancelled() => return,
                env = rx.recv() => match env {
                    Some(env) => outbox.push_back(env),
                    None => return,
                },
                () = tokio::time::sleep(BEACON_EVERY), if numbered => {
                    outbox.push_back(Envelope {
                        origin: link.origin.clone(),
                        sent_ms: now_ms(),
                        n: 0,
                        body: Body::Beacon,
                    });
                }
            }
        }
        while let Ok(env) = rx.try_recv() {
            outbox.push_back(env);
        }
        if outbox.len() > OUTBOX_MAX {
            let excess = outbox.len() - OUTBOX_MAX;
            let lost = outbox.drain(..excess).filter(Envelope::is_message).count();
            metrics.bus_undelivered.increment(lost as u64);
            next_n += 1;
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
                        drop_all(&mut outbox, &mut next_n);
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
        let mut beacons = 0;
        for env in outbox.iter_mut().take(n) {
            if numbered {
                env.n = next_n;
                next_n += 1;
            }
            beacons += usize::from(matches!(env.body, Body::Beacon));
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
                metrics.bus_published.increment((n - beacons) as u64);
            }
            Err(e) => {
                tracing::warn!(error = %e, "bus publish failed; reconnecting");
                conn = None;
                if !durable {
                    drop_all(&mut outbox, &mut next_n);
                }
                if !backoff.wait(&shutdown).await {
                    return;
                }
            }
        }
    }
}
