//! The `flowline` harness: brings a cluster up, runs a scenario against it, injects faults,
//! and writes the run folder and its report (`flowline run / compare / replay / report`,
//! `flowline scenario check`).
//!
//! | module | what it is for |
//! |---|---|
//! | [`cli`] | flags and entry points of the harness's subcommands |
//! | [`run`] | **the run story**: check, start, drive, tear down (start reading here) |
//! | [`phases`] | `flowline run --phases`: one scenario over several phases, then compared |
//! | [`preflight`] | reading the scenario and every check made before anything starts |
//! | [`capacity`] | what a run needs of this machine (workers, client-link processes, files, source addresses, ports) against its limits |
//! | [`topology`] | the names of a run's nodes and links, built once; fault-target checks |
//! | [`links`] | the run's chaos links (embedded proxy or Toxiproxy) and URL rewriting |
//! | [`cluster`], [`generic_target`] | starting the system under test: reference cluster or a WebSocket service |
//! | [`isolation`] | `--isolation netns`: the run's hosts in network namespaces, the harness's ways in |
//! | [`coordinator`] | the worker protocol's harness side: gather, check, clock, start, stream lines |
//! | [`workers`] | the local loadgen worker processes (they report to the coordinator) |
//! | [`metrics_targets`] | the run's Prometheus endpoints (metrics-targets.json) |
//! | [`needs`] | which services (Postgres, Redis) a phase needs |
//! | [`pg_budget`] | the nodes' Postgres pool sizes, within the server's connection limit |
//! | [`faults`] | the scenario's fault schedule wired to the run's links and nodes |
//! | [`console`] | `flowline run --console`: the live page, its stream, faults by hand |
//! | [`run_id`] | a run id (database, Redis prefix) claimed machine-wide so same-second runs never share it |
//! | [`revision`] | which Flowline made a run (summary.json `meta.revision`) |
//! | [`services`] | Postgres/Redis for a run: given, throwaway, or refused |
//! | [`node_errors`] | the nodes' logged warnings and errors, grouped by cause (summary.json) |
//! | [`supervisor`], [`child`] | every child process of a run, and how it dies with us |
//! | [`runfolder`], [`report`], [`report_workers`], [`svg`] | reading a run folder; report.html, its workers section and charts |
//! | [`compare`], [`replay`] | `flowline compare` and `flowline replay` |
//! | [`kubernetes`] | `--launcher kubernetes` (workers as an Indexed Job) and `flowline k8s manifests` |

pub mod capacity;
pub mod child;
pub mod cli;
pub mod cluster;
pub mod compare;
pub mod console;
pub mod coordinator;
pub mod faults;
pub mod generic_target;
pub mod isolation;
pub mod kubernetes;
pub mod links;
pub mod metrics_targets;
pub mod needs;
pub mod node_errors;
pub mod pg_budget;
pub mod phases;
pub mod preflight;
pub mod replay;
pub mod report;
pub mod report_workers;
pub mod revision;
pub mod run;
pub mod run_id;
pub mod runfolder;
pub mod services;
pub mod supervisor;
pub mod svg;
pub mod topology;
pub mod workers;
