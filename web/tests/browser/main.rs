//! End-to-end tests of the browser client: a real node (in-process, serving the client at
//! `/`), real headless Chromium driven over the DevTools protocol, and the chaos proxy to
//! cut one user's connection.
//!
//! Needs Chromium (`apt-get install chromium`; `scripts/test` installs it when missing, or
//! set `FLOWLINE_CHROMIUM`). Screenshots go to `target/web-artifacts/`.

mod cdp;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use flowline_chaos::{Controller, Direction, ToxicKind, ToxicSpec};
use flowline_protocol::ws::{ClientOp, ServerEvent};
use flowline_server::{Argon2Cost, Config, Phase, RateConfig};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;

use cdp::{Browser, Page};

/// A node running in this process.
struct Node {
    addr: std::net::SocketAddr,
    http: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), flowline_server::Error>>,
    /// The node's data directory (uploads), removed when the test ends.
    _data: tempfile::TempDir,
}

impl Node {
    async fn start() -> Node {
        let mut config = Config::new("node1", Phase::Single);
        config.argon2 = Argon2Cost {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        // Uploads go to a throwaway data directory, removed with the node.
        let data = tempfile::tempdir().unwrap();
        config.features.data_dir = data.path().to_path_buf();
        // The history test seeds a channel with a burst far above any person's rate (and
        // the default per-token bucket of 40): the page is under test, not the limits.
        config.rate = RateConfig::OFF;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(flowline_server::run(config, listener, shutdown.clone()));
        let http = format!("http://{addr}");
        for _ in 0..100 {
            if let Ok(r) = reqwest::get(format!("{http}/readyz")).await
                && r.status().is_success()
            {
                return Node {
                    addr,
                    http,
                    shutdown,
                    task,
                    _data: data,
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("node did not become ready");
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("node stops in time")
            .unwrap()
            .unwrap();
    }
}

fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("web-artifacts")
}

/// Sign up and log in through the page's form; waits for the main view.
async fn sign_up(page: &Page, name: &str) -> anyhow::Result<()> {
    page.wait(
        "!document.getElementById('login-view').hidden",
        "the login form shows",
    )
    .await?;
    page.fill("#login-user", name).await?;
    page.fill("#login-pass", "correct horse").await?;
    page.click("#signup-btn").await?;
    page.wait(
        "!document.getElementById('app-view').hidden && document.body.dataset.conn === 'ready'",
        &format!("{name} is logged in and connected"),
    )
    .await?;
    Ok(())
}

/// Create a space through the sidebar form; returns (space id, its #general channel id).
async fn create_space(page: &Page, name: &str) -> anyhow::Result<(i64, i64)> {
    page.fill("#space-name", name).await?;
    page.click("#space-form button").await?;
    page.wait(
        "document.getElementById('chan-title').textContent === '#general'",
        "the new space's #general opens",
    )
    .await?;
    let v = page
        .eval("[window.flowline.state.spaces[0].id, window.flowline.state.current]")
        .await?;
    Ok((
        v[0].as_i64().context("space id")?,
        v[1].as_i64().context("channel")?,
    ))
}

/// Log in through the page's form (the user exists); waits for the main view.
async fn log_in(page: &Page, name: &str) -> anyhow::Result<()> {
    page.wait(
        "!document.getElementById('login-view').hidden",
        "the login form shows",
    )
    .await?;
    page.fill("#login-user", name).await?;
    page.fill("#login-pass", "correct horse").await?;
    page.click("#login-btn").await?;
    page.wait(
        "!document.getElementById('app-view').hidden && document.body.dataset.conn === 'ready'",
        &format!("{name} is logged in and connected"),
    )
    .await?;
    Ok(())
}

/// Sign `name` up through the HTTP API and join `space`; returns the user id.
async fn api_member(node: &Node, name: &str, space: i64) -> anyhow::Result<i64> {
    let client = reqwest::Client::new();
    let creds = json!({"username": name, "password": "correct horse"});
    let user: Value = client
        .post(format!("{}/api/v1/auth/signup", node.http))
        .json(&creds)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let session: Value = client
        .post(format!("{}/api/v1/auth/login", node.http))
        .json(&creds)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    client
        .post(format!("{}/api/v1/spaces/{space}/join", node.http))
        .bearer_auth(session["token"].as_str().context("token")?)
        .send()
        .await?
        .error_for_status()?;
    user["id"].as_i64().context("user id")
}

async fn join_space(page: &Page, space: i64) -> anyhow::Result<()> {
    page.fill("#join-id", &space.to_string()).await?;
    page.click("#join-form button").await?;
    page.wait(
        "document.getElementById('chan-title').textContent === '#general'",
        "the joined space's #general opens",
    )
    .await?;
    Ok(())
}

/// JS: the message element of the current channel whose body contains `text`.
fn msg_with(text: &str) -> String {
    format!(
        "[...document.querySelectorAll('#messages .msg[data-seq]')].find(m => m.querySelector('.msg-body').textContent.includes({}))",
        json!(text)
    )
}

/// Post `n` messages as the holder of `token` over a plain WebSocket client.
async fn seed(node: &Node, token: &str, channel: i64, n: u64) -> anyhow::Result<()> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", node.addr)).await?;
    let hello = ClientOp::Hello {
        token: token.into(),
        v: 1,
        resume: Default::default(),
        subscribe_all: false,
        presence: true,
    };
    ws.send(WsMessage::text(serde_json::to_string(&hello)?))
        .await?;
    for i in 1..=n {
        let op = ClientOp::send_text(i, channel, format!("seed {i}"), None);
        ws.send(WsMessage::text(serde_json::to_string(&op)?))
            .await?;
    }
    let mut acks = 0;
    while acks < n {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await?
            .context("socket closed")??;
        if let WsMessage::Text(t) = frame {
            match serde_json::from_str::<ServerEvent>(&t)? {
                ServerEvent::Ack { .. } => acks += 1,
                ServerEvent::Error { message, .. } => anyhow::bail!("seed: {message}"),
                _ => {}
            }
        }
    }
    ws.close(None).await?;
    Ok(())
}

/// Send a message through the composer: typed, then Enter (the keyboard path).
async fn send(page: &Page, text: &str) -> anyhow::Result<()> {
    page.type_text("#compose-input", text).await?;
    page.press("Enter", "Enter", 13).await?;
    page.wait(
        "document.getElementById('compose-input').value === ''",
        "the composer clears after Enter",
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn serves_client_assets_with_types_and_caching() {
    let node = Node::start().await;
    let client = reqwest::Client::new();
    let r = client.get(format!("{}/", node.http)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    assert_eq!(h["cache-control"], "no-cache");
    assert!(
        h["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'")
    );
    let etag = h["etag"].to_str().unwrap().to_string();
    let html = r.text().await.unwrap();
    assert_eq!(html, flowline_web::index_html());
    assert!(!html.contains("{{"), "asset versions filled in: {html}");
    assert!(
        !html.contains("src=\"http") && !html.contains("href=\"http"),
        "no CDN"
    );
    // Revalidation answers 304 without a body.
    let r = client
        .get(format!("{}/", node.http))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    // Assets: right types, cacheable forever (the page links them with ?v=<hash>).
    for (path, ty) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("app.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
    ] {
        let r = client
            .get(format!("{}/assets/{path}", node.http))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["content-type"], ty, "{path}");
        assert_eq!(
            r.headers()["cache-control"],
            "public, max-age=31536000, immutable"
        );
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        assert!(html.contains(&format!("/assets/{path}")), "{path} linked");
    }
    let r = client
        .get(format!("{}/assets/nope.js", node.http))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // The API and /ws are untouched by the client's routes.
    let r = client
        .get(format!("{}/api/v1/users/me", node.http))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    node.stop().await;
}

/// Two users chat; history pages in on scroll-back; rendering is safe; Bob's link is cut
/// (through a chaos proxy) with a message in flight, and after reconnecting his page shows
/// every message of the channel exactly once, in seq order, matching the node's history.
#[tokio::test]
async fn two_browsers_chat_page_history_and_resume_exactly_once() {
    let node = Node::start().await;
    let chaos = Controller::new();
    let link = chaos
        .create_proxy(
            "bob",
            "127.0.0.1:0".parse().unwrap(),
            &node.addr.to_string(),
        )
        .await
        .unwrap();
    let browser = Browser::launch().await.unwrap();
    let result = async {
        let alice = browser.page(&format!("{}/", node.http)).await?;
        sign_up(&alice, "alice").await?;
        let (space, general) = create_space(&alice, "Team").await?;
        let alice_token = alice.eval("window.flowline.state.token").await?;
        let alice_token = alice_token.as_str().context("token")?.to_string();
        seed(&node, &alice_token, general, 60).await?;
        alice
            .wait(
                "document.querySelectorAll('#messages .msg[data-seq]').length === 60",
                "Alice sees the 60 seeded messages live",
            )
            .await?;

        // Bob comes in through the proxy; his page loads the latest 50 and pages back.
        let bob = browser.page(&format!("http://{}/", link.listen)).await?;
        sign_up(&bob, "bob").await?;
        join_space(&bob, space).await?;
        bob.wait(
            "document.querySelectorAll('#messages .msg[data-seq]').length === 50",
            "Bob's page loads the latest 50 messages",
        )
        .await?;
        let first = bob
            .eval("Number(document.querySelector('#messages .msg[data-seq]').dataset.seq)")
            .await?;
        assert_eq!(first, json!(11), "the latest 50 are seqs 11..=60");
        bob.eval("(() => { const m = document.getElementById('messages'); m.scrollTop = 0; m.dispatchEvent(new Event('scroll')); return true; })()").await?;
        bob.wait(
            "document.querySelectorAll('#messages .msg[data-seq]').length === 60 && document.querySelector('#messages .older').textContent.startsWith('Beginning')",
            "scrolling back pages in the 10 older messages",
        )
        .await?;

        // Alice writes markdown with the keyboard; the preview renders it.
        alice.type_text("#compose-input", "hello **bob**").await?;
        alice.click("#preview-btn").await?;
        let strong = alice
            .eval("document.querySelector('#preview strong')?.textContent")
            .await?;
        assert_eq!(strong, json!("bob"), "preview renders markdown");
        alice.click("#preview-btn").await?;
        alice.press("Enter", "Enter", 13).await?;
        bob.wait(&msg_with("hello"), "Bob receives Alice's message")
            .await?;

        // Hostile input is shown as text, never as markup.
        let evil = "<img src=x onerror=\"window.pwned=1\"><b>bold</b> [x](javascript:window.pwned=2) **ok**";
        bob.fill("#compose-input", evil).await?;
        bob.click("#send-btn").await?;
        alice
            .wait(&msg_with("<b>bold</b>"), "Alice gets Bob's message as text")
            .await?;
        let markup = alice
            .eval("document.querySelectorAll('#messages .msg-body img, #messages .msg-body b, #messages .msg-body a, #messages .msg-body script').length")
            .await?;
        assert_eq!(markup, json!(0), "no element made from message text");
        assert_eq!(alice.eval("window.pwned === undefined").await?, json!(true));
        alice
            .wait(
                "document.getElementById('compose-input').value === ''",
                "composer cleared",
            )
            .await?;

        // Hold every byte the node sends to Bob: his next send is stored but never acked.
        chaos.add_toxic(
            "bob",
            ToxicSpec {
                name: "hold".into(),
                stream: Direction::Downstream,
                toxicity: 1.0,
                kind: ToxicKind::Blackhole,
            },
        )?;
        send(&bob, "in flight").await?;
        alice
            .wait(&msg_with("in flight"), "the node stored Bob's message")
            .await?;
        let pending = bob
            .eval("!!document.querySelector('#messages .msg.pending')")
            .await?;
        assert_eq!(pending, json!(true), "Bob's message waits for its ack");
        // Cut Bob off.
        chaos.set_enabled("bob", false).await?;
        bob.wait(
            "document.body.dataset.conn === 'reconnecting' && document.getElementById('conn').textContent.startsWith('Reconnecting')",
            "Bob's page says it is reconnecting",
        )
        .await?;
        let failed = bob
            .wait(
                "document.querySelector('#messages .msg.failed')?.textContent",
                "the never-acked message is marked",
            )
            .await?;
        let failed = failed.as_str().unwrap_or_default();
        assert!(
            failed.contains("in flight") && failed.contains("not acknowledged"),
            "{failed}"
        );
        for i in 1..=5 {
            send(&alice, &format!("while away {i}")).await?;
        }
        alice
            .wait(&msg_with("while away 5"), "Alice's messages are acked")
            .await?;
        alice
            .wait(
                "!document.querySelector('#messages .msg.pending, #messages .msg.failed')",
                "all of Alice's sends are acked",
            )
            .await?;
        // Heal: Bob reconnects, resumes, and sees each message once.
        chaos.remove_toxic("bob", "hold")?;
        chaos.set_enabled("bob", true).await?;
        bob.wait_for(
            "document.body.dataset.conn === 'ready'",
            "Bob reconnects",
            Duration::from_secs(20),
        )
        .await?;
        bob.wait(&msg_with("while away 5"), "Bob gets what he missed")
            .await?;
        bob.wait(
            "!document.querySelector('#messages .msg.pending, #messages .msg.failed')",
            "the resumed copy of Bob's own message resolves its failed mark",
        )
        .await?;

        let (status, body) = {
            let r = reqwest::Client::new()
                .get(format!(
                    "{}/api/v1/channels/{general}/messages?limit=200",
                    node.http
                ))
                .bearer_auth(&alice_token)
                .send()
                .await?;
            (r.status(), r.text().await?)
        };
        assert_eq!(status, 200, "{body}");
        let stored: Vec<Value> = serde_json::from_str(&body)?;
        let stored: Vec<(i64, String)> = stored
            .iter()
            .map(|m| (m["seq"].as_i64().unwrap(), m["body"].as_str().unwrap().to_string()))
            .collect();
        assert_eq!(stored.len(), 60 + 3 + 5);
        let shown_js = "[...document.querySelectorAll('#messages .msg[data-seq]')].map(m => [Number(m.dataset.seq), m.querySelector('.msg-body').textContent])";
        for (who, page) in [("bob", &bob), ("alice", &alice)] {
            let shown: Vec<(i64, String)> = serde_json::from_value(page.eval(shown_js).await?)?;
            let seqs: Vec<i64> = shown.iter().map(|(s, _)| *s).collect();
            let want: Vec<i64> = stored.iter().map(|(s, _)| *s).collect();
            assert_eq!(seqs, want, "{who}: every seq exactly once, in order");
            for ((seq, text), (_, body)) in shown.iter().zip(&stored) {
                // Markdown renders (text loses the ** markers); plain text is verbatim.
                let plain = body.replace("**", "");
                assert!(
                    text == body || *text == plain || body.contains("<b>"),
                    "{who}: seq {seq} shows {text:?}, stored {body:?}"
                );
            }
            let in_flight = shown.iter().filter(|(_, t)| t == "in flight").count();
            assert_eq!(in_flight, 1, "{who}: the in-flight message once");
        }

        alice.screenshot(&artifacts().join("chat-main-view.png")).await?;
        assert!(alice.errors().is_empty(), "alice: {:?}", alice.errors());
        assert!(bob.errors().is_empty(), "bob: {:?}", bob.errors());
        anyhow::Ok(())
    }
    .await;
    browser.close().await;
    chaos.shutdown().await;
    node.stop().await;
    result.unwrap();
}

/// A tiny PNG (1×1, red) for the upload test.
const PNG_B64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";

/// The chat features against the contract in protocol/src/ws.rs: presence and custom
/// status, typing, reactions, reply, quote, forward, a thread in the side panel, an
/// attachment uploaded by one user and downloaded by the other.
#[tokio::test]
async fn two_browsers_use_chat_features() {
    let node = Node::start().await;
    let browser = Browser::launch().await.unwrap();
    let result = async {
        let alice = browser.page(&format!("{}/", node.http)).await?;
        sign_up(&alice, "alice").await?;
        let (space, _general) = create_space(&alice, "Team").await?;
        // Bob is a member already when he opens the client: he signed up and joined
        // through the API, and logs in through the form.
        let bob_id = api_member(&node, "bob", space).await?;
        let bob = browser.page(&format!("{}/", node.http)).await?;
        log_in(&bob, "bob").await?;
        bob.wait(
            "document.getElementById('chan-title').textContent === '#general'",
            "Bob's page opens #general",
        )
        .await?;

        // Presence: each sees the other online.
        alice
            .wait(
                &format!("document.querySelector('#spaces li[data-user=\"{bob_id}\"]')?.dataset.status === 'online'"),
                "Alice sees Bob online",
            )
            .await?;
        let alice_id = alice.eval("window.flowline.state.me.id").await?;
        bob.wait(
            &format!("document.querySelector('#spaces li[data-user=\"{alice_id}\"]')?.dataset.status === 'online'"),
            "Bob sees Alice online",
        )
        .await?;

        // Typing.
        bob.type_text("#compose-input", "let me think").await?;
        alice
            .wait(
                "document.getElementById('typing').textContent === 'bob is typing…'",
                "Alice sees Bob typing",
            )
            .await?;
        bob.press("Enter", "Enter", 13).await?;
        alice
            .wait(&msg_with("let me think"), "Alice receives Bob's message")
            .await?;

        // Reaction: Alice reacts, Bob sees the count.
        alice
            .click("#messages .msg[data-seq] .react-btn[data-emoji='👍']")
            .await?;
        bob.wait(
            "[...document.querySelectorAll('#messages .reactions button')].some(b => b.textContent === '👍 1')",
            "Bob sees Alice's reaction",
        )
        .await?;

        // Reply and quote.
        send(&alice, "question for you").await?;
        bob.wait(&msg_with("question for you"), "Bob gets the question")
            .await?;
        bob.eval(&format!("{}.querySelector('.reply-btn').click()", msg_with("question for you")))
            .await?;
        send(&bob, "my answer").await?;
        alice
            .wait(
                &format!("{}?.querySelector('.ref')?.textContent.includes('Reply to alice')", msg_with("my answer")),
                "Alice sees Bob's reply with its reference",
            )
            .await?;
        alice
            .eval(&format!("{}.querySelector('.quote-btn').click()", msg_with("my answer")))
            .await?;
        send(&alice, "quoting that").await?;
        bob.wait(
            &format!("{}?.querySelector('.ref')?.textContent.includes('my answer')", msg_with("quoting that")),
            "Bob sees the quote",
        )
        .await?;

        // Forward (into the same channel, through the dialog).
        alice
            .eval(&format!("{}.querySelector('.forward-btn').click()", msg_with("let me think")))
            .await?;
        alice.click("#forward-ok").await?;
        bob.wait(
            "[...document.querySelectorAll('#messages .msg .ref')].some(r => r.textContent.includes('Forwarded from #general'))",
            "Bob sees the forwarded message",
        )
        .await?;

        // Thread: Alice starts one on Bob's message and replies in the side panel.
        alice
            .eval(&format!("{}.querySelector('.thread-btn').click()", msg_with("let me think")))
            .await?;
        alice
            .wait(
                "!document.getElementById('thread-panel').hidden && document.querySelector('#thread-parent .msg')",
                "the thread panel opens on the parent",
            )
            .await?;
        alice.type_text("#thread-input", "in the thread").await?;
        alice.press("Enter", "Enter", 13).await?;
        bob.wait(
            &format!("{}?.querySelector('.thread-link')?.textContent.startsWith('1 reply')", msg_with("let me think")),
            "Bob sees the thread's reply count",
        )
        .await?;
        bob.eval(&format!("{}.querySelector('.thread-link').click()", msg_with("let me think")))
            .await?;
        bob.wait(
            "[...document.querySelectorAll('#thread-messages .msg-body')].some(b => b.textContent === 'in the thread')",
            "Bob reads the thread in his side panel",
        )
        .await?;

        // Attachment: Alice uploads a PNG, Bob downloads the same bytes.
        alice
            .eval(&format!(
                "(() => {{ const bin = atob({png}); const bytes = new Uint8Array(bin.length); for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i); const dt = new DataTransfer(); dt.items.add(new File([bytes], 'dot.png', {{type: 'image/png'}})); const input = document.getElementById('file-input'); input.files = dt.files; input.dispatchEvent(new Event('change')); return true; }})()",
                png = json!(PNG_B64)
            ))
            .await?;
        alice
            .wait(
                "document.querySelector('#attach-list .pending-attachment')?.textContent.includes('dot.png')",
                "the upload is attached to the composer",
            )
            .await?;
        send(&alice, "see picture").await?;
        let att = bob
            .wait(
                &format!("(() => {{ const m = {}; const seq = m && Number(m.dataset.seq); const msg = seq && window.flowline.state.chans.get(window.flowline.state.current).msgs.get(seq); return msg && msg.attachments && msg.attachments[0] && m.querySelector('.attachment') ? msg.attachments[0].id : null; }})()", msg_with("see picture")),
                "Bob sees the attachment",
            )
            .await?;
        let got = bob
            .eval(&format!(
                "fetch('/api/v1/uploads/{att}', {{headers: {{Authorization: 'Bearer ' + window.flowline.state.token}}}}).then(async r => [r.status, r.headers.get('content-type'), btoa(String.fromCharCode(...new Uint8Array(await r.arrayBuffer())))])"
            ))
            .await?;
        assert_eq!(got, json!([200, "image/png", PNG_B64]), "Bob downloads the bytes");
        bob.wait(
            &format!("{}?.querySelector('.attachment img')?.naturalWidth === 1", msg_with("see picture")),
            "the picture shows inline",
        )
        .await?;

        // The main view with the thread panel open, for the README.
        alice.screenshot(&artifacts().join("web-client.png")).await?;

        // Custom status: Bob sets Do not disturb with a text, Alice sees both.
        bob.eval("document.getElementById('status-select').value = 'dnd'")
            .await?;
        bob.fill("#status-custom", "in a meeting").await?;
        bob.click("#status-form button").await?;
        alice
            .wait(
                &format!("(() => {{ const li = document.querySelector('#spaces li[data-user=\"{bob_id}\"]'); return li && li.dataset.status === 'dnd' && li.textContent.includes('in a meeting'); }})()"),
                "Alice sees Bob's status and custom text",
            )
            .await?;

        assert!(alice.errors().is_empty(), "alice: {:?}", alice.errors());
        assert!(bob.errors().is_empty(), "bob: {:?}", bob.errors());
        anyhow::Ok(())
    }
    .await;
    browser.close().await;
    node.stop().await;
    result.unwrap();
}

/// A user who joins a space while connected: the members already there see them online,
/// and they see those members online, without anyone reconnecting.
#[tokio::test]
async fn presence_reaches_members_when_joining_a_space_while_connected() {
    let node = Node::start().await;
    let browser = Browser::launch().await.unwrap();
    let result = async {
        let alice = browser.page(&format!("{}/", node.http)).await?;
        sign_up(&alice, "alice").await?;
        let (space, _general) = create_space(&alice, "Team").await?;
        let bob = browser.page(&format!("{}/", node.http)).await?;
        sign_up(&bob, "bob").await?;
        join_space(&bob, space).await?;
        let bob_id = bob.eval("window.flowline.state.me.id").await?;
        let alice_id = alice.eval("window.flowline.state.me.id").await?;
        alice
            .wait(
                &format!("document.querySelector('#spaces li[data-user=\"{bob_id}\"]')?.dataset.status === 'online'"),
                "Alice sees Bob online after he joins",
            )
            .await?;
        bob.wait(
            &format!("document.querySelector('#spaces li[data-user=\"{alice_id}\"]')?.dataset.status === 'online'"),
            "Bob sees Alice online after he joins",
        )
        .await?;
        anyhow::Ok(())
    }
    .await;
    browser.close().await;
    node.stop().await;
    result.unwrap();
}
