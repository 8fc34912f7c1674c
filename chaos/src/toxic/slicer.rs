//! `slicer`: cut chunks into pieces of `average_size` ± `size_variation` bytes written
//! `delay` µs apart, like a network that fragments writes.

use std::time::Duration;

use tokio::time::Instant;

use super::{Chunk, Toxic, Verdict};

/// A slicer toxic (stateless apart from its settings).
#[derive(Debug)]
pub(crate) struct Slicer {
    average: usize,
    variation: usize,
    delay: Duration,
}

impl Slicer {
    pub(crate) fn new(average_size: u64, size_variation: u64, delay_us: u64) -> Self {
        Slicer {
            average: usize::try_from(average_size).unwrap_or(usize::MAX).max(1),
            variation: usize::try_from(size_variation).unwrap_or(0),
            delay: Duration::from_micros(delay_us.min(super::MAX_DELAY_MS)),
        }
    }

    /// Cut points of `[start, end)`, halving with a random offset until pieces are
    /// within the variation of the average (Toxiproxy's algorithm).
    fn cuts(&self, start: usize, end: usize, acc: &mut Vec<usize>) {
        if (end - start).saturating_sub(self.average) <= self.variation {
            acc.push(end);
            return;
        }
        let v = self.variation as i64;
        let offset = if v > 0 { rand::random_range(-v..v) } else { 0 };
        let mid = (start + (end - start) / 2) as i64 + offset;
        let mid = (mid.max(start as i64 + 1) as usize).min(end - 1);
        self.cuts(start, mid, acc);
        self.cuts(mid, end, acc);
    }
}

impl Toxic for Slicer {
    fn on_chunk(&mut self, chunk: Chunk, _now: Instant, out: &mut Vec<Chunk>) -> Verdict {
        let mut ends = Vec::new();
        self.cuts(0, chunk.data.len(), &mut ends);
        let mut from = 0;
        let mut due = chunk.due;
        for to in ends {
            out.push(Chunk::plain(chunk.data.slice(from..to), due));
            due += self.delay;
            from = to;
        }
        Verdict::Pass
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn slices_keep_every_byte_in_order() {
        let t0 = Instant::now();
        let data: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let mut s = Slicer::new(100, 20, 1000);
        let mut out = Vec::new();
        s.on_chunk(Chunk::plain(Bytes::from(data.clone()), t0), t0, &mut out);
        assert!(out.len() >= 8, "{}", out.len());
        for c in &out {
            assert!(c.data.len() <= 120 + 1, "{}", c.data.len());
        }
        let joined: Vec<u8> = out.iter().flat_map(|c| c.data.iter().copied()).collect();
        assert_eq!(joined, data);
        assert_eq!(out[1].due - out[0].due, Duration::from_millis(1));
    }
}
