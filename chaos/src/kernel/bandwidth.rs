//! `bandwidth` between hosts: a token bucket (tbf) caps each target's cable at `rate`
//! KB/s per direction (1 KB = 1000 bytes, the proxy's unit), queueing up to 200 ms of
//! traffic and dropping past that, as a slow link does.

use super::{Change, KernelFault, Scope};

/// The kernel bandwidth fault.
pub(crate) struct Bandwidth;

impl KernelFault for Bandwidth {
    fn between_hosts(&self) -> bool {
        false
    }

    fn changes(&self, scope: &Scope<'_>) -> Vec<Change> {
        let bytes_per_s = scope.spec.rate.unwrap_or(1).max(1) * 1000;
        // The bucket must hold at least a few full frames (else tbf stalls) and is kept
        // to a 20th of a second of traffic so bursts do not hide the cap.
        let burst = (bytes_per_s / 20).max(4 * 1514);
        let args = [
            "tbf".to_string(),
            "rate".into(),
            format!("{}bit", bytes_per_s * 8),
            "burst".into(),
            burst.to_string(),
            "latency".into(),
            "200ms".into(),
        ];
        scope.egress_qdiscs(&args)
    }
}
