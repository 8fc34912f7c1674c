//! `frame_reorder`: each selected server → client WebSocket message is held back and
//! delivered right after the `after`-th later message that matches the toxic's `match`
//! (`nth`/`every` aside) — e.g. `match = {"/channel": 7}` puts a message of channel 7
//! behind the next one of channel 7. Held messages go out when the toxic is removed or
//! the server ends the stream.

use tokio::time::Instant;

use super::select::Selector;
use super::{Chunk, Toxic, Verdict, payload_for};

/// Per-connection state of a frame_reorder toxic.
#[derive(Debug)]
pub(crate) struct FrameReorder {
    sel: Selector,
    after: u64,
    /// Held messages with how many matching messages must still overtake each.
    held: Vec<(Chunk, u64)>,
}

impl FrameReorder {
    pub(crate) fn new(sel: Selector, after: u64) -> Self {
        FrameReorder {
            sel,
            after: after.max(1),
            held: Vec::new(),
        }
    }
}

impl Toxic for FrameReorder {
    fn on_chunk(&mut self, chunk: Chunk, _now: Instant, out: &mut Vec<Chunk>) -> Verdict {
        let Some(payload) = payload_for(&self.sel, &chunk) else {
            out.push(chunk); // not a data message
            return Verdict::Pass;
        };
        if self.sel.pick(payload.as_deref()) {
            self.held.push((chunk, self.after));
            return Verdict::Pass;
        }
        let overtakes = self.sel.matches(payload.as_deref());
        let due = chunk.due;
        out.push(chunk);
        if overtakes {
            for (_, left) in &mut self.held {
                *left -= 1;
            }
            let (go, stay): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
                .into_iter()
                .partition(|h| h.1 == 0);
            self.held = stay;
            // Not due before the message that overtook them.
            out.extend(go.into_iter().map(|(mut c, _)| {
                c.due = c.due.max(due);
                c
            }));
        }
        Verdict::Pass
    }

    fn drain(&mut self, out: &mut Vec<Chunk>) {
        out.extend(self.held.drain(..).map(|(c, _)| c));
    }
}
