//! The OpenAPI document is a contract: schemathesis (from PyPI, installed by
//! `scripts/test`) sends generated requests — valid ones, and ones that break the schema —
//! to a real node and fails on any 5xx, on a response whose status, content type, headers
//! or body the document does not declare, on schema-breaking data accepted, and on valid
//! data refused. The node runs in this process with memory storage; the requests carry a
//! user's token and the admin secret, so authorized paths are exercised past the token
//! check. `POST /auth/logout` revokes that token, so it runs last, on its own.
//!
//! Bounded: a fixed number of examples per operation and a fixed seed (the same requests
//! on every run; `FLOWLINE_SCHEMATHESIS_SEED` picks others), `server/tests/schemathesis.toml`
//! holds the few per-operation expectations (and asks `GET /uploads/{id}` for the file
//! uploaded here, `FLOWLINE_FUZZ_UPLOAD_ID`, so its 200 and content type are checked).
//! The schemathesis binary is `$FLOWLINE_SCHEMATHESIS`, else the one `scripts/test`
//! installed under `~/.cache/flowline`, else `schemathesis` on PATH.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use flowline_server::Phase;

use crate::util::{ADMIN, start_with};

/// The schemathesis release `scripts/test` installs.
const VERSION: &str = "4.32.5";

/// Examples per operation and phase.
const MAX_EXAMPLES: &str = "25";

/// Longest one schemathesis run may take before the test fails.
const RUN_LIMIT: Duration = Duration::from_secs(150);

fn schemathesis() -> PathBuf {
    if let Some(p) = std::env::var_os("FLOWLINE_SCHEMATHESIS") {
        return PathBuf::from(p);
    }
    // Where scripts/test installs it, then PATH.
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|c| c.join(format!("flowline/schemathesis-{VERSION}/bin/schemathesis")));
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("schemathesis"))
            .find(|p| p.is_file())
    });
    let found = cache.filter(|p| p.is_file()).or(on_path);
    found.unwrap_or_else(|| {
        panic!(
            "schemathesis is not installed. Run the tests with scripts/test (it installs \
             schemathesis=={VERSION} into ~/.cache/flowline and sets FLOWLINE_SCHEMATHESIS), \
             or `pip install schemathesis=={VERSION}`, or set FLOWLINE_SCHEMATHESIS to its binary"
        )
    })
}

/// Run schemathesis against `schema_url` with `extra` arguments; panics with its report
/// when it finds anything or does not finish within [`RUN_LIMIT`].
async fn run(bin: &Path, schema_url: &str, token: &str, upload: i64, extra: &[&str]) {
    // Its caches and reports go to a folder of its own, not into the source tree.
    let workdir = tempfile::tempdir().expect("a temporary folder");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis.toml");
    let seed = std::env::var("FLOWLINE_SCHEMATHESIS_SEED").unwrap_or_else(|_| "20".into());
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("--config-file")
        .arg(&config)
        .arg("--no-color")
        .arg("run")
        .arg(schema_url)
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--header", &format!("x-flowline-admin: {ADMIN}")])
        .args(["--max-examples", MAX_EXAMPLES, "--seed", &seed])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--workers", "2", "--request-timeout", "20"])
        .args(extra)
        .current_dir(workdir.path())
        .env("NO_COLOR", "1")
        .env("FLOWLINE_FUZZ_UPLOAD_ID", upload.to_string())
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let started = Instant::now();
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let out = tokio::time::timeout(RUN_LIMIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("schemathesis {extra:?} did not finish within {RUN_LIMIT:?}"))
        .expect("schemathesis output");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis {extra:?} found problems ({:?}, {}):\n{report}",
        started.elapsed(),
        out.status
    );
    eprintln!("schemathesis {extra:?}: clean in {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_contract_holds_under_generated_requests() {
    let bin = schemathesis();
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_owned();
    let (node, _db) = start_with(Phase::Single, move |c| c.features.data_dir = dir).await;
    let me = node.user("fuzzer").await;
    // Something to find: a space with a channel and a message-less history, a second user.
    let space = node.space(&me, "fuzzed").await;
    node.channel(&me, &space, "general", None).await;
    node.user("other").await;
    // A file the caller may download, so `GET /uploads/{id}` answers 200 with its type.
    let boundary = "fuzz-boundary";
    let form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"dot.png\"\r\n\
         Content-Type: image/png\r\n\r\n\u{89}PNG\r\n--{boundary}--\r\n"
    );
    let uploaded: serde_json::Value = node
        .client
        .post(node.url("/uploads"))
        .bearer_auth(&me.token)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let upload = uploaded["id"].as_i64().expect("an upload id");
    let schema = format!("{}/api/v1/openapi.json", node.http);
    let logout = "/api/v1/auth/logout";
    run(
        &bin,
        &schema,
        &me.token,
        upload,
        &["--exclude-path", logout],
    )
    .await;
    run(
        &bin,
        &schema,
        &me.token,
        upload,
        &["--include-path", logout],
    )
    .await;
    node.stop().await;
}
