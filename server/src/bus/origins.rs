//! [`Origins`]: what a `pubsub` node knows of the other nodes' envelope streams, so its
//! gap task can tell a *late* message from a *lost* one.
//!
//! Every `pubsub` publisher numbers its envelopes (`n`, 1, 2, … per incarnation; a number
//! whose envelope it dropped is never reused) and publishes a beacon when it has had
//! nothing to publish for [`BEACON_EVERY`]. Redis delivers one publisher's envelopes in
//! order, so a receiver that sees an origin's numbers jump knows it lost envelopes of that
//! origin. A *miss* is any of:
//!
//! * a hole in an origin's numbers (its publisher dropped envelopes while cut from Redis,
//!   or this node's subscriber was cut while they passed);
//! * this node's subscriber reconnecting;
//! * an origin silent for longer than [`SILENCE_LIMIT`] (cut from Redis, or dead).
//!
//! A seq gap that is overdue is then judged ([`Origins::verdict`]): skipped if a miss
//! happened within [`MISS_WINDOW`] (the missing message may be one of the lost envelopes:
//! at most once); left open while some origin has been quiet for [`QUIET`] (it may be cut:
//! a miss will tell, or it speaks again without a hole); otherwise every envelope published
//! so far has reached this node, so the missing message is only late (its publisher's
//! append returned after its successor's was published): it is filled from Postgres.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A publisher idle this long publishes a beacon (so receivers know it is alive).
pub(super) const BEACON_EVERY: Duration = Duration::from_millis(200);
/// An origin not heard from this long may be cut: overdue gaps wait for a verdict.
pub(super) const QUIET: Duration = Duration::from_millis(750);
/// An origin not heard from this long counts as a miss (cut or dead) and is forgotten.
pub(super) const SILENCE_LIMIT: Duration = Duration::from_secs(5);
/// An overdue gap is skipped if a miss happened within this long.
pub(super) const MISS_WINDOW: Duration = Duration::from_secs(10);

/// What to do with an overdue seq gap (`pubsub`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// A miss is recent: the message may be lost on the bus; skip it (at most once).
    Skip,
    /// An origin is quiet: decide later.
    Wait,
    /// Nothing was lost on the bus: the message is late; read it from storage.
    Fill,
}

#[derive(Debug)]
struct Heard {
    /// Highest envelope number received.
    n: u64,
    /// When anything of it last arrived.
    at: Instant,
}

#[derive(Debug, Default)]
struct State {
    origins: HashMap<String, Heard>,
    last_miss: Option<Instant>,
}

/// Per-origin envelope numbers and liveness, as seen by this node's subscriber.
#[derive(Debug, Default)]
pub(super) struct Origins {
    state: parking_lot::Mutex<State>,
}

impl Origins {
    /// An envelope numbered `n` of `origin` arrived (`n == 0`: unnumbered, liveness only).
    /// Returns whether it revealed a hole (a miss).
    pub(super) fn heard(&self, origin: &str, n: u64, now: Instant) -> bool {
        let mut st = self.state.lock();
        let hole = match st.origins.get_mut(origin) {
            Some(h) => {
                h.at = now;
                let hole = n > h.n + 1 && h.n > 0;
                h.n = h.n.max(n);
                hole
            }
            None => {
                st.origins.insert(origin.to_owned(), Heard { n, at: now });
                false
            }
        };
        if hole {
            st.last_miss = Some(now);
        }
        hole
    }

    /// This node's subscriber (re)connected after being down: whatever was published
    /// meanwhile never reached it.
    pub(super) fn missed(&self, now: Instant) {
        self.state.lock().last_miss = Some(now);
    }

    /// The verdict on a gap that is overdue now. Forgets origins silent for longer than
    /// [`SILENCE_LIMIT`], counting each as a miss.
    pub(super) fn verdict(&self, now: Instant) -> Verdict {
        let mut st = self.state.lock();
        let before = st.origins.len();
        st.origins
            .retain(|_, h| now.saturating_duration_since(h.at) <= SILENCE_LIMIT);
        if st.origins.len() < before {
            st.last_miss = Some(now);
        }
        if st
            .last_miss
            .is_some_and(|t| now.saturating_duration_since(t) <= MISS_WINDOW)
        {
            return Verdict::Skip;
        }
        if st
            .origins
            .values()
            .any(|h| now.saturating_duration_since(h.at) > QUIET)
        {
            return Verdict::Wait;
        }
        Verdict::Fill
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_is_filled_lost_is_skipped_quiet_waits() {
        let o = Origins::default();
        let t0 = Instant::now();
        assert_eq!(o.verdict(t0), Verdict::Fill, "nobody known: nothing lost");
        assert!(!o.heard("a#1", 1, t0));
        assert!(
            !o.heard("b#1", 7, t0),
            "first sight of an origin is no hole"
        );
        assert!(!o.heard("a#1", 2, t0));
        assert!(!o.heard("a#1", 2, t0), "a repeat is no hole");
        assert_eq!(o.verdict(t0 + Duration::from_millis(500)), Verdict::Fill);
        // b quiet, a still speaking: wait.
        let t1 = t0 + QUIET + Duration::from_millis(1);
        assert!(!o.heard("a#1", 3, t1));
        assert_eq!(o.verdict(t1), Verdict::Wait);
        // b speaks again without a hole: late, not lost.
        assert!(!o.heard("b#1", 8, t1));
        assert_eq!(o.verdict(t1), Verdict::Fill);
        // b's numbers jump: b dropped envelopes, skip for the window.
        assert!(o.heard("b#1", 10, t1));
        assert_eq!(o.verdict(t1), Verdict::Skip);
        let tw = t1 + MISS_WINDOW;
        assert!(!o.heard("a#1", 4, tw));
        assert!(!o.heard("b#1", 11, tw));
        assert_eq!(o.verdict(tw), Verdict::Skip, "still within the window");
        let t2 = tw + Duration::from_millis(1);
        assert!(!o.heard("a#1", 5, t2));
        assert!(!o.heard("b#1", 12, t2));
        assert_eq!(o.verdict(t2), Verdict::Fill);
        // This node's subscriber reconnected.
        o.missed(t2);
        assert_eq!(o.verdict(t2), Verdict::Skip);
    }

    #[test]
    fn a_silent_origin_becomes_a_miss() {
        let o = Origins::default();
        let t0 = Instant::now();
        o.heard("a#1", 1, t0);
        o.heard("b#1", 1, t0);
        let t1 = t0 + SILENCE_LIMIT;
        o.heard("a#1", 2, t1);
        assert_eq!(o.verdict(t1), Verdict::Wait, "b quiet, not yet silent");
        let t2 = t1 + Duration::from_millis(1);
        o.heard("a#1", 3, t2);
        assert_eq!(o.verdict(t2), Verdict::Skip, "b silent too long: a miss");
        let t3 = t2 + MISS_WINDOW + Duration::from_millis(1);
        o.heard("a#1", 4, t3);
        assert_eq!(o.verdict(t3), Verdict::Fill, "b forgotten; a speaks");
    }
}
