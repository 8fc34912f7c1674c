//! `slow_close`: delay the close of the stream by `delay` ms after the source closes.

use std::time::Duration;

use tokio::time::Instant;

use super::{Chunk, Toxic, Verdict};

/// A slow_close toxic (stateless).
#[derive(Debug)]
pub(crate) struct SlowClose {
    delay: Duration,
}

impl SlowClose {
    pub(crate) fn new(delay_ms: u64) -> Self {
        SlowClose {
            delay: super::capped_ms(delay_ms),
        }
    }
}

impl Toxic for SlowClose {
    fn on_chunk(&mut self, chunk: Chunk, _now: Instant, out: &mut Vec<Chunk>) -> Verdict {
        out.push(chunk);
        Verdict::Pass
    }

    fn on_eof(&self) -> Duration {
        self.delay
    }
}
