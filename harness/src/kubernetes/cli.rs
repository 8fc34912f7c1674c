//! The Kubernetes flags of `flowline run` (`--launcher kubernetes` and its options) and
//! `flowline k8s manifests`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use flowline_loadgen::scenario::{Overrides, Scenario};

use super::manifests::{Inputs, Manifests};
use super::names::{self, Advertise, Names};
use super::workload;

/// How long past the scenario's own time the workers' Job may run (image pulls, pod
/// scheduling, waiting for every shard to say hello) before the cluster stops it.
pub const JOB_SETUP_ALLOWANCE: Duration = Duration::from_secs(600);

/// Who starts the loadgen workers of `flowline run`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Launcher {
    /// Child processes of the harness on this machine.
    #[default]
    Local,
    /// An Indexed Job in a Kubernetes cluster (see docs/kubernetes.md).
    Kubernetes,
}

/// `flowline run`'s Kubernetes options (all but `--launcher` apply to
/// `--launcher kubernetes` only).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct KubeArgs {
    /// Who starts the workers: `local` processes, or a `kubernetes` Indexed Job (the
    /// cluster of the current kubeconfig context, or the one this pod runs in).
    #[arg(long, value_enum, default_value_t = Launcher::Local, help_heading = "Kubernetes")]
    pub launcher: Launcher,
    /// Namespace of the run's objects (ConfigMap, Service, EndpointSlice, Job).
    #[arg(long, env = "FLOWLINE_NAMESPACE", help_heading = "Kubernetes")]
    pub namespace: Option<String>,
    /// The workers' image (e.g. `flowline:0.1.0`, built from the repository's Dockerfile).
    #[arg(long, env = "FLOWLINE_IMAGE", help_heading = "Kubernetes")]
    pub image: Option<String>,
    /// HOST:PORT at which the pods reach this harness's coordinator: an IP gets a
    /// headless Service with an EndpointSlice, a DNS name an ExternalName Service.
    /// Default in a pod: $POD_IP (downward API) and port 7450.
    #[arg(long, value_name = "HOST:PORT", help_heading = "Kubernetes")]
    pub coordinator_advertise: Option<String>,
    /// Where the coordinator listens (default: 0.0.0.0 and the advertised port).
    #[arg(long, value_name = "ADDR", help_heading = "Kubernetes")]
    pub coordinator_listen: Option<String>,
    /// HTTP base URLs of the nodes to load, comma-separated, as the harness and the pods
    /// reach them (replaces the scenario's cluster; the harness provisions through the
    /// first one).
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "URL,...",
        help_heading = "Kubernetes"
    )]
    pub nodes_url: Vec<String>,
    /// Load the reference cluster of deploy/kubernetes/ in --namespace (its
    /// `flowline-node-<i>` pods, as many as the scenario's cluster.nodes).
    #[arg(long, conflicts_with = "nodes_url", help_heading = "Kubernetes")]
    pub reference_cluster: bool,
    /// Where this harness reaches a node's admin API to provision the users, when the
    /// nodes' URLs resolve inside the cluster only (--reference-cluster): e.g.
    /// `http://127.0.0.1:18080` of `kubectl -n NS port-forward svc/flowline-node
    /// 18080:8080`. Default: the first node URL.
    #[arg(long, value_name = "URL", help_heading = "Kubernetes")]
    pub provision_url: Option<String>,
    /// The kubeconfig context to use (default: the kubeconfig's current context; without
    /// a kubeconfig, the cluster this pod runs in). KUBECONFIG names the file.
    #[arg(long, value_name = "NAME", help_heading = "Kubernetes")]
    pub kube_context: Option<String>,
    /// Admin secret of the nodes given by --nodes-url / --reference-cluster.
    #[arg(
        long,
        env = "FLOWLINE_ADMIN_SECRET",
        hide_env_values = true,
        help_heading = "Kubernetes"
    )]
    pub admin_secret: Option<String>,
}

/// The default namespace.
pub const DEFAULT_NAMESPACE: &str = "default";
/// The coordinator's port when it is not given.
pub const DEFAULT_COORDINATOR_PORT: u16 = 7450;

impl KubeArgs {
    /// Refuse Kubernetes options given to the local launcher.
    /// (A namespace or image that only comes from FLOWLINE_NAMESPACE / FLOWLINE_IMAGE,
    /// exported for `flowline k8s manifests`, is not refused.)
    pub fn check_local(&self) -> anyhow::Result<()> {
        let from_flag = |v: &Option<String>, env: &str| {
            v.is_some() && v.as_deref() != std::env::var(env).ok().as_deref()
        };
        let given = [
            (
                "--namespace",
                from_flag(&self.namespace, "FLOWLINE_NAMESPACE"),
            ),
            ("--image", from_flag(&self.image, "FLOWLINE_IMAGE")),
            ("--kube-context", self.kube_context.is_some()),
            ("--provision-url", self.provision_url.is_some()),
            (
                "--coordinator-advertise",
                self.coordinator_advertise.is_some(),
            ),
            ("--coordinator-listen", self.coordinator_listen.is_some()),
            ("--nodes-url", !self.nodes_url.is_empty()),
            ("--reference-cluster", self.reference_cluster),
        ];
        if let Some((flag, _)) = given.iter().find(|(_, g)| *g) {
            bail!("{flag} applies to --launcher kubernetes only");
        }
        Ok(())
    }

    /// The namespace, checked.
    pub fn namespace(&self) -> anyhow::Result<String> {
        let ns = self
            .namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
        names::check_namespace(&ns)?;
        Ok(ns)
    }

    /// Where pods reach the coordinator: the flag, or $POD_IP in a pod.
    pub fn advertise(&self) -> anyhow::Result<Advertise> {
        if let Some(a) = &self.coordinator_advertise {
            return Advertise::parse(a);
        }
        match std::env::var("POD_IP").ok().filter(|ip| !ip.is_empty()) {
            Some(ip) if ip.contains(':') => {
                Advertise::parse(&format!("[{ip}]:{DEFAULT_COORDINATOR_PORT}"))
            }
            Some(ip) => Advertise::parse(&format!("{ip}:{DEFAULT_COORDINATOR_PORT}")),
            None => bail!(
                "the pods must reach this harness: give --coordinator-advertise HOST:PORT (an \
                 address of this machine the cluster's pods can connect to), or run the \
                 harness in a pod with POD_IP set (see docs/kubernetes.md)"
            ),
        }
    }

    /// Apply --nodes-url / --reference-cluster to the scenario.
    pub fn apply_nodes(&self, s: &mut Scenario, namespace: &str) -> anyhow::Result<()> {
        let urls = if self.reference_cluster {
            workload::reference_urls(namespace, s.cluster.nodes)
        } else {
            self.nodes_url
                .iter()
                .filter(|u| !u.is_empty())
                .cloned()
                .collect()
        };
        if urls.is_empty() {
            return Ok(());
        }
        workload::use_nodes(s, &urls, self.admin_secret.as_deref())
    }
}

/// Work with Kubernetes.
#[derive(Debug, clap::Args)]
pub struct K8sArgs {
    #[command(subcommand)]
    command: K8sCommand,
}

#[derive(Debug, clap::Subcommand)]
enum K8sCommand {
    /// Print the objects `flowline run --launcher kubernetes` creates for a scenario
    /// (ConfigMap, coordinator Service and EndpointSlice, the workers' Indexed Job) as
    /// YAML, for people who apply them themselves (GitOps). Nothing is contacted.
    Manifests(ManifestsArgs),
}

/// `flowline k8s manifests`.
#[derive(Debug, clap::Args)]
struct ManifestsArgs {
    /// Scenario file.
    scenario: PathBuf,
    /// Namespace of the objects.
    #[arg(long, env = "FLOWLINE_NAMESPACE", default_value = DEFAULT_NAMESPACE)]
    namespace: String,
    /// The workers' image.
    #[arg(long, env = "FLOWLINE_IMAGE")]
    image: Option<String>,
    /// Number of workers (default: as many as the users need).
    #[arg(long)]
    workers: Option<usize>,
    /// HOST:PORT at which the pods reach the coordinator (the harness).
    #[arg(long, value_name = "HOST:PORT")]
    coordinator_advertise: String,
    /// The provisioned plan (`flowline loadgen --provision-only` writes one); not needed
    /// for a scenario with [target].
    #[arg(long, value_name = "FILE")]
    plan: Option<PathBuf>,
    /// HTTP base URLs of the nodes, comma-separated, as the pods reach them.
    #[arg(long, value_delimiter = ',', value_name = "URL,...")]
    nodes_url: Vec<String>,
    /// The nodes of deploy/kubernetes/ in --namespace.
    #[arg(long, conflicts_with = "nodes_url")]
    reference_cluster: bool,
    /// Override the scenario's seed.
    #[arg(long)]
    seed: Option<u64>,
}

/// Entry point of `flowline k8s`.
pub async fn k8s_main(args: K8sArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        K8sCommand::Manifests(a) => {
            print!("{}", manifests_yaml(&a)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn manifests_yaml(a: &ManifestsArgs) -> anyhow::Result<String> {
    names::check_namespace(&a.namespace)?;
    let image = names::check_image(a.image.as_deref())?;
    let advertise = Advertise::parse(&a.coordinator_advertise)?;
    if let Some(n) = a.workers {
        names::check_workers(n)?;
    }
    let overrides = Overrides {
        seed: a.seed,
        ..Overrides::default()
    };
    let mut s = Scenario::from_path(&a.scenario)?.apply(&overrides)?;
    let kube = KubeArgs {
        nodes_url: a.nodes_url.clone(),
        reference_cluster: a.reference_cluster,
        ..KubeArgs::default()
    };
    kube.apply_nodes(&mut s, &a.namespace)?;
    let targets = workload::targets(&s)?;
    let plan = workload::offline_plan(&s, a.plan.as_deref())?;
    let workers = a.workers.unwrap_or_else(|| plan.workers_needed());
    plan.shards(workers).map_err(|e| anyhow::anyhow!("{e}"))?;
    let names = Names::for_run(&s.name);
    let m = Manifests::build(&Inputs {
        names: &names,
        namespace: &a.namespace,
        image: &image,
        workers,
        targets: &targets,
        coordinator: &advertise,
        scenario_toml: &s.to_toml(),
        plan_json: &workload::plan_json(&plan)?,
        deadline: s.total_time() + JOB_SETUP_ALLOWANCE,
    })?;
    m.to_yaml()
}
