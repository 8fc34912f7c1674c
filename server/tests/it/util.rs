//! Test helpers: start a node in-process on 127.0.0.1:0, an HTTP client, and a
//! WebSocket client (tokio-tungstenite) speaking the protocol.

use std::time::Duration;

use anyhow::{Context, bail};
use flowline_protocol::api::{Channel, CreateChannel, CreateSpace, Credentials, Session, Space};
use flowline_protocol::ws::{ClientOp, ServerEvent};
use flowline_server::{Argon2Cost, Config, Phase};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

/// How long a test waits for one expected event.
pub const WAIT: Duration = Duration::from_secs(5);

/// Admin secret used by test nodes.
pub const ADMIN: &str = "test-admin-secret";

/// A config for tests: cheap argon2, admin API on.
pub fn test_config(phase: Phase) -> Config {
    let mut c = Config::new("node1", phase);
    c.argon2 = Argon2Cost {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };
    c.admin_secret = Some(ADMIN.into());
    // Tests of other behaviours write bursts far over a client's rate limit (thousands of
    // sends from one token); the limits have their own tests (`http_actions_limits.rs`).
    c.rate = flowline_server::RateConfig::OFF;
    // Uploads of tests that do not pick a data dir land in the system temp dir.
    c.features.data_dir = std::env::temp_dir().join("flowline-it-data");
    c
}

/// A node running in this process.
pub struct Node {
    pub http: String,
    pub ws: String,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), flowline_server::Error>>,
    pub client: reqwest::Client,
}

impl Node {
    pub async fn start(config: Config) -> Node {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(flowline_server::run(config, listener, shutdown.clone()));
        let mut node = Node::at(addr, shutdown, task);
        node.wait_ready(Duration::from_secs(5)).await;
        node
    }

    /// The handle of a node serving on `addr`, run by `task`, stopped by `shutdown`.
    pub fn at(
        addr: std::net::SocketAddr,
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<Result<(), flowline_server::Error>>,
    ) -> Node {
        Node {
            http: format!("http://{addr}"),
            ws: format!("ws://{addr}/ws"),
            shutdown,
            task,
            client: reqwest::Client::new(),
        }
    }

    /// Wait until `/readyz` answers (storage opened); panics with the node's error if it
    /// exits first, or after `within`.
    pub async fn wait_ready(&mut self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if let Ok(r) = self
                .client
                .get(format!("{}/readyz", self.http))
                .send()
                .await
                && r.status().is_success()
            {
                return;
            }
            if self.task.is_finished() {
                let outcome = (&mut self.task).await;
                panic!("node exited during start-up: {outcome:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("node did not become ready within {within:?}");
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("node stops in time")
            .unwrap()
            .unwrap();
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.http)
    }

    /// POST JSON, expecting `status`, returning the parsed body.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        token: Option<&str>,
        body: &B,
        status: u16,
    ) -> T {
        let mut req = self.client.post(self.url(path)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let got = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        assert_eq!(got, status, "POST {path}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("POST {path}: {e}: {text}"))
    }

    /// GET, returning status and body.
    pub async fn get_raw(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let mut req = self.client.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    /// The node's Prometheus page.
    pub async fn metrics(&self) -> String {
        let resp = self
            .client
            .get(format!("{}/metrics", self.http))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "GET /metrics");
        resp.text().await.unwrap()
    }

    /// Sign up and log in a user; returns the session.
    pub async fn user(&self, name: &str) -> Session {
        let creds = Credentials {
            username: name.into(),
            password: "hunter22".into(),
        };
        let _: serde_json::Value = self.post("/auth/signup", None, &creds, 201).await;
        self.post("/auth/login", None, &creds, 200).await
    }

    pub async fn space(&self, owner: &Session, name: &str) -> Space {
        self.post(
            "/spaces",
            Some(&owner.token),
            &CreateSpace { name: name.into() },
            201,
        )
        .await
    }

    pub async fn join(&self, who: &Session, space: &Space) {
        let _: Space = self
            .post(
                &format!("/spaces/{}/join", space.id),
                Some(&who.token),
                &(),
                200,
            )
            .await;
    }

    pub async fn channel(
        &self,
        who: &Session,
        space: &Space,
        name: &str,
        members: Option<Vec<i64>>,
    ) -> Channel {
        self.post(
            &format!("/spaces/{}/channels", space.id),
            Some(&who.token),
            &CreateChannel {
                name: name.into(),
                members,
            },
            201,
        )
        .await
    }
}

/// A WebSocket client.
pub struct Ws {
    pub inner: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Ws {
    pub async fn connect(url: &str) -> Ws {
        let (inner, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Ws { inner }
    }

    /// Connect and send `hello` (subscribe_all), returning the `ready` event.
    pub async fn hello(url: &str, token: &str) -> (Ws, ServerEvent) {
        let mut ws = Ws::connect(url).await;
        ws.op(&ClientOp::Hello {
            token: token.into(),
            v: flowline_protocol::PROTOCOL_VERSION,
            resume: Default::default(),
            subscribe_all: true,
            presence: true,
        })
        .await;
        let ready = ws.next().await.unwrap();
        assert!(matches!(ready, ServerEvent::Ready { .. }), "{ready:?}");
        (ws, ready)
    }

    pub async fn op(&mut self, op: &ClientOp) {
        self.raw(&serde_json::to_string(op).unwrap()).await;
    }

    pub async fn raw(&mut self, text: &str) {
        self.inner.send(WsMessage::text(text)).await.unwrap();
    }

    /// Next event, skipping pings and `presence` events (which every connect of a space
    /// member causes; tests of presence use [`Ws::next_any`] or [`Ws::until`]), or an error
    /// on close/timeout.
    pub async fn next(&mut self) -> anyhow::Result<ServerEvent> {
        loop {
            match self.next_any().await? {
                ServerEvent::Presence(_) => continue,
                ev => return Ok(ev),
            }
        }
    }

    /// Next event of any type (skipping pings), or an error on close/timeout.
    pub async fn next_any(&mut self) -> anyhow::Result<ServerEvent> {
        loop {
            let msg = tokio::time::timeout(WAIT, self.inner.next())
                .await
                .context("timed out waiting for an event")?;
            match msg {
                Some(Ok(WsMessage::Text(t))) => {
                    return serde_json::from_str(&t).with_context(|| format!("bad event {t}"));
                }
                Some(Ok(WsMessage::Close(f))) => bail!("closed: {f:?}"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => bail!("socket error: {e}"),
                None => bail!("socket ended"),
            }
        }
    }

    /// Read until the close frame; returns its code (events before it are returned too).
    pub async fn close_code(&mut self) -> (u16, Vec<ServerEvent>) {
        let mut events = Vec::new();
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), self.inner.next())
                .await
                .expect("timed out waiting for close");
            match msg {
                Some(Ok(WsMessage::Text(t))) => events.push(serde_json::from_str(&t).unwrap()),
                Some(Ok(WsMessage::Close(Some(f)))) => return (u16::from(f.code), events),
                Some(Ok(WsMessage::Close(None))) => return (0, events),
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("socket error before close: {e}; events {events:?}"),
                None => panic!("socket ended without a close frame; events {events:?}"),
            }
        }
    }

    /// Read events until one satisfies `pred` (others are skipped); panics on timeout.
    pub async fn until(&mut self, what: &str, pred: impl Fn(&ServerEvent) -> bool) -> ServerEvent {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut skipped = Vec::new();
        loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; skipped {skipped:?}"
            );
            let ev = self
                .next_any()
                .await
                .unwrap_or_else(|e| panic!("waiting for {what}: {e}; skipped {skipped:?}"));
            if pred(&ev) {
                return ev;
            }
            skipped.push(ev);
        }
    }

    /// Collect every event arriving within `window`.
    pub async fn drain_for(&mut self, window: Duration) -> Vec<ServerEvent> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + window;
        while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(deadline, self.inner.next()).await {
            if let WsMessage::Text(t) = msg {
                out.push(serde_json::from_str(&t).unwrap());
            }
        }
        out
    }

    pub async fn send(&mut self, req_id: u64, channel: i64, body: &str) {
        self.op(&ClientOp::send_text(
            req_id,
            channel,
            body.into(),
            Some(format!("n{req_id}")),
        ))
        .await;
    }
}

/// Default Postgres URL when `DATABASE_URL` is unset.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A fresh, empty Postgres database for one test, dropped when this is dropped.
pub struct TestDb {
    pub url: String,
    admin_url: String,
    name: String,
}

impl TestDb {
    pub async fn new() -> TestDb {
        use sqlx::Connection;
        let admin_url =
            std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.into());
        let mut conn = sqlx::PgConnection::connect(&admin_url).await.unwrap_or_else(|e| {
            panic!(
                "Postgres is not reachable at {admin_url} ({e}). Start it (e.g. `pg_ctl start` or \
                 `docker run -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust postgres`) or set DATABASE_URL."
            )
        });
        let name = format!(
            "flowline_server_test_{}_{}",
            std::process::id(),
            rand::random::<u64>()
        );
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.ok();
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(b, _)| b);
        TestDb {
            url: format!("{base}/{name}"),
            admin_url,
            name,
        }
    }

    /// Migrated storage on this database.
    pub async fn storage(&self) -> flowline_server::storage::PgStorage {
        flowline_server::storage::PgStorage::connect(
            &self.url,
            flowline_server::storage::PoolSizes {
                send: 2,
                other: 8,
                acquire_timeout: Duration::from_secs(5),
            },
            None,
        )
        .await
        .unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs inside the test's runtime; use a separate thread and runtime.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                use sqlx::Connection;
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

/// Start a node of `phase` (with its own fresh database for `postgres`).
pub async fn start(phase: Phase) -> (Node, Option<TestDb>) {
    start_with(phase, |_| {}).await
}

/// Like [`start`], adjusting the configuration first.
pub async fn start_with(phase: Phase, adjust: impl FnOnce(&mut Config)) -> (Node, Option<TestDb>) {
    let mut config = test_config(phase);
    adjust(&mut config);
    let db = match phase {
        Phase::Postgres => {
            let db = TestDb::new().await;
            config.database_url = Some(db.url.clone());
            Some(db)
        }
        _ => None,
    };
    (Node::start(config).await, db)
}

/// Define `mod $module` with `pubsub` and `queue` tests running `$body(phase)`: a test of
/// the cluster phases.
#[macro_export]
macro_rules! cluster_phases {
    ($module:ident, $body:ident) => {
        mod $module {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn pubsub() {
                super::$body(flowline_server::Phase::Pubsub).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn queue() {
                super::$body(flowline_server::Phase::Queue).await;
            }
        }
    };
}

/// Define `memory` and `postgres` tests running `$body(phase)`.
#[macro_export]
macro_rules! both_phases {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                super::$name(flowline_server::Phase::Single).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(flowline_server::Phase::Postgres).await;
            }
        }
    };
}
