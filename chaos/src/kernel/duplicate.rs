//! `duplicate` (needs netem): `percent` % of packets sent twice; TCP discards the copies,
//! UDP receivers see them.

use super::{Change, KernelFault, Scope, percent};

/// The netem duplicate fault.
pub(crate) struct Duplicate;

impl KernelFault for Duplicate {
    fn between_hosts(&self) -> bool {
        false
    }

    fn changes(&self, scope: &Scope<'_>) -> Vec<Change> {
        let args = [
            "netem".to_string(),
            "duplicate".into(),
            percent(scope.spec.percent),
        ];
        scope.egress_qdiscs(&args)
    }
}
