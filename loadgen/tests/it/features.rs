//! Feature personas over the WebSocket (typing, reactions, threads, presence, uploads) and
//! HTTP personas on goose (login storm, history paging, uploads), against a real node.
//!
//! Every operation must be answered exactly once, succeed (the node implements every
//! feature), and be counted under its kind; the chat traffic beside it must stay correct.

use std::collections::BTreeMap;
use std::sync::Arc;

use flowline_loadgen::aggregate::{Aggregator, RunMeta, Summary};
use flowline_loadgen::plan::{self, Shard};
use flowline_loadgen::scenario::Scenario;
use flowline_loadgen::worker::{self, WorkerConfig};
use tokio_util::sync::CancellationToken;

use crate::util::{SECRET, scenario_with, start_node};

async fn run(scenario: Scenario, out: Option<std::path::PathBuf>) -> Summary {
    let node = start_node().await;
    let scenario = Arc::new(scenario);
    let plan = Arc::new(
        plan::provision(&scenario, &node.http, SECRET)
            .await
            .unwrap(),
    );
    let cfg = WorkerConfig {
        scenario: scenario.clone(),
        plan,
        shard: Shard { index: 0, count: 1 },
        targets: vec![node.ws.clone()],
        start_at: None,
        clock_offset_us: 0,
        threads: 2,
        metrics: None,
        out,
    };
    let mut lines = Vec::new();
    worker::run(cfg, CancellationToken::new(), |l| lines.push(l.to_string()))
        .await
        .unwrap();
    let mut agg = Aggregator::new(&scenario, 1);
    for l in &lines {
        agg.ingest(0, l).unwrap();
    }
    drop(node);
    agg.summarize(RunMeta::default())
}

/// Errors whose kind starts with `prefix`.
fn errors_of(errors: &BTreeMap<String, u64>, prefix: &str) -> u64 {
    errors
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, n)| n)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feature_operations_are_sent_counted_and_answered() {
    let persona = r#"
[[personas]]
name = "featureful"
messages_per_minute = 60
typing = true
reactions_per_minute = 60
thread_reply_share = 0.3
presence_per_minute = 40
uploads_per_minute = 30
"#;
    let s = run(scenario_with(40, 9, persona), None).await;
    let ops = &s.totals.ops_by_kind;
    let errs = &s.totals.errors_by_kind;
    let n = |k: &str| ops.get(k).copied().unwrap_or(0);
    for kind in ["typing", "react", "start_thread", "set_presence", "upload"] {
        assert!(n(kind) > 0, "no {kind} sent: {ops:?}");
    }
    // Every typing indicator goes with a message.
    assert!(n("typing") <= s.totals.sent, "{ops:?}");
    // Every operation with a request id is answered once: ok or an error of its kind.
    for kind in ["react", "set_presence", "start_thread", "upload"] {
        let answered = n(&format!("{kind}_ok")) + errors_of(errs, &format!("{kind}:"));
        assert_eq!(answered, n(kind), "{kind}: ops {ops:?} errors {errs:?}");
    }
    // The node implements every feature: each one succeeds.
    for kind in ["react", "set_presence", "start_thread", "upload"] {
        assert_eq!(n(&format!("{kind}_ok")), n(kind), "{kind}: errors {errs:?}");
    }
    assert_eq!(n("send_attachment") > 0, n("upload_ok") > 0, "{ops:?}");
    // Thread replies only after a thread exists.
    assert!(
        n("thread_reply") == 0 || n("start_thread_ok") > 0,
        "{ops:?}"
    );
    // The chat traffic around the features stays correct.
    let c = &s.correctness;
    assert!(c.expected > 100, "{c:?}");
    assert_eq!(
        (c.lost, c.duplicated, c.reordered, c.gaps),
        (0, 0, 0, 0),
        "{c:?}"
    );
    assert_eq!(s.totals.acked, s.totals.sent, "{errs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_personas_run_on_goose_and_fold_into_the_summary() {
    let personas = r#"
[[personas]]
name = "storm"
weight = 1
http = "login"
requests_per_minute = 60

[[personas]]
name = "pager"
weight = 1
http = "history"
requests_per_minute = 240

[[personas]]
name = "uploader"
weight = 1
http = "upload"
requests_per_minute = 120
"#;
    let dir = tempfile::tempdir().unwrap();
    let s = run(
        scenario_with(60, 4, personas),
        Some(dir.path().to_path_buf()),
    )
    .await;
    let http = s.http.as_ref().expect("an http report");
    let stat = |k: &str| {
        http.kinds
            .get(k)
            .unwrap_or_else(|| panic!("no {k} in {:?}", http.kinds.keys()))
    };
    let storm = stat("login");
    let signup = stat("signup");
    assert!(signup.requests > 0 && signup.fail == 0, "{signup:?}");
    assert!(storm.requests > 0, "{storm:?}");
    assert_eq!(storm.success, storm.requests, "{storm:?}");
    assert_eq!(storm.status_codes.get("200"), Some(&storm.requests));
    let lat = storm.latency_us.as_ref().unwrap();
    assert_eq!(lat.count, storm.requests);
    assert!(lat.p50 > 0 && lat.p50 <= lat.p99);
    let pager = stat("history");
    assert!(
        pager.requests > 0 && pager.success == pager.requests,
        "{pager:?}"
    );
    let up = stat("upload");
    assert!(up.requests > 0, "{up:?}");
    // Every upload is stored (201); a failure would be counted as an error of its kind.
    assert_eq!(up.fail, 0, "{:?}", s.totals.errors_by_kind);
    assert_eq!(errors_of(&s.totals.errors_by_kind, "http:upload:"), 0);
    assert_eq!(up.success + up.fail, up.requests);
    assert_eq!(up.success, up.status_codes.get("201").copied().unwrap_or(0));
    // Goose's own HTML report is kept in the run folder.
    assert_eq!(http.reports.len(), 1);
    let report = std::fs::read_to_string(dir.path().join("goose-report-w0.html")).unwrap();
    assert!(
        report.contains("<html") || report.contains("<!DOCTYPE"),
        "{}",
        &report[..200.min(report.len())]
    );
    // The WebSocket chatters beside them stay correct.
    assert!(s.correctness.expected > 0);
    assert_eq!(s.correctness.lost, 0);
}
