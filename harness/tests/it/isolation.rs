//! `flowline run --isolation netns`: real namespaces (root), real services and traffic.
//! Each test skips with the reason printed where this process may not make namespaces.
//! After every run, `ip netns list` and `nft list tables` must show nothing of it.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::util::{flowline, marked_processes, new_mark, only_run_dir, stderr};

/// Whether namespaces can be made here; prints why not.
fn can_isolate(test: &str) -> bool {
    match flowline_chaos::kernel::network::check_privileges() {
        Ok(()) => true,
        Err(e) => {
            eprintln!("SKIPPED {test}: {e}");
            false
        }
    }
}

fn sh(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Names of the namespaces a harness with pid `pid` owns (`flowline-<pid>-...`).
fn namespaces_of(pid: u32) -> Vec<String> {
    sh("ip", &["netns", "list"])
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("flowline-{pid}-")))
        .map(str::to_string)
        .collect()
}

/// Nothing of the harness with pid `pid` is left: no namespace, no nft table of its run
/// in the machine's own ruleset.
fn assert_nothing_left(pid: u32, run_dir: &std::path::Path) {
    let ns = namespaces_of(pid);
    assert!(ns.is_empty(), "namespaces left: {ns:?}");
    let run = run_dir
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_lowercase();
    let table = run.replace(['-', '.'], "_");
    let tables = sh("nft", &["list", "tables"]);
    assert!(!tables.contains(&table), "nft tables left: {tables}");
}

/// A small scenario: 40 users, 4 s; `cluster` lines are added to `[cluster]`, `tail` at
/// the end.
fn scenario(
    dir: &std::path::Path,
    name: &str,
    duration: &str,
    cluster: &str,
    tail: &str,
) -> String {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[run]\nname = \"{name}\"\nduration = \"{duration}\"\nwarmup = \"1s\"\ndrain = \"2s\"\nseed = 7\n\n\
             [cluster]\n{cluster}\n\n[population]\nusers = 40\n\
             spaces = 2\nchannels_per_space = 2\nmembers = {{ dist = \"fixed\", value = 10 }}\n\n\
             [[personas]]\nname = \"chatter\"\nweight = 1.0\nmessages_per_minute = 30.0\n\n\
             [[thresholds]]\nexpr = \"lost == 0\"\n{tail}"
        ),
    )
    .unwrap();
    path.to_string_lossy().into_owned()
}

fn summary(dir: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

/// Run `flowline run <args>` to its end; (its pid, its output).
fn run_to_end(args: &[&str], cwd: &std::path::Path, mark: &str) -> (u32, std::process::Output) {
    let child = flowline()
        .args(args)
        .env("FLOWLINE_TEST_MARK", mark)
        .current_dir(cwd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    (pid, child.wait_with_output().unwrap())
}

/// Two nodes, Postgres and Redis given by URL (relayed into the network), a worker: each
/// in its own namespace; messages cross Redis between the nodes; nothing is lost and
/// nothing of the run is left.
#[test]
fn isolated_run_with_services_given_by_url_loses_nothing_and_leaves_nothing() {
    if !can_isolate("isolated_run_with_services_given_by_url") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mark = new_mark();
    let path = scenario(tmp.path(), "iso", "4s", "phase = \"pubsub\"\nnodes = 2", "");
    let db = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let (pid, o) = run_to_end(
        &[
            "run",
            &path,
            "--out",
            "runs",
            "--isolation",
            "netns",
            "--database-url",
            &db,
            "--redis-url",
            "redis://127.0.0.1:6379",
        ],
        tmp.path(),
        &mark,
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("network namespaces"), "{err}");
    let dir = only_run_dir(&tmp.path().join("runs"));
    let s = summary(&dir);
    assert_eq!(s["correctness"]["lost"], 0, "{s}");
    assert!(s["totals"]["delivered"].as_u64().unwrap() > 0, "{s}");
    // The nodes listened on their bridge addresses, not on loopback.
    let events = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
    assert!(events.contains("\"addr\":\"10.98.0."), "{events}");
    assert_nothing_left(pid, &dir);
    assert!(marked_processes(&mark).is_empty());
}

/// `partition` of Redis one way (node2 → redis dropped, redis → node2 kept) in `queue`,
/// with throwaway Postgres and Redis inside the network: the durable log loses nothing;
/// the fault is in events.jsonl and the report like a proxy fault.
#[test]
fn one_way_redis_partition_in_queue_loses_nothing() {
    if !can_isolate("one_way_redis_partition_in_queue") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mark = new_mark();
    let path = scenario(
        tmp.path(),
        "part",
        "4s",
        "phase = \"queue\"\nnodes = 2\nisolation = \"netns\"",
        "\n[[faults]]\nat = \"1s\"\nduration = \"2s\"\nkind = \"partition\"\ntarget = \"node2\"\n\
         peer = \"redis\"\ndirection = \"to\"\n",
    );
    let (pid, o) = run_to_end(&["run", &path, "--out", "runs"], tmp.path(), &mark);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("postgres: throwaway"), "{err}");
    let dir = only_run_dir(&tmp.path().join("runs"));
    let s = summary(&dir);
    assert_eq!(s["correctness"]["lost"], 0, "{s}");
    let events = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
    for action in ["\"inject\"", "\"heal\""] {
        assert!(
            events
                .lines()
                .any(|l| l.contains(action) && l.contains("\"partition\"") && l.contains("node2")),
            "no {action} of the partition: {events}"
        );
    }
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(
        html.contains("partition node2"),
        "the report does not show the fault"
    );
    assert_nothing_left(pid, &dir);
    assert!(marked_processes(&mark).is_empty());
}

/// A run killed with SIGKILL cannot remove its namespaces; the next isolated run removes
/// them (ending what still ran inside) and says so, and leaves nothing itself.
#[test]
fn sigkilled_run_leftovers_are_removed_by_the_next_run() {
    if !can_isolate("sigkilled_run_leftovers") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mark = new_mark();
    let long = scenario(tmp.path(), "killed", "60s", "phase = \"single\"", "");
    let mut child = flowline()
        .args(["run", &long, "--out", "killed", "--isolation", "netns"])
        .env("FLOWLINE_TEST_MARK", &mark)
        .current_dir(tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Wait until its worker runs (every namespace exists by then).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let started = std::fs::read_dir(tmp.path().join("killed"))
            .ok()
            .and_then(|mut rd| rd.next())
            .and_then(|d| d.ok())
            .and_then(|d| std::fs::read_to_string(d.path().join("logs/children.jsonl")).ok())
            .is_some_and(|c| c.contains("worker1"));
        if started {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the first run never started its worker"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = namespaces_of(pid);
    assert!(before.len() >= 3, "{before:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
    assert_eq!(namespaces_of(pid), before, "SIGKILL cannot clean up");

    let short = scenario(tmp.path(), "after", "2s", "phase = \"single\"", "");
    let (pid2, o) = run_to_end(
        &["run", &short, "--out", "runs", "--isolation", "netns"],
        tmp.path(),
        &mark,
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains("left by dead runs") && err.contains(&format!("flowline-{pid}-")),
        "{err}"
    );
    let killed_dir = only_run_dir(&tmp.path().join("killed"));
    assert_nothing_left(pid, &killed_dir);
    assert_nothing_left(pid2, &only_run_dir(&tmp.path().join("runs")));
    // Whatever the killed run left running inside its namespaces is gone too.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !marked_processes(&mark).is_empty() {
        assert!(Instant::now() < deadline, "{:?}", marked_processes(&mark));
        std::thread::sleep(Duration::from_millis(100));
    }
}
