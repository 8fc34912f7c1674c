//! `corrupt` (needs netem): a random bit flipped in `percent` % of packets; checksums
//! catch them, so to TCP this is loss that costs the receiver a little CPU.

use super::{Change, KernelFault, Scope, percent};

/// The netem corrupt fault.
pub(crate) struct Corrupt;

impl KernelFault for Corrupt {
    fn between_hosts(&self) -> bool {
        false
    }

    fn changes(&self, scope: &Scope<'_>) -> Vec<Change> {
        let args = [
            "netem".to_string(),
            "corrupt".into(),
            percent(scope.spec.percent),
        ];
        scope.egress_qdiscs(&args)
    }
}
