//! The node: shared state ([`App`]), the router, and [`run`] (bind → serve → drain).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use dashmap::DashMap;
use futures_util::StreamExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use flowline_protocol::ws::close;

use crate::auth::TokenHash;
use crate::bus::Bus;
use crate::config::{Config, Phase};
use crate::error::Error;
use crate::hub::{Hub, SessionId, SessionShared};
use crate::metrics::Metrics;
use crate::storage::{MemoryStorage, Storage};

/// Unix time in milliseconds.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// State shared by every request and session of one node.
pub(crate) struct App {
    pub(crate) config: Config,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) hub: Hub,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) sessions: TaskTracker,
    pub(crate) next_session: AtomicU64,
    pub(crate) open_sessions: AtomicUsize,
    /// Sessions per token, so log out can close them (4012).
    token_sessions: DashMap<TokenHash, Vec<(SessionId, Arc<SessionShared>)>>,
}

impl App {
    pub(crate) fn new(
        config: Config,
        storage: Arc<dyn Storage>,
        shutdown: CancellationToken,
    ) -> Self {
        let metrics = Arc::new(Metrics::new(&config.node_id));
        Self {
            hub: Hub::new(metrics.clone()),
            config,
            storage,
            metrics,
            shutdown,
            sessions: TaskTracker::new(),
            next_session: AtomicU64::new(1),
            open_sessions: AtomicUsize::new(0),
            token_sessions: DashMap::new(),
        }
    }

    pub(crate) fn remember_session(
        &self,
        token: TokenHash,
        id: SessionId,
        shared: Arc<SessionShared>,
    ) {
        self.token_sessions
            .entry(token)
            .or_default()
            .push((id, shared));
    }

    pub(crate) fn forget_session(&self, token: TokenHash, id: SessionId) {
        let empty = self.token_sessions.get_mut(&token).is_some_and(|mut v| {
            v.retain(|(s, _)| *s != id);
            v.is_empty()
        });
        if empty {
            self.token_sessions.remove_if(&token, |_, v| v.is_empty());
        }
    }

    /// Close every session authenticated with `token`.
    pub(crate) fn kick_token(&self, token: TokenHash) {
        if let Some((_, sessions)) = self.token_sessions.remove(&token) {
            for (_, shared) in sessions {
                shared.kick(close::LOGGED_OUT);
            }
        }
    }
}

/// Open the storage of the configured phase (applying migrations for Postgres).
async fn open_storage(config: &Config) -> Result<Arc<dyn Storage>, Error> {
    match config.phase {
        Phase::Single => Ok(Arc::new(MemoryStorage::new())),
        Phase::Postgres | Phase::Pubsub | Phase::Queue => {
            let url = config
                .database_url
                .as_deref()
                .ok_or_else(|| Error::Config("this phase needs a database URL".into()))?;
            let pg = crate::storage::PgStorage::connect(url, config.db_pool_size).await?;
            Ok(Arc::new(pg))
        }
    }
}

/// Run a node on `listener` until `shutdown` is cancelled, then close every WebSocket
/// with 1001 and wait (up to the drain timeout) for sessions to end.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    run_with_ready(config, listener, shutdown, |_| {}).await
}

/// Like [`run`], calling `ready(bound address)` once storage is open and the node serves.
pub async fn run_with_ready(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
    ready: impl FnOnce(SocketAddr) + Send,
) -> Result<(), Error> {
    let config = config.validate()?;
    let storage = open_storage(&config).await?;
    let addr = listener.local_addr()?;
    let app = Arc::new(App::new(config, storage, shutdown.clone()));
    let bus = match app.config.phase {
        Phase::Pubsub | Phase::Queue => {
            let bus = Bus::connect(&app.config, app.metrics.clone()).await?;
            app.hub.attach_bus(bus.clone());
            bus.start(app.clone(), shutdown.clone());
            Some(bus)
        }
        Phase::Single | Phase::Postgres => None,
    };
    let upkeep = tokio::spawn(metrics_upkeep(app.clone()));
    let router = router(app.clone());
    ready(addr);
    tracing::info!(%addr, node = %app.config.node_id, phase = app.config.phase.as_str(), "serving");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await?;
    // HTTP connections are done; upgraded sessions see the token and close with 1001.
    app.sessions.close();
    if tokio::time::timeout(app.config.drain_timeout, app.sessions.wait())
        .await
        .is_err()
    {
        tracing::warn!("sessions did not drain in time");
    }
    if let Some(bus) = bus {
        bus.stopped(app.config.drain_timeout).await;
    }
    upkeep.abort();
    tracing::info!("stopped");
    Ok(())
}

/// Fold histogram samples regularly, scraped or not (see [`Metrics::upkeep`]).
async fn metrics_upkeep(app: Arc<App>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tokio::select! {
            () = app.shutdown.cancelled() => return,
            _ = tick.tick() => app.metrics.upkeep(),
        }
    }
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/ws", get(ws_upgrade))
        .route("/healthz", get(|| async { StatusCode::OK }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .nest("/api/v1", crate::http::routes(&app.config))
        .merge(flowline_web::router()) // the browser client at / and /assets/*
        .with_state(app)
}

async fn readyz(State(app): State<Arc<App>>) -> StatusCode {
    if app.shutdown.is_cancelled() || app.storage.ping().await.is_err() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        app.metrics.render(),
    )
        .into_response()
}

async fn ws_upgrade(State(app): State<Arc<App>>, ws: WebSocketUpgrade) -> Response {
    use std::sync::atomic::Ordering;
    if app.shutdown.is_cancelled() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let open = app.open_sessions.fetch_add(1, Ordering::AcqRel);
    if open >= app.config.limits.max_connections {
        app.open_sessions.fetch_sub(1, Ordering::AcqRel);
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let max = app.config.limits.max_frame_bytes;
    let session_app = app.clone();
    let ws = ws
        .read_buffer_size(app.config.ws_read_buffer)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(max)
        .max_frame_size(max)
        .on_failed_upgrade({
            let app = app.clone();
            move |_| {
                app.open_sessions.fetch_sub(1, Ordering::AcqRel);
            }
        });
    ws.on_upgrade(move |socket| {
        let tracker = session_app.sessions.clone();
        tracker.track_future(async move {
            let (sink, stream) = socket.split();
            crate::session::serve(session_app.clone(), sink, stream).await;
            session_app.open_sessions.fetch_sub(1, Ordering::AcqRel);
        })
    })
}
