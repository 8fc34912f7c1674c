//! A fake Kubernetes API server for the launcher's tests (axum on a loopback port): it
//! records every call (verb, path, label selector), answers creates by echoing the object,
//! makes one pod per index of a created Job and plays their phases from a script — or,
//! with a fake kubelet ([`crate::kubernetes_kubelet`]), runs each pod as a real worker
//! process and reports its phase — answers namespace reads, and answers collection
//! deletes with a `Status` (stopping the deleted pods' processes).

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::kubernetes_kubelet::{KubeletConfig, Pod, start_job};

/// A pod phase the script plays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    /// Failed, its container exited with this code.
    Failed(i32),
    /// Pending for good: the container cannot be created (this says why).
    Stuck(String),
}

/// The phase of pod `index` at the `n`th pod listing after its Job was created (from 0).
pub type Script = Arc<dyn Fn(u32, usize) -> Phase + Send + Sync>;

/// One API call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// GET, POST, DELETE.
    pub verb: String,
    /// The resource (`configmaps`, `jobs`, ...).
    pub resource: String,
    /// The namespace in the path.
    pub namespace: String,
    /// `labelSelector` of the query, if any.
    pub selector: Option<String>,
    /// The created object's name (POST).
    pub name: Option<String>,
}

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    jobs: Vec<Value>,
    lists: u32,
    /// Resources whose create is refused with 403.
    forbidden: Vec<String>,
    /// Every object created and not deleted, as (resource, body).
    objects: Vec<(String, Value)>,
    /// Namespaces that exist (a GET of another is 404); empty: reads of namespaces are
    /// not faked.
    namespaces: Vec<String>,
    /// With a kubelet: its config and the pods it runs.
    kubelet: Option<KubeletConfig>,
    pods: Vec<Pod>,
    /// The kubelet's pods' command lines, kept after they are deleted.
    argv: Vec<Result<Vec<String>, String>>,
}

/// The fake API server.
#[derive(Clone)]
pub struct FakeApi {
    /// Base URL (`http://127.0.0.1:PORT`).
    pub url: String,
    state: Arc<Mutex<State>>,
    script: Script,
}

impl FakeApi {
    /// Start it on a loopback port with a phase script.
    pub async fn start(script: Script) -> FakeApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let fake = FakeApi {
            url,
            state: Arc::default(),
            script,
        };
        let app = axum::Router::new().fallback({
            let fake = fake.clone();
            move |method: Method, uri: Uri, body: Bytes| {
                let fake = fake.clone();
                async move { fake.handle(method, uri, body) }
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        fake
    }

    /// Start it with a kubelet that runs the pods as processes; `namespaces` exist.
    pub async fn with_kubelet(kubelet: KubeletConfig, namespaces: &[&str]) -> FakeApi {
        let fake = FakeApi::start(Arc::new(|_, _| Phase::Pending)).await;
        {
            let mut st = fake.state.lock().unwrap();
            st.kubelet = Some(kubelet);
            st.namespaces = namespaces.iter().map(|n| n.to_string()).collect();
        }
        fake
    }

    /// The objects created and not deleted, as (resource, name).
    pub fn remaining(&self) -> Vec<(String, String)> {
        let st = self.state.lock().unwrap();
        let objects = st.objects.iter().map(|(r, o)| {
            (
                r.clone(),
                o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        });
        let pods = st.pods.iter().map(|p| ("pods".to_string(), p.name.clone()));
        objects.chain(pods).collect()
    }

    /// The command lines the kubelet ran (or why a pod could not start), by index.
    pub fn pod_argv(&self) -> Vec<Result<Vec<String>, String>> {
        self.state.lock().unwrap().argv.clone()
    }

    /// Refuse creates of this resource (`jobs`, ...) with 403 Forbidden.
    pub fn forbid(&self, resource: &str) {
        self.state.lock().unwrap().forbidden.push(resource.into());
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    /// The objects created, as (resource, name).
    pub fn created(&self) -> Vec<(String, String)> {
        self.calls()
            .into_iter()
            .filter(|c| c.verb == "POST")
            .map(|c| (c.resource, c.name.unwrap_or_default()))
            .collect()
    }

    /// The created Jobs' bodies.
    pub fn jobs(&self) -> Vec<Value> {
        self.state.lock().unwrap().jobs.clone()
    }

    fn handle(&self, method: Method, uri: Uri, body: Bytes) -> Response {
        // /api/v1/namespaces/NS/RES or /apis/GROUP/VERSION/namespaces/NS/RES
        let parts: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
        let Some(ns_at) = parts.iter().position(|p| *p == "namespaces") else {
            return (StatusCode::NOT_FOUND, "not a namespaced path").into_response();
        };
        let namespace = parts
            .get(ns_at + 1)
            .copied()
            .unwrap_or_default()
            .to_string();
        let resource = parts
            .get(ns_at + 2)
            .copied()
            .unwrap_or_default()
            .to_string();
        let selector = uri.query().and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "labelSelector")
                .map(|(_, v)| v.into_owned())
        });
        let obj: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let mut st = self.state.lock().unwrap();
        st.calls.push(Call {
            verb: method.to_string(),
            resource: resource.clone(),
            namespace: namespace.clone(),
            selector: selector.clone(),
            name: obj["metadata"]["name"].as_str().map(str::to_string),
        });
        // A pod's log: .../pods/NAME/log, the file the kubelet wrote.
        if method == Method::GET && resource == "pods" && parts.get(ns_at + 4) == Some(&"log") {
            let name = parts.get(ns_at + 3).copied().unwrap_or_default();
            let log = st
                .kubelet
                .as_ref()
                .filter(|_| st.pods.iter().any(|p| p.name == name))
                .and_then(|k| std::fs::read_to_string(k.root.join(format!("{name}.log"))).ok());
            return match log {
                Some(text) => text.into_response(),
                None => (StatusCode::NOT_FOUND, format!("no pod {name}")).into_response(),
            };
        }
        match method {
            Method::GET if resource.is_empty() => {
                if st.namespaces.contains(&namespace) {
                    axum::Json(json!({"apiVersion": "v1", "kind": "Namespace",
                        "metadata": {"name": namespace}, "status": {"phase": "Active"}}))
                    .into_response()
                } else {
                    (
                        StatusCode::NOT_FOUND,
                        axum::Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Failure", "reason": "NotFound", "code": 404,
                            "message": format!("namespaces \"{namespace}\" not found")})),
                    )
                        .into_response()
                }
            }
            Method::POST if st.forbidden.contains(&resource) => (
                StatusCode::FORBIDDEN,
                axum::Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Failure", "reason": "Forbidden", "code": 403,
                    "message": format!("{resource} is forbidden: the fake says no")})),
            )
                .into_response(),
            Method::POST => {
                if resource == "jobs" {
                    st.jobs.push(obj.clone());
                    st.lists = 0;
                    let pods = st
                        .kubelet
                        .as_ref()
                        .map(|k| start_job(k, &obj, &st.objects))
                        .unwrap_or_default();
                    let argv: Vec<_> = pods.iter().map(|p| p.argv.clone()).collect();
                    st.argv.extend(argv);
                    st.pods.extend(pods);
                }
                st.objects.push((resource.clone(), obj.clone()));
                (StatusCode::CREATED, axum::Json(obj)).into_response()
            }
            Method::GET if resource == "pods" && st.kubelet.is_some() => {
                let kill = st.kubelet.as_ref().and_then(|k| k.kill);
                let items: Vec<Value> = st
                    .pods
                    .iter_mut()
                    .filter(|p| {
                        selector
                            .as_deref()
                            .is_none_or(|s| labels_match(&p.labels, s))
                    })
                    .map(|p| {
                        let phase = p.phase(kill);
                        pod_json(&p.name, &p.namespace, p.labels.clone(), p.index, phase)
                    })
                    .collect();
                axum::Json(json!({"apiVersion": "v1", "kind": "PodList",
                    "metadata": {"resourceVersion": "1"}, "items": items}))
                .into_response()
            }
            Method::GET if resource == "pods" => {
                let n = st.lists;
                st.lists += 1;
                let items: Vec<Value> = st
                    .jobs
                    .iter()
                    .filter(|j| selector.as_deref().is_none_or(|s| matches(j, s)))
                    .flat_map(|j| pods_of(j, n, &self.script))
                    .collect();
                axum::Json(json!({"apiVersion": "v1", "kind": "PodList",
                    "metadata": {"resourceVersion": "1"}, "items": items}))
                .into_response()
            }
            Method::DELETE => {
                let hit =
                    |labels: &Value| selector.as_deref().is_some_and(|s| labels_match(labels, s));
                if resource == "jobs" {
                    st.jobs
                        .retain(|j| !matches(j, selector.as_deref().unwrap_or("")));
                }
                if resource == "jobs" || resource == "pods" {
                    // The Job's pods go with it (background propagation), stopped as the
                    // kubelet stops deleted pods.
                    let (gone, kept): (Vec<Pod>, Vec<Pod>) = std::mem::take(&mut st.pods)
                        .into_iter()
                        .partition(|p| hit(&p.labels));
                    st.pods = kept;
                    for mut p in gone {
                        p.stop();
                    }
                }
                st.objects
                    .retain(|(r, o)| *r != resource || !hit(&o["metadata"]["labels"]));
                axum::Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Success"}))
                .into_response()
            }
            _ => (StatusCode::METHOD_NOT_ALLOWED, "not faked").into_response(),
        }
    }
}

/// Whether a Job's pod template carries every `k=v` of a selector.
fn matches(job: &Value, selector: &str) -> bool {
    labels_match(&job["spec"]["template"]["metadata"]["labels"], selector)
}

/// Whether labels carry every `k=v` of a selector.
fn labels_match(labels: &Value, selector: &str) -> bool {
    selector.split(',').all(|kv| match kv.split_once('=') {
        Some((k, v)) => labels[k] == v,
        None => false,
    })
}

fn pods_of(job: &Value, n: u32, script: &Script) -> Vec<Value> {
    let name = job["metadata"]["name"].as_str().unwrap_or_default();
    let namespace = job["metadata"]["namespace"].as_str().unwrap_or_default();
    let count = job["spec"]["parallelism"].as_i64().unwrap_or(1) as usize;
    (0..count)
        .map(|i| {
            let mut labels = job["spec"]["template"]["metadata"]["labels"].clone();
            labels["batch.kubernetes.io/job-completion-index"] = i.to_string().into();
            pod_json(
                &format!("{name}-{i}-fake{i}"),
                namespace,
                labels,
                i,
                script(n, i),
            )
        })
        .collect()
}

/// A pod of an Indexed Job as the API shows it.
fn pod_json(name: &str, namespace: &str, labels: Value, index: usize, phase: Phase) -> Value {
    let state = match &phase {
        Phase::Pending => json!({"waiting": {"reason": "ContainerCreating"}}),
        Phase::Stuck(why) => {
            json!({"waiting": {"reason": "CreateContainerConfigError", "message": why}})
        }
        Phase::Running => json!({"running": {}}),
        Phase::Succeeded => json!({"terminated": {"exitCode": 0, "reason": "Completed"}}),
        Phase::Failed(code) => json!({"terminated": {"exitCode": code, "reason": "Error"}}),
    };
    let phase = match phase {
        Phase::Pending | Phase::Stuck(_) => "Pending",
        Phase::Running => "Running",
        Phase::Succeeded => "Succeeded",
        Phase::Failed(_) => "Failed",
    };
    json!({
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": {"batch.kubernetes.io/job-completion-index": index.to_string()},
        },
        "status": {
            "phase": phase,
            "containerStatuses": [{"name": "loadgen", "ready": phase == "Running",
                "restartCount": 0, "image": "flowline:test", "imageID": "",
                "state": state}],
        },
    })
}
