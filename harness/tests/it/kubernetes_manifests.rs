//! `flowline k8s manifests` and `deploy/kubernetes/`, without a cluster: the printed YAML
//! against golden files, every document parsed back through `k8s-openapi` types, and the
//! input checks that refuse a bad namespace, a missing image or zero workers.
//!
//! The golden files hold the objects' structure; the ConfigMap's scenario.toml and
//! plan.json (which follow the scenario model) are checked by parsing them instead.
//! `UPDATE_GOLDEN=1` rewrites the golden files.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use flowline_loadgen::plan::Plan;
use flowline_loadgen::scenario::Scenario;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use serde::Deserialize;

use crate::util::{flowline, stderr};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A generic WebSocket target scenario with a seed (the manifests are then the same
/// every time).
fn ws_scenario(dir: &Path) -> PathBuf {
    let p = dir.join("k8s-ws.toml");
    std::fs::write(
        &p,
        "[run]\nname = \"k8s-ws\"\nduration = \"20s\"\nwarmup = \"2s\"\ndrain = \"2s\"\nseed = 11\n\n\
         [population]\nusers = 300\n\n\
         [target]\nkind = \"websocket\"\nurls = [\"ws://echo.load.svc:9100/\"]\n\
         message = '{{\"user\":{user},\"id\":{msg_id}}}'\nexpect = \"echo\"\nmatch_id = \"/id\"\n",
    )
    .unwrap();
    p
}

/// The documents of a YAML stream, as JSON values.
fn documents(yaml: &str) -> Vec<serde_json::Value> {
    serde_norway::Deserializer::from_str(yaml)
        .map(|d| serde_json::Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn kind(v: &serde_json::Value) -> &str {
    v["kind"].as_str().unwrap_or_default()
}

fn typed<T: serde::de::DeserializeOwned>(v: &serde_json::Value) -> T {
    serde_json::from_value(v.clone())
        .unwrap_or_else(|e| panic!("{} does not parse as its k8s-openapi type: {e}", kind(v)))
}

/// Compare with (or with UPDATE_GOLDEN=1, write) a golden file.
fn golden(name: &str, actual: &str) {
    let path = repo().join("harness/tests/golden/kubernetes").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert_eq!(
        actual,
        want,
        "manifests differ from {} (UPDATE_GOLDEN=1 rewrites it after a deliberate change)",
        path.display()
    );
}

/// Run `flowline k8s manifests`; stdout on success.
fn manifests(args: &[&str]) -> Result<String, String> {
    let out = flowline()
        .args(["k8s", "manifests"])
        .args(args)
        .env_remove("FLOWLINE_IMAGE")
        .env_remove("FLOWLINE_NAMESPACE")
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(out.stdout.is_empty(), "printed YAML and failed");
        Err(stderr(&out))
    }
}

/// Check the objects' invariants through their k8s-openapi types; returns the
/// documents with the ConfigMap's data replaced by placeholders (for the golden file).
fn check_objects(yaml: &str, scenario: &Scenario, ns: &str, workers: i32) -> String {
    let docs = documents(yaml);
    let kinds: Vec<&str> = docs.iter().map(kind).collect();
    let run_label = |v: &serde_json::Value| v["metadata"]["labels"]["flowline.dev/run"].clone();
    let first_label = run_label(&docs[0]);
    assert!(first_label.is_string(), "no run label");
    let mut out = Vec::new();
    for v in &docs {
        assert_eq!(v["metadata"]["namespace"], ns, "{}", kind(v));
        assert_eq!(
            run_label(v),
            first_label,
            "every object carries the run label"
        );
        let mut v = v.clone();
        match kind(&v) {
            "ConfigMap" => {
                let cm: ConfigMap = typed(&v);
                let data = cm.data.unwrap();
                let s = Scenario::parse("configmap", &data["scenario.toml"]).unwrap();
                assert_eq!(&s, scenario, "scenario.toml in the ConfigMap is the run's");
                let plan: Plan = serde_json::from_str(&data["plan.json"]).unwrap();
                assert_eq!(plan.users.len() as u32, scenario.population.users);
                v["data"]["scenario.toml"] = "<the run's scenario.toml>".into();
                v["data"]["plan.json"] = "<the run's plan.json>".into();
            }
            "Job" => {
                let job: Job = typed(&v);
                let spec = job.spec.unwrap();
                assert_eq!(spec.completion_mode.as_deref(), Some("Indexed"));
                assert_eq!(spec.completions, Some(workers));
                assert_eq!(spec.parallelism, Some(workers));
                assert_eq!(spec.backoff_limit, Some(0));
                assert!(
                    spec.active_deadline_seconds.unwrap() > scenario.total_time().as_secs() as i64
                );
                let pod = spec.template.spec.unwrap();
                assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
                let c = &pod.containers[0];
                let args = c.args.clone().unwrap();
                let after = |flag: &str| {
                    let i = args
                        .iter()
                        .position(|a| a == flag)
                        .unwrap_or_else(|| panic!("{flag} missing"));
                    args[i + 1].clone()
                };
                assert_eq!(
                    after("--shard"),
                    format!("$(JOB_COMPLETION_INDEX)/{workers}")
                );
                assert!(after("--coordinator").contains(&format!(".{ns}.svc:")));
                let env = c.env.clone().unwrap();
                let index = env
                    .iter()
                    .find(|e| e.name == "JOB_COMPLETION_INDEX")
                    .unwrap();
                let field = index
                    .value_from
                    .as_ref()
                    .unwrap()
                    .field_ref
                    .as_ref()
                    .unwrap();
                assert!(
                    field
                        .field_path
                        .contains("batch.kubernetes.io/job-completion-index")
                );
                let tmpl = spec.template.metadata.unwrap();
                assert_eq!(tmpl.annotations.unwrap()["prometheus.io/scrape"], "true");
                assert_eq!(tmpl.labels.unwrap()["flowline.dev/run"], first_label);
            }
            "Service" => {
                let _: Service = typed(&v);
            }
            "EndpointSlice" => {
                let e: EndpointSlice = typed(&v);
                let svc = &e.metadata.labels.unwrap()["kubernetes.io/service-name"];
                assert!(
                    docs.iter()
                        .any(|d| kind(d) == "Service" && d["metadata"]["name"] == **svc)
                );
            }
            other => panic!("unexpected object {other}"),
        }
        out.push(format!("---\n{}", serde_norway::to_string(&v).unwrap()));
    }
    assert_eq!(
        kinds.iter().filter(|k| **k == "Job").count(),
        1,
        "{kinds:?}"
    );
    out.concat()
}

#[test]
fn ws_target_manifests_match_golden_and_parse() {
    let d = tempfile::tempdir().unwrap();
    let file = ws_scenario(d.path());
    let yaml = manifests(&[
        file.to_str().unwrap(),
        "--namespace",
        "load",
        "--image",
        "flowline:0.1.0",
        "--workers",
        "3",
        "--coordinator-advertise",
        "10.1.2.3:7450",
    ])
    .unwrap();
    let scenario = Scenario::from_path(&file).unwrap();
    let kinds: Vec<String> = documents(&yaml)
        .iter()
        .map(|v| kind(v).to_string())
        .collect();
    assert_eq!(kinds, ["ConfigMap", "Service", "EndpointSlice", "Job"]);
    let normalized = check_objects(&yaml, &scenario, "load", 3);
    golden("ws-target.yaml", &normalized);
    let slice: EndpointSlice = typed(&documents(&yaml)[2]);
    assert_eq!(slice.endpoints[0].addresses, ["10.1.2.3"]);
    assert_eq!(slice.ports.unwrap()[0].port, Some(7450));
}

#[test]
fn reference_cluster_manifests_with_a_dns_coordinator() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("k8s-ref.toml");
    std::fs::write(
        &file,
        "[run]\nname = \"k8s-ref\"\nduration = \"10s\"\nseed = 5\n\n[cluster]\nphase = \"pubsub\"\nnodes = 2\n\n[population]\nusers = 40\n",
    )
    .unwrap();
    let scenario = Scenario::from_path(&file).unwrap();
    // Without a plan the reference cluster's users are not known: refused.
    let base = [
        file.to_str().unwrap(),
        "--image",
        "registry.example/flowline:0.1.0",
        "--coordinator-advertise",
        "harness.example:7450",
        "--reference-cluster",
    ];
    let err = manifests(&base).unwrap_err();
    assert!(err.contains("--plan"), "{err}");
    let plan = d.path().join("plan.json");
    Plan::synthetic(&scenario).write(&plan).unwrap();
    let mut args = base.to_vec();
    args.extend(["--plan", plan.to_str().unwrap()]);
    let yaml = manifests(&args).unwrap();
    let docs = documents(&yaml);
    let kinds: Vec<&str> = docs.iter().map(kind).collect();
    // A DNS name: an ExternalName Service, no EndpointSlice.
    assert_eq!(kinds, ["ConfigMap", "Service", "Job"]);
    let svc: Service = typed(&docs[1]);
    let spec = svc.spec.unwrap();
    assert_eq!(spec.type_.as_deref(), Some("ExternalName"));
    assert_eq!(spec.external_name.as_deref(), Some("harness.example"));
    let job: Job = typed(&docs[2]);
    let args = job.spec.unwrap().template.spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap();
    let targets = &args[args.iter().position(|a| a == "--targets").unwrap() + 1];
    assert_eq!(
        targets,
        "ws://flowline-node-0.flowline-node.default.svc:8080/ws,ws://flowline-node-1.flowline-node.default.svc:8080/ws"
    );
    // The ConfigMap carries the scenario as written: the pods get the nodes by --targets
    // (and no admin secret).
    let normalized = check_objects(&yaml, &scenario, "default", 1);
    golden("reference-cluster.yaml", &normalized);
}

#[test]
fn bad_input_is_refused_before_any_yaml() {
    let d = tempfile::tempdir().unwrap();
    let file = ws_scenario(d.path());
    let f = file.to_str().unwrap();
    let adv = ["--coordinator-advertise", "10.1.2.3:7450"];
    let with = |extra: &[&str]| {
        let mut a = vec![f];
        a.extend(adv);
        a.extend(extra);
        manifests(&a)
    };
    let e = with(&["--image", "flowline:0.1.0", "--namespace", "Bad_NS"]).unwrap_err();
    assert!(e.contains("not a valid namespace name"), "{e}");
    let e = with(&[]).unwrap_err();
    assert!(e.contains("--image"), "{e}");
    let e = with(&["--image", "flowline:0.1.0", "--workers", "0"]).unwrap_err();
    assert!(e.contains("at least one worker"), "{e}");
    let e = manifests(&[
        f,
        "--image",
        "flowline:0.1.0",
        "--coordinator-advertise",
        "0.0.0.0:7450",
    ])
    .unwrap_err();
    assert!(e.contains("unspecified"), "{e}");
}

/// Every file of deploy/kubernetes/ is listed in its kustomization.yaml and parses as the
/// k8s-openapi type of its kind; the names the launcher relies on are there.
#[test]
fn deploy_kubernetes_parses_through_k8s_openapi() {
    let dir = repo().join("deploy/kubernetes");
    let kustomization: serde_json::Value =
        serde_norway::from_str(&std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap())
            .unwrap();
    let listed: BTreeSet<String> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    let present: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    assert_eq!(listed, present, "kustomization.yaml resources vs files");
    let mut kinds = BTreeSet::new();
    let mut node_set = None;
    let mut services = Vec::new();
    for f in &present {
        for v in documents(&std::fs::read_to_string(dir.join(f)).unwrap()) {
            kinds.insert(kind(&v).to_string());
            match kind(&v) {
                "Namespace" => drop(typed::<Namespace>(&v)),
                "Secret" => drop(typed::<Secret>(&v)),
                "Service" => services.push(typed::<Service>(&v)),
                "StatefulSet" => {
                    let s: StatefulSet = typed(&v);
                    if s.metadata.name.as_deref() == Some("flowline-node") {
                        node_set = Some(s);
                    }
                }
                "Deployment" => drop(typed::<Deployment>(&v)),
                "ServiceAccount" => drop(typed::<ServiceAccount>(&v)),
                "Role" => drop(typed::<Role>(&v)),
                "RoleBinding" => drop(typed::<RoleBinding>(&v)),
                other => panic!("{f}: unexpected kind {other}"),
            }
        }
    }
    for k in ["StatefulSet", "Service", "Deployment", "Role"] {
        assert!(kinds.contains(k), "no {k} in deploy/kubernetes");
    }
    let nodes = node_set.expect("StatefulSet flowline-node");
    let spec = nodes.spec.unwrap();
    assert_eq!(
        spec.service_name.as_deref(),
        Some(flowline_harness::kubernetes::workload::REFERENCE_NODE_SERVICE)
    );
    let headless = services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("flowline-node"))
        .expect("Service flowline-node");
    let hs = headless.spec.as_ref().unwrap();
    assert_eq!(hs.cluster_ip.as_deref(), Some("None"));
    assert_eq!(
        hs.ports.as_ref().unwrap()[0].port,
        i32::from(flowline_harness::kubernetes::workload::REFERENCE_NODE_PORT)
    );
    let tmpl = spec.template.metadata.unwrap();
    let ann = tmpl.annotations.unwrap();
    assert_eq!(ann["prometheus.io/scrape"], "true");
    assert_eq!(ann["prometheus.io/port"], "8080");
    for s in &services {
        let sel = s
            .spec
            .as_ref()
            .unwrap()
            .selector
            .clone()
            .unwrap_or_default();
        assert!(!sel.is_empty(), "{:?} selects nothing", s.metadata.name);
    }
}
