//! `flowline loadgen` and `flowline scenario`: flags and entry points.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use tokio_util::sync::CancellationToken;

use crate::aggregate::{Aggregator, RunMeta};
use crate::collect;
use crate::coordinator::client::Link;
use crate::coordinator::{Hello, PROTOCOL_VERSION, build_id, scenario_hash};
use crate::metrics::WorkerMetrics;
use crate::plan::{self, Plan, Shard};
use crate::scenario::{Overrides, Scenario};
use crate::wire::StreamedLines;
use crate::worker::{self, WorkerConfig};
use flowline_protocol::announce::Announce;

/// Run a share of a scenario's simulated users as one worker process.
///
/// Worker mode (what `flowline run` starts): `--scenario FILE --plan plan.json --shard I/N
/// --targets ws://…/ws[,…] --coordinator HOST:PORT`. Says hello to the coordinator, starts
/// at its `start`, and streams one JSON `tick` line per second and a final `done` line to it
/// (docs/coordinator.md); without --coordinator they go to stdout. Logs go to stderr.
///
/// Standalone mode: `--scenario FILE --target http://127.0.0.1:8080 --admin-secret S
/// --out DIR` provisions the users itself, runs them in this process, and writes
/// scenario.toml, plan.json, summary.json, histograms.hlog and timeline.csv into DIR.
/// Exit status: 0 thresholds held, 1 a threshold failed, 2 the run could not be carried out.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Scenario file (TOML).
    #[arg(long, value_name = "FILE")]
    pub scenario: PathBuf,
    /// Plan written by the harness (users, tokens, channels). Without it, provision
    /// through `--target` (standalone mode).
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// This worker's share: I/N, 0-based (users with index % N == I).
    #[arg(long, value_name = "I/N", default_value = "0/1")]
    pub shard: String,
    /// Node WebSocket URLs, comma-separated (worker mode; default: derived from --target).
    #[arg(long, value_name = "URL[,URL]", value_delimiter = ',')]
    pub targets: Vec<String>,
    /// Node HTTP base URLs, comma-separated (standalone mode: the first one provisions).
    #[arg(long, value_name = "URL[,URL]", value_delimiter = ',')]
    pub target: Vec<String>,
    /// Admin secret of the node (standalone mode).
    #[arg(long, env = "FLOWLINE_ADMIN_SECRET", hide_env_values = true)]
    pub admin_secret: Option<String>,
    /// Run folder: standalone mode writes every file there (default:
    /// runs/<unix time>-<scenario>); worker mode writes goose's HTML report there
    /// (default: the folder of --plan).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Common start time of all workers, Unix milliseconds (default: now). Ignored with
    /// --coordinator, whose `start` gives it.
    #[arg(long, value_name = "UNIX_MS")]
    pub start_at: Option<u64>,
    /// Worker mode: the harness's coordinator (HOST:PORT) to say hello to, take the start
    /// from, and stream tick and done lines to (docs/coordinator.md). Without it, the lines
    /// go to stdout. Exit 2 if it refuses this worker (other build, scenario or seed), never
    /// starts the run, or goes away before the done line.
    #[arg(long, value_name = "HOST:PORT", requires = "plan")]
    pub coordinator: Option<String>,
    /// How long to keep trying to reach the coordinator, and then to wait for its start.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "120s")]
    pub coordinator_timeout: Duration,
    /// Standalone mode: provision and write scenario.toml and plan.json into --out, then
    /// exit (start workers on the plan yourself).
    #[arg(long)]
    pub provision_only: bool,
    /// Runtime threads (default: available cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Override the scenario's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Override the number of users.
    #[arg(long)]
    pub users: Option<u32>,
    /// Override the measured duration (e.g. 30s).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Serve Prometheus metrics (`flowline_loadgen_*`, label `worker`) at
    /// `http://ADDR/metrics` (e.g. 127.0.0.1:0) and announce the URL as one JSON line
    /// on stdout: `{"event":"loadgen_metrics","worker":I,"metrics":"http://…","pid":…}`.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
}

/// Entry point of `flowline loadgen`.
pub async fn main(args: Args) -> anyhow::Result<ExitCode> {
    let base = Scenario::from_path(&args.scenario)?;
    let overrides = Overrides {
        seed: args.seed,
        users: args.users,
        duration: args.duration,
        ..Overrides::default()
    };
    let scenario = Arc::new(base.apply(&overrides)?);
    let shard = Shard::parse(&args.shard)?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let start_at = args
        .start_at
        .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms));
    let cancel = CancellationToken::new();
    {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                tracing::warn!("interrupted: closing connections");
                cancel.cancel();
            }
        });
    }
    let (metrics, metrics_url) = match &args.metrics_listen {
        Some(addr) => {
            let (m, url) = serve_metrics(addr, shard, cancel.child_token()).await?;
            (Some(m), Some(url))
        }
        None => (None, None),
    };
    if let Some(plan_path) = &args.plan {
        let plan = Arc::new(Plan::read(plan_path)?);
        if args.targets.is_empty() && scenario.target.is_none() {
            bail!("--targets (node WebSocket URLs) is required with --plan");
        }
        let cfg = WorkerConfig {
            scenario,
            plan,
            shard,
            targets: args.targets.clone(),
            start_at,
            clock_offset_us: 0,
            threads,
            metrics,
            out: args
                .out
                .clone()
                .or_else(|| plan_path.parent().map(std::path::Path::to_path_buf)),
        };
        let Some(addr) = &args.coordinator else {
            // By hand, without a coordinator: the lines go to stdout (for tools), the
            // history streamed as to a coordinator.
            let mut stdout = std::io::stdout();
            let lines = StreamedLines(|line: &str| {
                // A closed stdout means the reader is gone; nothing useful to do about it.
                let _ = writeln!(stdout, "{line}");
                let _ = stdout.flush();
            });
            worker::run_to(cfg, cancel, lines).await?;
            return Ok(ExitCode::SUCCESS);
        };
        run_coordinated(addr, &args, cfg, metrics_url, cancel).await?;
        return Ok(ExitCode::SUCCESS);
    }
    standalone(args, scenario, shard, threads, start_at, cancel, metrics).await
}

/// Worker mode with a coordinator: hello, wait for the start, run, stream every line to
/// it. A refusal, a missing start or a lost coordinator is an error (exit 2).
async fn run_coordinated(
    addr: &str,
    args: &Args,
    mut cfg: WorkerConfig,
    metrics_url: Option<String>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    if args.start_at.is_some() {
        tracing::warn!("--start-at is ignored with --coordinator (the coordinator's start counts)");
    }
    let hello = Hello {
        version: PROTOCOL_VERSION,
        shard: cfg.shard.index,
        shards: cfg.shard.count,
        build: build_id(),
        scenario_hash: scenario_hash(&cfg.scenario),
        seed: cfg.scenario.seed,
        metrics: metrics_url,
        host: host_name(),
        pid: Some(std::process::id()),
    };
    let wait = args.coordinator_timeout;
    let mut link = Link::connect(addr, wait).await?;
    let start = tokio::select! {
        s = link.handshake(&hello, wait) => s?,
        _ = cancel.cancelled() => bail!("interrupted before the start"),
    };
    cfg.start_at = Some(start.local_start());
    cfg.clock_offset_us = start.clock_offset_us;
    let (out, finish) = link.into_output(cancel.clone());
    // The output is dropped when the run returns, which lets the writer flush and close.
    let ran = worker::run_to(cfg, cancel, out).await;
    let finished = finish.finish().await;
    finished?;
    ran?;
    Ok(())
}

/// This machine's name, for the coordinator's messages (a pod's name in Kubernetes).
fn host_name() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

/// Start the Prometheus endpoint and announce it on stdout; returns it and its URL.
async fn serve_metrics(
    addr: &str,
    shard: Shard,
    cancel: CancellationToken,
) -> anyhow::Result<(Arc<WorkerMetrics>, String)> {
    let metrics = Arc::new(WorkerMetrics::new(shard.index));
    let bound = crate::metrics::serve(addr, metrics.clone(), cancel).await?;
    let url = format!("http://{bound}/metrics");
    let line = serde_json::to_string(&Announce::LoadgenMetrics {
        worker: shard.index as u32,
        metrics: url.clone(),
        pid: std::process::id(),
    })?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{line}")?;
    stdout.flush()?;
    Ok((metrics, url))
}

async fn standalone(
    args: Args,
    scenario: Arc<Scenario>,
    shard: Shard,
    threads: usize,
    start_at: Option<SystemTime>,
    cancel: CancellationToken,
    metrics: Option<Arc<WorkerMetrics>>,
) -> anyhow::Result<ExitCode> {
    if let Some(t) = &scenario.target {
        return standalone_generic(
            args,
            t.urls.clone(),
            scenario,
            shard,
            threads,
            start_at,
            cancel,
            metrics,
        )
        .await;
    }
    let http = match (&args.target, &scenario.cluster.external) {
        (t, _) if !t.is_empty() => t.clone(),
        (_, Some(ext)) => ext.http.clone(),
        _ => bail!("give --plan (worker mode) or --target http://… (standalone mode)"),
    };
    let secret = args
        .admin_secret
        .clone()
        .or_else(|| scenario.cluster.external.as_ref()?.admin_secret.clone())
        .context("standalone mode needs --admin-secret (or cluster.admin_secret)")?;
    let targets = if !args.targets.is_empty() {
        args.targets.clone()
    } else if let Some(ext) = scenario
        .cluster
        .external
        .as_ref()
        .filter(|_| args.target.is_empty())
    {
        ext.ws.clone()
    } else {
        http.iter()
            .map(|h| format!("{}/ws", h.trim_end_matches('/').replacen("http", "ws", 1)))
            .collect()
    };
    let (stamp, out) = standalone_folder(&args, &scenario)?;
    tracing::info!(users = scenario.population.users, node = %http[0], "provisioning");
    let plan = plan::provision(&scenario, &http[0], &secret)
        .await
        .context("provisioning the users")?;
    if write_plan(&plan, &out, args.provision_only)? {
        return Ok(ExitCode::SUCCESS);
    }
    let meta = RunMeta {
        started_at: format!("{stamp}"),
        phase: scenario.cluster.phase.as_str().to_string(),
        nodes: http.len() as u32,
        notes: vec!["standalone loadgen against an external cluster".into()],
        ..RunMeta::default()
    };
    run_and_report(
        plan, targets, &out, meta, scenario, shard, threads, start_at, cancel, metrics,
    )
    .await
}

/// The run folder of a standalone run (`--out`, else `runs/<unix time>-<name>`), created
/// with the scenario in it; returns the Unix time it is named after.
fn standalone_folder(args: &Args, scenario: &Scenario) -> anyhow::Result<(u64, PathBuf)> {
    let stamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("runs/{stamp}-{}", scenario.name)));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(out.join("scenario.toml"), scenario.to_toml())
        .with_context(|| format!("writing {}", out.join("scenario.toml").display()))?;
    Ok((stamp, out))
}

/// Write `plan.json` into the run folder; with `--provision-only` print its path and
/// return true: the run stops there.
fn write_plan(plan: &Plan, out: &std::path::Path, provision_only: bool) -> anyhow::Result<bool> {
    plan.write(&out.join("plan.json"))?;
    if provision_only {
        println!("{}", out.join("plan.json").display());
    }
    Ok(provision_only)
}

/// Standalone run of a generic WebSocket target: nothing to provision.
#[allow(clippy::too_many_arguments)]
async fn standalone_generic(
    args: Args,
    urls: Vec<String>,
    scenario: Arc<Scenario>,
    shard: Shard,
    threads: usize,
    start_at: Option<SystemTime>,
    cancel: CancellationToken,
    metrics: Option<Arc<WorkerMetrics>>,
) -> anyhow::Result<ExitCode> {
    let (stamp, out) = standalone_folder(&args, &scenario)?;
    let plan = Plan::synthetic(&scenario);
    if write_plan(&plan, &out, args.provision_only)? {
        return Ok(ExitCode::SUCCESS);
    }
    let targets = if args.targets.is_empty() {
        urls
    } else {
        args.targets.clone()
    };
    let meta = RunMeta {
        started_at: format!("{stamp}"),
        phase: "external".into(),
        nodes: targets.len() as u32,
        notes: vec!["standalone loadgen against a generic WebSocket service".into()],
        ..RunMeta::default()
    };
    run_and_report(
        plan, targets, &out, meta, scenario, shard, threads, start_at, cancel, metrics,
    )
    .await
}

/// Run the plan's users in this process, aggregate, write the run folder and report.
#[allow(clippy::too_many_arguments)]
async fn run_and_report(
    plan: Plan,
    targets: Vec<String>,
    out: &std::path::Path,
    meta: RunMeta,
    scenario: Arc<Scenario>,
    shard: Shard,
    threads: usize,
    start_at: Option<SystemTime>,
    cancel: CancellationToken,
    metrics: Option<Arc<WorkerMetrics>>,
) -> anyhow::Result<ExitCode> {
    if shard.count == 1 && plan.users.len() > plan::MAX_USERS_PER_WORKER {
        bail!(
            "{} users need {} worker processes: use `flowline run`",
            plan.users.len(),
            plan.workers_needed()
        );
    }
    let cfg = WorkerConfig {
        scenario: scenario.clone(),
        plan: Arc::new(plan),
        shard,
        targets,
        start_at,
        clock_offset_us: 0,
        threads,
        metrics,
        out: Some(out.to_path_buf()),
    };
    let mut agg = Aggregator::new(&scenario, 1);
    agg.spill_to(&out.join("history"))?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    // The worker runs here, its lines go through the same loop as `flowline run`'s
    // worker processes' (the channel closes when it returns and drops its sender).
    let lines = StreamedLines(move |line: &str| {
        let _ = tx.send((0, line.to_string()));
    });
    let work = worker::run_to(cfg, cancel, lines);
    let follow = collect::collect(&mut agg, rx, |_, _| false, None, || async {});
    let (worked, collected) = tokio::join!(work, follow);
    worked?;
    if let Some(e) = collected.first_bad {
        return Err(e).context("reading the worker's lines");
    }
    let summary = agg.finish(out, meta)?;
    collect::print_verdict(&summary, out, |_, v| format!("{v}"));
    Ok(if summary.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
