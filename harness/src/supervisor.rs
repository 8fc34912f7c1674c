//! Child processes of a run: spawn, read their stdout lines, signal them, and reap them.
//!
//! ```text
//!  Supervisor ──spawn──▶ child (own process group, pgid = pid)
//!      │                   ├─ stdout ──lines──▶ mpsc::Receiver<String>   (announce / worker lines)
//!      │                   └─ stderr ─────────▶ <run>/logs/<name>.log
//!      └─ shutdown(grace): SIGTERM every group, wait, SIGKILL what is left, wait
//!         Drop:            SIGKILL every group still alive (panic, early return, `?`)
//! ```
//!
//! A child may be started inside a network namespace ([`Spec::in_netns`]): through
//! `ip netns exec <ns> <program>`, which enters the namespace and *execs* the program
//! (no fork), so the pid the supervisor holds is the program's own. Entering it with
//! `setns(2)` between fork and exec would need `unsafe` (`pre_exec`), which the crate
//! forbids.
//!
//! Every child is started in its own process group, so a signal reaches the grandchildren
//! it may have started too (Postgres backends, for instance). Only groups whose leader this
//! supervisor spawned, and has not yet reaped, are ever signalled: a reaped pid may be reused
//! by an unrelated process.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flowline_protocol::announce::Announce;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// The file in the log folder listing every child started: one `{"name","pid"}` per line.
pub const CHILDREN_FILE: &str = "children.jsonl";

/// How to start (and restart) one child process.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Unique name within the run (`node1`, `worker2`, `postgres`); names the log file.
    pub name: String,
    /// Program to execute.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Network namespace (`ip netns` name) to start it in; `None`: the harness's own.
    pub netns: Option<String>,
}

impl Spec {
    /// A spec running `program args...`.
    pub fn new(name: impl Into<String>, program: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            netns: None,
        }
    }

    /// A spec running this very binary (`flowline <args>`); the child dies with the
    /// harness even if the harness is SIGKILLed (see [`crate::child`]).
    pub fn flowline(name: impl Into<String>) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot locate the flowline binary")?;
        Ok(Self::new(name, exe).env(
            crate::child::DIE_WITH_PARENT_ENV,
            std::process::id().to_string(),
        ))
    }

    /// A spec running another `program` through `flowline child-exec`, so that it too dies
    /// with the harness (see [`crate::child`]). When this process is not the `flowline`
    /// binary (the library used from a test binary) the program is started directly.
    pub fn child_exec(
        name: impl Into<String>,
        program: impl Into<PathBuf>,
    ) -> anyhow::Result<Self> {
        let program: PathBuf = program.into();
        let exe = std::env::current_exe().context("cannot locate the flowline binary")?;
        if exe.file_stem().is_none_or(|s| s != "flowline") {
            return Ok(Self::new(name, program));
        }
        Ok(Self::flowline(name)?.args([
            "child-exec".to_string(),
            "--".into(),
            program.to_string_lossy().into_owned(),
        ]))
    }

    /// Append arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Start it inside the network namespace `netns` (an `ip netns` name).
    pub fn in_netns(mut self, netns: impl Into<String>) -> Self {
        self.netns = Some(netns.into());
        self
    }

    /// Add an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
}

/// A child that was spawned: its pid and its stdout, line by line.
#[derive(Debug)]
pub struct Spawned {
    /// The child's name.
    pub name: String,
    /// Its pid (also its process group id).
    pub pid: u32,
    /// Its stdout lines; closes when the child closes stdout (normally: when it exits).
    pub lines: mpsc::Receiver<String>,
}

struct Managed {
    spec: Spec,
    child: Child,
    pid: u32,
    /// Set once reaped; the pid must not be signalled after that.
    status: Option<ExitStatus>,
}

impl Managed {
    /// Reap if exited; returns whether the child is still running.
    fn alive(&mut self) -> bool {
        if self.status.is_some() {
            return false;
        }
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.status = Some(status);
                false
            }
            Ok(None) => true,
            // Cannot tell: treat as alive so it still gets killed.
            Err(_) => true,
        }
    }

    fn signal(&mut self, sig: Signal) -> bool {
        if !self.alive() {
            return false;
        }
        let Ok(pgid) = i32::try_from(self.pid) else {
            return false;
        };
        killpg(Pid::from_raw(pgid), sig).is_ok()
    }
}

/// Owns every child process of a run. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Mutex<BTreeMap<String, Managed>>>,
    log_dir: PathBuf,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("log_dir", &self.log_dir)
            .finish_non_exhaustive()
    }
}

impl Supervisor {
    /// A supervisor writing each child's stderr to `log_dir/<name>.log`.
    pub fn new(log_dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(log_dir)
            .with_context(|| format!("cannot create {}", log_dir.display()))?;
        Ok(Self {
            inner: Arc::new(Mutex::new(BTreeMap::new())),
            log_dir: log_dir.to_path_buf(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Managed>> {
        // A panic while holding the lock cannot leave the map inconsistent (single inserts).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where a child's stderr goes.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.log_dir.join(format!("{name}.log"))
    }

    /// Start a child in its own process group. A restarted name (same spec) appends to its log.
    pub fn spawn(&self, spec: Spec) -> anyhow::Result<Spawned> {
        if let Some(m) = self.lock().get_mut(&spec.name)
            && m.alive()
        {
            bail!("a child named {} is already running", spec.name);
        }
        let log_path = self.log_path(&spec.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        let mut cmd = match &spec.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&spec.program);
                c
            }
            None => Command::new(&spec.program),
        };
        cmd.args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn().with_context(|| {
            format!(
                "cannot start {} ({})",
                spec.name,
                spec.program.to_string_lossy()
            )
        })?;
        let pid = child.id().context("child exited before its pid was read")?;
        let stdout = child.stdout.take().context("child stdout is not piped")?;
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            let mut forward = true;
            // Keep reading after the receiver is gone so the child never blocks on a full pipe.
            while let Ok(Some(line)) = lines.next_line().await {
                if forward && tx.send(line).await.is_err() {
                    forward = false;
                }
            }
        });
        tracing::debug!(name = %spec.name, pid, "spawned");
        self.record(&spec.name, pid);
        let name = spec.name.clone();
        self.lock().insert(
            name.clone(),
            Managed {
                spec,
                child,
                pid,
                status: None,
            },
        );
        Ok(Spawned {
            name,
            pid,
            lines: rx,
        })
    }

    /// Add a child to children.jsonl: every pid this run started, so what survives can be
    /// checked (and cleaned up by hand) whatever ends the harness. The supervisor's own
    /// children are recorded as they start; others (the chaos controller's data-plane
    /// processes) by their owner.
    pub fn record(&self, name: &str, pid: u32) {
        let record = serde_json::json!({"name": name, "pid": pid});
        if let Err(e) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_dir.join(CHILDREN_FILE))
            .and_then(|mut f| std::io::Write::write_all(&mut f, format!("{record}\n").as_bytes()))
        {
            tracing::warn!("cannot record child {name} (pid {pid}): {e}");
        }
    }

    /// Start the child again with the spec it was last started with, optionally replacing
    /// its arguments (e.g. to listen on the address it had before).
    pub fn respawn(&self, name: &str, args: Option<Vec<String>>) -> anyhow::Result<Spawned> {
        let mut spec = self
            .lock()
            .get(name)
            .map(|m| m.spec.clone())
            .with_context(|| format!("no child named {name}"))?;
        if let Some(args) = args {
            spec.args = args;
        }
        self.spawn(spec)
    }

    /// The spec a child was started with.
    pub fn spec(&self, name: &str) -> Option<Spec> {
        self.lock().get(name).map(|m| m.spec.clone())
    }

    /// Send a signal to a child's process group; false if it is not running.
    pub fn signal(&self, name: &str, sig: Signal) -> bool {
        self.lock().get_mut(name).is_some_and(|m| m.signal(sig))
    }

    /// Pid of a running child.
    pub fn pid(&self, name: &str) -> Option<u32> {
        let mut map = self.lock();
        let m = map.get_mut(name)?;
        m.alive().then_some(m.pid)
    }

    /// Pids of every child still running.
    pub fn live_pids(&self) -> Vec<u32> {
        self.lock()
            .values_mut()
            .filter_map(|m| m.alive().then_some(m.pid))
            .collect()
    }

    /// Exit status of a child that has exited (`None` while it runs or if unknown).
    pub fn exit_status(&self, name: &str) -> Option<ExitStatus> {
        let mut map = self.lock();
        let m = map.get_mut(name)?;
        m.alive();
        m.status
    }

    /// Wait until the child exits, at most `timeout`; its status, or `None` on timeout.
    pub async fn wait(&self, name: &str, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.exit_status(name) {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stop a single child: `first` signal, then SIGKILL after `grace`; waits until reaped.
    pub async fn stop(&self, name: &str, first: Signal, grace: Duration) -> Option<ExitStatus> {
        self.signal(name, first);
        if let Some(s) = self.wait(name, grace).await {
            return Some(s);
        }
        self.signal(name, Signal::SIGKILL);
        self.wait(name, Duration::from_secs(5)).await
    }

    /// Stop every child: SIGTERM (SIGCONT too, in case one is paused), then SIGKILL after
    /// `grace`, and wait until all are reaped.
    pub async fn shutdown(&self, grace: Duration) {
        let names: Vec<String> = self.lock().keys().cloned().collect();
        for n in &names {
            self.signal(n, Signal::SIGTERM);
            self.signal(n, Signal::SIGCONT);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && !self.live_pids().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for n in &names {
            if self.signal(n, Signal::SIGKILL) {
                tracing::warn!(child = %n, "did not stop within {grace:?}; killed");
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && !self.live_pids().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL every child still running, without waiting (used on drop).
    pub fn kill_all(&self) {
        for m in self.lock().values_mut() {
            m.signal(Signal::SIGCONT);
            m.signal(Signal::SIGKILL);
        }
    }

    /// A guard that kills every child when dropped (panic or early return).
    pub fn guard(&self) -> KillGuard {
        KillGuard(self.clone())
    }
}

/// Kills every child of the supervisor when dropped; hold it for the whole run.
#[derive(Debug)]
pub struct KillGuard(Supervisor);

impl Drop for KillGuard {
    fn drop(&mut self) {
        self.0.kill_all();
    }
}

/// Wait for a child's announcement line, at most `timeout`. Non-announcement lines are
/// skipped. Fails if stdout closes first (the child exited: its log says why).
pub async fn wait_announce(
    spawned: &mut Spawned,
    timeout: Duration,
    log: &Path,
) -> anyhow::Result<Announce> {
    let fut = async {
        while let Some(line) = spawned.lines.recv().await {
            if let Some(a) = Announce::parse(&line) {
                return Ok(a);
            }
        }
        bail!(
            "{} exited before it was ready; its log {} ends with:\n{}",
            spawned.name,
            log.display(),
            log_tail(log, 15)
        )
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => bail!(
            "{} was not ready within {timeout:?}; its log {} ends with:\n{}",
            spawned.name,
            log.display(),
            log_tail(log, 15)
        ),
    }
}

/// The last `n` lines of a log file (empty if unreadable).
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..]
        .iter()
        .map(|l| format!("  | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc_alive(pid: u32) -> bool {
        // A zombie still has a /proc entry; read its state.
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                let state = s.rsplit(')').next().unwrap_or("").trim_start();
                !state.starts_with('Z')
            })
            .unwrap_or(false)
    }

    #[tokio::test]
    async fn lines_are_read_and_stderr_goes_to_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let sup = Supervisor::new(dir.path()).unwrap();
        let mut s = sup
            .spawn(Spec::new("echo", "/bin/sh").args(["-c", "echo hello; echo oops >&2"]))
            .unwrap();
        assert_eq!(s.lines.recv().await.as_deref(), Some("hello"));
        assert!(s.lines.recv().await.is_none());
        assert!(sup.wait("echo", Duration::from_secs(5)).await.is_some());
        let log = std::fs::read_to_string(sup.log_path("echo")).unwrap();
        assert_eq!(log.trim(), "oops");
    }

    #[tokio::test]
    async fn shutdown_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let sup = Supervisor::new(dir.path()).unwrap();
        // The shell ignores SIGTERM and starts a grandchild; both must go.
        let mut s = sup
            .spawn(
                Spec::new("stubborn", "/bin/sh")
                    .args(["-c", "trap '' TERM; sleep 60 & echo $!; wait"]),
            )
            .unwrap();
        let grandchild: u32 = s.lines.recv().await.unwrap().trim().parse().unwrap();
        assert!(proc_alive(s.pid) && proc_alive(grandchild));
        sup.shutdown(Duration::from_millis(200)).await;
        assert!(sup.live_pids().is_empty());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!proc_alive(s.pid), "leader survived");
        assert!(!proc_alive(grandchild), "grandchild survived");
    }

    #[tokio::test]
    async fn guard_kills_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let sup = Supervisor::new(dir.path()).unwrap();
        let s = sup
            .spawn(Spec::new("sleeper", "/bin/sleep").args(["60"]))
            .unwrap();
        {
            let _g = sup.guard();
        }
        assert!(sup.wait("sleeper", Duration::from_secs(5)).await.is_some());
        assert!(!proc_alive(s.pid));
    }

    #[tokio::test]
    async fn announce_timeout_and_early_exit_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let sup = Supervisor::new(dir.path()).unwrap();
        let mut s = sup
            .spawn(Spec::new("dies", "/bin/sh").args(["-c", "echo bad config >&2; exit 3"]))
            .unwrap();
        let e = wait_announce(&mut s, Duration::from_secs(5), &sup.log_path("dies"))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("exited before it was ready") && e.contains("bad config"),
            "{e}"
        );
        let mut s = sup
            .spawn(Spec::new("slow", "/bin/sleep").args(["60"]))
            .unwrap();
        let e = wait_announce(&mut s, Duration::from_millis(100), &sup.log_path("slow"))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("not ready within"), "{e}");
        sup.shutdown(Duration::from_millis(100)).await;
    }
}
