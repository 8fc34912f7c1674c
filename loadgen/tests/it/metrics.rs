//! The worker's Prometheus endpoint, fetched over real HTTP while a worker runs against a
//! real node: the contract names are there and the values move.

use std::sync::Arc;
use std::time::Duration;

use flowline_loadgen::metrics::{self, WorkerMetrics};
use flowline_loadgen::plan::{self, Shard};
use flowline_loadgen::worker::{self, WorkerConfig};
use tokio_util::sync::CancellationToken;

use crate::util::{SECRET, small_scenario, start_node};

/// The value of the first sample line starting with `prefix` (name and labels).
fn sample(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {prefix:?} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_serves_moving_values() {
    let node = start_node().await;
    let scenario = Arc::new(small_scenario(100, 3));
    let plan = Arc::new(
        plan::provision(&scenario, &node.http, SECRET)
            .await
            .unwrap(),
    );
    let metrics = Arc::new(WorkerMetrics::new(0));
    let stop = CancellationToken::new();
    let addr = metrics::serve("127.0.0.1:0", metrics.clone(), stop.clone())
        .await
        .unwrap();
    let url = format!("http://{addr}/metrics");
    let cfg = WorkerConfig {
        scenario,
        plan,
        shard: Shard { index: 0, count: 1 },
        targets: vec![node.ws.clone()],
        start_at: None,
        clock_offset_us: 0,
        threads: 2,
        metrics: Some(metrics),
        out: None,
    };
    let run = tokio::spawn(async move {
        worker::run(cfg, CancellationToken::new(), |_| {})
            .await
            .unwrap();
    });
    let http = reqwest::Client::new();
    let fetch = || async {
        let r = http.get(&url).send().await.unwrap();
        assert!(r.status().is_success());
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.starts_with("text/plain"), "{ct}");
        r.text().await.unwrap()
    };
    let first = fetch().await;
    assert_eq!(
        sample(&first, "flowline_loadgen_sends_total{worker=\"0\"}"),
        0.0
    );
    // Warm-up 1 s + 3 s: after ~2.5 s users are connected and chatting.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mid = fetch().await;
    assert_eq!(
        sample(&mid, "flowline_loadgen_users_connected{worker=\"0\"}"),
        100.0
    );
    let sends_mid = sample(&mid, "flowline_loadgen_sends_total{worker=\"0\"}");
    assert!(sends_mid > 0.0, "{mid}");
    run.await.unwrap();
    let last = fetch().await;
    let sends = sample(&last, "flowline_loadgen_sends_total{worker=\"0\"}");
    let acks = sample(&last, "flowline_loadgen_acks_total{worker=\"0\"}");
    let deliveries = sample(&last, "flowline_loadgen_deliveries_total{worker=\"0\"}");
    assert!(
        sends > sends_mid,
        "sends did not move: {sends_mid} → {sends}"
    );
    assert_eq!(acks, sends);
    assert!(deliveries > sends, "{last}");
    assert_eq!(
        sample(&last, "flowline_loadgen_lost_total{worker=\"0\"}"),
        0.0
    );
    assert_eq!(
        sample(
            &last,
            "flowline_loadgen_latency_seconds_count{worker=\"0\",metric=\"delivery\"}"
        ),
        deliveries
    );
    assert_eq!(
        sample(
            &last,
            "flowline_loadgen_latency_seconds_count{worker=\"0\",metric=\"connect\"}"
        ),
        100.0
    );
    assert_eq!(
        sample(
            &last,
            "flowline_loadgen_latency_seconds_bucket{worker=\"0\",metric=\"ready\",le=\"+Inf\"}"
        ),
        100.0
    );
    assert!(last.contains("# TYPE flowline_loadgen_latency_seconds histogram"));
    stop.cancel();
    drop(node);
}
