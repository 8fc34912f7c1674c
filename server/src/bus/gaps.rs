//! The gap task: resolves per-channel seq gaps that stay open — `pubsub` skips them and
//! counts the missing seqs as undelivered, `queue` reads the missing messages from
//! storage (lossless).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use flowline_protocol::ws::ServerEvent;

use super::inbox::Inbox;
use super::link::{Link, Transport};
use crate::hub::Gap;
use crate::storage::Storage;

/// How long a seq gap may stay open before a `pubsub` node skips it: a successor
/// published by another node overtakes its predecessor whenever the two publishers' lags
/// differ, and skipping early turns that reordering into loss (with 250 ms, a loaded
/// 3-node run skipped 0.3–0.8 % of envelopes without any fault). A real loss stalls the
/// channel's later messages on that node for this long.
pub(super) const PUBSUB_GAP_WAIT: Duration = Duration::from_secs(1);
/// The same for `queue`, where resolving reads the messages from Postgres (lossless), so
/// waiting only saves reads.
pub(super) const QUEUE_GAP_WAIT: Duration = Duration::from_millis(500);

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
        for gap in inbox.overdue_gaps(wait) {
            match link.transport {
                Transport::Pubsub => {
                    let missed = inbox.skip_gaps(gap.channel);
                    link.metrics.bus_undelivered.increment(missed);
                }
                Transport::Queue => fill_gap(&link, inbox.as_ref(), storage.as_ref(), gap).await,
            }
        }
    }
}

/// Read a gap's messages from storage and sequence them; on a storage failure the gap
/// stays open and is retried on the next pass.
async fn fill_gap(link: &Link, inbox: &dyn Inbox, storage: &dyn Storage, gap: Gap) {
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
            tracing::warn!(error = %e, channel = gap.channel, "cannot fill a seq gap from storage yet");
        }
    }
}
