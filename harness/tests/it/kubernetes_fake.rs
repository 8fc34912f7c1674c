//! A fake Kubernetes API server for the launcher's tests (axum on a loopback port): it
//! records every call (verb, path, label selector), answers creates by echoing the object,
//! makes one pod per index of a created Job and plays their phases from a script, and
//! answers collection deletes with a `Status`.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// A pod phase the script plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    /// Failed, its container exited with this code.
    Failed(i32),
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
        match method {
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
                }
                (StatusCode::CREATED, axum::Json(obj)).into_response()
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
                if resource == "jobs" {
                    st.jobs
                        .retain(|j| selector.as_deref().is_some_and(|s| !matches(j, s)));
                }
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
    let labels = &job["spec"]["template"]["metadata"]["labels"];
    selector.split(',').all(|kv| match kv.split_once('=') {
        Some((k, v)) => labels[k] == v,
        None => false,
    })
}

fn pods_of(job: &Value, n: u32, script: &Script) -> Vec<Value> {
    let name = job["metadata"]["name"].as_str().unwrap_or_default();
    let count = job["spec"]["parallelism"].as_i64().unwrap_or(1) as usize;
    (0..count)
        .map(|i| {
            let mut labels = job["spec"]["template"]["metadata"]["labels"].clone();
            labels["batch.kubernetes.io/job-completion-index"] = i.to_string().into();
            let phase = script(n, i);
            let state = match phase {
                Phase::Pending => json!({"waiting": {"reason": "ContainerCreating"}}),
                Phase::Running => json!({"running": {}}),
                Phase::Succeeded => json!({"terminated": {"exitCode": 0, "reason": "Completed"}}),
                Phase::Failed(code) => json!({"terminated": {"exitCode": code, "reason": "Error"}}),
            };
            let phase = match phase {
                Phase::Pending => "Pending",
                Phase::Running => "Running",
                Phase::Succeeded => "Succeeded",
                Phase::Failed(_) => "Failed",
            };
            json!({
                "metadata": {
                    "name": format!("{name}-{i}-fake{i}"),
                    "namespace": job["metadata"]["namespace"],
                    "labels": labels,
                    "annotations": {"batch.kubernetes.io/job-completion-index": i.to_string()},
                },
                "status": {
                    "phase": phase,
                    "containerStatuses": [{"name": "loadgen", "ready": phase == "Running",
                        "restartCount": 0, "image": "flowline:test", "imageID": "",
                        "state": state}],
                },
            })
        })
        .collect()
}
