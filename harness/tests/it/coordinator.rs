//! The coordinator protocol with real processes: `flowline run` with 4 workers through it,
//! a worker killed mid-run, and — against the library's coordinator — a worker of another
//! scenario or build refused and a missing worker named at the deadline.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use flowline_harness::coordinator::{self, CoordinatorError, Expect};
use flowline_loadgen::plan::Plan;
use flowline_loadgen::scenario::Scenario;

use crate::util::{
    flowline, marked_processes, new_mark, only_run_dir, run, stderr, write_scenario,
};

fn summary(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn four_workers_run_through_the_coordinator_into_one_run_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let mark = new_mark();
    let path = write_scenario(tmp.path(), "four", 40, "2s", "");
    let o = flowline()
        .args([
            "run",
            path.to_str().unwrap(),
            "--workers",
            "4",
            "--out",
            "runs",
        ])
        .env("FLOWLINE_TEST_MARK", &mark)
        .current_dir(tmp.path())
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let dir = only_run_dir(&tmp.path().join("runs"));
    let s = summary(&dir);
    assert_eq!(s["workers"], 4, "{s}");
    assert_eq!(s["workers_done"], 4, "{s}");
    assert_eq!(s["correctness"]["lost"], 0, "{s}");
    assert!(s["totals"]["delivered"].as_u64().unwrap() > 0, "{s}");
    let c = &s["coordinator"];
    assert_eq!(c["version"], 2, "{s}");
    // The streamed history was spilled to the run folder and removed once checked.
    assert!(!dir.join("history").exists());
    let workers = c["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 4, "{s}");
    for (i, w) in workers.iter().enumerate() {
        assert_eq!(w["shard"], i, "{s}");
        assert!(w.get("lost_at_s").is_none(), "{s}");
        // One machine, one clock: the measured offset is within the round trip.
        let (off, rtt) = (
            w["clock_offset_ms"].as_f64().unwrap(),
            w["rtt_ms"].as_f64().unwrap(),
        );
        assert!(
            off.abs() <= rtt / 2.0 + 0.01,
            "offset {off} ms beyond rtt {rtt} ms: {s}"
        );
        // Every worker woke at t0 or after it, never later than the lead it was given
        // (how close to t0 is benchmarked: scripts/bench-coordinator).
        let skew = w["start_skew_ms"].as_f64().unwrap();
        assert!((0.0..250.0).contains(&skew), "start skew {skew} ms: {s}");
    }
    assert!(c["clocks"].as_str().unwrap().contains("offset"), "{s}");
    assert!(err.contains("coordinator: 4 workers"), "{err}");
    // The workers' metrics endpoints came in their hellos.
    let targets = std::fs::read_to_string(dir.join("metrics-targets.json")).unwrap();
    for w in 1..=4 {
        assert!(targets.contains(&format!("\"worker{w}\"")), "{targets}");
    }
    assert!(marked_processes(&mark).is_empty());
}

/// Pid of `name` once the harness has recorded it in logs/children.jsonl.
fn wait_for_child(runs: &Path, name: &str, within: Duration) -> (PathBuf, u32) {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(rd) = std::fs::read_dir(runs)
            && let Some(dir) = rd.flatten().next()
        {
            let children =
                std::fs::read_to_string(dir.path().join("logs/children.jsonl")).unwrap_or_default();
            for l in children.lines() {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                if v["name"] == name {
                    return (dir.path(), v["pid"].as_u64().unwrap() as u32);
                }
            }
        }
        assert!(Instant::now() < deadline, "{name} never started");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("no exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_worker_killed_mid_run_is_named_and_nothing_is_left_running() {
    let tmp = tempfile::tempdir().unwrap();
    let mark = new_mark();
    let path = write_scenario(tmp.path(), "kill", 40, "4s", "");
    let mut child = flowline()
        .args([
            "run",
            path.to_str().unwrap(),
            "--workers",
            "4",
            "--out",
            "runs",
        ])
        .env("FLOWLINE_TEST_MARK", &mark)
        // The workers inherit it: worker3's log says when it got the start.
        .env("FLOWLINE_LOG", "info")
        .current_dir(tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (dir, pid) = wait_for_child(&tmp.path().join("runs"), "worker3", Duration::from_secs(30));
    // Into the measured window: worker3 got the start (t0 is 270 ms later), then the
    // warm-up second passes.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(dir.join("logs/worker3.log"))
        .unwrap_or_default()
        .contains("start at")
    {
        assert!(Instant::now() < deadline, "worker3 never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1500));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(60));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(matches!(status.code(), Some(1 | 2)), "{status}: {err}");
    assert!(err.contains("worker3 (shard 2/4"), "{err}");
    let s = summary(&dir);
    assert_eq!(s["passed"], false, "{s}");
    let lost = &s["coordinator"]["workers"][2]["lost_at_s"];
    assert!(lost.as_f64().is_some_and(|t| t > 0.0), "{s}");
    let problems = s["problems"].to_string();
    assert!(problems.contains("worker3 (shard 2/4"), "{problems}");
    assert!(
        marked_processes(&mark).is_empty(),
        "{:?}",
        marked_processes(&mark)
    );
}

/// A worker process of the real binary pointed at `coordinator`.
fn worker(dir: &Path, scenario: &Path, shard: &str, coordinator: &str) -> Child {
    flowline()
        .args([
            "loadgen",
            "--scenario",
            scenario.to_str().unwrap(),
            "--plan",
            dir.join("plan.json").to_str().unwrap(),
            "--shard",
            shard,
            "--targets",
            "ws://127.0.0.1:9/ws",
            "--coordinator",
            coordinator,
            "--coordinator-timeout",
            "20s",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn stderr_of(mut child: Child, within: Duration) -> (Option<i32>, String) {
    let status = wait_exit(&mut child, within);
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (status.code(), err)
}

/// A scenario file, the scenario as the harness would hold it, and its plan.
fn setup(dir: &Path, name: &str) -> (PathBuf, Scenario) {
    let path = write_scenario(dir, name, 8, "2s", "");
    let s = Scenario::from_path(&path).unwrap();
    Plan::synthetic(&s).write(&dir.join("plan.json")).unwrap();
    (path, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_of_another_scenario_is_refused_and_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, s) = setup(tmp.path(), "mine");
    let other = write_scenario(tmp.path(), "other", 8, "3s", "");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let w = worker(tmp.path(), &other, "0/1", &addr);
    let served = coordinator::serve(listener, Expect::new(&s, 1, Duration::from_secs(20))).await;
    let Err(e @ CoordinatorError::Refused { shard: 0, .. }) = served else {
        panic!("not refused: {:?}", served.err());
    };
    assert!(e.to_string().contains("scenario hash"), "{e}");
    let (code, err) = tokio::task::spawn_blocking(move || stderr_of(w, Duration::from_secs(20)))
        .await
        .unwrap();
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("refused this worker: scenario hash"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_of_another_build_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, s) = setup(tmp.path(), "mine");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hash = flowline_loadgen::coordinator::scenario_hash(&s);
    let client = std::thread::spawn(move || {
        let mut sock = TcpStream::connect(addr).unwrap();
        let version = flowline_loadgen::coordinator::PROTOCOL_VERSION;
        let hello = serde_json::json!({"type": "hello", "version": version, "shard": 0,
            "shards": 1, "build": format!("flowline 0.0.0-elsewhere protocol {version}"),
            "scenario_hash": hash, "seed": 7});
        writeln!(sock, "{hello}").unwrap();
        let mut line = String::new();
        BufReader::new(sock).read_line(&mut line).unwrap();
        line
    });
    let served = coordinator::serve(listener, Expect::new(&s, 1, Duration::from_secs(20))).await;
    let Err(e @ CoordinatorError::Refused { shard: 0, .. }) = served else {
        panic!("not refused: {:?}", served.err());
    };
    assert!(e.to_string().contains("0.0.0-elsewhere"), "{e}");
    let line = client.join().unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["type"], "refused", "{line}");
    assert!(v["reason"].as_str().unwrap().contains("build"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_worker_is_named_at_the_deadline_and_the_others_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, s) = setup(tmp.path(), "mine");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    // Shards 0 and 2 of 3 come; shard 1 never does.
    let ws = [
        worker(tmp.path(), &path, "0/3", &addr),
        worker(tmp.path(), &path, "2/3", &addr),
    ];
    let started = Instant::now();
    let served = coordinator::serve(listener, Expect::new(&s, 3, Duration::from_secs(3))).await;
    let Err(e @ CoordinatorError::Missing { .. }) = served else {
        panic!("not missing: {:?}", served.err());
    };
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(e.to_string().contains("missing shard(s) 1"), "{e}");
    for w in ws {
        let (code, err) =
            tokio::task::spawn_blocking(move || stderr_of(w, Duration::from_secs(20)))
                .await
                .unwrap();
        assert_eq!(code, Some(2), "{err}");
        assert!(
            err.contains("closed the connection before the start"),
            "{err}"
        );
    }
}

/// The real binary's deadline path: a 1 ms deadline that (nearly) no worker process can
/// meet. On a loaded machine the deadline may be noticed late and a worker get in first,
/// so the check is that the run exits 2 naming exactly the shards that did not say hello.
#[test]
fn workers_timeout_exits_2_naming_the_missing_shards() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write_scenario(tmp.path(), "late", 8, "2s", "");
    let o = run(
        &[
            "run",
            path.to_str().unwrap(),
            "--workers",
            "2",
            "--workers-timeout",
            "1ms",
            "--out",
            "runs",
        ],
        tmp.path(),
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    // "<n> of 2 worker(s) did not say hello within 1ms: missing shard(s) <list>"
    let line = err
        .lines()
        .find(|l| l.contains("did not say hello within 1ms"))
        .unwrap_or_else(|| panic!("no deadline message: {err}"));
    let n: usize = line
        .split(" of 2 worker(s)")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no missing count: {line}"));
    let missing: Vec<&str> = line
        .rsplit("missing shard(s) ")
        .next()
        .unwrap_or_default()
        .split(", ")
        .collect();
    assert!((1..=2).contains(&n), "{line}");
    assert_eq!(missing.len(), n, "{line}");
    assert!(missing.iter().all(|s| ["0", "1"].contains(s)), "{line}");
}
