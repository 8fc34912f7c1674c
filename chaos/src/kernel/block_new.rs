//! `block_new`: drop the packets that open new connections (conntrack state `new`) on
//! the covered flows; established connections keep flowing. What a firewall change or
//! an exhausted accept queue looks like to clients: reconnects fail, live sessions live.

use super::{Change, KernelFault, Scope};

/// The block_new fault.
pub(crate) struct BlockNew;

impl KernelFault for BlockNew {
    fn changes(&self, scope: &Scope<'_>) -> Vec<Change> {
        scope.drop_inbound("ct state new")
    }
}
