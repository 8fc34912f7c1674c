//! Running iproute2 (`ip`, `tc`) and nftables (`nft`): the only way this module touches
//! the kernel's network configuration.
//!
//! We shell out instead of speaking netlink from Rust: the netlink crates either lack what
//! we need (rtnetlink has no tbf/netem qdiscs, so their attributes would be hand-encoded)
//! or call themselves rough (rustables), and configuring a namespace over netlink means
//! parking a thread inside it. The tools are what an operator types to inspect or repair
//! a run's network, their error messages are precise, and a fault is applied a handful of
//! times per run, so a few milliseconds per command do not matter.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// Run `program args...`; its stderr becomes the error on failure.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<String> {
    run_with_input(program, args, None)
}

/// Run `program args...` with `input` on stdin (for `nft -f -`).
pub(crate) fn run_with_input(program: &str, args: &[&str], input: Option<&str>) -> Result<String> {
    let line = || format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Kernel {
            command: line(),
            reason: if e.kind() == std::io::ErrorKind::NotFound {
                format!("`{program}` is not installed ({})", install_hint(program))
            } else {
                e.to_string()
            },
        })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| Error::Kernel {
                command: line(),
                reason: format!("cannot write its input: {e}"),
            })?;
    }
    let out = child.wait_with_output().map_err(|e| Error::Kernel {
        command: line(),
        reason: e.to_string(),
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err(Error::Kernel {
            command: line(),
            reason: if stderr.is_empty() {
                out.status.to_string()
            } else {
                stderr
            },
        })
    }
}

/// `nft -f -` inside the network namespace `ns`.
pub(crate) fn nft_in(ns: &str, script: &str) -> Result<String> {
    run_with_input("ip", &["netns", "exec", ns, "nft", "-f", "-"], Some(script)).map_err(|e| {
        match e {
            // `ip netns exec` reports a missing program in its own words.
            Error::Kernel { command, reason } if reason.contains("exec of \"nft\" failed") => {
                Error::Kernel {
                    command,
                    reason: format!("{reason} (`nft` is not installed: {})", install_hint("nft")),
                }
            }
            e => e,
        }
    })
}

fn install_hint(program: &str) -> &'static str {
    match program {
        "nft" => "apt-get install nftables",
        _ => "apt-get install iproute2",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_carries_the_command_and_its_stderr() {
        let e = run("ip", &["link", "show", "dev", "no-such-flowline-dev"]).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("ip link show dev no-such-flowline-dev"),
            "{msg}"
        );
        assert!(msg.contains("does not exist"), "{msg}");
    }

    #[test]
    fn a_missing_program_says_how_to_install_it() {
        let e = run("flowline-no-such-program", &[]).unwrap_err();
        assert!(e.to_string().contains("is not installed"), "{e}");
    }
}
