//! The worker's Prometheus endpoint (`flowline loadgen --metrics-listen ADDR`).
//!
//! The worker's merge loop folds every per-second interval into [`WorkerMetrics`]
//! (cumulative counters and histograms); `GET /metrics` renders them in the Prometheus
//! text format with the label `worker="<shard index>"`:
//!
//! ```text
//! flowline_loadgen_users_connected            gauge
//! flowline_loadgen_sends_total                counter
//! flowline_loadgen_acks_total                 counter
//! flowline_loadgen_deliveries_total           counter
//! flowline_loadgen_errors_total{kind}         counter
//! flowline_loadgen_rate_limited_total         counter (HTTP 429, WebSocket rate_limited)
//! flowline_loadgen_lost_total                 counter (set when the worker finishes)
//! flowline_loadgen_latency_seconds{metric}    histogram, metric = connect|ready|ack|delivery
//! ```
//! Values move once a second (when a tick line is printed). `lost_total` counts what the
//! worker can judge alone: messages its own users sent that its own users were due and
//! never received; losses across workers are only known to the aggregator
//! (`summary.json`).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use hdrhistogram::Histogram;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::error::{LoadgenError, Result};
use crate::histogram::{Metric, new_histogram};
use crate::recorder::Recorder;
use crate::wire::Counters;

/// Upper bounds (seconds) of the latency histogram's buckets.
pub const BUCKETS_S: [f64; 17] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0,
    30.0, 60.0,
];

#[derive(Debug)]
struct State {
    users: u64,
    totals: Counters,
    hists: [Histogram<u64>; 4],
    lost: u64,
    extra: Vec<(String, u64)>,
}

/// Cumulative measurements of one worker, shared between its merge loop and the HTTP
/// endpoint.
#[derive(Debug)]
pub struct WorkerMetrics {
    worker: usize,
    state: Mutex<State>,
}

/// The `metric` label of a latency histogram (`hello` is shown as `ready`).
fn label(m: Metric) -> &'static str {
    match m {
        Metric::Connect => "connect",
        Metric::Hello => "ready",
        Metric::Ack => "ack",
        Metric::Delivery => "delivery",
    }
}

impl WorkerMetrics {
    /// Empty metrics of shard `worker`.
    pub fn new(worker: usize) -> Self {
        WorkerMetrics {
            worker,
            state: Mutex::new(State {
                users: 0,
                totals: Counters::default(),
                hists: std::array::from_fn(|_| new_histogram()),
                lost: 0,
                extra: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain numbers behind: still readable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fold one second's interval in; `users` is the number connected at its end.
    pub fn observe(&self, users: u64, rec: &Recorder) {
        let mut s = self.lock();
        s.users = users;
        s.totals.add(&rec.counters);
        for (a, b) in s.hists.iter_mut().zip(rec.hists.iter()) {
            let _ = a.add(b);
        }
    }

    /// Set the number of lost deliveries the worker found at its end.
    pub fn set_lost(&self, lost: u64) {
        self.lock().lost = lost;
    }

    /// Add to a counter outside the fixed set (HTTP requests by goose), rendered as
    /// `flowline_loadgen_<name>` counters.
    pub fn set_extra(&self, name: &str, value: u64) {
        let mut s = self.lock();
        match s.extra.iter_mut().find(|(n, _)| n == name) {
            Some(e) => e.1 = value,
            None => s.extra.push((name.to_string(), value)),
        }
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let s = self.lock();
        let w = self.worker;
        let mut out = String::with_capacity(4096);
        let mut simple = |name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name}{{worker=\"{w}\"}} {v}");
        };
        simple(
            "flowline_loadgen_users_connected",
            "gauge",
            "Simulated users connected (ready).",
            s.users,
        );
        simple(
            "flowline_loadgen_sends_total",
            "counter",
            "Messages sent.",
            s.totals.sent,
        );
        simple(
            "flowline_loadgen_acks_total",
            "counter",
            "Sends acknowledged.",
            s.totals.acked,
        );
        simple(
            "flowline_loadgen_deliveries_total",
            "counter",
            "Messages of simulated users received by other simulated users.",
            s.totals.delivered,
        );
        simple(
            "flowline_loadgen_rate_limited_total",
            "counter",
            "Chat actions the node refused for a rate limit (HTTP 429, WebSocket rate_limited).",
            s.totals.rate_limited,
        );
        simple(
            "flowline_loadgen_lost_total",
            "counter",
            "Deliveries due and never received, among this worker's own users (set at the end).",
            s.lost,
        );
        let _ = writeln!(
            out,
            "# HELP flowline_loadgen_errors_total Errors by kind.\n# TYPE flowline_loadgen_errors_total counter"
        );
        for (kind, n) in &s.totals.errors_by_kind {
            let kind = kind.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(
                out,
                "flowline_loadgen_errors_total{{worker=\"{w}\",kind=\"{kind}\"}} {n}"
            );
        }
        for (name, v) in &s.extra {
            let _ = writeln!(out, "# TYPE flowline_loadgen_{name} counter");
            let _ = writeln!(out, "flowline_loadgen_{name}{{worker=\"{w}\"}} {v}");
        }
        let name = "flowline_loadgen_latency_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Latency by metric (connect, ready, ack, delivery).\n# TYPE {name} histogram"
        );
        for m in Metric::ALL {
            let h = &s.hists[m as usize];
            let l = label(m);
            for le in BUCKETS_S {
                let le_us = (le * 1e6) as u64;
                let n = if h.is_empty() {
                    0
                } else {
                    h.count_between(0, le_us)
                };
                let _ = writeln!(
                    out,
                    "{name}_bucket{{worker=\"{w}\",metric=\"{l}\",le=\"{le}\"}} {n}"
                );
            }
            let count = h.len();
            let _ = writeln!(
                out,
                "{name}_bucket{{worker=\"{w}\",metric=\"{l}\",le=\"+Inf\"}} {count}"
            );
            // The sum from the histogram's buckets (exact to 3 significant digits).
            let sum_s = if h.is_empty() {
                0.0
            } else {
                h.mean() * count as f64 / 1e6
            };
            let _ = writeln!(out, "{name}_sum{{worker=\"{w}\",metric=\"{l}\"}} {sum_s}");
            let _ = writeln!(out, "{name}_count{{worker=\"{w}\",metric=\"{l}\"}} {count}");
        }
        out
    }
}

/// Serve `GET /metrics` on `addr` until `cancel`; returns the bound address.
pub async fn serve(
    addr: &str,
    metrics: Arc<WorkerMetrics>,
    cancel: CancellationToken,
) -> Result<SocketAddr> {
    use axum::routing::get;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| LoadgenError::io(format!("binding --metrics-listen {addr}"), e))?;
    let bound = listener
        .local_addr()
        .map_err(|e| LoadgenError::io("reading the metrics address", e))?;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let m = metrics.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    m.render(),
                )
            }
        }),
    );
    tokio::spawn(async move {
        let r = axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await;
        if let Err(e) = r {
            tracing::warn!("metrics endpoint stopped: {e}");
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_has_every_contract_name() {
        let m = WorkerMetrics::new(3);
        let mut rec = Recorder::default();
        rec.counters.sent = 5;
        rec.counters.acked = 4;
        rec.counters.delivered = 40;
        rec.counters.error("server:unknown_op");
        rec.counters.rate_limited = 3;
        rec.record(Metric::Delivery, 700);
        rec.record(Metric::Delivery, 3_000_000);
        m.observe(12, &rec);
        m.observe(11, &rec);
        m.set_lost(2);
        let text = m.render();
        for line in [
            "flowline_loadgen_users_connected{worker=\"3\"} 11",
            "flowline_loadgen_sends_total{worker=\"3\"} 10",
            "flowline_loadgen_acks_total{worker=\"3\"} 8",
            "flowline_loadgen_deliveries_total{worker=\"3\"} 80",
            "flowline_loadgen_lost_total{worker=\"3\"} 2",
            "flowline_loadgen_rate_limited_total{worker=\"3\"} 6",
            "flowline_loadgen_errors_total{worker=\"3\",kind=\"server:unknown_op\"} 2",
            "flowline_loadgen_latency_seconds_bucket{worker=\"3\",metric=\"delivery\",le=\"0.001\"} 2",
            "flowline_loadgen_latency_seconds_bucket{worker=\"3\",metric=\"delivery\",le=\"2.5\"} 2",
            "flowline_loadgen_latency_seconds_bucket{worker=\"3\",metric=\"delivery\",le=\"5\"} 4",
            "flowline_loadgen_latency_seconds_count{worker=\"3\",metric=\"delivery\"} 4",
            "flowline_loadgen_latency_seconds_count{worker=\"3\",metric=\"ready\"} 0",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
