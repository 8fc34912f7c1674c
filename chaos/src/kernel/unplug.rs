//! `unplug`: the targets' cables pulled at the bridge for the fault's duration. The host
//! keeps its address and sockets but sees NO-CARRIER; nothing gets in or out, and TCP
//! resumes (after its backoff) when the cable is back.

use super::{Change, KernelFault, Scope};

/// The unplug fault.
pub(crate) struct Unplug;

impl KernelFault for Unplug {
    fn between_hosts(&self) -> bool {
        false
    }

    fn changes(&self, scope: &Scope<'_>) -> Vec<Change> {
        scope.cables_down()
    }
}
