//! One worker (one shard of the plan): resolve the targets, start the threads, merge their
//! seconds into one tick line per second, run the HTTP personas on goose beside them, and
//! end with the done line (totals, the merged history, the process's own cost). When the
//! output streams the history, each second's chat events follow its tick in a `history`
//! line instead of waiting for the done line.
//!
//! ```text
//!  thread 1 (current-thread runtime + LocalSet)      thread 2 ...
//!   user tasks ──record──▶ Recorder (RefCell, no lock)
//!   ticker: every second swap the Recorder ──┐
//!                                            │ bounded mpsc (per-thread intervals)
//!                                            ▼
//!  caller's runtime: merge intervals of second t from every thread
//!                    ──▶ Output: tick line (+ history line)  … at the end ──▶ done line
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::checker;
use crate::error::{LoadgenError, Result};
use crate::httpload::PostLog;
use crate::plan::{Plan, PlanUser, Shard};
use crate::recorder::Recorder;
use crate::scenario::Scenario;
use crate::wire::{
    AckedMessage, Counters, Done, HistoryLine, Lines, Output, Resources, Tick, WorkerLine,
};
use crate::worker::connect::resolve;
use crate::worker::context::Clock;
use crate::worker::history::History;
use crate::worker::thread::{ThreadMsg, thread_main};

/// What one worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The scenario (overrides already applied).
    pub scenario: Arc<Scenario>,
    /// The provisioned plan.
    pub plan: Arc<Plan>,
    /// Which users of the plan this worker runs.
    pub shard: Shard,
    /// WebSocket URLs of the nodes; user `i` uses
    /// [`target_index`](crate::worker::target_index)`(i, attempt, len)`.
    pub targets: Vec<String>,
    /// Common start time of all workers on this machine's clock (`None`: now), so their
    /// seconds line up.
    pub start_at: Option<SystemTime>,
    /// This machine's clock minus the run's (the coordinator's), µs: times the users stamp
    /// (send nonces, receive times) are on the run's clock, so a delivery sent by one
    /// worker and received by another is measured across machines whose clocks differ.
    /// 0 without a coordinator.
    pub clock_offset_us: i64,
    /// Runtime threads (each records into its own histograms).
    pub threads: usize,
    /// Cumulative metrics for the Prometheus endpoint (`--metrics-listen`), if served.
    pub metrics: Option<Arc<crate::metrics::WorkerMetrics>>,
    /// Run folder for worker-side files (goose's HTML report), if any.
    pub out: Option<std::path::PathBuf>,
}

/// Run the shard to the end of the drain, calling `on_line` with every line as JSON text
/// (tick lines, then the done line).
pub async fn run(
    cfg: WorkerConfig,
    cancel: CancellationToken,
    on_line: impl FnMut(&str),
) -> Result<()> {
    run_to(cfg, cancel, Lines(on_line)).await
}

/// Run the shard to the end of the drain, sending every line (tick lines, then the done
/// line) to `out`.
pub async fn run_to(
    cfg: WorkerConfig,
    cancel: CancellationToken,
    mut out: impl Output,
) -> Result<()> {
    let urls = match &cfg.scenario.target {
        Some(t) if cfg.targets.is_empty() => t.urls.clone(),
        _ => cfg.targets.clone(),
    };
    if urls.is_empty() {
        return Err(LoadgenError::Invalid("no target node URLs".into()));
    }
    let mut targets = Vec::new();
    for u in &urls {
        let mut t = resolve(u).await?;
        if let Some(g) = &cfg.scenario.target {
            t.headers = g.headers.clone();
            t.subprotocol = g.subprotocol.clone();
        }
        targets.push(t);
    }
    let s = cfg.scenario.clone();
    let now_sys = SystemTime::now();
    let now = Instant::now();
    let start_sys = cfg.start_at.unwrap_or(now_sys);
    let start = match start_sys.duration_since(now_sys) {
        Ok(ahead) => now + ahead,
        Err(behind) => now.checked_sub(behind.duration()).unwrap_or(now),
    };
    let start_unix_us = start_sys
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
        .saturating_add_signed(-cfg.clock_offset_us);
    let clock = Clock {
        start,
        start_unix_us,
        send_end: start + s.warmup + s.duration,
        end: start + s.total_time(),
    };
    let users: Vec<PlanUser> = cfg.plan.shard_users(cfg.shard).cloned().collect();
    if users.len() > crate::plan::MAX_USERS_PER_WORKER {
        return Err(LoadgenError::Invalid(format!(
            "shard {} has {} users, more than {} per worker",
            cfg.shard,
            users.len(),
            crate::plan::MAX_USERS_PER_WORKER
        )));
    }
    // HTTP personas run on goose, beside the WebSocket users; the posting ones record
    // into `posts` on the same clock (their counters join the tick lines, their posts
    // the done line).
    let posts = Arc::new(PostLog::new(start, start_unix_us));
    let http_load = crate::httpload::HttpLoad::from_scenario(
        &s,
        &users,
        crate::upload::http_base(&targets[0].url),
        cfg.out
            .as_ref()
            .map(|d| d.join(format!("goose-report-w{}.html", cfg.shard.index))),
        posts.clone(),
    );
    let goose = http_load.map(|load| {
        let delay = start.saturating_duration_since(Instant::now());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            load.run().await
        })
    });
    let threads = cfg.threads.clamp(1, 64).min(users.len().max(1));
    tracing::info!(
        shard = %cfg.shard, users = users.len(), threads,
        "worker starting: {} target(s)", targets.len()
    );
    let stream = out.streams_history();
    let (tx, mut rx) = mpsc::channel::<ThreadMsg>(threads * 8);
    let mut per_thread: Vec<Vec<PlanUser>> = vec![Vec::new(); threads];
    for (i, u) in users.into_iter().enumerate() {
        per_thread[i % threads].push(u);
    }
    let mut handles = Vec::new();
    for (k, users) in per_thread.into_iter().enumerate() {
        let tx = tx.clone();
        let scenario = s.clone();
        let targets = targets.clone();
        let cancel = cancel.clone();
        let handle = std::thread::Builder::new()
            .name(format!("loadgen-{k}"))
            .spawn(move || thread_main(scenario, clock, targets, users, cancel, tx, stream))
            .map_err(|e| LoadgenError::io("spawning a worker thread", e))?;
        handles.push(handle);
    }
    drop(tx);
    // Tell the output when the run began (the coordinator's start skew): the threads
    // wake at the same instant on the same clock.
    tokio::time::sleep_until(start.into()).await;
    let woke = Instant::now();
    out.started(clock.unix_us(woke), woke.saturating_duration_since(start))?;

    // Merge the threads' intervals second by second.
    let warm = s.warmup.as_secs_f64();
    let send_end = warm + s.duration.as_secs_f64();
    let mut pending: BTreeMap<u64, Second> = BTreeMap::new();
    let mut totals = Counters::default();
    let mut done = Done {
        worker: cfg.shard.index,
        ..Done::default()
    };
    let mut history = History::default();
    // The last second emitted.
    let mut last_t = 0;
    // Streamed: the acked messages are kept only for the metrics endpoint's lost count.
    let mut acked_for_metrics: Vec<AckedMessage> = Vec::new();
    let prom = cfg.metrics.clone();
    let emit = |t: u64, sec: Second, totals: &mut Counters, out: &mut dyn Output| -> Result<()> {
        let Second {
            mut rec,
            users,
            events,
            ..
        } = sec;
        let http = posts.take_until(t);
        totals.add(&http);
        rec.counters.add(&http);
        if let Some(m) = &prom {
            m.observe(users, &rec);
        }
        let tick = Tick {
            worker: cfg.shard.index,
            t,
            elapsed_ms: t * 1000,
            measuring: (t as f64 - 1.0) >= warm - 1e-9 && (t as f64) <= send_end + 1e-9,
            drain: (t as f64 - 1.0) >= send_end - 1e-9,
            users,
            counters: rec.counters.clone(),
            hist: rec.encode_hists()?,
        };
        out.send(&WorkerLine::Tick(tick))?;
        send_history(out, cfg.shard.index, t, events)
    };
    while let Some(msg) = rx.recv().await {
        match msg {
            ThreadMsg::Tick {
                t,
                rec,
                users,
                events,
            } => {
                totals.add(&rec.counters);
                let entry = pending.entry(t).or_default();
                entry.threads += 1;
                entry.rec.merge(&rec);
                entry.users += users;
                if let Some(mut e) = events {
                    if cfg.metrics.is_some() {
                        acked_for_metrics.append(&mut e.acked);
                    }
                    e.acked = Vec::new();
                    entry.events.append(e);
                }
                // Emit every second that all threads have reported, in order.
                while let Some(first) = pending.first_entry() {
                    if first.get().threads < threads {
                        break;
                    }
                    let (t, sec) = first.remove_entry();
                    last_t = t;
                    emit(t, sec, &mut totals, &mut out)?;
                }
            }
            ThreadMsg::Done { history: h, peak } => {
                history.append(h);
                done.peak_users += peak;
            }
        }
    }
    // Threads that ended early leave partial seconds behind.
    for (t, sec) in std::mem::take(&mut pending) {
        last_t = t;
        emit(t, sec, &mut totals, &mut out)?;
    }
    for h in handles {
        if h.join().is_err() {
            return Err(LoadgenError::Invalid("a worker thread panicked".into()));
        }
    }
    done.totals = totals;
    if stream {
        // Whatever came after the threads' last tick (nothing, normally).
        acked_for_metrics.append(&mut history.acked);
        let rest = history.take_events();
        send_history(&mut out, cfg.shard.index, last_t, rest)?;
    } else {
        done.acked = history.acked;
        done.sends = history.sends;
        done.receives = history.receives;
    }
    done.recipients = history.recipients;
    done.generic = history.generic.map(|mut g| {
        // In place, so the checker need not sort a copy.
        g.sort();
        g
    });
    if let Some(g) = goose {
        let result = g.await;
        // Posts answered after the last tick: in the totals and the checker's input.
        done.totals.add(&posts.take_rest());
        let (acked, sends) = posts.take_history();
        done.acked.extend(acked);
        done.sends.extend(sends);
        match result {
            Ok(Ok((report, errors))) => {
                for (kind, n) in errors {
                    done.totals.errors += n;
                    *done.totals.errors_by_kind.entry(kind).or_default() += n;
                }
                done.http = Some(report);
            }
            Ok(Err(e)) => {
                tracing::error!("HTTP personas: {e}");
                done.totals.error("http:goose");
            }
            Err(e) => {
                tracing::error!("HTTP personas: {e}");
                done.totals.error("http:goose");
            }
        }
    }
    if let Some(m) = &cfg.metrics {
        let lost = match (&cfg.scenario.target, &done.generic) {
            (Some(t), Some(g)) => {
                checker::generic::check(t, g, cfg.scenario.population.users).map_or(0, |r| r.lost)
            }
            _ if stream => {
                // The HTTP posts' acked messages are in the done line.
                acked_for_metrics.extend_from_slice(&done.acked);
                checker::check(&acked_for_metrics, &done.recipients).lost
            }
            _ => checker::check(&done.acked, &done.recipients).lost,
        };
        m.set_lost(lost);
    }
    done.resources = Resources::of_self();
    out.send(&WorkerLine::Done(Box::new(done)))
}

/// One second being merged from the threads.
#[derive(Default)]
struct Second {
    /// Threads that reported it.
    threads: usize,
    rec: Recorder,
    users: u64,
    /// Its chat events (streamed history).
    events: History,
}

/// The `history` line of second `t`, unless it has no events.
fn send_history(out: &mut dyn Output, worker: usize, t: u64, events: History) -> Result<()> {
    if events.sends.is_empty() && events.receives.is_empty() {
        return Ok(());
    }
    out.send(&WorkerLine::History(HistoryLine {
        worker,
        t,
        sends: events.sends,
        receives: events.receives,
    }))
}
