//! Frame toxics on real WebSocket connections through the proxy: a tungstenite server
//! that sends numbered JSON messages on request, a tungstenite client that reads them.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use flowline_chaos::{Controller, Direction, FrameAction, FrameSelect, ToxicKind, ToxicSpec};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::util::{echo_server, proxy, round_trip};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn msg(seq: u64) -> String {
    json!({"type": "message", "channel": 1, "seq": seq, "body": "hello"}).to_string()
}

/// A WebSocket server: on `send A B` it sends messages A..=B; on `frag S` message S in
/// three fragments with a ping between the first two.
async fn ws_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    let Message::Text(t) = m else { continue };
                    let words: Vec<&str> = t.as_str().split(' ').collect();
                    match words.as_slice() {
                        ["send", a, b] => {
                            let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
                            for s in a..=b {
                                ws.send(Message::text(msg(s))).await.unwrap();
                            }
                        }
                        ["frag", s] => {
                            let text = msg(s.parse().unwrap()).into_bytes();
                            let (a, rest) = text.split_at(5);
                            let (b, c) = rest.split_at(7);
                            let frames = [
                                Frame::message(a.to_vec(), OpCode::Data(Data::Text), false),
                                Frame::ping(Bytes::from_static(b"p")),
                                Frame::message(b.to_vec(), OpCode::Data(Data::Continue), false),
                                Frame::message(c.to_vec(), OpCode::Data(Data::Continue), true),
                            ];
                            for f in frames {
                                ws.send(Message::Frame(f)).await.unwrap();
                            }
                        }
                        _ => {}
                    }
                }
            });
        }
    });
    addr
}

async fn connect(addr: SocketAddr) -> Client {
    tokio_tungstenite::connect_async(format!("ws://{addr}/"))
        .await
        .unwrap()
        .0
}

/// What the client reads within `wait`: text payloads, and `"ping"` for a ping.
async fn read_for(c: &mut Client, wait: Duration) -> Vec<String> {
    let mut got = Vec::new();
    let end = Instant::now() + wait;
    while let Ok(Some(Ok(m))) =
        timeout(end.saturating_duration_since(Instant::now()), c.next()).await
    {
        match m {
            Message::Text(t) => got.push(t.as_str().to_string()),
            Message::Ping(_) => got.push("ping".into()),
            _ => {}
        }
    }
    got
}

/// The seqs of the JSON messages read, in order.
fn seqs(texts: &[String]) -> Vec<u64> {
    texts
        .iter()
        .filter_map(|t| serde_json::from_str::<Value>(t).ok())
        .filter_map(|v| v["seq"].as_u64())
        .collect()
}

fn frame_toxic(action: FrameAction, nth: u64, matches: Value) -> ToxicSpec {
    ToxicSpec::new(
        ToxicKind::Frame {
            action,
            select: FrameSelect {
                nth,
                every: 0,
                matches: serde_json::from_value(matches).unwrap(),
            },
        },
        Direction::Downstream,
    )
}

const WAIT: Duration = Duration::from_millis(300);

#[tokio::test]
async fn frame_toxics_through_the_api_act_on_exactly_the_selected_messages() {
    let c = Controller::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!(
        "http://{}/proxies/ws/toxics",
        listener.local_addr().unwrap()
    );
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(flowline_chaos::serve_api(c.clone(), listener, stop.clone()));
    let addr = proxy(&c, "ws", ws_server().await).await;
    let http = reqwest::Client::new();
    let add = |body: Value| http.post(&base).json(&body).send();
    let mut ws = connect(addr).await;

    // Counting starts when the toxic is added: messages before it are not counted.
    ws.send(Message::text("send 1 2")).await.unwrap();
    assert_eq!(seqs(&read_for(&mut ws, WAIT).await), [1, 2]);
    let r = add(
        json!({"name": "d", "type": "frame_drop", "stream": "downstream",
        "attributes": {"nth": 2, "match": {"/type": "message"}}}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let shown: Value = r.json().await.unwrap();
    assert_eq!(
        shown["attributes"],
        json!({"nth": 2, "every": 0, "match": {"/type": "message"}})
    );
    ws.send(Message::text("send 3 6")).await.unwrap();
    assert_eq!(seqs(&read_for(&mut ws, WAIT).await), [3, 5, 6]);
    http.delete(format!("{base}/d")).send().await.unwrap();

    add(json!({"name": "dup", "type": "frame_duplicate",
        "attributes": {"match": {"/seq": 8}}}))
    .await
    .unwrap();
    ws.send(Message::text("send 7 9")).await.unwrap();
    assert_eq!(seqs(&read_for(&mut ws, WAIT).await), [7, 8, 8, 9]);
    http.delete(format!("{base}/dup")).send().await.unwrap();

    add(json!({"name": "r", "type": "frame_reorder",
        "attributes": {"nth": 1, "match": {"/seq": [11, 12]}}}))
    .await
    .unwrap();
    ws.send(Message::text("send 10 13")).await.unwrap();
    assert_eq!(seqs(&read_for(&mut ws, WAIT).await), [10, 12, 11, 13]);
    http.delete(format!("{base}/r")).send().await.unwrap();

    add(json!({"name": "x", "type": "frame_corrupt", "attributes": {"every": 2}}))
        .await
        .unwrap();
    ws.send(Message::text("send 14 15")).await.unwrap();
    let got = read_for(&mut ws, WAIT).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0], msg(14));
    assert_eq!(got[1], format!("z{}", &msg(15)[1..]), "`{{` ^ 1 = `z`");

    // Bad attributes: 400 with Toxiproxy's error body, naming what is wrong.
    let bad = [
        (
            json!({"type": "frame_drop", "attributes": {"nht": 1}}),
            "unknown attribute \"nht\"",
        ),
        (
            json!({"type": "frame_drop", "attributes": {"nth": 1, "every": 2}}),
            "`every`",
        ),
        (
            json!({"type": "frame_drop", "attributes": {"match": {"type": 1}}}),
            "JSON pointer",
        ),
        (
            json!({"type": "frame_drop", "attributes": {"match": "/type"}}),
            "\"match\" must be an object",
        ),
        (
            json!({"type": "frame_drop", "stream": "upstream"}),
            "downstream",
        ),
        (
            json!({"type": "frame_corrupt", "attributes": {"xor": 0}}),
            "`xor`",
        ),
        (
            json!({"type": "frame_reorder", "attributes": {"after": 0}}),
            "`after`",
        ),
        (
            json!({"type": "frame_delay", "attributes": {"delay": "1s"}}),
            "non-negative integer",
        ),
    ];
    for (body, want) in bad {
        let r = add(body.clone()).await.unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["status"], 400);
        let text = e["error"].as_str().unwrap();
        assert!(text.contains(want), "{body}: {text}");
    }
    stop.cancel();
}

#[tokio::test]
async fn frame_delay_holds_the_message_and_what_follows_waits() {
    let c = Controller::new();
    let addr = proxy(&c, "ws", ws_server().await).await;
    let mut ws = connect(addr).await;
    c.add_toxic(
        "ws",
        frame_toxic(FrameAction::Delay { delay: 300 }, 0, json!({"/seq": 2})),
    )
    .unwrap();
    let t0 = Instant::now();
    ws.send(Message::text("send 1 3")).await.unwrap();
    let mut at = Vec::new();
    while at.len() < 3 {
        let Some(Ok(Message::Text(t))) = ws.next().await else {
            panic!("stream ended")
        };
        at.push((seqs(&[t.as_str().to_string()])[0], t0.elapsed()));
    }
    assert_eq!(at.iter().map(|a| a.0).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(at[0].1 < Duration::from_millis(200), "{at:?}");
    assert!(at[1].1 >= Duration::from_millis(300), "{at:?}");
    assert!(at[2].1 >= at[1].1, "{at:?}");
}

#[tokio::test]
async fn fragmented_messages_are_dropped_whole_and_pings_pass() {
    let c = Controller::new();
    let addr = proxy(&c, "ws", ws_server().await).await;
    let mut ws = connect(addr).await;
    c.add_toxic("ws", frame_toxic(FrameAction::Drop, 0, json!({"/seq": 2})))
        .unwrap();
    ws.send(Message::text("frag 1")).await.unwrap();
    ws.send(Message::text("frag 2")).await.unwrap();
    ws.send(Message::text("send 3 3")).await.unwrap();
    let got = read_for(&mut ws, WAIT).await;
    // Message 1 reassembled (its ping went out first), message 2 gone, its ping kept.
    assert_eq!(got, ["ping", &msg(1), "ping", &msg(3)], "{got:?}");
}

#[tokio::test]
async fn healing_a_reorder_delivers_what_it_held() {
    let c = Controller::new();
    let addr = proxy(&c, "ws", ws_server().await).await;
    let mut ws = connect(addr).await;
    c.add_toxic(
        "ws",
        frame_toxic(
            FrameAction::Reorder { after: 1 },
            1,
            json!({"/type": "message"}),
        )
        .named("r"),
    )
    .unwrap();
    ws.send(Message::text("send 1 1")).await.unwrap();
    assert!(read_for(&mut ws, WAIT).await.is_empty(), "held back");
    c.remove_toxic("ws", "r").unwrap();
    assert_eq!(seqs(&read_for(&mut ws, WAIT).await), [1]);
    ws.send(Message::text("send 2 3")).await.unwrap();
    assert_eq!(seqs(&read_for(&mut ws, WAIT).await), [2, 3]);
}

#[tokio::test]
async fn frame_toxics_leave_other_protocols_alone() {
    let c = Controller::new();
    let addr = proxy(&c, "tcp", echo_server().await).await;
    c.add_toxic("tcp", frame_toxic(FrameAction::Drop, 0, json!({})))
        .unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    // Bytes that look like a WebSocket frame, on a connection that never upgraded: they
    // come back intact (round_trip checks them).
    round_trip(&mut s, &[0x81, 0x01, b'a']).await;
    round_trip(
        &mut s,
        b"HTTP/1.1 101 x\r\nUpgrade: websocket\r\n\r\n\x81\x01a",
    )
    .await;
}
