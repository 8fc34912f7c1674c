//! One worker thread's measurements of one second: a histogram per [`Metric`] and the
//! interval's [`Counters`].
//!
//! Every worker thread records into its own [`Recorder`] (no lock: it lives in a
//! thread-local `RefCell`); once a second the thread swaps it out and ships the interval
//! over a bounded channel to the worker's shard loop, which merges the threads' seconds
//! and encodes them into a tick line.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

use crate::error::Result;
use crate::histogram::{Metric, encode, new_histogram, record};
use crate::wire::Counters;

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
