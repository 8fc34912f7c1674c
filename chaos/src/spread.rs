//! A link whose data plane is spread over child processes: one listening address, held
//! by several `flowline chaos data-plane` processes with `SO_REUSEPORT` (the kernel hands
//! each new connection to one of them), so one link can carry more connections than one
//! process may hold files. The controller stays the single control point:
//!
//! ```text
//!  Controller ── proxy "client-node1" (listen A, reserved here, never accepted on)
//!      │  after every change: the whole state {seq, enabled, toxics} as one JSON line
//!      ├──stdin──▶ data-plane 1 (listens on A, reuseport) ──stdout──▶ {applied: seq, counters}
//!      └──stdin──▶ data-plane 2 (listens on A, reuseport) ──stdout──▶ {applied: seq, counters}
//! ```
//!
//! A change counts as made once every process has answered with its `seq`
//! ([`Spread::settled`]). The processes end with the controller: their stdin closes when
//! the controller (or its whole process, even on SIGKILL) goes, and they exit on that EOF;
//! [`Spread::shutdown`] also kills and reaps them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpSocket;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};

use crate::error::{Error, Result};
use crate::link::DirCounters;

/// How long a data-plane process has to start listening, or to apply a state.
const PLANE_TIMEOUT: Duration = Duration::from_secs(15);

/// How to start a data-plane process: `program args... --name N --listen A --upstream U`
/// (the harness gives its own binary and `chaos data-plane`).
#[derive(Debug, Clone)]
pub struct DataPlane {
    /// The program (the `flowline` binary).
    pub program: PathBuf,
    /// Arguments before the link's own (`chaos`, `data-plane`).
    pub args: Vec<String>,
    /// Extra environment (e.g. the variable that makes a child die with its parent).
    pub env: Vec<(String, String)>,
    /// Where each process's stderr goes (`<name>.p<i>.log`); `None`: discarded.
    pub log_dir: Option<PathBuf>,
}

/// The whole state every data-plane process of a link holds, sent after every change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlaneState {
    /// Increases with every change; the process answers with it once applied.
    pub seq: u64,
    /// Disabled: listening stopped and every connection cut (a partition).
    pub enabled: bool,
    /// The toxics, each as the API's JSON (`{"name","type","stream",...}`).
    pub toxics: Vec<serde_json::Value>,
}

/// What a data-plane process reports on stdout, one JSON line after each state it
/// applies and once a second.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PlaneReport {
    /// The `seq` of the last state applied (0: listening, nothing applied yet).
    pub applied: u64,
    /// Live proxied connections.
    pub connections: i64,
    /// Bytes read from clients.
    pub up_received: u64,
    /// Bytes written upstream.
    pub up_sent: u64,
    /// Bytes read from upstream.
    pub down_received: u64,
    /// Bytes written to clients.
    pub down_sent: u64,
    /// Why the last state could not be applied, if it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One data-plane process as the API shows it (`processes` of a proxy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaneInfo {
    /// Its pid.
    pub pid: u32,
    /// Live connections it carries (as of its last report).
    pub connections: i64,
    /// Most connections it carried at once (as reported).
    pub peak_connections: i64,
    /// Whether it is still running.
    pub alive: bool,
}

/// Counters of the proxy the processes' reports add to.
#[derive(Debug, Clone)]
pub(crate) struct Totals {
    pub up: Arc<DirCounters>,
    pub down: Arc<DirCounters>,
    pub connections: Arc<AtomicI64>,
}

struct Replica {
    pid: u32,
    child: parking_lot::Mutex<Option<Child>>,
    lines: parking_lot::Mutex<Option<mpsc::UnboundedSender<String>>>,
    /// `None` until its first report (it listens from then on).
    report: watch::Receiver<Option<PlaneReport>>,
    peak: Arc<AtomicI64>,
    alive: Arc<AtomicBool>,
}

/// The processes of one spread link (owned by its proxy).
pub(crate) struct Spread {
    name: String,
    listen: SocketAddr,
    /// Bound (not listening) with `SO_REUSEPORT`: keeps the port ours while every process
    /// is disabled, without ever being handed a connection.
    _reserve: TcpSocket,
    replicas: Vec<Replica>,
    seq: AtomicU64,
}

impl std::fmt::Debug for Spread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spread")
            .field("name", &self.name)
            .field("listen", &self.listen)
            .field("processes", &self.replicas.len())
            .finish_non_exhaustive()
    }
}

fn plane_error(proxy: &str, reason: impl Into<String>) -> Error {
    Error::DataPlane {
        proxy: proxy.to_string(),
        reason: reason.into(),
    }
}

/// A socket bound to `addr` with `SO_REUSEPORT` (port 0: a free one), not listening.
pub(crate) fn reuseport_socket(addr: SocketAddr) -> Result<TcpSocket> {
    let sock = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    sock.set_reuseport(true)?;
    sock.bind(addr).map_err(|source| Error::Listen {
        addr: addr.to_string(),
        source,
    })?;
    Ok(sock)
}

impl Spread {
    /// Reserve `listen` and start `processes` data-plane processes on it, each
    /// forwarding to `upstream`; returns once every one listens.
    pub(crate) async fn start(
        plane: &DataPlane,
        name: &str,
        listen: SocketAddr,
        upstream: &str,
        processes: usize,
        allow_non_loopback: bool,
        totals: Totals,
    ) -> Result<Spread> {
        let reserve = reuseport_socket(listen)?;
        let listen = reserve.local_addr()?;
        let mut replicas = Vec::with_capacity(processes);
        for i in 1..=processes.max(1) {
            let r = spawn(
                plane,
                name,
                i,
                listen,
                upstream,
                allow_non_loopback,
                &totals,
            );
            match r {
                Ok(r) => replicas.push(r),
                Err(e) => {
                    shutdown_all(&replicas).await;
                    return Err(e);
                }
            }
        }
        let spread = Spread {
            name: name.to_string(),
            listen,
            _reserve: reserve,
            replicas,
            seq: AtomicU64::new(0),
        };
        if let Err(e) = spread.settled().await {
            spread.shutdown().await;
            return Err(e);
        }
        tracing::info!(proxy = %name, %listen, processes, "chaos: spread link started");
        Ok(spread)
    }

    /// Where the link listens.
    pub(crate) fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// Send the whole state to every process (applied asynchronously; see [`Self::settled`]).
    pub(crate) fn push(&self, enabled: bool, toxics: Vec<serde_json::Value>) {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let state = PlaneState {
            seq,
            enabled,
            toxics,
        };
        let Ok(line) = serde_json::to_string(&state) else {
            return;
        };
        for r in &self.replicas {
            if let Some(tx) = r.lines.lock().as_ref() {
                let _ = tx.send(line.clone());
            }
        }
    }

    /// Wait until every process has applied the last state pushed; an error names a
    /// process that exited, failed to apply it, or did not answer in time.
    pub(crate) async fn settled(&self) -> Result<()> {
        let target = self.seq.load(Ordering::SeqCst);
        for r in &self.replicas {
            let mut rx = r.report.clone();
            let wait = async {
                loop {
                    let ready = match &*rx.borrow_and_update() {
                        Some(rep) if rep.applied >= target => {
                            return match &rep.error {
                                Some(e) => Err(plane_error(
                                    &self.name,
                                    format!("process {} could not apply the change: {e}", r.pid),
                                )),
                                None => Ok(()),
                            };
                        }
                        Some(_) => true,
                        None => false,
                    };
                    let gone = !r.alive.load(Ordering::SeqCst) || rx.changed().await.is_err();
                    if gone {
                        // A process that exited carries no connection any more: nothing to
                        // apply there (it is reported by `Spread::dead`). One that never
                        // listened is an error.
                        return if ready {
                            Ok(())
                        } else {
                            Err(plane_error(
                                &self.name,
                                format!("process {} exited before it listened", r.pid),
                            ))
                        };
                    }
                }
            };
            tokio::time::timeout(PLANE_TIMEOUT, wait)
                .await
                .map_err(|_| {
                    plane_error(
                        &self.name,
                        format!("process {} did not answer within {PLANE_TIMEOUT:?}", r.pid),
                    )
                })??;
        }
        Ok(())
    }

    /// The processes, as the API shows them.
    pub(crate) fn info(&self) -> Vec<PlaneInfo> {
        self.replicas
            .iter()
            .map(|r| PlaneInfo {
                pid: r.pid,
                connections: r.report.borrow().as_ref().map_or(0, |r| r.connections),
                peak_connections: r.peak.load(Ordering::Relaxed),
                alive: r.alive.load(Ordering::SeqCst),
            })
            .collect()
    }

    /// Pids of the processes that exited while the link existed.
    pub(crate) fn dead(&self) -> Vec<u32> {
        self.replicas
            .iter()
            .filter(|r| !r.alive.load(Ordering::SeqCst) && r.child.lock().is_some())
            .map(|r| r.pid)
            .collect()
    }

    /// Pids of the processes.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.replicas.iter().map(|r| r.pid).collect()
    }

    /// End every process: close its stdin (it exits on EOF), kill what is left after a
    /// moment, and reap them all.
    pub(crate) async fn shutdown(&self) {
        shutdown_all(&self.replicas).await;
    }
}

async fn shutdown_all(replicas: &[Replica]) {
    for r in replicas {
        r.lines.lock().take();
    }
    for r in replicas {
        let child = r.child.lock().take();
        let Some(mut child) = child else { continue };
        match tokio::time::timeout(Duration::from_secs(2), child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
        }
        r.alive.store(false, Ordering::SeqCst);
    }
}

impl Drop for Spread {
    fn drop(&mut self) {
        // Without an await: kill (the child handles are kill_on_drop too); tokio reaps.
        for r in &self.replicas {
            r.lines.lock().take();
            if let Some(mut c) = r.child.lock().take() {
                let _ = c.start_kill();
            }
        }
    }
}

/// Start data-plane process `index` of link `name`.
fn spawn(
    plane: &DataPlane,
    name: &str,
    index: usize,
    listen: SocketAddr,
    upstream: &str,
    allow_non_loopback: bool,
    totals: &Totals,
) -> Result<Replica> {
    let stderr = match &plane.log_dir {
        Some(dir) => {
            let path = dir.join(format!("{name}.p{index}.log"));
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| plane_error(name, format!("cannot open {}: {e}", path.display())))?;
            Stdio::from(f)
        }
        None => Stdio::null(),
    };
    let mut cmd = Command::new(&plane.program);
    cmd.args(&plane.args)
        .args(["--name", name, "--listen"])
        .arg(listen.to_string())
        .args(["--upstream", upstream])
        .envs(plane.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr)
        // Its own group: a Ctrl-C at the terminal goes to the harness, which heals and
        // then ends these processes itself.
        .process_group(0)
        .kill_on_drop(true);
    if allow_non_loopback {
        cmd.arg("--allow-non-loopback");
    }
    let mut child = cmd.spawn().map_err(|e| {
        plane_error(
            name,
            format!("cannot start {}: {e}", plane.program.display()),
        )
    })?;
    let pid = child.id().unwrap_or(0);
    let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(plane_error(
            name,
            "the process's stdin/stdout are not piped",
        ));
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Some(mut line) = rx.recv().await {
            line.push('\n');
            if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
                break;
            }
        }
        // Dropping stdin: the process sees EOF and exits.
    });
    let (report_tx, report) = watch::channel(None);
    let alive = Arc::new(AtomicBool::new(true));
    let alive_reader = alive.clone();
    let peak = Arc::new(AtomicI64::new(0));
    let peak_reader = peak.clone();
    let totals = totals.clone();
    let proxy = name.to_string();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        let mut last = PlaneReport::default();
        while let Ok(Some(line)) = lines.next_line().await {
            let Ok(rep) = serde_json::from_str::<PlaneReport>(&line) else {
                continue;
            };
            add_delta(&totals, &last, &rep);
            peak_reader.fetch_max(rep.connections, Ordering::Relaxed);
            last = rep.clone();
            report_tx.send_replace(Some(rep));
        }
        alive_reader.store(false, Ordering::SeqCst);
        // What it carried is gone with it.
        totals
            .connections
            .fetch_sub(last.connections, Ordering::Relaxed);
        tracing::warn!(proxy = %proxy, pid, "chaos: a data-plane process exited");
        drop(report_tx); // wakes whoever waits for it
    });
    Ok(Replica {
        pid,
        child: parking_lot::Mutex::new(Some(child)),
        lines: parking_lot::Mutex::new(Some(tx)),
        report,
        peak,
        alive,
    })
}

/// Add what changed between two reports of one process to the proxy's counters.
fn add_delta(t: &Totals, last: &PlaneReport, now: &PlaneReport) {
    let d = |a: u64, b: u64| b.saturating_sub(a);
    t.up.received
        .fetch_add(d(last.up_received, now.up_received), Ordering::Relaxed);
    t.up.sent
        .fetch_add(d(last.up_sent, now.up_sent), Ordering::Relaxed);
    t.down
        .received
        .fetch_add(d(last.down_received, now.down_received), Ordering::Relaxed);
    t.down
        .sent
        .fetch_add(d(last.down_sent, now.down_sent), Ordering::Relaxed);
    t.connections
        .fetch_add(now.connections - last.connections, Ordering::Relaxed);
}
