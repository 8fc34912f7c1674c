//! The objects a Kubernetes run creates, built as `k8s-openapi` types: the ConfigMap
//! (scenario.toml, plan.json), the coordinator's Service (with an EndpointSlice, or an
//! ExternalName alias) and the workers' Indexed Job. `flowline k8s manifests` prints the
//! same objects as YAML.
//!
//! ```text
//! Job flowline-<id>-workers (completionMode Indexed, completions = parallelism = N)
//!   pod i: flowline loadgen --shard $(JOB_COMPLETION_INDEX)/N --coordinator <svc>:<port>
//!          │ reads /etc/flowline/{scenario.toml,plan.json}  ◀── ConfigMap flowline-<id>
//!          └─▶ Service flowline-<id>-coord (headless) ─▶ EndpointSlice: harness IP:port
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, ObjectFieldSelector, PodSpec, PodTemplateSpec, Service, ServicePort, ServiceSpec,
    Volume, VolumeMount,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::names::{Advertise, Names};

/// Where the ConfigMap is mounted in the worker pods.
pub const CONFIG_DIR: &str = "/etc/flowline";
/// The workers' Prometheus port (`flowline loadgen --metrics-listen 0.0.0.0:9464`).
pub const METRICS_PORT: u16 = 9464;
/// A ConfigMap holds at most 1 MiB; a plan larger than this does not fit.
const CONFIGMAP_MAX_BYTES: usize = 1_000_000;
/// Finished Jobs that teardown could not delete (the harness was killed) are removed by
/// the cluster this long after they end.
const JOB_TTL_AFTER_FINISHED_S: i32 = 3600;

/// What the objects of one run are built from.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    /// The run's names and labels.
    pub names: &'a Names,
    /// Namespace of every object (checked).
    pub namespace: &'a str,
    /// The workers' image (checked).
    pub image: &'a str,
    /// Number of workers = shards = completions = parallelism (checked, ≥ 1).
    pub workers: usize,
    /// The WebSocket URLs the workers connect to (reachable from the pods).
    pub targets: &'a [String],
    /// Where the pods reach the harness's coordinator.
    pub coordinator: &'a Advertise,
    /// The run's scenario.toml (seed filled in).
    pub scenario_toml: &'a str,
    /// The run's plan.json.
    pub plan_json: &'a str,
    /// Longest the Job may run (`activeDeadlineSeconds`): the cluster stops its pods then
    /// even if the harness is gone.
    pub deadline: Duration,
}

/// The objects of one run, in the order they are created.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifests {
    /// scenario.toml and plan.json.
    pub config: ConfigMap,
    /// The coordinator's Service.
    pub service: Service,
    /// Its endpoint (the harness's IP), unless the Service is an ExternalName alias.
    pub endpoints: Option<EndpointSlice>,
    /// The workers' Indexed Job.
    pub job: Job,
}

impl Manifests {
    /// Build the run's objects.
    pub fn build(i: &Inputs<'_>) -> anyhow::Result<Self> {
        super::names::check_namespace(i.namespace)?;
        super::names::check_image(Some(i.image))?;
        super::names::check_workers(i.workers)?;
        if i.targets.is_empty() {
            bail!("no target URL for the workers");
        }
        let size = i.scenario_toml.len() + i.plan_json.len();
        if size > CONFIGMAP_MAX_BYTES {
            bail!(
                "scenario.toml and plan.json are {size} bytes: more than a ConfigMap holds \
                 ({CONFIGMAP_MAX_BYTES}); lower population.users"
            );
        }
        let meta = |name: String, component: &str| ObjectMeta {
            name: Some(name),
            namespace: Some(i.namespace.to_string()),
            labels: Some(i.names.labels(component)),
            ..ObjectMeta::default()
        };
        let config = ConfigMap {
            metadata: meta(i.names.config(), "config"),
            data: Some(BTreeMap::from([
                ("scenario.toml".to_string(), i.scenario_toml.to_string()),
                ("plan.json".to_string(), i.plan_json.to_string()),
            ])),
            ..ConfigMap::default()
        };
        let (service, endpoints) = coordinator(i, meta(i.names.coordinator(), "coordinator"));
        let job = Job {
            metadata: meta(i.names.job(), "worker"),
            spec: Some(job_spec(i)?),
            ..Job::default()
        };
        Ok(Manifests {
            config,
            service,
            endpoints,
            job,
        })
    }

    /// The objects as one multi-document YAML stream (`kubectl apply -f -` reads it).
    pub fn to_yaml(&self) -> anyhow::Result<String> {
        let mut docs = vec![
            serde_norway::to_string(&self.config)?,
            serde_norway::to_string(&self.service)?,
        ];
        if let Some(e) = &self.endpoints {
            docs.push(serde_norway::to_string(e)?);
        }
        docs.push(serde_norway::to_string(&self.job)?);
        Ok(docs
            .iter()
            .map(|d| format!("---\n{d}"))
            .collect::<Vec<_>>()
            .concat())
    }

    /// The address workers are given with `--coordinator`.
    pub fn coordinator_address(names: &Names, namespace: &str, port: u16) -> String {
        format!("{}.{namespace}.svc:{port}", names.coordinator())
    }
}

/// A headless Service without selector plus the EndpointSlice naming the harness's IP;
/// for a DNS name, an ExternalName Service (a CNAME) and no EndpointSlice.
fn coordinator(i: &Inputs<'_>, metadata: ObjectMeta) -> (Service, Option<EndpointSlice>) {
    let port = i32::from(i.coordinator.port);
    let port_name = "coordinator".to_string();
    let Some(ip) = i.coordinator.ip() else {
        let service = Service {
            metadata,
            spec: Some(ServiceSpec {
                type_: Some("ExternalName".into()),
                external_name: Some(i.coordinator.host.clone()),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        };
        return (service, None);
    };
    let service = Service {
        metadata: metadata.clone(),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            ports: Some(vec![ServicePort {
                name: Some(port_name.clone()),
                port,
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    let mut labels = metadata.labels.clone().unwrap_or_default();
    // How a selectorless Service finds the slices someone else manages.
    labels.insert("kubernetes.io/service-name".into(), i.names.coordinator());
    labels.insert(
        "endpointslice.kubernetes.io/managed-by".into(),
        "flowline.dev".into(),
    );
    let slice = EndpointSlice {
        metadata: ObjectMeta {
            labels: Some(labels),
            ..metadata
        },
        address_type: if ip.is_ipv4() { "IPv4" } else { "IPv6" }.into(),
        endpoints: vec![Endpoint {
            addresses: vec![ip.to_string()],
            ..Endpoint::default()
        }],
        ports: Some(vec![EndpointPort {
            name: Some(port_name),
            port: Some(port),
            protocol: Some("TCP".into()),
            ..EndpointPort::default()
        }]),
    };
    (service, Some(slice))
}

fn job_spec(i: &Inputs<'_>) -> anyhow::Result<JobSpec> {
    let n = i32::try_from(i.workers).context("too many workers")?;
    let coordinator = Manifests::coordinator_address(i.names, i.namespace, i.coordinator.port);
    let args: Vec<String> = vec![
        "loadgen".into(),
        "--scenario".into(),
        format!("{CONFIG_DIR}/scenario.toml"),
        "--plan".into(),
        format!("{CONFIG_DIR}/plan.json"),
        // Kubernetes expands $(VAR) from the container's env (declared below).
        "--shard".into(),
        format!("$(JOB_COMPLETION_INDEX)/{n}"),
        "--targets".into(),
        i.targets.join(","),
        "--coordinator".into(),
        coordinator,
        "--metrics-listen".into(),
        format!("0.0.0.0:{METRICS_PORT}"),
        // The plan's folder is a read-only ConfigMap; the worker's own files go here.
        "--out".into(),
        "/work".into(),
    ];
    let pod_labels = i.names.labels("worker");
    let annotations = BTreeMap::from([
        ("prometheus.io/scrape".to_string(), "true".to_string()),
        ("prometheus.io/port".into(), METRICS_PORT.to_string()),
        ("prometheus.io/path".into(), "/metrics".into()),
    ]);
    let container = Container {
        name: "loadgen".into(),
        image: Some(i.image.to_string()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(args),
        // The Job controller sets this env too; declaring it makes $(…) expansion in args
        // independent of that.
        env: Some(vec![EnvVar {
            name: "JOB_COMPLETION_INDEX".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.annotations['batch.kubernetes.io/job-completion-index']"
                        .into(),
                    ..ObjectFieldSelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        }]),
        ports: Some(vec![ContainerPort {
            name: Some("metrics".into()),
            container_port: i32::from(METRICS_PORT),
            ..ContainerPort::default()
        }]),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "config".into(),
                mount_path: CONFIG_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "work".into(),
                mount_path: "/work".into(),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    };
    Ok(JobSpec {
        completion_mode: Some("Indexed".into()),
        completions: Some(n),
        parallelism: Some(n),
        // One failed shard fails the run: a retried worker would replay its users from
        // the start, out of step with the others.
        backoff_limit: Some(0),
        active_deadline_seconds: Some(i.deadline.as_secs().max(1) as i64),
        ttl_seconds_after_finished: Some(JOB_TTL_AFTER_FINISHED_S),
        template: PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(pod_labels),
                annotations: Some(annotations),
                ..ObjectMeta::default()
            }),
            spec: Some(PodSpec {
                restart_policy: Some("Never".into()),
                termination_grace_period_seconds: Some(10),
                containers: vec![container],
                volumes: Some(vec![
                    Volume {
                        name: "config".into(),
                        config_map: Some(ConfigMapVolumeSource {
                            name: i.names.config(),
                            ..ConfigMapVolumeSource::default()
                        }),
                        ..Volume::default()
                    },
                    Volume {
                        name: "work".into(),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Volume::default()
                    },
                ]),
                ..PodSpec::default()
            }),
        },
        ..JobSpec::default()
    })
}
