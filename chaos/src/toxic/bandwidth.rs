//! `bandwidth`: cap throughput at `rate` KB/s (1 KB = 1000 bytes, as Toxiproxy).

use std::time::Duration;

use tokio::time::Instant;

use super::{Chunk, Toxic, Verdict};

/// Per-connection state of a bandwidth toxic.
#[derive(Debug)]
pub(crate) struct Bandwidth {
    /// Bytes per second; 0 is unlimited.
    bytes_per_sec: u64,
    /// When the "wire" is free again: the end of the last chunk's transmission.
    free_at: Option<Instant>,
}

impl Bandwidth {
    pub(crate) fn new(rate_kb: u64) -> Self {
        Bandwidth {
            bytes_per_sec: rate_kb.saturating_mul(1000),
            free_at: None,
        }
    }
}

impl Toxic for Bandwidth {
    fn on_chunk(&mut self, chunk: Chunk, _now: Instant, out: &mut Vec<Chunk>) -> Verdict {
        if self.bytes_per_sec == 0 {
            out.push(chunk);
            return Verdict::Pass;
        }
        // Pieces of ~10 ms worth keep the flow smooth instead of bursty at low rates.
        let piece = (self.bytes_per_sec / 100).max(1) as usize;
        let mut data = chunk.data;
        let mut start = self.free_at.map_or(chunk.due, |f| f.max(chunk.due));
        while !data.is_empty() {
            let part = data.split_to(piece.min(data.len()));
            let nanos = part.len() as u128 * 1_000_000_000 / u128::from(self.bytes_per_sec);
            start += Duration::from_nanos(nanos as u64);
            out.push(Chunk::plain(part, start));
        }
        self.free_at = Some(start);
        Verdict::Pass
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn rate_spaces_pieces() {
        let t0 = Instant::now();
        let mut b = Bandwidth::new(100); // 100 KB/s = 100 bytes/ms
        let mut out = Vec::new();
        let c = Chunk::plain(Bytes::from(vec![0u8; 10_000]), t0);
        b.on_chunk(c, t0, &mut out);
        assert_eq!(out.len(), 10);
        assert_eq!(out.last().unwrap().due, t0 + Duration::from_millis(100));
        let total: usize = out.iter().map(|c| c.data.len()).sum();
        assert_eq!(total, 10_000);
    }
}
