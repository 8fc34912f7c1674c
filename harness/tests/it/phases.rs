//! `flowline run SCENARIO --phases ...`: one seed, one run folder per phase, one comparison.

use std::path::Path;

use crate::util::{only_run_dir, run, stderr};

/// A small scenario without a seed, so that `--phases` has to draw one.
fn unseeded_scenario(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("phases.toml");
    std::fs::write(
        &path,
        "[run]\nname = \"phases\"\nduration = \"2s\"\nwarmup = \"1s\"\ndrain = \"1s\"\n\n[cluster]\nphase = \"pubsub\"\nnodes = 1\n\n[population]\nusers = 40\n\n[[thresholds]]\nexpr = \"lost == 0\"\n",
    )
    .unwrap();
    path
}

fn seed_of(scenario_toml: &Path) -> String {
    let text = std::fs::read_to_string(scenario_toml).unwrap();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("seed = "))
        .unwrap_or_else(|| panic!("no seed in {}:\n{text}", scenario_toml.display()))
        .to_string()
}

#[test]
fn phases_share_one_seed_and_end_in_one_comparison() {
    let tmp = tempfile::tempdir().unwrap();
    let path = unseeded_scenario(tmp.path());
    let mut args = vec![
        "run".to_string(),
        path.to_str().unwrap().to_string(),
        "--out".into(),
        "runs".into(),
        "--phases".into(),
        "single,postgres".into(),
    ];
    // The Postgres of the test environment when there is one, else a throwaway server.
    if let Ok(url) = std::env::var("DATABASE_URL") {
        args.extend(["--database-url".into(), url]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = run(&args, tmp.path());
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");

    let parent = only_run_dir(&tmp.path().join("runs"));
    assert!(
        parent
            .file_name()
            .unwrap()
            .to_string_lossy()
            .ends_with("-phases"),
        "{}",
        parent.display()
    );
    let single = only_run_dir(&parent.join("single"));
    let postgres = only_run_dir(&parent.join("postgres"));
    let seed = seed_of(&single.join("scenario.toml"));
    assert_eq!(seed, seed_of(&postgres.join("scenario.toml")));
    assert!(err.contains(&format!("seed {seed} for all")), "{err}");
    for (dir, phase) in [(&single, "single"), (&postgres, "postgres")] {
        let summary = std::fs::read_to_string(dir.join("summary.json")).unwrap();
        assert!(
            summary.contains(&format!("\"phase\": \"{phase}\"")),
            "{summary}"
        );
    }

    let html = std::fs::read_to_string(parent.join("compare.html")).unwrap();
    assert!(html.contains("Delivery rate"), "no per-second curves");
    assert!(html.contains("percentile distribution"));
    assert!(
        !html.contains("not identical"),
        "same seed and scenario: no warning"
    );
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.contains("single") && table.contains("postgres"),
        "{table}"
    );
    assert!(!table.contains("not identical"), "{table}");
    // The last lines say what each phase did.
    let tail: Vec<&str> = err.lines().rev().take(4).collect();
    assert!(
        tail.iter()
            .any(|l| l.contains("single") && l.contains("PASSED")),
        "{err}"
    );
    assert!(
        tail.iter()
            .any(|l| l.contains("postgres") && l.contains("PASSED")),
        "{err}"
    );
}

#[test]
fn an_unknown_phase_exits_2_before_anything_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let path = unseeded_scenario(tmp.path());
    let o = run(
        &[
            "run",
            path.to_str().unwrap(),
            "--out",
            "runs",
            "--phases",
            "single,bogus",
        ],
        tmp.path(),
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--phases"), "{}", stderr(&o));
    assert!(!tmp.path().join("runs").exists());
}

#[test]
fn a_phase_that_cannot_be_carried_out_exits_2_and_the_others_still_run() {
    let tmp = tempfile::tempdir().unwrap();
    let path = unseeded_scenario(tmp.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/x");
    let o = run(
        &[
            "run",
            path.to_str().unwrap(),
            "--out",
            "runs",
            "--phases",
            "postgres,single",
            "--database-url",
            &url,
        ],
        tmp.path(),
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    let parent = only_run_dir(&tmp.path().join("runs"));
    only_run_dir(&parent.join("single"));
    assert!(parent.join("compare.html").exists());
    let tail: Vec<&str> = err.lines().rev().take(4).collect();
    assert!(
        tail.iter()
            .any(|l| l.contains("postgres") && l.contains("not carried out")),
        "{err}"
    );
    assert!(
        tail.iter()
            .any(|l| l.contains("single") && l.contains("PASSED")),
        "{err}"
    );
}
