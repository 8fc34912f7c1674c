//! Integration tests of the `flowline` harness, through the real binary.

mod bots;
mod client_links;
mod compose;
mod console;
mod console_page;
mod coordinator;
mod generic;
mod isolation;
mod kubernetes_fake;
mod kubernetes_kubelet;
mod kubernetes_launcher;
mod kubernetes_manifests;
mod kubernetes_run;
mod logs;
mod phases;
mod prometheus;
mod report;
mod run;
mod scenarios;
mod scripts_test;
mod util;
