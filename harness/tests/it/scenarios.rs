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
        "asymmetric-partition",
        "lossy-clients",
        "capacity-100k",
        "capacity-100k-2cores",
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
        flowline_harness::topology::check_fault_targets(&s)
            .unwrap_or_else(|e| panic!("{}: {e:#}", f.display()));
    }
}

/// The 100k showcase: pubsub on 6–8 nodes, runnable with `--phase queue`, a latency fault
/// on the client links and a Redis cut; on a machine of 20,000 files per process it needs
/// no process above ~18k files, its client links spread over processes, its users over
/// enough source addresses that no (source, destination) pair runs out of ports.
#[test]
fn capacity_100k_fits_a_machine_of_20k_files_per_process_in_both_phases() {
    use flowline_harness::capacity::{Limits, LinkMode, Need};
    use flowline_loadgen::scenario::{Overrides, Phase};
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios/capacity-100k.toml");
    let s = Scenario::from_path(&path).unwrap();
    assert_eq!(s.population.users, 100_000);
    assert!((6..=8).contains(&s.cluster.nodes), "{}", s.cluster.nodes);
    assert_eq!(s.cluster.phase, Phase::Pubsub);
    let targets: Vec<&str> = s.faults.iter().map(|f| f.target.as_str()).collect();
    assert_eq!(targets, ["client-node*", "node*-redis"]);
    let machine = Limits {
        files_per_process: 20_000,
        ports: 28_232,
        system_files: 2_000_000,
    };
    for phase in [Phase::Pubsub, Phase::Queue] {
        let s = flowline_harness::preflight::prepare(
            s.clone(),
            &Overrides {
                phase: Some(phase),
                ..Overrides::default()
            },
        )
        .unwrap();
        flowline_harness::topology::check_fault_targets(&s).unwrap();
        let need = Need::of(&s, None, LinkMode::Embedded(None), machine).unwrap();
        need.check(machine).unwrap();
        assert!(need.link_processes >= 2, "{need:?}");
        for files in [
            need.files_per_node,
            need.files_per_worker,
            need.files_per_link_process,
        ] {
            assert!(files <= 18_000, "{}", need.describe());
        }
        assert!(need.source_addresses >= 5, "{need:?}");
        assert!(need.connections_per_pair < machine.ports, "{need:?}");
    }
}

/// `flowline scenario check` runs the topology checks `flowline run` does: a fault aimed
/// at a link the run will not have (phase `single` has no `node1-redis`) fails the check
/// with the run's message, while the same scenario aimed at a link it has passes.
#[test]
fn scenario_check_refuses_a_fault_on_a_link_the_run_will_not_have() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, target: &str| {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "[run]\nname = \"{name}\"\nduration = \"5s\"\n[cluster]\nphase = \"single\"\n\
                 [population]\nusers = 10\n[[faults]]\nat = \"1s\"\nkind = \"down\"\n\
                 target = \"{target}\"\n"
            ),
        )
        .unwrap();
        path
    };
    let check = |path: &std::path::Path| {
        crate::util::flowline()
            .env_remove("FLOWLINE_TOXIPROXY_URL")
            .args(["scenario", "check"])
            .arg(path)
            .output()
            .unwrap()
    };
    let good = check(&write("good", "client-node1"));
    let stdout = String::from_utf8_lossy(&good.stdout);
    assert!(
        good.status.success(),
        "{stdout}{}",
        crate::util::stderr(&good)
    );
    assert!(stdout.starts_with("OK "), "{stdout}");

    let bad = check(&write("bad", "node1-redis"));
    let stdout = String::from_utf8_lossy(&bad.stdout);
    assert_eq!(bad.status.code(), Some(2), "{stdout}");
    assert!(
        stdout.contains("bad.toml")
            && stdout.contains("fault #1")
            && stdout.contains("\"node1-redis\", which matches nothing in this run"),
        "{stdout}"
    );
    assert!(!stdout.contains("OK "), "{stdout}");
}

/// Kernel faults need the run's hosts in network namespaces, and an isolated run has no
/// link proxies: `flowline scenario check` refuses either mismatch with the reason, and
/// passes a kernel fault between hosts the isolated run will have.
#[test]
fn scenario_check_refuses_kernel_faults_without_isolation_and_link_faults_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, isolation: &str, fault: &str| {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "[run]\nname = \"{name}\"\nduration = \"5s\"\n[cluster]\nphase = \"queue\"\n\
                 nodes = 2\n{isolation}\n[population]\nusers = 10\n[[faults]]\nat = \"1s\"\n{fault}\n"
            ),
        )
        .unwrap();
        path
    };
    let check = |path: &std::path::Path| {
        let out = crate::util::flowline()
            .env_remove("FLOWLINE_TOXIPROXY_URL")
            .args(["scenario", "check"])
            .arg(path)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let netns = "isolation = \"netns\"";
    let partition =
        "kind = \"partition\"\ntarget = \"node2\"\npeer = \"redis\"\ndirection = \"to\"";
    let (code, out) = check(&write("good", netns, partition));
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.starts_with("OK ") && out.contains("in network namespaces"),
        "{out}"
    );

    let (code, out) = check(&write("plain", "", partition));
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("fault #1") && out.contains("isolation = \"netns\""),
        "{out}"
    );

    let (code, out) = check(&write(
        "link",
        netns,
        "kind = \"down\"\ntarget = \"node2-redis\"",
    ));
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("no link proxies"), "{out}");

    let (code, out) = check(&write(
        "nohost",
        netns,
        "kind = \"loss\"\npercent = 5.0\ntarget = \"mongo\"",
    ));
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("matches no host") && out.contains("node1, node2, postgres, redis, worker1"),
        "{out}"
    );
}
