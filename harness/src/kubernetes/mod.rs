//! `flowline run --launcher kubernetes` and `flowline k8s manifests`: the run's workers as
//! an Indexed Job in a Kubernetes cluster, reached through a real API client (`kube`,
//! `k8s-openapi`), never kubectl.
//!
//! | module | what it is for |
//! |---|---|
//! | [`cli`] | the flags (`--launcher`, `--namespace`, `--image`, ...) and `flowline k8s` |
//! | [`launch`] | **`flowline run --launcher kubernetes`**: check, connect, create, gather, tear down |
//! | [`connect`] | the cluster's client (kubeconfig or in-pod), reachable, namespace there |
//! | [`names`] | the run's object names and labels; checks of the user's input |
//! | [`workload`] | what the pods load (target URLs) and the plan they share |
//! | [`manifests`] | the objects (ConfigMap, Service, EndpointSlice, Job) as typed values |
//! | [`api`] | the API calls: create, list pods, delete by the run's label |
//! | [`pods`] | the shards' states read from the pods (running, succeeded, failed and why) |
//! | [`supervise`] | create → watch pods while gathering → teardown on every way out |

pub mod api;
pub mod cli;
pub mod connect;
pub mod launch;
pub mod manifests;
pub mod names;
pub mod pods;
pub mod supervise;
pub mod workload;
