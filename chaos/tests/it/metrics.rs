//! `GET /metrics` of the chaos API: fault gauges and counters by kind and target, for
//! faults added through the HTTP API, by a schedule, and process faults on nodes.

use std::sync::Arc;
use std::time::Duration;

use flowline_chaos::fault::FaultSpec;
use flowline_chaos::{Controller, EventLog, Links, PidProcess, Schedule, Targets};
use tokio::time::{Instant, sleep_until};

use crate::util::{echo_server, proxy};

/// The value of one series on a metrics page (`None` if absent).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

fn active(kind: &str, target: &str) -> String {
    format!("flowline_chaos_active_faults{{kind=\"{kind}\",target=\"{target}\"}}")
}

fn total(kind: &str, target: &str) -> String {
    format!("flowline_chaos_faults_total{{kind=\"{kind}\",target=\"{target}\"}}")
}

async fn serve(c: &Controller) -> (String, tokio_util::sync::CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(flowline_chaos::serve_api(c.clone(), listener, stop.clone()));
    (base, stop)
}

async fn page(http: &reqwest::Client, base: &str) -> String {
    let r = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"),
    );
    r.text().await.unwrap()
}

#[tokio::test]
async fn api_faults_show_as_active_and_counted_until_removed() {
    let c = Controller::new();
    let echo = echo_server().await;
    proxy(&c, "client-node1", echo).await;
    proxy(&c, "node1-redis", echo).await;
    let (base, stop) = serve(&c).await;
    let http = reqwest::Client::new();

    let text = page(&http, &base).await;
    assert_eq!(
        value(&text, &active("latency", "client-node1")),
        None,
        "{text}"
    );

    // Two latency toxics (one per direction) and a partition, through the HTTP API.
    for stream in ["upstream", "downstream"] {
        let r = http
            .post(format!("{base}/proxies/client-node1/toxics"))
            .json(
                &serde_json::json!({"type":"latency","stream":stream,"attributes":{"latency":10}}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = http
        .post(format!("{base}/proxies/node1-redis"))
        .json(&serde_json::json!({"enabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = page(&http, &base).await;
    assert!(
        text.contains("# TYPE flowline_chaos_active_faults gauge"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE flowline_chaos_faults_total counter"),
        "{text}"
    );
    assert_eq!(
        value(&text, &active("latency", "client-node1")),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value(&text, &total("latency", "client-node1")),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value(&text, &active("down", "node1-redis")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, &total("down", "node1-redis")),
        Some(1.0),
        "{text}"
    );

    // Disabling a disabled proxy is not a new fault.
    http.post(format!("{base}/proxies/node1-redis"))
        .json(&serde_json::json!({"enabled": false}))
        .send()
        .await
        .unwrap();
    // Removing one toxic, then reset: the gauges follow, the counters keep the history.
    let r = http
        .delete(format!(
            "{base}/proxies/client-node1/toxics/latency_upstream"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let text = page(&http, &base).await;
    assert_eq!(
        value(&text, &active("latency", "client-node1")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, &total("down", "node1-redis")),
        Some(1.0),
        "{text}"
    );
    let r = http.post(format!("{base}/reset")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let text = page(&http, &base).await;
    assert_eq!(
        value(&text, &active("latency", "client-node1")),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        value(&text, &active("down", "node1-redis")),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        value(&text, &total("latency", "client-node1")),
        Some(2.0),
        "{text}"
    );
    stop.cancel();
}

#[tokio::test]
async fn scheduled_link_and_process_faults_are_reported() {
    let _cpu = crate::util::CPU.read().await;
    let c = Controller::new();
    let echo = echo_server().await;
    proxy(&c, "client-node1", echo).await;
    let (base, stop) = serve(&c).await;
    let http = reqwest::Client::new();
    // A real process to pause: `sleep` stopped and continued by the schedule.
    let mut child = tokio::process::Command::new("sleep")
        .arg("30")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let node = PidProcess {
        node_id: "node1".into(),
        pid: child.id().unwrap(),
    };
    let plan: Vec<FaultSpec> = serde_json::from_str(
        r#"[
        {"at":"50ms","duration":"400ms","kind":"latency","target":"client-node1","latency":"5ms","stream":"upstream"},
        {"at":"50ms","duration":"400ms","kind":"pause","target":"node1"}
    ]"#,
    )
    .unwrap();
    let zero = Instant::now();
    let targets = Targets::new(Links::Local(c.clone())).with_node(Arc::new(node));
    let mut handle = Schedule::new(plan, targets, EventLog::in_memory(zero.into_std()))
        .unwrap()
        .run(zero);
    sleep_until(zero + Duration::from_millis(250)).await;
    let text = page(&http, &base).await;
    assert_eq!(
        value(&text, &active("latency", "client-node1")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(value(&text, &active("pause", "node1")), Some(1.0), "{text}");
    assert_eq!(value(&text, &total("pause", "node1")), Some(1.0), "{text}");
    handle.wait().await;
    let text = page(&http, &base).await;
    assert_eq!(
        value(&text, &active("latency", "client-node1")),
        Some(0.0),
        "{text}"
    );
    assert_eq!(value(&text, &active("pause", "node1")), Some(0.0), "{text}");
    assert_eq!(
        value(&text, &total("latency", "client-node1")),
        Some(1.0),
        "{text}"
    );
    child.kill().await.unwrap();
    stop.cancel();
}
