//! `delay` (needs netem): every packet on the targets' cables held for `delay` ±
//! `jitter`. Where the kernel has no netem, the proxy's `latency` fault does this per link.

use super::{Change, KernelFault, Scope, tc_time};

/// The netem delay fault.
pub(crate) struct Delay;

impl KernelFault for Delay {
    fn between_hosts(&self) -> bool {
        false
    }

    fn changes(&self, scope: &Scope<'_>) -> Vec<Change> {
        let mut args = vec![
            "netem".to_string(),
            "delay".into(),
            tc_time(scope.spec.delay),
        ];
        if scope.spec.jitter.is_some() {
            args.push(tc_time(scope.spec.jitter));
        }
        scope.egress_qdiscs(&args)
    }
}
