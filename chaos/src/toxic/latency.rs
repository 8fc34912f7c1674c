//! `latency`: delay every chunk by `latency` ± `jitter` ms, counted from its arrival.

use std::time::Duration;

use tokio::time::Instant;

use super::{Chunk, Toxic, Verdict};

/// Per-connection state of a latency toxic.
#[derive(Debug)]
pub(crate) struct Latency {
    latency: Duration,
    jitter: Duration,
    /// Due time of the previous chunk: a byte stream cannot overtake itself, so jitter
    /// never makes a chunk due before the one ahead of it.
    last_due: Option<Instant>,
}

impl Latency {
    pub(crate) fn new(latency_ms: u64, jitter_ms: u64) -> Self {
        Latency {
            latency: super::capped_ms(latency_ms),
            jitter: super::capped_ms(jitter_ms),
            last_due: None,
        }
    }

    fn delay(&self) -> Duration {
        if self.jitter.is_zero() {
            return self.latency;
        }
        let j = self.jitter.as_micros() as i64;
        let offset = rand::random_range(-j..=j);
        let total = self.latency.as_micros() as i64 + offset;
        Duration::from_micros(total.max(0) as u64)
    }
}

impl Toxic for Latency {
    fn on_chunk(&mut self, mut chunk: Chunk, _now: Instant, out: &mut Vec<Chunk>) -> Verdict {
        let mut due = chunk.due + self.delay();
        if let Some(last) = self.last_due {
            due = due.max(last);
        }
        self.last_due = Some(due);
        chunk.due = due;
        out.push(chunk);
        Verdict::Pass
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn delay_counts_from_arrival_and_jitter_stays_in_range() {
        let t0 = Instant::now();
        let mut l = Latency::new(100, 0);
        let mut out = Vec::new();
        let c = Chunk::plain(Bytes::from_static(b"x"), t0);
        l.on_chunk(c, t0 + Duration::from_millis(40), &mut out);
        assert_eq!(out[0].due, t0 + Duration::from_millis(100));

        let j = Latency::new(100, 20);
        for _ in 0..100 {
            let d = j.delay();
            assert!(d >= Duration::from_millis(80) && d <= Duration::from_millis(120));
        }
    }
}
