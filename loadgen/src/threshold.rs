//! Threshold expressions (`delivery.p99 < 250ms`, `lost == 0`, `errors.rate < 0.1%`):
//! parsing, and evaluation against a run's metric values.
//!
//! Metric names: `<latency>.<stat>` where latency is `connect`, `hello`, `ack` or
//! `delivery` and stat is `p50`, `p90`, `p99`, `p999`, `p9999`, `max`, `min` or `mean`
//! (values in time units: `us`, `ms`, `s`); counters `sent`, `acked`, `delivered`,
//! `expected`, `lost`, `duplicated`, `reordered`, `gaps`, `errors`, `disconnects`,
//! `reconnects`, `users` (peak connected); rates `errors.rate` (errors per operation, a
//! fraction or `%`), `deliveries.rate` and `sends.rate` (per second of measurement);
//! `anomalies.<kind>` for every kind the stream checker names (`anomalies.poll_skip`,
//! see [`crate::anomaly::Anomaly`]).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::anomaly::Anomaly;

/// Latency metrics recorded by the workers.
pub const LATENCIES: [&str; 4] = ["connect", "hello", "ack", "delivery"];
const STATS: [&str; 8] = ["p50", "p90", "p99", "p999", "p9999", "max", "min", "mean"];
const COUNTERS: [&str; 17] = [
    "sent",
    "acked",
    "delivered",
    "expected",
    "lost",
    "duplicated",
    "reordered",
    "gaps",
    "errors",
    "disconnects",
    "reconnects",
    "users",
    "errors.rate",
    "deliveries.rate",
    "sends.rate",
    "rate_limited",
    "rate_limited.rate",
];

/// Comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }

    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Op::Lt => a < b,
            Op::Le => a <= b,
            Op::Gt => a > b,
            Op::Ge => a >= b,
            Op::Eq => a == b,
            Op::Ne => a != b,
        }
    }
}

/// A parsed threshold: `metric op value`, with `value` normalised (µs for latencies,
/// a fraction for `%`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    /// The expression as written.
    pub expr: String,
    /// Metric name, e.g. `delivery.p99`.
    pub metric: String,
    /// Operator.
    pub op: Op,
    /// Right-hand side in the metric's unit (µs for latencies).
    pub value: f64,
}

/// Outcome of one threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdResult {
    /// The expression as written.
    pub expr: String,
    /// The measured value (µs for latencies); `None` if the metric was not measured.
    pub actual: Option<f64>,
    /// Whether it held (an unmeasured metric fails).
    pub passed: bool,
}

fn is_latency(metric: &str) -> bool {
    metric
        .split_once('.')
        .is_some_and(|(l, s)| LATENCIES.contains(&l) && STATS.contains(&s))
}

impl Threshold {
    /// Parse `metric op value`.
    pub fn parse(expr: &str) -> Result<Threshold, String> {
        let e = expr.trim();
        let (pos, op, len) = ["<=", ">=", "==", "!=", "<", ">"]
            .iter()
            .filter_map(|o| e.find(o).map(|p| (p, *o)))
            .min_by_key(|(p, o)| (*p, std::cmp::Reverse(o.len())))
            .map(|(p, o)| {
                let op = match o {
                    "<=" => Op::Le,
                    ">=" => Op::Ge,
                    "==" => Op::Eq,
                    "!=" => Op::Ne,
                    "<" => Op::Lt,
                    _ => Op::Gt,
                };
                (p, op, o.len())
            })
            .ok_or_else(|| {
                format!("{expr:?}: expected `metric <op> value` (op: < <= > >= == !=)")
            })?;
        let metric = e[..pos].trim();
        let rhs = e[pos + len..].trim();
        let anomaly = metric
            .strip_prefix("anomalies.")
            .is_some_and(|k| Anomaly::from_name(k).is_some());
        if !(is_latency(metric) || COUNTERS.contains(&metric) || anomaly) {
            return Err(format!(
                "{expr:?}: unknown metric {metric:?} (latencies: {{{}}}.{{{}}}; counters: {}; \
                 anomalies.{{{}}})",
                LATENCIES.join(","),
                STATS.join(","),
                COUNTERS.join(", "),
                Anomaly::ALL.map(Anomaly::name).join(",")
            ));
        }
        if rhs.is_empty() {
            return Err(format!("{expr:?}: missing value after `{}`", op.as_str()));
        }
        let split = rhs
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+' || c == 'e'))
            .unwrap_or(rhs.len());
        let (num, unit) = (rhs[..split].trim(), rhs[split..].trim());
        let n: f64 = num
            .parse()
            .map_err(|_| format!("{expr:?}: {num:?} is not a number"))?;
        let value = if is_latency(metric) {
            let scale = match unit {
                "us" | "µs" => 1.0,
                "ms" => 1_000.0,
                "s" => 1_000_000.0,
                _ => {
                    return Err(format!(
                        "{expr:?}: a latency needs a unit (us, ms or s), got {unit:?}"
                    ));
                }
            };
            n * scale
        } else {
            match unit {
                "" => n,
                "%" => n / 100.0,
                other => return Err(format!("{expr:?}: unexpected unit {other:?}")),
            }
        };
        Ok(Threshold {
            expr: expr.to_string(),
            metric: metric.to_string(),
            op,
            value,
        })
    }

    /// Evaluate against metric values (latencies in µs).
    pub fn eval(&self, values: &BTreeMap<String, f64>) -> ThresholdResult {
        let actual = values.get(&self.metric).copied();
        ThresholdResult {
            expr: self.expr.clone(),
            actual,
            passed: actual.is_some_and(|a| self.op.holds(a, self.value)),
        }
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_operators() {
        let t = Threshold::parse("delivery.p99 < 250ms").unwrap();
        assert_eq!(
            (t.metric.as_str(), t.op, t.value),
            ("delivery.p99", Op::Lt, 250_000.0)
        );
        let t = Threshold::parse("lost==0").unwrap();
        assert_eq!((t.op, t.value), (Op::Eq, 0.0));
        let t = Threshold::parse("errors.rate < 0.1%").unwrap();
        assert!((t.value - 0.001).abs() < 1e-12);
        let t = Threshold::parse("ack.max <= 2s").unwrap();
        assert_eq!((t.op, t.value), (Op::Le, 2_000_000.0));
        let t = Threshold::parse("deliveries.rate >= 1e5").unwrap();
        assert_eq!((t.op, t.value), (Op::Ge, 100_000.0));
        for kind in Anomaly::ALL {
            let t = Threshold::parse(&format!("anomalies.{} == 0", kind.name())).unwrap();
            assert_eq!(t.metric, format!("anomalies.{}", kind.name()));
        }
    }

    #[test]
    fn refuses_bad_expressions() {
        for bad in [
            "delivery.p99 < 250",
            "delivery.p98 < 1ms",
            "lost = 0",
            "lost <",
            "loss == 0",
            "lost == zero",
            "lost == 0ms",
            "anomalies.lost_write == 0",
            "anomalies == 0",
            "anomalies.lost == 0ms",
        ] {
            assert!(Threshold::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn evaluates() {
        let values = BTreeMap::from([
            ("delivery.p99".to_string(), 120_000.0),
            ("lost".into(), 2.0),
        ]);
        assert!(
            Threshold::parse("delivery.p99 < 250ms")
                .unwrap()
                .eval(&values)
                .passed
        );
        assert!(
            !Threshold::parse("delivery.p99 < 100ms")
                .unwrap()
                .eval(&values)
                .passed
        );
        let r = Threshold::parse("lost == 0").unwrap().eval(&values);
        assert_eq!((r.passed, r.actual), (false, Some(2.0)));
        let r = Threshold::parse("gaps == 0").unwrap().eval(&values);
        assert_eq!((r.passed, r.actual), (false, None));
    }
}
