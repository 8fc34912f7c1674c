//! `[[thresholds]]`: each expression parsed (metric, operator, value with its unit).

use crate::scenario::raw::RawThreshold;
use crate::threshold::Threshold;

pub(super) fn thresholds(raw: &[RawThreshold], p: &mut Vec<String>) -> Vec<Threshold> {
    let mut thresholds = Vec::new();
    for (i, t) in raw.iter().enumerate() {
        match Threshold::parse(&t.expr) {
            Ok(th) => thresholds.push(th),
            Err(e) => p.push(format!("thresholds[{}]: {e}", i + 1)),
        }
    }
    thresholds
}
