//! A real Prometheus (Debian's `prometheus` package) scrapes a short real `flowline run`
//! — its nodes, loadgen workers and chaos controller, found through the run's
//! metrics-targets.json — and every PromQL expression of every dashboard returns data
//! through Prometheus' HTTP API; `promtool check metrics` passes on every /metrics page.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::util::{flowline, new_mark};

/// An installed program, or a failure saying how to install it.
fn installed(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!("{name} is not installed: `apt-get install prometheus` (scripts/test does it)")
        })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every PromQL expression of a Grafana dashboard: panel targets and annotations.
fn expressions(dashboard: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            out.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    for a in dashboard["annotations"]["list"].as_array().unwrap() {
        if let Some(e) = a["expr"].as_str() {
            out.push(e.to_string());
        }
    }
    out
}

/// Kills Prometheus when the test ends, however it ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn targets(run_dir: &Path) -> Vec<(String, String)> {
    let Ok(text) = std::fs::read_to_string(run_dir.join("metrics-targets.json")) else {
        return Vec::new();
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Vec::new();
    };
    v.as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["labels"]["job"].as_str().unwrap().to_string(),
                format!(
                    "http://{}{}",
                    g["targets"][0].as_str().unwrap(),
                    g["labels"]["__metrics_path__"].as_str().unwrap()
                ),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_a_run_and_every_dashboard_expression_has_data() {
    let prometheus = installed("prometheus");
    let promtool = installed("promtool");
    let tmp = tempfile::tempdir().unwrap();
    let scenario = tmp.path().join("observed.toml");
    std::fs::write(
        &scenario,
        r#"[run]
name = "observed"
duration = "10s"
warmup = "2s"
drain = "1s"
seed = 11

[cluster]
phase = "pubsub"
nodes = 2

[population]
users = 120
spaces = 2
channels_per_space = 6
members = { dist = "uniform", min = 4, max = 20 }

[[personas]]
name = "chatty"
weight = 1
messages_per_minute = 30
body_bytes = { dist = "uniform", min = 20, max = 200 }

[load]
model = "closed"
connect_rate = 1000
stages = [{ duration = "1s", target = 120 }]

[[faults]]
at = "1s"
duration = "7s"
kind = "latency"
target = "client-node1"
latency = "20ms"
label = "slow node1 clients"

[[faults]]
at = "2s"
duration = "3s"
kind = "down"
target = "node2-redis"
label = "node2 cut from redis"

[[faults]]
at = "3s"
duration = "2s"
kind = "down"
target = "client-node2"
label = "node2 clients cut"
"#,
    )
    .unwrap();
    let mut cmd = flowline();
    cmd.args(["run", scenario.to_str().unwrap(), "--out", "runs"]);
    // Use the test command's services when it has them (scripts/test sets these).
    for (env, flag) in [
        ("DATABASE_URL", "--database-url"),
        ("REDIS_URL", "--redis-url"),
    ] {
        if let Ok(v) = std::env::var(env) {
            cmd.args([flag, &v]);
        }
    }
    let log = tmp.path().join("run.log");
    let mut run = tokio::process::Command::from(cmd)
        .env("FLOWLINE_TEST_MARK", new_mark())
        .current_dir(tmp.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let started = chrono::Utc::now();

    // The run's endpoints: two nodes, the chaos controller, at least one worker.
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut last = Vec::new();
    let (run_dir, found) = loop {
        let dir = std::fs::read_dir(tmp.path().join("runs"))
            .ok()
            .and_then(|mut d| d.next())
            .and_then(Result::ok)
            .map(|e| e.path());
        if let Some(dir) = dir {
            let t = targets(&dir);
            last.clone_from(&t);
            let count = |job: &str| t.iter().filter(|(j, _)| j == job).count();
            if count("flowline-node") == 2
                && count("flowline-chaos") == 1
                && count("flowline-loadgen") >= 1
            {
                break (dir, t);
            }
        }
        assert!(
            Instant::now() < deadline,
            "metrics-targets.json never listed every endpoint (last: {last:?}); run log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let printed = std::fs::read_to_string(&log).unwrap();
    for (_, url) in &found {
        assert!(
            printed.contains(url.as_str()),
            "{url} not printed:\n{printed}"
        );
    }

    // Prometheus, configured from the run's file_sd targets.
    let port = free_port();
    let config = tmp.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: flowline\n    file_sd_configs:\n      - files: [\"{}\"]\n        refresh_interval: 1s\n",
            run_dir.join("metrics-targets.json").display()
        ),
    )
    .unwrap();
    let _prom = Killed(
        std::process::Command::new(&prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                tmp.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(tmp.path().join("prometheus.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !http
        .get(format!("{base}/-/ready"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(Instant::now() < deadline, "Prometheus never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Mid-run: every page passes promtool's checks.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (job, url) in targets(&run_dir) {
        let page = http.get(&url).send().await.unwrap().text().await.unwrap();
        assert!(page.contains("flowline_"), "{job} {url}: {page}");
        let mut check = std::process::Command::new(&promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(check.stdin.as_mut().unwrap(), page.as_bytes()).unwrap();
        drop(check.stdin.take());
        let out = check.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics fails on {job} {url}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let status = tokio::time::timeout(Duration::from_secs(60), run.wait())
        .await
        .expect("the run did not end")
        .unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    // Every target was scraped.
    let up: serde_json::Value = http
        .get(format!("{base}/api/v1/query"))
        .query(&[
            ("query", "count by (job) (up)"),
            ("time", &started.timestamp().to_string()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(up["status"], "success", "{up}");

    // Every dashboard expression has data over the run.
    let end = chrono::Utc::now().timestamp().to_string();
    let start = started.timestamp().to_string();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut checked = 0;
    let mut empty = Vec::new();
    for d in ["cluster.json", "load.json"] {
        let dash: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(root.join("dashboards").join(d)).unwrap(),
        )
        .unwrap();
        for expr in expressions(&dash) {
            // Grafana's rate interval; 4 scrapes at 1 s.
            let q = expr.replace("$__rate_interval", "4s");
            let v: serde_json::Value = http
                .get(format!("{base}/api/v1/query_range"))
                .query(&[
                    ("query", q.as_str()),
                    ("start", start.as_str()),
                    ("end", end.as_str()),
                    ("step", "1"),
                ])
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(v["status"], "success", "{d}: {expr}: {v}");
            let has_data = v["data"]["result"].as_array().unwrap().iter().any(|s| {
                s["values"].as_array().unwrap().iter().any(|p| {
                    p[1].as_str()
                        .and_then(|x| x.parse::<f64>().ok())
                        .is_some_and(|x| !x.is_nan())
                })
            });
            if !has_data {
                empty.push(format!("{d}: {expr}"));
            }
            checked += 1;
        }
    }
    assert!(checked >= 40, "only {checked} expressions");
    assert!(
        empty.is_empty(),
        "{} of {checked} dashboard expressions returned no data:\n{}",
        empty.len(),
        empty.join("\n")
    );
}
