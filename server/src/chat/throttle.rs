//! [`TypingThrottle`]: at most one `typing` forwarded per user per channel per interval.

use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

use flowline_protocol::{ChannelId, UserId};

/// Per-node throttle of `typing`: at most one forwarded per user per channel per interval.
/// Nothing is stored beyond the last forward time.
#[derive(Default)]
pub struct TypingThrottle {
    last: DashMap<(UserId, ChannelId), Instant>,
}

/// Entries kept before stale ones are swept.
const TYPING_SWEEP_AT: usize = 50_000;

impl TypingThrottle {
    /// Should this `typing` be forwarded now?
    pub fn allow(&self, user: UserId, channel: ChannelId, interval: Duration) -> bool {
        let now = Instant::now();
        let allowed = match self.last.entry((user, channel)) {
            dashmap::Entry::Occupied(mut e) => {
                if now.duration_since(*e.get()) >= interval {
                    e.insert(now);
                    true
                } else {
                    false
                }
            }
            dashmap::Entry::Vacant(e) => {
                e.insert(now);
                true
            }
        };
        if allowed && self.last.len() > TYPING_SWEEP_AT {
            self.last.retain(|_, t| now.duration_since(*t) < interval);
        }
        allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typing_is_throttled_per_user_and_channel() {
        let t = TypingThrottle::default();
        let i = Duration::from_secs(3);
        assert!(t.allow(1, 10, i));
        assert!(!t.allow(1, 10, i));
        assert!(t.allow(1, 11, i));
        assert!(t.allow(2, 10, i));
        assert!(t.allow(1, 10, Duration::ZERO));
    }
}
