//! After the start: each worker's connection gets a reader task handing its `tick`,
//! `history` and `done` lines on as `(shard, line)` and noting `started`, and a writer task sending
//! `stop` when asked; a connection that ends before its `done` line marks the shard lost.
//! [`Handle`] is the harness's grip on them: stop, close, and what was measured.
//!
//! ```text
//! socket ─read_line─▶ tick/history/done ─▶ (shard, line) ─▶ LineRx (collect, aggregator)
//!                  └▶ started ─▶ start skew        end before done ─▶ lost_at_s
//! Handle::stop ─watch─▶ writer ─▶ `stop` ; Handle::close ─▶ both tasks end, socket closes
//! ```

use std::sync::{Arc, Mutex, MutexGuard};

use flowline_loadgen::coordinator::message::{
    FromWorker, MAX_RUN_LINE, PROTOCOL_VERSION, ToWorker, read_line, to_line, unix_us_now,
    write_line,
};
use flowline_loadgen::coordinator::{CoordinatorReport, WorkerClock};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::clock::Clock;
use super::gather::Conn;

/// What is known of one worker after the start.
#[derive(Debug, Clone, Default)]
pub(crate) struct WorkerState {
    pub(crate) shard: usize,
    pub(crate) host: Option<String>,
    pub(crate) peer: String,
    pub(crate) clock: Clock,
    /// When it started, coordinator Unix µs.
    pub(crate) started_us: Option<u64>,
    pub(crate) done: bool,
    /// When its connection ended without a done line, coordinator Unix µs.
    pub(crate) lost_us: Option<u64>,
}

/// A lost worker: its shard and when, in seconds after t0.
#[derive(Debug, Clone, PartialEq)]
pub struct Lost {
    /// Shard index.
    pub shard: usize,
    /// Seconds after t0 its connection ended.
    pub at_s: f64,
    /// Its host and address.
    pub who: String,
}

/// The harness's grip on the running workers. Cheap to clone.
#[derive(Clone)]
pub struct Handle {
    state: Arc<Mutex<Vec<WorkerState>>>,
    stop: Arc<watch::Sender<Option<String>>>,
    close: CancellationToken,
    t0_ms: u64,
}

impl Handle {
    fn lock(&self) -> MutexGuard<'_, Vec<WorkerState>> {
        // Plain field updates: a panic elsewhere cannot leave the list half-changed.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ask every worker to stop early (`stop`): they close their users and send `done`.
    pub fn stop(&self, reason: &str) {
        self.stop.send_replace(Some(reason.to_string()));
    }

    /// Drop every connection now (the line stream ends; workers see the coordinator go).
    pub fn close(&self) {
        self.close.cancel();
    }

    /// Workers whose connection ended without a done line, so far.
    pub fn lost(&self) -> Vec<Lost> {
        let t0_us = self.t0_ms * 1000;
        self.lock()
            .iter()
            .filter_map(|w| {
                Some(Lost {
                    shard: w.shard,
                    at_s: w.lost_us? as f64 / 1e6 - t0_us as f64 / 1e6,
                    who: who(w),
                })
            })
            .collect()
    }

    /// What was measured, for summary.json.
    pub fn report(&self) -> CoordinatorReport {
        let t0_us = self.t0_ms as f64 * 1000.0;
        let workers: Vec<WorkerClock> = self
            .lock()
            .iter()
            .map(|w| WorkerClock {
                shard: w.shard,
                host: w.host.clone(),
                peer: w.peer.clone(),
                clock_offset_ms: w.clock.offset_us as f64 / 1000.0,
                rtt_ms: w.clock.rtt_us as f64 / 1000.0,
                start_skew_ms: w.started_us.map(|s| (s as f64 - t0_us) / 1000.0),
                lost_at_s: w.lost_us.map(|l| (l as f64 - t0_us) / 1e6),
            })
            .collect();
        let max_start_skew_ms = workers
            .iter()
            .map(|w| w.start_skew_ms.map(f64::abs))
            .collect::<Option<Vec<f64>>>()
            .map(|v| v.into_iter().fold(0.0, f64::max));
        let max_rtt = workers.iter().map(|w| w.rtt_ms).fold(0.0, f64::max);
        CoordinatorReport {
            version: PROTOCOL_VERSION,
            t0: self.t0_ms,
            max_start_skew_ms,
            clocks: format!(
                "each worker's clock offset was measured by ping round trips (uncertain by \
                 half the round trip, at most {:.3} ms here); workers start when their clock \
                 reads t0 plus their offset and stamp send and receive times on the \
                 coordinator's clock, so delivery latency between workers is corrected by \
                 the offsets",
                max_rtt / 2.0
            ),
            workers,
        }
    }
}

fn who(w: &WorkerState) -> String {
    match &w.host {
        Some(h) => format!("{h}, {}", w.peer),
        None => w.peer.clone(),
    }
}

/// Start the reader and writer tasks of every connection; lines go to `tx`.
pub(crate) fn spawn(
    conns: Vec<(Conn, Clock)>,
    t0_ms: u64,
    tx: mpsc::UnboundedSender<(usize, String)>,
) -> Handle {
    let state: Vec<WorkerState> = conns
        .iter()
        .map(|(c, clock)| WorkerState {
            shard: c.hello.shard,
            host: c.hello.host.clone(),
            peer: c.peer.to_string(),
            clock: *clock,
            ..WorkerState::default()
        })
        .collect();
    let (stop_tx, _) = watch::channel(None::<String>);
    let handle = Handle {
        state: Arc::new(Mutex::new(state)),
        stop: Arc::new(stop_tx),
        close: CancellationToken::new(),
        t0_ms,
    };
    for (i, (conn, _)) in conns.into_iter().enumerate() {
        let Conn {
            hello,
            mut reader,
            mut writer,
            ..
        } = conn;
        let shard = hello.shard;
        let ended = CancellationToken::new();
        let mut stop = handle.stop.subscribe();
        let (close, ended_w) = (handle.close.clone(), ended.clone());
        tokio::spawn(async move {
            // The handle may be dropped before the end (the stop channel closes): keep
            // the connection open until the worker's side ends or the close.
            let mut stop_open = true;
            loop {
                tokio::select! {
                    changed = stop.changed(), if stop_open => {
                        if changed.is_err() {
                            stop_open = false;
                            continue;
                        }
                        let reason = stop.borrow_and_update().clone();
                        if let Some(reason) = reason
                            && write_line(&mut writer, &to_line(&ToWorker::Stop { reason })).await.is_err()
                        {
                            break;
                        }
                    }
                    _ = ended_w.cancelled() => break,
                    _ = close.cancelled() => break,
                }
            }
            // Dropping the write half closes our side: the worker, done, may exit.
        });
        let (h, close, tx) = (handle.clone(), handle.close.clone(), tx.clone());
        tokio::spawn(async move {
            let end = loop {
                let line = tokio::select! {
                    l = read_line(&mut reader, MAX_RUN_LINE) => l,
                    _ = close.cancelled() => break None,
                };
                match line {
                    Ok(Some(line)) => {
                        if let Some(started) = control(&line) {
                            h.lock()[i].started_us = Some(started);
                            continue;
                        }
                        if line.starts_with(r#"{"type":"done""#) {
                            h.lock()[i].done = true;
                        }
                        // Ticks, history, done and anything unknown: the aggregator
                        // judges them.
                        if tx.send((shard, line)).is_err() {
                            break None;
                        }
                    }
                    Ok(None) => break Some("closed".to_string()),
                    Err(e) => break Some(e.to_string()),
                }
            };
            ended.cancel();
            let mut st = h.lock();
            let w = &mut st[i];
            if !w.done {
                w.lost_us = Some(unix_us_now());
                tracing::warn!(
                    "coordinator: shard {shard} ({}) lost before its done line: {}",
                    who(w),
                    end.unwrap_or_else(|| "closed by the coordinator".into())
                );
            }
        });
    }
    handle
}

/// A control line's start time (`started`); `None` for every other line. Tick, history
/// and done lines are recognised by their first bytes (`type` comes first) without
/// parsing a line that may be tens of MB.
fn control(line: &str) -> Option<u64> {
    if ["tick", "history", "done"]
        .iter()
        .any(|t| line.starts_with(&format!(r#"{{"type":"{t}""#)))
    {
        return None;
    }
    match serde_json::from_str::<FromWorker>(line) {
        Ok(FromWorker::Started { at_us, .. }) => Some(at_us),
        _ => None,
    }
}
