//! `[[faults]]`: each fault checked by the chaos crate's own rules (kind, target, the
//! keys its kind takes). Which links exist is the harness's check: it knows the topology.

use flowline_chaos::fault::FaultSpec;

pub(super) fn faults(raw: &[FaultSpec], p: &mut Vec<String>) {
    for (i, f) in raw.iter().enumerate() {
        if let Err(e) = f.validate(i + 1) {
            p.push(e.to_string());
        }
    }
}
