//! Process faults: SIGKILL (with an optional restart the owner performs), SIGSTOP/SIGCONT.
//!
//! Only processes handed in through [`ProcessTarget`] are ever signalled: the chaos crate
//! never looks processes up by name.

use futures_util::future::BoxFuture;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::error::{Error, Result};

/// A process the harness owns and lets the chaos crate fault.
///
/// Implement [`pid`](ProcessTarget::pid) and [`restart`](ProcessTarget::restart); the
/// signal methods have working defaults.
pub trait ProcessTarget: Send + Sync {
    /// The node id (`node1`), used in events and for target globs.
    fn node_id(&self) -> &str;

    /// The current pid, `None` if the process is not running (e.g. killed, not restarted).
    fn pid(&self) -> Option<u32>;

    /// SIGKILL the process.
    fn kill(&self) -> Result<()> {
        self.signal(Signal::SIGKILL)
    }

    /// SIGSTOP the process (it stops answering; its sockets stay open).
    fn pause(&self) -> Result<()> {
        self.signal(Signal::SIGSTOP)
    }

    /// SIGCONT the process.
    fn resume(&self) -> Result<()> {
        self.signal(Signal::SIGCONT)
    }

    /// Start the process again after a kill. The harness spawns the new child and waits
    /// until it is ready; the default refuses.
    fn restart(&self) -> BoxFuture<'_, Result<()>> {
        let node = self.node_id().to_string();
        Box::pin(async move {
            Err(Error::Restart {
                node,
                reason: "this process target cannot be restarted".into(),
            })
        })
    }

    /// Send `sig` to the current pid.
    fn signal(&self, sig: Signal) -> Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| Error::NoProcess(self.node_id().to_string()))?;
        signal_pid(pid, sig)
    }
}

/// Send `sig` to `pid` (refusing pid 0 and 1, which would hit a group or init).
pub fn signal_pid(pid: u32, sig: Signal) -> Result<()> {
    let raw = i32::try_from(pid).unwrap_or(0);
    if raw <= 1 {
        return Err(Error::Signal {
            pid,
            source: nix::errno::Errno::EINVAL,
        });
    }
    kill(Pid::from_raw(raw), sig).map_err(|source| Error::Signal { pid, source })
}

/// A fixed pid that cannot be restarted: for processes started elsewhere, and tests.
#[derive(Debug, Clone)]
pub struct PidProcess {
    /// Node id.
    pub node_id: String,
    /// Process id.
    pub pid: u32,
}

impl ProcessTarget for PidProcess {
    fn node_id(&self) -> &str {
        &self.node_id
    }

    fn pid(&self) -> Option<u32> {
        Some(self.pid)
    }
}
