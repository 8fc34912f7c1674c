//! `limit_data`: close the connection once `bytes` bytes went through.

use tokio::time::Instant;

use super::{Chunk, Toxic, Verdict};

/// Per-connection state of a limit_data toxic.
#[derive(Debug)]
pub(crate) struct LimitData {
    limit: u64,
    passed: u64,
}

impl LimitData {
    pub(crate) fn new(bytes: u64) -> Self {
        LimitData {
            limit: bytes,
            passed: 0,
        }
    }
}

impl Toxic for LimitData {
    fn on_chunk(&mut self, mut chunk: Chunk, _now: Instant, out: &mut Vec<Chunk>) -> Verdict {
        let left = self.limit - self.passed;
        let len = chunk.data.len() as u64;
        if len < left {
            self.passed += len;
            out.push(chunk);
            return Verdict::Pass;
        }
        chunk.data.truncate(left as usize);
        self.passed = self.limit;
        if !chunk.data.is_empty() {
            out.push(chunk);
        }
        Verdict::Close
    }
}
