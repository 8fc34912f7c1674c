//! Reading a finished run folder (DESIGN.md's contract): summary.json, timeline.csv,
//! events.jsonl, histograms.hlog and scenario.toml. Reports, `compare` and `replay` read
//! runs only through this module, never through the live run's memory.
//!
//! The readers are tolerant by design: columns are found by name, unknown fields are kept,
//! and a missing optional file leaves its part empty, so an older or newer run still reports.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use serde_json::Value;

/// One row per second of the run: column names and numeric values (NaN when empty).
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// Header names, as written.
    pub columns: Vec<String>,
    /// Rows of values, one per column.
    pub rows: Vec<Vec<f64>>,
}

impl Timeline {
    /// Parse CSV text with a header line. Non-numeric cells become NaN.
    pub fn parse(text: &str) -> Self {
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let columns: Vec<String> = match lines.next() {
            Some(h) => h.split(',').map(|c| c.trim().to_string()).collect(),
            None => return Self::default(),
        };
        let rows = lines
            .map(|l| {
                l.split(',')
                    .map(|c| c.trim().parse::<f64>().unwrap_or(f64::NAN))
                    .collect()
            })
            .collect();
        Self { columns, rows }
    }

    /// Index of the first column whose name is one of `names` (exact, case-insensitive).
    pub fn col(&self, names: &[&str]) -> Option<usize> {
        names
            .iter()
            .find_map(|n| self.columns.iter().position(|c| c.eq_ignore_ascii_case(n)))
    }

    /// The time (seconds) of every row: the `t`/`second`/`elapsed` column, or the row index.
    pub fn times(&self) -> Vec<f64> {
        match self.col(&[
            "t",
            "t_s",
            "second",
            "seconds",
            "elapsed",
            "elapsed_s",
            "time",
        ]) {
            Some(i) => self.rows.iter().map(|r| cell(r, i)).collect(),
            None => (0..self.rows.len()).map(|i| i as f64).collect(),
        }
    }

    /// (time, value) points of column `i`.
    pub fn points(&self, i: usize) -> Vec<(f64, f64)> {
        self.times()
            .into_iter()
            .zip(self.rows.iter().map(|r| cell(r, i)))
            .filter(|(_, v)| v.is_finite())
            .collect()
    }
}

fn cell(row: &[f64], i: usize) -> f64 {
    row.get(i).copied().unwrap_or(f64::NAN)
}

/// One line of events.jsonl, with its time on the run's clock (seconds from the start of
/// measurement) when it could be worked out.
#[derive(Debug, Clone)]
pub struct Event {
    /// Seconds from the start of measurement.
    pub t: Option<f64>,
    /// The event's kind (`inject`, `heal`, `node_start`, `node_kill`...).
    pub kind: String,
    /// Human label (fault label, node id).
    pub label: String,
    /// The line as parsed.
    pub raw: Value,
}

impl Event {
    /// Parse one JSON line; `start_ms` is the run's start (unix ms) when known, used for
    /// events that carry absolute timestamps only.
    pub fn parse(line: &str, start_ms: Option<f64>) -> Option<Self> {
        let raw: Value = serde_json::from_str(line.trim()).ok()?;
        let obj = raw.as_object()?;
        let s = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_string);
        let kind = s("event")
            .or_else(|| s("action"))
            .or_else(|| s("kind"))
            .or_else(|| s("type"))
            .unwrap_or_default();
        let label = s("label")
            .or_else(|| s("fault"))
            .or_else(|| {
                let k = s("kind").or_else(|| s("fault_kind"));
                let t = s("target").or_else(|| s("node_id")).or_else(|| s("node"));
                match (k, t) {
                    (Some(k), Some(t)) if k != kind => Some(format!("{k} {t}")),
                    (_, Some(t)) => Some(t),
                    (Some(k), None) => Some(k),
                    _ => None,
                }
            })
            .unwrap_or_default();
        let rel = ["t", "elapsed", "elapsed_s", "offset_s", "run_s", "at_s"]
            .iter()
            .find_map(|k| obj.get(*k).and_then(Value::as_f64))
            .or_else(|| {
                ["elapsed_ms", "offset_ms", "run_ms", "at_ms", "t_ms"]
                    .iter()
                    .find_map(|k| obj.get(*k).and_then(Value::as_f64))
                    .map(|ms| ms / 1000.0)
            })
            .or_else(|| {
                ["at", "elapsed", "offset"].iter().find_map(|k| {
                    obj.get(*k)
                        .and_then(Value::as_str)
                        .and_then(|v| humantime::parse_duration(v).ok())
                        .map(|d| d.as_secs_f64())
                })
            });
        let abs = || {
            let ms = ["ts_ms", "unix_ms", "time_ms", "timestamp_ms"]
                .iter()
                .find_map(|k| obj.get(*k).and_then(Value::as_f64))
                .or_else(|| {
                    ["ts", "time", "timestamp"].iter().find_map(|k| {
                        let v = obj.get(*k)?;
                        v.as_f64().or_else(|| {
                            chrono::DateTime::parse_from_rfc3339(v.as_str()?)
                                .ok()
                                .map(|d| d.timestamp_millis() as f64)
                        })
                    })
                })?;
            Some((ms - start_ms?) / 1000.0)
        };
        // Wall-clock times are on the same clock as the run's start (summary.json), so they
        // win over offsets whose zero may be another instant (e.g. the events log's start).
        Some(Self {
            t: abs().or(rel),
            kind,
            label,
            raw,
        })
    }

    /// Whether this event injects a fault.
    pub fn is_inject(&self) -> bool {
        matches!(self.kind.as_str(), "inject" | "injected" | "fault_inject")
    }

    /// Whether this event heals a fault.
    pub fn is_heal(&self) -> bool {
        matches!(self.kind.as_str(), "heal" | "healed" | "fault_heal")
    }
}

/// A fault's window on the run's clock.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultWindow {
    /// Injection time (s).
    pub start: f64,
    /// Heal time (s); the run's end if never healed.
    pub end: f64,
    /// The fault's label.
    pub label: String,
}

/// Everything a report needs from one run folder.
#[derive(Debug, Clone)]
pub struct RunFolder {
    /// The folder.
    pub dir: PathBuf,
    /// summary.json.
    pub summary: Value,
    /// timeline.csv (empty if missing).
    pub timeline: Timeline,
    /// events.jsonl (empty if missing).
    pub events: Vec<Event>,
    /// Merged histogram per tag of histograms.hlog (µs values), over the measured window
    /// (the intervals timeline.csv flags `measuring`; every interval if it has no flags;
    /// the whole run for a metric with no sample in the window).
    pub histograms: BTreeMap<String, Histogram<u64>>,
    /// Per-second percentiles per tag of histograms.hlog, whole run.
    pub intervals: BTreeMap<String, Vec<IntervalStats>>,
    /// scenario.toml as written.
    pub scenario_toml: Option<String>,
}

impl RunFolder {
    /// Read a run folder; summary.json is required, the rest optional.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        if !dir.is_dir() {
            bail!("{} is not a run folder (no such directory)", dir.display());
        }
        let summary_path = dir.join("summary.json");
        let text = std::fs::read_to_string(&summary_path).with_context(|| {
            format!(
                "{} is not a finished run folder: cannot read {}",
                dir.display(),
                summary_path.display()
            )
        })?;
        let summary: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", summary_path.display()))?;
        let timeline = std::fs::read_to_string(dir.join("timeline.csv"))
            .map(|t| Timeline::parse(&t))
            .unwrap_or_default();
        let start_ms = start_unix_ms(&summary);
        let events = std::fs::read_to_string(dir.join("events.jsonl"))
            .map(|t| {
                t.lines()
                    .filter_map(|l| Event::parse(l, start_ms))
                    .collect()
            })
            .unwrap_or_default();
        let measuring = timeline.col(&["measuring"]).map(|i| {
            timeline
                .times()
                .into_iter()
                .zip(timeline.rows.iter().map(|r| cell(r, i)))
                .filter(|(_, m)| *m > 0.0)
                .map(|(t, _)| t.round() as u64)
                .collect::<Vec<u64>>()
        });
        let (histograms, intervals) = match std::fs::read(dir.join("histograms.hlog")) {
            Ok(bytes) => read_hlog(&bytes, measuring.as_deref())
                .with_context(|| format!("cannot read {}/histograms.hlog", dir.display()))?,
            Err(_) => (BTreeMap::new(), BTreeMap::new()),
        };
        let scenario_toml = std::fs::read_to_string(dir.join("scenario.toml")).ok();
        Ok(Self {
            dir: dir.to_path_buf(),
            summary,
            timeline,
            events,
            histograms,
            intervals,
            scenario_toml,
        })
    }

    /// The run's name for tables: its folder name.
    pub fn name(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.dir.display().to_string())
    }

    /// Last second of the timeline (or of the events).
    pub fn end_time(&self) -> f64 {
        let t = self.timeline.times().into_iter().fold(0.0, f64::max);
        self.events.iter().filter_map(|e| e.t).fold(t, f64::max)
    }

    /// Fault windows: each inject paired with the next heal of the same label.
    pub fn fault_windows(&self) -> Vec<FaultWindow> {
        let end = self.end_time();
        let mut open: Vec<FaultWindow> = Vec::new();
        let mut done = Vec::new();
        for e in &self.events {
            let Some(t) = e.t else { continue };
            if e.is_inject() {
                open.push(FaultWindow {
                    start: t,
                    end,
                    label: e.label.clone(),
                });
            } else if e.is_heal()
                && let Some(i) = open.iter().position(|w| w.label == e.label)
            {
                let mut w = open.remove(i);
                w.end = t;
                done.push(w);
            }
        }
        done.extend(open);
        done.sort_by(|a, b| a.start.total_cmp(&b.start));
        done
    }

    /// Events that are neither inject nor heal (nodes started, killed, restarted).
    pub fn other_events(&self) -> Vec<&Event> {
        self.events
            .iter()
            .filter(|e| e.t.is_some() && !e.is_inject() && !e.is_heal())
            .collect()
    }

    /// A value of summary.json by path (`a.b.c`).
    pub fn get(&self, path: &str) -> Option<&Value> {
        lookup(&self.summary, path)
    }

    /// The first of several paths that exists, as f64.
    pub fn num(&self, paths: &[&str]) -> Option<f64> {
        paths
            .iter()
            .find_map(|p| self.get(p).and_then(Value::as_f64))
    }

    /// The first of several paths that exists, as text.
    pub fn text(&self, paths: &[&str]) -> Option<String> {
        paths.iter().find_map(|p| {
            self.get(p).and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                Value::Bool(b) => Some(b.to_string()),
                _ => None,
            })
        })
    }

    /// Whether the run's users connected straight to the nodes (`--direct-clients`).
    pub fn direct_clients(&self) -> bool {
        self.get("meta.direct_clients")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// Whether the run passed (summary `passed`), if recorded.
    pub fn passed(&self) -> Option<bool> {
        ["passed", "pass", "ok"]
            .iter()
            .find_map(|p| self.get(p).and_then(Value::as_bool))
    }

    /// Percentile curve of a histogram tag: (quantile, value in ms) points.
    pub fn percentile_curve(&self, tag: &str) -> Vec<(f64, f64)> {
        self.histograms
            .get(tag)
            .map(percentile_curve)
            .unwrap_or_default()
    }
}

/// A value by dotted path.
pub fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

fn start_unix_ms(summary: &Value) -> Option<f64> {
    for p in [
        "meta.started_unix_ms",
        "meta.start_unix_ms",
        "started_unix_ms",
        "start_unix_ms",
        "meta.measure_start_unix_ms",
    ] {
        if let Some(v) = lookup(summary, p).and_then(Value::as_f64) {
            return Some(v);
        }
    }
    for p in ["meta.started_at", "started_at", "meta.start", "start"] {
        if let Some(d) = lookup(summary, p)
            .and_then(Value::as_str)
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        {
            return Some(d.timestamp_millis() as f64);
        }
    }
    None
}

/// Percentiles of one interval of the log, µs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IntervalStats {
    /// End of the interval, seconds from the log's base time (= timeline.csv's `t_s`).
    pub t: f64,
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest.
    pub max: u64,
}

/// Merged histogram per tag of the intervals whose end second is in `keep` (all when
/// `None`), and per-interval percentiles per tag (untagged entries go under `""`).
pub type Hlog = (
    BTreeMap<String, Histogram<u64>>,
    BTreeMap<String, Vec<IntervalStats>>,
);

/// Read an HdrHistogram interval log (V2 or V2-compressed entries).
pub fn read_hlog(bytes: &[u8], keep: Option<&[u64]>) -> anyhow::Result<Hlog> {
    let mut merged: BTreeMap<String, Histogram<u64>> = BTreeMap::new();
    let mut whole: BTreeMap<String, Histogram<u64>> = BTreeMap::new();
    let mut stats: BTreeMap<String, Vec<IntervalStats>> = BTreeMap::new();
    let mut de = Deserializer::new();
    for entry in IntervalLogIterator::new(bytes) {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => bail!("malformed interval log: {e:?}"),
        };
        let LogEntry::Interval(h) = entry else {
            continue;
        };
        let tag = h.tag().map(|t| t.as_str().to_string()).unwrap_or_default();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(h.encoded_histogram())
            .context("interval histogram is not base64")?;
        let hist: Histogram<u64> = de
            .deserialize(&mut raw.as_slice())
            .map_err(|e| anyhow::anyhow!("cannot decode interval histogram: {e:?}"))?;
        let end = (h.start_timestamp() + h.duration()).as_secs_f64();
        stats.entry(tag.clone()).or_default().push(IntervalStats {
            t: end,
            count: hist.len(),
            p50: hist.value_at_quantile(0.5),
            p90: hist.value_at_quantile(0.9),
            p99: hist.value_at_quantile(0.99),
            max: hist.max(),
        });
        merge_into(&mut whole, &tag, &hist)?;
        if keep.is_none_or(|k| k.contains(&(end.round() as u64))) {
            merge_into(&mut merged, &tag, &hist)?;
        }
    }
    // A metric recorded only outside the measured window (connects during warm-up) is
    // still worth its curve: use the whole run for it.
    for (tag, h) in whole {
        merged.entry(tag).or_insert(h);
    }
    Ok((merged, stats))
}

fn merge_into(
    map: &mut BTreeMap<String, Histogram<u64>>,
    tag: &str,
    h: &Histogram<u64>,
) -> anyhow::Result<()> {
    let acc = match map.entry(tag.to_string()) {
        std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::btree_map::Entry::Vacant(v) => {
            let mut acc = Histogram::<u64>::new(3).context("histogram")?;
            acc.auto(true);
            v.insert(acc)
        }
    };
    acc.add(h)
        .map_err(|e| anyhow::anyhow!("cannot merge histograms of {tag}: {e:?}"))
}

/// The percentile curve of a µs histogram as (quantile, ms), for the `1/(1-q)` axis.
pub fn percentile_curve(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut pts = Vec::new();
    // Denser towards the tail, as the HdrHistogram plotter does.
    let mut q: f64 = 0.0;
    while q < 0.99999 {
        pts.push((q, h.value_at_quantile(q) as f64 / 1000.0));
        let remaining = 1.0 - q;
        q += remaining / 8.0;
        if h.len() as f64 * (1.0 - q) < 1.0 {
            break;
        }
    }
    // The max sits at the last sample's quantile, capped where the axis ends.
    let last_q = (1.0 - 1.0 / h.len() as f64).max(q).min(0.99999);
    pts.push((last_q, h.max() as f64 / 1000.0));
    pts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_columns_by_name() {
        let t = Timeline::parse("t,users,p99_ms\n0,10,1.5\n1,20,\n2,30,2.5\n");
        assert_eq!(t.col(&["USERS"]), Some(1));
        assert_eq!(t.times(), vec![0.0, 1.0, 2.0]);
        assert_eq!(t.points(2), vec![(0.0, 1.5), (2.0, 2.5)]);
    }

    #[test]
    fn events_pair_into_windows() {
        let lines = [
            r#"{"t":1.0,"event":"node_start","node":"node1"}"#,
            r#"{"at":"5s","event":"inject","label":"latency client-node*"}"#,
            r#"{"ts_ms":1010000,"event":"heal","label":"latency client-node*"}"#,
            r#"{"t":12.0,"event":"inject","kind":"down","target":"node1-redis"}"#,
        ];
        let events: Vec<Event> = lines
            .iter()
            .filter_map(|l| Event::parse(l, Some(1_000_000.0)))
            .collect();
        assert_eq!(events.len(), 4);
        assert_eq!(events[0].label, "node1");
        let run = RunFolder {
            dir: PathBuf::from("x"),
            summary: Value::Null,
            timeline: Timeline::parse("t\n0\n20\n"),
            events,
            histograms: BTreeMap::new(),
            intervals: BTreeMap::new(),
            scenario_toml: None,
        };
        let w = run.fault_windows();
        assert_eq!(
            w,
            vec![
                FaultWindow {
                    start: 5.0,
                    end: 10.0,
                    label: "latency client-node*".into()
                },
                FaultWindow {
                    start: 12.0,
                    end: 20.0,
                    label: "down node1-redis".into()
                },
            ]
        );
        assert_eq!(run.other_events().len(), 1);
    }

    #[test]
    fn percentile_curve_of_a_large_histogram_ends_at_its_max() {
        let mut h = Histogram::<u64>::new(3).unwrap();
        h.record_n(1000, 5_000_000).unwrap();
        h.record(90_000).unwrap();
        let c = percentile_curve(&h);
        let (q, v) = *c.last().unwrap();
        assert!(q <= 0.99999 && (v - 90.0).abs() < 0.1, "{c:?}");
        assert!(c.windows(2).all(|w| w[0].0 <= w[1].0), "{c:?}");
    }

    #[test]
    fn hlog_round_trip_merges_by_tag() {
        use hdrhistogram::serialization::V2Serializer;
        use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
        let mut buf = Vec::new();
        let mut ser = V2Serializer::new();
        {
            let mut w = IntervalLogWriterBuilder::new()
                .begin_log_with(&mut buf, &mut ser)
                .unwrap();
            for i in 0..3u64 {
                let mut h = Histogram::<u64>::new(3).unwrap();
                h.record(1000 * (i + 1)).unwrap();
                let start = std::time::Duration::from_secs(i);
                let len = std::time::Duration::from_secs(1);
                w.write_histogram(&h, start, len, Tag::new("delivery"))
                    .unwrap();
                w.write_histogram(&h, start, len, Tag::new("ack")).unwrap();
            }
        }
        let (m, per_second) = read_hlog(&buf, None).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m["delivery"].len(), 3);
        assert_eq!(per_second["delivery"].len(), 3);
        assert_eq!(per_second["delivery"][2].t, 3.0);
        assert!((per_second["delivery"][2].p50 as f64 - 3000.0).abs() < 5.0);
        // Only the intervals ending at 2 s and 3 s (the "measured" ones).
        let (m, _) = read_hlog(&buf, Some(&[2, 3])).unwrap();
        assert_eq!(m["delivery"].len(), 2);
        let curve = percentile_curve(&m["delivery"]);
        assert!((curve.last().unwrap().1 - 3.0).abs() < 0.01, "{curve:?}");
    }
}
