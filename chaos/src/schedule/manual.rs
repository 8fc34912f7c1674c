//! Faults injected by hand while a schedule runs (the run console of `flowline run`):
//! they go through the same checks, the same targets, the same active set and the same
//! events.jsonl lines as the scheduled `[[faults]]`, so every kind the schedule knows can
//! be injected by hand and is refused for the same reasons. What is refused changes
//! nothing; what is injected is healed when its duration ends, when it is healed by hand,
//! or with everything else when the schedule stops.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::Serialize;
use serde_json::Value;
use tokio::time::{Instant, sleep_until};

use super::{Active, Applied, ScheduleHandle, Shared};
use crate::error::{Error, Result};
use crate::fault::{FaultError, FaultKind, FaultSpec};
use crate::kernel;

/// An active fault as a live view shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActiveFault {
    /// Its number: position in `[[faults]]` for scheduled ones, above them for manual ones.
    pub id: usize,
    /// Its kind.
    pub kind: &'static str,
    /// Its label.
    pub label: String,
    /// What it hit (links, nodes, hosts).
    pub targets: Vec<String>,
    /// Injected by hand.
    pub manual: bool,
}

impl ActiveFault {
    fn of(a: &Active, scheduled: usize) -> Self {
        ActiveFault {
            id: a.index,
            kind: a.spec.kind.as_str(),
            label: a.spec.display_label(),
            targets: a.targets.clone(),
            manual: a.index > scheduled,
        }
    }
}

impl Shared {
    /// Refuse a kill that would leave no node of the run running.
    fn check_not_last_node(&self, index: usize, spec: &FaultSpec) -> Result<()> {
        if spec.kind != FaultKind::Kill {
            return Ok(());
        }
        let pattern = glob::Pattern::new(&spec.target).map_err(|e| {
            Error::BadRequestBody(format!("bad target glob {:?}: {e}", spec.target))
        })?;
        let running: Vec<_> = self
            .targets
            .nodes
            .iter()
            .filter(|n| n.pid().is_some())
            .collect();
        if !running.is_empty() && running.iter().all(|n| pattern.matches(n.node_id())) {
            return Err(Error::Fault(FaultError {
                index,
                kind: spec.kind.as_str(),
                target: spec.target.clone(),
                reason: format!(
                    "it would kill the last running node ({}): nothing would be left to \
                     measure",
                    running
                        .iter()
                        .map(|n| n.node_id())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }));
        }
        Ok(())
    }
}

impl ScheduleHandle {
    /// Inject `spec` now, by hand (its `at` is ignored). Checked as a scheduled fault is
    /// (parameters, kernel support, target glob), and a kill of every running node is
    /// refused; on an error nothing is left applied. Healed when its duration (a kill's
    /// `restart_after`) ends, by [`heal_one`](Self::heal_one), or when the schedule stops.
    pub async fn inject_manual(&self, spec: FaultSpec) -> Result<ActiveFault> {
        let shared = &self.shared;
        let index = shared.next_manual.fetch_add(1, Ordering::Relaxed);
        spec.validate(index)?;
        kernel::check(index, &spec, shared.targets.network.as_deref())?;
        shared.check_not_last_node(index, &spec)?;
        let info = {
            let mut active = shared.active.lock().await;
            if shared.cancel.is_cancelled() {
                return Err(Error::Fault(FaultError {
                    index,
                    kind: spec.kind.as_str(),
                    target: spec.target.clone(),
                    reason: "the run's faults have stopped: the run is ending".into(),
                }));
            }
            let mut a = shared.inject(index, &spec).await?;
            // Its inject and heal lines in events.jsonl say it came by hand.
            if let Some(m) = a.params.as_object_mut() {
                m.insert("manual".into(), Value::Bool(true));
            }
            shared.record_active("inject", &a, a.params.clone());
            let info = ActiveFault::of(&a, shared.scheduled);
            active.push(a);
            info
        };
        let end = match spec.kind {
            FaultKind::Kill => spec.restart_after.or(spec.duration),
            _ => spec.duration,
        };
        if let Some(end) = end {
            tokio::spawn(heal_at(shared.clone(), index, Instant::now() + end));
        }
        Ok(info)
    }

    /// Heal active fault `id` now (scheduled or manual; a killed node is restarted).
    /// `Ok(false)`: it was not active (already healed or never injected).
    pub async fn heal_one(&self, id: usize) -> Result<bool> {
        let mut active = self.shared.active.lock().await;
        let Some(pos) = active.iter().position(|a| a.index == id) else {
            return Ok(false);
        };
        let a = active.swap_remove(pos);
        if matches!(a.applied, Applied::Killed(_)) {
            drop(active);
        }
        self.shared.heal(a, true).await.map(|()| true)
    }

    /// Heal every active fault now and keep the schedule running (faults still to come
    /// fire at their time). Returns how many were healed; every one is attempted.
    pub async fn heal_active(&self) -> Result<usize> {
        let taken: Vec<Active> = self.shared.active.lock().await.drain(..).collect();
        let n = taken.len();
        let mut first_err = None;
        for a in taken {
            if let Err(e) = self.shared.heal(a, true).await {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(n), Err)
    }

    /// The faults active now.
    pub async fn active(&self) -> Vec<ActiveFault> {
        self.shared
            .active
            .lock()
            .await
            .iter()
            .map(|a| ActiveFault::of(a, self.shared.scheduled))
            .collect()
    }

    /// How many faults the schedule itself has (manual ones are numbered after them).
    pub fn scheduled(&self) -> usize {
        self.shared.scheduled
    }
}

/// Heal manual fault `index` at `when` unless it has been healed already.
async fn heal_at(shared: Arc<Shared>, index: usize, when: Instant) {
    tokio::select! {
        biased;
        () = shared.cancel.cancelled() => return,
        () = sleep_until(when) => {}
    }
    let mut active = shared.active.lock().await;
    if shared.cancel.is_cancelled() {
        return;
    }
    if let Some(pos) = active.iter().position(|a| a.index == index) {
        let a = active.swap_remove(pos);
        if matches!(a.applied, Applied::Killed(_)) {
            drop(active);
        }
        let _ = shared.heal(a, true).await;
    }
}
