//! The node's Prometheus metrics (`GET /metrics`, `flowline_` prefix).
//!
//! Each node owns its own `PrometheusRecorder` and registers its counters on it directly
//! instead of installing a process-global recorder: tests run several nodes in one
//! process, and a global recorder would mix their numbers (and can be installed once).
//! The handles are plain atomics, so the hot path costs one relaxed add.

use metrics::{Counter, Gauge, Key, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Counters and gauges of one node.
pub struct Metrics {
    handle: PrometheusHandle,
    /// WebSocket sessions accepted.
    pub connections_total: Counter,
    /// WebSocket sessions open now.
    pub connections: Gauge,
    /// Sessions that completed `hello`.
    pub sessions_authenticated: Counter,
    /// Messages accepted (acked).
    pub messages_in: Counter,
    /// Message events queued to subscribers (live fan-out).
    pub deliveries: Counter,
    /// Messages replayed on resume.
    pub replayed: Counter,
    /// Sessions closed because their outbound queue was full.
    pub slow_consumer_disconnects: Counter,
    /// Sessions closed because the peer stopped answering pings.
    pub heartbeat_timeouts: Counter,
    /// Sessions closed for missing the authentication deadline.
    pub auth_timeouts: Counter,
    /// `error` events sent for bad client input.
    pub client_errors: Counter,
    /// Storage operations that failed.
    pub storage_errors: Counter,
}

impl Metrics {
    /// A fresh set of metrics labelled with the node id.
    pub fn new(node_id: &str) -> Self {
        let recorder = PrometheusBuilder::new()
            .add_global_label("node", node_id)
            .build_recorder();
        let meta = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));
        let counter =
            |name: &'static str| recorder.register_counter(&Key::from_static_name(name), &meta);
        let gauge =
            |name: &'static str| recorder.register_gauge(&Key::from_static_name(name), &meta);
        Self {
            connections_total: counter("flowline_connections_total"),
            connections: gauge("flowline_connections"),
            sessions_authenticated: counter("flowline_sessions_authenticated_total"),
            messages_in: counter("flowline_messages_in_total"),
            deliveries: counter("flowline_deliveries_total"),
            replayed: counter("flowline_replayed_total"),
            slow_consumer_disconnects: counter("flowline_slow_consumer_disconnects_total"),
            heartbeat_timeouts: counter("flowline_heartbeat_timeouts_total"),
            auth_timeouts: counter("flowline_auth_timeouts_total"),
            client_errors: counter("flowline_client_errors_total"),
            storage_errors: counter("flowline_storage_errors_total"),
            handle: recorder.handle(),
        }
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}
