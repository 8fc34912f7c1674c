//! `partition`: drop every packet on the covered flows. One way (`to` or `from`) gives
//! real half-open TCP: one side's segments arrive, its peer's answers never do.

use super::{Change, KernelFault, Scope};

/// The partition fault.
pub(crate) struct Partition;

impl KernelFault for Partition {
    fn changes(&self, scope: &Scope<'_>) -> Vec<Change> {
        scope.drop_inbound("")
    }
}
