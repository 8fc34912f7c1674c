//! Latency histograms and their shipping format (base64 of HdrHistogram V2 compressed).
//!
//! Every worker thread records into its own [`Recorder`] (no lock: it lives in a
//! thread-local `RefCell`); once a second the thread swaps it out and ships the interval
//! over a bounded channel to the worker's one printer, which merges and encodes it.

use std::collections::BTreeMap;

use base64::Engine;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};

use crate::error::{LoadgenError, Result};
use crate::threshold::LATENCIES;
use crate::wire::Counters;

/// Lowest recordable latency, µs.
pub const LOWEST_US: u64 = 1;
/// Highest recordable latency, µs (60 s); larger values are clamped.
pub const HIGHEST_US: u64 = 60_000_000;
/// Significant digits.
pub const SIGFIG: u8 = 3;

/// A latency metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    /// TCP connect + WebSocket handshake.
    Connect = 0,
    /// `hello` written → `ready` received.
    Hello = 1,
    /// `send` → `ack`.
    Ack = 2,
    /// `send` → `message` at each recipient.
    Delivery = 3,
}

impl Metric {
    /// All metrics in order.
    pub const ALL: [Metric; 4] = [
        Metric::Connect,
        Metric::Hello,
        Metric::Ack,
        Metric::Delivery,
    ];

    /// The metric's name (histogram tag, threshold prefix).
    pub fn name(self) -> &'static str {
        LATENCIES[self as usize]
    }
}

/// A new empty histogram with the standard range.
pub fn new_histogram() -> Histogram<u64> {
    // Constant bounds within hdrhistogram's limits: this cannot fail.
    Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, SIGFIG)
        .expect("constant histogram bounds are valid")
}

/// Record a value in µs, clamped to the histogram's range.
pub fn record(h: &mut Histogram<u64>, us: u64) {
    let v = us.clamp(LOWEST_US, HIGHEST_US);
    let _ = h.record(v);
}

/// Encode a histogram as base64 of V2 compressed.
pub fn encode(h: &Histogram<u64>) -> Result<String> {
    let mut buf = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut buf)
        .map_err(|e| LoadgenError::Histogram(format!("encode: {e:?}")))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(buf))
}

/// Decode a histogram encoded by [`encode`] (or by any HdrHistogram V2 implementation).
pub fn decode(s: &str) -> Result<Histogram<u64>> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| LoadgenError::Histogram(format!("base64: {e}")))?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| LoadgenError::Histogram(format!("decode: {e:?}")))
}

/// One thread's measurements of one interval.
#[derive(Debug, Clone)]
pub struct Recorder {
    /// One histogram per [`Metric`].
    pub hists: [Histogram<u64>; 4],
    /// Counters of the interval.
    pub counters: Counters,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            hists: std::array::from_fn(|_| new_histogram()),
            counters: Counters::default(),
        }
    }
}

impl Recorder {
    /// Record a latency in µs.
    pub fn record(&mut self, m: Metric, us: u64) {
        record(&mut self.hists[m as usize], us);
    }

    /// Merge another interval into this one.
    pub fn merge(&mut self, o: &Recorder) {
        for (a, b) in self.hists.iter_mut().zip(o.hists.iter()) {
            let _ = a.add(b);
        }
        self.counters.add(&o.counters);
    }

    /// Encoded histograms of the non-empty metrics.
    pub fn encode_hists(&self) -> Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        for m in Metric::ALL {
            let h = &self.hists[m as usize];
            if !h.is_empty() {
                out.insert(m.name().to_string(), encode(h)?);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_merge() {
        let mut a = new_histogram();
        let mut b = new_histogram();
        for v in 1..=1000u64 {
            record(&mut a, v * 100);
        }
        record(&mut b, 120_000_000); // clamped to 60 s
        record(&mut b, 0); // clamped to 1 µs
        let a2 = decode(&encode(&a).unwrap()).unwrap();
        assert_eq!(a2.len(), 1000);
        assert_eq!(a2.value_at_quantile(0.5), a.value_at_quantile(0.5));
        let mut merged = decode(&encode(&b).unwrap()).unwrap();
        merged.add(&a2).unwrap();
        assert_eq!(merged.len(), 1002);
        assert!(merged.max() >= 59_000_000 && merged.max() <= 60_100_000);
        assert_eq!(merged.min(), 1);
        assert!(decode("not base64!").is_err());
    }

    #[test]
    fn recorder_merges_counters_and_hists() {
        let mut r1 = Recorder::default();
        r1.record(Metric::Delivery, 500);
        r1.counters.delivered = 1;
        r1.counters.error("connect");
        let mut r2 = Recorder::default();
        r2.record(Metric::Delivery, 700);
        r2.counters.delivered = 2;
        r2.counters.error("connect");
        r1.merge(&r2);
        assert_eq!(r1.hists[Metric::Delivery as usize].len(), 2);
        assert_eq!(r1.counters.delivered, 3);
        assert_eq!(r1.counters.errors_by_kind["connect"], 2);
        let enc = r1.encode_hists().unwrap();
        assert_eq!(enc.keys().collect::<Vec<_>>(), ["delivery"]);
    }
}
