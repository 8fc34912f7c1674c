//! The run console's page in real headless Chromium (the web client's DevTools driver,
//! web/tests/browser/cdp.rs): a running quickstart's console shows users and per-second
//! percentiles, a 100 ms latency fault on client-node1 injected from the page raises
//! delivery p50 above 100 ms and healing it from the page lowers it again, a kill of the
//! last node is refused on the page; the fault is in events.jsonl and scenario.toml, and
//! `flowline replay` injects it again. Needs Chromium (`scripts/test` installs it, or set
//! `FLOWLINE_CHROMIUM`). The screenshot goes to `target/console-artifacts/console.png`
//! (docs/console.png is one of them).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::console::start;
use crate::util::{only_run_dir, run};

#[allow(dead_code)] // the driver is shared with the web client's tests; not all of it is used here
#[path = "../../../web/tests/browser/cdp.rs"]
mod cdp;

fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("console-artifacts")
}

/// The number a card of the page shows now (NaN while it shows none).
fn card(id: &str) -> String {
    format!("Number(document.getElementById('{id}').textContent.replace(/,/g, ''))")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_steers_a_fault_and_shows_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut harness, addr, token, _stderr) = start(
        tmp.path(),
        &[
            "run",
            "--duration",
            "12s",
            "--out",
            "runs",
            "--console",
            "--console-keep",
        ],
    );
    let browser = cdp::Browser::launch().await.unwrap();
    let result = async {
        let page = browser.page(&format!("http://{addr}/?token={token}")).await?;
        page.wait_for(
            &format!("{} >= 900 && {} > 0", card("users"), card("delivery-p50")),
            "users and delivery p50 are shown",
            Duration::from_secs(40),
        )
        .await?;
        page.wait_for(
            "document.getElementById('phase').textContent === 'measuring'",
            "the measurement runs",
            Duration::from_secs(20),
        )
        .await?;
        page.wait(
            "document.querySelectorAll('#charts svg').length >= 6",
            "the charts are drawn",
        )
        .await?;

        // Refused on the page: a kill of the run's only node.
        page.eval("(() => { const k = document.getElementById('kind'); k.value = 'kill'; k.dispatchEvent(new Event('change')); return true; })()").await?;
        page.fill("#duration", "2s").await?;
        page.click("#inject").await?;
        page.wait(
            "document.getElementById('msg').className === 'bad' && document.getElementById('msg').textContent.includes('last running node')",
            "the kill is refused with its reason",
        )
        .await?;

        // 100 ms on client-node1, injected from the form.
        page.eval("(() => { const k = document.getElementById('kind'); k.value = 'latency'; k.dispatchEvent(new Event('change')); return true; })()").await?;
        page.eval("document.getElementById('target').value = 'client-node1'").await?;
        page.fill("#param", "100ms").await?;
        page.fill("#duration", "6s").await?;
        page.eval("document.getElementById('msg').textContent = ''").await?;
        page.click("#inject").await?;
        let msg = page
            .wait("document.getElementById('msg').textContent", "an answer")
            .await?;
        anyhow::ensure!(
            msg.as_str().is_some_and(|m| m.starts_with("injected")),
            "not injected: {msg}"
        );
        page.wait_for(
            &format!("{} > 100", card("delivery-p50")),
            "delivery p50 rises above 100 ms",
            Duration::from_secs(6),
        )
        .await?;
        // The shaded window is on the charts while the fault is active.
        page.wait(
            "document.querySelector('#charts svg').innerHTML.includes('manual latency client-node1')",
            "the fault is shaded on the charts",
        )
        .await?;
        page.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1280, "height": 1500, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await?;
        tokio::time::sleep(Duration::from_millis(1200)).await;
        page.screenshot(&artifacts().join("console.png")).await?;
        page.click("[data-heal]").await?;
        page.wait(
            "document.getElementById('msg').textContent.startsWith('healed')",
            "the fault is healed",
        )
        .await?;
        page.wait_for(
            &format!("{} < 100", card("delivery-p50")),
            "delivery p50 falls below 100 ms after the heal",
            Duration::from_secs(10),
        )
        .await?;
        // --console-keep: the page stays up with the verdict.
        page.wait_for(
            "['PASSED', 'FAILED'].includes(document.getElementById('phase').textContent)",
            "the verdict is shown",
            Duration::from_secs(40),
        )
        .await?;
        let errors = page.errors();
        anyhow::ensure!(errors.is_empty(), "page errors: {errors:?}");
        Ok::<_, anyhow::Error>(())
    }
    .await;
    browser.close().await;
    result.unwrap();
    // Ctrl-C ends the kept console.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(harness.0.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    while harness.0.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < end,
            "the kept console did not end on Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let dir = only_run_dir(&tmp.path().join("runs"));
    let events = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
    assert!(
        events.lines().any(|l| l.contains("\"manual\":true")
            && l.contains("\"inject\"")
            && l.contains("client-node1")),
        "{events}"
    );
    let toml = std::fs::read_to_string(dir.join("scenario.toml")).unwrap();
    assert!(
        toml.contains("label = \"manual latency client-node1\""),
        "{toml}"
    );

    // The replay injects it again, at its offset.
    let out = tmp.path().join("replay");
    let o = run(
        &[
            "replay",
            dir.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert!(
        o.status.code().is_some_and(|c| c <= 1),
        "{}",
        crate::util::stderr(&o)
    );
    let again = only_run_dir(&out);
    let events = std::fs::read_to_string(again.join("events.jsonl")).unwrap();
    let replayed: Vec<Value> = events
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["action"] == "inject" && e["label"] == "manual latency client-node1")
        .collect();
    assert_eq!(replayed.len(), 1, "{events}");
    assert_eq!(replayed[0]["target"], json!(["client-node1"]));
    assert_eq!(replayed[0]["params"]["latency"], "100ms", "{events}");
}
