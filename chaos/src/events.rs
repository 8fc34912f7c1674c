//! `events.jsonl`: one JSON object per line for every fault injected or healed and every
//! node event, shared by the fault schedule and the harness.
//!
//! ```json
//! {"ts":"2026-11-28T03:12:01.250Z","t_ms":10000,"action":"inject","kind":"latency",
//!  "target":["client-node1","client-node2"],"label":"latency client-node*",
//!  "params":{"latency_ms":100,"jitter_ms":10,"stream":"downstream"}}
//! ```
//!
//! Each line is written and flushed on its own, so a crash leaves a valid file.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// One line of events.jsonl.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Wall-clock time, RFC 3339 with milliseconds, UTC.
    pub ts: String,
    /// Milliseconds since the log's start instant (negative before it, e.g. node starts).
    pub t_ms: i64,
    /// `inject` or `heal` for faults; `start`, `kill`, `restart`, `exit`, ... for nodes.
    pub action: String,
    /// Fault kind (`latency`, `down`, `kill`, ...) or `node`.
    pub kind: String,
    /// Resolved targets: proxy names or node ids.
    pub target: Vec<String>,
    /// Human label (the fault's label).
    pub label: String,
    /// Parameters (fault parameters, pid, ...).
    pub params: Value,
}

#[derive(Debug)]
struct Inner {
    path: Option<PathBuf>,
    file: Mutex<Option<File>>,
    memory: Mutex<Vec<Event>>,
    start: Instant,
}

/// A shared, cloneable events.jsonl writer. Also keeps every event in memory.
#[derive(Debug, Clone)]
pub struct EventLog {
    inner: Arc<Inner>,
}

impl EventLog {
    /// Append to (or create) `path`; `t_ms` counts from `start`.
    pub fn create(path: &Path, start: Instant) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| Error::Events {
                path: path.display().to_string(),
                source,
            })?;
        Ok(EventLog {
            inner: Arc::new(Inner {
                path: Some(path.to_path_buf()),
                file: Mutex::new(Some(file)),
                memory: Mutex::new(Vec::new()),
                start,
            }),
        })
    }

    /// A log kept in memory only.
    pub fn in_memory(start: Instant) -> Self {
        EventLog {
            inner: Arc::new(Inner {
                path: None,
                file: Mutex::new(None),
                memory: Mutex::new(Vec::new()),
                start,
            }),
        }
    }

    /// The instant `t_ms` counts from.
    pub fn start(&self) -> Instant {
        self.inner.start
    }

    /// Record one event now.
    pub fn record(
        &self,
        action: &str,
        kind: &str,
        target: Vec<String>,
        label: &str,
        params: Value,
    ) -> Result<Event> {
        let now = Instant::now();
        let t_ms = if now >= self.inner.start {
            (now - self.inner.start).as_millis() as i64
        } else {
            -((self.inner.start - now).as_millis() as i64)
        };
        let event = Event {
            ts: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            t_ms,
            action: action.to_string(),
            kind: kind.to_string(),
            target,
            label: label.to_string(),
            params,
        };
        self.write(&event)?;
        Ok(event)
    }

    /// Record a node event (`start`, `kill`, `restart`, `exit`, ...).
    pub fn node_event(&self, action: &str, node_id: &str, params: Value) -> Result<Event> {
        self.record(action, "node", vec![node_id.to_string()], node_id, params)
    }

    fn write(&self, event: &Event) -> Result<()> {
        self.inner.memory.lock().push(event.clone());
        let mut file = self.inner.file.lock();
        if let Some(f) = file.as_mut() {
            let mut line = serde_json::to_vec(event).map_err(std::io::Error::other)?;
            line.push(b'\n');
            f.write_all(&line)
                .and_then(|()| f.flush())
                .map_err(|source| Error::Events {
                    path: self
                        .inner
                        .path
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    source,
                })?;
        }
        Ok(())
    }

    /// Every event recorded through this log so far.
    pub fn events(&self) -> Vec<Event> {
        self.inner.memory.lock().clone()
    }
}
