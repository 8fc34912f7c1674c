//! `loss`: drop `percent` % of the packets on the covered flows, at random, per packet
//! (nft `numgen random`), so TCP retransmits and UDP just loses them.

use super::{Change, KernelFault, Scope};

/// The loss fault.
pub(crate) struct Loss;

impl KernelFault for Loss {
    fn changes(&self, scope: &Scope<'_>) -> Vec<Change> {
        // Basis points of 10,000: a hundredth of a percent is the finest step.
        let bp = (scope.spec.percent.unwrap_or(0.0) * 100.0).round() as u32;
        scope.drop_inbound(&format!("numgen random mod 10000 < {bp}"))
    }
}
