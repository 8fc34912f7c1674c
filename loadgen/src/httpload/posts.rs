//! What the posting HTTP personas (`bot`, `flood`) record, shared with their worker: each
//! post's outcome as a [`SendRecord`] (and, when the node stored it, an [`AckedMessage`])
//! exactly as a WebSocket user records its `send`s, so the checker holds bot messages to
//! the same rules; and their counters per second (rate-limited answers, operations by
//! kind), which the worker folds into its tick lines.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::wire::{AckedMessage, Counters, Outcome, SendRecord};

/// The run's clock as the worker's users see it, and what the posting personas recorded.
#[derive(Debug)]
pub struct PostLog {
    start: Instant,
    start_unix_us: u64,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Counters by tick number `t` (the second `[t-1, t)` since the start).
    seconds: BTreeMap<u64, Counters>,
    acked: Vec<AckedMessage>,
    sends: Vec<SendRecord>,
}

impl PostLog {
    /// A log on the run's clock: `start` is the worker's start instant, `start_unix_us`
    /// the same instant on the run's clock (Unix µs).
    pub fn new(start: Instant, start_unix_us: u64) -> Self {
        PostLog {
            start,
            start_unix_us,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `t` on the run's clock, Unix µs (what a nonce carries).
    pub fn unix_us(&self, t: Instant) -> u64 {
        self.start_unix_us + t.saturating_duration_since(self.start).as_micros() as u64
    }

    /// Milliseconds since the start (the checker's time axis).
    fn ms(&self, t: Instant) -> u32 {
        u32::try_from(t.saturating_duration_since(self.start).as_millis()).unwrap_or(u32::MAX)
    }

    /// Count something in the current second.
    pub(super) fn count(&self, f: impl FnOnce(&mut Counters)) {
        let t = Instant::now()
            .saturating_duration_since(self.start)
            .as_secs()
            + 1;
        f(self.lock().seconds.entry(t).or_default());
    }

    /// A post's outcome is known: `seq` and `id` as the node answered (0 unless `Ok`).
    pub(super) fn sent(&self, r: SendRecord) {
        let mut inner = self.lock();
        if r.outcome == Outcome::Ok {
            inner.acked.push((r.channel, r.seq, r.id, r.sender));
        }
        inner.sends.push(r);
    }

    /// A record of `sender`'s `n`-th post into `channel`, answered now.
    pub(super) fn record(
        &self,
        channel: flowline_protocol::ChannelId,
        sender: u32,
        n: u64,
        answer: Option<(flowline_protocol::Seq, flowline_protocol::MessageId)>,
        outcome: Outcome,
    ) {
        let (seq, id) = answer.unwrap_or((0, 0));
        self.sent(SendRecord {
            channel,
            seq,
            id,
            sender,
            n: u32::try_from(n).unwrap_or(u32::MAX),
            at_ms: self.ms(Instant::now()),
            outcome,
        });
    }

    /// Take the counters of every second up to and including tick `t` (a late answer of
    /// an earlier second lands in the next tick rather than being lost).
    pub fn take_until(&self, t: u64) -> Counters {
        let mut inner = self.lock();
        let later = inner.seconds.split_off(&(t + 1));
        let done = std::mem::replace(&mut inner.seconds, later);
        let mut c = Counters::default();
        for v in done.values() {
            c.add(v);
        }
        c
    }

    /// Take every counter left, whatever its second.
    pub fn take_rest(&self) -> Counters {
        self.take_until(u64::MAX - 1)
    }

    /// Take the recorded posts: (acked messages, every send with its outcome).
    pub fn take_history(&self) -> (Vec<AckedMessage>, Vec<SendRecord>) {
        let mut inner = self.lock();
        (
            std::mem::take(&mut inner.acked),
            std::mem::take(&mut inner.sends),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn seconds_are_taken_in_order_and_posts_split_by_outcome() {
        let start = Instant::now() - Duration::from_millis(2500);
        let log = PostLog::new(start, 1_000_000);
        log.count(|c| c.rate_limited += 2);
        assert_eq!(log.take_until(2).rate_limited, 0, "this is second 3");
        assert_eq!(log.take_until(3).rate_limited, 2);
        assert_eq!(log.take_until(3).rate_limited, 0, "taken once");
        log.count(|c| c.rate_limited += 1);
        assert_eq!(log.take_rest().rate_limited, 1);
        log.record(7, 3, 1, Some((5, 99)), Outcome::Ok);
        log.record(7, 3, 2, None, Outcome::Error);
        let (acked, sends) = log.take_history();
        assert_eq!(acked, vec![(7, 5, 99, 3)]);
        assert_eq!(sends.len(), 2);
        assert_eq!(
            (sends[1].seq, sends[1].n, sends[1].outcome),
            (0, 2, Outcome::Error)
        );
        assert!(sends[0].at_ms >= 2500);
        assert_eq!(log.unix_us(start + Duration::from_secs(1)), 2_000_000);
    }
}
