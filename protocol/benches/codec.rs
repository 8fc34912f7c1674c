//! Encode/decode cost of the hot-path frames (`send`, `message`).

use criterion::{Criterion, criterion_group, criterion_main};
use flowline_protocol::ws::{ClientOp, Message, ServerEvent};
use std::hint::black_box;

fn codec(c: &mut Criterion) {
    let body = "x".repeat(100);
    let send = ClientOp::send_text(42, 7, body.clone(), Some("u17-42".into()));
    let send_text = serde_json::to_string(&send).unwrap();
    let msg = ServerEvent::Message(Message {
        channel: 7,
        seq: 123_456,
        id: 987_654_321,
        author: 17,
        body,
        nonce: Some("u17-42".into()),
        created_at: 1_790_000_000_000,
        ..Message::default()
    });
    let msg_text = serde_json::to_string(&msg).unwrap();
    c.bench_function("encode message event", |b| {
        b.iter(|| serde_json::to_string(black_box(&msg)).unwrap())
    });
    c.bench_function("decode message event", |b| {
        b.iter(|| serde_json::from_str::<ServerEvent>(black_box(&msg_text)).unwrap())
    });
    c.bench_function("decode send op", |b| {
        b.iter(|| serde_json::from_str::<ClientOp>(black_box(&send_text)).unwrap())
    });
}

criterion_group!(benches, codec);
criterion_main!(benches);
