//! Pipelined bursts: a client that writes hundreds of requests in one go while reading
//! continuously is answered in full (its reading is paused while its answers are queued),
//! never cut off as a slow consumer (`delivery.rs` checks that one that does not read
//! still is).

use std::collections::BTreeMap;
use std::time::Duration;

use flowline_protocol::ws::{ClientOp, ServerEvent};
use flowline_server::Phase;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::util::{Ws, start_with};

/// Write every frame of `frames` in one flush while a concurrent task reads; return the
/// events read until `want` of them matched `counts` (or the socket closed, or 20 s).
async fn burst(
    ws: Ws,
    frames: Vec<String>,
    want: usize,
    counts: impl Fn(&Value) -> bool + Send + 'static,
) -> (Ws, usize, Option<u16>) {
    let (mut sink, mut stream) = ws.inner.split();
    let reader = tokio::spawn(async move {
        let mut got = 0;
        let mut closed = None;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while got < want {
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(Some(Ok(WsMessage::Text(t)))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if counts(&v) {
                        got += 1;
                    }
                }
                Ok(Some(Ok(WsMessage::Close(f)))) => {
                    closed = Some(f.map_or(0, |f| u16::from(f.code)));
                    break;
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_)) | None) => {
                    closed = Some(0);
                    break;
                }
                Err(_) => break,
            }
        }
        (stream, got, closed)
    });
    for f in frames {
        sink.feed(WsMessage::text(f)).await.unwrap();
    }
    sink.flush().await.unwrap();
    let (stream, got, closed) = reader.await.unwrap();
    let inner = sink.reunite(stream).unwrap();
    (Ws { inner }, got, closed)
}

fn req_in(lo: u64, n: usize) -> impl Fn(&Value) -> bool + Send + 'static {
    move |v| {
        v["req_id"]
            .as_u64()
            .is_some_and(|r| (lo..lo + n as u64).contains(&r))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_bursts_are_answered_not_cut_off() {
    let (node, _db) = start_with(Phase::Single, |_| {}).await;
    let a = node.user("a").await;
    let space = node.space(&a, "s").await;
    let ch = node.channel(&a, &space, "c", None).await.id;
    let (mut ws, _) = Ws::hello(&node.ws, &a.token).await;
    ws.send(1, ch, "first").await;
    let first = ws
        .until("the first message", |e| {
            matches!(e, ServerEvent::Message(_))
        })
        .await;
    let ServerEvent::Message(first) = first else {
        unreachable!()
    };

    // (name, frames, answers expected, which events answer)
    type Burst = (
        &'static str,
        Vec<String>,
        usize,
        Box<dyn Fn(&Value) -> bool + Send>,
    );
    let n = 300usize;
    let at = |k: u64| k * 100_000;
    let frames = |k: u64, count: usize, f: &dyn Fn(u64) -> Value| -> Vec<String> {
        (0..count as u64)
            .map(|i| f(at(k) + i).to_string())
            .collect()
    };
    let bursts: Vec<Burst> = vec![
        (
            "ping",
            frames(1, 1000, &|r| json!({"type":"ping","req_id":r})),
            1000,
            Box::new(req_in(at(1), 1000)),
        ),
        (
            "malformed",
            frames(2, 2000, &|r| json!({"type":"no_such_op","req_id":r})),
            2000,
            Box::new(|v: &Value| v["type"] == "error"),
        ),
        (
            "send",
            frames(
                3,
                n,
                &|r| json!({"type":"send","req_id":r,"channel":ch,"body":"b","nonce":format!("n{r}")}),
            ),
            2 * n,
            // Each send is acked, and its message comes back (the sender is subscribed).
            Box::new(move |v: &Value| {
                req_in(at(3), n)(v) || (v["type"] == "message" && v["body"] == "b")
            }),
        ),
        (
            "edit",
            frames(
                4,
                n,
                &|r| json!({"type":"edit","req_id":r,"channel":ch,"id":first.id,"body":format!("e{r}")}),
            ),
            n,
            Box::new(req_in(at(4), n)),
        ),
        (
            "react",
            frames(
                5,
                n,
                &|r| json!({"type":if r % 2 == 0 {"react"} else {"unreact"},"req_id":r,"channel":ch,"id":first.id,"emoji":"👍"}),
            ),
            n,
            Box::new(req_in(at(5), n)),
        ),
        (
            "start_thread",
            frames(
                6,
                n,
                &|r| json!({"type":"start_thread","req_id":r,"channel":ch,"id":first.id}),
            ),
            n,
            Box::new(req_in(at(6), n)),
        ),
        (
            "history",
            frames(
                7,
                n,
                &|r| json!({"type":"history","req_id":r,"channel":ch,"limit":5}),
            ),
            n,
            Box::new(req_in(at(7), n)),
        ),
        (
            "subscribe",
            frames(
                8,
                n,
                &|r| json!({"type":"subscribe","req_id":r,"channels":[ch]}),
            ),
            n,
            Box::new(req_in(at(8), n)),
        ),
        (
            "set_presence",
            frames(
                9,
                n,
                &|r| json!({"type":"set_presence","req_id":r,"status":"online"}),
            ),
            n,
            Box::new(req_in(at(9), n)),
        ),
        (
            // Typing where the user may not: one `forbidden` error each.
            "typing",
            frames(10, n, &|_| json!({"type":"typing","channel":999_999_999})),
            n,
            Box::new(|v: &Value| v["type"] == "error"),
        ),
    ];
    for (name, frames, want, counts) in bursts {
        let (back, got, closed) = burst(ws, frames, want, counts).await;
        ws = back;
        assert_eq!(
            (got, closed),
            (want, None),
            "burst of {name}: every answer, no close"
        );
    }
    // The session is still fine.
    ws.op(&ClientOp::Ping {
        req_id: Some(7),
        ts: None,
    })
    .await;
    ws.until("pong", |e| matches!(e, ServerEvent::Pong { .. }))
        .await;

    // A hello resuming 1000 channels it cannot read: `ready`, then one `forbidden` each.
    let resume: BTreeMap<String, i64> = (0..1000)
        .map(|i| ((500_000_000 + i).to_string(), 1))
        .collect();
    let hello = json!({"type":"hello","token":a.token,"v":flowline_protocol::PROTOCOL_VERSION,"resume":resume});
    let fresh = Ws::connect(&node.ws).await;
    let (_fresh, got, closed) = burst(fresh, vec![hello.to_string()], 1001, |v| {
        v["type"] == "ready" || v["code"] == "forbidden"
    })
    .await;
    assert_eq!(
        (got, closed),
        (1001, None),
        "ready + 1000 forbidden, no close"
    );
    node.stop().await;
}
