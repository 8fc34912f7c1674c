//! The run's local loadgen worker processes (`flowline loadgen --shard i/n --coordinator
//! ADDR`): started on the plan, they report to the run's coordinator
//! ([`crate::coordinator`]) like workers anywhere else; here they are watched until the
//! start (one that exits early is named at once), stopped at the deadline, waited for at
//! the end. Their stdout is for people (announcements), not data.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;

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
    /// The coordinator's address (`host:port`) they connect to.
    pub coordinator: &'a str,
    /// IP their Prometheus endpoints listen on.
    pub metrics_ip: &'a str,
    /// The run's network (`--isolation netns`): worker `i` runs in host `worker<i>`, its
    /// metrics on that host's address.
    pub net: Option<&'a crate::isolation::Isolated>,
}

/// Start the workers; they connect to `l.coordinator`.
pub fn spawn(sup: &Supervisor, l: &Launch<'_>) -> anyhow::Result<()> {
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
            "--coordinator".into(),
            l.coordinator.to_string(),
            // Its Prometheus endpoint, given in its hello and listed in
            // metrics-targets.json.
            "--metrics-listen".into(),
            format!("{metrics_ip}:0"),
        ]);
        if let Some(net) = l.net {
            spec = spec.in_netns(net.netns(&name(w))?);
        }
        // Its stdout (announcements for people) is left unread: the supervisor drains it.
        sup.spawn(spec)?;
    }
    Ok(())
}

/// The first worker to exit, with its status, once one has (polled): before the start,
/// a worker that exits will never say hello, and waiting for the deadline would hide why.
pub async fn first_exit(sup: &Supervisor, workers: usize) -> (String, std::process::ExitStatus) {
    loop {
        for w in 0..workers {
            let name = name(w);
            if let Some(s) = sup.exit_status(&name) {
                return (name, s);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
