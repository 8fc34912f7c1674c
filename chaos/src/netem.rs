//! Whether this kernel has the netem qdisc, which `delay`, `reorder`, `duplicate` and
//! `corrupt` need. Asked once per process by trying it: a netem qdisc on the loopback of
//! a throwaway namespace (a kernel config file may be absent, and a module may be
//! missing even where the config says `m`).
//!
//! Scenario checks call this through `FaultSpec::validate`, so it depends on nothing
//! else of the crate (std only) to keep `fault` free of import circles.

use std::process::Command;
use std::sync::OnceLock;

/// `Ok` if netem works here, else why not (a sentence for a scenario error).
pub fn support() -> Result<(), String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE.get_or_init(probe).clone()
}

fn probe() -> Result<(), String> {
    // Named like a run's namespaces (owner pid first), so a crash here leaves nothing a
    // later run would not sweep.
    let ns = format!("flowline-{}-netem-probe", std::process::id());
    sh("ip", &["netns", "add", &ns])
        .map_err(|e| format!("cannot tell whether the kernel has netem: {e}"))?;
    let r = sh(
        "tc",
        &[
            "-n", &ns, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms",
        ],
    );
    let _ = sh("ip", &["netns", "del", &ns]);
    r.map_err(|e| {
        format!(
            "the netem qdisc is not in this kernel ({e}); the proxy's `latency` fault delays links without it"
        )
    })
}

fn sh(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
