//! `flowline run --console [ADDR]`: the run console, a page the harness serves while the
//! run goes (and after it with `--console-keep`, until Ctrl-C).
//!
//! ```text
//! collect loop ─(each second)─▶ Live (seconds from the Aggregator, no files read)
//! ticker (1 s) ─▶ process samples, fault windows (events) ─▶ frame (numbers + SVG charts)
//!                                                           ─▶ watch ─▶ GET /api/stream (SSE)
//! POST /api/faults ─▶ checks ─▶ the run's fault schedule (ScheduleHandle::inject_manual)
//!                               └▶ events.jsonl; at the run's end [[faults]] in scenario.toml
//! ```
//!
//! | module | what it is for |
//! |---|---|
//! | [`live`] | the live model of the run and the frame the page gets |
//! | [`http`] | the routes, the token check, the stream |
//! | [`manual`] | faults by hand: checks, the record, the [[faults]] appended |
//! | [`page`] | the page itself (HTML, CSS, a little JavaScript; nothing from a CDN) |
//!
//! Security: the console listens on loopback unless told otherwise with
//! `--console-allow-remote` (which prints a warning); every route needs the per-run token
//! printed in the start line (401 without it, 403 with a wrong one), so another local
//! user cannot read the run or inject faults into it.

pub mod http;
pub mod live;
pub mod manual;
pub mod page;

use std::io::Read as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flowline_chaos::events::EventLog;
use flowline_chaos::schedule::ScheduleHandle;
use flowline_loadgen::aggregate::{Aggregator, Summary};
use flowline_loadgen::scenario::Scenario;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::svg::Marker;
use live::{Live, ProcSample, Window};
use manual::ManualRecord;

/// How the console is served (`--console[=ADDR]`, `--console-allow-remote`, `--console-keep`).
#[derive(Debug, Clone, Default)]
pub struct ConsoleOptions {
    /// Where to listen: an IP (a free port) or IP:PORT.
    pub addr: String,
    /// A non-loopback address is allowed.
    pub allow_remote: bool,
    /// Keep serving after the run until Ctrl-C.
    pub keep: bool,
}

/// The listen address `--console` asks for: loopback, or another address only with
/// `allow_remote`.
pub fn parse_addr(addr: &str, allow_remote: bool) -> anyhow::Result<SocketAddr> {
    let sock: SocketAddr = match addr.parse::<SocketAddr>() {
        Ok(s) => s,
        Err(_) => match addr.trim_matches(['[', ']']).parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, 0),
            Err(_) => bail!(
                "--console {addr:?}: not an address (an IP such as 127.0.0.1, or IP:PORT such \
                 as 127.0.0.1:7000)"
            ),
        },
    };
    if !sock.ip().is_loopback() && !allow_remote {
        bail!(
            "--console {addr}: not a loopback address; the console lets whoever holds its \
             token inject faults, so listening beyond this machine needs \
             --console-allow-remote"
        );
    }
    Ok(sock)
}

/// Where the run stands on the clock, once its workers have started.
#[derive(Debug, Clone, Copy)]
pub struct RunClock {
    /// t0: the workers' start (second 0 of the timeline).
    pub start: Instant,
    /// Start of measurement (the fault schedule's zero).
    pub zero: Instant,
    /// End of measurement (start of the drain).
    pub measure_end: Instant,
    /// End of the drain: no fault may last beyond it.
    pub end: Instant,
    /// events.jsonl's `t_ms` of `start`.
    pub start_ms: i64,
}

/// Processes whose CPU and memory the page shows: (name, pid) now.
pub type ProcList = Box<dyn Fn() -> Vec<(String, u32)> + Send + Sync>;

struct Inner {
    token: String,
    url: String,
    scenario_path: PathBuf,
    live: Mutex<Live>,
    frames: watch::Sender<Arc<str>>,
    clock: Mutex<Option<RunClock>>,
    faults: Mutex<Option<Arc<ScheduleHandle>>>,
    manual: Mutex<Vec<ManualRecord>>,
    events: Mutex<Option<EventLog>>,
    procs: Mutex<Option<ProcList>>,
    info: Mutex<Value>,
    phase: Mutex<&'static str>,
    stop: CancellationToken,
}

/// A running console; clones share it.
#[derive(Clone)]
pub struct Console {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// 128 random bits as hex, from the kernel.
fn new_token() -> anyhow::Result<String> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("cannot read /dev/urandom for the console's token")?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

impl Console {
    /// Listen where `opts` says, print the page's URL (token included), serve.
    pub async fn start(
        opts: &ConsoleOptions,
        scenario: &Scenario,
        dir: &Path,
    ) -> anyhow::Result<Console> {
        let addr = parse_addr(&opts.addr, opts.allow_remote)?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot bind the console on {addr}"))?;
        let local = listener.local_addr()?;
        let token = new_token()?;
        let host = if local.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            match local.ip() {
                IpAddr::V6(ip) => format!("[{ip}]"),
                IpAddr::V4(ip) => ip.to_string(),
            }
        };
        let url = format!("http://{host}:{}/?token={token}", local.port());
        let (frames, _) = watch::channel(Arc::<str>::from("{}"));
        let console = Console {
            inner: Arc::new(Inner {
                token,
                url,
                scenario_path: dir.join("scenario.toml"),
                live: Mutex::new(Live::new(scenario)),
                frames,
                clock: Mutex::new(None),
                faults: Mutex::new(None),
                manual: Mutex::new(Vec::new()),
                events: Mutex::new(None),
                procs: Mutex::new(None),
                info: Mutex::new(json!({
                    "scenario": scenario.name,
                    "seed": scenario.seed,
                    "duration_s": scenario.duration.as_secs_f64(),
                    "warmup_s": scenario.warmup.as_secs_f64(),
                    "drain_s": scenario.drain.as_secs_f64(),
                    "kinds": manual::KINDS,
                    "links": [],
                    "nodes": [],
                    "isolated": false,
                })),
                phase: Mutex::new("starting"),
                stop: CancellationToken::new(),
            }),
        };
        if !local.ip().is_loopback() {
            eprintln!(
                "flowline: warning: the console listens on {local}, reachable from other \
                 machines: anyone who has its token can watch this run and inject faults into it"
            );
        }
        eprintln!("flowline: console {}", console.inner.url);
        let stop = console.inner.stop.clone();
        let app = http::router(console.clone());
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::warn!("console: {e}");
            }
        });
        tokio::spawn(ticker(console.clone()));
        Ok(console)
    }

    /// The page's URL with its token.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    pub(crate) fn token(&self) -> &str {
        &self.inner.token
    }

    /// events.jsonl of the run (fault windows and node markers are read from it).
    pub fn set_events(&self, events: &EventLog) {
        *lock(&self.inner.events) = Some(events.clone());
    }

    /// The run's links and nodes, offered on the page as fault targets (`isolated`: the
    /// hosts are in network namespaces, kernel faults apply).
    pub fn set_targets(&self, links: Vec<String>, nodes: Vec<String>, isolated: bool) {
        let mut info = lock(&self.inner.info);
        info["links"] = json!(links);
        info["nodes"] = json!(nodes);
        info["isolated"] = json!(isolated);
    }

    /// The processes whose CPU and memory are shown.
    pub fn set_processes(&self, procs: ProcList) {
        *lock(&self.inner.procs) = Some(procs);
    }

    /// The workers have started: the run's clock and its fault schedule.
    pub fn started(&self, clock: RunClock, faults: Arc<ScheduleHandle>) {
        *lock(&self.inner.clock) = Some(clock);
        *lock(&self.inner.faults) = Some(faults);
        *lock(&self.inner.phase) = "running";
    }

    /// Take the seconds the aggregator completed since the last call (once a second).
    pub fn observe(&self, agg: &Aggregator) {
        let mut live = lock(&self.inner.live);
        let after = live.last;
        live.ingest(agg.seconds_after(after));
    }

    /// The run is over (its faults healed): write the manual faults into scenario.toml
    /// and show the verdict. `summary` is `None` when the run could not be carried out.
    pub fn finished(&self, summary: Option<&Summary>) {
        *lock(&self.inner.faults) = None;
        *lock(&self.inner.phase) = "finished";
        if let Err(e) = self.write_manual_faults() {
            eprintln!("flowline: warning: {e:#}");
        }
        if let Some(s) = summary {
            lock(&self.inner.live).summary = serde_json::to_value(s).ok();
        }
        self.publish();
    }

    /// With `--console-keep`: serve until Ctrl-C.
    pub async fn keep(&self) {
        eprintln!(
            "flowline: the console stays up at {} (Ctrl-C to end)",
            self.inner.url
        );
        let _ = tokio::signal::ctrl_c().await;
    }

    /// Stop serving.
    pub fn stop(&self) {
        self.inner.stop.cancel();
    }

    /// Build the frame now and hand it to every open stream (skipped when none is open).
    fn publish(&self) {
        if self.inner.frames.receiver_count() == 0 {
            return;
        }
        let frame = self.frame();
        self.inner.frames.send_replace(Arc::from(frame.to_string()));
    }

    /// Fault windows and node markers on the run's time axis, from events.jsonl's events.
    fn windows(&self, clock: &RunClock) -> (Vec<Window>, Vec<Marker>) {
        let Some(events) = lock(&self.inner.events).clone() else {
            return (Vec::new(), Vec::new());
        };
        let mut windows: Vec<Window> = Vec::new();
        let mut markers = Vec::new();
        for e in events.events() {
            let x = (e.t_ms - clock.start_ms) as f64 / 1000.0;
            match e.action.as_str() {
                "inject" => windows.push(Window {
                    start: x,
                    end: None,
                    label: e.label.clone(),
                }),
                "heal" => {
                    if let Some(w) = windows
                        .iter_mut()
                        .find(|w| w.end.is_none() && w.label == e.label)
                    {
                        w.end = Some(x);
                    }
                }
                "error" => {}
                _ if x >= 0.0 => markers.push(Marker {
                    x,
                    label: format!("{} {}", e.kind, e.label).trim().to_string(),
                }),
                _ => {}
            }
        }
        (windows, markers)
    }

    fn frame(&self) -> Value {
        let phase = *lock(&self.inner.phase);
        let clock = *lock(&self.inner.clock);
        let (windows, markers, x_end, phase) = match &clock {
            Some(c) => {
                let (w, m) = self.windows(c);
                let now = Instant::now()
                    .saturating_duration_since(c.start)
                    .as_secs_f64();
                let phase = match phase {
                    "running" if Instant::now() < c.zero => "warm-up",
                    "running" if Instant::now() < c.measure_end => "measuring",
                    "running" if Instant::now() < c.end => "drain",
                    "running" => "ending",
                    p => p,
                };
                let total = c.end.saturating_duration_since(c.start).as_secs_f64();
                (w, m, now.max(total), phase)
            }
            None => (Vec::new(), Vec::new(), 1.0, phase),
        };
        let live = lock(&self.inner.live);
        let mut f = live.frame(phase, &windows, &markers, x_end);
        f["manual"] = json!(
            lock(&self.inner.manual)
                .iter()
                .map(ManualRecord::to_json)
                .collect::<Vec<_>>()
        );
        f
    }

    /// Sample the processes' CPU and memory (once a second).
    fn sample(&self, prev: &mut std::collections::HashMap<u32, (Instant, f64)>) {
        let Some(clock) = *lock(&self.inner.clock) else {
            return;
        };
        let list = match &*lock(&self.inner.procs) {
            Some(f) => f(),
            None => return,
        };
        let now = Instant::now();
        let t = now.saturating_duration_since(clock.start).as_secs_f64();
        let mut live = lock(&self.inner.live);
        for (name, pid) in list {
            let Some(r) = flowline_loadgen::wire::Resources::of_pid(pid) else {
                continue;
            };
            let rss_mib = current_rss_kib(pid).unwrap_or(r.peak_rss_kib) as f64 / 1024.0;
            if let Some((t0, cpu0)) = prev.insert(pid, (now, r.cpu_s)) {
                let dt = now.duration_since(t0).as_secs_f64();
                if dt > 0.0 {
                    live.sample(
                        &name,
                        ProcSample {
                            t,
                            cpu_pct: ((r.cpu_s - cpu0) / dt * 100.0).max(0.0),
                            rss_mib,
                        },
                    );
                }
            }
        }
    }
}

/// VmRSS of a process, KiB.
fn current_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Once a second: sample the processes, publish a frame.
async fn ticker(console: Console) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut prev = std::collections::HashMap::new();
    loop {
        tokio::select! {
            () = console.inner.stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        console.sample(&mut prev);
        console.publish();
    }
}
