//! `frame_delay`: the selected server → client WebSocket messages are held `delay` ms
//! from their arrival. What follows waits behind them (one TCP stream keeps its order; a
//! late message that others overtake is `frame_reorder`).

use std::time::Duration;

use tokio::time::Instant;

use super::select::Selector;
use super::{Chunk, Toxic, Verdict, picked};

/// Per-connection state of a frame_delay toxic.
#[derive(Debug)]
pub(crate) struct FrameDelay {
    sel: Selector,
    delay: Duration,
    /// Due time of the latest chunk: later ones are never due before it.
    last_due: Option<Instant>,
}

impl FrameDelay {
    pub(crate) fn new(sel: Selector, delay_ms: u64) -> Self {
        FrameDelay {
            sel,
            delay: super::capped_ms(delay_ms),
            last_due: None,
        }
    }
}

impl Toxic for FrameDelay {
    fn on_chunk(&mut self, mut chunk: Chunk, _now: Instant, out: &mut Vec<Chunk>) -> Verdict {
        if picked(&mut self.sel, &chunk) {
            chunk.due += self.delay;
        }
        if let Some(last) = self.last_due {
            chunk.due = chunk.due.max(last);
        }
        self.last_due = Some(chunk.due);
        out.push(chunk);
        Verdict::Pass
    }
}
