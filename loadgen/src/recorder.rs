//! One worker thread's measurements of one second: a histogram per [`Metric`] and the
//! interval's [`Counters`].
//!
//! Every worker thread records into its own [`Seconds`] (no lock: it lives in a
//! thread-local `RefCell`), each measurement into the [`Recorder`] of the second it was
//! taken in; once a second the thread takes out the second that ended and ships it over a
//! bounded channel to the worker's shard loop, which merges the threads' seconds and
//! encodes them into a tick line.

use std::collections::{BTreeMap, VecDeque};

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

/// One thread's recorders of the seconds not yet shipped, by tick: tick `t` holds what was
/// measured in second `[t-1, t)` of the run. A measurement goes to the second it was taken
/// in, not to whichever recorder the ticker happens to swap out next: under load the
/// ticker wakes late, and a delivery taken at 1.02 s, counted in tick 1 (the warm-up),
/// fell out of the run's latency while its count stayed in the totals.
#[derive(Debug)]
pub struct Seconds {
    /// The tick of `recs[0]`: the oldest not yet taken.
    first: u64,
    recs: VecDeque<Recorder>,
}

impl Default for Seconds {
    fn default() -> Self {
        Seconds {
            first: 1,
            recs: VecDeque::new(),
        }
    }
}

impl Seconds {
    /// The recorder of tick `t` (a tick already taken: the oldest one not taken).
    pub fn at(&mut self, t: u64) -> &mut Recorder {
        // The ticker takes a tick every second: at most its lag ahead of it.
        let i = (t.saturating_sub(self.first)) as usize;
        if i >= self.recs.len() {
            self.recs.resize_with(i + 1, Recorder::default);
        }
        &mut self.recs[i]
    }

    /// Take tick `t`'s recorder (with any older one not taken yet merged in; empty when
    /// nothing was measured); later ticks stay.
    pub fn take(&mut self, t: u64) -> Recorder {
        let mut out = Recorder::default();
        let mut first = true;
        while self.first <= t {
            self.first += 1;
            if let Some(r) = self.recs.pop_front() {
                if std::mem::take(&mut first) {
                    out = r;
                } else {
                    out.merge(&r);
                }
            }
        }
        out
    }

    /// Whether anything was measured after tick `t`.
    pub fn any_after(&self, t: u64) -> bool {
        let skip = usize::try_from((t + 1).saturating_sub(self.first)).unwrap_or(usize::MAX);
        self.recs.iter().skip(skip).any(|r| !r.is_empty())
    }
}

impl Recorder {
    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.hists.iter().all(Histogram::is_empty) && self.counters == Counters::default()
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

    #[test]
    fn seconds_keep_each_measurement_in_the_second_it_was_taken() {
        let mut s = Seconds::default();
        s.at(1).counters.sent = 1;
        // The ticker has not taken tick 1 yet when second 2 begins: a delivery of second 2.
        s.at(2).record(Metric::Delivery, 800);
        s.at(2).counters.delivered = 1;
        assert!(s.any_after(1));
        let one = s.take(1);
        assert_eq!((one.counters.sent, one.counters.delivered), (1, 0));
        assert!(one.hists[Metric::Delivery as usize].is_empty());
        assert!(!s.any_after(2));
        let two = s.take(2);
        assert_eq!(two.counters.delivered, 1);
        assert_eq!(two.hists[Metric::Delivery as usize].len(), 1);
        // Nothing measured in second 3: an empty tick.
        assert!(s.take(3).is_empty());
        // A tick already taken records into the oldest open one; a skipped tick is merged
        // into the next one taken.
        s.at(1).counters.sent = 5;
        s.at(5).counters.sent = 2;
        assert_eq!(s.take(4).counters.sent, 5);
        assert_eq!(s.take(5).counters.sent, 2);
        s.at(6).counters.sent = 1;
        s.at(7).counters.sent = 1;
        assert_eq!(s.take(7).counters.sent, 2);
        assert!(!s.any_after(7));
    }
}
