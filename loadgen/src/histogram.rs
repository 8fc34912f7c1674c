//! Latency histograms: the metrics recorded ([`Metric`]), the standard HdrHistogram range
//! (1 µs to 60 s, 3 significant digits), their shipping format (base64 of HdrHistogram V2
//! compressed, as tick lines carry them) and their [`Percentiles`].

use base64::Engine;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use serde::{Deserialize, Serialize};

use crate::error::{LoadgenError, Result};
use crate::threshold::LATENCIES;

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

/// Percentiles of a latency metric, µs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Smallest.
    pub min: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// 99.99th percentile.
    pub p9999: u64,
    /// Largest.
    pub max: u64,
    /// Mean (never read alone).
    pub mean: f64,
}

impl Percentiles {
    /// Percentiles of a histogram.
    pub fn of(h: &Histogram<u64>) -> Self {
        Percentiles {
            count: h.len(),
            min: h.min(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            p9999: h.value_at_quantile(0.9999),
            max: h.max(),
            mean: h.mean(),
        }
    }

    /// Each statistic by the name thresholds give it (`delivery.p99`, `ack.mean`, …).
    pub fn stats(&self) -> [(&'static str, f64); 8] {
        [
            ("p50", self.p50 as f64),
            ("p90", self.p90 as f64),
            ("p99", self.p99 as f64),
            ("p999", self.p999 as f64),
            ("p9999", self.p9999 as f64),
            ("max", self.max as f64),
            ("min", self.min as f64),
            ("mean", self.mean),
        ]
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
}
