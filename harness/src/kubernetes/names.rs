//! The names and labels of a Kubernetes run's objects, and the checks of the user's
//! input made before anything is created (namespace, image, worker count, addresses).

use std::collections::BTreeMap;
use std::net::IpAddr;

use anyhow::{Context, bail};

/// Label every object of a run carries: `flowline.dev/run=<run id>`. Teardown deletes by it.
pub const RUN_LABEL: &str = "flowline.dev/run";
/// Label naming the object's part of the run (`worker`, `coordinator`, `config`).
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
/// Longest run id kept in names: `flowline-<id>-workers` stays a 63-character DNS label
/// (the Job's name is also the value of its pods' `batch.kubernetes.io/job-name` label).
const MAX_ID: usize = 46;
/// Most workers one run's Indexed Job may have (the API allows 100,000 completions; a
/// run that large has other problems first, and the plan is split per shard up front).
pub const MAX_WORKERS: usize = 10_000;

/// The names of one run's objects, all derived from its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The run id as a DNS label (lowercase, `a-z0-9-`, at most 46 characters).
    pub id: String,
}

impl Names {
    /// Names for a run id (a run folder name such as `20261129-011500-quickstart`);
    /// anything outside `a-z0-9-` becomes `-`, the result is cut to fit a DNS label.
    pub fn for_run(run_id: &str) -> Self {
        let mut id: String = run_id
            .chars()
            .map(|c| {
                let c = c.to_ascii_lowercase();
                if c.is_ascii_alphanumeric() { c } else { '-' }
            })
            .collect();
        id.truncate(MAX_ID);
        let id = id.trim_matches('-').to_string();
        Names {
            id: if id.is_empty() { "run".into() } else { id },
        }
    }

    /// The ConfigMap holding scenario.toml and plan.json.
    pub fn config(&self) -> String {
        format!("flowline-{}", self.id)
    }
    /// The workers' Indexed Job.
    pub fn job(&self) -> String {
        format!("flowline-{}-workers", self.id)
    }
    /// The coordinator's Service (and its EndpointSlice).
    pub fn coordinator(&self) -> String {
        format!("flowline-{}-coord", self.id)
    }
    /// The label selector of everything the run created.
    pub fn selector(&self) -> String {
        format!("{RUN_LABEL}={}", self.id)
    }
    /// The labels of one of the run's objects.
    pub fn labels(&self, component: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/name".to_string(), "flowline".to_string()),
            ("app.kubernetes.io/managed-by".into(), "flowline".into()),
            (COMPONENT_LABEL.into(), component.into()),
            (RUN_LABEL.into(), self.id.clone()),
        ])
    }
}

/// Check a namespace name: a DNS-1123 label (RFC 1123: `a-z0-9-`, starts and ends with
/// a letter or digit, at most 63 characters), as the API server would.
pub fn check_namespace(ns: &str) -> anyhow::Result<()> {
    let ok_chars = ns
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ns.is_empty() || ns.len() > 63 || !ok_chars || ns.starts_with('-') || ns.ends_with('-') {
        bail!(
            "--namespace {ns:?} is not a valid namespace name: lowercase letters, digits and \
             '-', starting and ending with a letter or digit, at most 63 characters"
        );
    }
    Ok(())
}

/// Check the workers' image reference: given, no whitespace, a lowercase repository.
pub fn check_image(image: Option<&str>) -> anyhow::Result<String> {
    let Some(image) = image.map(str::trim).filter(|i| !i.is_empty()) else {
        bail!(
            "the Kubernetes launcher needs the workers' image: give --image (e.g. flowline:0.1.0 \
             built from the repository's Dockerfile and loaded into the cluster; see \
             docs/kubernetes.md)"
        );
    };
    // The repository part (before a tag or digest) must be lowercase; the tag may not be.
    let repo = image.split('@').next().unwrap_or(image);
    let repo = match repo.rsplit_once(':') {
        Some((r, tag)) if !tag.contains('/') => r,
        _ => repo,
    };
    if image.chars().any(|c| c.is_whitespace() || c.is_control())
        || repo.chars().any(|c| c.is_ascii_uppercase())
    {
        bail!("--image {image:?} is not an image reference (e.g. registry.example/flowline:0.1.0)");
    }
    Ok(image.to_string())
}

/// Check the number of workers (shards of the Indexed Job).
pub fn check_workers(n: usize) -> anyhow::Result<()> {
    if n == 0 {
        bail!("--workers 0: the Kubernetes launcher needs at least one worker");
    }
    if n > MAX_WORKERS {
        bail!("--workers {n}: at most {MAX_WORKERS} workers per run");
    }
    Ok(())
}

/// Where pods reach the coordinator: an IP (the Service gets an EndpointSlice pointing at
/// it) or a DNS name (the Service is an ExternalName alias of it), and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertise {
    /// IP address or DNS name.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl Advertise {
    /// Parse `HOST:PORT` (`[v6]:PORT` for IPv6).
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        let (host, port) = s
            .rsplit_once(':')
            .with_context(|| format!("--coordinator-advertise {s:?}: expected HOST:PORT"))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .with_context(|| format!("--coordinator-advertise {s:?}: bad port {port:?}"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let dns_ok = !host.is_empty()
            && host.len() <= 253
            && host
                .split('.')
                .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        if host.parse::<IpAddr>().is_err() && !dns_ok {
            bail!(
                "--coordinator-advertise {s:?}: {host:?} is neither an IP address nor a DNS name"
            );
        }
        if host.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified()) {
            bail!(
                "--coordinator-advertise {s:?}: pods cannot connect to an unspecified address; \
                 give the address they reach this machine at"
            );
        }
        Ok(Advertise { host, port })
    }

    /// The IP, when the host is one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_dns_labels() {
        let n = Names::for_run("20261129-011500-Quick Start_with_a_very_long_name_indeed_yes");
        assert!(n.job().len() <= 63, "{}", n.job());
        assert!(
            n.id.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
        assert!(!n.id.ends_with('-'));
        assert_eq!(n.selector(), format!("flowline.dev/run={}", n.id));
        assert_eq!(Names::for_run("--").id, "run");
    }

    #[test]
    fn namespaces_are_checked() {
        for ok in ["default", "load-test", "a", "x1"] {
            check_namespace(ok).unwrap();
        }
        for bad in ["", "Load", "-a", "a-", "a_b", "a.b", &"a".repeat(64)] {
            assert!(check_namespace(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn images_are_checked() {
        assert_eq!(
            check_image(Some("flowline:0.1.0")).unwrap(),
            "flowline:0.1.0"
        );
        check_image(Some("localhost:5000/flowline:Dev")).unwrap();
        check_image(Some("ghcr.io/x/flowline@sha256:abc")).unwrap();
        assert!(check_image(None).is_err());
        assert!(check_image(Some("  ")).is_err());
        assert!(check_image(Some("Flowline:1")).is_err());
        assert!(check_image(Some("flow line")).is_err());
    }

    #[test]
    fn advertise_addresses_are_checked() {
        let a = Advertise::parse("10.0.0.5:7000").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("10.0.0.5", 7000));
        assert!(a.ip().is_some());
        let a = Advertise::parse("[fd00::1]:7000").unwrap();
        assert_eq!(a.host, "fd00::1");
        let a = Advertise::parse("harness.example:7000").unwrap();
        assert!(a.ip().is_none());
        for bad in [
            "10.0.0.5",
            "10.0.0.5:0",
            ":7000",
            "a b:1",
            "0.0.0.0:7000",
            "x:port",
        ] {
            assert!(Advertise::parse(bad).is_err(), "{bad:?}");
        }
        check_workers(1).unwrap();
        assert!(check_workers(0).is_err());
    }
}
