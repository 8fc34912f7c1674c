//! The coordinator: the harness's side of the worker protocol (docs/coordinator.md).
//! Workers — local processes, pods of a Kubernetes Job, anything that can reach the
//! listener — connect, and [`serve`] gathers, checks, measures and starts them, then hands
//! their lines on as `(shard, line)` for [`flowline_loadgen::collect`].
//!
//! ```text
//! listener ─accept─▶ hello ─check─▶ welcome | refused (Err: exit 2)
//!   all N said hello (else Err naming the missing shards at the deadline)
//!   ─▶ ping/pong ×k each (clock.rs) ─▶ start {t0, clock_offset_us} to each
//!   ─▶ Session { lines: LineRx, handle } ; stream.rs reads every socket
//! ```
//!
//! | module | what it is for |
//! |---|---|
//! | `gather` | accepting connections and checking hellos, to the deadline |
//! | `clock` | ping round trips → each worker's clock offset |
//! | `stream` | after the start: lines out, `started`, lost workers, stop/close ([`Handle`]) |
//! | `error` | why a run could not start ([`CoordinatorError`]) |

mod clock;
mod error;
mod gather;
mod stream;

use std::time::{Duration, SystemTime};

use flowline_loadgen::collect::LineRx;
use flowline_loadgen::coordinator::message::{ToWorker, unix_us_now};
use flowline_loadgen::coordinator::{Hello, build_id, scenario_hash};
use flowline_loadgen::scenario::Scenario;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

pub use clock::Clock;
pub use error::CoordinatorError;
pub use stream::{Handle, Lost};

/// Clock probes per worker.
const PROBES: u32 = 5;

/// What the coordinator expects of its workers.
#[derive(Debug, Clone)]
pub struct Expect {
    /// Shards of the run (`--shard I/N`, N).
    pub shards: usize,
    /// The workers' build ([`build_id`]).
    pub build: String,
    /// The scenario's hash ([`scenario_hash`]).
    pub scenario_hash: String,
    /// The scenario's seed.
    pub seed: u64,
    /// How long to wait for every hello (`--workers-timeout`).
    pub timeout: Duration,
    /// Time from sending `start` to `t0`: every worker must have read it and set up its
    /// threads by then.
    pub lead: Duration,
}

impl Expect {
    /// Workers of this binary's build running `scenario` (as written to the run folder)
    /// in `shards` shards, within `timeout`.
    pub fn new(scenario: &Scenario, shards: usize, timeout: Duration) -> Self {
        Expect {
            shards,
            build: build_id(),
            scenario_hash: scenario_hash(scenario),
            seed: scenario.seed,
            timeout,
            // Room for every worker to read `start` and spawn its threads before t0:
            // measured start skew was 4–21 ms at 16 workers on 2 busy cores (debug
            // build), so 330 ms leaves a wide margin without delaying the run.
            lead: Duration::from_millis(250 + 5 * shards as u64),
        }
    }
}

/// One worker as it joined.
#[derive(Debug, Clone)]
pub struct Joined {
    /// Its hello.
    pub hello: Hello,
    /// Its address.
    pub peer: std::net::SocketAddr,
    /// Its clock as measured.
    pub clock: Clock,
}

/// A started run: its workers' lines and the grip on them.
pub struct Session {
    /// The start instant on the coordinator's clock (the fault schedule counts from it).
    pub t0: SystemTime,
    /// `(shard, line)`: every tick and done line; ends once every connection has.
    pub lines: LineRx,
    /// Every shard, in order.
    pub workers: Vec<Joined>,
    /// Stop, close, lost workers, the report.
    pub handle: Handle,
}

/// Gather `expect.shards` workers on `listener`, check their hellos, measure their
/// clocks, send them `start`, and return their line stream. `Err` (the run cannot be
/// carried out) names the missing, refused or lost shards; every connection is closed
/// then, which makes the workers exit 2.
pub async fn serve(listener: TcpListener, expect: Expect) -> Result<Session, CoordinatorError> {
    let mut conns = gather::gather(&listener, &expect).await?;
    drop(listener);
    // Every worker at once: one slow answer does not delay the others' probes.
    let measured =
        futures_util::future::join_all(conns.iter_mut().map(|c| clock::measure(c, PROBES))).await;
    let mut clocked = Vec::new();
    for (c, m) in conns.into_iter().zip(measured) {
        match m {
            Ok(clock) => clocked.push((c, clock)),
            Err(reason) => {
                return Err(CoordinatorError::Lost {
                    shard: c.hello.shard,
                    peer: c.who(),
                    reason,
                });
            }
        }
    }
    let t0_ms = (unix_us_now() + expect.lead.as_micros() as u64).div_ceil(1000);
    for (c, clock) in &mut clocked {
        let start = ToWorker::Start {
            t0: t0_ms,
            clock_offset_us: clock.offset_us,
        };
        if let Err(e) = c.send(&start).await {
            return Err(CoordinatorError::Lost {
                shard: c.hello.shard,
                peer: c.who(),
                reason: format!("sending the start: {e}"),
            });
        }
    }
    let workers = clocked
        .iter()
        .map(|(c, clock)| Joined {
            hello: c.hello.clone(),
            peer: c.peer,
            clock: *clock,
        })
        .collect();
    let (tx, lines) = mpsc::unbounded_channel();
    let handle = stream::spawn(clocked, t0_ms, tx);
    Ok(Session {
        t0: SystemTime::UNIX_EPOCH + Duration::from_millis(t0_ms),
        lines,
        workers,
        handle,
    })
}
