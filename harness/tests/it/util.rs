//! Helpers shared by the integration tests: the real binary, a synthetic run folder, and
//! a look at the process table.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use hdrhistogram::Histogram;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};

/// The `flowline` binary under test.
pub fn flowline() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flowline"));
    c.env("FLOWLINE_LOG", "warn")
        .env_remove("FLOWLINE_DATABASE_URL")
        .env_remove("FLOWLINE_REDIS_URL")
        .env_remove("FLOWLINE_NO_LOCAL_SERVICES");
    c
}

/// Run it and return its output.
pub fn run(args: &[&str], cwd: &Path) -> Output {
    flowline().args(args).current_dir(cwd).output().unwrap()
}

/// stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A scenario file with a given extra tail (thresholds, faults).
pub fn write_scenario(
    dir: &Path,
    name: &str,
    users: u32,
    duration: &str,
    tail: &str,
) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[run]\nname = \"{name}\"\nduration = \"{duration}\"\nwarmup = \"1s\"\ndrain = \"1s\"\nseed = 7\n\n[cluster]\nphase = \"single\"\nnodes = 1\n\n[population]\nusers = {users}\n{tail}"
        ),
    )
    .unwrap();
    path
}

/// A run folder as `flowline run` writes it, with made-up but consistent numbers:
/// 30 s, a latency fault from 10 s to 15 s, node events, four latency metrics.
pub fn synthetic_run(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("scenario.toml"),
        "[run]\nname = \"synthetic\"\nduration = \"30s\"\nseed = 42\n\n[cluster]\nphase = \"single\"\nnodes = 1\n\n[population]\nusers = 1000\n",
    )
    .unwrap();
    let start_ms: i64 = 1_796_000_000_000;
    let started = chrono::DateTime::from_timestamp_millis(start_ms).unwrap();
    let summary = serde_json::json!({
        "passed": false,
        "scenario": "synthetic",
        "seed": 42,
        "meta": {"started_at": started.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                 "phase": "single", "nodes": 1, "revision": "abc1234"},
        "workers": 1, "workers_done": 1, "measured_s": 30.0,
        "measured": {"sent": 29000, "acked": 29000, "delivered": 1400000, "connects": 1000,
                     "disconnects": 0, "reconnects": 0, "history": 0, "errors": 3},
        "totals": {"sent": 30000, "acked": 30000, "delivered": 1450000, "connects": 1000,
                   "disconnects": 2, "reconnects": 2, "history": 0, "errors": 3},
        "peak_users": 1000, "sends_per_s": 1000.0, "deliveries_per_s": 48000.0,
        "latency_us": {"delivery": {"count": 1450000, "min": 200, "p50": 1500, "p90": 4000,
                       "p99": 110000, "p999": 130000, "p9999": 140000, "max": 150000, "mean": 9000.0}},
        "correctness": {"acked": 30000, "expected": 1450010, "delivered": 1450000, "lost": 10,
                        "duplicated": 0, "reordered": 0, "gaps": 0, "channels": {},
                        "offenders": [{"channel": "c1", "seq": 17, "message": "m17", "recipient": "u3", "kind": "lost"}]},
        "thresholds": [
            {"expr": "delivery.p99 < 250ms", "actual": 110000.0, "passed": true},
            {"expr": "lost == 0", "actual": 10.0, "passed": false}
        ]
    });
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_string_pretty(&summary).unwrap(),
    )
    .unwrap();
    let mut csv = String::from(
        "t_s,measuring,users,sent,acked,delivered,errors,disconnects,reconnects,delivery_p50_us,delivery_p99_us,ack_p99_us\n",
    );
    for t in 1..=32u64 {
        let fault = (11..=15).contains(&t);
        let users = (t * 400).min(1000);
        let p99 = if fault { 110_000 } else { 9_000 + t * 50 };
        csv.push_str(&format!(
            "{t},{},{users},1000,1000,48000,{},0,0,{},{p99},{}\n",
            u8::from(t > 1),
            u64::from(t == 12) * 3,
            if fault { 101_000 } else { 1_500 },
            if fault { 105_000 } else { 2_000 }
        ));
    }
    std::fs::write(dir.join("timeline.csv"), csv).unwrap();
    let ev = |t_ms: i64, action: &str, kind: &str, target: &str, label: &str| {
        let ts = chrono::DateTime::from_timestamp_millis(start_ms + t_ms).unwrap();
        serde_json::json!({"ts": ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "t_ms": t_ms, "action": action, "kind": kind, "target": [target],
            "label": label, "params": {}})
        .to_string()
    };
    let events = [
        ev(-800, "start", "node", "node1", "node1"),
        ev(
            10_000,
            "inject",
            "latency",
            "client-node1",
            "latency client-node*",
        ),
        ev(
            15_000,
            "heal",
            "latency",
            "client-node1",
            "latency client-node*",
        ),
        ev(31_500, "stop", "node", "node1", "node1"),
    ];
    std::fs::write(dir.join("events.jsonl"), events.join("\n") + "\n").unwrap();
    let mut buf = Vec::new();
    let mut ser = V2DeflateSerializer::new();
    {
        let mut w = IntervalLogWriterBuilder::new()
            .begin_log_with(&mut buf, &mut ser)
            .unwrap();
        for t in 0..30u64 {
            for (tag, base) in [
                ("connect", 800u64),
                ("hello", 400),
                ("ack", 900),
                ("delivery", 1200),
            ] {
                let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
                for i in 0..500u64 {
                    let mut v = base + (i * i) % 3000;
                    if (10..15).contains(&t) && tag != "connect" {
                        v += 100_000;
                    }
                    h.record(v).unwrap();
                }
                w.write_histogram(
                    &h,
                    Duration::from_secs(t),
                    Duration::from_secs(1),
                    Tag::new(tag),
                )
                .unwrap();
            }
        }
    }
    std::fs::write(dir.join("histograms.hlog"), buf).unwrap();
}

/// Whether a pid is running (not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Pids of running processes whose environment holds `FLOWLINE_TEST_MARK=<mark>`: every
/// process a test's harness started, however deep, even once reparented to init.
pub fn marked_processes(mark: &str) -> Vec<u32> {
    let needle = format!("FLOWLINE_TEST_MARK={mark}");
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|&p| p != me && alive(p))
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

/// A unique marker for [`marked_processes`].
pub fn new_mark() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// The single run folder created under `out`.
pub fn only_run_dir(out: &Path) -> std::path::PathBuf {
    let dirs: Vec<_> = std::fs::read_dir(out)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(
        dirs.len(),
        1,
        "expected one run folder in {}: {dirs:?}",
        out.display()
    );
    dirs[0].clone()
}
