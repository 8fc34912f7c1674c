//! `flowline run` against a generic WebSocket service (`[target] kind = "websocket"`):
//! the real `flowline-broadcast` server (a separate process speaking no Flowline
//! protocol) on a free loopback port, reached through the run's `client-target1` link.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::util::{flowline, marked_processes, new_mark, only_run_dir};

/// How long one `flowline run` of these tests may take (it needs about 12 s).
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// How long building `flowline-broadcast` may take when it is missing.
const BUILD_TIMEOUT: Duration = Duration::from_secs(900);

/// Wait for `child` at most `limit`; past it, kill it (by pid) and return `None`.
pub fn wait_bounded(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `flowline-broadcast` binary of the `flowline-loadgen` package, next to the
/// `flowline` binary under test (this package cannot name another package's binaries).
/// Built with cargo, into the same target dir and profile, if it is not there.
fn broadcast_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let flowline = PathBuf::from(env!("CARGO_BIN_EXE_flowline"));
        let dir = flowline.parent().unwrap().to_path_buf();
        let bin = dir.join(format!(
            "flowline-broadcast{}",
            std::env::consts::EXE_SUFFIX
        ));
        if bin.exists() {
            return bin;
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(&cargo);
        cmd.args([
            "build",
            "-p",
            "flowline-loadgen",
            "--bin",
            "flowline-broadcast",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
        if let (Some(profile), Some(target_dir)) = (dir.file_name(), dir.parent()) {
            if profile == "release" {
                cmd.arg("--release");
            }
            cmd.arg("--target-dir").arg(target_dir);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `{cargo} build` for flowline-broadcast: {e}"));
        let status = wait_bounded(&mut child, BUILD_TIMEOUT);
        assert!(
            status.is_some_and(|s| s.success()) && bin.exists(),
            "flowline-broadcast is not at {} and `{cargo} build -p flowline-loadgen --bin \
             flowline-broadcast` did not build it ({status:?}); build it by hand with the same \
             CARGO_TARGET_DIR and run the tests again",
            bin.display()
        );
        bin
    })
    .clone()
}

/// The broadcast server as a child process of the test; killed (by pid) on drop.
struct Broadcast {
    child: Child,
    /// `ws://127.0.0.1:P`.
    base: String,
    /// stdout lines after the `listening` one.
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Broadcast {
    fn start() -> Self {
        let mut child = Command::new(broadcast_bin())
            .args(["--listen", "127.0.0.1:0", "--threads", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        let v: serde_json::Value = serde_json::from_str(&first)
            .unwrap_or_else(|e| panic!("flowline-broadcast said {first:?}: {e}"));
        assert_eq!(v["event"], "listening", "{first}");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for l in out.lines() {
                let Ok(l) = l else { break };
                sink.lock().unwrap().push(l);
            }
        });
        Broadcast {
            child,
            base: format!("ws://{}", v["addr"].as_str().unwrap()),
            lines,
            reader: Some(reader),
        }
    }

    /// The server's latest `stats` line.
    fn last_stats(&self) -> Option<serde_json::Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .rev()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["event"] == "stats")
    }

    /// Wait (at most 5 s) until the server reports no open connection, then stop it with
    /// SIGTERM and return its final stats line.
    fn stop(mut self) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline
            && self
                .last_stats()
                .is_none_or(|s| s["connections"].as_u64() != Some(0))
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = wait_bounded(&mut self.child, Duration::from_secs(10));
        assert!(
            status.is_some_and(|s| s.success()),
            "flowline-broadcast did not stop on SIGTERM: {status:?}"
        );
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        self.last_stats()
            .expect("flowline-broadcast printed no stats")
    }
}

impl Drop for Broadcast {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// 300 users in rooms of 50 on `url`, each saying a frame every ~2 s for 5 s measured
/// (2 s warm-up in which everyone connects, 2 s drain); `tail` is appended.
fn write_scenario(dir: &Path, name: &str, url: &str, tail: &str) -> PathBuf {
    let text = r#"
[run]
name = "NAME"
duration = "5s"
warmup = "2s"
drain = "2s"
seed = 11

[target]
kind = "websocket"
urls = ["URL"]
hello = '{{"type":"join","room":"{room_key}","user":{user}}}'
message = '{{"type":"say","room":"{room_key}","id":{msg_id},"user":{user},"ts":{unix_us}}}'
expect = "room"
room = "room-{room}"
room_size = 50
join_grace = "500ms"
match_id = "/id"
match_time = "/ts"
time_unit = "unix_us"

[population]
users = 300

[[personas]]
name = "talker"
messages_per_minute = 30

[load]
model = "closed"
connect_rate = 1000
stages = [{ duration = "1s", target = 300 }]

[[thresholds]]
expr = "lost == 0"
"#
    .replace("NAME", name)
    .replace("URL", url);
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text + tail).unwrap();
    path
}

/// Run `flowline run SCENARIO --out runs ARGS` in `cwd` with a test mark, bounded;
/// returns its exit code and stderr.
fn flowline_run(cwd: &Path, scenario: &Path, args: &[&str], mark: &str) -> (Option<i32>, String) {
    let log = cwd.join("flowline.stderr");
    let mut child = flowline()
        .args(["run", scenario.to_str().unwrap(), "--out", "runs"])
        .args(args)
        .env("FLOWLINE_TEST_MARK", mark)
        .current_dir(cwd)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let status = wait_bounded(&mut child, RUN_TIMEOUT);
    let err = std::fs::read_to_string(&log).unwrap_or_default();
    let status = status.unwrap_or_else(|| panic!("flowline run took over {RUN_TIMEOUT:?}:\n{err}"));
    (status.code(), err)
}

fn summary(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

fn u(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

#[test]
fn run_drives_a_generic_websocket_service_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Broadcast::start();
    let mark = new_mark();
    // Path and query are kept through the proxy (the server ignores them).
    let url = format!("{}/rooms?client=flowline", server.base);
    let path = write_scenario(tmp.path(), "generic", &url, "");
    let (code, err) = flowline_run(tmp.path(), &path, &["--keep"], &mark);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("client-target1") && err.contains(&url),
        "the link is not announced:\n{err}"
    );
    assert!(
        marked_processes(&mark).is_empty(),
        "processes of the run left behind"
    );

    let dir = only_run_dir(&tmp.path().join("runs"));
    for f in [
        "scenario.toml",
        "plan.json",
        "summary.json",
        "histograms.hlog",
        "timeline.csv",
        "events.jsonl",
        "report.html",
        "metrics-targets.json",
    ] {
        let meta = std::fs::metadata(dir.join(f)).unwrap_or_else(|_| panic!("{f} missing"));
        assert!(meta.len() > 0, "{f} is empty");
    }
    let plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("plan.json")).unwrap()).unwrap();
    assert_eq!(plan["users"].as_array().unwrap().len(), 300);
    assert!(plan["channels"].as_array().unwrap().is_empty(), "{plan}");
    let events = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
    assert!(
        events.lines().any(|l| l.contains("\"start\"")
            && l.contains("\"link\"")
            && l.contains("client-target1")
            && l.contains("/rooms?client=flowline")),
        "{events}"
    );
    let logs: Vec<String> = std::fs::read_dir(dir.join("logs"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        logs.iter().all(|l| !l.starts_with("node")),
        "no node may be started for a generic target: {logs:?}"
    );

    let s = summary(&dir);
    assert_eq!(s["passed"], true, "{s}");
    assert_eq!(s["meta"]["phase"], "external", "{}", s["meta"]);
    assert_eq!(s["meta"]["nodes"], 1, "{}", s["meta"]);
    assert!(
        s["meta"]["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains("generic WebSocket service")),
        "{}",
        s["meta"]
    );
    let t = &s["totals"];
    let sent = u(&t["sent"]);
    assert!(sent > 0, "{t}");
    assert_eq!(u(&t["errors"]), 0, "{t}");
    assert_eq!(u(&t["connects"]), 300, "{t}");
    let c = &s["correctness"];
    assert!(u(&c["expected"]) > 0, "{c}");
    assert_eq!(u(&c["delivered"]), u(&c["expected"]), "{c}");
    assert_eq!(
        (u(&c["lost"]), u(&c["duplicated"]), u(&c["reordered"])),
        (0, 0, 0),
        "{c}"
    );
    for metric in ["connect", "ack", "delivery"] {
        assert!(
            u(&s["latency_us"][metric]["count"]) > 0,
            "no {metric} latency: {}",
            s["latency_us"]
        );
    }
    // Far below the 200 ms the latency fault of the next test adds.
    let p50 = u(&s["latency_us"]["delivery"]["p50"]);
    assert!(p50 < 200_000, "delivery p50 {p50} µs without a fault");
    let hlog = std::fs::read_to_string(dir.join("histograms.hlog")).unwrap();
    assert!(hlog.contains("Tag=delivery"), "no delivery histogram");

    // Every frame went to this server: one join per connect plus every frame said.
    let stats = server.stop();
    assert_eq!(stats["connections"], 0, "connections left open: {stats}");
    assert_eq!(
        u(&stats["received"]),
        sent + u(&t["connects"]),
        "server {stats}, loadgen {t}"
    );
}

#[test]
fn latency_fault_on_client_target_link_delays_every_delivery() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Broadcast::start();
    let mark = new_mark();
    let tail = "\n[[faults]]\nat = \"0s\"\nkind = \"latency\"\ntarget = \"client-target1\"\nlatency = \"200ms\"\n";
    let path = write_scenario(
        tmp.path(),
        "generic-latency",
        &format!("{}/", server.base),
        tail,
    );
    let (code, err) = flowline_run(tmp.path(), &path, &[], &mark);
    assert_eq!(code, Some(0), "{err}");
    assert!(marked_processes(&mark).is_empty());
    let dir = only_run_dir(&tmp.path().join("runs"));
    assert!(
        !dir.join("plan.json").exists(),
        "plan.json kept without --keep"
    );
    let s = summary(&dir);
    let c = &s["correctness"];
    assert_eq!(u(&c["delivered"]), u(&c["expected"]), "{c}");
    assert_eq!(u(&c["lost"]), 0, "{c}");
    let d = &s["latency_us"]["delivery"];
    assert!(u(&d["count"]) > 0, "{d}");
    // Server → client frames cross the link, 200 ms later.
    let p50 = u(&d["p50"]);
    assert!(
        (200_000..2_000_000).contains(&p50),
        "delivery p50 {p50} µs with a 200 ms latency fault on client-target1"
    );
    let events = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
    let injected = events.lines().any(|l| {
        l.contains("\"inject\"") && l.contains("\"latency\"") && l.contains("client-target1")
    });
    assert!(injected, "{events}");
    assert!(!events.contains("\"error\""), "{events}");
    server.stop();
}

/// The standalone `flowline loadgen` goes through the same loop and verdict as `flowline
/// run`: the same threshold words (`held` / `FAILED`), the same closing line, and one
/// summary.json without what only the harness knows (revision, node cost).
#[test]
fn standalone_loadgen_prints_the_same_verdict_as_run() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Broadcast::start();
    let url = format!("{}/rooms", server.base);
    let path = write_scenario(
        tmp.path(),
        "alone",
        &url,
        "\n[[thresholds]]\nexpr = \"delivery.p50 < 1us\"\n",
    );
    let out = tmp.path().join("out");
    let log = tmp.path().join("loadgen.stderr");
    let mut child = flowline()
        .args(["loadgen", "--scenario", path.to_str().unwrap(), "--out"])
        .arg(&out)
        .current_dir(tmp.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let status = wait_bounded(&mut child, RUN_TIMEOUT);
    let err = std::fs::read_to_string(&log).unwrap_or_default();
    let status = status.unwrap_or_else(|| panic!("flowline loadgen took too long:\n{err}"));
    // `lost == 0` holds; the impossible latency threshold fails the run.
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("  held   lost == 0"), "{err}");
    assert!(err.contains("  FAILED delivery.p50 < 1us"), "{err}");
    assert!(err.contains("flowline: FAILED — "), "{err}");
    assert!(!err.contains(" ok ") && !err.contains(" FAIL "), "{err}");
    let s = summary(&out);
    assert_eq!(s["passed"], false);
    assert!(u(&s["totals"]["sent"]) > 0, "{s}");
    assert!(s["meta"].get("revision").is_none(), "{s}");
    assert!(s.get("nodes_cost").is_none(), "{s}");
}
