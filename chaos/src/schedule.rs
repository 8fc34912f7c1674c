//! Fault schedules: a scenario's `[[faults]]` fired at their time, healed when their
//! duration ends, recorded in events.jsonl, and always healed when the run ends.
//!
//! One task per fault sleeps until `zero + at`, injects, sleeps until the end, heals.
//! A fault reaches proxy links, nodes (processes), or, with a [`Network`], hosts in
//! network namespaces (kernel faults, [`crate::kernel`]).
//! Injections and heals are serialised through one async lock over the set of active
//! faults, and every injection first checks the cancellation token under that lock, so
//! [`ScheduleHandle::heal_all`] (cancel, then take the lock and heal the set) cannot
//! miss a fault injected concurrently. Dropping the handle heals too: synchronously
//! what can be (local toxics, paused processes), the rest on a spawned task.
//! Faults injected by hand while the schedule runs (`manual`) share all of this.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::client::ToxiproxyClient;
use crate::controller::Controller;
use crate::error::{Error, Result};
use crate::events::EventLog;
use crate::fault::{FaultKind, FaultSpec, StreamSel};
use crate::kernel::{self, Change, Network};
use crate::metrics::FaultMetrics;
use crate::process::ProcessTarget;
use crate::toxic::{Direction, FrameAction, ToxicKind, ToxicSpec};

mod manual;
pub use manual::ActiveFault;

/// Where link faults go: the in-process controller, a remote Toxiproxy, or nowhere.
#[derive(Debug, Clone)]
pub enum Links {
    /// No proxies: link faults fail to resolve.
    None,
    /// Proxies of this process.
    Local(Controller),
    /// Proxies of an external Toxiproxy (or another `flowline chaos serve`).
    Remote(ToxiproxyClient),
}

/// A proxy as the schedule sees it.
#[derive(Debug, Clone)]
struct LinkInfo {
    name: String,
    listen: String,
    upstream: String,
}

impl Links {
    async fn list(&self) -> Result<Vec<LinkInfo>> {
        Ok(match self {
            Links::None => Vec::new(),
            Links::Local(c) => c
                .list()
                .into_iter()
                .map(|p| LinkInfo {
                    name: p.name,
                    listen: p.listen.to_string(),
                    upstream: p.upstream,
                })
                .collect(),
            Links::Remote(r) => r
                .proxies()
                .await?
                .into_iter()
                .map(|p| LinkInfo {
                    name: p.name,
                    listen: p.listen,
                    upstream: p.upstream,
                })
                .collect(),
        })
    }

    async fn add_toxic(&self, proxy: &str, toxic: &ToxicSpec) -> Result<()> {
        match self {
            Links::None => Err(Error::ProxyNotFound),
            Links::Local(c) => {
                c.add_toxic(proxy, toxic.clone())?;
                c.settled(proxy).await
            }
            Links::Remote(r) => r.add_toxic(proxy, toxic).await,
        }
    }

    async fn remove_toxic(&self, proxy: &str, name: &str) -> Result<()> {
        match self {
            Links::None => Err(Error::ProxyNotFound),
            Links::Local(c) => {
                c.remove_toxic(proxy, name)?;
                c.settled(proxy).await
            }
            Links::Remote(r) => r.remove_toxic(proxy, name).await,
        }
    }

    async fn set_enabled(&self, proxy: &str, enabled: bool) -> Result<()> {
        match self {
            Links::None => Err(Error::ProxyNotFound),
            Links::Local(c) => c.set_enabled(proxy, enabled).await.map(drop),
            Links::Remote(r) => r.set_enabled(proxy, enabled).await,
        }
    }
}

/// What faults can reach: links (proxies), nodes (processes) and hosts (a network).
#[derive(Clone)]
pub struct Targets {
    links: Links,
    nodes: Vec<Arc<dyn ProcessTarget>>,
    network: Option<Arc<Network>>,
    metrics: Option<FaultMetrics>,
}

impl std::fmt::Debug for Targets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Targets")
            .field("links", &self.links)
            .field(
                "nodes",
                &self.nodes.iter().map(|n| n.node_id()).collect::<Vec<_>>(),
            )
            .field("network", &self.network.as_ref().map(|n| n.run_id()))
            .finish()
    }
}

impl Targets {
    /// Targets with these links and no nodes yet. With local links, faults are reported
    /// to that controller's [`FaultMetrics`] (its `/metrics`).
    pub fn new(links: Links) -> Self {
        let metrics = match &links {
            Links::Local(c) => Some(c.fault_metrics()),
            _ => None,
        };
        Targets {
            links,
            nodes: Vec::new(),
            network: None,
            metrics,
        }
    }

    /// Report faults to `metrics` (`flowline_chaos_active_faults` / `_faults_total`).
    /// Link faults on local proxies are seen by their controller itself; everything else
    /// (process faults, a remote Toxiproxy's links) is reported here.
    pub fn with_metrics(mut self, metrics: FaultMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Hosts in network namespaces that kernel faults may target (by host name).
    pub fn with_network(mut self, network: Arc<Network>) -> Self {
        self.network = Some(network);
        self
    }

    /// Add a node that process faults may target (by its `node_id`).
    pub fn with_node(mut self, node: Arc<dyn ProcessTarget>) -> Self {
        self.nodes.push(node);
        self
    }
}

/// What an injected fault changed, so it can be undone.
enum Applied {
    /// Toxics added: (proxy, toxic name).
    Toxics(Vec<(String, String)>),
    /// Proxies disabled.
    Disabled(Vec<String>),
    /// Processes stopped with SIGSTOP.
    Paused(Vec<Arc<dyn ProcessTarget>>),
    /// Processes killed, to be restarted when the fault ends.
    Killed(Vec<Arc<dyn ProcessTarget>>),
    /// Changes made to the run's network.
    Kernel(Arc<Network>, Vec<Change>),
}

impl Applied {
    /// Whether the local controller already reports this fault in its own metrics.
    fn seen_by_controller(&self, links: &Links) -> bool {
        matches!(self, Applied::Toxics(_) | Applied::Disabled(_))
            && matches!(links, Links::Local(_))
    }
}

struct Active {
    index: usize,
    spec: FaultSpec,
    targets: Vec<String>,
    params: Value,
    applied: Applied,
}

struct Shared {
    targets: Targets,
    events: EventLog,
    active: tokio::sync::Mutex<Vec<Active>>,
    cancel: CancellationToken,
    errors: parking_lot::Mutex<Vec<String>>,
    /// How many active faults hold each link disabled / node paused: overlapping faults
    /// on one target undo it only when the last of them heals.
    holds: parking_lot::Mutex<HashMap<String, usize>>,
    /// How many faults the schedule has: manual faults are numbered after them.
    scheduled: usize,
    /// The number the next manual fault gets.
    next_manual: std::sync::atomic::AtomicUsize,
}

/// A validated list of faults with their targets, ready to run.
#[derive(Debug)]
pub struct Schedule {
    faults: Vec<FaultSpec>,
    targets: Targets,
    events: EventLog,
}

/// The fault's parameters for events.jsonl: the entry without kind, target and label.
fn params_of(spec: &FaultSpec) -> Value {
    let mut v = serde_json::to_value(spec).unwrap_or(Value::Null);
    if let Some(m) = v.as_object_mut() {
        for k in ["kind", "target", "label"] {
            m.remove(k);
        }
    }
    v
}

fn millis(d: Option<Duration>) -> u64 {
    d.map_or(0, |d| d.as_millis() as u64)
}

fn frame(spec: &FaultSpec, action: FrameAction) -> ToxicKind {
    ToxicKind::Frame {
        action,
        select: spec.frame_select(),
    }
}

/// The toxics a link fault adds, one per direction. `None` for `down` (a disable).
pub fn toxics_for(index: usize, spec: &FaultSpec) -> Option<Vec<ToxicSpec>> {
    let kind = match spec.kind {
        FaultKind::Latency => ToxicKind::Latency {
            latency: millis(spec.latency),
            jitter: millis(spec.jitter),
        },
        FaultKind::Bandwidth => ToxicKind::Bandwidth {
            rate: spec.rate.unwrap_or(0),
        },
        FaultKind::Timeout => ToxicKind::Timeout {
            timeout: millis(spec.timeout),
        },
        FaultKind::ResetPeer => ToxicKind::ResetPeer {
            timeout: millis(spec.timeout),
        },
        FaultKind::SlowClose => ToxicKind::SlowClose {
            delay: millis(spec.delay),
        },
        FaultKind::Slicer => ToxicKind::Slicer {
            average_size: spec.average_size.unwrap_or(1),
            size_variation: spec.size_variation.unwrap_or(0),
            delay: spec.delay.map_or(0, |d| d.as_micros() as u64),
        },
        FaultKind::LimitData => ToxicKind::LimitData {
            bytes: spec.bytes.unwrap_or(0),
        },
        FaultKind::Blackhole => ToxicKind::Blackhole,
        FaultKind::FrameDrop => frame(spec, FrameAction::Drop),
        FaultKind::FrameDuplicate => frame(spec, FrameAction::Duplicate),
        FaultKind::FrameDelay => frame(
            spec,
            FrameAction::Delay {
                delay: millis(spec.delay),
            },
        ),
        FaultKind::FrameReorder => frame(
            spec,
            FrameAction::Reorder {
                after: spec.after.unwrap_or(1),
            },
        ),
        FaultKind::FrameCorrupt => frame(
            spec,
            FrameAction::Corrupt {
                offset: spec.offset.unwrap_or(0),
                xor: spec.xor.unwrap_or(1),
            },
        ),
        // Disables, process faults and kernel faults add no toxic.
        _ => return None,
    };
    let dirs: &[Direction] = match spec.stream.unwrap_or_default() {
        StreamSel::Downstream => &[Direction::Downstream],
        StreamSel::Upstream => &[Direction::Upstream],
        StreamSel::Both => &[Direction::Upstream, Direction::Downstream],
    };
    Some(
        dirs.iter()
            .map(|&d| {
                let mut t = ToxicSpec::new(kind.clone(), d).named(format!(
                    "flowline_f{index}_{}_{}",
                    spec.kind.as_str(),
                    d.as_str()
                ));
                t.toxicity = spec.toxicity.unwrap_or(1.0);
                t
            })
            .collect(),
    )
}

async fn is_loopback_target(link: &LinkInfo) -> bool {
    for addr in [&link.listen, &link.upstream] {
        match tokio::net::lookup_host(addr.as_str()).await {
            Ok(mut it) => {
                if !it.all(|a| a.ip().is_loopback()) {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
    true
}

impl Schedule {
    /// Validate `faults` (parameters and target globs) against `targets`; events go to `events`.
    pub fn new(faults: Vec<FaultSpec>, targets: Targets, events: EventLog) -> Result<Self> {
        for (i, f) in faults.iter().enumerate() {
            f.validate(i + 1)?;
            kernel::check(i + 1, f, targets.network.as_deref())?;
            if let Err(e) = glob::Pattern::new(&f.target) {
                return Err(Error::Fault(crate::fault::FaultError {
                    index: i + 1,
                    kind: f.kind.as_str(),
                    target: f.target.clone(),
                    reason: format!("bad target glob: {e}"),
                }));
            }
        }
        Ok(Schedule {
            faults,
            targets,
            events,
        })
    }

    /// Start firing: each fault at `zero + at`. Returns at once.
    pub fn run(self, zero: Instant) -> ScheduleHandle {
        let shared = Arc::new(Shared {
            targets: self.targets,
            events: self.events,
            active: tokio::sync::Mutex::new(Vec::new()),
            cancel: CancellationToken::new(),
            errors: parking_lot::Mutex::new(Vec::new()),
            holds: parking_lot::Mutex::new(HashMap::new()),
            scheduled: self.faults.len(),
            next_manual: std::sync::atomic::AtomicUsize::new(self.faults.len() + 1),
        });
        let mut tasks = JoinSet::new();
        for (i, spec) in self.faults.into_iter().enumerate() {
            tasks.spawn(run_fault(shared.clone(), i + 1, spec, zero));
        }
        ScheduleHandle { shared, tasks }
    }
}

async fn run_fault(shared: Arc<Shared>, index: usize, spec: FaultSpec, zero: Instant) {
    tokio::select! {
        biased;
        () = shared.cancel.cancelled() => return,
        () = sleep_until(zero + spec.at) => {}
    }
    {
        let mut active = shared.active.lock().await;
        if shared.cancel.is_cancelled() {
            return;
        }
        match shared.inject(index, &spec).await {
            Ok(a) => {
                shared.record_active("inject", &a, a.params.clone());
                active.push(a);
            }
            Err(e) => {
                shared.fail(&spec, format!("fault #{index} not injected: {e}"));
                return;
            }
        }
    }
    let end = match spec.kind {
        FaultKind::Kill => spec.restart_after.or(spec.duration),
        _ => spec.duration,
    };
    let Some(end) = end else { return };
    tokio::select! {
        biased;
        () = shared.cancel.cancelled() => return,
        () = sleep_until(zero + spec.at + end) => {}
    }
    let mut active = shared.active.lock().await;
    if shared.cancel.is_cancelled() {
        return;
    }
    if let Some(pos) = active.iter().position(|a| a.index == index) {
        let a = active.swap_remove(pos);
        if matches!(a.applied, Applied::Killed(_)) {
            // A restart can take seconds; other faults must keep firing on time.
            drop(active);
        }
        let _ = shared.heal(a, true).await;
    }
}

impl Shared {
    /// Take a hold on `key`; true if it is the first (the fault must be applied).
    fn acquire(&self, key: &str) -> bool {
        let mut holds = self.holds.lock();
        let n = holds.entry(key.to_string()).or_insert(0);
        *n += 1;
        *n == 1
    }

    /// Release a hold on `key`; true if it was the last (the fault must be undone).
    fn release(&self, key: &str) -> bool {
        let mut holds = self.holds.lock();
        match holds.get_mut(key) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                holds.remove(key);
                true
            }
            None => true,
        }
    }

    fn pause_node(&self, n: &Arc<dyn ProcessTarget>) -> Result<()> {
        let key = format!("node:{}", n.node_id());
        if self.acquire(&key)
            && let Err(e) = n.pause()
        {
            self.release(&key);
            return Err(e);
        }
        Ok(())
    }

    fn resume_node(&self, n: &Arc<dyn ProcessTarget>) -> Result<()> {
        if self.release(&format!("node:{}", n.node_id())) {
            n.resume()
        } else {
            Ok(())
        }
    }

    async fn disable_link(&self, name: &str) -> Result<()> {
        let key = format!("link:{name}");
        if self.acquire(&key)
            && let Err(e) = self.targets.links.set_enabled(name, false).await
        {
            self.release(&key);
            return Err(e);
        }
        Ok(())
    }

    async fn enable_link(&self, name: &str) -> Result<()> {
        if self.release(&format!("link:{name}")) {
            self.targets.links.set_enabled(name, true).await
        } else {
            Ok(())
        }
    }

    /// Report an injected or healed fault to the metrics unless the local controller
    /// already sees it in its proxies.
    fn report(&self, action: &str, a: &Active) {
        let Some(m) = &self.targets.metrics else {
            return;
        };
        if a.applied.seen_by_controller(&self.targets.links) {
            return;
        }
        let (spec, targets) = (&a.spec, &a.targets);
        for t in targets {
            match action {
                "inject" => m.injected(spec.kind.as_str(), t),
                "heal" => m.healed(spec.kind.as_str(), t),
                _ => {}
            }
        }
    }

    /// Record an injection or heal: metrics, log, events.jsonl.
    fn record_active(&self, action: &str, a: &Active, params: Value) {
        self.report(action, a);
        self.record(action, &a.spec, a.targets.clone(), params);
    }

    fn record(&self, action: &str, spec: &FaultSpec, targets: Vec<String>, params: Value) {
        tracing::info!(
            action,
            kind = spec.kind.as_str(),
            targets = ?targets,
            label = %spec.display_label(),
            "chaos: fault {action}"
        );
        if let Err(e) = self.events.record(
            action,
            spec.kind.as_str(),
            targets,
            &spec.display_label(),
            params,
        ) {
            tracing::error!(error = %e, "chaos: cannot record event");
        }
    }

    fn fail(&self, spec: &FaultSpec, msg: String) {
        tracing::error!("chaos: {msg}");
        self.record(
            "error",
            spec,
            Vec::new(),
            serde_json::json!({ "error": msg }),
        );
        self.errors.lock().push(msg);
    }

    async fn inject(&self, index: usize, spec: &FaultSpec) -> Result<Active> {
        let pattern = glob::Pattern::new(&spec.target).map_err(|e| {
            Error::BadRequestBody(format!("bad target glob {:?}: {e}", spec.target))
        })?;
        if let Some(net) = &self.targets.network
            && kernel::uses_kernel(spec, Some(net))
        {
            return self.inject_kernel(index, spec, net.clone()).await;
        }
        if spec.kind.is_process() {
            let nodes: Vec<_> = self
                .targets
                .nodes
                .iter()
                .filter(|n| pattern.matches(n.node_id()))
                .cloned()
                .collect();
            if nodes.is_empty() {
                return Err(Error::NoTarget {
                    index,
                    target: spec.target.clone(),
                    what: "node",
                });
            }
            let names = nodes.iter().map(|n| n.node_id().to_string()).collect();
            let mut done: Vec<Arc<dyn ProcessTarget>> = Vec::new();
            for n in &nodes {
                let r = if spec.kind == FaultKind::Kill {
                    n.kill()
                } else {
                    self.pause_node(n)
                };
                if let Err(e) = r {
                    if spec.kind == FaultKind::Pause {
                        for d in &done {
                            let _ = self.resume_node(d);
                        }
                    }
                    return Err(e);
                }
                done.push(n.clone());
            }
            let applied = if spec.kind == FaultKind::Kill {
                Applied::Killed(nodes)
            } else {
                Applied::Paused(nodes)
            };
            return Ok(Active {
                index,
                spec: spec.clone(),
                targets: names,
                params: params_of(spec),
                applied,
            });
        }

        let links: Vec<LinkInfo> = self
            .targets
            .links
            .list()
            .await?
            .into_iter()
            .filter(|l| pattern.matches(&l.name))
            .collect();
        if links.is_empty() {
            return Err(Error::NoTarget {
                index,
                target: spec.target.clone(),
                what: "link",
            });
        }
        if !spec.allow_non_loopback {
            for l in &links {
                if !is_loopback_target(l).await {
                    return Err(Error::NotLoopback(format!(
                        "link {} ({} -> {})",
                        l.name, l.listen, l.upstream
                    )));
                }
            }
        }
        let names: Vec<String> = links.iter().map(|l| l.name.clone()).collect();
        let applied = match toxics_for(index, spec) {
            None => {
                let mut done: Vec<String> = Vec::new();
                for n in &names {
                    if let Err(e) = self.disable_link(n).await {
                        for d in &done {
                            let _ = self.enable_link(d).await;
                        }
                        return Err(e);
                    }
                    done.push(n.clone());
                }
                Applied::Disabled(done)
            }
            Some(toxics) => {
                let mut done: Vec<(String, String)> = Vec::new();
                for n in &names {
                    for t in &toxics {
                        if let Err(e) = self.targets.links.add_toxic(n, t).await {
                            for (p, t) in &done {
                                let _ = self.targets.links.remove_toxic(p, t).await;
                            }
                            return Err(e);
                        }
                        done.push((n.clone(), t.name.clone()));
                    }
                }
                Applied::Toxics(done)
            }
        };
        Ok(Active {
            index,
            spec: spec.clone(),
            targets: names,
            params: params_of(spec),
            applied,
        })
    }

    /// Inject a kernel fault: resolve its hosts, apply its changes (off the runtime's
    /// threads: they run `ip`/`nft`/`tc`).
    async fn inject_kernel(
        &self,
        index: usize,
        spec: &FaultSpec,
        net: Arc<Network>,
    ) -> Result<Active> {
        let plan = kernel::plan(index, spec, &net)?;
        let changes = plan.changes.clone();
        let n = net.clone();
        tokio::task::spawn_blocking(move || kernel::apply_all(&n, &changes))
            .await
            .map_err(|e| Error::Network {
                reason: format!("applying fault #{index} panicked: {e}"),
            })??;
        let mut params = params_of(spec);
        if let Some(m) = params.as_object_mut()
            && !plan.peers.is_empty()
        {
            m.insert("peers".into(), Value::from(plan.peers.clone()));
        }
        Ok(Active {
            index,
            spec: spec.clone(),
            targets: plan.targets,
            params,
            applied: Applied::Kernel(net, plan.changes),
        })
    }

    /// Undo a fault. `restart`: restart killed processes (false when the run is ending).
    async fn heal(&self, a: Active, restart: bool) -> Result<()> {
        let mut first_err = None;
        let mut note = |r: Result<()>| {
            if let Err(e) = r {
                tracing::error!(error = %e, "chaos: heal step failed");
                first_err.get_or_insert(e);
            }
        };
        match &a.applied {
            Applied::Toxics(list) => {
                for (p, t) in list {
                    note(self.targets.links.remove_toxic(p, t).await);
                }
            }
            Applied::Disabled(list) => {
                for p in list {
                    note(self.enable_link(p).await);
                }
            }
            Applied::Paused(nodes) => {
                for n in nodes {
                    note(self.resume_node(n));
                }
            }
            Applied::Killed(nodes) => {
                if !restart {
                    self.report("heal", &a);
                    return Ok(()); // the run is ending: nothing to bring back
                }
                for n in nodes {
                    note(n.restart().await);
                }
            }
            Applied::Kernel(net, changes) => {
                let (net, changes) = (net.clone(), changes.clone());
                note(
                    tokio::task::spawn_blocking(move || kernel::revert_all(&net, &changes))
                        .await
                        .unwrap_or_else(|e| {
                            Err(Error::Network {
                                reason: format!("healing panicked: {e}"),
                            })
                        }),
                );
            }
        }
        let mut params = a.params.clone();
        if let (Some(m), Some(e)) = (params.as_object_mut(), &first_err) {
            m.insert("error".into(), Value::from(e.to_string()));
        }
        self.record_active("heal", &a, params);
        first_err.map_or(Ok(()), Err)
    }
}

/// A running schedule. Heal with [`heal_all`](Self::heal_all) or
/// [`shutdown`](Self::shutdown); dropping it heals as well.
pub struct ScheduleHandle {
    shared: Arc<Shared>,
    tasks: JoinSet<()>,
}

impl std::fmt::Debug for ScheduleHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScheduleHandle")
            .field("pending_tasks", &self.tasks.len())
            .finish()
    }
}

impl ScheduleHandle {
    /// Wait until every fault has been injected and (if it has an end) healed.
    pub async fn wait(&mut self) {
        while self.tasks.join_next().await.is_some() {}
    }

    /// Stop firing and heal every active fault (killed processes are not restarted).
    /// Every fault is attempted; the first failure is returned.
    pub async fn heal_all(&self) -> Result<()> {
        self.shared.cancel.cancel();
        let mut active = self.shared.active.lock().await;
        let mut first_err = None;
        for a in active.drain(..) {
            if let Err(e) = self.shared.heal(a, false).await {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Heal everything and stop the schedule's tasks.
    pub async fn shutdown(mut self) -> Result<()> {
        let r = self.heal_all().await;
        self.tasks.abort_all();
        r
    }

    /// The events log.
    pub fn events(&self) -> &EventLog {
        &self.shared.events
    }

    /// Faults that could not be injected, as messages (also in events.jsonl as `error`).
    pub fn errors(&self) -> Vec<String> {
        self.shared.errors.lock().clone()
    }
}

impl Drop for ScheduleHandle {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
        self.tasks.abort_all();
        let rest: Vec<Active> = match self.shared.active.try_lock() {
            Ok(mut active) => active.drain(..).collect(),
            Err(_) => {
                // An injection is in flight; it sees the cancellation when it resumes.
                // Heal what ends up active on a task, if there is a runtime left.
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    let shared = self.shared.clone();
                    rt.spawn(async move {
                        let mut active = shared.active.lock().await;
                        for a in active.drain(..) {
                            let _ = shared.heal(a, false).await;
                        }
                    });
                }
                return;
            }
        };
        let mut later = Vec::new();
        for a in rest {
            // Heal synchronously what can be: a dying runtime may never run a task.
            let sync_ok = match (&a.applied, &self.shared.targets.links) {
                (Applied::Toxics(list), Links::Local(c)) => {
                    for (p, t) in list {
                        let _ = c.remove_toxic(p, t);
                    }
                    true
                }
                (Applied::Paused(nodes), _) => {
                    for n in nodes {
                        let _ = self.shared.resume_node(n);
                    }
                    true
                }
                (Applied::Kernel(net, changes), _) => {
                    let _ = kernel::revert_all(net, changes);
                    true
                }
                (Applied::Killed(_), _) => {
                    self.shared.report("heal", &a);
                    continue;
                }
                _ => false,
            };
            if sync_ok {
                self.shared.record_active("heal", &a, a.params.clone());
            } else {
                later.push(a);
            }
        }
        if !later.is_empty() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let shared = self.shared.clone();
                rt.spawn(async move {
                    for a in later {
                        let _ = shared.heal(a, false).await;
                    }
                });
            } else {
                tracing::error!("chaos: no runtime left to heal {} fault(s)", later.len());
            }
        }
    }
}
