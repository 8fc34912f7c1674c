//! The worker engine: runs one shard of a plan's users, each a lightweight task holding
//! one WebSocket, and reports once a second.
//!
//! ```text
//!  thread 1 (current-thread runtime + LocalSet)      thread 2 ...
//!   user tasks ──record──▶ Recorder (RefCell, no lock)
//!   ticker: every second swap the Recorder ──┐
//!                                            │ bounded mpsc (per-thread intervals)
//!                                            ▼
//!  caller's runtime: merge intervals of second t from every thread
//!                    ──▶ on_line({"type":"tick",…})  … at the end ──▶ on_line({"type":"done",…})
//! ```
//! Each user: sleep until its start (ramp) → connect (TCP from a chosen source address +
//! WebSocket handshake with a 4 KiB read buffer) → `hello` (resuming its channels after a
//! reconnect) → `ready` → send on schedule, record acks and deliveries → at the end of the
//! drain, note which subscriptions were still open and close.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use flowline_protocol::ws::{ClientOp, ServerEvent};
use flowline_protocol::{ChannelId, Seq};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{WebSocketStream, client_async_with_config};
use tokio_util::sync::CancellationToken;

use crate::checker::Receipts;
use crate::error::{LoadgenError, Result};
use crate::generic::{GenericDone, GenericReceipt, Matcher, Template, Vars};
use crate::metrics::{Metric, Recorder};
use crate::plan::{Plan, PlanUser, Shard};
use crate::scenario::{LoadModel, Scenario};
use crate::scenario::{TimeUnit, WsTarget};
use crate::schedule::{RateCurve, UserSchedule, closed_window};
use crate::wire::{self, AckedMessage, Chain, Counters, Done, RecipientRecord, Tick, WorkerLine};

/// What one worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The scenario (overrides already applied).
    pub scenario: Arc<Scenario>,
    /// The provisioned plan.
    pub plan: Arc<Plan>,
    /// Which users of the plan this worker runs.
    pub shard: Shard,
    /// WebSocket URLs of the nodes; user `i` uses [`target_index`]`(i, attempt, len)`.
    pub targets: Vec<String>,
    /// Common start time of all workers (`None`: now), so their seconds line up.
    pub start_at: Option<SystemTime>,
    /// Runtime threads (each records into its own histograms).
    pub threads: usize,
    /// Cumulative metrics for the Prometheus endpoint (`--metrics-listen`), if served.
    pub metrics: Option<Arc<crate::prom::WorkerMetrics>>,
    /// Run folder for worker-side files (goose's HTML report), if any.
    pub out: Option<std::path::PathBuf>,
}

/// WebSocket read buffer per connection: tungstenite's default (128 KiB, zeroed before
/// every read) would cost ~135 KiB per connection.
const READ_BUFFER: usize = 1024;
/// Users per source address: one (source, destination) pair has ~28k ephemeral ports and
/// an explicitly bound source shares its ports across destinations.
const USERS_PER_SOURCE: u32 = 20_000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Where the run is in time, shared by a thread's tasks.
#[derive(Debug, Clone, Copy)]
struct Clock {
    start: Instant,
    start_unix_us: u64,
    send_end: Instant,
    end: Instant,
}

impl Clock {
    fn at(&self, secs: f64) -> Instant {
        self.start + Duration::from_secs_f64(secs.max(0.0))
    }

    fn unix_us(&self, t: Instant) -> u64 {
        let d = t.saturating_duration_since(self.start).as_micros() as u64;
        self.start_unix_us + d
    }

    fn secs(&self, t: Instant) -> f64 {
        t.saturating_duration_since(self.start).as_secs_f64()
    }
}

/// A resolved node (or generic WebSocket service).
#[derive(Debug, Clone)]
struct Target {
    url: String,
    addr: SocketAddr,
    /// Extra handshake headers (generic target).
    headers: Vec<(String, String)>,
    /// Subprotocol to ask for (generic target).
    subprotocol: Option<String>,
}

/// Per-thread state: the recorder the user tasks write into, and what the checker needs.
struct ThreadCtx {
    scenario: Arc<Scenario>,
    clock: Clock,
    targets: Vec<Target>,
    curve: Option<RateCurve>,
    cancel: CancellationToken,
    heartbeat: Cell<Duration>,
    rec: RefCell<Recorder>,
    connected: Cell<u64>,
    peak: Cell<u64>,
    acked: RefCell<Vec<AckedMessage>>,
    records: RefCell<Vec<RecipientRecord>>,
    /// Generic target: templates, matcher and what the users sent and received.
    generic: Option<GenericCtx>,
    /// HTTP client for uploads (made on first use).
    http: std::cell::OnceCell<reqwest::Client>,
}

/// Per-thread state of the generic WebSocket target.
struct GenericCtx {
    target: WsTarget,
    hello: Option<Template>,
    message: Template,
    room: Template,
    matcher: Matcher,
    done: RefCell<GenericDone>,
}

impl ThreadCtx {
    fn error(&self, kind: &str) {
        self.rec.borrow_mut().counters.error(kind);
    }

    fn count(&self, f: impl FnOnce(&mut Counters)) {
        f(&mut self.rec.borrow_mut().counters);
    }

    fn record(&self, m: Metric, us: u64) {
        self.rec.borrow_mut().record(m, us);
    }

    fn http_client(&self) -> reqwest::Client {
        self.http
            .get_or_init(|| {
                reqwest::Client::builder()
                    .timeout(ACK_TIMEOUT)
                    .build()
                    .unwrap_or_default()
            })
            .clone()
    }

    /// Open model: the user's next intended send on `curve` after `after`, if it is
    /// before the end of sending.
    fn next_open(
        &self,
        curve: &RateCurve,
        sched: &mut UserSchedule,
        after: Instant,
    ) -> Option<Instant> {
        sched
            .next_open(curve, self.clock.secs(after))
            .map(|s| self.clock.at(s))
            .filter(|&at| at < self.clock.send_end)
    }

    /// `now` plus a gap of `gap_s` seconds, if that is before the end of sending.
    fn after_gap(&self, now: Instant, gap_s: Option<f64>) -> Option<Instant> {
        gap_s
            .map(|s| now + Duration::from_secs_f64(s))
            .filter(|&at| at < self.clock.send_end)
    }

    fn set_connected(&self, up: bool) {
        let n = if up {
            self.connected.get() + 1
        } else {
            self.connected.get().saturating_sub(1)
        };
        self.connected.set(n);
        self.peak.set(self.peak.get().max(n));
    }
}

enum ThreadMsg {
    Tick {
        t: u64,
        rec: Box<Recorder>,
        users: u64,
    },
    Done {
        acked: Vec<AckedMessage>,
        records: Vec<RecipientRecord>,
        peak: u64,
        generic: Option<GenericDone>,
    },
}

async fn resolve(url: &str) -> Result<Target> {
    let rest = url.strip_prefix("ws://").ok_or_else(|| {
        LoadgenError::Invalid(format!("target {url:?}: only ws:// URLs are supported"))
    })?;
    let hostport = rest.split('/').next().unwrap_or_default();
    let addr = tokio::net::lookup_host(hostport)
        .await
        .map_err(|e| LoadgenError::io(format!("resolving {hostport}"), e))?
        .next()
        .ok_or_else(|| LoadgenError::Invalid(format!("target {url:?}: no address")))?;
    Ok(Target {
        url: url.to_string(),
        addr,
        headers: Vec::new(),
        subprotocol: None,
    })
}

/// Run the shard to the end of the drain, calling `on_line` with every stdout line
/// (tick lines, then the done line).
pub async fn run(
    cfg: WorkerConfig,
    cancel: CancellationToken,
    mut on_line: impl FnMut(&str),
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
        .map_or(0, |d| d.as_micros() as u64);
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
    // HTTP personas run on goose, beside the WebSocket users.
    let http_load = crate::httpload::HttpLoad::from_scenario(
        &s,
        &users,
        crate::upload::http_base(&targets[0].url),
        cfg.out
            .as_ref()
            .map(|d| d.join(format!("goose-report-w{}.html", cfg.shard.index))),
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
            .spawn(move || thread_main(scenario, clock, targets, users, cancel, tx))
            .map_err(|e| LoadgenError::io("spawning a worker thread", e))?;
        handles.push(handle);
    }
    drop(tx);

    // Merge the threads' intervals second by second.
    let warm = s.warmup.as_secs_f64();
    let send_end = warm + s.duration.as_secs_f64();
    let mut pending: BTreeMap<u64, (usize, Recorder, u64)> = BTreeMap::new();
    let mut totals = Counters::default();
    let mut done = Done {
        worker: cfg.shard.index,
        ..Done::default()
    };
    let prom = cfg.metrics.clone();
    let emit = |t: u64, rec: &Recorder, users: u64, on_line: &mut dyn FnMut(&str)| -> Result<()> {
        if let Some(m) = &prom {
            m.observe(users, rec);
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
        let line = serde_json::to_string(&WorkerLine::Tick(tick))
            .map_err(|e| LoadgenError::json("tick line", e))?;
        on_line(&line);
        Ok(())
    };
    while let Some(msg) = rx.recv().await {
        match msg {
            ThreadMsg::Tick { t, rec, users } => {
                totals.add(&rec.counters);
                let entry = pending
                    .entry(t)
                    .or_insert_with(|| (0, Recorder::default(), 0));
                entry.0 += 1;
                entry.1.merge(&rec);
                entry.2 += users;
                // Emit every second that all threads have reported, in order.
                while let Some(first) = pending.first_entry() {
                    if first.get().0 < threads {
                        break;
                    }
                    let (t, (_, rec, users)) = first.remove_entry();
                    emit(t, &rec, users, &mut on_line)?;
                }
            }
            ThreadMsg::Done {
                acked,
                records,
                peak,
                generic,
            } => {
                done.acked.extend(acked);
                done.recipients.extend(records);
                done.peak_users += peak;
                if let Some(g) = generic {
                    match done.generic.as_mut() {
                        Some(d) => d.append(g),
                        None => done.generic = Some(g),
                    }
                }
            }
        }
    }
    // Threads that ended early leave partial seconds behind.
    for (t, (_, rec, users)) in std::mem::take(&mut pending) {
        emit(t, &rec, users, &mut on_line)?;
    }
    for h in handles {
        if h.join().is_err() {
            return Err(LoadgenError::Invalid("a worker thread panicked".into()));
        }
    }
    done.totals = totals;
    if let Some(g) = goose {
        match g.await {
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
                crate::generic::check(t, g, cfg.scenario.population.users).map_or(0, |r| r.lost)
            }
            _ => crate::checker::check(&done.acked, &done.recipients).lost,
        };
        m.set_lost(lost);
    }
    done.resources = wire::Resources::of_self();
    let line = serde_json::to_string(&WorkerLine::Done(Box::new(done)))
        .map_err(|e| LoadgenError::json("done line", e))?;
    on_line(&line);
    Ok(())
}

fn thread_main(
    scenario: Arc<Scenario>,
    clock: Clock,
    targets: Vec<Target>,
    users: Vec<PlanUser>,
    cancel: CancellationToken,
    tx: mpsc::Sender<ThreadMsg>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start a worker runtime: {e}");
            return;
        }
    };
    let curve = match &scenario.load.model {
        LoadModel::Open { stages } => Some(RateCurve::new(
            stages,
            (scenario.warmup + scenario.duration).as_secs_f64(),
        )),
        LoadModel::Closed { .. } => None,
    };
    let generic = match scenario.target.as_ref().map(GenericCtx::new) {
        Some(Ok(g)) => Some(g),
        Some(Err(e)) => {
            tracing::error!("generic target: {e}");
            return;
        }
        None => None,
    };
    let ctx = Rc::new(ThreadCtx {
        http: std::cell::OnceCell::new(),
        generic,
        scenario,
        clock,
        targets,
        curve,
        cancel,
        heartbeat: Cell::new(Duration::from_secs(15)),
        rec: RefCell::new(Recorder::default()),
        connected: Cell::new(0),
        peak: Cell::new(0),
        acked: RefCell::new(Vec::new()),
        records: RefCell::new(Vec::new()),
    });
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let finished = Rc::new(Cell::new(false));
        let ticker = {
            let ctx = ctx.clone();
            let tx = tx.clone();
            let finished = finished.clone();
            tokio::task::spawn_local(async move {
                let mut t = 1u64;
                loop {
                    sleep_until((ctx.clock.start + Duration::from_secs(t)).into()).await;
                    let rec = std::mem::take(&mut *ctx.rec.borrow_mut());
                    let users = ctx.connected.get();
                    if tx
                        .send(ThreadMsg::Tick {
                            t,
                            rec: Box::new(rec),
                            users,
                        })
                        .await
                        .is_err()
                    {
                        return;
                    }
                    if finished.get() {
                        return;
                    }
                    t += 1;
                }
            })
        };
        let mut logged = false;
        let tasks: Vec<_> = users
            .into_iter()
            .map(|u| {
                if ctx.generic.is_some() {
                    let f = generic_user_main(ctx.clone(), u);
                    if !std::mem::replace(&mut logged, true) {
                        tracing::debug!(bytes = std::mem::size_of_val(&f), "generic user task");
                    }
                    tokio::task::spawn_local(f)
                } else {
                    let f = user_main(ctx.clone(), u);
                    if !std::mem::replace(&mut logged, true) {
                        tracing::debug!(bytes = std::mem::size_of_val(&f), "user task");
                    }
                    tokio::task::spawn_local(f)
                }
            })
            .collect();
        for t in tasks {
            if let Err(e) = t.await {
                tracing::error!("a user task failed: {e}");
            }
        }
        finished.set(true);
        let _ = ticker.await;
        let acked = std::mem::take(&mut *ctx.acked.borrow_mut());
        let records = std::mem::take(&mut *ctx.records.borrow_mut());
        let generic = ctx
            .generic
            .as_ref()
            .map(|g| std::mem::take(&mut *g.done.borrow_mut()));
        let _ = tx
            .send(ThreadMsg::Done {
                acked,
                records,
                peak: ctx.peak.get(),
                generic,
            })
            .await;
    });
}

/// One channel as seen by one user.
struct Chan {
    id: ChannelId,
    chains: Vec<Chain>,
    receipts: Receipts,
    subscribed: bool,
}

type Ws = WebSocketStream<TcpStream>;

/// Which node a user's connection attempt goes to.
///
/// The home node is a hash of the user index, not `index % nodes`: users join spaces by
/// `index % spaces`, so with `index % nodes` a whole space sits on one node whenever the
/// space and node counts share a factor, and no message of it ever crosses the cluster
/// bus. Each failed or broken attempt moves on to the next node, so the users of a killed
/// node reconnect (and resume) elsewhere.
pub fn target_index(user: u32, attempt: u32, nodes: usize) -> usize {
    if nodes <= 1 {
        return 0;
    }
    // splitmix64 finalizer: deterministic, well mixed for consecutive indices.
    let mut z = u64::from(user).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    ((z % nodes as u64) as usize + attempt as usize) % nodes
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(Some(16 << 20))
}

async fn connect(target: &Target, user: u32) -> std::result::Result<Ws, &'static str> {
    let sock = match target.addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|_| "socket")?;
    let block = user / USERS_PER_SOURCE;
    if block > 0
        && let IpAddr::V4(ip) = target.addr.ip()
        && ip.is_loopback()
    {
        let src = Ipv4Addr::new(127, 0, 0, 1 + (block % 250) as u8);
        sock.bind(SocketAddr::new(src.into(), 0))
            .map_err(|_| "bind")?;
    }
    let tcp = match timeout(CONNECT_TIMEOUT, sock.connect(target.addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(_)) => return Err("connect"),
        Err(_) => return Err("connect_timeout"),
    };
    let _ = tcp.set_nodelay(true);
    let mut req = target
        .url
        .as_str()
        .into_client_request()
        .map_err(|_| "bad_url")?;
    for (k, v) in &target.headers {
        let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) else {
            return Err("bad_header");
        };
        req.headers_mut().insert(k, v);
    }
    if let Some(p) = &target.subprotocol {
        let v = HeaderValue::from_str(p).map_err(|_| "bad_header")?;
        req.headers_mut().insert("sec-websocket-protocol", v);
    }
    match timeout(
        CONNECT_TIMEOUT,
        client_async_with_config(req, tcp, Some(ws_config())),
    )
    .await
    {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(_)) => Err("handshake"),
        Err(_) => Err("handshake_timeout"),
    }
}

const BODY: &str = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. ";

fn body(len: usize) -> String {
    BODY.chars().cycle().take(len).collect()
}

/// How a session ended.
enum End {
    /// The run is over (or this user's ramp window ended): close and stop.
    Finished,
    /// The connection broke: reconnect with resume.
    Broken,
    /// Planned churn: close and reconnect with resume.
    Churn,
}

struct Pending {
    req_id: u64,
    /// Intended (open) or actual (closed) send time.
    at: Instant,
    channel: ChannelId,
}

struct User {
    ctx: Rc<ThreadCtx>,
    plan: PlanUser,
    sched: UserSchedule,
    chans: Vec<Chan>,
    pending: VecDeque<Pending>,
    next_req: u64,
    sent_n: u64,
    /// Next send: intended time (open) or after think time (closed).
    next_send: Option<Instant>,
    next_history: Option<Instant>,
    stop_at: Instant,
    /// Uploaded attachments for the next message.
    attach: Vec<flowline_protocol::AttachmentId>,
    /// Chat-feature traffic of the persona (reactions, threads, presence, uploads).
    feat: Features,
}

/// Feature traffic state of one user (its own random stream, so personas without
/// features keep exactly the schedule they had before).
struct Features {
    rng: rand_chacha::ChaCha8Rng,
    typing: bool,
    react_gap_s: Option<f64>,
    presence_gap_s: Option<f64>,
    upload_gap_s: Option<f64>,
    thread_share: f64,
    next_react: Option<Instant>,
    next_presence: Option<Instant>,
    next_upload: Option<Instant>,
    /// Feature operations awaiting their answer: (req_id, kind).
    waiting: VecDeque<(u64, &'static str)>,
    /// The latest message seen (to react to or start a thread on).
    seen: Option<(ChannelId, flowline_protocol::MessageId)>,
    /// The user's thread channel, once `thread_created` answered.
    thread: Option<ChannelId>,
    presence_n: u32,
    uploads: u32,
    /// `http://host:port` of the node (uploads).
    http: String,
}

/// Purpose tag of the feature random stream.
const FEATURES: u64 = 2;
/// Most feature operations remembered while awaiting an answer.
const MAX_WAITING: usize = 256;

impl Features {
    fn new(s: &Scenario, user: u32, p: &crate::scenario::Persona, http: String) -> Self {
        let gap = |per_min: f64| (per_min > 0.0).then(|| 60.0 / per_min);
        Features {
            rng: crate::plan::user_rng(s.seed, user, FEATURES),
            typing: p.typing,
            react_gap_s: gap(p.reactions_per_minute),
            presence_gap_s: gap(p.presence_per_minute),
            upload_gap_s: gap(p.uploads_per_minute),
            thread_share: p.thread_reply_share,
            next_react: None,
            next_presence: None,
            next_upload: None,
            waiting: VecDeque::new(),
            seen: None,
            thread: None,
            presence_n: 0,
            uploads: 0,
            http,
        }
    }

    fn next(&mut self, now: Instant, gap_s: Option<f64>, end: Instant) -> Option<Instant> {
        use rand_distr::Distribution;
        let g = gap_s?;
        let e: f64 = rand_distr::Exp1.sample(&mut self.rng);
        Some(now + Duration::from_secs_f64(e * g)).filter(|&at| at < end)
    }

    /// Schedule whatever is not scheduled yet.
    fn schedule(&mut self, now: Instant, end: Instant) {
        if self.next_react.is_none() {
            self.next_react = self.next(now, self.react_gap_s, end);
        }
        if self.next_presence.is_none() {
            self.next_presence = self.next(now, self.presence_gap_s, end);
        }
        if self.next_upload.is_none() {
            self.next_upload = self.next(now, self.upload_gap_s, end);
        }
    }

    fn wait(&mut self, req_id: u64, kind: &'static str) {
        if self.waiting.len() >= MAX_WAITING {
            self.waiting.pop_front();
        }
        self.waiting.push_back((req_id, kind));
    }

    fn answered(&mut self, req_id: u64) -> Option<&'static str> {
        let i = self.waiting.iter().position(|w| w.0 == req_id)?;
        self.waiting.remove(i).map(|w| w.1)
    }

    fn thread_reply(&mut self) -> bool {
        use rand::Rng;
        self.thread_share > 0.0 && self.rng.random_bool(self.thread_share.min(1.0))
    }
}

/// When a user connects and when it leaves: its ramp window (closed model) or its place
/// in the connect order (open model), bounded by the end of the run. `None`: the ramp
/// never reaches this user.
fn user_window(ctx: &ThreadCtx, index: u32) -> Option<(Instant, Instant)> {
    let s = &ctx.scenario;
    let (start_s, stop_s) = match &s.load.model {
        LoadModel::Closed { stages } => closed_window(stages, index, s.load.connect_rate)?,
        LoadModel::Open { .. } => (
            f64::from(index) / f64::from(s.load.connect_rate.max(1)),
            None,
        ),
    };
    let stop_at = stop_s.map_or(ctx.clock.end, |t| ctx.clock.at(t).min(ctx.clock.end));
    Some((ctx.clock.at(start_s), stop_at))
}

/// Sleep until `start`; false when the run is cancelled first.
async fn wait_start(ctx: &ThreadCtx, start: Instant) -> bool {
    tokio::select! {
        _ = sleep_until(start.into()) => true,
        _ = ctx.cancel.cancelled() => false,
    }
}

/// A simulated user whose connections [`drive`] opens, whatever protocol it speaks.
trait Sessions {
    fn index(&self) -> u32;
    fn stop_at(&self) -> Instant;
    /// One connection's life, from the handshake's end to its close.
    /// Takes the socket by reference: moved in, it would sit in the task twice (as the
    /// argument and as the session's local).
    async fn session(&mut self, ws: &mut Ws, churn_at: Option<Instant>) -> End;
}

/// Connection behaviour shared by every kind of user: connect to the user's node (see
/// [`target_index`]), run a session, and reconnect after a failed attempt or a broken
/// session with capped exponential backoff, moving on to the next node each time; planned
/// churn closes and reconnects to the home node. Ends at the user's stop time or on
/// cancellation.
async fn drive(ctx: &ThreadCtx, u: &mut impl Sessions, churn: Option<Duration>) {
    let index = u.index();
    let mut attempt = 0u32;
    let mut sessions = 0u32;
    loop {
        let stop_at = u.stop_at();
        if Instant::now() >= stop_at || ctx.cancel.is_cancelled() {
            break;
        }
        let t0 = Instant::now();
        let target = &ctx.targets[target_index(index, attempt, ctx.targets.len())];
        // Boxed, as every step that only runs now and then: a task's size is that of its
        // largest state, paid by every user for the whole run.
        let backoff = match Box::pin(connect(target, index)).await {
            Err(kind) => {
                ctx.error(kind);
                attempt += 1;
                // Failed attempts back off longer, spread by user so a refused crowd does
                // not come back in lockstep.
                Duration::from_millis((100u64 << attempt.min(6)).min(5_000))
                    + Duration::from_millis(u64::from(index % 97))
            }
            Ok(mut ws) => {
                ctx.record(Metric::Connect, t0.elapsed().as_micros() as u64);
                if sessions > 0 {
                    ctx.count(|c| c.reconnects += 1);
                }
                sessions += 1;
                let churn_at = churn.map(|every| {
                    // Spread churn over users deterministically: a first close after
                    // 50–150% of the interval, depending on the user's index.
                    let frac = 0.5 + f64::from(index % 101) / 100.0;
                    Instant::now() + every.mul_f64(if sessions == 1 { frac } else { 1.0 })
                });
                match u.session(&mut ws, churn_at).await {
                    End::Finished => break,
                    End::Churn => {
                        attempt = 0;
                        continue;
                    }
                    End::Broken => {
                        ctx.count(|c| c.disconnects += 1);
                        attempt += 1;
                        Duration::from_millis((50u64 << attempt.min(6)).min(2_000))
                    }
                }
            }
        };
        tokio::select! {
            _ = sleep_until((Instant::now() + backoff).min(u.stop_at()).into()) => {}
            _ = ctx.cancel.cancelled() => {}
        }
    }
}

async fn user_main(ctx: Rc<ThreadCtx>, plan: PlanUser) {
    let s = ctx.scenario.clone();
    let Some(persona) = s.personas.get(plan.persona as usize) else {
        ctx.error("bad_persona");
        return;
    };
    if persona.http.is_some() {
        // Runs on goose (`httpload`).
        return;
    }
    let Some((start, stop_at)) = user_window(&ctx, plan.index) else {
        return;
    };
    let churn = persona.reconnect_every;
    let home = target_index(plan.index, 0, ctx.targets.len());
    let http = crate::upload::http_base(&ctx.targets[home].url);
    let mut u = User {
        feat: Features::new(&s, plan.index, persona, http),
        attach: Vec::new(),
        sched: UserSchedule::new(&s, plan.index, persona),
        chans: plan
            .channels
            .iter()
            .map(|&id| Chan {
                id,
                chains: Vec::new(),
                receipts: Receipts::default(),
                subscribed: false,
            })
            .collect(),
        ctx: ctx.clone(),
        plan,
        pending: VecDeque::new(),
        next_req: 1,
        sent_n: 0,
        next_send: None,
        next_history: None,
        stop_at,
    };
    if !wait_start(&ctx, start).await {
        return;
    }
    if u.sched.is_open() {
        u.advance_open(start);
    }
    drive(&ctx, &mut u, churn).await;
    // Record what this user saw for the checker.
    let mut records = ctx.records.borrow_mut();
    for c in u.chans.drain(..) {
        if c.chains.is_empty() {
            continue;
        }
        records.push(RecipientRecord {
            user: u.plan.index,
            channel: c.id,
            chains: c.chains,
            received: c.receipts.ranges,
            duplicates: c.receipts.duplicates,
            reordered: c.receipts.reordered,
            dup_seqs: c.receipts.dup_seqs,
            reordered_seqs: c.receipts.reordered_seqs,
        });
    }
}

impl Sessions for User {
    fn index(&self) -> u32 {
        self.plan.index
    }
    fn stop_at(&self) -> Instant {
        self.stop_at
    }
    async fn session(&mut self, ws: &mut Ws, churn_at: Option<Instant>) -> End {
        User::session(self, ws, churn_at).await
    }
}

impl User {
    fn advance_open(&mut self, after: Instant) {
        if let Some(curve) = self.ctx.curve.as_ref() {
            self.next_send = self.ctx.next_open(curve, &mut self.sched, after);
        }
    }

    fn schedule_closed(&mut self, now: Instant) {
        self.next_send = self.ctx.after_gap(now, self.sched.think_time());
    }

    fn schedule_history(&mut self, now: Instant) {
        self.next_history = self.ctx.after_gap(now, self.sched.history_gap());
    }

    fn chan(&mut self, id: ChannelId) -> &mut Chan {
        let i = match self.chans.iter().position(|c| c.id == id) {
            Some(i) => i,
            None => {
                self.chans.push(Chan {
                    id,
                    chains: Vec::new(),
                    receipts: Receipts::default(),
                    subscribed: false,
                });
                self.chans.len() - 1
            }
        };
        &mut self.chans[i]
    }

    /// One WebSocket session: hello, ready, then traffic until the end, churn or a break.
    async fn session(&mut self, ws: &mut Ws, churn_at: Option<Instant>) -> End {
        let ctx = self.ctx.clone();
        let resume: BTreeMap<ChannelId, Seq> = self
            .chans
            .iter()
            .filter_map(|c| {
                let chain = c.chains.last()?;
                Some((c.id, c.receipts.max.max(chain.from)))
            })
            .collect();
        let hello = ClientOp::Hello {
            token: self.plan.token.clone(),
            v: flowline_protocol::PROTOCOL_VERSION,
            resume: resume.clone(),
            subscribe_all: true,
            // Only users that change presence look at it; the others skip the snapshot,
            // which in spaces of hundreds is the largest frame of a session and would
            // grow its read buffer for good.
            presence: self.feat.presence_gap_s.is_some(),
        };
        let t0 = Instant::now();
        if Box::pin(send_op(ws, &hello)).await.is_err() {
            ctx.error("ws_send");
            return End::Broken;
        }
        let ready = match Box::pin(timeout(HELLO_TIMEOUT, wait_ready(ws))).await {
            Ok(Ok(r)) => r,
            Ok(Err(kind)) => {
                ctx.error(kind);
                return End::Broken;
            }
            Err(_) => {
                ctx.error("hello_timeout");
                return End::Broken;
            }
        };
        ctx.record(Metric::Hello, t0.elapsed().as_micros() as u64);
        if let Some(hb) = ready.1 {
            ctx.heartbeat.set(hb);
        }
        for (id, seq) in ready.0 {
            let resumed = resume.contains_key(&id);
            let c = self.chan(id);
            if !resumed || c.chains.is_empty() {
                c.chains.push(Chain {
                    from: seq,
                    open: false,
                });
            }
            c.subscribed = true;
        }
        ctx.set_connected(true);
        ctx.count(|c| c.connects += 1);
        let now = Instant::now();
        if !self.sched.is_open() && self.next_send.is_none() && self.pending.is_empty() {
            self.schedule_closed(now);
        }
        if self.next_history.is_none() {
            self.schedule_history(now);
        }
        self.feat.schedule(now, ctx.clock.send_end);
        let end = self.traffic(ws, churn_at).await;
        ctx.set_connected(false);
        for c in &mut self.chans {
            if matches!(end, End::Finished) && Instant::now() >= ctx.clock.end && c.subscribed {
                // Connected and subscribed through the end of the drain.
                if let Some(last) = c.chains.last_mut() {
                    last.open = true;
                }
            }
            c.subscribed = false;
        }
        // Sends in flight on a lost connection never get their ack.
        if !self.pending.is_empty() {
            let n = self.pending.len();
            for _ in 0..n {
                ctx.error("unacked");
            }
            self.pending.clear();
            if !self.sched.is_open() {
                self.schedule_closed(Instant::now());
            }
        }
        if !matches!(end, End::Broken) {
            let _ = Box::pin(timeout(CLOSE_TIMEOUT, ws.close(None))).await;
        }
        end
    }

    async fn traffic(&mut self, ws: &mut Ws, churn_at: Option<Instant>) -> End {
        let ctx = self.ctx.clone();
        let mut last_out = Instant::now();
        // One timer and one cancellation waiter for the whole session, re-armed only when
        // the wake-up time moves: building them per received frame cost a timer-wheel
        // insert and a lock per delivery.
        let cancelled = ctx.cancel.cancelled();
        tokio::pin!(cancelled);
        let timer = sleep_until(self.stop_at.into());
        tokio::pin!(timer);
        loop {
            // The node pings at the WebSocket level (answered by tungstenite); an application
            // ping after a full idle heartbeat is only a safety net.
            let ping_at = last_out + ctx.heartbeat.get();
            let ack_deadline = self.pending.front().map(|p| p.at + ACK_TIMEOUT);
            let mut wake = self.stop_at.min(ping_at);
            for t in [
                self.next_send,
                self.next_history,
                churn_at,
                ack_deadline,
                self.feat.next_react,
                self.feat.next_presence,
                self.feat.next_upload,
            ]
            .into_iter()
            .flatten()
            {
                wake = wake.min(t);
            }
            if timer.deadline() != wake.into() {
                timer.as_mut().reset(wake.into());
            }
            tokio::select! {
                frame = ws.next() => match frame {
                    Some(Ok(Message::Text(text))) => self.on_frame(text.as_str()),
                    Some(Ok(Message::Close(_))) | None => {
                        ctx.error("closed_by_server");
                        return End::Broken;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) => {
                        ctx.error("ws_read");
                        return End::Broken;
                    }
                },
                _ = &mut timer => {
                    let now = Instant::now();
                    if now >= self.stop_at {
                        return End::Finished;
                    }
                    if churn_at.is_some_and(|c| now >= c) {
                        return End::Churn;
                    }
                    if ack_deadline.is_some_and(|d| now >= d) {
                        self.pending.pop_front();
                        ctx.error("ack_timeout");
                        if !self.sched.is_open() {
                            self.schedule_closed(now);
                        }
                    }
                    if let Some(at) = self.next_send.filter(|&at| now >= at) {
                        if Box::pin(self.send_message(ws, at)).await.is_err() {
                            return End::Broken;
                        }
                        last_out = now;
                    }
                    if self.next_history.is_some_and(|at| now >= at) {
                        self.schedule_history(now);
                        if let Some(ch) = self.pick_channel() {
                            let req_id = self.take_req();
                            let op = ClientOp::History { req_id, channel: ch, before: None, after: None, limit: Some(50) };
                            if Box::pin(send_op(ws, &op)).await.is_err() {
                                ctx.error("ws_send");
                                return End::Broken;
                            }
                            last_out = now;
                        }
                    }
                    // Boxed: rare, and its future (HTTP uploads) would otherwise
                    // enlarge every user's task for the whole run.
                    match Box::pin(self.features_due(ws, now)).await {
                        Ok(true) => last_out = now,
                        Ok(false) => {}
                        Err(()) => return End::Broken,
                    }
                    if now >= ping_at {
                        let op = ClientOp::Ping { req_id: None, ts: None };
                        if Box::pin(send_op(ws, &op)).await.is_err() {
                            ctx.error("ws_send");
                            return End::Broken;
                        }
                        last_out = now;
                    }
                }
                _ = &mut cancelled => return End::Finished,
            }
        }
    }

    /// Send the feature operations that are due; `Ok(true)` if something was written.
    async fn features_due(&mut self, ws: &mut Ws, now: Instant) -> std::result::Result<bool, ()> {
        let ctx = self.ctx.clone();
        let end = ctx.clock.send_end;
        let mut wrote = false;
        if self.feat.next_react.is_some_and(|at| now >= at) {
            self.feat.next_react = self.feat.next(now, self.feat.react_gap_s, end);
            if let Some((channel, id)) = self.feat.seen {
                let req_id = self.take_req();
                const EMOJI: [&str; 4] = ["👍", "🎉", "❤️", "😂"];
                let emoji = EMOJI[(req_id % 4) as usize].to_string();
                let op = ClientOp::React {
                    req_id,
                    channel,
                    id,
                    emoji,
                };
                if send_op(ws, &op).await.is_err() {
                    ctx.error("ws_send");
                    return Err(());
                }
                self.feat.wait(req_id, "react");
                ctx.count(|c| c.op("react"));
                wrote = true;
            }
        }
        if self.feat.next_presence.is_some_and(|at| now >= at) {
            use flowline_protocol::ws::PresenceStatus;
            self.feat.next_presence = self.feat.next(now, self.feat.presence_gap_s, end);
            const CYCLE: [PresenceStatus; 4] = [
                PresenceStatus::Idle,
                PresenceStatus::Online,
                PresenceStatus::Dnd,
                PresenceStatus::Online,
            ];
            let status = CYCLE[(self.feat.presence_n % 4) as usize];
            self.feat.presence_n += 1;
            let req_id = self.take_req();
            let op = ClientOp::SetPresence {
                req_id: Some(req_id),
                status,
                custom: None,
            };
            if send_op(ws, &op).await.is_err() {
                ctx.error("ws_send");
                return Err(());
            }
            self.feat.wait(req_id, "set_presence");
            ctx.count(|c| c.op("set_presence"));
            wrote = true;
        }
        if self.feat.next_upload.is_some_and(|at| now >= at) {
            self.feat.next_upload = self.feat.next(now, self.feat.upload_gap_s, end);
            self.feat.uploads += 1;
            let name = format!("lg-{}-{}.txt", self.plan.index, self.feat.uploads);
            ctx.count(|c| c.op("upload"));
            let client = ctx.http_client();
            match timeout(
                ACK_TIMEOUT,
                crate::upload::upload(&client, &self.feat.http, &self.plan.token, &name),
            )
            .await
            {
                Ok(Ok(id)) => {
                    ctx.count(|c| c.op("upload_ok"));
                    self.attach.push(id);
                }
                Ok(Err(kind)) => ctx.error(&kind),
                Err(_) => ctx.error("upload:timeout"),
            }
        }
        Ok(wrote)
    }

    fn take_req(&mut self) -> u64 {
        let r = self.next_req;
        self.next_req += 1;
        r
    }

    fn pick_channel(&mut self) -> Option<ChannelId> {
        if self.plan.channels.is_empty() {
            return None;
        }
        let i = self.sched.pick_channel(self.plan.channels.len());
        Some(self.plan.channels[i])
    }

    /// Send the message due at `intended`; the open model measures from that time.
    async fn send_message(
        &mut self,
        ws: &mut Ws,
        intended: Instant,
    ) -> std::result::Result<(), ()> {
        let ctx = self.ctx.clone();
        let open = self.sched.is_open();
        let now = Instant::now();
        let at = if open { intended } else { now };
        if open {
            self.advance_open(intended);
        } else {
            // Closed model: the next send is scheduled when this one is acked.
            self.next_send = None;
        }
        let Some(mut channel) = self.pick_channel() else {
            return Ok(());
        };
        if self.feat.typing {
            if send_op(ws, &ClientOp::Typing { channel }).await.is_err() {
                ctx.error("ws_send");
                return Err(());
            }
            ctx.count(|c| c.op("typing"));
        }
        if self.feat.thread_reply() {
            match (self.feat.thread, self.feat.seen) {
                (Some(t), _) => {
                    channel = t;
                    ctx.count(|c| c.op("thread_reply"));
                }
                (None, Some((ch, id)))
                    if !self.feat.waiting.iter().any(|w| w.1 == "start_thread") =>
                {
                    let req_id = self.take_req();
                    let op = ClientOp::StartThread {
                        req_id,
                        channel: ch,
                        id,
                        name: None,
                    };
                    if send_op(ws, &op).await.is_err() {
                        ctx.error("ws_send");
                        return Err(());
                    }
                    self.feat.wait(req_id, "start_thread");
                    ctx.count(|c| c.op("start_thread"));
                }
                _ => {}
            }
        }
        let attachments = std::mem::take(&mut self.attach);
        if !attachments.is_empty() {
            ctx.count(|c| c.op("send_attachment"));
        }
        let len = self.sched.body_len();
        let req_id = self.take_req();
        self.sent_n += 1;
        let mut op = ClientOp::send_text(
            req_id,
            channel,
            body(len),
            Some(wire::nonce(
                self.plan.index,
                self.sent_n,
                ctx.clock.unix_us(at),
            )),
        );
        if let ClientOp::Send { attachments: a, .. } = &mut op {
            *a = attachments;
        }
        if send_op(ws, &op).await.is_err() {
            ctx.error("ws_send");
            return Err(());
        }
        ctx.count(|c| c.sent += 1);
        self.pending.push_back(Pending {
            req_id,
            at,
            channel,
        });
        Ok(())
    }

    fn on_frame(&mut self, text: &str) {
        let ctx = self.ctx.clone();
        let Ok(p) = serde_json::from_str::<wire::Peek<'_>>(text) else {
            ctx.error("bad_frame");
            return;
        };
        let now = Instant::now();
        match p.kind {
            "message" => {
                let (Some(channel), Some(seq)) = (p.channel, p.seq) else {
                    ctx.error("bad_frame");
                    return;
                };
                let me = self.plan.index;
                if let Some(id) = p.id {
                    self.feat.seen = Some((channel, id));
                }
                let fresh = self.chan(channel).receipts.add(seq);
                if let Some((author, _, sent_us)) = p.nonce.and_then(wire::parse_nonce)
                    && author != me
                    && fresh
                {
                    let lat = ctx.clock.unix_us(now).saturating_sub(sent_us);
                    ctx.record(Metric::Delivery, lat);
                    ctx.count(|c| c.delivered += 1);
                }
            }
            "ack" => {
                let Some(req_id) = p.req_id else { return };
                let Some(i) = self.pending.iter().position(|x| x.req_id == req_id) else {
                    return;
                };
                let Some(pend) = self.pending.remove(i) else {
                    return;
                };
                ctx.record(
                    Metric::Ack,
                    now.saturating_duration_since(pend.at).as_micros() as u64,
                );
                ctx.count(|c| c.acked += 1);
                if let (Some(seq), Some(id)) = (p.seq, p.id) {
                    let channel = p.channel.unwrap_or(pend.channel);
                    self.feat.seen = Some((channel, id));
                    ctx.acked
                        .borrow_mut()
                        .push((channel, seq, id, self.plan.index));
                }
                if !self.sched.is_open() {
                    self.schedule_closed(now);
                }
            }
            "history" => ctx.count(|c| c.history += 1),
            "ok" => {
                if let Some(kind) = p.req_id.and_then(|r| self.feat.answered(r)) {
                    ctx.count(|c| c.op(&format!("{kind}_ok")));
                }
            }
            "thread_created" => {
                if let Some(kind) = p.req_id.and_then(|r| self.feat.answered(r)) {
                    ctx.count(|c| c.op(&format!("{kind}_ok")));
                    if let Ok(ServerEvent::ThreadCreated { thread, .. }) =
                        serde_json::from_str(text)
                    {
                        self.feat.thread = Some(thread.channel);
                    }
                }
            }
            "subscribed" => {
                if let Ok(ServerEvent::Subscribed { channels, .. }) = serde_json::from_str(text) {
                    for (id, seq) in channels {
                        let c = self.chan(id);
                        c.chains.push(Chain {
                            from: seq,
                            open: false,
                        });
                        c.subscribed = true;
                    }
                }
            }
            "error" => {
                let code = p
                    .code
                    .and_then(|c| serde_json::to_value(c).ok())
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_else(|| "unknown".into());
                if let Some(kind) = p.req_id.and_then(|r| self.feat.answered(r)) {
                    ctx.error(&format!("{kind}:{code}"));
                    return;
                }
                ctx.error(&format!("server:{code}"));
                // A refused send is answered by an error instead of an ack.
                if let Some(req_id) = p.req_id
                    && let Some(i) = self.pending.iter().position(|x| x.req_id == req_id)
                {
                    self.pending.remove(i);
                    if !self.sched.is_open() {
                        self.schedule_closed(now);
                    }
                }
            }
            _ => {}
        }
    }
}

async fn send_op(ws: &mut Ws, op: &ClientOp) -> std::result::Result<(), ()> {
    let text = serde_json::to_string(op).map_err(|_| ())?;
    ws.send(Message::text(text)).await.map_err(|_| ())
}

/// Wait for `ready`: (channels with their seq, heartbeat).
async fn wait_ready(
    ws: &mut Ws,
) -> std::result::Result<(BTreeMap<ChannelId, Seq>, Option<Duration>), &'static str> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => match serde_json::from_str::<ServerEvent>(&text) {
                Ok(ServerEvent::Ready {
                    channels,
                    heartbeat_ms,
                    ..
                }) => {
                    let hb = (heartbeat_ms > 0).then(|| Duration::from_millis(heartbeat_ms));
                    return Ok((channels, hb));
                }
                Ok(ServerEvent::Error { .. }) => return Err("hello_refused"),
                _ => {}
            },
            Some(Ok(Message::Close(_))) | None => return Err("hello_closed"),
            Some(Ok(_)) => {}
            Some(Err(_)) => return Err("ws_read"),
        }
    }
}

// ---------------------------------------------------------------- generic WebSocket target

impl GenericCtx {
    fn new(t: &WsTarget) -> Result<GenericCtx> {
        Ok(GenericCtx {
            hello: t.hello.as_deref().map(Template::parse).transpose()?,
            message: Template::parse(&t.message)?,
            room: Template::parse(&t.room)?,
            matcher: Matcher::new(t)?,
            target: t.clone(),
            done: RefCell::new(GenericDone::default()),
        })
    }
}

/// Most own frames remembered for echo latency when frames carry no send time.
const MAX_INFLIGHT: usize = 4096;

/// One simulated user of a generic WebSocket service.
struct GenericUser {
    ctx: Rc<ThreadCtx>,
    index: u32,
    sched: UserSchedule,
    room: u32,
    room_key: String,
    seq: u64,
    /// Own frames written and not yet echoed: (seq, send time), oldest first.
    inflight: VecDeque<(u64, Instant)>,
    echo: Receipts,
    /// Receipts of other users' frames, by author.
    from: BTreeMap<u32, Receipts>,
    next_send: Option<Instant>,
    stop_at: Instant,
    /// Start of the last session (Unix µs) and whether it lasted to the end.
    last_session: Option<(u64, bool)>,
    buf: String,
}

async fn generic_user_main(ctx: Rc<ThreadCtx>, plan: PlanUser) {
    let s = ctx.scenario.clone();
    let Some(g) = ctx.generic.as_ref() else {
        return;
    };
    let Some(persona) = s.personas.get(plan.persona as usize) else {
        ctx.error("bad_persona");
        return;
    };
    let Some((start, stop_at)) = user_window(&ctx, plan.index) else {
        return;
    };
    let room = plan.index / g.target.room_size.max(1);
    let mut u = GenericUser {
        ctx: ctx.clone(),
        index: plan.index,
        sched: UserSchedule::new(&s, plan.index, persona),
        room,
        room_key: crate::generic::room_key(&g.room, plan.index, g.target.room_size),
        seq: 0,
        inflight: VecDeque::new(),
        echo: Receipts::default(),
        from: BTreeMap::new(),
        next_send: None,
        stop_at,
        last_session: None,
        buf: String::new(),
    };
    if !wait_start(&ctx, start).await {
        return;
    }
    if u.sched.is_open() {
        u.advance_open(start);
    }
    drive(&ctx, &mut u, persona.reconnect_every).await;
    if g.target.expect == crate::scenario::Expect::None {
        return;
    }
    let mut d = g.done.borrow_mut();
    if let Some((from, open)) = u.last_session {
        d.sessions.push((u.index, from, open));
    }
    let me = u.index;
    if !u.echo.ranges.is_empty() {
        d.received.push(GenericReceipt::from_receipts(
            me,
            me,
            std::mem::take(&mut u.echo),
        ));
    }
    for (author, r) in std::mem::take(&mut u.from) {
        d.received
            .push(GenericReceipt::from_receipts(me, author, r));
    }
}

impl Sessions for GenericUser {
    fn index(&self) -> u32 {
        self.index
    }
    fn stop_at(&self) -> Instant {
        self.stop_at
    }
    async fn session(&mut self, ws: &mut Ws, churn_at: Option<Instant>) -> End {
        GenericUser::session(self, ws, churn_at).await
    }
}

impl GenericUser {
    fn advance_open(&mut self, after: Instant) {
        if let Some(curve) = self.ctx.curve.as_ref() {
            self.next_send = self.ctx.next_open(curve, &mut self.sched, after);
        }
    }

    /// Closed model: the next frame after a think time (a generic service has no ack to
    /// wait for).
    fn schedule_closed(&mut self, now: Instant) {
        self.next_send = self.ctx.after_gap(now, self.sched.think_time());
    }

    fn vars(&self, seq: u64, at: Instant) -> Vars<'_> {
        Vars {
            user: self.index,
            seq,
            unix_us: self.ctx.clock.unix_us(at),
            mono_ns: at
                .saturating_duration_since(self.ctx.clock.start)
                .as_nanos() as u64,
            room: self.room,
            room_key: &self.room_key,
        }
    }

    async fn session(&mut self, ws: &mut Ws, churn_at: Option<Instant>) -> End {
        let ctx = self.ctx.clone();
        let Some(g) = ctx.generic.as_ref() else {
            return End::Finished;
        };
        if let Some(h) = &g.hello {
            let text = h.to_string(&self.vars(0, Instant::now()));
            if Box::pin(ws.send(Message::text(text))).await.is_err() {
                ctx.error("ws_send");
                return End::Broken;
            }
        }
        let now = Instant::now();
        self.last_session = Some((ctx.clock.unix_us(now), false));
        ctx.set_connected(true);
        ctx.count(|c| c.connects += 1);
        if !self.sched.is_open() && self.next_send.is_none() {
            self.schedule_closed(now);
        }
        // As in the chat traffic loop: one timer and one cancellation waiter per session.
        let cancelled = ctx.cancel.cancelled();
        tokio::pin!(cancelled);
        let timer = sleep_until(self.stop_at.into());
        tokio::pin!(timer);
        let end = loop {
            let mut wake = self.stop_at;
            for t in [self.next_send, churn_at].into_iter().flatten() {
                wake = wake.min(t);
            }
            if timer.deadline() != wake.into() {
                timer.as_mut().reset(wake.into());
            }
            tokio::select! {
                frame = ws.next() => match frame {
                    Some(Ok(Message::Text(text))) => self.on_frame(g, text.as_str()),
                    Some(Ok(Message::Binary(b))) => {
                        if let Ok(text) = std::str::from_utf8(&b) {
                            self.on_frame(g, text);
                        }
                    }
                    Some(Ok(Message::Close(_))) | None => {
                        ctx.error("closed_by_server");
                        break End::Broken;
                    }
                    // Pings are answered by tungstenite.
                    Some(Ok(_)) => {}
                    Some(Err(_)) => {
                        ctx.error("ws_read");
                        break End::Broken;
                    }
                },
                _ = &mut timer => {
                    let now = Instant::now();
                    if now >= self.stop_at {
                        break End::Finished;
                    }
                    if churn_at.is_some_and(|c| now >= c) {
                        break End::Churn;
                    }
                    if let Some(at) = self.next_send.filter(|&at| now >= at)
                        && Box::pin(self.send_frame(g, ws, at)).await.is_err()
                    {
                        break End::Broken;
                    }
                }
                _ = &mut cancelled => break End::Finished,
            }
        };
        ctx.set_connected(false);
        if matches!(end, End::Finished)
            && Instant::now() >= ctx.clock.end
            && let Some(s) = self.last_session.as_mut()
        {
            s.1 = true;
        }
        if !matches!(end, End::Broken) {
            let _ = Box::pin(timeout(CLOSE_TIMEOUT, ws.close(None))).await;
        }
        end
    }

    async fn send_frame(
        &mut self,
        g: &GenericCtx,
        ws: &mut Ws,
        intended: Instant,
    ) -> std::result::Result<(), ()> {
        let ctx = self.ctx.clone();
        let now = Instant::now();
        let open = self.sched.is_open();
        let at = if open { intended } else { now };
        if open {
            self.advance_open(intended);
        } else {
            self.schedule_closed(now);
        }
        self.seq += 1;
        let seq = self.seq;
        let mut buf = std::mem::take(&mut self.buf);
        g.message.render(&mut buf, &self.vars(seq, at));
        let r = ws.send(Message::text(buf.as_str())).await;
        self.buf = buf;
        if r.is_err() {
            ctx.error("ws_send");
            return Err(());
        }
        ctx.count(|c| c.sent += 1);
        if g.target.expect != crate::scenario::Expect::None {
            g.done
                .borrow_mut()
                .sent
                .push((self.index, seq as i64, ctx.clock.unix_us(at)));
        }
        if self.inflight.len() >= MAX_INFLIGHT {
            self.inflight.pop_front();
        }
        self.inflight.push_back((seq, at));
        Ok(())
    }

    fn on_frame(&mut self, g: &GenericCtx, text: &str) {
        let ctx = self.ctx.clone();
        let now = Instant::now();
        let m = g.matcher.extract(text);
        let lat = m.time.map(|t| match g.matcher.unit {
            TimeUnit::UnixMs => ctx
                .clock
                .unix_us(now)
                .saturating_sub(t.saturating_mul(1000)),
            TimeUnit::UnixUs => ctx.clock.unix_us(now).saturating_sub(t),
            TimeUnit::MonoNs => {
                let ns = now.saturating_duration_since(ctx.clock.start).as_nanos() as u64;
                ns.saturating_sub(t) / 1000
            }
        });
        match m.id.map(crate::generic::split_id) {
            Some((author, seq)) if author == self.index => {
                if !self.echo.add(seq as i64) {
                    return;
                }
                ctx.count(|c| c.acked += 1);
                let mut sent_at = None;
                while let Some(&(s, at)) = self.inflight.front() {
                    if s > seq {
                        break;
                    }
                    self.inflight.pop_front();
                    if s == seq {
                        sent_at = Some(at);
                    }
                }
                let lat = lat.or_else(|| {
                    sent_at.map(|at| now.saturating_duration_since(at).as_micros() as u64)
                });
                if let Some(l) = lat {
                    ctx.record(Metric::Ack, l);
                }
            }
            Some((author, seq)) => {
                if !self.from.entry(author).or_default().add(seq as i64) {
                    return;
                }
                ctx.count(|c| c.delivered += 1);
                if let Some(l) = lat {
                    ctx.record(Metric::Delivery, l);
                }
            }
            None if m.time.is_some() || !g.matcher.matches_anything() => {
                ctx.count(|c| c.delivered += 1);
                if let Some(l) = lat {
                    ctx.record(Metric::Delivery, l);
                }
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::target_index;

    #[test]
    fn every_space_spans_every_node() {
        // 10 spaces over 2 nodes and 15 over 3 share factors: with `index % nodes` each
        // space would sit on a single node.
        for (spaces, nodes) in [(10u32, 2usize), (15, 3), (4, 4)] {
            for space in 0..spaces {
                let mut seen = vec![false; nodes];
                for user in (space..2_000).step_by(spaces as usize) {
                    seen[target_index(user, 0, nodes)] = true;
                }
                assert!(
                    seen.iter().all(|&s| s),
                    "space {space} of {spaces} on {nodes} nodes"
                );
            }
        }
    }

    #[test]
    fn failed_attempts_move_to_the_next_node() {
        assert_eq!(target_index(7, 3, 1), 0);
        for user in 0..100 {
            let home = target_index(user, 0, 3);
            assert_eq!(target_index(user, 1, 3), (home + 1) % 3);
            assert_eq!(target_index(user, 3, 3), home);
        }
        // Users spread evenly enough over nodes.
        let mut per_node = [0u32; 3];
        for user in 0..3_000 {
            per_node[target_index(user, 0, 3)] += 1;
        }
        assert!(
            per_node.iter().all(|&n| (900..1_100).contains(&n)),
            "{per_node:?}"
        );
    }
}
