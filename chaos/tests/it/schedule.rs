//! Fault schedules: on time, healed on time and on early exit, recorded in events.jsonl.

use std::time::Duration;

use flowline_chaos::fault::FaultSpec;
use flowline_chaos::{Controller, Event, EventLog, Links, Schedule, Targets, ToxiproxyClient};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep_until};

use crate::util::{echo_server, proxy, round_trip};

fn faults(json: &str) -> Vec<FaultSpec> {
    serde_json::from_str(json).unwrap()
}

/// Assert an event happened within 50 ms after `at_ms`.
#[track_caller]
fn assert_on_time(e: &Event, at_ms: i64) {
    assert!(
        e.t_ms >= at_ms && e.t_ms <= at_ms + 50,
        "{} {} at {} ms, expected {at_ms}..{} ms",
        e.action,
        e.kind,
        e.t_ms,
        at_ms + 50
    );
}

#[tokio::test]
async fn faults_fire_and_heal_on_time_and_are_recorded() {
    let _cpu = crate::util::CPU.read().await;
    let c = Controller::new();
    let echo = echo_server().await;
    let n1 = proxy(&c, "client-node1", echo).await;
    proxy(&c, "client-node2", echo).await;
    let redis = proxy(&c, "node1-redis", echo).await;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let zero = Instant::now();
    let events = EventLog::create(&path, zero.into_std()).unwrap();
    events
        .node_event("start", "node1", serde_json::json!({"pid": 1}))
        .unwrap();
    let plan = faults(
        r#"[
        {"at":"100ms","duration":"300ms","kind":"latency","target":"client-node*","latency":"100ms","label":"slow clients"},
        {"at":"150ms","duration":"200ms","kind":"down","target":"node1-redis"}
    ]"#,
    );
    let mut handle = Schedule::new(plan, Targets::new(Links::Local(c.clone())), events.clone())
        .unwrap()
        .run(zero);

    sleep_until(zero + Duration::from_millis(200)).await;
    assert_eq!(c.toxics("client-node1").unwrap().len(), 1);
    assert_eq!(c.toxics("client-node2").unwrap().len(), 1);
    assert!(!c.get("node1-redis").unwrap().enabled);
    assert!(TcpStream::connect(redis).await.is_err(), "partitioned");
    let mut s = TcpStream::connect(n1).await.unwrap();
    let rtt = round_trip(&mut s, b"x").await;
    assert!(rtt >= Duration::from_millis(95), "latency active: {rtt:?}");

    handle.wait().await;
    assert!(c.toxics("client-node1").unwrap().is_empty());
    assert!(c.get("node1-redis").unwrap().enabled);
    let rtt = round_trip(&mut s, b"x").await;
    assert!(rtt < Duration::from_millis(50), "healed: {rtt:?}");

    let ev = events.events();
    let faults_only: Vec<_> = ev.iter().filter(|e| e.kind != "node").collect();
    assert_eq!(faults_only.len(), 4, "{ev:?}");
    assert_eq!(
        (faults_only[0].action.as_str(), faults_only[0].kind.as_str()),
        ("inject", "latency")
    );
    assert_eq!(faults_only[0].target, vec!["client-node1", "client-node2"]);
    assert_eq!(faults_only[0].label, "slow clients");
    assert_eq!(faults_only[0].params["latency"], "100ms");
    assert_on_time(faults_only[0], 100);
    assert_eq!(
        (faults_only[1].action.as_str(), faults_only[1].kind.as_str()),
        ("inject", "down")
    );
    assert_on_time(faults_only[1], 150);
    assert_eq!(faults_only[2].action, "heal");
    assert_eq!(faults_only[2].kind, "down");
    assert_on_time(faults_only[2], 350);
    assert_eq!(faults_only[3].action, "heal");
    assert_on_time(faults_only[3], 400);

    // events.jsonl holds exactly what happened, one object per line.
    let text = std::fs::read_to_string(&path).unwrap();
    let from_file: Vec<Event> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(from_file, ev);
    assert_eq!(from_file[0].kind, "node");
    handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn dropping_the_schedule_heals_everything() {
    let c = Controller::new();
    let echo = echo_server().await;
    proxy(&c, "node1-redis", echo).await;
    proxy(&c, "node1-postgres", echo).await;
    let zero = Instant::now();
    let events = EventLog::in_memory(zero.into_std());
    let plan = faults(
        r#"[
        {"at":"0ms","kind":"blackhole","target":"node1-redis","stream":"both"},
        {"at":"0ms","kind":"down","target":"node1-postgres"},
        {"at":"10s","kind":"latency","target":"node1-redis","latency":"1s"}
    ]"#,
    );
    let handle = Schedule::new(plan, Targets::new(Links::Local(c.clone())), events.clone())
        .unwrap()
        .run(zero);
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(c.toxics("node1-redis").unwrap().len(), 2);
    assert!(!c.get("node1-postgres").unwrap().enabled);

    drop(handle); // e.g. the run failed and unwound
    assert!(
        c.toxics("node1-redis").unwrap().is_empty(),
        "toxics removed synchronously on drop"
    );
    // Re-enabling binds a socket, done on a task right after the drop.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !c.get("node1-postgres").unwrap().enabled && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(c.get("node1-postgres").unwrap().enabled);
    let heals = events
        .events()
        .iter()
        .filter(|e| e.action == "heal")
        .count();
    assert_eq!(heals, 2);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        c.toxics("node1-redis").unwrap().is_empty(),
        "the pending 10s fault never fires"
    );
}

#[tokio::test]
async fn client_mode_drives_a_remote_toxiproxy_api() {
    let _cpu = crate::util::CPU.read().await;
    let remote = Controller::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(flowline_chaos::serve_api(
        remote.clone(),
        listener,
        stop.clone(),
    ));
    let echo = echo_server().await;
    proxy(&remote, "client-node1", echo).await;

    let client = ToxiproxyClient::new(&url, false).unwrap();
    let zero = Instant::now();
    let events = EventLog::in_memory(zero.into_std());
    let plan = faults(
        r#"[{"at":"20ms","duration":"150ms","kind":"bandwidth","target":"client-*","rate":10,"stream":"upstream"}]"#,
    );
    let mut handle = Schedule::new(plan, Targets::new(Links::Remote(client)), events.clone())
        .unwrap()
        .run(zero);
    sleep_until(zero + Duration::from_millis(100)).await;
    let toxics = remote.toxics("client-node1").unwrap();
    assert_eq!(toxics.len(), 1);
    assert_eq!(toxics[0].name, "flowline_f1_bandwidth_upstream");
    handle.wait().await;
    assert!(remote.toxics("client-node1").unwrap().is_empty());
    let ev = events.events();
    assert_eq!(ev.len(), 2);
    assert_on_time(&ev[0], 20);
    assert_on_time(&ev[1], 170);
    stop.cancel();
}

#[tokio::test]
async fn unmatched_or_non_loopback_targets_are_refused() {
    assert!(ToxiproxyClient::new("http://10.0.0.1:8474", false).is_err());
    assert!(ToxiproxyClient::new("http://[::1]:8474", false).is_ok());

    let c = Controller::new();
    proxy(&c, "client-node1", echo_server().await).await;
    let zero = Instant::now();
    let events = EventLog::in_memory(zero.into_std());
    let plan = faults(r#"[{"at":"0ms","kind":"down","target":"node9-*"}]"#);
    let mut handle = Schedule::new(plan, Targets::new(Links::Local(c.clone())), events.clone())
        .unwrap()
        .run(zero);
    handle.wait().await;
    assert_eq!(handle.errors().len(), 1, "{:?}", handle.errors());
    assert!(handle.errors()[0].contains("matches no link"));
    assert_eq!(events.events()[0].action, "error");
    assert!(c.get("client-node1").unwrap().enabled);

    // A bad parameter is refused up front.
    let bad = faults(r#"[{"at":"0ms","kind":"down","target":"x","latency":"1s"}]"#);
    assert!(Schedule::new(bad, Targets::new(Links::None), events).is_err());
}

#[tokio::test]
async fn chaos_run_fires_a_scenario_files_faults_against_a_remote_api() {
    let remote = Controller::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(flowline_chaos::serve_api(
        remote.clone(),
        listener,
        stop.clone(),
    ));
    proxy(&remote, "node1-redis", echo_server().await).await;

    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("s.toml");
    std::fs::write(
        &scenario,
        r#"
[run]
name = "ignored by chaos run"

[[faults]]
at = "50ms"
duration = "100ms"
kind = "down"
target = "node1-*"
"#,
    )
    .unwrap();
    let events_path = dir.path().join("events.jsonl");
    let args = flowline_chaos::cli::Args {
        command: flowline_chaos::cli::Command::Run(flowline_chaos::cli::RunArgs {
            file: scenario,
            toxiproxy_url: url,
            nodes: vec![],
            events: events_path.clone(),
            allow_non_loopback: false,
        }),
    };
    let remote2 = remote.clone();
    let probe = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        remote2.get("node1-redis").unwrap().enabled
    });
    let code = flowline_chaos::cli::main(args).await.unwrap();
    assert_eq!(code, std::process::ExitCode::SUCCESS);
    assert!(!probe.await.unwrap(), "disabled mid-fault");
    assert!(remote.get("node1-redis").unwrap().enabled, "healed");
    let lines: Vec<Event> = std::fs::read_to_string(&events_path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let actions: Vec<_> = lines.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["inject", "heal"]);
    assert_eq!(lines[0].target, ["node1-redis"]);
    stop.cancel();
}

#[tokio::test]
async fn overlapping_partitions_heal_when_the_last_one_ends() {
    let _cpu = crate::util::CPU.read().await;
    let c = Controller::new();
    proxy(&c, "node1-redis", echo_server().await).await;
    let zero = Instant::now();
    let events = EventLog::in_memory(zero.into_std());
    let plan = faults(
        r#"[
        {"at":"0ms","duration":"150ms","kind":"down","target":"node1-redis"},
        {"at":"50ms","duration":"200ms","kind":"down","target":"node1-*"}
    ]"#,
    );
    let mut handle = Schedule::new(plan, Targets::new(Links::Local(c.clone())), events)
        .unwrap()
        .run(zero);
    sleep_until(zero + Duration::from_millis(200)).await;
    assert!(
        !c.get("node1-redis").unwrap().enabled,
        "the first heal must not lift the second partition"
    );
    handle.wait().await;
    assert!(c.get("node1-redis").unwrap().enabled);
}
