//! The Kubernetes API calls of a run: create its objects, list its pods, and delete
//! everything that carries its run label.

use std::fmt::Debug;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use kube::core::NamespaceResourceScope;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::manifests::Manifests;
use super::names::Names;

/// How long one API request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A run's view of one namespace of a cluster.
#[derive(Clone)]
pub struct RunApi {
    client: kube::Client,
    namespace: String,
    names: Names,
}

impl RunApi {
    /// The run's objects in `namespace` through `client`.
    pub fn new(client: kube::Client, namespace: &str, names: Names) -> Self {
        RunApi {
            client,
            namespace: namespace.to_string(),
            names,
        }
    }

    /// A client for an API server at `url` (plain HTTP; tests' fake API server).
    pub fn client_for(url: &str) -> anyhow::Result<kube::Client> {
        crypto_provider();
        let uri = url
            .parse()
            .with_context(|| format!("bad API server URL {url}"))?;
        let mut config = kube::Config::new(uri);
        config.connect_timeout = Some(REQUEST_TIMEOUT);
        config.read_timeout = Some(REQUEST_TIMEOUT);
        kube::Client::try_from(config).context("cannot build the Kubernetes client")
    }

    /// The run's names.
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Create the run's objects in order: ConfigMap, Service, EndpointSlice, then the
    /// Job (its pods start at once, and need the others).
    pub async fn create(&self, m: &Manifests) -> anyhow::Result<()> {
        create(&self.api::<ConfigMap>(), &m.config).await?;
        create(&self.api::<Service>(), &m.service).await?;
        if let Some(e) = &m.endpoints {
            create(&self.api::<EndpointSlice>(), e).await?;
        }
        create(&self.api::<Job>(), &m.job).await?;
        Ok(())
    }

    /// The run's pods.
    pub async fn pods(&self) -> anyhow::Result<Vec<Pod>> {
        let list = self
            .api::<Pod>()
            .list(&ListParams::default().labels(&self.names.selector()))
            .await
            .with_context(|| {
                format!("cannot list the run's pods in namespace {}", self.namespace)
            })?;
        Ok(list.items)
    }

    /// Save each shard's pod log as `<dir>/worker<i+1>.log` (the names of a local run's
    /// worker logs); the shards whose log could not be read, with why.
    pub async fn save_logs(&self, dir: &Path, workers: usize) -> Vec<String> {
        let pods = match self.pods().await {
            Ok(p) => p,
            Err(e) => return vec![format!("{e:#}")],
        };
        let mut problems = Vec::new();
        for pod in pods {
            let Some(index) = super::pods::index_of(&pod).filter(|i| *i < workers) else {
                continue;
            };
            let name = pod.metadata.name.clone().unwrap_or_default();
            let path = dir.join(format!("worker{}.log", index + 1));
            let saved = match self.api::<Pod>().logs(&name, &LogParams::default()).await {
                Ok(text) => std::fs::write(&path, text)
                    .with_context(|| format!("cannot write {}", path.display())),
                Err(e) => Err(anyhow::anyhow!("cannot read the log of pod {name}: {e}")),
            };
            if let Err(e) = saved {
                problems.push(format!("{e:#}"));
            }
        }
        problems
    }

    /// Delete everything with the run's label: the Job (its pods with it), the pods
    /// themselves (so they stop now, not when the garbage collector gets to them), the
    /// EndpointSlice, Service and ConfigMap. Every kind is tried; the failures are returned.
    pub async fn teardown(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let selector = self.names.selector();
        let mut note = |what: &str, r: Result<(), kube::Error>| {
            if let Err(e) = r {
                problems.push(format!("cannot delete the run's {what} ({selector}): {e}"));
            }
        };
        note("Job", delete_all(&self.api::<Job>(), &selector).await);
        note("pods", delete_all(&self.api::<Pod>(), &selector).await);
        note(
            "EndpointSlice",
            delete_all(&self.api::<EndpointSlice>(), &selector).await,
        );
        note(
            "Service",
            delete_all(&self.api::<Service>(), &selector).await,
        );
        note(
            "ConfigMap",
            delete_all(&self.api::<ConfigMap>(), &selector).await,
        );
        problems
    }
}

/// rustls picks its provider by its features, and the workspace enables two (reqwest's
/// aws-lc-rs, kube's ring): name one for the whole process (once; later calls keep it).
pub(super) fn crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

async fn create<K>(api: &Api<K>, obj: &K) -> anyhow::Result<()>
where
    K: kube::Resource + k8s_openapi::Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    api.create(&PostParams::default(), obj)
        .await
        .with_context(|| {
            format!(
                "cannot create {} {name}",
                <K as k8s_openapi::Resource>::KIND
            )
        })
        .map(drop)
}

async fn delete_all<K>(api: &Api<K>, selector: &str) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + DeserializeOwned + Debug,
{
    api.delete_collection(
        &DeleteParams::background(),
        &ListParams::default().labels(selector),
    )
    .await
    .map(drop)
}
