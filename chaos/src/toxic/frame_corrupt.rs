//! `frame_corrupt`: one payload byte of each selected server → client WebSocket message
//! is XORed with `xor` (byte `offset`, or the last one when the payload is shorter).
//! The default (offset 0, xor 1) turns a JSON text's leading `{` into `z`: still valid
//! UTF-8, no longer JSON. An `xor` with the high bit set makes ASCII text invalid UTF-8,
//! which a client must answer by failing the connection (close code 1007).

use bytes::BytesMut;
use tokio::time::Instant;

use super::select::Selector;
use super::{Chunk, Toxic, Verdict, picked};

/// Per-connection state of a frame_corrupt toxic.
#[derive(Debug)]
pub(crate) struct FrameCorrupt {
    sel: Selector,
    offset: u64,
    xor: u8,
}

impl FrameCorrupt {
    pub(crate) fn new(sel: Selector, offset: u64, xor: u8) -> Self {
        FrameCorrupt { sel, offset, xor }
    }
}

impl Toxic for FrameCorrupt {
    fn on_chunk(&mut self, mut chunk: Chunk, _now: Instant, out: &mut Vec<Chunk>) -> Verdict {
        if picked(&mut self.sel, &chunk)
            && let Some(i) = chunk
                .frame
                .as_ref()
                .and_then(|f| f.payload_index(self.offset))
        {
            // Masked or not, flipping bits of the sent byte flips the same bits of the payload.
            let mut data = BytesMut::from(&chunk.data[..]);
            data[i] ^= self.xor;
            chunk.data = data.freeze();
        }
        out.push(chunk);
        Verdict::Pass
    }
}
