//! Reaching the cluster before a run creates anything: the client of the kubeconfig
//! (`KUBECONFIG`, `~/.kube/config`, `--kube-context`) or of the pod the harness runs in,
//! one request to prove the API server answers, and the run's namespace checked to exist.

use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams};

/// How long connecting to the API server may take (each request).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one API request may take once connected.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A cluster the harness can talk to.
#[derive(Clone)]
pub struct Cluster {
    /// The API client.
    pub client: kube::Client,
    /// The API server's URL (for messages).
    pub url: String,
}

/// The client of kubeconfig context `context` (its current context when `None`), or,
/// without a kubeconfig, of the pod this runs in. Nothing is contacted yet.
pub async fn client(context: Option<&str>) -> anyhow::Result<Cluster> {
    super::api::crypto_provider();
    let mut config = match context {
        Some(c) => {
            let options = kube::config::KubeConfigOptions {
                context: Some(c.to_string()),
                ..kube::config::KubeConfigOptions::default()
            };
            kube::Config::from_kubeconfig(&options)
                .await
                .with_context(|| {
                    format!("cannot use the kubeconfig context {c:?} (--kube-context)")
                })?
        }
        None => kube::Config::infer().await.context(
            "cannot find a Kubernetes cluster: no usable kubeconfig (KUBECONFIG, ~/.kube/config) \
             and not running in a pod",
        )?,
    };
    let url = config.cluster_url.to_string();
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.read_timeout = Some(READ_TIMEOUT);
    let client = kube::Client::try_from(config)
        .with_context(|| format!("cannot build a Kubernetes client for {url}"))?;
    Ok(Cluster { client, url })
}

/// Check that the API server answers and `namespace` exists (a harness allowed to read
/// only its own namespace, as deploy/kubernetes/harness-rbac.yaml grants, lists the
/// namespace's Jobs instead). Errors say which of the two failed.
pub async fn check_namespace(c: &Cluster, namespace: &str) -> anyhow::Result<()> {
    let url = &c.url;
    match Api::<Namespace>::all(c.client.clone())
        .get_opt(namespace)
        .await
    {
        Ok(Some(_)) => Ok(()),
        Ok(None) => bail!(
            "namespace {namespace:?} does not exist in the cluster at {url}: create it \
             (`kubectl create namespace {namespace}`) or give another --namespace"
        ),
        Err(kube::Error::Api(s)) if s.code == 403 => {
            Api::<Job>::namespaced(c.client.clone(), namespace)
                .list(&ListParams::default().limit(1))
                .await
                .map_err(|e| refused(e, url, namespace))?;
            Ok(())
        }
        Err(e) => Err(refused(e, url, namespace)),
    }
}

fn refused(e: kube::Error, url: &str, namespace: &str) -> anyhow::Error {
    match e {
        kube::Error::Api(s) if s.code == 401 => anyhow::anyhow!(
            "the Kubernetes API server at {url} refused the kubeconfig's credentials: {}",
            s.message
        ),
        kube::Error::Api(s) if s.code == 403 => anyhow::anyhow!(
            "the Kubernetes API server at {url} does not let this user work in namespace \
             {namespace:?}: {} (deploy/kubernetes/harness-rbac.yaml lists what the run needs)",
            s.message
        ),
        kube::Error::Api(s) => anyhow::anyhow!(
            "the Kubernetes API server at {url} answered {} {}: {}",
            s.code,
            s.reason,
            s.message
        ),
        other => anyhow::anyhow!("cannot reach the Kubernetes API server at {url}: {other}"),
    }
}
