//! `flowline run` through the real binary: exit statuses, run folder, and reaping.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::util::{
    alive, flowline, marked_processes, new_mark, only_run_dir, run, stderr, write_scenario,
};

#[test]
fn bad_scenario_exits_2_and_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write_scenario(tmp.path(), "bad", 10, "5s", "userz = 3\n");
    let o = run(
        &["run", path.to_str().unwrap(), "--out", "runs"],
        tmp.path(),
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("bad scenario") && err.contains("userz"),
        "{err}"
    );
    // Nothing was started, so no run folder either.
    assert!(!tmp.path().join("runs").exists());
}

#[test]
fn fault_on_a_link_the_phase_lacks_exits_2_before_starting_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let tail =
        "\n[[faults]]\nat = \"1s\"\nduration = \"1s\"\nkind = \"down\"\ntarget = \"node1-redis\"\n";
    let path = write_scenario(tmp.path(), "nolink", 10, "5s", tail);
    let o = run(
        &["run", path.to_str().unwrap(), "--out", "runs"],
        tmp.path(),
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("matches nothing"), "{}", stderr(&o));
    assert!(!tmp.path().join("runs").exists());
}

#[test]
fn missing_scenario_file_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let o = run(&["run", "no-such.toml"], tmp.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no-such.toml"), "{}", stderr(&o));
}

#[test]
fn unreachable_postgres_exits_2_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let path = write_scenario(tmp.path(), "pg", 10, "5s", "");
    let url = format!("postgres://postgres@127.0.0.1:{port}/x");
    let o = run(
        &[
            "run",
            path.to_str().unwrap(),
            "--out",
            "runs",
            "--phase",
            "postgres",
            "--database-url",
            &url,
        ],
        tmp.path(),
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("does not answer") && err.contains(&port.to_string()),
        "{err}"
    );
}

#[test]
fn no_service_and_no_local_fallback_exits_2_saying_how_to_provide_it() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write_scenario(tmp.path(), "pg", 10, "5s", "");
    let o = flowline()
        .args([
            "run",
            path.to_str().unwrap(),
            "--out",
            "runs",
            "--phase",
            "postgres",
        ])
        .env("FLOWLINE_NO_LOCAL_SERVICES", "1")
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("needs Postgres") && err.contains("FLOWLINE_DATABASE_URL"),
        "{err}"
    );
}

/// Start a long run, wait until its node and worker run, send `sig`, and check the run
/// ends with exit 2 naming the signal and that no process it started is left.
fn interrupted_run_leaves_nothing(sig: nix::sys::signal::Signal, name: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let mark = new_mark();
    let path = write_scenario(tmp.path(), "long", 50, "60s", "");
    let mut child = flowline()
        .args(["run", path.to_str().unwrap(), "--out", "runs"])
        .env("FLOWLINE_TEST_MARK", &mark)
        .current_dir(tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the node and a worker run (the harness itself is marked too).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        seen = marked_processes(&mark);
        if seen.len() >= 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(seen.len() >= 3, "node and worker never started: {seen:?}");
    std::thread::sleep(Duration::from_millis(500));
    let seen = marked_processes(&mark);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "harness did not exit after {name}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("interrupted by {name}")), "{err}");
    let left = marked_processes(&mark);
    assert!(
        left.is_empty(),
        "left behind: {left:?} (seen before {name}: {seen:?})"
    );
}

#[test]
fn sigint_ends_the_run_and_leaves_no_process_behind() {
    interrupted_run_leaves_nothing(nix::sys::signal::Signal::SIGINT, "SIGINT");
}

#[test]
fn sigterm_ends_the_run_and_leaves_no_process_behind() {
    interrupted_run_leaves_nothing(nix::sys::signal::Signal::SIGTERM, "SIGTERM");
}

#[test]
fn short_quickstart_passes_writes_every_file_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mark = new_mark();
    let o = flowline()
        // `--users 100` would be refused: the quickstart's ramp stage targets 1,000 users
        // and loadgen's override does not scale stage targets (reported to loadgen).
        .args(["run", "--duration", "5s", "--out", "runs"])
        .env("FLOWLINE_TEST_MARK", &mark)
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let dir = only_run_dir(&tmp.path().join("runs"));
    for f in [
        "scenario.toml",
        "summary.json",
        "histograms.hlog",
        "timeline.csv",
        "events.jsonl",
        "report.html",
    ] {
        let meta = std::fs::metadata(dir.join(f)).unwrap_or_else(|_| panic!("{f} missing"));
        assert!(meta.len() > 0, "{f} is empty");
    }
    let scenario = std::fs::read_to_string(dir.join("scenario.toml")).unwrap();
    assert!(
        scenario.contains("seed ="),
        "seed not filled in:\n{scenario}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["passed"], true);
    assert!(summary["meta"]["revision"].is_string(), "{summary}");
    assert!(summary["meta"]["flowline_version"].is_string(), "{summary}");
    // What the node cost is in the one summary.json written, with the rest.
    assert_eq!(summary["nodes_cost"][0]["node"], "node1", "{summary}");
    assert!(summary["nodes_cost"][0]["cpu_s"].is_number(), "{summary}");
    // A clean run: its node logged no warnings or errors, so none are reported.
    assert!(summary.get("node_errors").is_none(), "{summary}");
    assert!(!stderr(&o).contains("nodes logged"), "{}", stderr(&o));
    assert!(
        summary["totals"]["delivered"].as_u64().unwrap() > 0,
        "{summary}"
    );
    let events = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
    assert!(
        events.contains("\"start\"") && events.contains("node1"),
        "{events}"
    );
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains("revision <b>") && html.contains("users <b>1000</b>"));
    assert!(marked_processes(&mark).is_empty());
}

#[test]
fn impossible_threshold_exits_1() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write_scenario(
        tmp.path(),
        "strict",
        50,
        "3s",
        "\n[[thresholds]]\nexpr = \"delivery.p50 < 1us\"\n",
    );
    let o = run(
        &["run", path.to_str().unwrap(), "--out", "runs"],
        tmp.path(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("FAILED"), "{}", stderr(&o));
    let dir = only_run_dir(&tmp.path().join("runs"));
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains("delivery.p50 &lt; 1us"));
}

/// `[cluster] heartbeat`: every node the run starts pings at that interval (its start
/// event says so, and a node refusing the flag would fail the run), the run passes, and
/// the interval survives into the run folder's scenario.toml.
#[test]
fn cluster_heartbeat_reaches_every_node() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("hb.toml");
    std::fs::write(
        &path,
        "[run]\nname = \"hb\"\nduration = \"3s\"\nwarmup = \"1s\"\ndrain = \"1s\"\nseed = 7\n\n\
         [cluster]\nphase = \"pubsub\"\nnodes = 2\nheartbeat = \"2s\"\n\n[population]\nusers = 40\n",
    )
    .unwrap();
    let o = run(
        &["run", path.to_str().unwrap(), "--out", "runs"],
        tmp.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let dir = only_run_dir(&tmp.path().join("runs"));
    let events = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
    let starts: Vec<serde_json::Value> = events
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["action"] == "start" && e["kind"] == "node")
        .collect();
    assert_eq!(starts.len(), 2, "{events}");
    // What each node announced it applies (its `listening` line), not what was asked.
    for s in &starts {
        assert_eq!(s["params"]["heartbeat_ms"], 2000, "{s}");
    }
    let toml = std::fs::read_to_string(dir.join("scenario.toml")).unwrap();
    assert!(toml.contains("heartbeat = \"2s\""), "{toml}");
}

#[test]
fn replay_runs_the_same_scenario_and_seed_and_reports_differences() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write_scenario(tmp.path(), "again", 40, "2s", "");
    let o = run(
        &["run", path.to_str().unwrap(), "--out", "runs"],
        tmp.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let first = only_run_dir(&tmp.path().join("runs"));
    let o = run(&["replay", first.to_str().unwrap()], tmp.path());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("seed: 7 (same)"), "{out}");
    assert!(
        out.contains("delivery p99") && out.contains("lost"),
        "{out}"
    );
    assert!(out.contains("verdict: PASS → PASS (same)"), "{out}");
    let runs = std::fs::read_dir(tmp.path().join("runs")).unwrap().count();
    assert_eq!(runs, 2, "the replay goes beside the original");
    let again = std::fs::read_dir(tmp.path().join("runs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| *p != first)
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(first.join("scenario.toml")).unwrap(),
        std::fs::read_to_string(again.join("scenario.toml")).unwrap()
    );
}

/// Phase `postgres` with no URL given: a throwaway Postgres from the installed binaries
/// (as `flowline-pg` when root), in a run folder given as a relative path.
#[test]
fn postgres_phase_runs_on_a_throwaway_server_and_removes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let mark = new_mark();
    let path = write_scenario(tmp.path(), "pg", 40, "2s", "");
    let o = flowline()
        .args([
            "run",
            path.to_str().unwrap(),
            "--out",
            "runs",
            "--phase",
            "postgres",
        ])
        .env("FLOWLINE_TEST_MARK", &mark)
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("postgres: throwaway"), "{}", stderr(&o));
    let dir = only_run_dir(&tmp.path().join("runs"));
    let summary = std::fs::read_to_string(dir.join("summary.json")).unwrap();
    assert!(summary.contains("\"phase\": \"postgres\""), "{summary}");
    assert!(!dir.join("services").exists(), "throwaway data left behind");
    assert!(marked_processes(&mark).is_empty());
}

/// Pids the harness recorded in `logs/children.jsonl`, by name.
fn recorded_children(run_dir: &std::path::Path) -> Vec<(String, u32)> {
    std::fs::read_to_string(run_dir.join("logs/children.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_string(),
                v["pid"].as_u64().unwrap() as u32,
            )
        })
        .collect()
}

/// SIGKILL gives the harness no chance to clean up: its children must die by themselves
/// (PR_SET_PDEATHSIG), the throwaway Postgres (dropped to another user, via setpriv) and
/// its backends included.
#[test]
fn sigkill_of_the_harness_leaves_no_child_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let mark = new_mark();
    let path = write_scenario(tmp.path(), "killed", 50, "60s", "");
    let mut child = flowline()
        .args([
            "run",
            path.to_str().unwrap(),
            "--phase",
            "postgres",
            "--out",
            "runs",
        ])
        .env("FLOWLINE_TEST_MARK", &mark)
        .current_dir(tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until Postgres, the node and a worker have been started and are running.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut recorded = Vec::new();
    while Instant::now() < deadline {
        if let Ok(rd) = std::fs::read_dir(tmp.path().join("runs"))
            && let Some(dir) = rd.flatten().next()
        {
            recorded = recorded_children(&dir.path());
        }
        let names: Vec<&str> = recorded.iter().map(|(n, _)| n.as_str()).collect();
        if ["postgres", "node1", "worker1"]
            .iter()
            .all(|n| names.contains(n))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let names: Vec<&str> = recorded.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        ["postgres", "node1", "worker1"]
            .iter()
            .all(|n| names.contains(n)),
        "children never started: {recorded:?}"
    );
    std::thread::sleep(Duration::from_millis(500));
    for (name, pid) in &recorded {
        assert!(
            alive(*pid),
            "{name} (pid {pid}) is not running before the kill"
        );
    }
    let before = marked_processes(&mark);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
    // Postgres backends notice their postmaster's death within a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<_> = recorded.iter().filter(|(_, p)| alive(*p)).collect();
        let marked = marked_processes(&mark);
        if left.is_empty() && marked.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind after SIGKILL: recorded {left:?}, marked {marked:?} (before: {before:?})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Kills a child process when dropped.
struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `flowline chaos serve` process (a Toxiproxy API) on a free port, and its URL.
fn chaos_serve() -> (Kill, String) {
    use std::io::BufRead as _;
    let mut serve = flowline()
        .args(["chaos", "serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(serve.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let announce: serde_json::Value = serde_json::from_str(&line).unwrap();
    let api = announce["api"]
        .as_str()
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    (Kill(serve), api)
}

/// With an external cluster behind a remote Toxiproxy, faults may target the Toxiproxy's
/// own proxies; one that matches none of them is refused (exit 2) before any load.
#[test]
fn external_cluster_faults_are_checked_against_the_remote_proxies() {
    let tmp = tempfile::tempdir().unwrap();
    let (_serve, api) = chaos_serve();
    let path = tmp.path().join("ext.toml");
    std::fs::write(
        &path,
        "[run]\nname = \"ext\"\nduration = \"2s\"\n\n[cluster]\nhttp = [\"http://127.0.0.1:9\"]\nadmin_secret = \"s\"\n\n[population]\nusers = 10\n\n[[faults]]\nat = \"1s\"\nduration = \"1s\"\nkind = \"down\"\ntarget = \"node9-redis\"\n",
    )
    .unwrap();
    // Without a remote Toxiproxy the run has no such link: refused before anything starts.
    let o = run(
        &["run", path.to_str().unwrap(), "--out", "runs"],
        tmp.path(),
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("matches nothing in this run"),
        "{}",
        stderr(&o)
    );
    // With one, it is checked against the Toxiproxy's proxies (client-node1 only here).
    let o = run(
        &[
            "run",
            path.to_str().unwrap(),
            "--out",
            "runs",
            "--toxiproxy-url",
            &api,
        ],
        tmp.path(),
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("matches no proxy of the Toxiproxy") && err.contains("client-node1"),
        "{err}"
    );
}

/// `--toxiproxy-url`: the run's link proxies and its link faults go to a remote
/// Toxiproxy API (here a separate `flowline chaos serve` process), and the proxies it
/// created are deleted at the end.
#[test]
fn toxiproxy_url_puts_links_and_faults_on_a_remote_toxiproxy() {
    let tmp = tempfile::tempdir().unwrap();
    let (_serve, api) = chaos_serve();
    let get = |path: &str| -> String {
        let u = url::Url::parse(&format!("{api}{path}")).unwrap();
        let mut s =
            std::net::TcpStream::connect((u.host_str().unwrap(), u.port().unwrap())).unwrap();
        std::io::Write::write_all(
            &mut s,
            format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes(),
        )
        .unwrap();
        let mut out = String::new();
        std::io::Read::read_to_string(&mut s, &mut out).unwrap();
        out
    };
    let path = write_scenario(
        tmp.path(),
        "remote",
        50,
        "4s",
        "[[faults]]\nat = \"1s\"\nduration = \"2s\"\nkind = \"latency\"\ntarget = \"client-node1\"\nlatency = \"30ms\"\n",
    );
    let mut child = flowline()
        .args([
            "run",
            path.to_str().unwrap(),
            "--out",
            "runs",
            "--toxiproxy-url",
            &api,
        ])
        .current_dir(tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // While it runs: the proxy and, during the fault, its toxic live on the remote API.
    let mut saw_proxy = false;
    let mut saw_toxic = false;
    let deadline = Instant::now() + Duration::from_secs(40);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the run did not end");
        let proxies = get("/proxies");
        saw_proxy |= proxies.contains("\"client-node1\"");
        saw_toxic |= proxies.contains("flowline_f1_latency");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("link proxies on Toxiproxy"), "{err}");
    assert!(
        saw_proxy,
        "client-node1 never appeared on the remote Toxiproxy"
    );
    assert!(
        saw_toxic,
        "the latency fault never reached the remote Toxiproxy"
    );
    let dir = only_run_dir(&tmp.path().join("runs"));
    let events = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
    assert!(
        events.contains("\"inject\"")
            && events.contains("\"heal\"")
            && !events.contains("\"error\""),
        "{events}"
    );
    // The run's proxies are gone again; the remote counted the fault on its /metrics.
    let proxies = get("/proxies");
    assert!(!proxies.contains("client-node1"), "{proxies}");
    let metrics = get("/metrics");
    assert!(
        metrics.contains("flowline_chaos_faults_total{kind=\"latency\",target=\"client-node1\"} 1"),
        "{metrics}"
    );
}
