//! `flowline run --launcher kubernetes` end to end without a cluster: the real binary,
//! its kube client configured by a kubeconfig, against the fake API server whose fake
//! kubelet ([`crate::kubernetes_kubelet`]) runs each pod of the created Indexed Job as a
//! real `flowline loadgen` process from the Job's own pod template. The pods load a real
//! `flowline server` node (phase single) given by `--nodes-url`, and report to the
//! harness's coordinator through the Service's EndpointSlice.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::generic::wait_bounded;
use crate::kubernetes_fake::FakeApi;
use crate::kubernetes_kubelet::KubeletConfig;
use crate::kubernetes_launcher::assert_torn_down;
use crate::util::{flowline, marked_processes, new_mark, only_run_dir, write_scenario};
use flowline_harness::kubernetes::names::Names;

/// How long one `flowline run` of these tests may take (it needs about 8 s).
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
const SECRET: &str = "k8s-test-secret";

/// A `flowline server` node (phase single: no Postgres, no Redis) on a loopback port,
/// standing in for the cluster's nodes; killed on drop.
struct Node {
    child: Child,
    http: String,
}

impl Node {
    fn start() -> Node {
        let mut child = flowline()
            .args([
                "server",
                "--phase",
                "single",
                "--listen",
                "127.0.0.1:0",
                "--node-id",
                "node1",
                "--admin-secret",
                SECRET,
                "--argon2-memory-kib",
                "64",
                "--argon2-iterations",
                "1",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&first).unwrap_or_else(|e| panic!("the node said {first:?}: {e}"));
        assert_eq!(v["event"], "listening", "{first}");
        // Keep draining its stdout so it never blocks.
        std::thread::spawn(move || for _ in out.lines() {});
        Node {
            child,
            http: v["http"].as_str().unwrap().to_string(),
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A kubeconfig whose current context is the API server at `url`.
fn kubeconfig(dir: &Path, url: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\n\
             users:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    \
             cluster: fake\n    user: fake\ncurrent-context: fake\n"
        ),
    )
    .unwrap();
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `flowline ARGS` in `cwd` with `KUBECONFIG` and a test mark, bounded (in a blocking
/// thread: the fake API server runs on this test's runtime); its exit code and stderr.
async fn flowline_in(
    cwd: &Path,
    args: Vec<String>,
    kubeconfig: &Path,
    mark: &str,
) -> (Option<i32>, String) {
    let log = cwd.join(format!("flowline-{}.stderr", new_mark()));
    let mut cmd = flowline();
    cmd.args(&args)
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", cwd)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("FLOWLINE_IMAGE")
        .env_remove("FLOWLINE_NAMESPACE")
        .env_remove("FLOWLINE_ADMIN_SECRET")
        .env("FLOWLINE_TEST_MARK", mark)
        .current_dir(cwd)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let status = tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().unwrap();
        wait_bounded(&mut child, RUN_TIMEOUT)
    })
    .await
    .unwrap();
    let err = std::fs::read_to_string(&log).unwrap_or_default();
    let status = status.unwrap_or_else(|| panic!("flowline took over {RUN_TIMEOUT:?}:\n{err}"));
    (status.code(), err)
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// `run SCENARIO --launcher kubernetes` against `node` with 2 workers, coordinator on
/// loopback `port`, plus `extra`.
fn k8s_args(scenario: &Path, node: &str, port: u16, extra: &[&str]) -> Vec<String> {
    let coord = format!("127.0.0.1:{port}");
    let mut a = strings(&[
        "run",
        scenario.to_str().unwrap(),
        "--out",
        "runs",
        "--launcher",
        "kubernetes",
        "--namespace",
        "load",
        "--image",
        "flowline:test",
        "--coordinator-advertise",
        &coord,
        "--coordinator-listen",
        &coord,
        "--nodes-url",
        node,
        "--admin-secret",
        SECRET,
        "--workers",
        "2",
    ]);
    a.extend(strings(extra));
    a
}

fn kubelet(root: &Path, mark: &str, kill: Option<(usize, Duration)>) -> KubeletConfig {
    std::fs::create_dir_all(root).unwrap();
    KubeletConfig {
        bin: PathBuf::from(env!("CARGO_BIN_EXE_flowline")),
        root: root.to_path_buf(),
        env: vec![("FLOWLINE_TEST_MARK".into(), mark.into())],
        kill,
    }
}

/// Every pod's log (stdout and stderr), for failure messages.
fn pod_logs(root: &Path) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "log") {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            out += &format!("--- {}\n{text}\n", p.display());
        }
    }
    out
}

fn summary(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

fn keys(v: &serde_json::Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

fn files(dir: &Path) -> Vec<String> {
    let mut f: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    f.sort();
    f
}

/// The run's Names, from its run folder.
fn names_of(dir: &Path) -> Names {
    Names::for_run(&dir.file_name().unwrap().to_string_lossy())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_of_the_indexed_job_run_the_scenario_like_local_workers() {
    let tmp = tempfile::tempdir().unwrap();
    let mark = new_mark();
    let node = Node::start();
    let fake =
        FakeApi::with_kubelet(kubelet(&tmp.path().join("pods"), &mark, None), &["load"]).await;
    let kc = kubeconfig(tmp.path(), &fake.url);
    let scenario = write_scenario(tmp.path(), "k8s", 40, "2s", "");
    let port = free_port();
    let (code, err) = flowline_in(
        tmp.path(),
        k8s_args(&scenario, &node.http, port, &[]),
        &kc,
        &mark,
    )
    .await;
    let pods = tmp.path().join("pods");
    assert_eq!(code, Some(0), "{err}\n{}", pod_logs(&pods));
    let dir = only_run_dir(&tmp.path().join("runs"));
    let names = names_of(&dir);

    // The pods ran the Job's command line: their shard from the completion index, the
    // coordinator through the Service's EndpointSlice, the scenario from the ConfigMap.
    let argv = fake.pod_argv();
    assert_eq!(argv.len(), 2, "{argv:?}");
    for (i, a) in argv.iter().enumerate() {
        let a = a
            .as_ref()
            .unwrap_or_else(|why| panic!("pod {i} did not start: {why}"));
        let after = |flag: &str| a[a.iter().position(|x| x == flag).unwrap() + 1].clone();
        assert_eq!(after("--shard"), format!("{i}/2"), "{a:?}");
        assert_eq!(after("--coordinator"), format!("127.0.0.1:{port}"), "{a:?}");
        assert!(
            after("--scenario").ends_with("volumes/config/scenario.toml"),
            "{a:?}"
        );
        assert_eq!(
            after("--targets"),
            format!("{}/ws", node.http.replace("http://", "ws://"))
        );
    }

    // The same results as a local run's: one run folder, every shard done, nothing lost.
    let s = summary(&dir);
    assert_eq!(s["workers"], 2, "{s}");
    assert_eq!(s["workers_done"], 2, "{s}");
    assert_eq!(s["passed"], true, "{s}");
    assert_eq!(s["correctness"]["lost"], 0, "{s}");
    assert!(s["totals"]["delivered"].as_u64().unwrap() > 0, "{s}");
    let c = &s["coordinator"];
    assert_eq!(c["version"], 2, "{s}");
    assert_eq!(c["workers"].as_array().unwrap().len(), 2, "{s}");
    assert!(err.contains("created Job"), "{err}");
    // Each pod's log, saved before teardown under a local run's names.
    for (w, shard) in [(1, "0/2"), (2, "1/2")] {
        let log = std::fs::read_to_string(dir.join(format!("logs/worker{w}.log"))).unwrap();
        assert!(
            log.contains(&format!("shard={shard}")),
            "worker{w}.log: {log}"
        );
    }

    // Everything created was deleted by the run's label, and no pod process is left.
    assert_eq!(
        fake.created(),
        [
            ("configmaps".to_string(), names.config()),
            ("services".into(), names.coordinator()),
            ("endpointslices".into(), names.coordinator()),
            ("jobs".into(), names.job()),
        ]
    );
    assert_torn_down(&fake.calls(), &names);
    assert!(fake.remaining().is_empty(), "{:?}", fake.remaining());
    assert!(
        marked_processes(&mark).is_empty(),
        "{:?}",
        marked_processes(&mark)
    );

    // A local run of the same scenario: the same files and the same summary fields (but
    // the nodes' cost and logged errors: a Kubernetes run starts no node).
    let local = tmp.path().join("local");
    std::fs::create_dir_all(&local).unwrap();
    let args = strings(&[
        "run",
        scenario.to_str().unwrap(),
        "--workers",
        "2",
        "--out",
        "runs",
    ]);
    let (code, err) = flowline_in(&local, args, &kc, &mark).await;
    assert_eq!(code, Some(0), "{err}");
    let local_dir = only_run_dir(&local.join("runs"));
    let mut k8s_files = files(&dir);
    k8s_files.retain(|f| f != "kubernetes.yaml");
    assert_eq!(k8s_files, files(&local_dir));
    let ls = summary(&local_dir);
    let mut local_keys = keys(&ls);
    local_keys.retain(|k| k != "nodes_cost" && k != "node_errors");
    assert_eq!(keys(&s), local_keys);
    assert_eq!(
        keys(&s["coordinator"]["workers"][0]),
        keys(&ls["coordinator"]["workers"][0])
    );
    assert!(
        marked_processes(&mark).is_empty(),
        "{:?}",
        marked_processes(&mark)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_pod_is_named_and_everything_is_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let mark = new_mark();
    let node = Node::start();
    // Shard 1's process is killed 2.5 s after it started: inside the measured seconds.
    let kill = Some((1, Duration::from_millis(2500)));
    let fake =
        FakeApi::with_kubelet(kubelet(&tmp.path().join("pods"), &mark, kill), &["load"]).await;
    let kc = kubeconfig(tmp.path(), &fake.url);
    let scenario = write_scenario(tmp.path(), "k8s-fail", 40, "3s", "");
    let (code, err) = flowline_in(
        tmp.path(),
        k8s_args(&scenario, &node.http, free_port(), &[]),
        &kc,
        &mark,
    )
    .await;
    assert!(
        matches!(code, Some(1 | 2)),
        "{code:?}: {err}\n{}",
        pod_logs(&tmp.path().join("pods"))
    );
    let dir = only_run_dir(&tmp.path().join("runs"));
    let names = names_of(&dir);
    assert!(
        err.contains(&format!(
            "worker shard 1 (pod {}-1-fake1) failed: exit code 137",
            names.job()
        )),
        "{err}"
    );
    assert!(!err.contains("worker shard 0"), "{err}");
    assert!(err.contains("the workers' logs: runs/"), "{err}");
    // The failed pod's log was saved before its pod was deleted.
    let log = std::fs::read_to_string(dir.join("logs/worker2.log")).unwrap();
    assert!(log.contains("shard=1/2"), "worker2.log: {log}");
    assert_torn_down(&fake.calls(), &names);
    assert!(fake.remaining().is_empty(), "{:?}", fake.remaining());
    assert!(
        marked_processes(&mark).is_empty(),
        "{:?}",
        marked_processes(&mark)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_before_anything_is_created() {
    let tmp = tempfile::tempdir().unwrap();
    let mark = new_mark();
    let fake =
        FakeApi::with_kubelet(kubelet(&tmp.path().join("pods"), &mark, None), &["load"]).await;
    let kc = kubeconfig(tmp.path(), &fake.url);
    let scenario = write_scenario(tmp.path(), "k8s-bad", 10, "1s", "");
    let node = "http://127.0.0.1:9";
    let port = free_port();
    let refused = |args: Vec<String>, kc: PathBuf, want: &'static str| {
        let (tmp, mark) = (tmp.path().to_path_buf(), mark.clone());
        async move {
            let (code, err) = flowline_in(&tmp, args, &kc, &mark).await;
            assert_eq!(code, Some(2), "{err}");
            assert!(err.contains(want), "wanted {want:?} in: {err}");
            assert!(
                !tmp.join("runs").exists(),
                "a run folder was created: {err}"
            );
        }
    };
    // No image.
    let mut args = k8s_args(&scenario, node, port, &[]);
    let at = args.iter().position(|a| a == "--image").unwrap();
    args.drain(at..at + 2);
    refused(args, kc.clone(), "needs the workers' image: give --image").await;
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());
    // A namespace that is not there.
    let mut args = k8s_args(&scenario, node, port, &[]);
    let at = args.iter().position(|a| a == "load").unwrap();
    args[at] = "nope".into();
    refused(args, kc.clone(), "namespace \"nope\" does not exist").await;
    assert!(
        fake.calls().iter().all(|c| c.verb == "GET"),
        "{:?}",
        fake.calls()
    );
    // No API server at the kubeconfig's address.
    let dead = kubeconfig(
        &tmp.path().join("dead"),
        &format!("http://127.0.0.1:{}", free_port()),
    );
    refused(
        k8s_args(&scenario, node, port, &[]),
        dead,
        "cannot reach the Kubernetes API server at http://127.0.0.1:",
    )
    .await;
    // No kubeconfig at all, and not in a pod.
    refused(
        k8s_args(&scenario, node, port, &[]),
        tmp.path().join("missing-kubeconfig"),
        "cannot find a Kubernetes cluster",
    )
    .await;
    // Kubernetes flags without the launcher.
    let args = strings(&["run", scenario.to_str().unwrap(), "--namespace", "load"]);
    refused(
        args,
        kc.clone(),
        "--namespace applies to --launcher kubernetes only",
    )
    .await;
    assert!(fake.created().is_empty(), "{:?}", fake.created());

    let help = flowline().args(["run", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--launcher",
        "--namespace",
        "--image",
        "--kube-context",
        "--nodes-url",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_mid_run_deletes_everything_and_stops_the_pods() {
    let tmp = tempfile::tempdir().unwrap();
    let mark = new_mark();
    let node = Node::start();
    let fake =
        FakeApi::with_kubelet(kubelet(&tmp.path().join("pods"), &mark, None), &["load"]).await;
    let kc = kubeconfig(tmp.path(), &fake.url);
    let scenario = write_scenario(tmp.path(), "k8s-int", 40, "30s", "");
    let log = tmp.path().join("flowline.stderr");
    let mut child = flowline()
        .args(k8s_args(&scenario, &node.http, free_port(), &[]))
        .env("KUBECONFIG", &kc)
        .env("HOME", tmp.path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("FLOWLINE_TEST_MARK", &mark)
        .current_dir(tmp.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Into the run: the Job created and both pods' workers started by the coordinator.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let started = std::fs::read_dir(tmp.path().join("pods"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains("worker starting"))
            })
            .count();
        if started == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the pods never started: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = tokio::task::spawn_blocking(move || wait_bounded(&mut child, RUN_TIMEOUT))
        .await
        .unwrap()
        .expect("no exit after SIGINT");
    let err = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("interrupted by SIGINT"), "{err}");
    let dir = only_run_dir(&tmp.path().join("runs"));
    assert_torn_down(&fake.calls(), &names_of(&dir));
    assert!(fake.remaining().is_empty(), "{:?}", fake.remaining());
    assert!(
        marked_processes(&mark).is_empty(),
        "{:?}",
        marked_processes(&mark)
    );
}
