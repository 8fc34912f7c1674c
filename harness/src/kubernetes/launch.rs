//! `flowline run --launcher kubernetes`: the run story when the workers are the pods of an
//! Indexed Job. The harness stays where it is (a laptop, a CI runner, a pod): it checks
//! everything, reaches the cluster, listens as the coordinator, creates the run's objects,
//! gathers the workers' ticks exactly as for local workers, writes the same run folder,
//! and deletes what it created on every way out.
//!
//! ```text
//! checks: scenario (no faults, no netns, no Toxiproxy), namespace name, image,
//!         advertised address, what the pods load, worker count
//!   ─▶ cluster reachable, namespace exists ─▶ coordinator listener bound
//!   (nothing created before this line)
//!   ─▶ run folder, scenario.toml, plan.json (synthetic, or provisioned through node 1)
//!   ─▶ supervise: create ConfigMap, Service, EndpointSlice, Job
//!        ├─ watch pods (a Failed shard, the deadline) ─┐
//!        └─ coordinator: hello ×N ─▶ start ─▶ ticks ─▶ Aggregator ─▶ summary.json …
//!   ─▶ (also Ctrl-C / SIGTERM) teardown: delete by label ─▶ verdict, report.html
//! ```

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flowline_chaos::events::EventLog;
use flowline_loadgen::aggregate::{Aggregator, RunMeta, Summary};
use flowline_loadgen::collect;
use flowline_loadgen::plan::Plan;
use flowline_loadgen::scenario::{Isolation, Scenario};
use tokio::net::TcpListener;

use super::api::RunApi;
use super::cli::{JOB_SETUP_ALLOWANCE, KubeArgs};
use super::connect;
use super::manifests::{Inputs, Manifests};
use super::names::{self, Names};
use super::supervise::{Watch, supervise};
use super::workload;
use crate::coordinator;
use crate::metrics_targets::MetricsTargets;
use crate::preflight::load_scenario;
use crate::run::{Outcome, RunOptions, STOP_GRACE_TICKS, WORKER_GRACE, create_run_dir};

/// How often the run's pods are listed.
const POLL: Duration = Duration::from_millis(500);
/// Past the scenario's end, the hello deadline and the workers' grace: the backstop after
/// which the harness gives up on pods that neither end nor fail.
const WATCH_SLACK: Duration = Duration::from_secs(60);

/// What was checked before anything is created.
struct Checked {
    scenario: Scenario,
    namespace: String,
    image: String,
    advertise: names::Advertise,
    targets: Vec<String>,
    workers: usize,
    listen: String,
}

/// Carry out a run whose workers are pods. `Err` means it could not be carried out
/// (exit 2); every object it created is deleted before it returns.
pub async fn run(opts: RunOptions, kube: &KubeArgs) -> anyhow::Result<Outcome> {
    let c = check(&opts, kube)?;
    let cluster = connect::client(kube.kube_context.as_deref()).await?;
    connect::check_namespace(&cluster, &c.namespace).await?;
    let listener = TcpListener::bind(&c.listen).await.with_context(|| {
        format!(
            "cannot listen for the workers on {} (--coordinator-listen)",
            c.listen
        )
    })?;
    eprintln!(
        "flowline: Kubernetes cluster {}, namespace {}, image {}",
        cluster.url, c.namespace, c.image
    );

    let scenario = &c.scenario;
    // The claim keeps the run id (the names of its objects) this run's until it returns.
    let (dir, _run_id) = create_run_dir(&opts.out, &scenario.name)?;
    let scenario_toml = scenario.to_toml();
    std::fs::write(dir.join("scenario.toml"), &scenario_toml)
        .with_context(|| format!("cannot write {}/scenario.toml", dir.display()))?;
    eprintln!("flowline: run folder {}", dir.display());
    eprintln!("flowline: {}", scenario.summary());
    let run_id = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    // The same files as a local run (no fault happens here: events.jsonl stays empty).
    EventLog::create(&dir.join("events.jsonl"), Instant::now())
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("cannot create events.jsonl")?;
    std::fs::create_dir_all(dir.join("logs"))
        .with_context(|| format!("cannot create {}/logs", dir.display()))?;

    let plan = plan(scenario, kube.provision_url.as_deref()).await?;
    let plan_path = dir.join("plan.json");
    plan.write(&plan_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    plan.shards(c.workers).map_err(|e| anyhow::anyhow!("{e}"))?;

    let names = Names::for_run(&run_id);
    let manifests = Manifests::build(&Inputs {
        names: &names,
        namespace: &c.namespace,
        image: &c.image,
        workers: c.workers,
        targets: &c.targets,
        coordinator: &c.advertise,
        scenario_toml: &scenario_toml,
        plan_json: &workload::plan_json(&plan)?,
        deadline: scenario.total_time() + JOB_SETUP_ALLOWANCE,
    })?;
    // What was created, for the record (and `kubectl apply -f` by hand).
    std::fs::write(dir.join("kubernetes.yaml"), manifests.to_yaml()?)
        .with_context(|| format!("cannot write {}/kubernetes.yaml", dir.display()))?;
    eprintln!(
        "flowline: coordinator listening on {}, advertised to the pods as {}",
        c.listen,
        Manifests::coordinator_address(&names, &c.namespace, c.advertise.port)
    );

    let api = RunApi::new(cluster.client.clone(), &c.namespace, names.clone());
    let watch = Watch {
        workers: c.workers,
        poll: POLL,
        deadline: Instant::now()
            + opts.workers_timeout
            + scenario.total_time()
            + WORKER_GRACE
            + WATCH_SLACK,
        logs: Some(dir.join("logs")),
    };
    let gather = gather(scenario, &c, &opts, &dir, &run_id, &names, listener);
    let result = supervise(&api, &manifests, watch, gather, crate::run::interrupted()).await;
    if !opts.services.keep {
        let _ = std::fs::remove_file(&plan_path);
    }
    let summary = result?;
    crate::run::finish(&dir, &summary);
    Ok(Outcome { dir, summary })
}

/// Everything that can be known wrong before the cluster is contacted.
fn check(opts: &RunOptions, kube: &KubeArgs) -> anyhow::Result<Checked> {
    let mut scenario = load_scenario(&opts.scenario, &opts.overrides)?;
    if scenario.cluster.isolation == Isolation::Netns {
        bail!(
            "--launcher kubernetes and --isolation netns do not go together: the workers are pods"
        );
    }
    if opts.toxiproxy_url.is_some() {
        bail!(
            "--launcher kubernetes and --toxiproxy-url do not go together: the pods connect to \
             the nodes directly, through no link of the run"
        );
    }
    if !scenario.faults.is_empty() {
        bail!(
            "the scenario has {} fault(s): a Kubernetes run injects none yet (the pods reach the \
             nodes directly, not through the run's links); remove [[faults]] or run locally",
            scenario.faults.len()
        );
    }
    let namespace = kube.namespace()?;
    let image = names::check_image(kube.image.as_deref())?;
    let advertise = kube.advertise()?;
    kube.apply_nodes(&mut scenario, &namespace)?;
    let targets = workload::targets(&scenario)?;
    crate::preflight::check(&scenario, true).context("bad scenario")?;
    if let Some(u) = &kube.provision_url
        && !(u.starts_with("http://") || u.starts_with("https://"))
    {
        bail!("--provision-url {u:?}: expected an http:// or https:// base URL");
    }
    if scenario.target.is_none() {
        let ext = scenario.cluster.external.as_ref();
        if ext.and_then(|e| e.admin_secret.as_deref()).is_none() {
            bail!(
                "the nodes' admin secret is needed to provision the scenario's users: give \
                 --admin-secret (or FLOWLINE_ADMIN_SECRET, or [cluster] admin_secret)"
            );
        }
    }
    let workers = opts.workers.unwrap_or_else(|| {
        (scenario.population.users as usize)
            .div_ceil(flowline_loadgen::plan::MAX_USERS_PER_WORKER)
            .max(1)
    });
    names::check_workers(workers)?;
    let listen = match &kube.coordinator_listen {
        Some(l) => l.clone(),
        None if advertise.ip().is_some_and(|ip| ip.is_ipv6()) => format!("[::]:{}", advertise.port),
        None => format!("0.0.0.0:{}", advertise.port),
    };
    Ok(Checked {
        scenario,
        namespace,
        image,
        advertise,
        targets,
        workers,
        listen,
    })
}

/// The plan the pods share: synthetic for a generic target, else provisioned through the
/// admin API of `provision_url` or the first node.
async fn plan(s: &Scenario, provision_url: Option<&str>) -> anyhow::Result<Plan> {
    if s.target.is_some() {
        return Ok(Plan::synthetic(s));
    }
    let ext = s
        .cluster
        .external
        .as_ref()
        .context("no nodes to provision the users on")?;
    let http = match provision_url {
        Some(u) => u,
        None => ext.http.first().context("no node URL")?,
    };
    let secret = ext.admin_secret.as_deref().unwrap_or_default();
    let t = Instant::now();
    let plan = flowline_loadgen::plan::provision(s, http, secret)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("provisioning the scenario's users through {http} failed"))?;
    eprintln!(
        "flowline: provisioned {} users, {} channels in {:.1}s",
        plan.users.len(),
        plan.channels.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(plan)
}

/// The coordinator's side of the run, as for local workers: every shard's hello, the
/// start, their ticks merged until they are done (or the deadline), the run's files.
async fn gather(
    scenario: &Scenario,
    c: &Checked,
    opts: &RunOptions,
    dir: &Path,
    run_id: &str,
    names: &Names,
    listener: TcpListener,
) -> anyhow::Result<Summary> {
    let workers = c.workers;
    let expect = coordinator::Expect::new(scenario, workers, opts.workers_timeout);
    let session = coordinator::serve(listener, expect)
        .await
        .with_context(|| {
            format!(
                "the workers' pods did not all report (their logs: kubectl logs -n {} -l {} \
             --prefix; raise --workers-timeout when image pulls are slow)",
                c.namespace,
                names.selector()
            )
        })?;
    let mut targets_file = MetricsTargets::new(dir, run_id, opts.metrics_host.as_deref());
    for (w, j) in session.workers.iter().enumerate() {
        if let Some(url) = &j.hello.metrics {
            // A pod serves on every interface: its address is the one it connected from.
            let url = pod_url(url, j.peer.ip());
            targets_file.add(&crate::workers::name(w), "flowline-loadgen", &url);
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
    let mut agg = Aggregator::new(scenario, workers);
    let deadline = run_start + scenario.total_time() + WORKER_GRACE;
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
            } else if n == STOP_GRACE_TICKS {
                tracing::warn!("workers still connected after the stop; closing their connections");
                coord.close();
            }
        }
    };
    collect::collect(
        &mut agg,
        session.lines,
        |_, _| false,
        Some(deadline),
        stop_workers,
    )
    .await;
    let (phase, nodes) = match (&scenario.target, &scenario.cluster.external) {
        (Some(t), _) => ("external", t.urls.len() as u32),
        (None, Some(e)) => (scenario.cluster.phase.as_str(), e.http.len() as u32),
        (None, None) => (scenario.cluster.phase.as_str(), 0),
    };
    let meta = RunMeta {
        started_at: started_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        phase: phase.to_string(),
        nodes,
        notes: vec![format!(
            "workers: {workers} pod(s) of Job {} in namespace {} (image {}); no node started, \
             no fault injected",
            names.job(),
            c.namespace,
            c.image
        )],
        revision: Some(crate::revision::revision()),
        flowline_version: Some(env!("CARGO_PKG_VERSION").to_string()),
        direct_clients: false,
    };
    let mut summary = agg.summarize(meta);
    crate::run::add_coordinator(&mut summary, &coord, workers);
    summary.harness_cost = crate::run::harness_cost();
    agg.write(dir, &summary)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("cannot write the run's results")?;
    Ok(summary)
}

/// A worker's metrics URL with an unspecified host (`0.0.0.0`, `[::]`) replaced by the
/// address its connection came from.
fn pod_url(url: &str, peer: std::net::IpAddr) -> String {
    let Ok(mut u) = url::Url::parse(url) else {
        return url.to_string();
    };
    let unspecified = u
        .host_str()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
        .and_then(|h| h.parse::<std::net::IpAddr>().ok())
        .is_some_and(|ip| ip.is_unspecified());
    if unspecified && u.set_ip_host(peer).is_ok() {
        return u.to_string();
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_metrics_urls_get_the_pods_address() {
        let peer: std::net::IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(
            pod_url("http://0.0.0.0:9464/metrics", peer),
            "http://10.1.2.3:9464/metrics"
        );
        assert_eq!(
            pod_url("http://127.0.0.1:9464/metrics", peer),
            "http://127.0.0.1:9464/metrics"
        );
    }
}
