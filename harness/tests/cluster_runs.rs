//! End-to-end runs of the cluster scenarios through the real `flowline` binary, against
//! the real Postgres and Redis (`DATABASE_URL`/`REDIS_URL`, default the local ones), with
//! the catalog files' faults moved earlier and durations shortened so each run takes
//! about 15 s:
//!
//! * `scenarios/partition-redis.toml`: phase `pubsub` loses messages (lost > 0, exit 1);
//!   `--phase queue` loses none (exit 0).
//! * `scenarios/node-crash.toml`: node2 killed and restarted, nothing lost or duplicated.
//!
//! Every run must leave no Redis key of its cluster behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.into())
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| DEFAULT_REDIS_URL.into())
}

/// The catalog scenario `name`, with `edit` applied, written into `dir`.
fn shortened(dir: &Path, name: &str, edit: impl FnOnce(&mut toml::Table)) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios")
        .join(format!("{name}.toml"));
    let text = std::fs::read_to_string(&path).unwrap();
    let mut table: toml::Table = toml::from_str(&text).unwrap();
    edit(&mut table);
    let out = dir.join(format!("{name}.toml"));
    std::fs::write(&out, toml::to_string(&table).unwrap()).unwrap();
    out
}

fn set(table: &mut toml::Table, section: &str, key: &str, value: impl Into<toml::Value>) {
    table
        .get_mut(section)
        .and_then(|s| s.as_table_mut())
        .unwrap_or_else(|| panic!("scenario has no [{section}]"))
        .insert(key.into(), value.into());
}

fn first_fault(table: &mut toml::Table) -> &mut toml::Table {
    table
        .get_mut("faults")
        .and_then(|f| f.as_array_mut())
        .and_then(|f| f.first_mut())
        .and_then(|f| f.as_table_mut())
        .expect("scenario has a fault")
}

/// `flowline run SCENARIO --out DIR [extra]` with the test services.
fn run(scenario: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowline"))
        .arg("run")
        .arg(scenario)
        .arg("--out")
        .arg(out)
        .args([
            "--database-url",
            &database_url(),
            "--redis-url",
            &redis_url(),
        ])
        .args(["--no-local-services"])
        .args(extra)
        .env("FLOWLINE_LOG", "warn")
        .env_remove("FLOWLINE_DATABASE_URL")
        .env_remove("FLOWLINE_REDIS_URL")
        .output()
        .unwrap()
}

/// The run folder written under `out`, and its summary (a run that wrote none fails the
/// test with its exit status and stderr: the reason is there).
fn summary(out: &Path, o: &Output) -> (PathBuf, serde_json::Value) {
    let dirs: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap_or_else(|e| {
            panic!(
                "no {} ({e}); the run exited with {}:\n{}",
                out.display(),
                o.status,
                stderr(o)
            )
        })
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(
        dirs.len(),
        1,
        "one run folder in {}: {dirs:?}; the run exited with {}:\n{}",
        out.display(),
        o.status,
        stderr(o)
    );
    let text = std::fs::read_to_string(dirs[0].join("summary.json")).unwrap_or_else(|e| {
        panic!(
            "no summary.json in {} ({e}); the run exited with {}:\n{}",
            dirs[0].display(),
            o.status,
            stderr(o)
        )
    });
    (dirs[0].clone(), serde_json::from_str(&text).unwrap())
}

/// Redis keys left under the run's cluster id (the run folder's name).
fn leftover_keys(run_dir: &Path) -> Vec<String> {
    let id = run_dir.file_name().unwrap().to_string_lossy().into_owned();
    let mut conn = redis::Client::open(redis_url())
        .unwrap()
        .get_connection()
        .unwrap_or_else(|e| {
            panic!(
                "Redis is not reachable at {} ({e}); start redis-server or set REDIS_URL",
                redis_url()
            )
        });
    redis::cmd("KEYS")
        .arg(format!("flowline:{id}:*"))
        .query(&mut conn)
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn count(summary: &serde_json::Value, key: &str) -> u64 {
    summary["correctness"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("summary has no correctness.{key}: {summary}"))
}

/// partition-redis, node2 cut from Redis from 2 s to 6 s of a 9 s run.
fn partition_redis(phase: &str) -> (Output, PathBuf, serde_json::Value) {
    let tmp = tempfile::tempdir().unwrap();
    let scenario = shortened(tmp.path(), "partition-redis", |t| {
        set(t, "run", "duration", "9s");
        set(t, "run", "warmup", "1s");
        set(t, "run", "drain", "3s");
        set(t, "population", "users", 200);
        // Fewer users: raise their rate so the cut still sees a few hundred messages.
        let persona = t["personas"].as_array_mut().unwrap()[0]
            .as_table_mut()
            .unwrap();
        persona.insert("messages_per_minute".into(), 30.0.into());
        let fault = first_fault(t);
        fault.insert("at".into(), "2s".into());
        fault.insert("duration".into(), "4s".into());
    });
    let out = tmp.path().join("runs");
    let o = run(&scenario, &out, &["--phase", phase]);
    let (dir, s) = summary(&out, &o);
    assert!(leftover_keys(&dir).is_empty(), "Redis keys left behind");
    (o, dir, s)
}

#[test]
fn partition_redis_pubsub_loses_messages() {
    let (o, _dir, s) = partition_redis("pubsub");
    assert!(count(&s, "acked") > 100, "{s}");
    assert!(count(&s, "lost") > 0, "pubsub lost nothing: {}", stderr(&o));
    assert_eq!(
        o.status.code(),
        Some(1),
        "the lost == 0 threshold fails: {}",
        stderr(&o)
    );
}

#[test]
fn partition_redis_queue_loses_nothing() {
    let (o, _dir, s) = partition_redis("queue");
    assert!(count(&s, "acked") > 100, "{s}");
    assert_eq!(count(&s, "lost"), 0, "{}", stderr(&o));
    assert_eq!(count(&s, "duplicated"), 0);
    assert_eq!(count(&s, "reordered"), 0);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn node_crash_queue_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let scenario = shortened(tmp.path(), "node-crash", |t| {
        set(t, "run", "duration", "9s");
        set(t, "run", "warmup", "1s");
        set(t, "run", "drain", "3s");
        set(t, "population", "users", 150);
        let persona = t["personas"].as_array_mut().unwrap()[0]
            .as_table_mut()
            .unwrap();
        persona.insert("messages_per_minute".into(), 30.0.into());
        let fault = first_fault(t);
        fault.insert("at".into(), "2s".into());
        fault.insert("restart_after".into(), "3s".into());
    });
    let out = tmp.path().join("runs");
    let o = run(&scenario, &out, &[]);
    let (dir, s) = summary(&out, &o);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(count(&s, "acked") > 100, "{s}");
    assert!(
        s["totals"]["reconnects"].as_u64().unwrap_or(0) > 0,
        "node2's users reconnected elsewhere: {s}"
    );
    assert_eq!(count(&s, "lost"), 0);
    assert_eq!(count(&s, "duplicated"), 0);
    let events = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
    assert!(events.contains("node2"), "{events}");
    assert!(leftover_keys(&dir).is_empty(), "Redis keys left behind");
}
