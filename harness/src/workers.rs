//! The run's loadgen worker processes (`flowline loadgen --shard i/n`): started on the
//! plan with one common start instant, their stdout lines merged into one channel for
//! [`flowline_loadgen::collect`], stopped at the deadline, waited for at the end.

use std::path::Path;
use std::time::Duration;

use flowline_loadgen::collect::LineRx;
use nix::sys::signal::Signal;
use tokio::sync::mpsc;

use crate::supervisor::{Spec, Supervisor};

/// Name of worker `w` (0-based shard index): `worker<w+1>`.
pub fn name(w: usize) -> String {
    format!("worker{}", w + 1)
}

/// What every worker is started with.
pub struct Launch<'a> {
    /// The run folder's scenario.toml.
    pub scenario: &'a Path,
    /// The run folder's plan.json.
    pub plan: &'a Path,
    /// How many workers (shards).
    pub count: usize,
    /// The WebSocket URLs the users connect to.
    pub targets: &'a [String],
    /// Common start instant, Unix milliseconds (ticks count from it).
    pub start_at_ms: i64,
    /// IP their Prometheus endpoints listen on.
    pub metrics_ip: &'a str,
    /// The run's network (`--isolation netns`): worker `i` runs in host `worker<i>`, its
    /// metrics on that host's address.
    pub net: Option<&'a crate::isolation::Isolated>,
}

/// Start the workers; their stdout lines arrive as `(shard index, line)`, and the
/// channel closes when every worker's stdout has.
pub fn spawn(sup: &Supervisor, l: &Launch<'_>) -> anyhow::Result<LineRx> {
    let (tx, rx) = mpsc::unbounded_channel::<(usize, String)>();
    let workers = l.count;
    for w in 0..workers {
        let metrics_ip = match l.net {
            Some(net) => net.host(&name(w))?.addr().to_string(),
            None => l.metrics_ip.to_string(),
        };
        let mut spec = Spec::flowline(name(w))?.args([
            "loadgen".to_string(),
            "--scenario".into(),
            l.scenario.to_string_lossy().into_owned(),
            "--plan".into(),
            l.plan.to_string_lossy().into_owned(),
            "--shard".into(),
            format!("{w}/{workers}"),
            "--targets".into(),
            l.targets.join(","),
            "--start-at".into(),
            l.start_at_ms.to_string(),
            // Its Prometheus endpoint, announced on stdout and listed in
            // metrics-targets.json.
            "--metrics-listen".into(),
            format!("{metrics_ip}:0"),
        ]);
        if let Some(net) = l.net {
            spec = spec.in_netns(net.netns(&name(w))?);
        }
        let mut spawned = sup.spawn(spec)?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(line) = spawned.lines.recv().await {
                if tx.send((w, line)).is_err() {
                    break;
                }
            }
        });
    }
    Ok(rx)
}

/// Ask every worker to stop (SIGINT: they close their connections and report).
pub async fn stop_all(sup: &Supervisor, workers: usize) {
    for w in 0..workers {
        sup.stop(&name(w), Signal::SIGINT, Duration::from_secs(5))
            .await;
    }
}

/// Wait for every worker to exit (killing any that does not); a note for each that did
/// not end well.
pub async fn wait_all(sup: &Supervisor, workers: usize) -> Vec<String> {
    let mut notes = Vec::new();
    for w in 0..workers {
        let name = name(w);
        match sup.wait(&name, Duration::from_secs(10)).await {
            Some(s) if s.success() => {}
            Some(s) => notes.push(format!("{name} exited with {s}; see logs/{name}.log")),
            None => {
                sup.stop(&name, Signal::SIGKILL, Duration::from_secs(1))
                    .await;
                notes.push(format!("{name} did not exit; killed"));
            }
        }
    }
    notes
}

/// How many workers exited unsuccessfully.
pub fn failed(sup: &Supervisor, workers: usize) -> usize {
    (0..workers)
        .filter(|&w| sup.exit_status(&name(w)).is_some_and(|s| !s.success()))
        .count()
}
