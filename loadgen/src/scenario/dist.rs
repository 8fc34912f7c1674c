//! Distributions of non-negative quantities (members per channel, body bytes): the same
//! enum is the TOML form (`{ dist = "zipf", min = 3, max = 60, exponent = 1.2 }`) and the
//! typed value the plan and schedules draw from.

use rand::Rng;
use rand_distr::Distribution;
use serde::{Deserialize, Serialize};

/// A distribution of a non-negative quantity (members per channel, body bytes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "dist", rename_all = "snake_case", deny_unknown_fields)]
pub enum Dist {
    /// Always `value`.
    Fixed { value: f64 },
    /// Uniform in `[min, max]`.
    Uniform { min: f64, max: f64 },
    /// Zipf over `min..=max` with `exponent` (> 0): mostly `min`, a heavy tail up to `max`
    /// (hot channels).
    Zipf { min: f64, max: f64, exponent: f64 },
}

impl Dist {
    /// A fixed value.
    pub fn fixed(value: f64) -> Self {
        Dist::Fixed { value }
    }

    pub(super) fn check(&self, what: &str, problems: &mut Vec<String>) {
        let bad = |p: &mut Vec<String>, m: String| p.push(format!("{what}: {m}"));
        match *self {
            Dist::Fixed { value } if !(value.is_finite() && value >= 0.0) => {
                bad(problems, format!("value must be >= 0, got {value}"))
            }
            Dist::Uniform { min, max } | Dist::Zipf { min, max, .. }
                if !(min.is_finite() && max.is_finite() && min >= 0.0 && min <= max) =>
            {
                bad(problems, format!("need 0 <= min <= max, got {min}..{max}"))
            }
            Dist::Zipf { exponent, .. } if !(exponent.is_finite() && exponent > 0.0) => {
                bad(problems, format!("exponent must be > 0, got {exponent}"))
            }
            _ => {}
        }
    }

    /// Draw one value.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> f64 {
        match *self {
            Dist::Fixed { value } => value,
            Dist::Uniform { min, max } => {
                if max > min {
                    rng.random_range(min..=max)
                } else {
                    min
                }
            }
            Dist::Zipf { min, max, exponent } => {
                let n = (max - min).floor() + 1.0;
                match rand_distr::Zipf::new(n, exponent) {
                    Ok(z) => min + z.sample(rng) - 1.0,
                    Err(_) => min,
                }
            }
        }
    }

    /// The distribution's mean (approximate for Zipf), for summaries.
    pub fn mean(&self) -> f64 {
        match *self {
            Dist::Fixed { value } => value,
            Dist::Uniform { min, max } => (min + max) / 2.0,
            Dist::Zipf { min, max, exponent } => {
                let n = (max - min).floor() as u64 + 1;
                let (mut num, mut den) = (0.0, 0.0);
                for k in 1..=n.min(100_000) {
                    let w = (k as f64).powf(-exponent);
                    num += w * k as f64;
                    den += w;
                }
                min + num / den - 1.0
            }
        }
    }
}
