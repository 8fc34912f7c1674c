//! `frame_drop`: the selected server → client WebSocket messages are never delivered.

use tokio::time::Instant;

use super::select::Selector;
use super::{Chunk, Toxic, Verdict, picked};

/// Per-connection state of a frame_drop toxic.
#[derive(Debug)]
pub(crate) struct FrameDrop {
    sel: Selector,
}

impl FrameDrop {
    pub(crate) fn new(sel: Selector) -> Self {
        FrameDrop { sel }
    }
}

impl Toxic for FrameDrop {
    fn on_chunk(&mut self, chunk: Chunk, _now: Instant, out: &mut Vec<Chunk>) -> Verdict {
        if !picked(&mut self.sel, &chunk) {
            out.push(chunk);
        }
        Verdict::Pass
    }
}
