//! The node's Prometheus metrics (`GET /metrics`, `flowline_` prefix).
//!
//! Each node owns its own `PrometheusRecorder` and registers its counters on it directly
//! instead of installing a process-global recorder: tests run several nodes in one
//! process, and a global recorder would mix their numbers (and can be installed once).
//! The handles are plain atomics, so the hot path costs one relaxed add.

use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Histogram buckets, seconds: 100 µs to 10 s, covering a local fan-out as well as a
/// bus lag during a Redis outage's catch-up.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// `# HELP` text of every metric (Prometheus linters, `promtool check metrics`, want one).
const HELP: &[(&str, &str)] = &[
    ("flowline_connections_total", "WebSocket sessions accepted"),
    ("flowline_connections", "WebSocket sessions open now"),
    (
        "flowline_sessions_authenticated_total",
        "Sessions that completed hello",
    ),
    ("flowline_messages_in_total", "Messages accepted (acked)"),
    (
        "flowline_deliveries_total",
        "Message events queued to local subscribers",
    ),
    ("flowline_replayed_total", "Messages replayed on resume"),
    (
        "flowline_slow_consumer_disconnects_total",
        "Sessions closed because their outbound queue was full",
    ),
    (
        "flowline_heartbeat_timeouts_total",
        "Sessions closed because the peer stopped answering pings",
    ),
    (
        "flowline_auth_timeouts_total",
        "Sessions closed for missing the authentication deadline",
    ),
    (
        "flowline_client_errors_total",
        "Error events sent for bad client input",
    ),
    (
        "flowline_storage_errors_total",
        "Storage operations that failed",
    ),
    (
        "flowline_fanout_seconds",
        "Local fan-out time of one message, seconds",
    ),
    (
        "flowline_storage_seconds",
        "Storage operation time by op, seconds",
    ),
    (
        "flowline_outbound_queued",
        "Frames queued across every session's outbound queue",
    ),
    (
        "flowline_bus_published_total",
        "Envelopes this node put on the cluster bus",
    ),
    (
        "flowline_bus_received_total",
        "Envelopes of other nodes received from the bus",
    ),
    (
        "flowline_bus_lag_seconds",
        "Publish to receive time of envelopes from other nodes, seconds",
    ),
    (
        "flowline_bus_reconnects_total",
        "Times a bus connection was re-established",
    ),
    (
        "flowline_db_pool_wait_seconds",
        "Wait for a Postgres pool connection by pool (send: message appends; other: everything else), seconds",
    ),
    (
        "flowline_db_append_statements_total",
        "Statements that committed message appends (group commit: appends per statement = flowline_messages_in_total / this)",
    ),
    (
        "flowline_bus_undelivered_total",
        "Messages this node could not publish, or missed",
    ),
    (
        "flowline_bus_gap_fills_total",
        "Messages read from Postgres to close a seq gap on the bus",
    ),
    (
        "flowline_rate_limited_total",
        "Chat actions refused by a rate limit (HTTP 429, WebSocket rate_limited)",
    ),
    (
        "flowline_idempotent_replays_total",
        "HTTP answers replayed for a repeated Idempotency-Key",
    ),
];

/// Counters, gauges and histograms of one node.
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
    /// Local fan-out time of one message (queueing it to every local subscriber), seconds.
    pub fanout_seconds: Histogram,
    /// Time of a message append (`flowline_storage_seconds{op="append"}`), seconds.
    pub storage_append_seconds: Histogram,
    /// Time of a message range read (`{op="messages"}`: resume replay, bus gap fill).
    pub storage_messages_seconds: Histogram,
    /// Wait for a connection of the `send` pool (message appends), seconds.
    pub db_pool_wait_send: Histogram,
    /// Wait for a connection of the `other` pool (everything but appends), seconds.
    pub db_pool_wait_other: Histogram,
    /// Statements that committed a batch of message appends (Postgres storage).
    pub db_append_statements: Counter,
    /// Frames queued across every session's outbound queue, not yet taken by its writer.
    pub outbound_queued: Gauge,
    /// Envelopes (messages and events) this node put on the cluster bus.
    pub bus_published: Counter,
    /// Envelopes of other nodes this node received from the bus.
    pub bus_received: Counter,
    /// Publish → receive time of envelopes from other nodes, seconds.
    pub bus_lag_seconds: Histogram,
    /// Times a bus connection (publisher, subscriber/reader, presence) was re-established.
    pub bus_reconnects: Counter,
    /// Messages this node could not publish, or missed (a seq gap it could not fill).
    pub bus_undelivered: Counter,
    /// Messages read from Postgres to close a seq gap (`queue`; `pubsub` when late, not lost).
    pub bus_gap_fills: Counter,
    /// Chat actions refused by a rate limit (HTTP 429 or WebSocket `rate_limited`).
    pub rate_limited: Counter,
    /// Answers replayed for a repeated `Idempotency-Key`.
    pub idempotent_replays: Counter,
}

impl Metrics {
    /// A fresh set of metrics labelled with the node id.
    pub fn new(node_id: &str) -> Self {
        let recorder = PrometheusBuilder::new()
            .add_global_label("node", node_id)
            .set_buckets(BUCKETS)
            .expect("the bucket list is not empty")
            .build_recorder();
        for (name, help) in HELP {
            // The exporter keeps one description per name, whatever the kind.
            recorder.describe_counter((*name).into(), None, (*help).into());
        }
        let meta = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));
        let counter =
            |name: &'static str| recorder.register_counter(&Key::from_static_name(name), &meta);
        let gauge =
            |name: &'static str| recorder.register_gauge(&Key::from_static_name(name), &meta);
        let histogram = |name: &'static str, labels: Vec<Label>| {
            recorder.register_histogram(&Key::from_parts(name, labels), &meta)
        };
        let storage = |op: &'static str| {
            histogram(
                "flowline_storage_seconds",
                vec![Label::from_static_parts("op", op)],
            )
        };
        let pool_wait = |pool: &'static str| {
            histogram(
                "flowline_db_pool_wait_seconds",
                vec![Label::from_static_parts("pool", pool)],
            )
        };
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
            fanout_seconds: histogram("flowline_fanout_seconds", Vec::new()),
            storage_append_seconds: storage("append"),
            storage_messages_seconds: storage("messages"),
            db_pool_wait_send: pool_wait("send"),
            db_pool_wait_other: pool_wait("other"),
            db_append_statements: counter("flowline_db_append_statements_total"),
            outbound_queued: gauge("flowline_outbound_queued"),
            bus_published: counter("flowline_bus_published_total"),
            bus_received: counter("flowline_bus_received_total"),
            bus_lag_seconds: histogram("flowline_bus_lag_seconds", Vec::new()),
            bus_reconnects: counter("flowline_bus_reconnects_total"),
            bus_undelivered: counter("flowline_bus_undelivered_total"),
            bus_gap_fills: counter("flowline_bus_gap_fills_total"),
            rate_limited: counter("flowline_rate_limited_total"),
            idempotent_replays: counter("flowline_idempotent_replays_total"),
            handle: recorder.handle(),
        }
    }

    /// Fold histogram samples into their buckets. Samples are kept raw until this runs
    /// (or a scrape renders them), so the node calls it periodically whether or not
    /// anyone scrapes.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}
