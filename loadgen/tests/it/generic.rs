//! The generic WebSocket target against a third-party-style server started by the test
//! (`flowline-broadcast`, a separate process speaking no Flowline protocol): echo latency,
//! room fan-out counted exactly (two shards), and a deliberately dropped frame detected.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use flowline_loadgen::aggregate::{Aggregator, RunMeta, Summary};
use flowline_loadgen::checker::Offence;
use flowline_loadgen::generic::msg_id;
use flowline_loadgen::plan::Plan;
use flowline_loadgen::scenario::Scenario;

use crate::util::run_workers;

/// The broadcast server as a child process; killed on drop.
struct Server {
    child: Child,
    url: String,
    /// stdout lines after the `listening` one.
    lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(drop: &[u64]) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flowline-broadcast"));
    cmd.args(["--listen", "127.0.0.1:0", "--threads", "1"]);
    if !drop.is_empty() {
        let list: Vec<String> = drop.iter().map(u64::to_string).collect();
        cmd.args(["--drop", &list.join(",")]);
    }
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let v: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(v["event"], "listening", "{first}");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for l in out.lines() {
            let Ok(l) = l else { break };
            sink.lock().unwrap().push(l);
        }
    });
    Server {
        child,
        url: format!("ws://{}/", v["addr"].as_str().unwrap()),
        lines,
    }
}

/// A scenario of `users` users in rooms of `room_size`, each sending ~2 frames/s from
/// 1 s to 3 s (open model, nothing sent while users connect), drain 3 s: how long the run
/// waits for frames in flight (with 1 s, 433 of 4424 deliveries came after it on a 2-core
/// machine at load ~13, and were rightly counted lost).
fn scenario(url: &str, users: u32, room_size: u32, message: &str, expect: &str) -> Scenario {
    let text = format!(
        r#"
[run]
name = "it-generic"
duration = "2s"
warmup = "1s"
drain = "3s"
seed = 4

[target]
kind = "websocket"
urls = ["{url}"]
headers = {{ "X-Test" = "1" }}
hello = '{{{{"type":"join","room":"{{room_key}}","user":{{user}}}}}}'
message = '{message}'
expect = "{expect}"
room = "r{{room}}"
room_size = {room_size}
match_id = "/id"
match_time = "/ts"
time_unit = "unix_us"

[population]
users = {users}

[load]
model = "open"
connect_rate = 5000
stages = [{{ duration = "1s", rate = 0 }}, {{ duration = "0s", rate = {rate} }}, {{ duration = "2s", rate = {rate} }}]
"#,
        rate = users * 2,
    );
    Scenario::parse("it-generic", &text).unwrap()
}

async fn run(s: &Scenario, shards: usize) -> Summary {
    let s = Arc::new(s.clone());
    let plan = Arc::new(Plan::synthetic(&s));
    let lines = run_workers(&s, &plan, vec![Vec::new(); shards], 1).await;
    let mut agg = Aggregator::new(&s, shards);
    for (w, shard) in lines.iter().enumerate() {
        for l in shard {
            agg.ingest(w, l).unwrap();
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let summary = agg.finish(dir.path(), RunMeta::default()).unwrap();
    for f in ["summary.json", "histograms.hlog", "timeline.csv"] {
        assert!(dir.path().join(f).exists(), "{f}");
    }
    summary
}

const SAY: &str =
    r#"{{"type":"say","room":"{room_key}","id":{msg_id},"ts":{unix_us},"from":{user}}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_frames_all_come_back_with_latency() {
    let server = start_server(&[]);
    let s = scenario(
        &server.url,
        40,
        10,
        r#"{{"type":"echo","id":{msg_id},"ts":{unix_us}}}"#,
        "echo",
    );
    let sum = run(&s, 1).await;
    let t = &sum.totals;
    assert!(t.sent > 80, "{t:?}");
    assert_eq!(t.errors, 0, "{:?}", t.errors_by_kind);
    assert_eq!(t.acked, t.sent, "every echo comes back: {t:?}");
    assert_eq!(t.delivered, 0, "an echo server sends nothing to others");
    let c = &sum.correctness;
    assert_eq!(
        (c.expected, c.delivered, c.lost),
        (t.sent, t.sent, 0),
        "{c:?}"
    );
    let ack = &sum.latency_us["ack"];
    assert_eq!(ack.count, t.sent);
    assert!(ack.p50 > 0 && ack.p50 < 100_000, "{ack:?}");
    assert_eq!(sum.peak_users, 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_fan_out_is_counted_exactly_across_shards() {
    let server = start_server(&[]);
    let s = scenario(&server.url, 60, 20, SAY, "room");
    let sum = run(&s, 2).await;
    let t = &sum.totals;
    assert!(t.sent > 120, "{t:?}");
    assert_eq!(t.errors, 0, "{:?}", t.errors_by_kind);
    // The server sends each frame back to its sender and to the 19 other members.
    assert_eq!(t.acked, t.sent);
    assert_eq!(t.delivered, t.sent * 19, "{t:?}");
    let c = &sum.correctness;
    assert_eq!(c.expected, t.sent * 19, "{c:?}");
    assert_eq!(
        (c.delivered, c.lost, c.duplicated, c.reordered),
        (c.expected, 0, 0, 0)
    );
    let delivery = &sum.latency_us["delivery"];
    assert_eq!(delivery.count, t.delivered, "{delivery:?}");
    assert!(delivery.p99 < 1_000_000, "{delivery:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_check_detects_frames_the_server_drops() {
    let drops = [17, 400, 1234];
    let server = start_server(&drops);
    let s = scenario(&server.url, 60, 20, SAY, "room");
    let sum = run(&s, 1).await;
    let t = &sum.totals;
    assert!(t.sent * 19 > 1234, "{t:?}");
    assert_eq!(t.delivered, t.sent * 19 - 3, "{t:?}");
    let c = &sum.correctness;
    assert_eq!(c.lost, 3, "{c:?}");
    let mut found: Vec<(u32, i64)> = c
        .offenders
        .iter()
        .filter(|o| o.offence == Offence::Lost)
        .map(|o| (o.recipient, o.id.unwrap()))
        .collect();
    found.sort_unstable();
    let mut dropped: Vec<(u32, i64)> = server
        .lines
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "dropped")
        .map(|v| {
            let frame: serde_json::Value =
                serde_json::from_str(v["frame"].as_str().unwrap()).unwrap();
            (
                v["to"].as_u64().unwrap() as u32,
                frame["id"].as_i64().unwrap(),
            )
        })
        .collect();
    dropped.sort_unstable();
    assert_eq!(dropped.len(), 3);
    assert_eq!(found, dropped);
    assert!(
        dropped
            .iter()
            .all(|&(to, id)| msg_id(to, 0) as i64 >> 24 != id >> 24)
    );
}
