//! docker-compose.yml, the Dockerfile and dashboards/ checked against the workspace:
//! every file they mount, copy or build from exists, host ports do not collide, every
//! image is pinned to a version, the nodes' and the loadtest's command lines are accepted
//! by the real `flowline` binary, and the proxies, Prometheus targets and Grafana
//! provisioning line up with the services.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_norway::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn compose() -> Value {
    let text = std::fs::read_to_string(root().join("docker-compose.yml")).unwrap();
    let mut v: Value = serde_norway::from_str(&text).unwrap();
    // Resolve `<<: *anchor` merge keys as compose does.
    v.apply_merge().unwrap();
    v
}

fn services(v: &Value) -> BTreeMap<String, Value> {
    v["services"]
        .as_mapping()
        .expect("services")
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().to_string(), v.clone()))
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .map(|x| x.as_str().expect("a string").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// A `name:tag` reference pinned to a version: a tag that is not `latest` and has a digit.
fn assert_pinned(what: &str, image: &str) {
    let (name, tag) = image
        .rsplit_once(':')
        .filter(|(n, _)| !n.is_empty())
        .unwrap_or_else(|| panic!("{what}: image {image:?} has no tag"));
    assert!(
        !tag.contains('/') && tag != "latest" && tag.chars().any(|c| c.is_ascii_digit()),
        "{what}: image {name} is not pinned to a version ({tag:?})"
    );
}

#[test]
fn every_mounted_or_built_file_exists() {
    let v = compose();
    let mut checked = 0;
    for (name, s) in services(&v) {
        for m in strings(&s["volumes"]) {
            let src = m.split(':').next().unwrap();
            if src.starts_with("./") || src.starts_with('/') {
                let p = root().join(src);
                assert!(p.exists(), "{name} mounts {src}, which does not exist");
                checked += 1;
            } else {
                assert!(
                    v["volumes"].get(src).is_some(),
                    "{name} mounts the volume {src}, which is not declared"
                );
            }
        }
        if let Some(b) = s.get("build") {
            let ctx = root().join(b["context"].as_str().unwrap());
            assert!(ctx.is_dir(), "{name} builds from {}", ctx.display());
            let df = ctx.join(b["dockerfile"].as_str().unwrap_or("Dockerfile"));
            assert!(df.is_file(), "{name}: no {}", df.display());
            checked += 1;
        }
    }
    assert!(checked >= 6, "only {checked} files checked");
    // What the Dockerfile copies from the context exists and is not ignored.
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    for line in dockerfile.lines().filter(|l| l.starts_with("COPY ")) {
        if line.contains("--from=") {
            continue;
        }
        let parts: Vec<&str> = line.split_whitespace().collect();
        for src in &parts[1..parts.len() - 1] {
            if *src == "." {
                continue;
            }
            assert!(
                root().join(src).exists(),
                "Dockerfile copies {src}: missing"
            );
            assert!(
                !ignore.lines().any(|l| l.trim() == *src),
                "Dockerfile copies {src}, which .dockerignore excludes"
            );
        }
    }
    // The workspace build needs the migrations (embedded at compile time) and the lock.
    for needed in ["migrations", "Cargo.lock"] {
        assert!(
            !ignore.lines().any(|l| l.trim() == needed),
            ".dockerignore excludes {needed}"
        );
    }
}

#[test]
fn host_ports_do_not_collide_and_bind_loopback() {
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for (name, s) in services(&compose()) {
        for p in strings(&s["ports"]) {
            let parts: Vec<&str> = p.split(':').collect();
            assert_eq!(
                parts.len(),
                3,
                "{name}: port {p:?} is not ip:host:container"
            );
            assert_eq!(parts[0], "127.0.0.1", "{name}: port {p} is not on loopback");
            let host = format!("{}:{}", parts[0], parts[1]);
            if let Some(other) = seen.insert(host.clone(), name.clone()) {
                panic!("host port {host} is used by {other} and {name}");
            }
        }
    }
    assert!(seen.len() >= 6, "{seen:?}");
}

#[test]
fn every_image_is_pinned_to_a_version() {
    let mut n = 0;
    for (name, s) in services(&compose()) {
        let image = s["image"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no image"));
        assert_pinned(&name, image);
        n += 1;
    }
    assert!(n >= 8, "{n} services");
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let froms: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("FROM "))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert!(froms.len() >= 2, "not a multi-stage build: {froms:?}");
    for f in froms {
        assert_pinned("Dockerfile", f);
    }
    // Catch the checker itself accepting anything.
    let bad = std::panic::catch_unwind(|| assert_pinned("x", "grafana/grafana:latest"));
    assert!(bad.is_err());
    let bad = std::panic::catch_unwind(|| assert_pinned("x", "localhost:5000/flowline"));
    assert!(bad.is_err());
}

/// The nodes' command lines are accepted by the real `flowline server` (parsed, not run:
/// a first argument it does not know makes clap exit 2 before anything starts), and agree
/// with the Toxiproxy proxies and Prometheus' targets.
#[test]
fn node_settings_are_what_flowline_server_accepts() {
    let v = compose();
    let all = services(&v);
    let proxies: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(root().join("compose/toxiproxy.json")).unwrap(),
    )
    .unwrap();
    let listen_ports: BTreeMap<String, String> = proxies
        .iter()
        .map(|p| {
            let port = p["listen"].as_str().unwrap().rsplit(':').next().unwrap();
            (
                port.to_string(),
                p["upstream"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let prometheus = std::fs::read_to_string(root().join("dashboards/prometheus.yml")).unwrap();
    let prom: Value = serde_norway::from_str(&prometheus).unwrap();
    let static_targets: BTreeSet<String> = prom["scrape_configs"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|c| {
            c["static_configs"]
                .as_sequence()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .flat_map(|s| strings(&s["targets"]))
        })
        .collect();
    let mut nodes = 0;
    for (name, s) in &all {
        let cmd = strings(&s["command"]);
        if cmd.first().map(String::as_str) != Some("server") {
            continue;
        }
        nodes += 1;
        // `--help` after the flags: clap validates every flag first, then prints help.
        let out = crate::util::flowline()
            .args(&cmd)
            .arg("--help")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: `flowline {}` is refused: {}",
            cmd.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        let flag = |f: &str| {
            cmd.iter()
                .position(|a| a == f)
                .and_then(|i| cmd.get(i + 1))
                .unwrap_or_else(|| panic!("{name}: no {f}"))
                .clone()
        };
        assert_eq!(flag("--node-id"), *name);
        assert_eq!(flag("--phase"), "pubsub");
        let listen_port = flag("--listen").rsplit(':').next().unwrap().to_string();
        assert!(
            static_targets.contains(&format!("{name}:{listen_port}")),
            "Prometheus does not scrape {name}:{listen_port}: {static_targets:?}"
        );
        // Postgres and Redis go through this node's own Toxiproxy proxy.
        for (f, upstream) in [
            ("--database-url", "postgres:5432"),
            ("--redis-url", "redis:6379"),
        ] {
            let url = url::Url::parse(&flag(f)).unwrap();
            assert_eq!(url.host_str(), Some("toxiproxy"), "{name} {f}");
            let port = url.port().unwrap().to_string();
            assert_eq!(
                listen_ports.get(&port).map(String::as_str),
                Some(upstream),
                "{name} {f}: no proxy on port {port} to {upstream}"
            );
        }
        // A bad flag is refused the same way, so the check above can fail.
        let out = crate::util::flowline()
            .args(&cmd)
            .args(["--no-such-flag", "--help"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
    }
    assert_eq!(nodes, 3);
}

/// The loadtest profile runs `flowline run` with flags it accepts, on a scenario that
/// loads, against the three nodes, through the Toxiproxy service.
#[test]
fn loadtest_profile_runs_a_valid_scenario_through_toxiproxy() {
    let all = services(&compose());
    let lt = &all["loadtest"];
    assert_eq!(strings(&lt["profiles"]), ["loadtest"]);
    let cmd = strings(&lt["command"]);
    assert_eq!(cmd[0], "run");
    let out = crate::util::flowline()
        .args(&cmd)
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let i = cmd.iter().position(|a| a == "--toxiproxy-url").unwrap();
    let url = url::Url::parse(&cmd[i + 1]).unwrap();
    assert!(all.contains_key(url.host_str().unwrap()));
    // The scenario (copied into the image from compose/) loads and names the nodes.
    // Checked with the run's own --toxiproxy-url, as `flowline run` checks it.
    let out = crate::util::flowline()
        .args(["scenario", "check", "--toxiproxy-url", &cmd[i + 1]])
        .arg(root().join(&cmd[1]))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let scenario = std::fs::read_to_string(root().join(&cmd[1])).unwrap();
    for n in ["node1", "node2", "node3"] {
        assert!(all.contains_key(n));
        assert!(scenario.contains(&format!("http://{n}:8080")), "{n}");
    }
    // Every fault hits a proxy: one the run creates on Toxiproxy (client-node<i>) or one
    // of compose/toxiproxy.json.
    let proxies: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(root().join("compose/toxiproxy.json")).unwrap(),
    )
    .unwrap();
    let mut names: Vec<String> = proxies
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    names.extend((1..=3).map(|i| format!("client-node{i}")));
    let parsed: toml::Value = toml::from_str(&scenario).unwrap();
    let faults = parsed["faults"].as_array().unwrap();
    assert!(!faults.is_empty());
    for f in faults {
        let target = f["target"].as_str().unwrap();
        assert!(
            names
                .iter()
                .any(|n| flowline_harness::topology::glob_match(target, n)),
            "fault target {target} matches no proxy: {names:?}"
        );
        assert_eq!(
            f.get("allow_non_loopback").and_then(toml::Value::as_bool),
            Some(true),
            "fault on {target}: the compose network is not loopback"
        );
    }
}

/// Grafana's provisioning points at the dashboards and at the compose Prometheus.
#[test]
fn grafana_provisioning_matches_the_dashboards() {
    let all = services(&compose());
    let g = &all["grafana"];
    let mounts = strings(&g["volumes"]);
    let ds: Value = serde_norway::from_str(
        &std::fs::read_to_string(
            root().join("dashboards/grafana/provisioning/datasources/prometheus.yml"),
        )
        .unwrap(),
    )
    .unwrap();
    let url = ds["datasources"][0]["url"].as_str().unwrap();
    let u = url::Url::parse(url).unwrap();
    assert!(all.contains_key(u.host_str().unwrap()), "{url}");
    assert!(strings(&all["prometheus"]["ports"])[0].ends_with(&format!(":{}", u.port().unwrap())));
    let prov: Value = serde_norway::from_str(
        &std::fs::read_to_string(
            root().join("dashboards/grafana/provisioning/dashboards/flowline.yml"),
        )
        .unwrap(),
    )
    .unwrap();
    let path = prov["providers"][0]["options"]["path"].as_str().unwrap();
    for d in ["cluster.json", "load.json"] {
        assert!(
            mounts
                .iter()
                .any(|m| m.ends_with(&format!("{path}/{d}:ro"))),
            "{d} is not mounted under {path}: {mounts:?}"
        );
        let dash: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(root().join("dashboards").join(d)).unwrap(),
        )
        .unwrap();
        let vars = dash["templating"]["list"].as_array().unwrap();
        assert!(
            vars.iter()
                .any(|v| v["name"] == "datasource" && v["type"] == "datasource"),
            "{d} has no datasource variable"
        );
    }
}
