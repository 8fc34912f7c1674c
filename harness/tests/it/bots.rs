//! `flowline run scenarios/bots-and-humans.toml --phase postgres` through the real binary:
//! HTTP bots and a flooder beside WebSocket users on a Postgres-backed node pass the
//! scenario's thresholds, the flood is refused, and the bots' retries post nothing twice.

use std::path::PathBuf;

use serde_json::Value;

use crate::util::{flowline, marked_processes, new_mark, only_run_dir, stderr};

#[test]
fn bots_and_humans_passes_on_postgres_with_the_flood_refused_and_nothing_posted_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let mark = new_mark();
    let scenario =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios/bots-and-humans.toml");
    let mut args = vec![
        "run".to_string(),
        scenario.to_string_lossy().into_owned(),
        "--out".into(),
        "runs".into(),
        "--phase".into(),
        "postgres".into(),
    ];
    // The Postgres of the test environment when there is one (a database of its own per
    // run), else a throwaway server.
    if let Ok(url) = std::env::var("DATABASE_URL") {
        args.extend(["--database-url".into(), url]);
    }
    let o = flowline()
        .args(&args)
        .env("FLOWLINE_TEST_MARK", &mark)
        .current_dir(tmp.path())
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("flowline: PASSED"), "{err}");

    let dir = only_run_dir(&tmp.path().join("runs"));
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    let num = |v: &Value| {
        v.as_u64()
            .unwrap_or_else(|| panic!("not a count: {v} in {summary:#}"))
    };
    assert_eq!(summary["passed"], true, "{summary:#}");
    assert_eq!(summary["meta"]["phase"], "postgres", "{summary:#}");
    // The flood was refused, counted the same in summary.json and in its HTTP answers.
    let refused = num(&summary["rate_limited"]["count"]);
    assert!(refused > 0, "{summary:#}");
    let kinds = &summary["http"]["kinds"];
    assert_eq!(num(&kinds["flood_post"]["status_codes"]["429"]), refused);
    // Every kind of bot and flood request was made and answered.
    for k in [
        "bot_post",
        "bot_retry",
        "bot_edit",
        "bot_react",
        "flood_post",
    ] {
        let r = &kinds[k];
        assert!(num(&r["requests"]) > 0, "no {k}: {kinds:#}");
        assert!(num(&r["success"]) > 0, "no {k} succeeded: {r:#}");
    }
    // The bots were never refused: their retries were all answered with the first post.
    assert_eq!(
        num(&kinds["bot_retry"]["status_codes"]["201"]),
        num(&kinds["bot_retry"]["requests"])
    );
    let ops = &summary["totals"]["ops_by_kind"];
    assert_eq!(num(&ops["bot_retry_replayed"]), num(&ops["bot_retry"]));
    // Nothing lost, nothing delivered twice, no refused post delivered.
    let c = &summary["correctness"];
    assert_eq!(num(&c["lost"]), 0, "{c:#}");
    assert_eq!(num(&c["anomalies"]["duplicate"]["count"]), 0, "{c:#}");
    assert_eq!(num(&c["anomalies"]["g1a"]["count"]), 0, "{c:#}");
    assert!(num(&c["expected"]) > 0, "{c:#}");
    // The refusals are in the timeline and drawn in the report.
    let csv = std::fs::read_to_string(dir.join("timeline.csv")).unwrap();
    assert!(
        csv.lines().next().unwrap().ends_with(",rate_limited"),
        "{csv}"
    );
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(
        html.contains(">rate_limited</text>"),
        "no rate_limited series"
    );
    assert!(marked_processes(&mark).is_empty());
}
