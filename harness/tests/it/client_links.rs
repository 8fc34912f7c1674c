//! Client links spread over several data-plane processes (`--client-link-processes`):
//! a fault set through the one chaos API reaches every process and is healed on every
//! one, and no process outlives the run, however it ends. Also the machine-limit check:
//! `--users` beyond what this machine holds is refused before anything starts.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::util::{alive, flowline, marked_processes, new_mark, only_run_dir, stderr};

/// Latency the fault adds on every client link, µs.
const LATENCY_US: u64 = 400_000;

/// 1,000 users in rooms of 20 chatting through client-node1, carried by `processes`
/// data-plane processes; `tail` adds faults.
fn scenario(dir: &std::path::Path, name: &str, duration: &str, tail: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[run]\nname = \"{name}\"\nduration = \"{duration}\"\nwarmup = \"2s\"\ndrain = \"2s\"\n\
             seed = 17\n\n[cluster]\nphase = \"single\"\nnodes = 1\n\n[population]\nusers = 1000\n\
             spaces = 10\nchannels_per_space = 5\nmembers = {{ dist = \"fixed\", value = 20 }}\n\n\
             [[personas]]\nname = \"chatter\"\nmessages_per_minute = 6.0\n\n[load]\n\
             model = \"closed\"\nconnect_rate = 1000\n{tail}"
        ),
    )
    .unwrap();
    path
}

/// Pids the harness recorded in `logs/children.jsonl`, by name.
fn recorded(run_dir: &std::path::Path) -> Vec<(String, u32)> {
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

/// Seconds from the run's start (t0) of every event `action` of `kind` in events.jsonl.
fn event_seconds(dir: &std::path::Path, started_ms: i64, action: &str, kind: &str) -> Vec<f64> {
    std::fs::read_to_string(dir.join("events.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["action"] == action && e["kind"] == kind)
        .map(|e| {
            let ts = chrono::DateTime::parse_from_rfc3339(e["ts"].as_str().unwrap()).unwrap();
            (ts.timestamp_millis() - started_ms) as f64 / 1000.0
        })
        .collect()
}

/// The delivery histogram of the whole seconds (interval ends) in `from..=to`.
fn deliveries(dir: &std::path::Path, from: u64, to: u64) -> hdrhistogram::Histogram<u64> {
    let keep: Vec<u64> = (from..=to).collect();
    let bytes = std::fs::read(dir.join("histograms.hlog")).unwrap();
    let (merged, _) = flowline_harness::runfolder::read_hlog(&bytes, Some(&keep)).unwrap();
    merged["delivery"].clone()
}

/// A latency fault on client-node1, carried by three processes: while it is on, *every*
/// delivery takes at least the added latency (a process that missed it would let some
/// through fast); once healed, deliveries are fast again (a process still holding it
/// would keep its users' p99 above the latency). Every process carried connections, and
/// none is left after the run.
#[test]
fn a_fault_on_a_spread_client_link_reaches_and_heals_every_process() {
    let tmp = tempfile::tempdir().unwrap();
    let mark = new_mark();
    let path = scenario(
        tmp.path(),
        "spread",
        "14s",
        &format!(
            "\n[[faults]]\nat = \"3s\"\nduration = \"5s\"\nkind = \"latency\"\n\
             target = \"client-node*\"\nlatency = \"{}ms\"\n",
            LATENCY_US / 1000
        ),
    );
    let o = flowline()
        .args(["run", path.to_str().unwrap(), "--out", "runs"])
        .args(["--client-link-processes", "3"])
        .env("FLOWLINE_TEST_MARK", &mark)
        .current_dir(tmp.path())
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("each client link 3 process(es)"), "{err}");
    let dir = only_run_dir(&tmp.path().join("runs"));

    // Three processes for the one link, each recorded, each carried a share.
    let planes: Vec<(String, u32)> = recorded(&dir)
        .into_iter()
        .filter(|(n, _)| n.starts_with("client-node1.p"))
        .collect();
    assert_eq!(planes.len(), 3, "{planes:?}");
    let events = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
    let link = events
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["kind"] == "link" && e["action"] == "stop")
        .unwrap_or_else(|| panic!("no link event:\n{events}"));
    let peaks: Vec<i64> = link["params"]["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["peak_connections"].as_i64().unwrap())
        .collect();
    assert_eq!(peaks.len(), 3, "{link}");
    assert!(
        peaks.iter().all(|&p| p > 100),
        "a process carried (almost) nothing: {peaks:?}"
    );
    assert!(peaks.iter().sum::<i64>() >= 1000, "{peaks:?}");

    // The fault's effect on deliveries, from the per-second histograms.
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    let started =
        chrono::DateTime::parse_from_rfc3339(summary["meta"]["started_at"].as_str().unwrap())
            .unwrap()
            .timestamp_millis();
    let inject = event_seconds(&dir, started, "inject", "latency");
    let heal = event_seconds(&dir, started, "heal", "latency");
    assert_eq!((inject.len(), heal.len()), (1, 1), "{events}");
    // Whole seconds well inside the fault, and after it. An event is written once the
    // change is made on every process, so the heal itself comes a little before its
    // event: messages held by the toxic then go out with only part of the latency.
    let during = deliveries(
        &dir,
        inject[0].ceil() as u64 + 2,
        heal[0].floor() as u64 - 1,
    );
    assert!(
        during.len() > 500,
        "too few deliveries during the fault: {}",
        during.len()
    );
    assert!(
        during.min() >= LATENCY_US,
        "a delivery took {} µs during a {LATENCY_US} µs fault on every process (p50 {})",
        during.min(),
        during.value_at_quantile(0.5)
    );
    let after = deliveries(&dir, heal[0].ceil() as u64 + 2, heal[0].ceil() as u64 + 5);
    assert!(
        after.len() > 500,
        "too few deliveries after the fault: {}",
        after.len()
    );
    assert!(
        after.value_at_quantile(0.99) < LATENCY_US,
        "p99 {} µs after the heal: a process kept the fault",
        after.value_at_quantile(0.99)
    );
    assert_eq!(summary["correctness"]["lost"], 0, "{summary}");
    for (name, pid) in &planes {
        assert!(!alive(*pid), "{name} (pid {pid}) outlived the run");
    }
    assert!(marked_processes(&mark).is_empty());
}

/// SIGKILL of `flowline run` gives it no chance to end its data-plane processes: they
/// go by themselves (stdin closes, and they die with their parent).
#[test]
fn sigkill_of_the_harness_leaves_no_data_plane_process() {
    let tmp = tempfile::tempdir().unwrap();
    let mark = new_mark();
    let path = scenario(tmp.path(), "killed", "60s", "");
    let mut child = flowline()
        .args(["run", path.to_str().unwrap(), "--out", "runs"])
        .args(["--client-link-processes", "2"])
        .env("FLOWLINE_TEST_MARK", &mark)
        .current_dir(tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if let Ok(rd) = std::fs::read_dir(tmp.path().join("runs"))
            && let Some(dir) = rd.flatten().next()
        {
            seen = recorded(&dir.path());
        }
        let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
        if ["client-node1.p1", "client-node1.p2", "worker1"]
            .iter()
            .all(|n| names.contains(n))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let planes: Vec<u32> = seen
        .iter()
        .filter(|(n, _)| n.starts_with("client-node1.p"))
        .map(|(_, p)| *p)
        .collect();
    assert_eq!(
        planes.len(),
        2,
        "data-plane processes never started: {seen:?}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        planes.iter().all(|p| alive(*p)),
        "not running before the kill: {seen:?}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<_> = seen.iter().filter(|(_, p)| alive(*p)).collect();
        let marked = marked_processes(&mark);
        if left.is_empty() && marked.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind after SIGKILL: {left:?}, marked {marked:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// More users than this machine's file limit allows on one node: refused with exit 2
/// before anything starts (no run folder), with the computed need in the message.
#[test]
fn users_beyond_the_machine_are_refused_before_anything_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let path = scenario(tmp.path(), "huge", "5s", "");
    let err = refused_before_start(tmp.path(), &path, &["--users", "400000"]);
    assert!(
        err.contains("this machine cannot hold the run")
            && err.contains("Computed need: 400000 users: 1 node(s) of ≤ 400000 users")
            && err.contains("worker(s)")
            && err.contains("files per process (RLIMIT_NOFILE)"),
        "{err}"
    );
}

/// `start` events of client links in a run folder's events.jsonl: (link, what the
/// workers used).
fn link_starts(run_dir: &std::path::Path) -> Vec<(String, String)> {
    std::fs::read_to_string(run_dir.join("events.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["action"] == "start" && e["kind"] == "link")
        .map(|e| {
            (
                e["label"].as_str().unwrap_or_default().to_string(),
                e["params"]["workers_use"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

/// `--direct-clients`: the same small run as a proxied one, but the workers connect
/// straight to the node, so no client link is created (the proxied run records its
/// client-node1 and the URL the workers used through it), and the run passes.
#[test]
fn direct_clients_connect_straight_to_the_node() {
    let tmp = tempfile::tempdir().unwrap();
    let path = scenario(tmp.path(), "direct", "3s", "");
    let mut starts = Vec::new();
    for (out, direct) in [("proxied", false), ("direct", true)] {
        let mark = new_mark();
        let mut cmd = flowline();
        cmd.args(["run", path.to_str().unwrap(), "--out", out])
            .args(["--users", "200"])
            .env("FLOWLINE_TEST_MARK", &mark)
            .current_dir(tmp.path());
        if direct {
            cmd.arg("--direct-clients");
        }
        let o = cmd.output().unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(0), "{out}: {err}");
        assert_eq!(
            err.contains("--direct-clients: the workers connect straight to the nodes"),
            direct,
            "{out}: {err}"
        );
        assert!(marked_processes(&mark).is_empty(), "{out}: left running");
        let dir = only_run_dir(&tmp.path().join(out));
        starts.push(link_starts(&dir));
    }
    let [proxied, direct] = &starts[..] else {
        panic!("{starts:?}")
    };
    assert_eq!(proxied.len(), 1, "{proxied:?}");
    assert_eq!(proxied[0].0, "client-node1");
    assert!(proxied[0].1.starts_with("ws://127.0.0.1:"), "{proxied:?}");
    assert!(
        direct.is_empty(),
        "a direct run created client links: {direct:?}"
    );
    // A replay runs as the original ran: straight to the node, and says so.
    let first = only_run_dir(&tmp.path().join("direct"));
    let mark = new_mark();
    let o = flowline()
        .args(["replay", first.to_str().unwrap()])
        .env("FLOWLINE_TEST_MARK", &mark)
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("client links: direct (same)"), "{out}");
    assert!(marked_processes(&mark).is_empty(), "replay: left running");
    let again = std::fs::read_dir(tmp.path().join("direct"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| *p != first)
        .expect("the replay's run folder beside the original");
    let links = link_starts(&again);
    assert!(
        links.is_empty(),
        "the replay created client links: {links:?}"
    );
}

/// A fault on a client link cannot act without the link: with `--direct-clients` it is
/// refused, naming the fault and the link, before anything starts.
#[test]
fn direct_clients_refuse_a_client_link_fault_before_anything_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let path = scenario(
        tmp.path(),
        "direct-fault",
        "3s",
        "\n[[faults]]\nat = \"1s\"\nduration = \"1s\"\nkind = \"latency\"\ntarget = \"client-*\"\nlatency = \"50ms\"\nlabel = \"slow clients\"\n",
    );
    let err = refused_before_start(tmp.path(), &path, &["--direct-clients"]);
    assert!(
        err.contains("fault #1 (slow clients) targets \"client-*\"")
            && err.contains("client link client-node1")
            && err.contains("--direct-clients"),
        "{err}"
    );
}

/// Run `flowline run SCENARIO --out runs FLAGS` in `dir`: it must exit 2 with nothing
/// started (no `runs` folder); returns its stderr.
fn refused_before_start(
    dir: &std::path::Path,
    scenario: &std::path::Path,
    flags: &[&str],
) -> String {
    let o = flowline()
        .arg("run")
        .arg(scenario)
        .args(["--out", "runs"])
        .args(flags)
        .current_dir(dir)
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(!dir.join("runs").exists(), "something was started: {err}");
    err
}
