//! Fault metrics of a chaos controller, for dashboards that show faults as annotations:
//!
//! - `flowline_chaos_active_faults{kind,target}` (gauge): faults in effect now — one per
//!   toxic of that type on the link, `kind="down"` while a link is disabled, and process
//!   faults (`kill`, `pause`) that a schedule reports on a node.
//! - `flowline_chaos_faults_total{kind,target}` (counter): faults injected so far.
//!
//! Each controller owns its own `PrometheusRecorder` (no process-global recorder: tests
//! and the harness run several controllers in one process). The active gauge is set from
//! the proxies' state when the page is rendered, so it cannot drift from what the proxies
//! really do, however a toxic was added or removed (API, schedule, reset, delete). Series
//! once seen stay on the page at 0, so a fault's end is a sample, not a vanished series.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use metrics::{Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use parking_lot::Mutex;

/// Gauge of faults in effect, by kind and target.
pub const ACTIVE_FAULTS: &str = "flowline_chaos_active_faults";
/// Counter of faults injected, by kind and target.
pub const FAULTS_TOTAL: &str = "flowline_chaos_faults_total";

/// `(kind, target)`.
pub(crate) type FaultKey = (String, String);

struct Inner {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// Every gauge key set so far (kept at 0 once healed).
    seen: Mutex<BTreeSet<FaultKey>>,
    /// Faults reported from outside the proxies (process faults, remote links).
    external: Mutex<BTreeMap<FaultKey, u64>>,
}

/// Fault counters of one controller; cheap to clone (clones share the numbers).
#[derive(Clone)]
pub struct FaultMetrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FaultMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultMetrics")
            .field("external", &*self.inner.external.lock())
            .finish()
    }
}

impl Default for FaultMetrics {
    fn default() -> Self {
        Self::new()
    }
}

fn meta() -> Metadata<'static> {
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()))
}

fn key(name: &'static str, kind: &str, target: &str) -> Key {
    Key::from_parts(
        name,
        vec![
            Label::new("kind", kind.to_string()),
            Label::new("target", target.to_string()),
        ],
    )
}

impl FaultMetrics {
    /// Fresh metrics with no faults.
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new().build_recorder();
        recorder.describe_gauge(
            ACTIVE_FAULTS.into(),
            None,
            "Faults in effect now (toxics of the kind on the link, disabled links, stopped or killed nodes)".into(),
        );
        recorder.describe_counter(
            FAULTS_TOTAL.into(),
            None,
            "Faults injected since start".into(),
        );
        let handle = recorder.handle();
        FaultMetrics {
            inner: Arc::new(Inner {
                recorder,
                handle,
                seen: Mutex::new(BTreeSet::new()),
                external: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// Count one injection of `kind` on `target`.
    pub fn count(&self, kind: &str, target: &str) {
        self.inner
            .recorder
            .register_counter(&key(FAULTS_TOTAL, kind, target), &meta())
            .increment(1);
        // Register the gauge too, so the series exists (at 0 once healed).
        self.inner
            .seen
            .lock()
            .insert((kind.to_string(), target.to_string()));
    }

    /// A fault applied outside this controller's proxies began (a process fault, or a
    /// link fault on a remote Toxiproxy): counted and active until [`Self::healed`].
    pub fn injected(&self, kind: &str, target: &str) {
        self.count(kind, target);
        *self
            .inner
            .external
            .lock()
            .entry((kind.to_string(), target.to_string()))
            .or_insert(0) += 1;
    }

    /// A fault reported with [`Self::injected`] ended.
    pub fn healed(&self, kind: &str, target: &str) {
        let mut ext = self.inner.external.lock();
        let k = (kind.to_string(), target.to_string());
        if let Some(n) = ext.get_mut(&k) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                ext.remove(&k);
            }
        }
    }

    /// Prometheus text, with the active gauge set from `local` (faults the controller's
    /// proxies hold now) plus the faults reported from outside.
    pub(crate) fn render(&self, local: &BTreeMap<FaultKey, u64>) -> String {
        let ext = self.inner.external.lock().clone();
        let mut seen = self.inner.seen.lock();
        seen.extend(local.keys().cloned());
        seen.extend(ext.keys().cloned());
        for k in seen.iter() {
            let n = local.get(k).copied().unwrap_or(0) + ext.get(k).copied().unwrap_or(0);
            self.inner
                .recorder
                .register_gauge(&key(ACTIVE_FAULTS, &k.0, &k.1), &meta())
                .set(n as f64);
        }
        drop(seen);
        self.inner.handle.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }

    #[test]
    fn external_faults_count_and_heal() {
        let m = FaultMetrics::new();
        m.injected("kill", "node2");
        m.injected("kill", "node2");
        let text = m.render(&BTreeMap::new());
        let active = "flowline_chaos_active_faults{kind=\"kill\",target=\"node2\"}";
        let total = "flowline_chaos_faults_total{kind=\"kill\",target=\"node2\"}";
        assert_eq!(value(&text, active), Some(2.0), "{text}");
        assert_eq!(value(&text, total), Some(2.0), "{text}");
        m.healed("kill", "node2");
        m.healed("kill", "node2");
        m.healed("kill", "node2"); // one too many: stays at 0
        let text = m.render(&BTreeMap::new());
        assert_eq!(value(&text, active), Some(0.0), "{text}");
        assert_eq!(value(&text, total), Some(2.0), "{text}");
    }

    #[test]
    fn local_faults_come_from_the_state_given() {
        let m = FaultMetrics::new();
        let mut local = BTreeMap::new();
        local.insert(("latency".to_string(), "client-node1".to_string()), 2);
        let text = m.render(&local);
        assert_eq!(
            value(
                &text,
                "flowline_chaos_active_faults{kind=\"latency\",target=\"client-node1\"}"
            ),
            Some(2.0),
            "{text}"
        );
        assert!(
            text.contains("# TYPE flowline_chaos_active_faults gauge"),
            "{text}"
        );
        let text = m.render(&BTreeMap::new());
        assert_eq!(
            value(
                &text,
                "flowline_chaos_active_faults{kind=\"latency\",target=\"client-node1\"}"
            ),
            Some(0.0),
            "{text}"
        );
    }
}
