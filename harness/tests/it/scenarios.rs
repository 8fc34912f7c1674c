//! The scenario catalog: every file parses, says what it is for, and targets only links
//! and nodes the harness creates for its phase.

use std::path::PathBuf;

use flowline_loadgen::scenario::Scenario;

fn catalog() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_catalog_scenario_is_valid_documented_and_targets_real_links() {
    let files = catalog();
    for name in [
        "hot-channel",
        "partition-redis",
        "node-crash",
        "slow-postgres",
        "reconnect-storm",
    ] {
        assert!(
            files.iter().any(|f| f.file_stem().unwrap() == name),
            "scenarios/{name}.toml is missing"
        );
    }
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            text.starts_with("# "),
            "{} has no header comment",
            f.display()
        );
        let s = Scenario::from_path(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        flowline_harness::run::check_fault_targets(&s)
            .unwrap_or_else(|e| panic!("{}: {e:#}", f.display()));
    }
}
