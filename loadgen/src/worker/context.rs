//! What every user task of one worker thread shares: the run's clock, the resolved
//! targets, the recorder they measure into, the history they record for the checker, and
//! the connected-user count. One per thread, behind an `Rc` (no lock: a thread's tasks
//! never run at once).

use std::cell::{Cell, OnceCell, RefCell};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::time::sleep_until;
use tokio_util::sync::CancellationToken;

use crate::generic::Frames;
use crate::histogram::Metric;
use crate::recorder::{Recorder, Seconds};
use crate::scenario::{LoadModel, Scenario};
use crate::schedule::{RateCurve, UserSchedule, closed_window};
use crate::wire::Counters;
use crate::worker::connect::Target;
use crate::worker::history::History;

/// Longest wait for an answer to a request (ack, upload).
pub(super) const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the run is in time, shared by a thread's tasks.
#[derive(Debug, Clone, Copy)]
pub(super) struct Clock {
    pub(super) start: Instant,
    pub(super) start_unix_us: u64,
    pub(super) send_end: Instant,
    pub(super) end: Instant,
}

impl Clock {
    pub(super) fn at(&self, secs: f64) -> Instant {
        self.start + Duration::from_secs_f64(secs.max(0.0))
    }

    pub(super) fn unix_us(&self, t: Instant) -> u64 {
        let d = t.saturating_duration_since(self.start).as_micros() as u64;
        self.start_unix_us + d
    }

    /// Milliseconds since the run's start (the checker's time axis).
    pub(super) fn ms(&self, t: Instant) -> u32 {
        u32::try_from(t.saturating_duration_since(self.start).as_millis()).unwrap_or(u32::MAX)
    }

    pub(super) fn secs(&self, t: Instant) -> f64 {
        t.saturating_duration_since(self.start).as_secs_f64()
    }

    /// The tick whose second holds `t`: tick `n` covers `[n-1 s, n s)` of the run (before
    /// the start: tick 1).
    pub(super) fn tick(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.start).as_secs() + 1
    }
}

/// Per-thread state: the recorder the user tasks write into, and what the checker needs.
pub(super) struct ThreadCtx {
    pub(super) scenario: Arc<Scenario>,
    pub(super) clock: Clock,
    pub(super) targets: Vec<Target>,
    pub(super) curve: Option<RateCurve>,
    pub(super) cancel: CancellationToken,
    pub(super) heartbeat: Cell<Duration>,
    /// The seconds not yet shipped; measurements go to the second they are taken in.
    pub(super) rec: RefCell<Seconds>,
    pub(super) connected: Cell<u64>,
    pub(super) peak: Cell<u64>,
    /// What the users sent and received, for the checker.
    pub(super) history: RefCell<History>,
    /// Generic target: its templates and matcher.
    pub(super) frames: Option<Frames>,
    /// HTTP client for uploads (made on first use).
    pub(super) http: OnceCell<reqwest::Client>,
}

impl ThreadCtx {
    /// The recorder of the current second.
    fn now_rec<R>(&self, f: impl FnOnce(&mut Recorder) -> R) -> R {
        let t = self.clock.tick(Instant::now());
        f(self.rec.borrow_mut().at(t))
    }

    pub(super) fn error(&self, kind: &str) {
        self.now_rec(|r| r.counters.error(kind));
    }

    pub(super) fn count(&self, f: impl FnOnce(&mut Counters)) {
        self.now_rec(|r| f(&mut r.counters));
    }

    pub(super) fn record(&self, m: Metric, us: u64) {
        self.now_rec(|r| r.record(m, us));
    }

    pub(super) fn http_client(&self) -> reqwest::Client {
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
    pub(super) fn next_open(
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
    pub(super) fn after_gap(&self, now: Instant, gap_s: Option<f64>) -> Option<Instant> {
        gap_s
            .map(|s| now + Duration::from_secs_f64(s))
            .filter(|&at| at < self.clock.send_end)
    }

    pub(super) fn set_connected(&self, up: bool) {
        let n = if up {
            self.connected.get() + 1
        } else {
            self.connected.get().saturating_sub(1)
        };
        self.connected.set(n);
        self.peak.set(self.peak.get().max(n));
    }

    /// When a user connects and when it leaves: its ramp window (closed model) or its
    /// place in the connect order (open model), bounded by the end of the run. `None`: the
    /// ramp never reaches this user.
    pub(super) fn user_window(&self, index: u32) -> Option<(Instant, Instant)> {
        let s = &self.scenario;
        let (start_s, stop_s) = match &s.load.model {
            LoadModel::Closed { stages } => closed_window(stages, index, s.load.connect_rate)?,
            LoadModel::Open { .. } => (
                f64::from(index) / f64::from(s.load.connect_rate.max(1)),
                None,
            ),
        };
        let stop_at = stop_s.map_or(self.clock.end, |t| self.clock.at(t).min(self.clock.end));
        Some((self.clock.at(start_s), stop_at))
    }

    /// Sleep until `start`; false when the run is cancelled first.
    pub(super) async fn wait_start(&self, start: Instant) -> bool {
        tokio::select! {
            _ = sleep_until(start.into()) => true,
            _ = self.cancel.cancelled() => false,
        }
    }
}
