//! Per-user traffic schedule, derived from the seed and the user's index only, so the
//! same seed gives the same sends whichever worker runs the user.
//!
//! * closed model: the user connects when the ramp of target users reaches its index,
//!   then sends, waits for the ack, thinks for an exponential time (mean
//!   60 s / `messages_per_minute`) and sends again;
//! * open model: every user follows a Poisson process of rate `rate(t) / users`, so the
//!   total arrival rate follows the stages; sends are scheduled at their *intended* times,
//!   independent of acks, and latency is measured from those times.
//!
//! Stage time starts at the beginning of the run (warm-up included).

use rand::Rng;
use rand_distr::{Distribution, Exp1};

use crate::plan::{UserRng, kept_user_rng};
use crate::scenario::{Dist, LoadModel, Persona, Scenario, Stage};

/// Resolution of the open model's rate curve, seconds.
const SLICE_S: f64 = 0.1;

/// Purpose tag of the schedule's random stream (the persona draw uses 0).
const SCHEDULE: u64 = 1;

/// Total message rate over time (open model), piecewise constant per slice.
#[derive(Debug, Clone, PartialEq)]
pub struct RateCurve {
    /// Rate (messages/s, all users) of each [`SLICE_S`] slice.
    slices: Vec<f64>,
}

/// Value of a stage ramp at `t` seconds (linear from the previous stage's end value,
/// starting at 0; the last value holds afterwards).
pub fn ramp_value(stages: &[Stage], t: f64) -> f64 {
    let (mut t0, mut v0) = (0.0, 0.0);
    for s in stages {
        let d = s.duration.as_secs_f64();
        if t < t0 + d {
            return if d > 0.0 {
                v0 + (s.value - v0) * (t - t0) / d
            } else {
                s.value
            };
        }
        t0 += d;
        v0 = s.value;
    }
    v0
}

impl RateCurve {
    /// The curve of open-model stages over `total_s` seconds.
    pub fn new(stages: &[Stage], total_s: f64) -> Self {
        let n = (total_s / SLICE_S).ceil() as usize;
        let slices = (0..n)
            .map(|i| ramp_value(stages, (i as f64 + 0.5) * SLICE_S).max(0.0))
            .collect();
        RateCurve { slices }
    }

    /// Next arrival after `t` of a Poisson process with rate `rate(t) * share`, or `None`
    /// past the end of the curve. `e` is an Exp(1) draw (time rescaling).
    fn next_after(&self, t: f64, share: f64, mut e: f64) -> Option<f64> {
        let mut i = (t / SLICE_S).floor() as usize;
        let mut at = t;
        while i < self.slices.len() {
            let end = (i + 1) as f64 * SLICE_S;
            let rate = self.slices[i] * share;
            let mass = rate * (end - at);
            if rate > 0.0 && mass >= e {
                return Some(at + e / rate);
            }
            e -= mass;
            at = end;
            i += 1;
        }
        None
    }
}

/// When a user is connected in the closed model: (start, stop) in seconds from the run's
/// start; `stop` is `None` when it stays until the end.
pub fn closed_window(stages: &[Stage], user: u32, connect_rate: u32) -> Option<(f64, Option<f64>)> {
    if stages.is_empty() {
        return Some((f64::from(user) / f64::from(connect_rate.max(1)), None));
    }
    let level = f64::from(user) + 1.0;
    let (mut t0, mut v0) = (0.0_f64, 0.0_f64);
    let mut start = None;
    for s in stages {
        let d = s.duration.as_secs_f64();
        let v1 = s.value;
        // The crossing of `level` inside this segment, if any.
        let cross = |from: f64, to: f64| -> f64 {
            if d <= 0.0 || (to - from).abs() < f64::EPSILON {
                t0
            } else {
                t0 + d * (level - from) / (to - from)
            }
        };
        match start {
            None if v0 < level && v1 >= level => start = Some(cross(v0, v1)),
            None if v0 >= level => start = Some(t0),
            Some(st) if v0 >= level && v1 < level => return Some((st, Some(cross(v0, v1)))),
            _ => {}
        }
        t0 += d;
        v0 = v1;
    }
    start.map(|s| (s, None))
}

/// The random choices of one user's traffic.
#[derive(Debug, Clone)]
pub struct UserSchedule {
    rng: UserRng,
    mean_gap_s: f64,
    body: Dist,
    history_gap_s: Option<f64>,
    /// Open model: this user's share of the total rate.
    open_share: Option<f64>,
}

impl UserSchedule {
    /// The schedule of `user` with persona `persona`.
    pub fn new(s: &Scenario, user: u32, persona: &Persona) -> Self {
        let open_share = match s.load.model {
            LoadModel::Open { .. } => Some(1.0 / f64::from(s.population.users.max(1))),
            LoadModel::Closed { .. } => None,
        };
        UserSchedule {
            rng: kept_user_rng(s.seed, user, SCHEDULE),
            mean_gap_s: if persona.messages_per_minute > 0.0 {
                60.0 / persona.messages_per_minute
            } else {
                f64::INFINITY
            },
            body: persona.body_bytes.clone(),
            history_gap_s: (persona.history_per_minute > 0.0)
                .then(|| 60.0 / persona.history_per_minute),
            open_share,
        }
    }

    /// Whether the user follows the open model.
    pub fn is_open(&self) -> bool {
        self.open_share.is_some()
    }

    fn exp1(&mut self) -> f64 {
        Exp1.sample(&mut self.rng)
    }

    /// Closed model: think time before the next send, seconds (`None`: never sends).
    pub fn think_time(&mut self) -> Option<f64> {
        let e = self.exp1();
        self.mean_gap_s.is_finite().then_some(e * self.mean_gap_s)
    }

    /// Open model: the next intended send time after `t` (seconds from the run's start).
    pub fn next_open(&mut self, curve: &RateCurve, t: f64) -> Option<f64> {
        let e = self.exp1();
        curve.next_after(t, self.open_share?, e)
    }

    /// Time until the next history fetch, seconds (`None`: this persona fetches none).
    pub fn history_gap(&mut self) -> Option<f64> {
        let g = self.history_gap_s?;
        Some(self.exp1() * g)
    }

    /// Which of `n` channels to send into.
    pub fn pick_channel(&mut self, n: usize) -> usize {
        if n <= 1 {
            0
        } else {
            self.rng.random_range(0..n)
        }
    }

    /// Body length in bytes (at least 1).
    pub fn body_len(&mut self) -> usize {
        (self.body.sample(&mut self.rng).round() as usize).max(1)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn scenario(seed: u64, load: &str) -> Scenario {
        let text = format!(
            "[run]\nname = \"t\"\nduration = \"10s\"\nwarmup = \"0s\"\ndrain = \"0s\"\nseed = {seed}\n[population]\nusers = 100\n[[personas]]\nname = \"p\"\nmessages_per_minute = 60\nbody_bytes = {{ dist = \"uniform\", min = 10, max = 20 }}\n{load}"
        );
        Scenario::parse("t", &text).unwrap()
    }

    fn trace(s: &Scenario, user: u32) -> Vec<(u64, usize, usize)> {
        let mut sch = UserSchedule::new(s, user, &s.personas[0]);
        (0..20)
            .map(|_| {
                let t = (sch.think_time().unwrap() * 1e6) as u64;
                (t, sch.pick_channel(3), sch.body_len())
            })
            .collect()
    }

    #[test]
    fn same_seed_same_schedule_per_user() {
        let s = scenario(5, "");
        assert_eq!(trace(&s, 7), trace(&s, 7));
        assert_ne!(trace(&s, 7), trace(&s, 8));
        assert_ne!(trace(&s, 7), trace(&scenario(6, ""), 7));
        // Growing the population (a different sharding or size) leaves user 7 alone.
        let bigger = s
            .apply(&crate::scenario::Overrides {
                users: Some(1000),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(trace(&s, 7), trace(&bigger, 7));
        assert!(
            trace(&s, 7)
                .iter()
                .all(|&(_, c, b)| c < 3 && (10..=20).contains(&b))
        );
    }

    #[test]
    fn open_model_total_rate_follows_stages() {
        let s = scenario(
            1,
            "[load]\nmodel = \"open\"\nstages = [{ duration = \"0s\", rate = 200 }, { duration = \"5s\", rate = 200 }, { duration = \"0s\", rate = 1000 }]\n",
        );
        let LoadModel::Open { stages } = &s.load.model else {
            panic!()
        };
        let curve = RateCurve::new(stages, 10.0);
        let mut first_half = 0;
        let mut second_half = 0;
        for u in 0..100 {
            let mut sch = UserSchedule::new(&s, u, &s.personas[0]);
            let mut t = 0.0;
            while let Some(next) = sch.next_open(&curve, t) {
                assert!(next > t);
                if next < 5.0 {
                    first_half += 1;
                } else {
                    second_half += 1;
                }
                t = next;
            }
        }
        // Expected 1000 and 5000 arrivals; Poisson noise is ~sqrt(n).
        assert!((850..=1150).contains(&first_half), "{first_half}");
        assert!((4700..=5300).contains(&second_half), "{second_half}");
    }

    #[test]
    fn closed_windows_follow_the_ramp() {
        let st = |secs, v| Stage {
            duration: Duration::from_secs(secs),
            value: v,
        };
        let stages = [st(10, 100.0), st(10, 100.0), st(10, 50.0)];
        // User 49 (level 50) starts halfway up the ramp and never stops.
        let (start, stop) = closed_window(&stages, 49, 1).unwrap();
        assert!((start - 5.0).abs() < 1e-9 && stop.is_none());
        // User 99 (level 100) starts at 10 s and stops as the ramp leaves 100 at 20 s.
        let (start, stop) = closed_window(&stages, 99, 1).unwrap();
        assert!((start - 10.0).abs() < 1e-9);
        assert!((stop.unwrap() - 20.0).abs() < 1e-9, "{stop:?}");
        assert_eq!(closed_window(&stages, 100, 1), None);
        assert_eq!(closed_window(&[], 50, 100), Some((0.5, None)));
    }
}
