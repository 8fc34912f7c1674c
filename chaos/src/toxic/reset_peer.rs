//! `reset_peer`: when data comes, reset the connection (TCP RST) `timeout` ms later.

use std::time::Duration;

use tokio::time::Instant;

use super::{Chunk, Toxic, Verdict};

/// Per-connection state of a reset_peer toxic.
#[derive(Debug)]
pub(crate) struct ResetPeer {
    timeout: Duration,
    /// Set by the first chunk: when the connection is reset.
    reset_at: Option<Instant>,
}

impl ResetPeer {
    pub(crate) fn new(timeout_ms: u64) -> Self {
        ResetPeer {
            timeout: super::capped_ms(timeout_ms),
            reset_at: None,
        }
    }
}

impl Toxic for ResetPeer {
    fn on_chunk(&mut self, _chunk: Chunk, now: Instant, _out: &mut Vec<Chunk>) -> Verdict {
        // As in Toxiproxy the data is dropped: a graceful write would contradict the reset.
        if self.timeout.is_zero() {
            return Verdict::Reset;
        }
        self.reset_at.get_or_insert(now + self.timeout);
        Verdict::Pass
    }

    fn deadline(&self) -> Option<(Instant, Verdict)> {
        self.reset_at.map(|at| (at, Verdict::Reset))
    }
}
