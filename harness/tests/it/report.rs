//! report.html and compare.html from run folders, without running anything.

use crate::util::{run, stderr, synthetic_run};

#[test]
fn report_renders_every_section_from_a_run_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("20261128-030000-synthetic");
    synthetic_run(&dir);
    let o = run(&["report", dir.to_str().unwrap()], tmp.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    if let Ok(keep) = std::env::var("FLOWLINE_KEEP_REPORT") {
        std::fs::copy(dir.join("report.html"), keep).unwrap();
    }
    for needle in [
        "delivery latency percentiles, per second",
        "connect latency percentiles, per second",
        "ack latency percentiles, per second",
        ">p90</text>",
        ">max</text>",
        "Connected users",
        "Send rate (sent and acked)",
        "Delivery rate",
        "Errors",
        "delivery: percentile distribution",
        "connect: percentile distribution",
        "<h2>Correctness</h2>",
        "<h2>Thresholds</h2>",
        "lost == 0",
        "FAILED",
        "latency client-node*",
        "seed <b>42</b>",
        "phase <b>single</b>",
        "revision <b>abc1234</b>",
        "synthetic",
    ] {
        assert!(html.contains(needle), "report.html lacks {needle:?}");
    }
    // No node warnings in the summary: no such section.
    assert!(!html.contains("Node warnings and errors"));
    // Self-contained: no scripts, no external resources.
    assert!(!html.contains("<script"));
    assert!(!html.contains("http://") && !html.contains("https://"));
    // The fault window is shaded from 10 s to 15 s on the time charts.
    assert!(html.matches("fill-opacity=\"0.10\"").count() >= 4);
}

#[test]
fn report_shows_the_nodes_most_frequent_warnings() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("20261128-030000-synthetic");
    synthetic_run(&dir);
    let path = dir.join("summary.json");
    let mut summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    summary["node_errors"] = serde_json::json!({
        "warnings": 2000, "errors": 3, "distinct": 2,
        "top": [
            {"level": "WARN", "message": "flowline_server::presence: cannot announce presence: storage failed error=database: pool timed out <after> #",
             "count": 2000, "nodes": ["node1", "node2"], "example": "flowline_server::presence: cannot announce presence …"},
            {"level": "ERROR", "message": "flowline_server::session: storage failed during a session",
             "count": 3, "nodes": ["node3"], "example": "flowline_server::session: storage failed during a session"}
        ]
    });
    std::fs::write(&path, summary.to_string()).unwrap();
    let o = run(&["report", dir.to_str().unwrap()], tmp.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    for needle in [
        "<h2>Node warnings and errors</h2>",
        "2000 warning(s) and 3 error(s), 2 distinct",
        "<td>2000</td>",
        "pool timed out &lt;after&gt; #",
        "node1, node2",
        "<td>3</td><td class=\"l\">ERROR</td>",
    ] {
        assert!(html.contains(needle), "report.html lacks {needle:?}");
    }
}

#[test]
fn compare_prints_a_table_and_writes_overlaid_curves() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("runs/a");
    let b = tmp.path().join("runs/b");
    synthetic_run(&a);
    synthetic_run(&b);
    let o = run(
        &["compare", a.to_str().unwrap(), b.to_str().unwrap()],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.contains("delivery p99 (ms)"), "{table}");
    assert!(
        table.contains("lost") && table.contains("thresholds held"),
        "{table}"
    );
    let html = std::fs::read_to_string(tmp.path().join("runs/compare.html")).unwrap();
    if let Ok(keep) = std::env::var("FLOWLINE_KEEP_COMPARE") {
        std::fs::write(keep, &html).unwrap();
    }
    assert!(html.contains("run 1") && html.contains("run 2"));
    assert!(html.contains("delivery: percentile distribution"));
    // Per-second curves of both runs, with the fault windows shaded and listed.
    assert!(html.contains("Delivery rate") && html.contains("Connected users"));
    assert!(
        html.contains("run 2: latency client-node*"),
        "no shaded window of run 2"
    );
    assert!(html.contains("class=\"fault-windows\""));
    // Same seed, scenario and users: no warning.
    assert!(!table.contains("not identical"), "{table}");
    assert!(!html.contains("not identical"));
}

#[test]
fn compare_warns_when_the_load_was_not_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("runs/a");
    let b = tmp.path().join("runs/b");
    synthetic_run(&a);
    synthetic_run(&b);
    // Run b: another seed, and a different phase (which is what a comparison varies and
    // must not count as a different load).
    for f in ["scenario.toml", "summary.json"] {
        let text = std::fs::read_to_string(b.join(f)).unwrap();
        let text = text
            .replace("seed = 42", "seed = 43")
            .replace("\"seed\": 42", "\"seed\": 43")
            .replace("phase = \"single\"", "phase = \"pubsub\"");
        std::fs::write(b.join(f), text).unwrap();
    }
    let o = run(
        &["compare", a.to_str().unwrap(), b.to_str().unwrap()],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.contains("the load was not identical"), "{table}");
    assert!(
        table.contains("seeds differ (run 1: 42, run 2: 43)"),
        "{table}"
    );
    assert!(!table.contains("scenario files differ"), "{table}");
    assert!(!table.contains("user counts differ"), "{table}");
    let html = std::fs::read_to_string(tmp.path().join("runs/compare.html")).unwrap();
    assert!(html.contains("the load was not identical"), "{html}");
    assert!(html.contains("seeds differ (run 1: 42, run 2: 43)"));

    // Other users: the scenario differs too.
    let text = std::fs::read_to_string(b.join("scenario.toml")).unwrap();
    std::fs::write(
        b.join("scenario.toml"),
        text.replace("users = 1000", "users = 10"),
    )
    .unwrap();
    let o = run(
        &["compare", a.to_str().unwrap(), b.to_str().unwrap()],
        tmp.path(),
    );
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.contains("user counts differ (run 1: 1000, run 2: 10)"),
        "{table}"
    );
    assert!(table.contains("scenario files differ"), "{table}");
}

#[test]
fn compare_of_a_missing_folder_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let o = run(&["compare", "nope"], tmp.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not a run folder"), "{}", stderr(&o));
}
