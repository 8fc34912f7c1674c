//! A small Chrome DevTools Protocol driver: launches headless Chromium and speaks CDP
//! over one WebSocket (tokio-tungstenite), with one isolated browser context per page.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// How long `Page::wait` waits for a condition by default.
pub const WAIT: Duration = Duration::from_secs(10);

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// The Chromium binary: `$FLOWLINE_CHROMIUM`, else the first of chromium,
/// chromium-browser, google-chrome on PATH.
fn chromium_path() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("FLOWLINE_CHROMIUM") {
        return Ok(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    bail!(
        "no Chromium found: install it (apt-get install chromium; scripts/test does) or set FLOWLINE_CHROMIUM"
    )
}

/// A headless Chromium process and the CDP connection to it.
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    tx: mpsc::UnboundedSender<String>,
    pending: Pending,
    next: AtomicU64,
    /// JavaScript errors and console errors seen by any page: (session, text).
    pub errors: Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

impl Browser {
    pub async fn launch() -> anyhow::Result<Arc<Browser>> {
        let bin = chromium_path()?;
        let profile = tempfile::tempdir()?;
        let mut cmd = Command::new(&bin);
        cmd.args([
            "--headless=new",
            "--remote-debugging-port=0",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-background-timer-throttling",
            "--disable-renderer-backgrounding",
            "--disable-backgrounding-occluded-windows",
            "--no-first-run",
            "--no-default-browser-check",
            "--hide-scrollbars",
            "--window-size=1280,800",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()));
        // Chromium's sandbox refuses to run as root (containers, CI).
        if nix_is_root() {
            cmd.arg("--no-sandbox");
        }
        cmd.arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stderr = child.stderr.take().context("chromium stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let url = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(u) = line.strip_prefix("DevTools listening on ") {
                    return Ok::<_, anyhow::Error>(u.trim().to_string());
                }
            }
            bail!("chromium exited before announcing its DevTools address")
        })
        .await
        .context("chromium did not announce its DevTools address in 30 s")??;
        // Keep draining stderr so Chromium never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        let (ws, _) = tokio_tungstenite::connect_async(&url)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        let (mut sink, mut stream) = ws.split();
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            while let Some(text) = rx.recv().await {
                if sink.send(WsMessage::text(text)).await.is_err() {
                    break;
                }
            }
        });
        let pending: Pending = Arc::default();
        let errors: Arc<std::sync::Mutex<Vec<(String, String)>>> = Arc::default();
        {
            let pending = pending.clone();
            let errors = errors.clone();
            tokio::spawn(async move {
                while let Some(Ok(msg)) = stream.next().await {
                    let WsMessage::Text(text) = msg else { continue };
                    let Ok(v) = serde_json::from_str::<Value>(&text) else {
                        continue;
                    };
                    if let Some(id) = v.get("id").and_then(Value::as_u64) {
                        if let Some(tx) = pending.lock().await.remove(&id) {
                            let _ = tx.send(v);
                        }
                        continue;
                    }
                    let session = v["sessionId"].as_str().unwrap_or("").to_string();
                    match v["method"].as_str() {
                        Some("Runtime.exceptionThrown") => {
                            let d = &v["params"]["exceptionDetails"];
                            let text = d["exception"]["description"]
                                .as_str()
                                .or(d["text"].as_str())
                                .unwrap_or("exception")
                                .to_string();
                            errors.lock().unwrap().push((session, text));
                        }
                        Some("Runtime.consoleAPICalled") if v["params"]["type"] == "error" => {
                            errors
                                .lock()
                                .unwrap()
                                .push((session, v["params"]["args"].to_string()));
                        }
                        _ => {}
                    }
                }
            });
        }
        Ok(Arc::new(Browser {
            child,
            _profile: profile,
            tx,
            pending,
            next: AtomicU64::new(1),
            errors,
        }))
    }

    /// Send one CDP command (to a page session, or the browser) and wait for its result.
    pub async fn call(
        &self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> anyhow::Result<Value> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let (tx, rx) = oneshot::channel();
        self.pending.lock().await.insert(id, tx);
        self.tx
            .send(msg.to_string())
            .map_err(|_| anyhow!("CDP connection closed"))?;
        let v = tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .with_context(|| format!("{method}: no answer in 30 s"))?
            .map_err(|_| anyhow!("{method}: CDP connection closed"))?;
        if let Some(e) = v.get("error") {
            bail!("{method}: {e}");
        }
        Ok(v["result"].clone())
    }

    /// A new tab in its own browser context (own cookies and storage), at `url`.
    pub async fn page(self: &Arc<Self>, url: &str) -> anyhow::Result<Page> {
        let ctx = self
            .call(None, "Target.createBrowserContext", json!({}))
            .await?;
        let ctx = ctx["browserContextId"].as_str().context("context id")?;
        let target = self
            .call(
                None,
                "Target.createTarget",
                json!({"url": "about:blank", "browserContextId": ctx, "width": 1280, "height": 800}),
            )
            .await?;
        let target = target["targetId"].as_str().context("target id")?;
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target, "flatten": true}),
            )
            .await?;
        let session = attached["sessionId"]
            .as_str()
            .context("session id")?
            .to_string();
        let page = Page {
            browser: self.clone(),
            session,
        };
        page.call("Runtime.enable", json!({})).await?;
        page.call("Page.enable", json!({})).await?;
        page.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await?;
        page.call("Page.navigate", json!({"url": url})).await?;
        page.wait("document.readyState === 'complete'", "the page loads")
            .await?;
        Ok(page)
    }

    /// JavaScript errors recorded for one page session.
    pub fn errors_of(&self, session: &str) -> Vec<String> {
        self.errors
            .lock()
            .unwrap()
            .iter()
            .filter(|(s, _)| s == session)
            .map(|(_, t)| t.clone())
            .collect()
    }

    pub async fn close(mut self: Arc<Self>) {
        let _ = self.call(None, "Browser.close", json!({})).await;
        if let Some(b) = Arc::get_mut(&mut self) {
            let _ = tokio::time::timeout(Duration::from_secs(5), b.child.wait()).await;
        }
    }
}

fn nix_is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// One tab.
pub struct Page {
    browser: Arc<Browser>,
    pub session: String,
}

impl Page {
    pub async fn call(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.browser.call(Some(&self.session), method, params).await
    }

    /// Evaluate an expression (promises awaited) and return its JSON value.
    pub async fn eval(&self, expr: &str) -> anyhow::Result<Value> {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
            )
            .await?;
        if let Some(e) = r.get("exceptionDetails") {
            bail!(
                "evaluating {expr:?}: {}",
                e["exception"]["description"]
                    .as_str()
                    .unwrap_or("exception")
            );
        }
        Ok(r["result"]["value"].clone())
    }

    /// Wait until `expr` is truthy (polled every 100 ms) and return its value.
    pub async fn wait(&self, expr: &str, what: &str) -> anyhow::Result<Value> {
        self.wait_for(expr, what, WAIT).await
    }

    pub async fn wait_for(&self, expr: &str, what: &str, limit: Duration) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let last = match self.eval(expr).await {
                Ok(v) if truthy(&v) => return Ok(v),
                Ok(v) => v,
                Err(e) => json!(e.to_string()),
            };
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "timed out after {limit:?} waiting until {what} ({expr}); last value {last}; page errors: {:?}",
                    self.browser.errors_of(&self.session)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Set an input's value as if typed (fires `input`).
    pub async fn fill(&self, selector: &str, value: &str) -> anyhow::Result<()> {
        let js = format!(
            "(() => {{ const e = document.querySelector({s}); if (!e) throw new Error('no ' + {s}); e.focus(); e.value = {v}; e.dispatchEvent(new Event('input', {{bubbles: true}})); return true; }})()",
            s = json!(selector),
            v = json!(value)
        );
        self.eval(&js).await.map(|_| ())
    }

    /// Click the first element matching `selector`.
    pub async fn click(&self, selector: &str) -> anyhow::Result<()> {
        let js = format!(
            "(() => {{ const e = document.querySelector({s}); if (!e) throw new Error('no ' + {s}); e.click(); return true; }})()",
            s = json!(selector)
        );
        self.eval(&js).await.map(|_| ())
    }

    /// Focus `selector` and type `text` through the real input pipeline, as a keyboard would.
    pub async fn type_text(&self, selector: &str, text: &str) -> anyhow::Result<()> {
        self.eval(&format!(
            "(() => {{ const e = document.querySelector({s}); if (!e) throw new Error('no ' + {s}); e.focus(); return document.activeElement === e; }})()",
            s = json!(selector)
        ))
        .await?;
        self.call("Input.insertText", json!({"text": text})).await?;
        Ok(())
    }

    /// Press a key (e.g. "Enter") in the focused element.
    pub async fn press(&self, key: &str, code: &str, key_code: u32) -> anyhow::Result<()> {
        let text = if key == "Enter" { "\r" } else { "" };
        self.call(
            "Input.dispatchKeyEvent",
            json!({"type": "keyDown", "key": key, "code": code, "windowsVirtualKeyCode": key_code, "text": text}),
        )
        .await?;
        self.call(
            "Input.dispatchKeyEvent",
            json!({"type": "keyUp", "key": key, "code": code, "windowsVirtualKeyCode": key_code}),
        )
        .await?;
        Ok(())
    }

    pub async fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        let r = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await?;
        let data = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().context("screenshot data")?)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, data)?;
        Ok(())
    }

    /// JavaScript errors this page reported so far.
    pub fn errors(&self) -> Vec<String> {
        self.browser.errors_of(&self.session)
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}
