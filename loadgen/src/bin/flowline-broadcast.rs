//! `flowline-broadcast`: a tiny third-party-style WebSocket broadcast server (no Flowline
//! protocol), the target of the generic-WebSocket tests, example scenario and benchmark.
//!
//! Protocol: JSON text frames with a `type`.
//! * `{"type":"join","room":"R","user":7}`: join room `R` (a connection may join several).
//! * `{"type":"say","room":"R",…}`: the frame is sent verbatim to every member of `R`,
//!   the sender included.
//! * `{"type":"echo",…}`: the frame is sent back to its sender only.
//!
//! Other frames are ignored. WebSocket pings are answered.
//!
//! stdout (one JSON line each): `{"event":"listening","addr":"127.0.0.1:P","pid":N}` once,
//! `{"event":"dropped","to":USER,"frame":"…"}` for every deliberately dropped delivery
//! (`--drop K,…`: the K-th room delivery to a member other than the sender, counted from 1
//! over the whole server), and `{"event":"stats","received":N,"sent":M,"connections":C}`
//! every second and at exit (SIGINT/SIGTERM).

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// A tiny WebSocket broadcast server for load-generator tests and benchmarks.
#[derive(Debug, Parser)]
#[command(name = "flowline-broadcast", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Drop these room deliveries (1-based ordinals of deliveries to members other than
    /// the sender, over the whole server), e.g. `--drop 100,250`.
    #[arg(long, value_delimiter = ',')]
    drop: Vec<u64>,
    /// Runtime threads (default: available cores).
    #[arg(long)]
    threads: Option<usize>,
}

type Tx = mpsc::UnboundedSender<Message>;
/// A room member: connection id, user (from its join frame), outbound queue.
type Member = (u64, Option<u64>, Tx);

#[derive(Default)]
struct Shared {
    rooms: Mutex<HashMap<String, Vec<Member>>>,
    drop: BTreeSet<u64>,
    deliveries: AtomicU64,
    received: AtomicU64,
    sent: AtomicU64,
    connections: AtomicU64,
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn stats(s: &Shared) {
    say(&format!(
        r#"{{"event":"stats","received":{},"sent":{},"connections":{}}}"#,
        s.received.load(Ordering::Relaxed),
        s.sent.load(Ordering::Relaxed),
        s.connections.load(Ordering::Relaxed)
    ));
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(
            args.threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
        )
        .enable_all()
        .build();
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("flowline-broadcast: cannot start the runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match rt.block_on(serve(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flowline-broadcast: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn serve(args: Args) -> std::io::Result<()> {
    let listener = TcpListener::bind(&args.listen).await?;
    let addr = listener.local_addr()?;
    say(&format!(
        r#"{{"event":"listening","addr":"{addr}","pid":{}}}"#,
        std::process::id()
    ));
    let shared = Arc::new(Shared {
        drop: args.drop.iter().copied().collect(),
        ..Shared::default()
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut every = tokio::time::interval(Duration::from_secs(1));
    let mut next_id = 0u64;
    loop {
        tokio::select! {
            r = listener.accept() => {
                let Ok((tcp, _)) = r else { continue };
                next_id += 1;
                tokio::spawn(connection(shared.clone(), tcp, next_id));
            }
            _ = every.tick() => stats(&shared),
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
    stats(&shared);
    Ok(())
}

async fn connection(shared: Arc<Shared>, tcp: TcpStream, id: u64) {
    let _ = tcp.set_nodelay(true);
    let cfg = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(cfg)).await else {
        return;
    };
    shared.connections.fetch_add(1, Ordering::Relaxed);
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let writer_shared = shared.clone();
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(m).await.is_err() {
                break;
            }
            writer_shared.sent.fetch_add(1, Ordering::Relaxed);
        }
        let _ = sink.close().await;
    });
    let mut joined: Vec<String> = Vec::new();
    let mut user: Option<u64> = None;
    while let Some(Ok(msg)) = stream.next().await {
        let Message::Text(text) = msg else {
            if let Message::Close(_) = msg {
                break;
            }
            continue;
        };
        shared.received.fetch_add(1, Ordering::Relaxed);
        let Ok(v) = serde_json::from_str::<serde_json::Value>(text.as_str()) else {
            continue;
        };
        let room = v.get("room").and_then(|r| match r {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        });
        match v.get("type").and_then(|t| t.as_str()) {
            Some("join") => {
                let Some(room) = room else { continue };
                user = v.get("user").and_then(serde_json::Value::as_u64).or(user);
                let mut rooms = shared.rooms.lock().unwrap_or_else(|e| e.into_inner());
                rooms
                    .entry(room.clone())
                    .or_default()
                    .push((id, user, tx.clone()));
                joined.push(room);
            }
            Some("say") => {
                let Some(room) = room else { continue };
                let frame = Message::Text(text.clone());
                let rooms = shared.rooms.lock().unwrap_or_else(|e| e.into_inner());
                for (conn, to, member) in rooms.get(&room).into_iter().flatten() {
                    if *conn != id {
                        let n = shared.deliveries.fetch_add(1, Ordering::Relaxed) + 1;
                        if shared.drop.contains(&n) {
                            say(&serde_json::json!({
                                "event": "dropped",
                                "to": to,
                                "frame": text.as_str(),
                            })
                            .to_string());
                            continue;
                        }
                    }
                    let _ = member.send(frame.clone());
                }
            }
            Some("echo") => {
                let _ = tx.send(Message::Text(text.clone()));
            }
            _ => {}
        }
    }
    {
        let mut rooms = shared.rooms.lock().unwrap_or_else(|e| e.into_inner());
        for room in joined {
            if let Some(members) = rooms.get_mut(&room) {
                members.retain(|(conn, _, _)| *conn != id);
                if members.is_empty() {
                    rooms.remove(&room);
                }
            }
        }
    }
    drop(tx);
    let _ = writer.await;
    shared.connections.fetch_sub(1, Ordering::Relaxed);
}
