//! `flowline run`: one scenario from file to finished run folder.
//!
//! ```text
//! scenario (+ flags) ─▶ run folder, scenario.toml (seed filled in)
//!   ─▶ services (given URLs, throwaway servers, or exit 2)
//!   ─▶ proxies node<i>-postgres / node<i>-redis ─▶ nodes (flowline server, announce)
//!   ─▶ proxies client-node<i> ─▶ provision plan.json through node1's admin API
//!   (generic WebSocket target instead: proxies client-target<i> per ws:// URL, no nodes,
//!    no services, plan.json from Plan::synthetic)
//!   ─▶ workers (flowline loadgen --shard i/n) ─▶ Aggregator (progress every second)
//!        └─ fault schedule from run start + warm-up, events.jsonl
//!   ─▶ workers done (or deadline) ─▶ heal ─▶ summary.json, histograms.hlog,
//!      timeline.csv ─▶ report.html ─▶ teardown (nodes, proxies, services)
//! ```
//!
//! Every child process is owned by one [`Supervisor`]: teardown stops them on success and
//! failure, a SIGINT/SIGTERM handler ends the run the same way, and a drop guard kills them
//! if the harness panics.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flowline_chaos::controller::Controller;
use flowline_chaos::events::EventLog;
use flowline_chaos::{Links, ToxiproxyClient};
use flowline_loadgen::aggregate::{Aggregator, RunMeta, Summary};
use flowline_loadgen::scenario::{Overrides, Phase, Scenario};
use flowline_protocol::announce::Announce;
use nix::sys::signal::Signal;
use serde_json::json;
use tokio::sync::mpsc;

use crate::faults::{FaultRunner, NodeTargets};
use crate::services::{Needs, Services};
use crate::supervisor::{Spec, Supervisor, wait_announce};

/// The embedded default scenario (`flowline run` without a file).
pub const QUICKSTART: &str = include_str!("../../scenarios/quickstart.toml");

/// How long a node has to announce itself.
const NODE_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Extra time after warm-up + duration + drain before workers are stopped.
const WORKER_GRACE: Duration = Duration::from_secs(30);

/// Where the scenario comes from.
#[derive(Debug, Clone)]
pub enum ScenarioSource {
    /// `scenarios/quickstart.toml`, compiled in.
    Embedded,
    /// A file.
    File(PathBuf),
    /// Text already read (replay), with the name used in messages.
    Text(String, String),
}

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
}

/// Where the run's link proxies live (clones share the list of proxies created).
#[derive(Clone)]
enum LinkSet {
    /// The embedded chaos proxy (this process).
    Local(Controller),
    /// A real Toxiproxy (or another `flowline chaos serve`) reached over its API.
    Remote {
        client: ToxiproxyClient,
        /// Proxies this run created, deleted at teardown.
        created: Arc<std::sync::Mutex<Vec<String>>>,
    },
}

impl LinkSet {
    /// Create proxy `name` to `upstream` (`host:port`); returns where clients reach it.
    async fn create(&self, name: &str, upstream: &str) -> anyhow::Result<String> {
        match self {
            LinkSet::Local(c) => {
                let info = c
                    .create_proxy(name, "127.0.0.1:0".parse()?, upstream)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))
                    .with_context(|| format!("cannot create proxy {name}"))?;
                Ok(info.listen.to_string())
            }
            LinkSet::Remote { client, created } => {
                let host = client.host();
                let loopback = host == "localhost"
                    || host
                        .trim_matches(['[', ']'])
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback());
                let listen = if loopback { "127.0.0.1:0" } else { "0.0.0.0:0" };
                let p = client
                    .create_proxy(name, listen, upstream)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))
                    .with_context(|| {
                        format!("cannot create proxy {name} on Toxiproxy {}", client.url())
                    })?;
                created
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(name.to_string());
                reachable(&p.listen, &host)
            }
        }
    }

    fn links(&self) -> Links {
        match self {
            LinkSet::Local(c) => Links::Local(c.clone()),
            LinkSet::Remote { client, .. } => Links::Remote(client.clone()),
        }
    }

    async fn teardown(&self) {
        if let LinkSet::Remote { client, created } = self {
            let names = std::mem::take(&mut *created.lock().unwrap_or_else(|p| p.into_inner()));
            for name in names {
                if let Err(e) = client.delete_proxy(&name).await {
                    tracing::warn!("cannot delete proxy {name} on {}: {e}", client.url());
                }
            }
        }
    }
}

/// `host:port` where a proxy reported as listening on `listen` can be reached: a
/// wildcard address (`0.0.0.0`, `[::]`) is replaced by the Toxiproxy's own host.
fn reachable(listen: &str, api_host: &str) -> anyhow::Result<String> {
    let (host, port) = listen
        .rsplit_once(':')
        .with_context(|| format!("Toxiproxy reported listen address {listen:?} without a port"))?;
    let host = host.trim_matches(['[', ']']);
    let wildcard = host.is_empty()
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_unspecified());
    let host = if wildcard { api_host } else { host };
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    Ok(format!("{host}:{port}"))
}

/// The result of a run that was carried out.
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

/// Read the scenario and apply the flags; any problem here means exit 2.
pub fn load_scenario(src: &ScenarioSource, o: &Overrides) -> anyhow::Result<Scenario> {
    let s = match src {
        ScenarioSource::Embedded => {
            Scenario::parse("scenarios/quickstart.toml (embedded)", QUICKSTART)
        }
        ScenarioSource::File(p) => Scenario::from_path(p),
        ScenarioSource::Text(name, text) => Scenario::parse(name, text),
    }
    .map_err(|e| anyhow::anyhow!("{e}"))
    .context("bad scenario")?;
    let s = s
        .apply(o)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("the scenario is not valid with the flags given")?;
    // Phases without cross-node fan-out run one node (DESIGN.md): several would not see
    // each other's messages, which measures nothing useful.
    let single_node = matches!(s.cluster.phase, Phase::Single | Phase::Postgres);
    if single_node && s.cluster.nodes > 1 && s.cluster.external.is_none() && s.target.is_none() {
        eprintln!(
            "flowline: phase {} runs one node; using 1 instead of {}",
            s.cluster.phase.as_str(),
            s.cluster.nodes
        );
        let one = Overrides {
            nodes: Some(1),
            ..Overrides::default()
        };
        return s
            .apply(&one)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context("the scenario is not valid with one node");
    }
    Ok(s)
}

/// Name of the chaos link in front of a generic target's `i`-th URL (1-based).
pub fn generic_link_name(i: usize) -> String {
    format!("client-target{i}")
}

/// Whether the harness puts a generic target's URL behind a chaos link: plain `ws://`
/// only. A `wss://` handshake is TLS bound to the service's host name (SNI, certificate),
/// which a TCP proxy in between would break, so such URLs are used directly.
pub fn generic_url_proxied(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| u.scheme() == "ws")
}

/// The links of a generic target with these URLs.
fn generic_link_names(urls: &[String]) -> Vec<String> {
    urls.iter()
        .enumerate()
        .filter(|(_, u)| generic_url_proxied(u))
        .map(|(i, _)| generic_link_name(i + 1))
        .collect()
}

/// Names the harness gives a scenario's links and nodes (fault targets). A generic
/// WebSocket target has one link per proxied URL (`client-target<i>`, `i` = position in
/// `target.urls` from 1) and no nodes.
pub fn target_names(s: &Scenario) -> Vec<String> {
    if let Some(t) = &s.target {
        return generic_link_names(&t.urls);
    }
    let needs = Needs::for_phase(s.cluster.phase.as_str()).unwrap_or_default();
    let external = s.cluster.external.as_ref().map(|e| e.ws.len());
    let nodes = external.unwrap_or(s.cluster.nodes as usize);
    let mut names = Vec::new();
    for i in 1..=nodes {
        names.push(format!("client-node{i}"));
        if external.is_none() {
            names.push(format!("node{i}"));
            if needs.postgres {
                names.push(format!("node{i}-postgres"));
            }
            if needs.redis {
                names.push(format!("node{i}-redis"));
            }
        }
    }
    names
}

/// Whether `name` matches a fault target glob (`*` matches any run of characters).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => name.strip_prefix(head).is_some_and(|rest| {
            (0..=rest.len()).any(|i| rest.is_char_boundary(i) && glob_match(tail, &rest[i..]))
        }),
    }
}

/// Most users whose connections the embedded chaos proxy carries: each costs the harness
/// process two sockets, and a process may hold at most 20,000 files.
pub const EMBEDDED_CLIENT_PROXY_MAX_USERS: u32 = 8_000;

/// Whether workers reach the nodes (or a generic target) through `client-node<i>`
/// (`client-target<i>`) proxies: always on a remote
/// Toxiproxy, on the embedded one up to [`EMBEDDED_CLIENT_PROXY_MAX_USERS`] users. Above
/// it workers connect to the nodes directly (the proxy would run out of files long before
/// the node does), and faults on client links are refused.
pub fn clients_proxied(s: &Scenario, remote_proxy: bool) -> bool {
    remote_proxy || s.population.users <= EMBEDDED_CLIENT_PROXY_MAX_USERS
}

fn say_clients_direct(s: &Scenario, links: &str) {
    eprintln!(
        "flowline: workers connect directly, without {links} links: {} users are more than \
         the embedded proxy carries ({EMBEDDED_CLIENT_PROXY_MAX_USERS}; --toxiproxy-url has no such limit)",
        s.population.users
    );
}

/// Refuse faults on client links the run will not proxy (see [`clients_proxied`]).
pub fn check_client_link_faults(s: &Scenario, remote_proxy: bool) -> anyhow::Result<()> {
    if clients_proxied(s, remote_proxy) {
        return Ok(());
    }
    for (i, f) in s.faults.iter().enumerate() {
        let client_link = |n: usize| {
            glob_match(&f.target, &format!("client-node{n}"))
                || glob_match(&f.target, &generic_link_name(n))
        };
        if (1..=64).any(client_link) {
            bail!(
                "fault #{} ({}) targets client links ({:?}), but with {} users the workers \
                 connect to the nodes directly: the embedded proxy carries at most {} users' \
                 connections (two sockets each; a process may hold 20,000 files). Lower \
                 population.users, or put the links on a Toxiproxy with --toxiproxy-url",
                i + 1,
                f.display_label(),
                f.target,
                s.population.users,
                EMBEDDED_CLIENT_PROXY_MAX_USERS
            );
        }
    }
    Ok(())
}

/// Every fault must hit something this run will have, checked before anything starts.
pub fn check_fault_targets(s: &Scenario) -> anyhow::Result<()> {
    let names = target_names(s);
    if let Some(t) = &s.target {
        return check_generic_faults(s, &t.urls, &names);
    }
    for (i, f) in s.faults.iter().enumerate() {
        if !names.iter().any(|n| glob_match(&f.target, n)) {
            bail!(
                "fault #{} ({}) targets {:?}, which matches nothing in this run (phase {}, {} node(s): {})",
                i + 1,
                f.display_label(),
                f.target,
                s.cluster.phase.as_str(),
                s.cluster.nodes,
                names.join(", ")
            );
        }
    }
    Ok(())
}

/// The faults of a scenario with a generic WebSocket target: link faults on its
/// `client-target<i>` links only; process faults have no node to act on.
fn check_generic_faults(s: &Scenario, urls: &[String], names: &[String]) -> anyhow::Result<()> {
    for (i, f) in s.faults.iter().enumerate() {
        if f.kind.is_process() {
            bail!(
                "fault #{} ({}) is a process fault ({}), but this scenario drives a generic \
                 WebSocket service ([target] kind = \"websocket\"): the run starts no nodes \
                 to {} — only link faults on client-target<i> apply",
                i + 1,
                f.display_label(),
                f.kind.as_str(),
                f.kind.as_str()
            );
        }
        if !names.iter().any(|n| glob_match(&f.target, n)) {
            let links: Vec<String> = urls
                .iter()
                .enumerate()
                .filter(|(_, u)| generic_url_proxied(u))
                .map(|(i, u)| format!("{} → {u}", generic_link_name(i + 1)))
                .collect();
            let direct: Vec<&str> = urls
                .iter()
                .filter(|u| !generic_url_proxied(u))
                .map(String::as_str)
                .collect();
            let mut msg = format!(
                "fault #{} ({}) targets {:?}, which matches no proxy of this run: a generic \
                 WebSocket target has one link per ws:// URL ({})",
                i + 1,
                f.display_label(),
                f.target,
                if links.is_empty() {
                    "none here".to_string()
                } else {
                    links.join(", ")
                }
            );
            if !direct.is_empty() {
                msg.push_str(&format!(
                    "; {} used directly, without a proxy (a TLS handshake cannot pass a TCP \
                     proxy), so no link fault applies to it",
                    direct.join(", ")
                ));
            }
            bail!(msg);
        }
    }
    Ok(())
}

/// What `flowline run` cannot pass on for a generic target: its workers get the URLs as
/// one comma-separated `--targets` list.
fn check_generic_urls(s: &Scenario) -> anyhow::Result<()> {
    for u in s.target.iter().flat_map(|t| &t.urls) {
        if u.contains(',') {
            bail!(
                "target.urls: {u:?} contains a comma, which `flowline run` cannot pass to its \
                 workers; write it percent-encoded (%2C)"
            );
        }
    }
    Ok(())
}

/// Create `<out>/<timestamp>-<name>` (suffixed if it exists).
pub fn create_run_dir(out: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S");
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
        let dir = out.join(leaf);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
        }
    }
    bail!("cannot find a free run folder name in {}", out.display())
}

/// A node the harness started.
#[derive(Debug, Clone)]
pub struct Node {
    /// `node<i>`.
    pub id: String,
    /// Where it listens (direct, not through a proxy).
    pub addr: String,
    /// Direct HTTP base URL.
    pub http: String,
    /// Prometheus endpoint.
    pub metrics: String,
    /// WebSocket URL the workers use: through the node's `client-node<i>` proxy, or the
    /// node's own when client links are not proxied ([`clients_proxied`]).
    pub ws_proxied: String,
}

/// What teardown must undo; filled as the run goes.
#[derive(Default)]
struct State {
    services: Option<Services>,
    controller: Option<Controller>,
    links: Option<LinkSet>,
    faults: Option<FaultRunner>,
    events: Option<EventLog>,
    nodes: Vec<Node>,
    /// Stops the chaos API server.
    stop_api: tokio_util::sync::CancellationToken,
}

/// Carry out a run. `Err` means it could not be carried out (exit 2).
pub async fn run(opts: RunOptions) -> anyhow::Result<Outcome> {
    let scenario = load_scenario(&opts.scenario, &opts.overrides)?;
    // An external cluster behind a remote Toxiproxy may have more links than the run
    // creates (the compose cluster's node<i>-postgres / node<i>-redis): checked against
    // the Toxiproxy's proxies once it is reached.
    if opts.toxiproxy_url.is_none() || scenario.cluster.external.is_none() {
        check_fault_targets(&scenario).context("bad scenario")?;
    }
    check_client_link_faults(&scenario, opts.toxiproxy_url.is_some()).context("bad scenario")?;
    if scenario.target.is_some() {
        check_generic_urls(&scenario).context("bad scenario")?;
        if opts.overrides.phase.is_some() || opts.overrides.nodes.is_some() {
            eprintln!(
                "flowline: --phase and --nodes do not apply to a generic WebSocket target; ignored"
            );
        }
    }
    let dir = create_run_dir(&opts.out, &scenario.name)?;
    std::fs::write(dir.join("scenario.toml"), scenario.to_toml())
        .with_context(|| format!("cannot write {}/scenario.toml", dir.display()))?;
    eprintln!("flowline: run folder {}", dir.display());
    eprintln!("flowline: {}", scenario.summary());

    let sup = Supervisor::new(&dir.join("logs"))?;
    // Kills every child if anything below panics.
    let _guard = sup.guard();
    let mut state = State::default();
    let result = tokio::select! {
        r = drive(&scenario, &opts, &dir, &sup, &mut state) => r,
        sig = interrupted() => Err(anyhow::anyhow!("interrupted by {sig}: the run was stopped and every child process ended")),
    };
    teardown(&mut state, &sup).await;
    if !opts.services.keep {
        let _ = std::fs::remove_file(dir.join("plan.json"));
    }
    let summary = result?;
    print_verdict(&summary, &dir);
    // The run's verdict stands even if its page cannot be drawn: the data files are written
    // and `flowline report DIR` can draw it again once fixed.
    let report =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| crate::report::write(&dir)));
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
    Ok(Outcome { dir, summary })
}

async fn interrupted() -> &'static str {
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

fn print_verdict(s: &Summary, dir: &Path) {
    eprintln!();
    for t in &s.thresholds {
        let actual = t
            .actual
            .map(|v| crate::report::threshold_value(&t.expr, v))
            .unwrap_or_else(|| "not measured".into());
        eprintln!(
            "  {} {}  (actual {actual})",
            if t.passed { "held  " } else { "FAILED" },
            t.expr
        );
    }
    let c = &s.correctness;
    eprintln!(
        "  correctness: expected {} delivered {} lost {} duplicated {} reordered {}",
        c.expected, c.delivered, c.lost, c.duplicated, c.reordered
    );
    if let Some(l) = &s.loadgen {
        eprintln!(
            "  loadgen: {} worker(s), {:.1} CPU s ({:.2} µs per delivery), peak RSS {} KiB ({:.1} KiB per user){}",
            l.workers,
            l.cpu_s,
            l.cpu_us_per_delivery,
            l.peak_rss_kib,
            l.rss_kib_per_user,
            s.peak_users_at_s
                .map(|t| format!("; {} users connected after {t} s", s.peak_users))
                .unwrap_or_default()
        );
    }
    for p in &s.problems {
        eprintln!("  problem: {p}");
    }
    eprintln!(
        "flowline: {} — {} sent, {} delivered, {:.0} deliveries/s; run folder {}",
        if s.passed { "PASSED" } else { "FAILED" },
        s.totals.sent,
        s.totals.delivered,
        s.deliveries_per_s,
        dir.display()
    );
}

/// `host:port` of a URL.
fn host_port(url: &str) -> anyhow::Result<String> {
    let u = url::Url::parse(url).with_context(|| format!("bad URL {url:?}"))?;
    let host = u.host_str().context("URL has no host")?;
    let port = u.port_or_known_default().context("URL has no port")?;
    Ok(format!("{host}:{port}"))
}

/// `url` with its host and port replaced by `addr` (a proxy's `host:port`).
fn via(url: &str, addr: &str) -> anyhow::Result<String> {
    let mut u = url::Url::parse(url).with_context(|| format!("bad URL {url:?}"))?;
    let (host, port) = addr
        .rsplit_once(':')
        .with_context(|| format!("proxy address {addr:?} has no port"))?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("proxy address {addr:?} has a bad port"))?;
    u.set_host(Some(host)).context("cannot set host")?;
    u.set_port(Some(port))
        .map_err(|()| anyhow::anyhow!("cannot set port"))?;
    Ok(u.to_string())
}

/// The metrics URL of a worker's `loadgen_metrics` announcement line, if it is one.
fn worker_metrics_url(line: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
    if v.get("event")?.as_str()? != "loadgen_metrics" {
        return None;
    }
    Some(v.get("metrics")?.as_str()?.to_string())
}

/// The run's Prometheus endpoints, written to `metrics-targets.json` in Prometheus'
/// file_sd format (`[{"targets": ["host:port"], "labels": {..}}]`), so a Prometheus can
/// scrape a local run with `file_sd_configs: [{files: [runs/*/metrics-targets.json]}]`.
pub struct MetricsTargets {
    path: PathBuf,
    run: String,
    host: Option<String>,
    /// (name, job, url)
    entries: Vec<(String, String, String)>,
}

/// The file listing a run's metrics endpoints (Prometheus file_sd format).
pub const METRICS_TARGETS_FILE: &str = "metrics-targets.json";

impl MetricsTargets {
    /// An empty list for the run folder `dir`. With `host`, the URLs' hosts are replaced
    /// by it (endpoints listening on every interface, scraped from another machine).
    pub fn new(dir: &Path, run: &str, host: Option<&str>) -> Self {
        MetricsTargets {
            path: dir.join(METRICS_TARGETS_FILE),
            run: run.to_string(),
            host: host.map(str::to_string),
            entries: Vec::new(),
        }
    }

    /// Add (or replace) the endpoint of `name` (`node1`, `worker2`, `chaos`).
    pub fn add(&mut self, name: &str, job: &str, url: &str) {
        let mut url = url.to_string();
        if let (Some(h), Ok(mut u)) = (&self.host, url::Url::parse(&url))
            && u.set_host(Some(h)).is_ok()
        {
            url = u.to_string();
        }
        self.entries.retain(|e| e.0 != name);
        self.entries.push((name.to_string(), job.to_string(), url));
    }

    /// The URL added last.
    pub fn last_url(&self) -> &str {
        self.entries.last().map_or("", |e| e.2.as_str())
    }

    /// The file_sd document.
    pub fn to_json(&self) -> serde_json::Value {
        let groups: Vec<serde_json::Value> = self
            .entries
            .iter()
            .filter_map(|(name, job, url)| {
                let u = url::Url::parse(url).ok()?;
                let target = format!("{}:{}", u.host_str()?, u.port_or_known_default()?);
                Some(json!({
                    "targets": [target],
                    "labels": {
                        "job": job,
                        "instance_name": name,
                        "flowline_run": self.run,
                        "__metrics_path__": u.path(),
                    }
                }))
            })
            .collect();
        serde_json::Value::Array(groups)
    }

    /// Write the file (atomically: Prometheus may read it at any moment).
    pub fn write(&self) -> anyhow::Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(&self.to_json())?;
        std::fs::write(&tmp, text + "\n")
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("cannot write {}", self.path.display()))
    }
}

async fn drive(
    scenario: &Scenario,
    opts: &RunOptions,
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
    let controller = Controller::new();
    state.controller = Some(controller.clone());
    let links = match &opts.toxiproxy_url {
        None => LinkSet::Local(controller.clone()),
        Some(url) => {
            // Given explicitly: a Toxiproxy in a container is not on loopback.
            let client = ToxiproxyClient::new(url, true)
                .map_err(|e| anyhow::anyhow!("{e}"))
                .context("--toxiproxy-url")?;
            let version = client
                .version()
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))
                .with_context(|| format!("Toxiproxy at {url} does not answer"))?;
            eprintln!(
                "flowline: link proxies on Toxiproxy {url} ({})",
                version.trim()
            );
            LinkSet::Remote {
                client,
                created: Arc::default(),
            }
        }
    };
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

    // The system under test: nodes the run starts, an external cluster, or a generic
    // WebSocket service; then the population plan.
    let (plan, targets) = match &scenario.target {
        Some(t) => generic_target(scenario, &t.urls, &links, &events).await?,
        None => {
            let ctx = ClusterCtx {
                opts,
                dir,
                sup,
                links: &links,
                events: &events,
                run_id: &run_id,
                secret,
            };
            start_cluster(scenario, ctx, state, &mut targets_file).await?
        }
    };
    targets_file.write()?;
    let plan_path = dir.join("plan.json");
    plan.write(&plan_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let workers = opts.workers.unwrap_or_else(|| plan.workers_needed()).max(1);
    plan.shards(workers).map_err(|e| anyhow::anyhow!("{e}"))?;

    // Workers.
    let scenario_path = dir.join("scenario.toml");
    let (tx, mut rx) = mpsc::channel::<(usize, String)>(1024);
    // One start instant for every worker (ticks count from it) and for the fault schedule;
    // a short lead lets every worker process come up and read the plan first.
    let lead = Duration::from_millis(500 + 100 * workers as u64);
    let started_at = chrono::Utc::now() + lead;
    let run_start = Instant::now() + lead;
    for w in 0..workers {
        let name = format!("worker{}", w + 1);
        let spec = Spec::flowline(&name)?.args([
            "loadgen".to_string(),
            "--scenario".into(),
            scenario_path.to_string_lossy().into_owned(),
            "--plan".into(),
            plan_path.to_string_lossy().into_owned(),
            "--shard".into(),
            format!("{w}/{workers}"),
            "--targets".into(),
            targets.join(","),
            "--start-at".into(),
            started_at.timestamp_millis().to_string(),
            // Its Prometheus endpoint, announced on stdout and listed in
            // metrics-targets.json.
            "--metrics-listen".into(),
            format!("{bind_ip}:0"),
        ]);
        let mut spawned = sup.spawn(spec)?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(line) = spawned.lines.recv().await {
                if tx.send((w, line)).await.is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);

    // Faults, from the start of measurement.
    if !scenario.faults.is_empty() {
        let targets = NodeTargets::new(sup.clone(), events.clone(), &state.nodes);
        let runner = FaultRunner::start(
            &scenario.faults,
            links.links(),
            controller.fault_metrics(),
            events.clone(),
            Arc::new(targets),
            run_start + scenario.warmup,
        )?;
        state.faults = Some(runner);
    }

    // Merge the workers' streams until they are all done (or the deadline passes).
    let mut agg = Aggregator::new(scenario, workers);
    let deadline = run_start + scenario.total_time() + WORKER_GRACE;
    let tty = std::io::stderr().is_terminal();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_plain = Instant::now();
    let mut bad_lines = 0u64;
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some((w, line)) => {
                    if let Some(url) = worker_metrics_url(&line) {
                        let name = format!("worker{}", w + 1);
                        targets_file.add(&name, "flowline-loadgen", &url);
                        eprintln!("flowline: {name} metrics {}", targets_file.last_url());
                        if let Err(e) = targets_file.write() {
                            tracing::warn!("{e:#}");
                        }
                    } else if let Err(e) = agg.ingest(w, &line) {
                        bad_lines += 1;
                        if bad_lines <= 5 {
                            tracing::warn!("worker{}: unreadable line: {e}", w + 1);
                        }
                    }
                }
                None => break,
            },
            _ = tick.tick() => {
                if tty {
                    eprint!("\r{}\x1b[K", agg.progress());
                } else if last_plain.elapsed() >= Duration::from_secs(5) {
                    eprintln!("{}", agg.progress());
                    last_plain = Instant::now();
                }
                if Instant::now() >= deadline {
                    eprintln!();
                    tracing::warn!("workers still running {WORKER_GRACE:?} after the scenario's end; stopping them");
                    for w in 0..workers {
                        sup.stop(&format!("worker{}", w + 1), Signal::SIGINT, Duration::from_secs(5)).await;
                    }
                }
            }
        }
    }
    if tty {
        eprintln!();
    }
    let mut notes = Vec::new();
    for w in 0..workers {
        let name = format!("worker{}", w + 1);
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
    if let Some(f) = state.faults.take() {
        f.stop().await;
    }
    let failed = (0..workers)
        .filter(|w| {
            sup.exit_status(&format!("worker{}", w + 1))
                .is_some_and(|s| !s.success())
        })
        .count();
    if agg.workers_done() == 0 && failed == workers {
        bail!(
            "every loadgen worker failed before finishing; {} ends with:\n{}",
            sup.log_path("worker1").display(),
            crate::supervisor::log_tail(&sup.log_path("worker1"), 10)
        );
    }
    for n in &state.nodes {
        if sup.pid(&n.id).is_none() && sup.spec(&n.id).is_some() {
            notes.push(format!("{} was not running at the end", n.id));
        }
    }
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
        None => (scenario.cluster.phase.as_str(), state.nodes.len() as u32),
    };
    let meta = RunMeta {
        started_at: started_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        phase: phase.to_string(),
        nodes,
        notes,
    };
    let summary = agg
        .finish(dir, meta)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("cannot write the run's results")?;
    // What each node process cost, read before teardown (a node restarted by a fault
    // counts from its restart).
    let node_cost: Vec<serde_json::Value> = state
        .nodes
        .iter()
        .filter_map(|n| {
            let r = flowline_loadgen::wire::Resources::of_pid(sup.pid(&n.id)?)?;
            Some(json!({"node": n.id, "cpu_s": r.cpu_s, "peak_rss_kib": r.peak_rss_kib}))
        })
        .collect();
    annotate_summary(dir, node_cost)?;
    Ok(summary)
}

/// What starting the reference cluster needs from the run.
struct ClusterCtx<'a> {
    opts: &'a RunOptions,
    dir: &'a Path,
    sup: &'a Supervisor,
    links: &'a LinkSet,
    events: &'a EventLog,
    run_id: &'a str,
    /// The nodes' admin secret.
    secret: String,
}

/// Nodes (or an external cluster) behind `client-node<i>` links, the population
/// provisioned through node1's admin API; returns the plan and the workers' URLs.
async fn start_cluster(
    scenario: &Scenario,
    ctx: ClusterCtx<'_>,
    state: &mut State,
    targets_file: &mut MetricsTargets,
) -> anyhow::Result<(flowline_loadgen::plan::Plan, Vec<String>)> {
    let ClusterCtx {
        opts,
        dir,
        sup,
        links,
        events,
        run_id,
        secret,
    } = ctx;
    let phase = scenario.cluster.phase.as_str();
    let proxied = clients_proxied(scenario, opts.toxiproxy_url.is_some());
    if !proxied {
        say_clients_direct(scenario, "client-node<i>");
    }
    // Nodes, or an external cluster.
    let (http_base, admin_secret) = if let Some(ext) = &scenario.cluster.external {
        for (i, ws) in ext.ws.iter().enumerate() {
            let ws_proxied = if proxied {
                let name = format!("client-node{}", i + 1);
                let listen = links.create(&name, &host_port(ws)?).await?;
                via(ws, &listen)?
            } else {
                ws.clone()
            };
            state.nodes.push(Node {
                id: format!("node{}", i + 1),
                addr: host_port(ws)?,
                http: ext.http.get(i).cloned().unwrap_or_default(),
                metrics: String::new(),
                ws_proxied,
            });
        }
        let http = ext
            .http
            .first()
            .cloned()
            .context("external cluster without http URL")?;
        let secret = ext
            .admin_secret
            .clone()
            .context("external cluster without admin_secret: cannot provision users")?;
        (http, secret)
    } else {
        let needs = Needs::for_phase(phase)?;
        let services = Services::resolve(needs, &opts.services, dir, run_id, sup).await?;
        for n in &services.notes {
            eprintln!("flowline: {n}");
        }
        let db = services.database_url.clone();
        let redis = services.redis_url.clone();
        state.services = Some(services);
        for i in 1..=scenario.cluster.nodes {
            let node_id = format!("node{i}");
            let mut args: Vec<String> = vec![
                "server".into(),
                "--phase".into(),
                phase.into(),
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--node-id".into(),
                node_id.clone(),
                "--admin-secret".into(),
                secret.clone(),
                // Provisioning mints users in bulk; sign-ups in scenarios stay cheap.
                "--argon2-memory-kib".into(),
                "64".into(),
                "--argon2-iterations".into(),
                "1".into(),
            ];
            if let Some(db) = &db {
                let name = format!("{node_id}-postgres");
                let listen = links.create(&name, &host_port(db)?).await?;
                args.extend(["--database-url".into(), via(db, &listen)?]);
            }
            if let Some(redis) = &redis {
                let name = format!("{node_id}-redis");
                let listen = links.create(&name, &host_port(redis)?).await?;
                args.extend([
                    "--redis-url".into(),
                    via(redis, &listen)?,
                    "--cluster-id".into(),
                    run_id.to_string(),
                ]);
            }
            let spec = Spec::flowline(&node_id)?
                .args(args)
                .env("FLOWLINE_LOG", "warn");
            let mut spawned = sup.spawn(spec)?;
            let announce =
                wait_announce(&mut spawned, NODE_READY_TIMEOUT, &sup.log_path(&node_id)).await?;
            let Announce::Listening {
                addr,
                http,
                ws,
                metrics,
                pid,
                ..
            } = announce
            else {
                bail!("{node_id} announced something other than `listening`");
            };
            // Keep draining its stdout so it never blocks.
            tokio::spawn(async move { while spawned.lines.recv().await.is_some() {} });
            let ws_proxied = if proxied {
                let name = format!("client-node{i}");
                let listen = links.create(&name, &addr).await?;
                via(&ws, &listen)?
            } else {
                ws.clone()
            };
            let _ = events.node_event("start", &node_id, json!({"pid": pid, "addr": addr}));
            eprintln!("flowline: {node_id} pid {pid} on {addr}; metrics {metrics}");
            targets_file.add(&node_id, "flowline-node", &metrics);
            state.nodes.push(Node {
                id: node_id,
                addr,
                http,
                metrics,
                ws_proxied,
            });
        }
        let http = state
            .nodes
            .first()
            .map(|n| n.http.clone())
            .context("no node")?;
        (http, secret)
    };
    if let (LinkSet::Remote { client, .. }, Some(_)) = (links, &scenario.cluster.external) {
        let names: Vec<String> = client
            .proxies()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("cannot list the proxies of {}", client.url()))?
            .into_iter()
            .map(|p| p.name)
            .collect();
        for (i, f) in scenario.faults.iter().enumerate() {
            if !names.iter().any(|n| glob_match(&f.target, n)) {
                bail!(
                    "bad scenario: fault #{} ({}) targets {:?}, which matches no proxy of the Toxiproxy at {} ({})",
                    i + 1,
                    f.display_label(),
                    f.target,
                    client.url(),
                    names.join(", ")
                );
            }
        }
    }

    // Provision the population.
    let t = Instant::now();
    let plan = flowline_loadgen::plan::provision(scenario, &http_base, &admin_secret)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("provisioning the scenario's users through the admin API failed")?;
    eprintln!(
        "flowline: provisioned {} users, {} channels in {:.1}s",
        plan.users.len(),
        plan.channels.len(),
        t.elapsed().as_secs_f64()
    );
    let targets = state.nodes.iter().map(|n| n.ws_proxied.clone()).collect();
    Ok((plan, targets))
}

/// A generic WebSocket service (`[target] kind = "websocket"`): no nodes, no services,
/// nothing provisioned. Each `ws://` URL gets a chaos link `client-target<i>` and the
/// workers connect through it (path and query kept); a `wss://` URL is used directly.
/// Returns the synthetic plan and the workers' URLs.
async fn generic_target(
    scenario: &Scenario,
    urls: &[String],
    links: &LinkSet,
    events: &EventLog,
) -> anyhow::Result<(flowline_loadgen::plan::Plan, Vec<String>)> {
    let remote = matches!(links, LinkSet::Remote { .. });
    if !clients_proxied(scenario, remote) {
        say_clients_direct(scenario, "client-target<i>");
        let plan = flowline_loadgen::plan::Plan::synthetic(scenario);
        return Ok((plan, urls.to_vec()));
    }
    let mut targets = Vec::with_capacity(urls.len());
    for (i, url) in urls.iter().enumerate() {
        if !generic_url_proxied(url) {
            eprintln!(
                "flowline: target {url} is used directly (TLS cannot pass a TCP proxy): no link \
                 fault applies to it"
            );
            targets.push(url.clone());
            continue;
        }
        let name = generic_link_name(i + 1);
        let listen = links
            .create(&name, &host_port(url)?)
            .await
            .with_context(|| {
                let hint = match links {
                    LinkSet::Local(_) => {
                        "; the embedded chaos proxy forwards to loopback addresses only: for a \
                     service on another host put the links on a Toxiproxy that can reach it \
                     (--toxiproxy-url), or run without proxies (`flowline loadgen --scenario`)"
                    }
                    LinkSet::Remote { .. } => "",
                };
                format!("cannot put the chaos link {name} in front of {url}{hint}")
            })?;
        let proxied = via(url, &listen)?;
        eprintln!("flowline: {name} {listen} → {url} (generic WebSocket service)");
        // What the run put in front of the service, as node starts are for the cluster.
        let _ = events.record(
            "start",
            "link",
            vec![name.clone()],
            &name,
            json!({"url": url, "listen": listen, "workers_use": proxied}),
        );
        targets.push(proxied);
    }
    let plan = flowline_loadgen::plan::Plan::synthetic(scenario);
    eprintln!(
        "flowline: generic WebSocket target: {} users, nothing to provision",
        plan.users.len()
    );
    Ok((plan, targets))
}

/// The source revision of this binary: `git describe` of the checkout it was built from
/// (the normal `cargo run` case), else the package version.
pub fn revision() -> String {
    let out = std::process::Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "describe",
            "--always",
            "--dirty",
        ])
        .stderr(std::process::Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => format!("v{}", env!("CARGO_PKG_VERSION")),
    }
}

/// Add what only the harness knows to summary.json's `meta`: the source revision and the
/// flowline version (the loadgen's `RunMeta` has no field for them).
fn annotate_summary(dir: &Path, node_cost: Vec<serde_json::Value>) -> anyhow::Result<()> {
    let path = dir.join("summary.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    if let Some(meta) = v.get_mut("meta").and_then(|m| m.as_object_mut()) {
        meta.insert("revision".into(), revision().into());
        meta.insert("flowline_version".into(), env!("CARGO_PKG_VERSION").into());
    }
    if !node_cost.is_empty()
        && let Some(o) = v.as_object_mut()
    {
        o.insert("nodes_cost".into(), node_cost.into());
    }
    let text = serde_json::to_string_pretty(&v)?;
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
}
async fn teardown(state: &mut State, sup: &Supervisor) {
    if let Some(f) = state.faults.take() {
        f.stop().await;
    }
    for w in sup_names(sup, "worker") {
        sup.stop(&w, Signal::SIGTERM, Duration::from_secs(5)).await;
    }
    for n in &state.nodes {
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
    if let Some(mut s) = state.services.take() {
        s.teardown(sup).await;
    }
    sup.shutdown(Duration::from_secs(5)).await;
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
    fn urls_are_rewritten_through_proxies() {
        assert_eq!(
            via(
                "postgres://postgres@127.0.0.1:5432/flowline_run_x",
                "127.0.0.1:40001"
            )
            .unwrap(),
            "postgres://postgres@127.0.0.1:40001/flowline_run_x"
        );
        assert_eq!(
            via("ws://127.0.0.1:1/ws", "127.0.0.1:2").unwrap(),
            "ws://127.0.0.1:2/ws"
        );
        assert_eq!(
            host_port("redis://127.0.0.1:6379").unwrap(),
            "127.0.0.1:6379"
        );
    }

    #[test]
    fn remote_proxy_addresses_are_reachable() {
        assert_eq!(
            reachable("[::]:26001", "toxiproxy").unwrap(),
            "toxiproxy:26001"
        );
        assert_eq!(
            reachable("0.0.0.0:26001", "10.0.0.5").unwrap(),
            "10.0.0.5:26001"
        );
        assert_eq!(
            reachable("127.0.0.1:26001", "localhost").unwrap(),
            "127.0.0.1:26001"
        );
        assert!(reachable("nonsense", "h").is_err());
        assert_eq!(
            via("ws://node1:8080/ws", "toxiproxy:26001").unwrap(),
            "ws://toxiproxy:26001/ws"
        );
    }

    #[test]
    fn metrics_targets_are_file_sd() {
        let d = tempfile::tempdir().unwrap();
        let mut t = MetricsTargets::new(d.path(), "r1", None);
        t.add("chaos", "flowline-chaos", "http://127.0.0.1:9/metrics");
        t.add("node1", "flowline-node", "http://127.0.0.1:10/metrics");
        t.add("node1", "flowline-node", "http://127.0.0.1:11/metrics");
        t.write().unwrap();
        let v: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(d.path().join(METRICS_TARGETS_FILE)).unwrap(),
        )
        .unwrap();
        assert_eq!(v.as_array().unwrap().len(), 2);
        assert_eq!(v[1]["targets"][0], "127.0.0.1:11");
        assert_eq!(v[1]["labels"]["job"], "flowline-node");
        assert_eq!(v[1]["labels"]["__metrics_path__"], "/metrics");
        let mut t = MetricsTargets::new(d.path(), "r1", Some("loadtest"));
        t.add("worker1", "flowline-loadgen", "http://0.0.0.0:12/metrics");
        assert_eq!(t.last_url(), "http://loadtest:12/metrics");
        assert_eq!(
            worker_metrics_url(
                r#"{"event":"loadgen_metrics","worker":0,"metrics":"http://127.0.0.1:5/metrics","pid":3}"#
            ),
            Some("http://127.0.0.1:5/metrics".into())
        );
        assert_eq!(worker_metrics_url(r#"{"t":1}"#), None);
    }

    #[test]
    fn globs_match_like_fault_targets() {
        assert!(glob_match("client-node*", "client-node12"));
        assert!(glob_match("node*-redis", "node2-redis"));
        assert!(!glob_match("node*-redis", "node2-postgres"));
        assert!(glob_match("node2", "node2"));
        assert!(!glob_match("node2", "node22"));
    }

    /// A scenario with a generic WebSocket target on two URLs and `faults` appended.
    fn generic(faults: &str) -> Scenario {
        let text = format!(
            r#"
[run]
name = "g"
duration = "5s"

[target]
kind = "websocket"
urls = ["ws://127.0.0.1:9100/a?x=1", "ws://127.0.0.1:9101/"]
message = "hi"

[population]
users = 10
{faults}"#
        );
        Scenario::parse("g", &text).unwrap()
    }

    const FAULT: &str = "\n[[faults]]\nat = \"1s\"\nduration = \"1s\"\n";

    #[test]
    fn generic_targets_have_client_target_links_and_no_nodes() {
        let s = generic("");
        assert_eq!(target_names(&s), ["client-target1", "client-target2"]);
        let ok = generic(&format!(
            "{FAULT}kind = \"latency\"\nlatency = \"200ms\"\ntarget = \"client-*\"\n{FAULT}kind = \"down\"\ntarget = \"client-target2\"\n"
        ));
        check_fault_targets(&ok).unwrap();
        assert!(generic_url_proxied("ws://example.com/x"));
        assert!(!generic_url_proxied("wss://example.com/x"));
        assert_eq!(
            via("ws://127.0.0.1:9100/a?x=1", "127.0.0.1:40000").unwrap(),
            "ws://127.0.0.1:40000/a?x=1"
        );
    }

    #[test]
    fn generic_targets_refuse_process_faults_and_faults_on_no_link() {
        for kind in [
            "kind = \"kill\"\nrestart_after = \"1s\"",
            "kind = \"pause\"",
        ] {
            let s = generic(&format!("{FAULT}{kind}\ntarget = \"node1\"\n"));
            let e = format!("{:#}", check_fault_targets(&s).unwrap_err());
            assert!(
                e.contains("fault #1")
                    && e.contains("process fault")
                    && e.contains("generic WebSocket service")
                    && e.contains("starts no nodes"),
                "{e}"
            );
        }
        let s = generic(&format!(
            "{FAULT}kind = \"down\"\ntarget = \"client-node1\"\n"
        ));
        let e = format!("{:#}", check_fault_targets(&s).unwrap_err());
        assert!(
            e.contains("\"client-node1\", which matches no proxy of this run")
                && e.contains("client-target1 → ws://127.0.0.1:9100/a?x=1"),
            "{e}"
        );
        // A wss:// URL (TLS) gets no link: a fault aimed at its position matches nothing
        // and the message says why.
        let s = generic(&format!(
            "{FAULT}kind = \"down\"\ntarget = \"client-target2\"\n"
        ));
        let urls = vec![
            "ws://127.0.0.1:9100/".to_string(),
            "wss://chat.example.com/socket".to_string(),
        ];
        let names = generic_link_names(&urls);
        assert_eq!(names, ["client-target1"]);
        let e = format!("{:#}", check_generic_faults(&s, &urls, &names).unwrap_err());
        assert!(
            e.contains("matches no proxy of this run")
                && e.contains("wss://chat.example.com/socket used directly"),
            "{e}"
        );
    }

    #[test]
    fn client_link_faults_need_a_proxy_that_can_carry_the_users() {
        let scenario = |users: u32, target: &str| {
            Scenario::parse(
                "t",
                &format!(
                    "[run]\nname = \"t\"\nduration = \"5s\"\nseed = 1\n[population]\nusers = {users}\n\
                     [[faults]]\nat = \"1s\"\nkind = \"down\"\ntarget = \"{target}\"\n"
                ),
            )
            .unwrap()
        };
        let big = scenario(EMBEDDED_CLIENT_PROXY_MAX_USERS + 1, "client-node*");
        assert!(!clients_proxied(&big, false));
        let e = check_client_link_faults(&big, false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--toxiproxy-url") && e.contains("8001 users"),
            "{e}"
        );
        // A remote Toxiproxy holds them; a fault elsewhere needs no client link.
        assert!(clients_proxied(&big, true));
        check_client_link_faults(&big, true).unwrap();
        check_client_link_faults(&scenario(20_000, "node1"), false).unwrap();
        let small = scenario(EMBEDDED_CLIENT_PROXY_MAX_USERS, "client-node1");
        assert!(clients_proxied(&small, false));
        check_client_link_faults(&small, false).unwrap();
    }

    #[test]
    fn run_dirs_are_unique() {
        let d = tempfile::tempdir().unwrap();
        let a = create_run_dir(d.path(), "quick start").unwrap();
        let b = create_run_dir(d.path(), "quick start").unwrap();
        assert_ne!(a, b);
        assert!(
            a.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .ends_with("-quick-start")
        );
    }
}
