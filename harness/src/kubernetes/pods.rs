//! What the workers' pods say about their shards: running, done, or failed (with why),
//! read from one listing of the run's pods.

use k8s_openapi::api::core::v1::Pod;

/// The annotation (and, since Kubernetes 1.28, label) the Job controller puts on each pod
/// of an Indexed Job.
pub const INDEX_KEY: &str = "batch.kubernetes.io/job-completion-index";

/// Container waiting reasons a pod does not recover from without someone's help.
const STUCK: &[&str] = &[
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// The shards of a run as their pods show them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Shards {
    /// Shards whose pod exists and has not ended (Pending or Running).
    pub active: Vec<usize>,
    /// Shards whose pod Succeeded.
    pub succeeded: Vec<usize>,
    /// Shards that failed, each with a sentence naming its pod and why.
    pub failed: Vec<(usize, String)>,
    /// How many shards are Running.
    pub running: usize,
}

impl Shards {
    /// Read a listing of the run's pods for a run of `n` shards.
    pub fn of(pods: &[Pod], n: usize) -> Shards {
        let mut s = Shards::default();
        for pod in pods {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let Some(index) = index_of(pod).filter(|i| *i < n) else {
                continue;
            };
            let status = pod.status.clone().unwrap_or_default();
            let phase = status.phase.as_deref().unwrap_or("Pending");
            let container = status
                .container_statuses
                .as_ref()
                .and_then(|c| c.first())
                .cloned();
            match phase {
                "Succeeded" => s.succeeded.push(index),
                "Failed" => {
                    let mut why = status
                        .reason
                        .clone()
                        .or_else(|| status.message.clone())
                        .unwrap_or_default();
                    if let Some(t) = container
                        .as_ref()
                        .and_then(|c| c.state.as_ref()?.terminated.clone())
                    {
                        why = format!(
                            "exit code {}{}",
                            t.exit_code,
                            t.reason.map(|r| format!(" ({r})")).unwrap_or_default()
                        );
                    }
                    s.failed.push((index, failure(index, &name, &why)));
                }
                _ => {
                    let waiting = container
                        .as_ref()
                        .and_then(|c| c.state.as_ref()?.waiting.clone())
                        .filter(|w| w.reason.as_deref().is_some_and(|r| STUCK.contains(&r)));
                    if let Some(w) = waiting {
                        let why = format!(
                            "{}: {}",
                            w.reason.unwrap_or_default(),
                            w.message.unwrap_or_default()
                        );
                        s.failed.push((index, failure(index, &name, &why)));
                    } else {
                        if phase == "Running" {
                            s.running += 1;
                        }
                        s.active.push(index);
                    }
                }
            }
        }
        for v in [&mut s.active, &mut s.succeeded] {
            v.sort_unstable();
            v.dedup();
        }
        s.failed.sort();
        s
    }

    /// Every shard's pod Succeeded.
    pub fn all_succeeded(&self, n: usize) -> bool {
        (0..n).all(|i| self.succeeded.contains(&i))
    }
}

fn failure(index: usize, pod: &str, why: &str) -> String {
    format!("worker shard {index} (pod {pod}) failed: {why}")
}

/// The pod's shard index.
pub fn index_of(pod: &Pod) -> Option<usize> {
    let m = &pod.metadata;
    m.annotations
        .as_ref()
        .and_then(|a| a.get(INDEX_KEY))
        .or_else(|| m.labels.as_ref()?.get(INDEX_KEY))
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, PodStatus,
    };
    use std::collections::BTreeMap;

    fn pod(i: usize, phase: &str, state: Option<ContainerState>) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(format!("w-{i}"));
        p.metadata.annotations = Some(BTreeMap::from([(INDEX_KEY.to_string(), i.to_string())]));
        p.status = Some(PodStatus {
            phase: Some(phase.into()),
            container_statuses: state.map(|s| {
                vec![ContainerStatus {
                    name: "loadgen".into(),
                    state: Some(s),
                    ..ContainerStatus::default()
                }]
            }),
            ..PodStatus::default()
        });
        p
    }

    #[test]
    fn phases_become_shard_states() {
        let exited = ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 2,
                reason: Some("Error".into()),
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        };
        let pull = ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("ImagePullBackOff".into()),
                message: Some("no such image".into()),
            }),
            ..ContainerState::default()
        };
        let pods = [
            pod(0, "Succeeded", None),
            pod(1, "Running", None),
            pod(2, "Failed", Some(exited)),
            pod(3, "Pending", Some(pull)),
            pod(4, "Pending", None),
            pod(9, "Running", None),
        ];
        let s = Shards::of(&pods, 5);
        assert_eq!(s.succeeded, [0]);
        assert_eq!(s.active, [1, 4]);
        assert_eq!(s.running, 1);
        assert_eq!(s.failed.len(), 2);
        assert_eq!(
            s.failed[0].1,
            "worker shard 2 (pod w-2) failed: exit code 2 (Error)"
        );
        assert!(s.failed[1].1.contains("shard 3") && s.failed[1].1.contains("ImagePullBackOff"));
        assert!(Shards::of(&pods[..1], 1).all_succeeded(1));
        assert!(!s.all_succeeded(5));
    }
}
