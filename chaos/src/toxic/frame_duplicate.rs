//! `frame_duplicate`: the selected server → client WebSocket messages are delivered twice
//! in a row.

use tokio::time::Instant;

use super::select::Selector;
use super::{Chunk, Toxic, Verdict, picked};

/// Per-connection state of a frame_duplicate toxic.
#[derive(Debug)]
pub(crate) struct FrameDuplicate {
    sel: Selector,
}

impl FrameDuplicate {
    pub(crate) fn new(sel: Selector) -> Self {
        FrameDuplicate { sel }
    }
}

impl Toxic for FrameDuplicate {
    fn on_chunk(&mut self, chunk: Chunk, _now: Instant, out: &mut Vec<Chunk>) -> Verdict {
        if picked(&mut self.sel, &chunk) {
            out.push(chunk.clone());
        }
        out.push(chunk);
        Verdict::Pass
    }
}
