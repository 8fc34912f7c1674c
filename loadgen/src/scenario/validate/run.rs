//! `[run]`: name, durations and the seed (filled in when the file has none, so the raw
//! form written back replays the same run).

use std::time::Duration;

use rand::Rng;

use crate::scenario::raw::RawRun;

/// `[run]`, typed.
pub(super) struct Run {
    pub(super) name: String,
    pub(super) description: Option<String>,
    pub(super) duration: Duration,
    pub(super) warmup: Duration,
    pub(super) drain: Duration,
    pub(super) seed: u64,
}

pub(super) fn run(raw: &mut RawRun, p: &mut Vec<String>) -> Run {
    let seed = *raw.seed.get_or_insert_with(|| rand::rng().random());
    if raw.name.trim().is_empty() {
        p.push("run.name must not be empty".into());
    }
    if raw.duration.is_zero() {
        p.push("run.duration must be positive".into());
    }
    Run {
        name: raw.name.clone(),
        description: raw.description.clone(),
        duration: raw.duration,
        warmup: raw.warmup.unwrap_or(Duration::from_secs(5)),
        drain: raw.drain.unwrap_or(Duration::from_secs(3)),
        seed,
    }
}
