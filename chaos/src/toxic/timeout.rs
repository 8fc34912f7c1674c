//! `timeout`: drop all data; close the connection after `timeout` ms (0: hold it open).

use tokio::time::Instant;

use super::{Chunk, Toxic, Verdict};

/// Per-connection state of a timeout toxic.
#[derive(Debug)]
pub(crate) struct Timeout {
    /// When the connection is closed; `None` holds it forever (until the toxic goes).
    close_at: Option<Instant>,
}

impl Timeout {
    pub(crate) fn new(timeout_ms: u64, started: Instant) -> Self {
        Timeout {
            close_at: (timeout_ms > 0).then(|| started + super::capped_ms(timeout_ms)),
        }
    }
}

impl Toxic for Timeout {
    fn on_chunk(&mut self, _chunk: Chunk, _now: Instant, _out: &mut Vec<Chunk>) -> Verdict {
        Verdict::Pass
    }

    fn deadline(&self) -> Option<(Instant, Verdict)> {
        self.close_at.map(|at| (at, Verdict::Close))
    }
}
