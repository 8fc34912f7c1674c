//! A fake kubelet for the fake API server ([`crate::kubernetes_fake`]): when an Indexed
//! Job is created, it runs each pod's container as a local process of the real `flowline`
//! binary (the image's entrypoint) from the Job's own pod template, so the manifest's
//! command line is what runs:
//!
//! - `$(VAR)` in args expanded from the container's env, `JOB_COMPLETION_INDEX` resolved
//!   from its `fieldRef` to the pod's completion-index annotation (an unknown `fieldRef`
//!   is a pod that cannot start);
//! - ConfigMap and emptyDir volumes as folders, their mount paths in args mapped there
//!   (the pod's own filesystem);
//! - `<service>.<namespace>.svc` resolved to the address of the Service's EndpointSlice
//!   (the cluster's DNS for a headless Service);
//! - `0.0.0.0:<containerPort>` listeners on a free loopback port (the pod's own network).
//!
//! Pod phases come from the processes: Running while alive, Succeeded on exit 0, Failed
//! with the exit code (128 + signal when killed). Deleting the Job or the pods stops the
//! processes (SIGTERM, then SIGKILL after the grace).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::kubernetes_fake::Phase;

/// How long a deleted pod's process has between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(3);
/// The annotation of a pod's completion index.
const INDEX_KEY: &str = "batch.kubernetes.io/job-completion-index";

/// What the kubelet runs pods with.
pub struct KubeletConfig {
    /// The image's entrypoint: the `flowline` binary under test.
    pub bin: PathBuf,
    /// Where pods' folders and logs (`<pod>.log`: stdout and stderr) go.
    pub root: PathBuf,
    /// Extra env of every container (the test's process mark).
    pub env: Vec<(String, String)>,
    /// Kill pod `index` (SIGKILL) this long after it started: a pod that fails mid-run.
    pub kill: Option<(usize, Duration)>,
}

/// One pod.
pub struct Pod {
    /// Its name (`<job>-<index>-fake<index>`).
    pub name: String,
    /// Its completion index.
    pub index: usize,
    /// Namespace.
    pub namespace: String,
    /// Its labels (the template's plus the completion index).
    pub labels: Value,
    /// The command line it ran (after expansion and mapping), or why it could not start.
    pub argv: Result<Vec<String>, String>,
    child: Option<Child>,
    started: Instant,
    exit: Option<i32>,
}

impl Pod {
    /// Its phase now (reaping the process if it ended).
    pub fn phase(&mut self, kill: Option<(usize, Duration)>) -> Phase {
        if let Err(why) = &self.argv {
            return Phase::Stuck(why.clone());
        }
        if let (Some((i, after)), Some(c)) = (kill, self.child.as_mut())
            && i == self.index
            && self.started.elapsed() >= after
            && self.exit.is_none()
        {
            let _ = c.kill();
        }
        self.reap();
        match self.exit {
            None => Phase::Running,
            Some(0) => Phase::Succeeded,
            Some(code) => Phase::Failed(code),
        }
    }

    fn reap(&mut self) {
        if self.exit.is_some() {
            return;
        }
        if let Some(c) = self.child.as_mut()
            && let Ok(Some(s)) = c.try_wait()
        {
            use std::os::unix::process::ExitStatusExt;
            self.exit = Some(s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)));
        }
    }

    /// Stop the process as the kubelet does for a deleted pod.
    pub fn stop(&mut self) {
        self.reap();
        let Some(c) = self.child.as_mut() else { return };
        if self.exit.is_some() {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + GRACE;
        while Instant::now() < deadline {
            self.reap();
            if self.exit.is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.exit = Some(137);
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Start the pods of `job`; `objects` are the API's objects so far as (resource, body).
pub fn start_job(cfg: &KubeletConfig, job: &Value, objects: &[(String, Value)]) -> Vec<Pod> {
    let name = job["metadata"]["name"].as_str().unwrap_or_default();
    let namespace = job["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let count = job["spec"]["completions"].as_u64().unwrap_or(1) as usize;
    let template = &job["spec"]["template"];
    (0..count)
        .map(|index| {
            let pod_name = format!("{name}-{index}-fake{index}");
            let mut labels = template["metadata"]["labels"].clone();
            labels[INDEX_KEY] = index.to_string().into();
            let dir = cfg.root.join(&pod_name);
            let log = cfg.root.join(format!("{pod_name}.log"));
            let started = Instant::now();
            let mut pod = Pod {
                name: pod_name.clone(),
                index,
                namespace: namespace.clone(),
                labels,
                argv: Err(String::new()),
                child: None,
                started,
                exit: None,
            };
            let prepared = prepare(template, index, &namespace, &dir, objects);
            match prepared {
                Ok((argv, env)) => {
                    let out = std::fs::File::create(&log).unwrap();
                    let child = Command::new(&cfg.bin)
                        .args(&argv)
                        .envs(env)
                        .envs(cfg.env.iter().cloned())
                        .env("HOSTNAME", &pod_name)
                        // Dies with the test process if the test dies first.
                        .env("FLOWLINE_DIE_WITH_PARENT", std::process::id().to_string())
                        .env("FLOWLINE_LOG", "info")
                        .current_dir(&dir)
                        .stdin(Stdio::null())
                        .stdout(out.try_clone().unwrap())
                        .stderr(out)
                        .spawn();
                    match child {
                        Ok(c) => {
                            pod.child = Some(c);
                            pod.argv = Ok(argv);
                        }
                        Err(e) => {
                            pod.argv = Err(format!("cannot start {}: {e}", cfg.bin.display()))
                        }
                    }
                }
                Err(why) => pod.argv = Err(why),
            }
            pod
        })
        .collect()
}

/// A container's command line and its environment.
type CommandLine = (Vec<String>, Vec<(String, String)>);

/// The container's command line and env for pod `index`, its volumes made in `dir`.
fn prepare(
    template: &Value,
    index: usize,
    namespace: &str,
    dir: &Path,
    objects: &[(String, Value)],
) -> Result<CommandLine, String> {
    let spec = &template["spec"];
    let containers = spec["containers"].as_array().cloned().unwrap_or_default();
    let [container] = containers.as_slice() else {
        return Err(format!("expected one container, got {}", containers.len()));
    };
    if !container["command"].is_null() {
        return Err("the container overrides the image's entrypoint".into());
    }
    // Env: plain values, or the completion index through its fieldRef.
    let mut env = Vec::new();
    for e in container["env"].as_array().cloned().unwrap_or_default() {
        let name = e["name"].as_str().unwrap_or_default().to_string();
        let value = if let Some(v) = e["value"].as_str() {
            v.to_string()
        } else {
            let path = e["valueFrom"]["fieldRef"]["fieldPath"]
                .as_str()
                .unwrap_or_default();
            if path != format!("metadata.annotations['{INDEX_KEY}']") {
                return Err(format!(
                    "CreateContainerConfigError: env {name}: fieldRef {path:?}"
                ));
            }
            index.to_string()
        };
        env.push((name, value));
    }
    // Volumes: a folder each; a ConfigMap's keys as files.
    let mut mounts = Vec::new();
    let volumes = spec["volumes"].as_array().cloned().unwrap_or_default();
    for m in container["volumeMounts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let vname = m["name"].as_str().unwrap_or_default();
        let mount = m["mountPath"].as_str().unwrap_or_default().to_string();
        let v = volumes
            .iter()
            .find(|v| v["name"] == vname)
            .ok_or_else(|| format!("volume {vname} is mounted but not declared"))?;
        let host = dir.join("volumes").join(vname);
        std::fs::create_dir_all(&host).map_err(|e| e.to_string())?;
        if let Some(cm) = v["configMap"]["name"].as_str() {
            let obj = find(objects, "configmaps", namespace, |o| {
                o["metadata"]["name"] == cm
            })
            .ok_or_else(|| format!("CreateContainerConfigError: configmap {cm} not found"))?;
            for (k, text) in obj["data"].as_object().cloned().unwrap_or_default() {
                std::fs::write(host.join(k), text.as_str().unwrap_or_default())
                    .map_err(|e| e.to_string())?;
            }
        } else if v["emptyDir"].is_null() {
            return Err(format!(
                "volume {vname}: only configMap and emptyDir are faked"
            ));
        }
        mounts.push((mount, host));
    }
    // The cluster's DNS: `<svc>.<ns>.svc` of a Service with an EndpointSlice.
    let mut dns = Vec::new();
    for (res, svc) in objects {
        if res != "services" || svc["metadata"]["namespace"] != namespace {
            continue;
        }
        let name = svc["metadata"]["name"].as_str().unwrap_or_default();
        let slice = find(objects, "endpointslices", namespace, |o| {
            o["metadata"]["labels"]["kubernetes.io/service-name"] == name
        });
        if let Some(addr) = slice.and_then(|s| s["endpoints"][0]["addresses"][0].as_str()) {
            dns.push((format!("{name}.{namespace}.svc"), addr.to_string()));
        }
    }
    let ports: Vec<i64> = container["ports"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|p| p["containerPort"].as_i64())
        .collect();
    let args = container["args"].as_array().cloned().unwrap_or_default();
    let argv = args
        .iter()
        .map(|a| {
            let mut a = expand(a.as_str().unwrap_or_default(), &env);
            for (mount, host) in &mounts {
                if a == *mount || a.starts_with(&format!("{mount}/")) {
                    a = format!("{}{}", host.display(), &a[mount.len()..]);
                }
            }
            for (name, addr) in &dns {
                a = a.replace(name, addr);
            }
            if ports.iter().any(|p| a == format!("0.0.0.0:{p}")) {
                a = "127.0.0.1:0".into();
            }
            a
        })
        .collect();
    Ok((argv, env))
}

fn find<'a>(
    objects: &'a [(String, Value)],
    resource: &str,
    namespace: &str,
    pred: impl Fn(&Value) -> bool,
) -> Option<&'a Value> {
    objects
        .iter()
        .find(|(r, o)| r == resource && o["metadata"]["namespace"] == namespace && pred(o))
        .map(|(_, o)| o)
}

/// Kubernetes' `$(VAR)` expansion of a container's args: defined variables are
/// replaced, `$$` is a literal `$`, anything else is kept as written.
fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some(inner) = tail.strip_prefix("$(")
            && let Some(end) = inner.find(')')
            && let Some((_, v)) = env.iter().find(|(k, _)| k == &inner[..end])
        {
            out.push_str(v);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

#[test]
fn dollar_parens_expand_like_kubernetes() {
    let env = [("I".to_string(), "3".to_string())];
    assert_eq!(expand("$(I)/4", &env), "3/4");
    assert_eq!(expand("$$(I) $(J) $", &env), "$(I) $(J) $");
}
