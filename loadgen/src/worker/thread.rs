//! One worker thread: a current-thread runtime with a `LocalSet` running its share of the
//! users as tasks, and a ticker that, once a second, takes out the thread's recorder of
//! the second that ended and ships it to the shard loop, with the second's chat events
//! when the history is streamed; at the end, the thread's (rest of its) history.

use std::cell::{Cell, OnceCell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::sleep_until;
use tokio_util::sync::CancellationToken;

use crate::generic::Frames;
use crate::plan::PlanUser;
use crate::recorder::{Recorder, Seconds};
use crate::scenario::{LoadModel, Scenario};
use crate::schedule::RateCurve;
use crate::worker::connect::Target;
use crate::worker::context::{Clock, ThreadCtx};
use crate::worker::history::History;
use crate::worker::{chat, generic};

/// What a thread sends its shard loop.
pub(super) enum ThreadMsg {
    /// Second `t` ended: the thread's measurements of it and its users connected.
    Tick {
        t: u64,
        rec: Box<Recorder>,
        users: u64,
        /// The second's sends and receive events (streamed history only).
        events: Option<History>,
    },
    /// Every user has ended.
    Done { history: History, peak: u64 },
}

/// Run `users` on this thread until they have all ended.
pub(super) fn thread_main(
    scenario: Arc<Scenario>,
    clock: Clock,
    targets: Vec<Target>,
    users: Vec<PlanUser>,
    cancel: CancellationToken,
    tx: mpsc::Sender<ThreadMsg>,
    stream: bool,
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
    let frames = match scenario.target.as_ref().map(Frames::new) {
        Some(Ok(g)) => Some(g),
        Some(Err(e)) => {
            tracing::error!("generic target: {e}");
            return;
        }
        None => None,
    };
    let ctx = Rc::new(ThreadCtx {
        http: OnceCell::new(),
        history: RefCell::new(History::new(frames.is_some())),
        frames,
        scenario,
        clock,
        targets,
        curve,
        cancel,
        heartbeat: Cell::new(Duration::from_secs(15)),
        rec: RefCell::new(Seconds::default()),
        connected: Cell::new(0),
        peak: Cell::new(0),
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
                    // What was measured in second t, even if this wake-up is late.
                    let rec = ctx.rec.borrow_mut().take(t);
                    let users = ctx.connected.get();
                    let events = stream.then(|| ctx.history.borrow_mut().take_events());
                    if tx
                        .send(ThreadMsg::Tick {
                            t,
                            rec: Box::new(rec),
                            users,
                            events,
                        })
                        .await
                        .is_err()
                    {
                        return;
                    }
                    // Users that ended after this tick's second began measured into
                    // the next one: it is shipped too.
                    if finished.get() && !ctx.rec.borrow().any_after(t) {
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
                if ctx.frames.is_some() {
                    let f = generic::user_main(ctx.clone(), u);
                    if !std::mem::replace(&mut logged, true) {
                        tracing::debug!(bytes = std::mem::size_of_val(&f), "generic user task");
                    }
                    tokio::task::spawn_local(f)
                } else {
                    let f = chat::user_main(ctx.clone(), u);
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
        let history = std::mem::take(&mut *ctx.history.borrow_mut());
        let _ = tx
            .send(ThreadMsg::Done {
                history,
                peak: ctx.peak.get(),
            })
            .await;
    });
}
