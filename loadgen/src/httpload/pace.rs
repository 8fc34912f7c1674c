//! The flooder's clock: how many posts are due at a moment, so that a user keeps its
//! `requests_per_minute` however long each request takes (it sends what is due all at
//! once instead of one request per round trip).

use std::time::Instant;

/// Posts due at a fixed rate since the first one (which is due at the start).
#[derive(Debug, Clone)]
pub(super) struct Pace {
    start: Instant,
    per_s: f64,
    /// Posts accounted for: sent, or dropped as a backlog over the cap.
    done: u64,
}

impl Pace {
    /// A clock starting at `start`, `per_s` posts a second.
    pub(super) fn new(start: Instant, per_s: f64) -> Self {
        Pace {
            start,
            per_s: per_s.max(0.0),
            done: 0,
        }
    }

    /// How many posts to send at `now`: those due since the start and not sent yet, at
    /// most `cap`. A backlog over `cap` (a node slower than `cap` posts a round trip) is
    /// dropped rather than sent in a rush later.
    pub(super) fn take(&mut self, now: Instant, cap: u64) -> u64 {
        let elapsed = now.saturating_duration_since(self.start).as_secs_f64();
        let owed = (self.per_s * elapsed).floor() as u64 + 1;
        let due = owed.saturating_sub(self.done);
        self.done = self.done.max(owed);
        due.min(cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn what_is_due_is_sent_once_and_a_backlog_over_the_cap_is_dropped() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut p = Pace::new(t0, 50.0);
        assert_eq!(p.take(t0, 32), 1, "the first post is due at once");
        assert_eq!(p.take(at(10), 32), 0, "the next one is due at 20 ms");
        // A round trip of 150 ms: 7 more were due meanwhile (at 20, 40, …, 140 ms).
        assert_eq!(p.take(at(150), 32), 7);
        assert_eq!(p.take(at(150), 32), 0, "taken once");
        // Stalled for 10 s: 500 due, 32 sent, the rest dropped.
        assert_eq!(p.take(at(10_150), 32), 32);
        assert_eq!(p.take(at(10_170), 32), 1);
        // A clock before the start owes the first post only.
        let mut early = Pace::new(at(100), 50.0);
        assert_eq!(early.take(t0, 32), 1);
        assert_eq!(early.take(t0, 32), 0);
        // Rate 0: only the first post.
        let mut none = Pace::new(t0, 0.0);
        assert_eq!((none.take(t0, 8), none.take(at(60_000), 8)), (1, 0));
    }
}
