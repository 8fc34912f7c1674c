//! Fan-out of one message to 1,000 subscribers, in process.
//!
//! * `hub_deliver_1000`: the hub alone — one serialized event queued into 1,000 bounded
//!   per-session queues, plus draining them (what the writer tasks do before the socket).
//! * `node_fanout_1000_ws`: the whole node — one `send` over a WebSocket, until 1,000
//!   real WebSocket clients (tokio-tungstenite, same process) have each read the message.
//!
//! Throughput is reported in elements = deliveries, so criterion prints deliveries/s.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flowline_protocol::api::{
    ADMIN_HEADER, Provision, ProvisionChannel, ProvisionSpace, Provisioned,
};
use flowline_protocol::ws::{ClientOp, Message, ServerEvent};
use flowline_server::hub::{Hub, SessionShared, Subscriber};
use flowline_server::metrics::Metrics;
use flowline_server::{Config, Phase};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;

const SUBSCRIBERS: usize = 1000;

type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A client with a 4 KiB read buffer: tungstenite's default 128 KiB buffer is zeroed on
/// every read, which would make the 1,000 clients, not the node, the bottleneck.
async fn connect(url: &str) -> Client {
    let config =
        tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096);
    tokio_tungstenite::connect_async_with_config(url, Some(config), true)
        .await
        .unwrap()
        .0
}

fn hub_deliver(c: &mut Criterion) {
    let hub = Hub::new(Arc::new(Metrics::new("bench")));
    let mut receivers = Vec::with_capacity(SUBSCRIBERS);
    for id in 0..SUBSCRIBERS {
        let (tx, rx) = mpsc::channel(256);
        let sub = Subscriber {
            tx,
            shared: Arc::new(SessionShared::new(0)),
        };
        hub.subscribe(id as u64, &sub, &[7]);
        receivers.push(rx);
    }
    let event = ServerEvent::Message(Message {
        channel: 7,
        seq: 1,
        id: 1,
        author: 1,
        body: "x".repeat(100),
        nonce: Some("n".into()),
        created_at: 1_790_000_000_000,
        ..Default::default()
    });
    let mut group = c.benchmark_group("fanout");
    group.throughput(Throughput::Elements(SUBSCRIBERS as u64));
    let mut seq = 0;
    group.bench_function("hub_deliver_1000", |b| {
        b.iter(|| {
            seq += 1;
            let text: Utf8Bytes = serde_json::to_string(&event).unwrap().into();
            assert_eq!(hub.deliver(7, seq, &text), SUBSCRIBERS);
            for rx in &mut receivers {
                rx.try_recv().unwrap();
            }
        })
    });
    group.finish();
}

fn node_fanout(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let shutdown = CancellationToken::new();
    let (ws_url, sender_token, channel, received, done) = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = Config::new("bench", Phase::Single);
        config.admin_secret = Some("bench".into());
        tokio::spawn(flowline_server::run(config, listener, shutdown.clone()));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let plan = Provision {
            username_prefix: "b".into(),
            users: SUBSCRIBERS as u32 + 1,
            spaces: vec![ProvisionSpace {
                name: "s".into(),
                members: (0..=SUBSCRIBERS as u32).collect(),
                channels: vec![ProvisionChannel {
                    name: "c".into(),
                    members: None,
                }],
            }],
            dms: vec![],
        };
        let got: Provisioned = reqwest::Client::new()
            .post(format!("http://{addr}/api/v1/admin/provision"))
            .header(ADMIN_HEADER, "bench")
            .json(&plan)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let ws_url = format!("ws://{addr}/ws");
        let received = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(Notify::new());
        for user in &got.users[1..] {
            let mut ws = connect(&ws_url).await;
            let hello = ClientOp::Hello {
                token: user.token.clone(),
                v: 1,
                resume: Default::default(),
                subscribe_all: true,
                presence: true,
            };
            ws.send(WsMessage::text(serde_json::to_string(&hello).unwrap()))
                .await
                .unwrap();
            ws.next().await.unwrap().unwrap(); // ready
            let (received, done) = (received.clone(), done.clone());
            tokio::spawn(async move {
                while let Some(Ok(m)) = ws.next().await {
                    if let WsMessage::Text(t) = m
                        && t.as_str().starts_with(r#"{"type":"message""#)
                        && received.fetch_add(1, Ordering::AcqRel) + 1 == SUBSCRIBERS
                    {
                        done.notify_one();
                    }
                }
            });
        }
        (
            ws_url,
            got.users[0].token.clone(),
            got.spaces[0].channels[0],
            received,
            done,
        )
    });
    let mut sender = rt.block_on(async {
        let mut ws = connect(&ws_url).await;
        let hello = ClientOp::Hello {
            token: sender_token,
            v: 1,
            resume: Default::default(),
            subscribe_all: false,
            presence: true,
        };
        ws.send(WsMessage::text(serde_json::to_string(&hello).unwrap()))
            .await
            .unwrap();
        ws.next().await.unwrap().unwrap();
        ws
    });
    let mut group = c.benchmark_group("fanout");
    group.throughput(Throughput::Elements(SUBSCRIBERS as u64));
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(8));
    let mut req_id = 0u64;
    group.bench_function("node_fanout_1000_ws", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    req_id += 1;
                    received.store(0, Ordering::Release);
                    let send = ClientOp::send_text(req_id, channel, "x".repeat(100), None);
                    let wait = done.notified();
                    sender
                        .send(WsMessage::text(serde_json::to_string(&send).unwrap()))
                        .await
                        .unwrap();
                    wait.await;
                    sender.next().await.unwrap().unwrap(); // ack
                }
                start.elapsed()
            })
        })
    });
    group.finish();
    shutdown.cancel();
}

criterion_group!(benches, hub_deliver, node_fanout);
criterion_main!(benches);
