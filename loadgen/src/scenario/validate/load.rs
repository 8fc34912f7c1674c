//! `[load]`: the closed or open model, its stages (user targets or message rates) and the
//! connect rate.

use crate::scenario::model::{Load, LoadModel, Stage};
use crate::scenario::raw::{RawLoad, RawModel, RawStage};

/// `users`: the population, which closed-model stage targets may not exceed.
pub(super) fn load(raw: &RawLoad, users: u32, p: &mut Vec<String>) -> Load {
    let open = raw.model == Some(RawModel::Open);
    let st = stages(&raw.stages, open, p);
    if open && st.is_empty() {
        p.push("load: the open model needs at least one stage with a `rate`".into());
    }
    if !open && st.iter().any(|s| s.value > users as f64) {
        p.push("load.stages: a target exceeds population.users".into());
    }
    let model = if open {
        LoadModel::Open { stages: st }
    } else {
        LoadModel::Closed { stages: st }
    };
    let connect_rate = raw.connect_rate.unwrap_or(5_000);
    if connect_rate == 0 {
        p.push("load.connect_rate must be at least 1".into());
    }
    Load {
        model,
        connect_rate,
    }
}

fn stages(raw: &[RawStage], open: bool, problems: &mut Vec<String>) -> Vec<Stage> {
    raw.iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let n = i + 1;
            let value = match (open, s.target, s.rate) {
                (false, Some(t), None) => t as f64,
                (true, None, Some(r)) if r.is_finite() && r >= 0.0 => r,
                (true, None, Some(r)) => {
                    problems.push(format!("load.stages[{n}]: rate must be >= 0, got {r}"));
                    return None;
                }
                (false, _, _) => {
                    problems.push(format!(
                        "load.stages[{n}]: the closed model takes `target` (users), not `rate`"
                    ));
                    return None;
                }
                (true, _, _) => {
                    problems.push(format!(
                        "load.stages[{n}]: the open model takes `rate` (messages/s), not `target`"
                    ));
                    return None;
                }
            };
            Some(Stage {
                duration: s.duration,
                value,
            })
        })
        .collect()
}
