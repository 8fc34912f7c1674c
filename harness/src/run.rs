//! `flowline run`: one scenario from file to finished run folder.
//!
//! ```text
//! scenario (+ flags) ─▶ what the run needs of this machine (crate::capacity; exit 2 if
//!   it cannot hold it) ─▶ run folder, scenario.toml (seed filled in)
//!   ─▶ services (given URLs, throwaway servers, or exit 2)
//!   ─▶ proxies node<i>-postgres / node<i>-redis ─▶ nodes (flowline server, announce)
//!   ─▶ proxies client-node<i> (over data-plane processes when the users need it)
//!   ─▶ provision plan.json through node1's admin API
//!   (generic WebSocket target instead: proxies client-target<i> per ws:// URL, no nodes,
//!    no services, plan.json from Plan::synthetic)
//!   ─▶ coordinator listener ─▶ workers (flowline loadgen --shard i/n --coordinator A)
//!   ─▶ hello from every shard, clocks measured, start {t0} (coordinator::serve)
//!   ─▶ their lines ─▶ Aggregator (progress every second)
//!        └─ fault schedule from run start + warm-up, events.jsonl
//!   ─▶ workers done (or deadline) ─▶ heal ─▶ summary.json, histograms.hlog,
//!      timeline.csv ─▶ report.html ─▶ teardown (nodes, proxies, services)
//! ```
//!
//! With `--isolation netns` ([`crate::isolation`]) the run first creates its network (one
//! namespace per node, service and worker on a bridge of its own); every child starts in
//! its host's namespace, there are no link proxies, and teardown removes the network
//! after the last child is gone.
//!
//! Every child process is owned by one [`Supervisor`]: teardown stops them on success and
//! failure, a SIGINT/SIGTERM handler ends the run the same way, and a drop guard kills them
//! if the harness panics.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flowline_chaos::DataPlane;
use flowline_chaos::controller::Controller;
use flowline_chaos::events::EventLog;
use flowline_loadgen::aggregate::{Aggregator, NodeCost, RunMeta, Summary};
use flowline_loadgen::collect;
use flowline_loadgen::scenario::{Isolation, Overrides, Scenario};
use nix::sys::signal::Signal;
use serde_json::json;

use crate::capacity::Need;
use crate::cluster::{Cluster, ClusterCtx, start_cluster};
use crate::console::Console;
use crate::coordinator;
use crate::faults::{FaultRunner, NodeTargets};
use crate::generic_target::generic_target;
use crate::isolation::{self, Isolated};
use crate::links::LinkSet;
use crate::metrics_targets::MetricsTargets;
use crate::preflight::{self, ScenarioSource, load_scenario};
use crate::run_id::RunIdClaim;
use crate::supervisor::Supervisor;
use crate::workers;

/// Extra time after warm-up + duration + drain before workers are stopped.
pub const WORKER_GRACE: Duration = Duration::from_secs(30);

/// Seconds after the stop before the coordinator drops the workers' connections.
pub const STOP_GRACE_TICKS: u32 = 15;

/// Default of `--workers-timeout`: how long every worker has to say hello.
pub const WORKERS_TIMEOUT: Duration = Duration::from_secs(60);

/// Everything `flowline run` needs to know.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The scenario.
    pub scenario: ScenarioSource,
    /// Parent folder of the run folder.
    pub out: PathBuf,
    /// Flag overrides.
    pub overrides: Overrides,
    /// How to find Postgres/Redis.
    pub services: crate::services::Options,
    /// Worker processes (default: as many as the users need).
    pub workers: Option<usize>,
    /// Put the run's link proxies on this Toxiproxy API (`http://host:8474`) instead of
    /// the embedded chaos proxy.
    pub toxiproxy_url: Option<String>,
    /// Serve the run's own metrics endpoints (chaos controller, workers) on every
    /// interface and name them with this host in metrics-targets.json (default: loopback).
    pub metrics_host: Option<String>,
    /// How long every worker has to connect to the coordinator and say hello (exit 2
    /// naming the missing shards after it).
    pub workers_timeout: Duration,
    /// Processes carrying each client link on the embedded proxy (default: as many as
    /// the users need, see [`crate::capacity`]).
    pub client_link_processes: Option<usize>,
    /// Workers connect straight to the nodes: no client links (`--direct-clients`).
    pub direct_clients: bool,
    /// Serve the run console (`--console`).
    pub console: Option<crate::console::ConsoleOptions>,
}

#[derive(Debug)]
pub struct Outcome {
    /// The run folder.
    pub dir: PathBuf,
    /// What was written to summary.json.
    pub summary: Summary,
}

impl Outcome {
    /// 0 when every threshold held, 1 otherwise.
    pub fn exit_code(&self) -> ExitCode {
        if self.summary.passed {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }
    }
}

/// Create `<out>/<timestamp>-<name>` (suffixed if it exists, or if another harness
/// process of this machine holds that run id: see [`crate::run_id`]). The claim holds the
/// id until it is dropped: keep it for as long as the run uses its database and keys.
pub fn create_run_dir(out: &Path, name: &str) -> anyhow::Result<(PathBuf, RunIdClaim)> {
    let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S").to_string();
    create_run_dir_in(out, name, &stamp, &crate::run_id::claims_dir())
}

fn create_run_dir_in(
    out: &Path,
    name: &str,
    stamp: &str,
    claims: &Path,
) -> anyhow::Result<(PathBuf, RunIdClaim)> {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for n in 1..1000 {
        let leaf = if n == 1 {
            format!("{stamp}-{safe}")
        } else {
            format!("{stamp}-{safe}-{n}")
        };
        let dir = out.join(&leaf);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
        }
        match RunIdClaim::take(claims, &leaf) {
            Some(claim) => return Ok((dir, claim)),
            // A run elsewhere on this machine has this id: not ours to share.
            None => {
                let _ = std::fs::remove_dir(&dir);
            }
        }
    }
    bail!("cannot find a free run folder name in {}", out.display())
}

/// What teardown must undo; filled as the run goes.
#[derive(Default)]
struct State {
    controller: Option<Controller>,
    links: Option<LinkSet>,
    faults: Option<FaultRunner>,
    events: Option<EventLog>,
    cluster: Cluster,
    /// The run's network namespaces (`--isolation netns`), removed last.
    isolation: Option<Isolated>,
    /// Stops the chaos API server.
    stop_api: tokio_util::sync::CancellationToken,
    /// The run console (`--console`).
    console: Option<Console>,
}

/// Carry out a run. `Err` means it could not be carried out (exit 2).
pub async fn run(opts: RunOptions) -> anyhow::Result<Outcome> {
    let scenario = load_scenario(&opts.scenario, &opts.overrides)?;
    preflight::check(&scenario, opts.toxiproxy_url.is_some()).context("bad scenario")?;
    if opts.direct_clients {
        preflight::check_direct_clients(&scenario).context("bad scenario")?;
    }
    // What this machine must hold, before anything starts: refused here with the need.
    // Direct clients need no process of the run to carry their links.
    let need = preflight::need(
        &scenario,
        opts.workers,
        opts.client_link_processes,
        opts.toxiproxy_url.is_some() || opts.direct_clients,
    )?;
    if scenario.cluster.isolation == Isolation::Netns {
        isolation::check_privileges()?;
        if opts.toxiproxy_url.is_some() {
            bail!(
                "--isolation netns and --toxiproxy-url do not go together: isolated hosts talk \
                 over the run's bridge, not through link proxies"
            );
        }
    }
    if scenario.target.is_some()
        && (opts.overrides.phase.is_some() || opts.overrides.nodes.is_some())
    {
        eprintln!(
            "flowline: --phase and --nodes do not apply to a generic WebSocket target; ignored"
        );
    }
    // The claim keeps the run id (database, Redis prefix) this run's until it returns.
    let (dir, _run_id) = create_run_dir(&opts.out, &scenario.name)?;
    std::fs::write(dir.join("scenario.toml"), scenario.to_toml())
        .with_context(|| format!("cannot write {}/scenario.toml", dir.display()))?;
    eprintln!("flowline: run folder {}", dir.display());
    eprintln!("flowline: {}", scenario.summary());
    let console = match &opts.console {
        Some(c) => Some(Console::start(c, &scenario, &dir).await?),
        None => None,
    };

    let sup = Supervisor::new(&dir.join("logs"))?;
    // Kills every child if anything below panics.
    let _guard = sup.guard();
    let mut state = State {
        console: console.clone(),
        ..State::default()
    };
    eprintln!("flowline: needs {}", need.describe());
    let result = tokio::select! {
        r = drive(&scenario, &opts, &need, &dir, &sup, &mut state) => r,
        sig = interrupted() => Err(anyhow::anyhow!("interrupted by {sig}: the run was stopped and every child process ended")),
    };
    teardown(&mut state, &sup).await;
    if !opts.services.keep {
        let _ = std::fs::remove_file(dir.join("plan.json"));
    }
    // The faults are healed: the manual ones go into scenario.toml, the page shows the end.
    if let Some(c) = &console {
        c.finished(result.as_ref().ok());
        if result.is_err() {
            c.stop();
        }
    }
    let summary = result?;
    finish(&dir, &summary);
    if let Some(c) = &console {
        if opts.console.as_ref().is_some_and(|o| o.keep) {
            c.keep().await;
        }
        c.stop();
    }
    Ok(Outcome { dir, summary })
}

/// The end of a run whose files are written: its verdict on stderr, then report.html.
pub fn finish(dir: &Path, summary: &Summary) {
    collect::print_verdict(summary, dir, crate::report::threshold_value);
    // The run's verdict stands even if its page cannot be drawn: the data files are written
    // and `flowline report DIR` can draw it again once fixed.
    let report =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| crate::report::write(dir)));
    match report {
        Ok(Ok(path)) => eprintln!("flowline: report {}", path.display()),
        Ok(Err(e)) => eprintln!(
            "flowline: warning: report.html not written: {e:#}; run `flowline report {}`",
            dir.display()
        ),
        Err(_) => eprintln!(
            "flowline: warning: report.html not written (the report generator failed); the \
             run's files are complete"
        ),
    }
}

/// The first SIGINT or SIGTERM, by name.
pub async fn interrupted() -> &'static str {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

async fn drive(
    scenario: &Scenario,
    opts: &RunOptions,
    need: &Need,
    dir: &Path,
    sup: &Supervisor,
    state: &mut State,
) -> anyhow::Result<Summary> {
    let run_id = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    let setup_start = Instant::now();
    let events = EventLog::create(&dir.join("events.jsonl"), setup_start)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("cannot create events.jsonl")?;
    state.events = Some(events.clone());
    if let Some(c) = &state.console {
        c.set_events(&events);
    }
    let controller = Controller::new();
    // Client links that need more files than one process has are carried by
    // `flowline chaos data-plane` children, which die with this process even on SIGKILL.
    controller.set_data_plane(DataPlane {
        program: std::env::current_exe().context("cannot locate the flowline binary")?,
        args: vec!["chaos".into(), "data-plane".into()],
        env: vec![(
            crate::child::DIE_WITH_PARENT_ENV.into(),
            std::process::id().to_string(),
        )],
        log_dir: Some(dir.join("logs")),
    });
    state.controller = Some(controller.clone());
    let links = LinkSet::open(&controller, opts.toxiproxy_url.as_deref()).await?;
    state.links = Some(links.clone());
    // The run's proxies are also reachable through the Toxiproxy API, so a person (or
    // toxiproxy-cli) can add faults by hand while it runs; its /metrics counts bytes per
    // link and the faults in effect (flowline_chaos_active_faults), also those a schedule
    // puts on a remote Toxiproxy or on nodes.
    let bind_ip = if opts.metrics_host.is_some() {
        "0.0.0.0"
    } else {
        "127.0.0.1"
    };
    let api = tokio::net::TcpListener::bind((bind_ip, 0))
        .await
        .with_context(|| format!("cannot bind the chaos API on {bind_ip}"))?;
    let api_addr = api.local_addr()?;
    tokio::spawn(flowline_chaos::serve_api(
        controller.clone(),
        api,
        state.stop_api.clone(),
    ));
    let metrics_host = opts.metrics_host.as_deref();
    let mut targets_file = MetricsTargets::new(dir, &run_id, metrics_host);
    targets_file.add(
        "chaos",
        "flowline-chaos",
        &format!("http://{api_addr}/metrics"),
    );
    eprintln!(
        "flowline: chaos API (Toxiproxy-compatible) http://{api_addr}, metrics {}",
        targets_file.last_url()
    );
    let secret = format!(
        "flowline-{}",
        std::process::id() ^ setup_start.elapsed().subsec_nanos()
    );

    // Worker processes: as many as the users need unless given (crate::capacity);
    // an isolated run gives each a host.
    let workers = need.workers.max(1);
    if scenario.cluster.isolation == Isolation::Netns {
        let needs = crate::needs::Needs::for_phase(scenario.cluster.phase.as_str())?;
        let topology = crate::topology::Topology::of(scenario);
        let hosts = isolation::host_names(&topology, needs, (0..workers).map(workers::name));
        state.isolation = Some(Isolated::create(&run_id, &hosts).await?);
    }

    // The system under test: nodes the run starts, an external cluster, or a generic
    // WebSocket service; then the population plan.
    let (plan, targets) = match &scenario.target {
        Some(t) => {
            let links = (!opts.direct_clients).then_some(&links);
            generic_target(scenario, &t.urls, links, &events, need.link_processes).await?
        }
        None => {
            let ctx = ClusterCtx {
                services: &opts.services,
                dir,
                sup,
                links: &links,
                events: &events,
                run_id: &run_id,
                secret,
                net: state.isolation.as_ref(),
                link_processes: need.link_processes,
                direct_clients: opts.direct_clients,
            };
            start_cluster(scenario, ctx, &mut state.cluster, &mut targets_file).await?
        }
    };
    // The client links' data-plane processes, beside the supervisor's children.
    for (link, i, pid) in controller.data_plane_pids() {
        sup.record(&format!("{link}.p{i}"), pid);
    }
    targets_file.write()?;
    if let Some(c) = &state.console {
        let nodes = state
            .cluster
            .nodes
            .iter()
            .filter(|n| sup.spec(&n.id).is_some())
            .map(|n| n.id.clone())
            .collect();
        c.set_targets(links.names(), nodes, state.isolation.is_some());
    }
    let plan_path = dir.join("plan.json");
    plan.write(&plan_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    plan.shards(workers).map_err(|e| anyhow::anyhow!("{e}"))?;

    // Workers: local processes that report to the run's coordinator, which starts them
    // all at one instant t0 (ticks and the fault schedule count from it).
    // An isolated run's workers have no route out: the coordinator listens inside the
    // run's network, on the harness's own host there.
    let listener = match &state.isolation {
        Some(net) => net.listen(0).await.context("cannot bind the coordinator")?,
        None => tokio::net::TcpListener::bind((bind_ip, 0))
            .await
            .with_context(|| format!("cannot bind the coordinator on {bind_ip}"))?,
    };
    let coordinator_addr = listener.local_addr()?;
    eprintln!("flowline: coordinator {coordinator_addr}, {workers} worker(s)");
    workers::spawn(
        sup,
        &workers::Launch {
            scenario: &dir.join("scenario.toml"),
            plan: &plan_path,
            count: workers,
            targets: &targets,
            coordinator: &coordinator_addr.to_string(),
            metrics_ip: bind_ip,
            net: state.isolation.as_ref(),
        },
    )?;
    let expect = coordinator::Expect::new(scenario, workers, opts.workers_timeout);
    let session = tokio::select! {
        s = coordinator::serve(listener, expect) => s.with_context(|| format!(
            "the workers could not be started (their logs: {})",
            sup.log_path("worker1").with_file_name("worker<N>.log").display()
        ))?,
        (name, status) = workers::first_exit(sup, workers) => bail!(
            "{name} exited with {status} before the start; {} ends with:\n{}",
            sup.log_path(&name).display(),
            crate::supervisor::log_tail(&sup.log_path(&name), 10)
        ),
    };
    for (w, j) in session.workers.iter().enumerate() {
        if let Some(url) = &j.hello.metrics {
            targets_file.add(&workers::name(w), "flowline-loadgen", url);
            eprintln!(
                "flowline: {} metrics {}",
                workers::name(w),
                targets_file.last_url()
            );
        }
    }
    targets_file.write()?;
    let started_at: chrono::DateTime<chrono::Utc> = session.t0.into();
    let run_start = match session.t0.duration_since(std::time::SystemTime::now()) {
        Ok(ahead) => Instant::now() + ahead,
        Err(behind) => Instant::now()
            .checked_sub(behind.duration())
            .unwrap_or_else(Instant::now),
    };
    let coord = session.handle.clone();

    // Faults, from the start of measurement (with a console, a schedule also without
    // any: faults injected by hand go through it).
    if !scenario.faults.is_empty() || state.console.is_some() {
        let targets = NodeTargets::new(sup.clone(), events.clone(), &state.cluster.nodes);
        let runner = FaultRunner::start(
            &scenario.faults,
            links.links(),
            controller.fault_metrics(),
            events.clone(),
            Arc::new(targets),
            state.isolation.as_ref().map(Isolated::network),
            run_start + scenario.warmup,
        )?;
        if let Some(c) = &state.console {
            let zero = run_start + scenario.warmup;
            c.started(
                crate::console::RunClock {
                    start: run_start,
                    zero,
                    measure_end: zero + scenario.duration,
                    end: zero + scenario.duration + scenario.drain,
                    start_ms: if run_start >= events.start() {
                        (run_start - events.start()).as_millis() as i64
                    } else {
                        -((events.start() - run_start).as_millis() as i64)
                    },
                },
                runner.handle(),
            );
            let (sup, nodes) = (sup.clone(), state.cluster.nodes.clone());
            c.set_processes(Box::new(move || {
                let mut list = vec![("harness".to_string(), std::process::id())];
                let names = nodes
                    .iter()
                    .map(|n| n.id.clone())
                    .chain((0..workers).map(workers::name));
                list.extend(names.filter_map(|n| Some((n.clone(), sup.pid(&n)?))));
                list
            }));
        }
        state.faults = Some(runner);
    }

    // Merge the workers' streams until they are all done (or the deadline passes).
    let mut agg = Aggregator::new(scenario, workers);
    // The chat history waits for the check in the run folder, not in memory.
    agg.spill_to(&dir.join("history"))?;
    let deadline = run_start + scenario.total_time() + WORKER_GRACE;
    // Past the deadline: ask them to stop (coordinator `stop`, and SIGINT here); if lines
    // still flow after another grace, drop the connections so the stream ends.
    let overdue = std::cell::Cell::new(0u32);
    let stop_workers = || {
        let n = overdue.get();
        overdue.set(n + 1);
        let coord = coord.clone();
        async move {
            if n == 0 {
                tracing::warn!(
                    "workers still running {WORKER_GRACE:?} after the scenario's end; stopping them"
                );
                coord.stop("the run's deadline passed");
                workers::stop_all(sup, workers).await;
            } else if n == STOP_GRACE_TICKS {
                tracing::warn!("workers still connected after the stop; closing their connections");
                coord.close();
            }
        }
    };
    let console = state.console.clone();
    collect::collect_observed(
        &mut agg,
        session.lines,
        |_, _| false,
        Some(deadline),
        stop_workers,
        |agg| {
            if let Some(c) = &console {
                c.observe(agg);
            }
        },
    )
    .await;
    // What each spread client link's processes carried (events.jsonl, for the record).
    for link in controller.list() {
        if let Some(processes) = &link.processes {
            let _ = events.record(
                "stop",
                "link",
                vec![link.name.clone()],
                &link.name,
                json!({"listen": link.listen, "processes": processes}),
            );
        }
    }
    let mut notes = workers::wait_all(sup, workers).await;
    if let Some(f) = state.faults.take() {
        f.stop().await;
    }
    if agg.workers_done() == 0 && workers::failed(sup, workers) == workers {
        bail!(
            "every loadgen worker failed before finishing; {} ends with:\n{}",
            sup.log_path("worker1").display(),
            crate::supervisor::log_tail(&sup.log_path("worker1"), 10)
        );
    }
    for n in &state.cluster.nodes {
        if sup.pid(&n.id).is_none() && sup.spec(&n.id).is_some() {
            notes.push(format!("{} was not running at the end", n.id));
        }
    }
    let dead_planes = controller.dead_data_planes();
    // A generic target is an outside service, as in the standalone loadgen's summary.
    let (phase, nodes) = match &scenario.target {
        Some(t) => {
            notes.insert(
                0,
                format!(
                    "target: a generic WebSocket service ({} URL(s)), not the Flowline cluster; \
                     no nodes started, nothing provisioned",
                    t.urls.len()
                ),
            );
            ("external", t.urls.len() as u32)
        }
        None => (
            scenario.cluster.phase.as_str(),
            state.cluster.nodes.len() as u32,
        ),
    };
    let meta = RunMeta {
        started_at: started_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        phase: phase.to_string(),
        nodes,
        notes,
        // What only the harness knows; the standalone loadgen leaves them out.
        revision: Some(crate::revision::revision()),
        flowline_version: Some(env!("CARGO_PKG_VERSION").to_string()),
        direct_clients: opts.direct_clients,
    };
    let mut summary = agg.summarize(meta);
    add_coordinator(&mut summary, &coord, workers);
    // A client link's data-plane process that died took its share of the link's
    // connections with it: the run's numbers are not what the scenario asked for.
    for (link, pid) in dead_planes {
        summary.problems.push(format!(
            "a data-plane process of {link} (pid {pid}) exited during the run; its users' \
             connections were cut (logs/{link}.p<i>.log)"
        ));
        summary.passed = false;
    }
    // What each node process cost, read before teardown (a node restarted by a fault
    // counts from its restart).
    summary.nodes_cost = state
        .cluster
        .nodes
        .iter()
        .filter_map(|n| {
            let r = flowline_loadgen::wire::Resources::of_pid(sup.pid(&n.id)?)?;
            Some(NodeCost {
                node: n.id.clone(),
                cpu_s: r.cpu_s,
                peak_rss_kib: r.peak_rss_kib,
            })
        })
        .collect();
    summary.links_cost = controller
        .data_plane_pids()
        .into_iter()
        .filter_map(|(link, i, pid)| {
            let r = flowline_loadgen::wire::Resources::of_pid(pid)?;
            Some(NodeCost {
                node: format!("{link}.p{i}"),
                cpu_s: r.cpu_s,
                peak_rss_kib: r.peak_rss_kib,
            })
        })
        .collect();
    summary.harness_cost = harness_cost();
    summary.node_errors = crate::node_errors::scan(
        &dir.join("logs"),
        state.cluster.nodes.iter().map(|n| n.id.as_str()),
    );
    agg.write(dir, &summary)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("cannot write the run's results")?;
    Ok(summary)
}

/// What this harness process has cost so far (summary.json's `harness_cost`): its
/// aggregator, chaos API and in-process links, whichever launcher ran the workers.
pub fn harness_cost() -> Option<NodeCost> {
    flowline_loadgen::wire::Resources::of_self().map(|r| NodeCost {
        node: "harness".into(),
        cpu_s: r.cpu_s,
        peak_rss_kib: r.peak_rss_kib,
    })
}

/// The coordinator's part of a summary: its report, and a problem naming each worker whose
/// connection ended before its done line (its samples and history are missing: the
/// aggregator marks its seconds and fails the run too).
pub fn add_coordinator(summary: &mut Summary, coord: &coordinator::Handle, workers: usize) {
    for l in coord.lost() {
        summary.problems.push(format!(
            "{} (shard {}/{workers}, {}) was lost {:.1} s after the start: its connection to the \
             coordinator ended before its done line",
            workers::name(l.shard),
            l.shard,
            l.who,
            l.at_s
        ));
        summary.passed = false;
    }
    summary.coordinator = Some(coord.report());
}

async fn teardown(state: &mut State, sup: &Supervisor) {
    if let Some(f) = state.faults.take() {
        f.stop().await;
    }
    for w in sup_names(sup, "worker") {
        sup.stop(&w, Signal::SIGTERM, Duration::from_secs(5)).await;
    }
    for n in &state.cluster.nodes {
        if sup.pid(&n.id).is_some() {
            sup.stop(&n.id, Signal::SIGTERM, Duration::from_secs(8))
                .await;
            if let Some(ev) = &state.events {
                let _ = ev.node_event("stop", &n.id, json!({}));
            }
        }
    }
    state.stop_api.cancel();
    if let Some(l) = state.links.take() {
        l.teardown().await;
    }
    if let Some(c) = state.controller.take() {
        let _ = c.heal_all().await;
        c.shutdown().await;
    }
    if let Some(mut s) = state.cluster.services.take() {
        s.teardown(sup).await;
    }
    sup.shutdown(Duration::from_secs(5)).await;
    // Last: the children were in these namespaces, and the services' forwards ran here.
    if let Some(net) = state.isolation.take() {
        net.remove();
    }
}

fn sup_names(sup: &Supervisor, prefix: &str) -> Vec<String> {
    (1..=4096)
        .map(|i| format!("{prefix}{i}"))
        .take_while(|n| sup.spec(n).is_some())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_dirs_are_unique() {
        let d = tempfile::tempdir().unwrap();
        let (a, _a) = create_run_dir(d.path(), "quick start").unwrap();
        let (b, _b) = create_run_dir(d.path(), "quick start").unwrap();
        assert_ne!(a, b);
        assert!(
            a.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .ends_with("-quick-start")
        );
    }

    #[test]
    fn run_ids_are_unique_across_out_folders() {
        // Two runs of one scenario in the same second into different folders (parallel
        // tests) must not share a run id: it names their database and Redis keys.
        let d = tempfile::tempdir().unwrap();
        let claims = d.path().join("claims");
        let stamp = "20260101-120000";
        let (a, claim) =
            create_run_dir_in(&d.path().join("one"), "partition", stamp, &claims).unwrap();
        let (b, _b) =
            create_run_dir_in(&d.path().join("two"), "partition", stamp, &claims).unwrap();
        let leaf = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(leaf(&a), "20260101-120000-partition");
        assert_eq!(leaf(&b), "20260101-120000-partition-2");
        // The id taken elsewhere left no empty folder behind.
        assert_eq!(std::fs::read_dir(d.path().join("two")).unwrap().count(), 1);
        // Released at the end of the first run: the id is free again.
        drop(claim);
        let (c, _c) =
            create_run_dir_in(&d.path().join("three"), "partition", stamp, &claims).unwrap();
        assert_eq!(leaf(&c), "20260101-120000-partition");
    }
}
