//! The worker's per-delivery hot path: parse a `message` frame (borrowed peek), match the
//! nonce, note the seq for the checker, record the latency. The budget is ~7 µs
//! of loadgen CPU per delivery end to end (WebSocket read and syscalls included); this
//! isolates the part this crate owns. Run: `cargo bench -p flowline-loadgen`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use flowline_loadgen::histogram::Metric;
use flowline_loadgen::receipts::Receipts;
use flowline_loadgen::recorder::Recorder;
use flowline_loadgen::worker::{self, Peek};
use flowline_protocol::ws::{Message, ServerEvent};

fn frame(seq: i64) -> String {
    serde_json::to_string(&ServerEvent::Message(Message {
        channel: 42,
        seq,
        id: 1_000_000 + seq,
        author: 7,
        body: "x".repeat(100),
        nonce: Some(worker::nonce(7, seq as u64, 1_764_300_000_000_000)),
        created_at: 1_764_300_000_000,
        ..Default::default()
    }))
    .unwrap()
}

fn delivery(c: &mut Criterion) {
    let frames: Vec<String> = (1..=1024).map(frame).collect();
    let mut rec = Recorder::default();
    let mut receipts = Receipts::default();
    let mut i = 0usize;
    let mut base = 0i64;
    c.bench_function("delivery_frame", |b| {
        b.iter(|| {
            let text = &frames[i % frames.len()];
            i += 1;
            let p: Peek<'_> = serde_json::from_str(black_box(text)).unwrap();
            let (_, _, sent) = p.nonce.and_then(worker::parse_nonce).unwrap();
            // Keep seqs increasing across laps so receipts stay on the in-order path.
            if i.is_multiple_of(frames.len()) {
                base += frames.len() as i64;
            }
            receipts.add(base + p.seq.unwrap());
            rec.record(Metric::Delivery, 1_764_300_000_001_000 - sent);
        })
    });
}

fn encode_interval(c: &mut Criterion) {
    let mut rec = Recorder::default();
    for v in 0..100_000u64 {
        rec.record(Metric::Delivery, 100 + v % 50_000);
        rec.record(Metric::Ack, 50 + v % 5_000);
    }
    c.bench_function("encode_interval_histograms", |b| {
        b.iter(|| black_box(rec.encode_hists().unwrap()))
    });
}

criterion_group!(benches, delivery, encode_interval);
criterion_main!(benches);
