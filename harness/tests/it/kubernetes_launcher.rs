//! The Kubernetes launcher's whole path against the fake API server
//! ([`crate::kubernetes_fake`]): create → watch pods while gathering → teardown, a failed
//! shard named, Ctrl-C and a refused create still tearing everything down.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flowline_harness::kubernetes::api::RunApi;
use flowline_harness::kubernetes::manifests::{Inputs, Manifests};
use flowline_harness::kubernetes::names::{Advertise, Names};
use flowline_harness::kubernetes::supervise::{Watch, supervise};

use crate::kubernetes_fake::{Call, FakeApi, Phase, Script};

const NS: &str = "load";
const WORKERS: usize = 3;

fn manifests(names: &Names) -> Manifests {
    let targets = ["ws://echo.load.svc:9100/".to_string()];
    Manifests::build(&Inputs {
        names,
        namespace: NS,
        image: "flowline:test",
        workers: WORKERS,
        targets: &targets,
        coordinator: &Advertise::parse("10.0.0.9:7450").unwrap(),
        scenario_toml: "[run]\nname = \"x\"\n",
        plan_json: "{}",
        deadline: Duration::from_secs(60),
    })
    .unwrap()
}

fn watch(limit: Duration) -> Watch {
    Watch {
        workers: WORKERS,
        poll: Duration::from_millis(20),
        deadline: Instant::now() + limit,
        logs: None,
    }
}

/// Pending at the first listing, Running for a few, then Succeeded.
fn healthy() -> Script {
    Arc::new(|n, _| match n {
        0 => Phase::Pending,
        1..=4 => Phase::Running,
        _ => Phase::Succeeded,
    })
}

/// The deletes by the run's label, every kind once, after which nothing else is called.
pub fn assert_torn_down(calls: &[Call], names: &Names) {
    let first_delete = calls
        .iter()
        .position(|c| c.verb == "DELETE")
        .expect("no teardown call");
    let deletes: Vec<&str> = calls[first_delete..]
        .iter()
        .map(|c| {
            assert_eq!(c.verb, "DELETE", "a call after teardown began: {c:?}");
            assert_eq!(c.selector.as_deref(), Some(names.selector().as_str()));
            assert_eq!(c.namespace, NS);
            c.resource.as_str()
        })
        .collect();
    assert_eq!(
        deletes,
        ["jobs", "pods", "endpointslices", "services", "configmaps"]
    );
}

async fn never<T>() -> T {
    std::future::pending().await
}

#[tokio::test]
async fn create_watch_gather_teardown() {
    let fake = FakeApi::start(healthy()).await;
    let names = Names::for_run("20261129-010000-k8s-happy");
    let api = RunApi::new(RunApi::client_for(&fake.url).unwrap(), NS, names.clone());
    let gather = async {
        tokio::time::sleep(Duration::from_millis(60)).await;
        Ok(42)
    };
    let r = supervise(
        &api,
        &manifests(&names),
        watch(Duration::from_secs(20)),
        gather,
        never::<&str>(),
    )
    .await
    .unwrap();
    assert_eq!(r, 42);
    assert_eq!(
        fake.created(),
        [
            ("configmaps".to_string(), names.config()),
            ("services".into(), names.coordinator()),
            ("endpointslices".into(), names.coordinator()),
            ("jobs".into(), names.job()),
        ]
    );
    let calls = fake.calls();
    let lists: Vec<&Call> = calls.iter().filter(|c| c.verb == "GET").collect();
    // Pending, Running ×4, Succeeded: it waited for the pods to end after gathering.
    assert!(lists.len() >= 6, "{lists:?}");
    assert!(
        lists
            .iter()
            .all(|c| c.resource == "pods"
                && c.selector.as_deref() == Some(names.selector().as_str()))
    );
    assert_torn_down(&calls, &names);
    let job = &fake.jobs();
    assert!(job.is_empty(), "the Job was not deleted");
}

#[tokio::test]
async fn a_failed_pod_names_its_shard_and_everything_is_deleted() {
    let script: Script = Arc::new(|n, i| match (n, i) {
        (0, _) => Phase::Pending,
        (_, 1) if n >= 3 => Phase::Failed(3),
        _ => Phase::Running,
    });
    let fake = FakeApi::start(script).await;
    let names = Names::for_run("k8s-failed");
    let api = RunApi::new(RunApi::client_for(&fake.url).unwrap(), NS, names.clone());
    let err = supervise(
        &api,
        &manifests(&names),
        watch(Duration::from_secs(20)),
        never::<anyhow::Result<()>>(),
        never::<&str>(),
    )
    .await
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains(
            "worker shard 1 (pod flowline-k8s-failed-workers-1-fake1) failed: exit code 3 (Error)"
        ),
        "{msg}"
    );
    assert!(
        !msg.contains("shard 0") && !msg.contains("shard 2"),
        "{msg}"
    );
    assert_torn_down(&fake.calls(), &names);
}

#[tokio::test]
async fn interrupted_runs_are_torn_down() {
    let fake = FakeApi::start(Arc::new(|_, _| Phase::Running)).await;
    let names = Names::for_run("k8s-ctrl-c");
    let api = RunApi::new(RunApi::client_for(&fake.url).unwrap(), NS, names.clone());
    let stop = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        "SIGINT"
    };
    let err = supervise(
        &api,
        &manifests(&names),
        watch(Duration::from_secs(20)),
        never::<anyhow::Result<()>>(),
        stop,
    )
    .await
    .unwrap_err();
    assert!(format!("{err}").contains("interrupted by SIGINT"), "{err}");
    assert_eq!(fake.created().len(), 4);
    assert_torn_down(&fake.calls(), &names);
}

#[tokio::test]
async fn a_refused_create_deletes_what_was_created() {
    let fake = FakeApi::start(healthy()).await;
    fake.forbid("jobs");
    let names = Names::for_run("k8s-forbidden");
    let api = RunApi::new(RunApi::client_for(&fake.url).unwrap(), NS, names.clone());
    let err = supervise(
        &api,
        &manifests(&names),
        watch(Duration::from_secs(20)),
        async { Ok(()) },
        never::<&str>(),
    )
    .await
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("cannot create Job") && msg.contains("forbidden"),
        "{msg}"
    );
    assert!(
        fake.calls().iter().all(|c| c.verb != "GET"),
        "watched pods of a Job never created"
    );
    assert_torn_down(&fake.calls(), &names);
}

#[tokio::test]
async fn the_deadline_names_the_shards_still_running() {
    let fake = FakeApi::start(Arc::new(|_, i| {
        if i == 2 {
            Phase::Running
        } else {
            Phase::Succeeded
        }
    }))
    .await;
    let names = Names::for_run("k8s-deadline");
    let api = RunApi::new(RunApi::client_for(&fake.url).unwrap(), NS, names.clone());
    let err = supervise(
        &api,
        &manifests(&names),
        watch(Duration::from_millis(300)),
        never::<anyhow::Result<()>>(),
        never::<&str>(),
    )
    .await
    .unwrap_err();
    assert!(
        format!("{err}").contains("still running or pending: [2]"),
        "{err}"
    );
    assert_torn_down(&fake.calls(), &names);
}
