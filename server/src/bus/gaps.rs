//! The gap task: resolves per-channel seq gaps that stay open. `queue` reads the missing
//! messages from storage (lossless); `pubsub` does the same when nothing was lost on the
//! bus (the message is only late), and skips the gap, counting the missing seqs as
//! undelivered, when it may have been lost there (see `origins.rs`) or storage fails.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use flowline_protocol::ws::ServerEvent;

use super::inbox::Inbox;
use super::link::{Link, Transport};
use super::origins::Verdict;
use crate::hub::Gap;
use crate::storage::Storage;

/// How long a seq gap may stay open before a `pubsub` node judges it: a successor
/// published by another node overtakes its predecessor whenever the two publishers' lags
/// differ, and judging early costs a storage read (or, with a recent miss, a skip) for a
/// message that was about to arrive. A real loss stalls the channel's later messages on
/// that node for at least this long.
pub(super) const PUBSUB_GAP_WAIT: Duration = Duration::from_secs(1);
/// The same for `queue`, where resolving reads the messages from Postgres (lossless), so
/// waiting only saves reads.
pub(super) const QUEUE_GAP_WAIT: Duration = Duration::from_millis(500);

/// What to do when a gap cannot be read from storage.
#[derive(Clone, Copy)]
enum OnFailure {
    /// Keep it open and retry on the next pass (`queue`: exactly once).
    Retry,
    /// Give up on it (`pubsub`: at most once).
    Skip,
}

/// Every 50 ms, resolve the gaps open longer than the transport's wait.
pub(super) async fn gap_loop(
    link: Arc<Link>,
    inbox: Arc<dyn Inbox>,
    storage: Arc<dyn Storage>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let wait = match link.transport {
            Transport::Pubsub => PUBSUB_GAP_WAIT,
            Transport::Queue => QUEUE_GAP_WAIT,
        };
        let gaps = inbox.overdue_gaps(wait);
        if gaps.is_empty() {
            continue;
        }
        let verdict = match link.transport {
            Transport::Pubsub => link.origins.verdict(Instant::now()),
            Transport::Queue => Verdict::Fill,
        };
        for gap in gaps {
            match (link.transport, verdict) {
                (_, Verdict::Wait) => {}
                (Transport::Pubsub, Verdict::Skip) => {
                    let missed = inbox.skip_gaps(gap.channel);
                    link.metrics.bus_undelivered.increment(missed);
                }
                (Transport::Pubsub, Verdict::Fill) => {
                    fill_gap(
                        &link,
                        inbox.as_ref(),
                        storage.as_ref(),
                        gap,
                        OnFailure::Skip,
                    )
                    .await;
                }
                (Transport::Queue, _) => {
                    fill_gap(
                        &link,
                        inbox.as_ref(),
                        storage.as_ref(),
                        gap,
                        OnFailure::Retry,
                    )
                    .await;
                }
            }
        }
    }
}

/// Read a gap's messages from storage and sequence them; on a storage failure the gap
/// stays open to be retried on the next pass, or is skipped (`on_failure`).
async fn fill_gap(
    link: &Link,
    inbox: &dyn Inbox,
    storage: &dyn Storage,
    gap: Gap,
    on_failure: OnFailure,
) {
    let missing = gap.first_held - gap.last - 1;
    let limit = u32::try_from(missing.clamp(1, 500)).unwrap_or(500);
    let started = std::time::Instant::now();
    let read = storage
        .messages(gap.channel, Some(gap.first_held), Some(gap.last), limit)
        .await;
    link.metrics
        .storage_messages_seconds
        .record(started.elapsed().as_secs_f64());
    match read {
        Ok(messages) if messages.is_empty() => {
            // Not in storage (cannot happen with gapless seqs, unless the channel is
            // gone): give up rather than stall the channel.
            let missed = inbox.skip_gaps(gap.channel);
            link.metrics.bus_undelivered.increment(missed);
        }
        Ok(messages) => {
            link.metrics.bus_gap_fills.increment(messages.len() as u64);
            for m in messages {
                let (channel, seq) = (m.channel, m.seq);
                match serde_json::to_string(&ServerEvent::Message(m)) {
                    Ok(text) => {
                        inbox.accept(channel, seq, &text.into());
                    }
                    Err(e) => tracing::error!(error = %e, "serializing a gap message"),
                }
            }
        }
        Err(e) => {
            link.metrics.storage_errors.increment(1);
            match on_failure {
                OnFailure::Retry => {
                    tracing::warn!(error = %e, channel = gap.channel, "cannot fill a seq gap from storage yet");
                }
                OnFailure::Skip => {
                    tracing::warn!(error = %e, channel = gap.channel, "cannot fill a seq gap from storage; skipping it");
                    let missed = inbox.skip_gaps(gap.channel);
                    link.metrics.bus_undelivered.increment(missed);
                }
            }
        }
    }
}
