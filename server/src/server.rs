//! Running a node: [`run`] opens storage and the cluster bus, assembles the [`Node`],
//! serves the router (WebSocket upgrade, HTTP API, health, metrics, web client) and, on
//! shutdown, drains the sessions and the bus.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::bus::Bus;
use crate::config::{Config, Phase};
use crate::error::Error;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::node::Node;
use crate::storage::{MemoryStorage, PgStorage, PoolSizes, Storage};

/// Open the storage of the configured phase (applying migrations for Postgres).
async fn open_storage(config: &Config, metrics: &Metrics) -> Result<Arc<dyn Storage>, Error> {
    match config.phase {
        Phase::Single => Ok(Arc::new(MemoryStorage::new())),
        Phase::Postgres | Phase::Pubsub | Phase::Queue => {
            let url = config
                .database_url
                .as_deref()
                .ok_or_else(|| Error::Config("this phase needs a database URL".into()))?;
            let pg = PgStorage::connect(
                url,
                PoolSizes {
                    send: config.db_send_pool_size,
                    other: config.db_pool_size,
                    acquire_timeout: config.db_acquire_timeout,
                },
                Some(metrics),
            )
            .await?;
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
    let metrics = Arc::new(Metrics::new(&config.node_id));
    let storage = open_storage(&config, &metrics).await?;
    let addr = listener.local_addr()?;
    let hub = Arc::new(Hub::new(metrics.clone()));
    let bus = match config.phase {
        Phase::Pubsub | Phase::Queue => {
            let bus = Bus::connect(&config, metrics.clone()).await?;
            hub.attach_cluster(bus.clone());
            Some(bus)
        }
        Phase::Single | Phase::Postgres => None,
    };
    let node = Arc::new(Node::new(
        config,
        storage,
        metrics,
        hub,
        bus.clone(),
        shutdown.clone(),
    ));
    if let Some(bus) = &bus {
        bus.start(node.inbox(), node.storage.clone(), shutdown.clone());
    }
    let upkeep = tokio::spawn(metrics_upkeep(node.clone()));
    let router = router(node.clone());
    ready(addr);
    tracing::info!(%addr, node = %node.config.node_id, phase = node.config.phase.as_str(), "serving");
    crate::accept::serve(
        listener,
        router,
        node.config.header_read_timeout,
        shutdown.clone(),
    )
    .await;
    // HTTP connections are done; upgraded sessions see the token and close with 1001.
    if !node.sessions.drain(node.config.drain_timeout).await {
        tracing::warn!("sessions did not drain in time");
    }
    if let Some(bus) = bus {
        bus.stopped(node.config.drain_timeout).await;
    }
    upkeep.abort();
    tracing::info!("stopped");
    Ok(())
}

/// Fold histogram samples regularly, scraped or not (see [`Metrics::upkeep`]), and
/// forget full rate-limit buckets.
async fn metrics_upkeep(node: Arc<Node>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tokio::select! {
            () = node.shutdown.cancelled() => return,
            _ = tick.tick() => {
                node.metrics.upkeep();
                node.rates.tidy();
            }
        }
    }
}

fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/ws", get(ws_upgrade))
        .route("/healthz", get(|| async { StatusCode::OK }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .nest("/api/v1", crate::http::routes(&node.config))
        .merge(flowline_web::router()) // the browser client at / and /assets/*
        .layer(crate::accept::BodyDeadlineLayer::new(
            node.config.body_read_timeout,
        ))
        .with_state(node)
}

async fn readyz(State(node): State<Arc<Node>>) -> StatusCode {
    if node.shutdown.is_cancelled() || node.storage.ping().await.is_err() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    }
}

async fn metrics(State(node): State<Arc<Node>>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        node.metrics.render(),
    )
        .into_response()
}

async fn ws_upgrade(State(node): State<Arc<Node>>, ws: WebSocketUpgrade) -> Response {
    if node.shutdown.is_cancelled() || !node.sessions.try_open(node.config.limits.max_connections) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let max = node.config.limits.max_frame_bytes;
    let session_node = node.clone();
    let ws = ws
        .read_buffer_size(node.config.ws_read_buffer)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(max)
        .max_frame_size(max)
        .on_failed_upgrade({
            let node = node.clone();
            move |_| node.sessions.closed()
        });
    ws.on_upgrade(move |socket| {
        let tracker = session_node.sessions.tracker().clone();
        tracker.track_future(async move {
            let (sink, stream) = socket.split();
            crate::session::serve(session_node.clone(), sink, stream).await;
            session_node.sessions.closed();
        })
    })
}
