//! One Kubernetes run from the cluster's side: create the objects, watch the workers'
//! pods while the coordinator gathers their results, and delete everything on every way
//! out.
//!
//! ```text
//! create ConfigMap, Service, EndpointSlice, Job
//!   ─▶ loop: list pods every `poll` ─┬─ a shard Failed (or stuck pulling) ─▶ error naming it
//!                                    ├─ past the deadline ─▶ error naming the active shards
//!        gather (coordinator) ends ──┴─▶ pods end (bounded) ─▶ result
//!   (Ctrl-C / SIGTERM: `stop` ends it) ─▶ pods' logs saved ─▶ teardown: delete by label, always
//! ```

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::bail;

use super::api::RunApi;
use super::manifests::Manifests;
use super::pods::Shards;

/// How long saving the pods' logs may take before teardown goes ahead without them.
const LOGS_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the pods have to end once the coordinator has everything it needs.
const PODS_END_GRACE: Duration = Duration::from_secs(30);
/// Consecutive failed pod listings that end the run (a flaky API server is tolerated).
const LIST_FAILURES_MAX: u32 = 5;

/// How the run's pods are watched.
#[derive(Debug, Clone)]
pub struct Watch {
    /// Number of workers (shards).
    pub workers: usize,
    /// How often the pods are listed.
    pub poll: Duration,
    /// When the run is given up if it has not ended.
    pub deadline: Instant,
    /// Save the pods' logs here (`worker<i>.log`) before teardown, however the run ended.
    pub logs: Option<PathBuf>,
}

/// Create `m` through `api`, run `gather` while the pods run, and tear everything down,
/// whatever happens: `gather` failing, a shard failing, the deadline passing, or `stop`
/// ending first (a signal; its value names it).
pub async fn supervise<T, S>(
    api: &RunApi,
    m: &Manifests,
    watch: Watch,
    gather: impl Future<Output = anyhow::Result<T>>,
    stop: impl Future<Output = S>,
) -> anyhow::Result<T>
where
    S: std::fmt::Display,
{
    let logs = watch.logs.clone();
    let workers = watch.workers;
    let created = std::sync::atomic::AtomicBool::new(false);
    let run = async {
        api.create(m).await?;
        created.store(true, std::sync::atomic::Ordering::Relaxed);
        eprintln!(
            "flowline: created Job {} ({} workers) in namespace {}",
            api.names().job(),
            watch.workers,
            api.namespace()
        );
        watch_pods(api, watch, gather).await
    };
    let result = tokio::select! {
        r = run => r,
        s = stop => Err(anyhow::anyhow!(
            "interrupted by {s}: the run was stopped and its Kubernetes objects deleted"
        )),
    };
    let mut result = result;
    if let Some(dir) = logs.filter(|_| created.load(std::sync::atomic::Ordering::Relaxed)) {
        match tokio::time::timeout(LOGS_TIMEOUT, api.save_logs(&dir, workers)).await {
            Ok(problems) => {
                for p in problems {
                    eprintln!("flowline: warning: {p}");
                }
            }
            Err(_) => eprintln!(
                "flowline: warning: the pods' logs were not all saved within {LOGS_TIMEOUT:?}"
            ),
        }
        // A failed run points at what its workers said.
        result = result.map_err(|e| {
            anyhow::anyhow!(
                "{e:#}; the workers' logs: {}",
                dir.join("worker<N>.log").display()
            )
        });
    }
    let problems = api.teardown().await;
    for p in &problems {
        eprintln!("flowline: warning: {p}");
    }
    if problems.is_empty() {
        eprintln!(
            "flowline: deleted the run's objects ({}) in namespace {}",
            api.names().selector(),
            api.namespace()
        );
    }
    result
}

async fn watch_pods<T>(
    api: &RunApi,
    watch: Watch,
    gather: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::pin!(gather);
    let mut tick = tokio::time::interval(watch.poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = None;
    let mut list_failures = 0;
    let mut gathered: Option<(T, Instant)> = None;
    loop {
        tokio::select! {
            r = &mut gather, if gathered.is_none() => {
                gathered = Some((r?, Instant::now() + PODS_END_GRACE));
            }
            _ = tick.tick() => {
                let shards = match api.pods().await {
                    Ok(pods) => {
                        list_failures = 0;
                        Shards::of(&pods, watch.workers)
                    }
                    Err(e) if list_failures + 1 < LIST_FAILURES_MAX => {
                        list_failures += 1;
                        tracing::warn!("{e:#}");
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                if !shards.failed.is_empty() {
                    let all: Vec<&str> = shards.failed.iter().map(|(_, m)| m.as_str()).collect();
                    bail!("{}", all.join("; "));
                }
                let done = shards.all_succeeded(watch.workers);
                let state = (shards.running, shards.succeeded.len());
                if last != Some(state) {
                    eprintln!(
                        "flowline: workers: {} running, {} succeeded, {} pending of {}",
                        state.0,
                        state.1,
                        watch.workers - state.0 - state.1,
                        watch.workers
                    );
                    last = Some(state);
                }
                match gathered.take() {
                    Some((v, _)) if done => return Ok(v),
                    Some((_, by)) if Instant::now() >= by => bail!(
                        "the coordinator has every result but shards {:?} did not end within {PODS_END_GRACE:?}",
                        shards.active
                    ),
                    g => gathered = g,
                }
                if Instant::now() >= watch.deadline {
                    bail!(
                        "the workers did not finish in time; shards still running or pending: {:?}",
                        shards.active
                    );
                }
            }
        }
    }
}
