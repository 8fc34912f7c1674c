//! The coordinator's cost per second of a run at 16 workers: each second every worker
//! sends one `tick` line (realistic: a second of 2,000 deliveries and 200 acks in
//! histograms) over loopback TCP; the coordinator reads, classifies and hands on all 16
//! (`forward_16_ticks`), and the aggregator merges them (`ingest_16_ticks`, the exact
//! merge). Bytes per tick are printed. Start skew is measured with real processes by
//! scripts/bench-coordinator. Run: `cargo bench -p flowline-harness --bench coordinator`.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use flowline_harness::coordinator::{self, Expect};
use flowline_loadgen::aggregate::Aggregator;
use flowline_loadgen::coordinator::message::{
    FromWorker, Hello, MAX_HANDSHAKE_LINE, PROTOCOL_VERSION, ToWorker, read_line, to_line,
    unix_us_now, write_line,
};
use flowline_loadgen::coordinator::{build_id, scenario_hash};
use flowline_loadgen::histogram::{Metric, encode, new_histogram};
use flowline_loadgen::scenario::Scenario;
use flowline_loadgen::wire::{Counters, Tick, WorkerLine};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const WORKERS: usize = 16;

fn scenario() -> Scenario {
    Scenario::parse(
        "bench",
        "[run]\nname = \"bench\"\nduration = \"60s\"\nseed = 1\n[population]\nusers = 1600\n",
    )
    .unwrap()
}

/// One worker's tick line of second `t`, with a plausible second of samples.
fn tick_line(worker: usize, t: u64) -> String {
    let mut hist = std::collections::BTreeMap::new();
    for (m, n, base) in [(Metric::Delivery, 2000u64, 800u64), (Metric::Ack, 200, 500)] {
        let mut h = new_histogram();
        for i in 0..n {
            h.record(base + (i * 7919 + worker as u64 * 31) % 20_000)
                .unwrap();
        }
        hist.insert(m.name().to_string(), encode(&h).unwrap());
    }
    serde_json::to_string(&WorkerLine::Tick(Tick {
        worker,
        t,
        elapsed_ms: t * 1000,
        measuring: true,
        users: 100,
        counters: Counters {
            sent: 200,
            acked: 200,
            delivered: 2000,
            ..Counters::default()
        },
        hist,
        ..Tick::default()
    }))
    .unwrap()
}

/// A worker that does the handshake by hand and returns its socket's write half.
async fn fake_worker(addr: std::net::SocketAddr, shard: usize, s: &Scenario) -> TcpStream {
    let mut sock = TcpStream::connect(addr).await.unwrap();
    let hello = FromWorker::Hello(Hello {
        version: PROTOCOL_VERSION,
        shard,
        shards: WORKERS,
        build: build_id(),
        scenario_hash: scenario_hash(s),
        seed: s.seed,
        metrics: None,
        host: None,
        pid: None,
    });
    write_line(&mut sock, &to_line(&hello)).await.unwrap();
    let (r, mut w) = sock.split();
    let mut r = BufReader::new(r);
    loop {
        let line = read_line(&mut r, MAX_HANDSHAKE_LINE)
            .await
            .unwrap()
            .unwrap();
        match serde_json::from_str::<ToWorker>(&line).unwrap() {
            ToWorker::Ping { id, sent_us } => {
                let pong = FromWorker::Pong {
                    id,
                    sent_us,
                    worker_us: unix_us_now(),
                };
                write_line(&mut w, &to_line(&pong)).await.unwrap();
            }
            ToWorker::Start { .. } => break,
            _ => {}
        }
    }
    drop(r);
    sock
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let s = scenario();
    let lines: Vec<String> = (0..WORKERS).map(|w| tick_line(w, 1)).collect();
    let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
    eprintln!(
        "tick line: {} bytes per worker per second ({bytes} bytes per second at {WORKERS} workers)",
        lines[0].len() + 1
    );
    let (mut socks, mut session) = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let s2 = s.clone();
        // All at once: each waits for the start, which needs every hello.
        let workers = tokio::spawn(async move {
            futures_util::future::join_all((0..WORKERS).map(|w| fake_worker(addr, w, &s2))).await
        });
        let mut expect = Expect::new(&s, WORKERS, Duration::from_secs(10));
        expect.lead = Duration::from_millis(1);
        let session = coordinator::serve(listener, expect).await.unwrap();
        (workers.await.unwrap(), session)
    });
    c.bench_function("forward_16_ticks", |b| {
        b.iter(|| {
            rt.block_on(async {
                for (sock, line) in socks.iter_mut().zip(&lines) {
                    sock.write_all(line.as_bytes()).await.unwrap();
                    sock.write_all(b"\n").await.unwrap();
                }
                for _ in 0..WORKERS {
                    session.lines.recv().await.unwrap();
                }
            })
        })
    });
    let mut t = 0u64;
    let mut agg = Aggregator::new(&s, WORKERS);
    c.bench_function("ingest_16_ticks", |b| {
        b.iter(|| {
            t += 1;
            for (w, line) in lines.iter().enumerate() {
                // The second number changes so each iteration merges a new second.
                let line = line.replacen("\"t\":1,", &format!("\"t\":{t},"), 1);
                agg.ingest(w, &line).unwrap();
            }
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
