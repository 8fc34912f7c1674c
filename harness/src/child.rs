//! Children die with the harness, even when it is killed with SIGKILL (no handler runs).
//!
//! The supervisor gives every child it starts `FLOWLINE_DIE_WITH_PARENT=<harness pid>`.
//! A `flowline` child reads it first thing in `main` ([`die_with_parent_from_env`]) and
//! asks the kernel for SIGKILL when its parent dies (`PR_SET_PDEATHSIG`); programs that are
//! not `flowline` (redis-server, postgres) are started through `flowline child-exec`, which
//! does the same and then `exec`s them (the setting survives `exec`).
//!
//! Two kernel details shape this:
//! - The signal follows the *thread* that forked the child, not the process. The harness
//!   spawns children only from async code, i.e. from the runtime's main or worker threads,
//!   which live as long as the runtime; never from `spawn_blocking` threads (they exit when
//!   idle, which would kill the child).
//! - The parent may die before the child sets the signal; the child then compares
//!   `getppid()` with the pid in the variable and exits at once if they differ.
//! - A change of user id clears the setting, so a Postgres dropped to another user through
//!   `setpriv` gets `--pdeathsig KILL` from setpriv itself.

use std::ffi::CString;

use anyhow::Context;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// The environment variable that carries the harness's pid to its children.
pub const DIE_WITH_PARENT_ENV: &str = "FLOWLINE_DIE_WITH_PARENT";

/// If [`DIE_WITH_PARENT_ENV`] is set, arrange for SIGKILL when the parent dies. Returns
/// `Err` when the parent is already gone (the caller should exit) or the variable is bad.
pub fn die_with_parent_from_env() -> anyhow::Result<()> {
    let Ok(v) = std::env::var(DIE_WITH_PARENT_ENV) else {
        return Ok(());
    };
    let parent: i32 = v
        .trim()
        .parse()
        .with_context(|| format!("{DIE_WITH_PARENT_ENV}={v:?} is not a pid"))?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).context("prctl(PR_SET_PDEATHSIG)")?;
    if nix::unistd::getppid() != Pid::from_raw(parent) {
        anyhow::bail!("the parent process {parent} is already gone");
    }
    Ok(())
}

/// `flowline child-exec PROGRAM ARGS...`: die with the parent, then become `PROGRAM`.
/// Returns only on failure.
pub fn exec(program: &str, args: &[String]) -> anyhow::Error {
    if let Err(e) = die_with_parent_from_env() {
        return e;
    }
    let c = |s: &str| CString::new(s).with_context(|| format!("NUL byte in {s:?}"));
    let prog = match c(program) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let mut argv = vec![prog.clone()];
    for a in args {
        match c(a) {
            Ok(a) => argv.push(a),
            Err(e) => return e,
        }
    }
    match nix::unistd::execvp(&prog, &argv) {
        Ok(never) => match never {},
        Err(e) => anyhow::anyhow!("cannot execute {program}: {e}"),
    }
}
