//! What travels from the hub (and a session's own reader) to a session's writer task:
//! the items of its bounded outbound queue ([`Outbound`]), the handle the hub keeps per
//! session ([`Subscriber`]), and the state both halves of a session share
//! ([`SessionShared`]). A full queue makes the session a slow consumer ([`offer`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::{Notify, mpsc};

use flowline_protocol::ws::close;
use flowline_protocol::{ChannelId, Seq};

use crate::metrics::Metrics;

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
    /// Hold live messages of these channels until their `Replay` arrives, and close the
    /// gate: nothing is written until `Open` (or a `Replay`) arrives.
    Hold(Box<[ChannelId]>),
    /// Open the gate: write what queued up behind `Hold` (the announcement first), in
    /// order. Queued once the hub delivers the held channels to this session, so a client
    /// that reads `ready`/`subscribed` is already subscribed.
    Open,
    /// For each channel: write its stored messages, then the held live ones with seq above
    /// both `floor` and the replayed ones, then continue live. Opens the gate first.
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
    /// Signalled by the writer whenever it took items off the queue (the reader waits on
    /// it while the session's own answers fill their share of the queue).
    pub drained: Notify,
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
            drained: Notify::new(),
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
