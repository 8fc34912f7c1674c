//! One-line JSON announcements that child processes print on stdout.
//!
//! A supervisor starts `flowline server --listen 127.0.0.1:0` (or `flowline loadgen`,
//! `flowline chaos serve`) and reads stdout line by line; lines that parse as
//! [`Announce`] tell it where the process listens. Anything else on stdout is ignored,
//! and logs go to stderr.

use serde::{Deserialize, Serialize};

/// A process announcing that it is ready.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Announce {
    /// A chat node is accepting connections.
    Listening {
        /// The node's id (`--node-id`).
        node_id: String,
        /// The bound address, e.g. `127.0.0.1:43121`.
        addr: String,
        /// Base URL of the HTTP API, e.g. `http://127.0.0.1:43121`.
        http: String,
        /// WebSocket URL, e.g. `ws://127.0.0.1:43121/ws`.
        ws: String,
        /// Prometheus metrics URL.
        metrics: String,
        /// Process id, so the supervisor can signal it.
        pid: u32,
        /// The interval of the node's WebSocket pings in ms (`--heartbeat-ms`), as the
        /// node applies it; absent from nodes older than this field.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        heartbeat_ms: Option<u64>,
    },
    /// A chaos controller is serving the Toxiproxy API.
    ChaosListening { api: String, pid: u32 },
    /// A loadgen worker (`flowline loadgen --metrics-listen ADDR`) is serving Prometheus
    /// metrics (`flowline_loadgen_*`, label `worker`).
    LoadgenMetrics {
        /// Shard index of the worker (the `worker` label).
        worker: u32,
        /// Prometheus metrics URL, e.g. `http://127.0.0.1:43122/metrics`.
        metrics: String,
        /// Process id.
        pid: u32,
    },
}

impl Announce {
    /// Parse one stdout line; `None` if it is not an announcement.
    pub fn parse(line: &str) -> Option<Self> {
        serde_json::from_str(line.trim()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listening_and_ignores_noise() {
        let a = Announce::Listening {
            node_id: "n1".into(),
            addr: "127.0.0.1:1".into(),
            http: "http://127.0.0.1:1".into(),
            ws: "ws://127.0.0.1:1/ws".into(),
            metrics: "http://127.0.0.1:1/metrics".into(),
            pid: 7,
            heartbeat_ms: Some(15_000),
        };
        let line = serde_json::to_string(&a).unwrap();
        assert!(line.contains(r#""event":"listening""#));
        assert_eq!(Announce::parse(&line), Some(a));
        // A node older than `heartbeat_ms` still parses.
        let old = r#"{"event":"listening","node_id":"n","addr":"a","http":"h","ws":"w","metrics":"m","pid":1}"#;
        assert!(matches!(
            Announce::parse(old),
            Some(Announce::Listening {
                heartbeat_ms: None,
                ..
            })
        ));
        assert_eq!(Announce::parse("hello"), None);
        let w = Announce::LoadgenMetrics {
            worker: 1,
            metrics: "http://127.0.0.1:2/metrics".into(),
            pid: 8,
        };
        let line = serde_json::to_string(&w).unwrap();
        assert!(line.contains(r#""event":"loadgen_metrics""#), "{line}");
        assert_eq!(Announce::parse(&line), Some(w));
    }
}
