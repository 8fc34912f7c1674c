//! The console's live model of a run: every complete second the aggregator has merged
//! (users, rates, per-second latency percentiles, errors), the running latency
//! histograms the thresholds are judged on, the processes' CPU and memory, and the
//! frame sent to the page once a second: its numbers and its charts, drawn by the same
//! [`crate::svg`] code as report.html (so both look the same).

use std::collections::BTreeMap;

use flowline_loadgen::aggregate::SecondView;
use flowline_loadgen::histogram::{self, Metric, Percentiles};
use flowline_loadgen::scenario::Scenario;
use flowline_loadgen::wire::Counters;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{Value, json};

use crate::svg::{Chart, Marker, PALETTE, Series, Shade};

/// Per-second latency percentiles, ms.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Pcts {
    /// Samples in the second.
    pub count: u64,
    /// Median, ms.
    pub p50: f64,
    /// 90th percentile, ms.
    pub p90: f64,
    /// 99th percentile, ms.
    pub p99: f64,
    /// Largest, ms.
    pub max: f64,
}

impl Pcts {
    fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Pcts {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
        }
    }
}

/// One second of the run as the page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Second {
    /// Interval number (seconds since the run's start).
    pub t: u64,
    /// In the measured window.
    pub measuring: bool,
    /// In the drain.
    pub drain: bool,
    /// Users connected.
    pub users: u64,
    /// Sends.
    pub sent: u64,
    /// Acks.
    pub acked: u64,
    /// Deliveries.
    pub delivered: u64,
    /// Errors.
    pub errors: u64,
    /// Sessions that ended unasked.
    pub disconnects: u64,
    /// Sessions opened again.
    pub reconnects: u64,
    /// Delivery latency of the second.
    pub delivery: Option<Pcts>,
    /// Ack latency of the second.
    pub ack: Option<Pcts>,
}

/// CPU and memory of one process, one sample a second.
#[derive(Debug, Clone, Serialize)]
pub struct ProcSample {
    /// Seconds since the run's start.
    pub t: f64,
    /// CPU use over the last sample, percent of one core.
    pub cpu_pct: f64,
    /// Resident memory now, MiB.
    pub rss_mib: f64,
}

/// A fault window on the run's time axis (seconds since the run's start).
#[derive(Debug, Clone, Serialize)]
pub struct Window {
    /// Injected at.
    pub start: f64,
    /// Healed at (`None`: still active).
    pub end: Option<f64>,
    /// Its label.
    pub label: String,
}

/// Everything the console knows of the run's data.
#[derive(Debug)]
pub struct Live {
    scenario: Scenario,
    /// Newest second taken from the aggregator.
    pub last: u64,
    seconds: Vec<Second>,
    /// Delivery and ack histograms over the measured window and the drain.
    delivery: Histogram<u64>,
    ack: Histogram<u64>,
    measured: Counters,
    measured_s: f64,
    peak_users: u64,
    errors_by_kind: BTreeMap<String, u64>,
    procs: BTreeMap<String, Vec<ProcSample>>,
    /// Final values once the run is summarised (thresholds, correctness).
    pub summary: Option<Value>,
}

impl Live {
    /// An empty model of a run of `scenario`.
    pub fn new(scenario: &Scenario) -> Self {
        Live {
            scenario: scenario.clone(),
            last: 0,
            seconds: Vec::new(),
            delivery: histogram::new_histogram(),
            ack: histogram::new_histogram(),
            measured: Counters::default(),
            measured_s: 0.0,
            peak_users: 0,
            errors_by_kind: BTreeMap::new(),
            procs: BTreeMap::new(),
            summary: None,
        }
    }

    /// Take newly complete seconds.
    pub fn ingest(&mut self, seconds: Vec<SecondView>) {
        for s in seconds {
            self.last = self.last.max(s.t);
            let c = &s.counters;
            for (k, v) in &c.errors_by_kind {
                *self.errors_by_kind.entry(k.clone()).or_default() += v;
            }
            self.peak_users = self.peak_users.max(s.users);
            if s.measuring {
                self.measured_s += 1.0;
                self.measured.add(c);
            }
            let d = s.hists[Metric::Delivery as usize].as_ref();
            let a = s.hists[Metric::Ack as usize].as_ref();
            if s.measuring || s.drain {
                if let Some(h) = d {
                    let _ = self.delivery.add(h);
                }
                if let Some(h) = a {
                    let _ = self.ack.add(h);
                }
            }
            self.seconds.push(Second {
                t: s.t,
                measuring: s.measuring,
                drain: s.drain,
                users: s.users,
                sent: c.sent,
                acked: c.acked,
                delivered: c.delivered,
                errors: c.errors,
                disconnects: c.disconnects,
                reconnects: c.reconnects,
                delivery: d.map(Pcts::of),
                ack: a.map(Pcts::of),
            });
        }
    }

    /// Record one CPU/memory sample of process `name`.
    pub fn sample(&mut self, name: &str, s: ProcSample) {
        self.procs.entry(name.to_string()).or_default().push(s);
    }

    /// The metric values the thresholds are judged on, as far as they are known while
    /// the run goes (the correctness ones are known at the end only).
    fn values(&self) -> BTreeMap<String, f64> {
        let mut v = BTreeMap::new();
        for (name, h) in [("delivery", &self.delivery), ("ack", &self.ack)] {
            if h.is_empty() {
                continue;
            }
            let p = Percentiles::of(h);
            for (stat, x) in p.stats() {
                v.insert(format!("{name}.{stat}"), x);
            }
        }
        let m = &self.measured;
        for (k, x) in [
            ("sent", m.sent),
            ("acked", m.acked),
            ("delivered", m.delivered),
            ("errors", m.errors),
            ("disconnects", m.disconnects),
            ("reconnects", m.reconnects),
            ("users", self.peak_users),
        ] {
            v.insert(k.to_string(), x as f64);
        }
        let ops = m.sent + m.connects + m.history;
        if ops > 0 {
            v.insert("errors.rate".into(), m.errors as f64 / ops as f64);
        }
        if self.measured_s > 0.0 {
            v.insert("sends.rate".into(), m.sent as f64 / self.measured_s);
            v.insert(
                "deliveries.rate".into(),
                m.delivered as f64 / self.measured_s,
            );
        }
        v
    }

    /// The thresholds as they stand: held / failing so far / known at the end; the
    /// summary's verdicts once the run is over.
    fn thresholds(&self) -> Vec<Value> {
        if let Some(t) = self.summary.as_ref().and_then(|s| s.get("thresholds")) {
            return t
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    json!({
                        "expr": t.get("expr"),
                        "actual": t.get("actual").and_then(Value::as_f64)
                            .zip(t.get("expr").and_then(Value::as_str))
                            .map(|(a, e)| crate::report::threshold_value(e, a)),
                        "state": if t.get("passed").and_then(Value::as_bool) == Some(true) { "held" } else { "failed" },
                    })
                })
                .collect();
        }
        let values = self.values();
        self.scenario
            .thresholds
            .iter()
            .map(|t| {
                let r = t.eval(&values);
                let state = match r.actual {
                    None => "at the end",
                    Some(_) if r.passed => "holding",
                    Some(_) => "failing",
                };
                json!({
                    "expr": r.expr,
                    "actual": r.actual.map(|a| crate::report::threshold_value(&r.expr, a)),
                    "state": state,
                })
            })
            .collect()
    }

    /// The frame the page gets: latest numbers, thresholds, charts.
    pub fn frame(&self, phase: &str, windows: &[Window], markers: &[Marker], x_end: f64) -> Value {
        let latest = self.seconds.last();
        let correctness = self.summary.as_ref().and_then(|s| s.get("correctness"));
        let shades: Vec<Shade> = windows
            .iter()
            .map(|w| Shade {
                x0: w.start,
                x1: w.end.unwrap_or(x_end),
                label: w.label.clone(),
            })
            .collect();
        let charts: Vec<String> = self
            .charts()
            .into_iter()
            .map(|mut c| {
                c.x_range = Some((0.0, x_end.max(1.0)));
                c.shades = shades.clone();
                c.markers = markers.to_vec();
                c.render()
            })
            .collect();
        let procs: BTreeMap<&String, &ProcSample> = self
            .procs
            .iter()
            .filter_map(|(n, s)| Some((n, s.last()?)))
            .collect();
        json!({
            "phase": phase,
            "t": self.last,
            "latest": latest,
            "errors_by_kind": self.errors_by_kind,
            "errors_total": self.errors_by_kind.values().sum::<u64>(),
            "lost": correctness.and_then(|c| c.get("lost")),
            "duplicated": correctness.and_then(|c| c.get("duplicated")),
            "passed": self.summary.as_ref().and_then(|s| s.get("passed")),
            "thresholds": self.thresholds(),
            "processes": procs,
            "faults": windows,
            "charts": charts,
        })
    }

    /// The charts, in report.html's reading order, then the processes'.
    fn charts(&self) -> Vec<Chart> {
        let mut out = Vec::new();
        type PctOf = fn(&Pcts) -> f64;
        let stats: [(&str, PctOf); 4] = [
            ("p50", |p| p.p50),
            ("p90", |p| p.p90),
            ("p99", |p| p.p99),
            ("max", |p| p.max),
        ];
        type Lat = fn(&Second) -> Option<Pcts>;
        let lat: [(&str, Lat); 2] = [("delivery", |s| s.delivery), ("ack", |s| s.ack)];
        for (name, get) in lat {
            let mut c = Chart::new(format!("{name} latency percentiles, per second"), "ms");
            for (i, (stat, f)) in stats.iter().enumerate() {
                let pts = self
                    .seconds
                    .iter()
                    .filter_map(|s| get(s).map(|p| (s.t as f64, f(&p))))
                    .collect();
                let mut s = Series::new(*stat, PALETTE[i], pts);
                s.dashed = *stat == "max";
                c.series.push(s);
            }
            out.push(c);
        }
        type Col = fn(&Second) -> u64;
        let chart = |title: &str, unit: &str, cols: &[(&str, Col)]| {
            let mut c = Chart::new(title, unit);
            for (k, (name, f)) in cols.iter().enumerate() {
                let pts = self.seconds.iter().map(|s| (s.t as f64, f(s) as f64));
                c.series.push(Series::new(
                    *name,
                    PALETTE[(k + 2) % PALETTE.len()],
                    pts.collect(),
                ));
            }
            c
        };
        out.push(chart("Connected users", "users", &[("users", |s| s.users)]));
        out.push(chart(
            "Send rate (sent and acked)",
            "messages per second",
            &[("sent", |s| s.sent), ("acked", |s| s.acked)],
        ));
        out.push(chart(
            "Delivery rate",
            "deliveries per second",
            &[("delivered", |s| s.delivered)],
        ));
        out.push(chart(
            "Errors",
            "per second",
            &[
                ("errors", |s| s.errors),
                ("disconnects", |s| s.disconnects),
                ("reconnects", |s| s.reconnects),
            ],
        ));
        type ProcOf = fn(&ProcSample) -> f64;
        let procs: [(&str, &str, ProcOf); 2] = [
            ("CPU of the run's processes", "% of one core", |p| p.cpu_pct),
            ("Memory of the run's processes", "resident MiB", |p| {
                p.rss_mib
            }),
        ];
        for (title, unit, f) in procs {
            let mut c = Chart::new(title, unit);
            for (k, (name, samples)) in self.procs.iter().enumerate() {
                c.series.push(Series::new(
                    name.clone(),
                    PALETTE[k % PALETTE.len()],
                    samples.iter().map(|s| (s.t, f(s))).collect(),
                ));
            }
            out.push(c);
        }
        out
    }
}
