//! Whether this kernel has the netem qdisc, which `delay`, `reorder`, `duplicate` and
//! `corrupt` need. Asked once per process by trying it: a netem qdisc on the loopback of
//! a throwaway namespace (a kernel config file may be absent, and a module may be
//! missing even where the config says `m`).

use std::sync::OnceLock;

use super::command::run;
use super::network::{PREFIX, check_privileges};

/// `Ok` if netem works here, else why not (a sentence for a scenario error).
pub fn support() -> Result<(), String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE.get_or_init(probe).clone()
}

fn probe() -> Result<(), String> {
    check_privileges().map_err(|e| format!("cannot tell whether the kernel has netem: {e}"))?;
    let ns = format!("{PREFIX}{}-netem-probe", std::process::id());
    run("ip", &["netns", "add", &ns]).map_err(|e| format!("cannot probe for netem: {e}"))?;
    let r = run(
        "tc",
        &[
            "-n", &ns, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms",
        ],
    );
    let _ = run("ip", &["netns", "del", &ns]);
    r.map(drop).map_err(|e| {
        format!(
            "the netem qdisc is not in this kernel ({e}); the proxy's `latency` fault delays links without it"
        )
    })
}
