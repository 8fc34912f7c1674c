//! The run's Prometheus endpoints (chaos controller, nodes, workers), written to
//! `metrics-targets.json` in Prometheus' file_sd format as they come up.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::json;

/// The metrics URL of a worker's `loadgen_metrics` announcement line, if it is one.
pub fn worker_metrics_url(line: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
    if v.get("event")?.as_str()? != "loadgen_metrics" {
        return None;
    }
    Some(v.get("metrics")?.as_str()?.to_string())
}

/// The run's Prometheus endpoints, written to `metrics-targets.json` in Prometheus'
/// file_sd format (`[{"targets": ["host:port"], "labels": {..}}]`), so a Prometheus can
/// scrape a local run with `file_sd_configs: [{files: [runs/*/metrics-targets.json]}]`.
pub struct MetricsTargets {
    path: PathBuf,
    run: String,
    host: Option<String>,
    /// (name, job, url)
    entries: Vec<(String, String, String)>,
}

/// The file listing a run's metrics endpoints (Prometheus file_sd format).
pub const METRICS_TARGETS_FILE: &str = "metrics-targets.json";

impl MetricsTargets {
    /// An empty list for the run folder `dir`. With `host`, the URLs' hosts are replaced
    /// by it (endpoints listening on every interface, scraped from another machine).
    pub fn new(dir: &Path, run: &str, host: Option<&str>) -> Self {
        MetricsTargets {
            path: dir.join(METRICS_TARGETS_FILE),
            run: run.to_string(),
            host: host.map(str::to_string),
            entries: Vec::new(),
        }
    }

    /// Add (or replace) the endpoint of `name` (`node1`, `worker2`, `chaos`).
    pub fn add(&mut self, name: &str, job: &str, url: &str) {
        let mut url = url.to_string();
        if let (Some(h), Ok(mut u)) = (&self.host, url::Url::parse(&url))
            && u.set_host(Some(h)).is_ok()
        {
            url = u.to_string();
        }
        self.entries.retain(|e| e.0 != name);
        self.entries.push((name.to_string(), job.to_string(), url));
    }

    /// The URL added last.
    pub fn last_url(&self) -> &str {
        self.entries.last().map_or("", |e| e.2.as_str())
    }

    /// The file_sd document.
    pub fn to_json(&self) -> serde_json::Value {
        let groups: Vec<serde_json::Value> = self
            .entries
            .iter()
            .filter_map(|(name, job, url)| {
                let u = url::Url::parse(url).ok()?;
                let target = format!("{}:{}", u.host_str()?, u.port_or_known_default()?);
                Some(json!({
                    "targets": [target],
                    "labels": {
                        "job": job,
                        "instance_name": name,
                        "flowline_run": self.run,
                        "__metrics_path__": u.path(),
                    }
                }))
            })
            .collect();
        serde_json::Value::Array(groups)
    }

    /// Write the file (atomically: Prometheus may read it at any moment).
    pub fn write(&self) -> anyhow::Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(&self.to_json())?;
        std::fs::write(&tmp, text + "\n")
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("cannot write {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_targets_are_file_sd() {
        let d = tempfile::tempdir().unwrap();
        let mut t = MetricsTargets::new(d.path(), "r1", None);
        t.add("chaos", "flowline-chaos", "http://127.0.0.1:9/metrics");
        t.add("node1", "flowline-node", "http://127.0.0.1:10/metrics");
        t.add("node1", "flowline-node", "http://127.0.0.1:11/metrics");
        t.write().unwrap();
        let v: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(d.path().join(METRICS_TARGETS_FILE)).unwrap(),
        )
        .unwrap();
        assert_eq!(v.as_array().unwrap().len(), 2);
        assert_eq!(v[1]["targets"][0], "127.0.0.1:11");
        assert_eq!(v[1]["labels"]["job"], "flowline-node");
        assert_eq!(v[1]["labels"]["__metrics_path__"], "/metrics");
        let mut t = MetricsTargets::new(d.path(), "r1", Some("loadtest"));
        t.add("worker1", "flowline-loadgen", "http://0.0.0.0:12/metrics");
        assert_eq!(t.last_url(), "http://loadtest:12/metrics");
        assert_eq!(
            worker_metrics_url(
                r#"{"event":"loadgen_metrics","worker":0,"metrics":"http://127.0.0.1:5/metrics","pid":3}"#
            ),
            Some("http://127.0.0.1:5/metrics".into())
        );
        assert_eq!(worker_metrics_url(r#"{"t":1}"#), None);
    }
}
