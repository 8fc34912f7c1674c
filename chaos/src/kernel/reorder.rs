//! `reorder` (needs netem): `percent` % of packets go at once while the rest wait
//! `delay`, so they overtake them: out-of-order segments, duplicate ACKs, fast retransmits.

use super::{Change, KernelFault, Scope, percent, tc_time};

/// The netem reorder fault.
pub(crate) struct Reorder;

impl KernelFault for Reorder {
    fn between_hosts(&self) -> bool {
        false
    }

    fn changes(&self, scope: &Scope<'_>) -> Vec<Change> {
        let args = [
            "netem".to_string(),
            "delay".into(),
            tc_time(scope.spec.delay),
            "reorder".into(),
            percent(scope.spec.percent),
        ];
        scope.egress_qdiscs(&args)
    }
}
