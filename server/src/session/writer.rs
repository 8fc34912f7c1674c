//! A session's writer task: owns the socket's sending half, applies the queued
//! [`Outbound`] items in order (holding live messages of channels being resumed until
//! their replay, dropping the overlap), batches frames per flush, pings on the
//! heartbeat, and sends the close frame.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes};
use futures_util::{Sink, SinkExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use flowline_protocol::ws::close;
use flowline_protocol::{ChannelId, Seq};

use crate::clock::now_ms;
use crate::hub::{Outbound, Replay, SessionShared};
use crate::metrics::Metrics;

/// Frames written per flush at most (batching amortises syscalls under fan-out).
const WRITE_BATCH: usize = 64;

#[derive(Default)]
struct ChannelState {
    /// Highest seq written to the client (or known to it).
    delivered: Seq,
    /// Live messages held while a replay is pending.
    held: Option<Vec<(Seq, Utf8Bytes)>>,
}

/// What the writer remembers between queue items.
#[derive(Default)]
struct WriterState {
    chans: HashMap<ChannelId, ChannelState>,
    /// Frames waiting behind a closed gate (`Hold` until `Open`/`Replay`), in order.
    gated: Option<Vec<Utf8Bytes>>,
}

impl WriterState {
    /// Move the frames waiting behind the gate to `out` and open it.
    fn open(&mut self, out: &mut Vec<Utf8Bytes>) {
        if let Some(gated) = self.gated.take() {
            out.extend(gated);
        }
    }
}

/// Apply one queued item; push frames to write onto `out` (or behind the gate while it
/// is closed). Returns false if a hold buffer or the gate overflowed (the client is too
/// slow to be resumed).
fn apply(item: Outbound, st: &mut WriterState, out: &mut Vec<Utf8Bytes>, max_held: usize) -> bool {
    let chans = &mut st.chans;
    let target = st.gated.as_mut().unwrap_or(&mut *out);
    match item {
        Outbound::Direct(t) => target.push(*t),
        Outbound::Live(d) => {
            let (channel, seq, text) = (d.channel, d.seq, d.text.clone());
            let ch = chans.entry(channel).or_default();
            if let Some(held) = &mut ch.held {
                if held.len() >= max_held {
                    return false;
                }
                held.push((seq, text));
            } else if seq > ch.delivered {
                ch.delivered = seq;
                target.push(text);
            }
        }
        Outbound::Hold(channels) => {
            for &channel in channels.iter() {
                chans.entry(channel).or_default().held = Some(Vec::new());
            }
            st.gated.get_or_insert_with(Vec::new);
        }
        Outbound::Open => st.open(out),
        Outbound::Replay(replays) => {
            st.open(out);
            for Replay {
                channel,
                floor,
                frames,
            } in replays.into_vec()
            {
                let ch = st.chans.entry(channel).or_default();
                ch.delivered = floor;
                let held = ch.held.take().unwrap_or_default();
                for (seq, text) in frames.into_iter().chain(held) {
                    if seq > ch.delivered {
                        ch.delivered = seq;
                        out.push(text);
                    }
                }
            }
        }
    }
    // A closed gate holds at most `max_held` frames; an item that does not add one
    // (`Open`, `Replay`, a held live message) is never refused for it.
    st.gated
        .as_ref()
        .is_none_or(|gated| gated.len() <= max_held)
}

/// A session's outbound queue as its writer sees it: keeps `flowline_outbound_queued`
/// exact (every item taken, or left behind when the session ends, is subtracted).
struct Queued {
    rx: mpsc::Receiver<Outbound>,
    metrics: Arc<Metrics>,
}

impl Queued {
    async fn recv(&mut self) -> Option<Outbound> {
        let item = self.rx.recv().await;
        if item.is_some() {
            self.metrics.outbound_queued.decrement(1.0);
        }
        item
    }

    fn try_recv(&mut self) -> Result<Outbound, mpsc::error::TryRecvError> {
        let item = self.rx.try_recv();
        if item.is_ok() {
            self.metrics.outbound_queued.decrement(1.0);
        }
        item
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        // Closed first, so no item slips in after the count.
        self.rx.close();
        let mut left = 0u32;
        while self.rx.try_recv().is_ok() {
            left += 1;
        }
        self.metrics.outbound_queued.decrement(f64::from(left));
    }
}

/// What the writer needs of its node.
pub(super) struct WriterConfig {
    pub(super) metrics: Arc<Metrics>,
    pub(super) heartbeat: Duration,
    pub(super) write_timeout: Duration,
    /// Live messages held per channel during a resume, at most (the queue's capacity).
    pub(super) max_held: usize,
    pub(super) shutdown: CancellationToken,
}

/// Write queued items to the socket until the session is kicked; then write what the
/// session queued before its own close, and the close frame.
pub(super) async fn write_loop<Si>(
    cfg: WriterConfig,
    mut sink: Si,
    rx: mpsc::Receiver<Outbound>,
    shared: Arc<SessionShared>,
) where
    Si: Sink<WsMessage> + Unpin,
{
    let metrics = cfg.metrics;
    let mut rx = Queued {
        rx,
        metrics: metrics.clone(),
    };
    let heartbeat = cfg.heartbeat;
    let write_timeout = cfg.write_timeout;
    let max_held = cfg.max_held;
    let mut st = WriterState::default();
    let mut out: Vec<Utf8Bytes> = Vec::new();
    // Both futures are created once per session, not per frame (each creation registers
    // a waiter under a lock; the shutdown one is shared by every session).
    let kicked = shared.kicked();
    tokio::pin!(kicked);
    let shutdown = cfg.shutdown.cancelled();
    tokio::pin!(shutdown);
    let mut shutting_down = false;
    // One timer for both jobs: a ping every heartbeat, and dropping a peer silent for
    // 2 × heartbeat at that moment (checking only at ping ticks made it up to 3 ×).
    let mut next_ping = Instant::now() + heartbeat;
    let timer = tokio::time::sleep_until(next_ping);
    tokio::pin!(timer);
    let code = loop {
        tokio::select! {
            biased;
            code = &mut kicked => break code,
            () = &mut shutdown, if !shutting_down => {
                shutting_down = true;
                shared.kick(close::GOING_AWAY);
            }
            () = &mut timer => {
                let now = Instant::now();
                let silent = Duration::from_millis(
                    now_ms().saturating_sub(shared.last_seen_ms.load(Ordering::Relaxed)),
                );
                if silent >= heartbeat * 2 {
                    if shared.kick(close::HEARTBEAT_TIMEOUT) {
                        metrics.heartbeat_timeouts.increment(1);
                    }
                    timer.as_mut().reset(now + heartbeat);
                    continue;
                }
                if now >= next_ping {
                    next_ping = now + heartbeat;
                    if !matches!(
                        tokio::time::timeout(write_timeout, sink.send(WsMessage::Ping(Default::default()))).await,
                        Ok(Ok(()))
                    ) {
                        shared.kick(0);
                    }
                }
                // Wake for the next ping, or exactly when 2 × heartbeat of silence is over.
                timer.as_mut().reset(next_ping.min(now + (heartbeat * 2 - silent)));
            }
            item = rx.recv() => {
                let Some(item) = item else { break 0 };
                let mut ok = apply(item, &mut st, &mut out, max_held);
                while ok && out.len() < WRITE_BATCH {
                    match rx.try_recv() {
                        Ok(item) => ok = apply(item, &mut st, &mut out, max_held),
                        Err(_) => break,
                    }
                }
                shared.drained.notify_one();
                if !ok {
                    if shared.kick(close::SLOW_CONSUMER) {
                        metrics.slow_consumer_disconnects.increment(1);
                    }
                    continue;
                }
                if !out.is_empty() && !write_all(&mut sink, &mut out, write_timeout).await {
                    shared.kick(0);
                }
            }
        }
    };
    // Frames queued before a close the session decided itself (e.g. the `error` event
    // explaining it) still go out; a slow consumer's backlog does not.
    if code != 0 && code != close::SLOW_CONSUMER {
        while let Ok(item) = rx.try_recv() {
            apply(item, &mut st, &mut out, max_held);
        }
        if !out.is_empty() {
            write_all(&mut sink, &mut out, write_timeout).await;
        }
    }
    if code == 0 {
        let _ = tokio::time::timeout(write_timeout, sink.close()).await;
    } else {
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from_static(close_reason(code)),
        };
        let _ = tokio::time::timeout(write_timeout, async {
            let _ = sink.send(WsMessage::Close(Some(frame))).await;
            let _ = sink.close().await;
        })
        .await;
    }
    shared.kick(0);
}

async fn write_all<Si>(sink: &mut Si, out: &mut Vec<Utf8Bytes>, limit: Duration) -> bool
where
    Si: Sink<WsMessage> + Unpin,
{
    let write = async {
        for text in out.drain(..) {
            if sink.feed(WsMessage::Text(text)).await.is_err() {
                return false;
            }
        }
        sink.flush().await.is_ok()
    };
    matches!(tokio::time::timeout(limit, write).await, Ok(true))
}

fn close_reason(code: u16) -> &'static str {
    match code {
        close::GOING_AWAY => "node shutting down",
        close::WS_PROTOCOL_VIOLATION => "websocket protocol violation",
        close::INVALID_PAYLOAD => "text frame is not UTF-8",
        close::MESSAGE_TOO_BIG => "frame too large",
        close::AUTH_TIMEOUT => "no hello within the deadline",
        close::AUTH_FAILED => "invalid token",
        close::SLOW_CONSUMER => "slow consumer",
        close::HEARTBEAT_TIMEOUT => "heartbeat timeout",
        close::PROTOCOL_ERROR => "protocol error",
        close::UNSUPPORTED_VERSION => "unsupported protocol version",
        close::LOGGED_OUT => "logged out",
        close::TRY_AGAIN => "storage unavailable; reconnect and resume",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(channel: ChannelId, seq: Seq, text: Utf8Bytes) -> Outbound {
        Outbound::Live(Arc::new(crate::hub::Delivery { channel, seq, text }))
    }

    #[test]
    fn writer_resume_drops_overlap_and_keeps_order() {
        let t = |s: &str| Utf8Bytes::from(s);
        let mut st = WriterState::default();
        let mut out = Vec::new();
        assert!(apply(Outbound::Hold(vec![1].into()), &mut st, &mut out, 10));
        // live 5 and 6 arrive while storage is read
        for s in [5, 6] {
            apply(live(1, s, t(&s.to_string())), &mut st, &mut out, 10);
        }
        assert!(out.is_empty());
        let frames = vec![(4, t("4")), (5, t("5"))];
        apply(
            Outbound::Replay(
                vec![Replay {
                    channel: 1,
                    floor: 3,
                    frames,
                }]
                .into(),
            ),
            &mut st,
            &mut out,
            10,
        );
        apply(live(1, 6, t("6")), &mut st, &mut out, 10);
        apply(live(1, 7, t("7")), &mut st, &mut out, 10);
        let got: Vec<&str> = out.iter().map(|u| u.as_str()).collect();
        assert_eq!(got, ["4", "5", "6", "7"]);
        assert!(apply(Outbound::Hold(vec![2].into()), &mut st, &mut out, 1));
        assert!(apply(live(2, 1, t("x")), &mut st, &mut out, 1));
        assert!(!apply(live(2, 2, t("y")), &mut st, &mut out, 1));
    }

    #[test]
    fn nothing_is_written_behind_a_closed_gate_and_order_is_kept() {
        let t = |s: &str| Utf8Bytes::from(s);
        let direct = |s: &str| Outbound::Direct(Box::new(t(s)));
        let mut st = WriterState::default();
        let mut out = Vec::new();
        // Channel 1 is live already; channel 2 is being attached.
        assert!(apply(live(1, 1, t("m1")), &mut st, &mut out, 10));
        assert!(apply(Outbound::Hold(vec![2].into()), &mut st, &mut out, 10));
        for item in [
            direct("ready"),
            live(1, 2, t("m2")),
            live(2, 8, t("c8")),
            direct("typing"),
        ] {
            assert!(apply(item, &mut st, &mut out, 10));
        }
        assert_eq!(
            out,
            [t("m1")],
            "the announcement waits for the subscription"
        );
        assert!(apply(Outbound::Open, &mut st, &mut out, 10));
        assert_eq!(out, [t("m1"), t("ready"), t("m2"), t("typing")]);
        // Channel 2's live message still waits for its replay.
        let replay = vec![Replay {
            channel: 2,
            floor: 6,
            frames: vec![(7, t("c7")), (8, t("c8"))],
        }];
        assert!(apply(
            Outbound::Replay(replay.into()),
            &mut st,
            &mut out,
            10
        ));
        assert_eq!(out[4..], [t("c7"), t("c8")]);
        // A gate holds at most max_held frames: a client too slow to take them is cut off.
        out.clear();
        assert!(apply(Outbound::Hold(vec![3].into()), &mut st, &mut out, 2));
        assert!(apply(direct("a"), &mut st, &mut out, 2));
        assert!(apply(direct("b"), &mut st, &mut out, 2));
        assert!(!apply(direct("c"), &mut st, &mut out, 2));
        // A full gate still opens.
        let mut st = WriterState::default();
        out.clear();
        assert!(apply(Outbound::Hold(vec![3].into()), &mut st, &mut out, 2));
        assert!(apply(direct("a"), &mut st, &mut out, 2));
        assert!(apply(direct("b"), &mut st, &mut out, 2));
        assert!(apply(Outbound::Open, &mut st, &mut out, 2));
        assert_eq!(out, [t("a"), t("b")]);
        out.clear();
        // A replay opens a gate still closed too (attach always queues `Open` first; the
        // writer does not rely on it).
        let mut st = WriterState::default();
        assert!(apply(Outbound::Hold(vec![4].into()), &mut st, &mut out, 10));
        assert!(apply(direct("error"), &mut st, &mut out, 10));
        let empty = vec![Replay {
            channel: 4,
            floor: 0,
            frames: Vec::new(),
        }];
        assert!(apply(Outbound::Replay(empty.into()), &mut st, &mut out, 10));
        assert_eq!(out, [t("error")]);
    }
}
