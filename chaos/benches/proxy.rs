//! Proxy overhead with no toxics against a direct connection, measured in the same run:
//! added p50/p99 round-trip time of small messages, and throughput of a 100 MiB transfer.
//!
//! `cargo bench -p flowline-chaos` prints the figures and the ratios. Rounds alternate
//! direct and proxied so machine noise hits both alike; figures are medians over rounds.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use flowline_chaos::Controller;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MSG: usize = 64;
const RTT_SAMPLES: usize = 4000;
const ROUNDS: usize = 5;
const BULK: usize = 100 * 1024 * 1024;
const BULK_ROUNDS: usize = 7;

async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            s.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Reads everything, then answers one byte: the transfer is complete.
async fn sink_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                let mut total = 0usize;
                while total < BULK {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => total += n,
                    }
                }
                let _ = s.write_all(b"k").await;
            });
        }
    });
    addr
}

async fn rtts(addr: SocketAddr) -> Vec<Duration> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let msg = [42u8; MSG];
    let mut buf = [0u8; MSG];
    for _ in 0..200 {
        s.write_all(&msg).await.unwrap();
        s.read_exact(&mut buf).await.unwrap();
    }
    let mut out = Vec::with_capacity(RTT_SAMPLES);
    for _ in 0..RTT_SAMPLES {
        let t = Instant::now();
        s.write_all(&msg).await.unwrap();
        s.read_exact(&mut buf).await.unwrap();
        out.push(t.elapsed());
    }
    out.sort();
    out
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn bulk(addr: SocketAddr) -> f64 {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let chunk = vec![7u8; 256 * 1024];
    let t = Instant::now();
    let mut sent = 0;
    while sent < BULK {
        s.write_all(&chunk).await.unwrap();
        sent += chunk.len();
    }
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack).await.unwrap();
    BULK as f64 / t.elapsed().as_secs_f64() / (1024.0 * 1024.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing useful either.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = Controller::new();
        let echo = echo_server().await;
        let sink = sink_server().await;
        let p_echo = c
            .create_proxy("echo", "127.0.0.1:0".parse().unwrap(), &echo.to_string())
            .await
            .unwrap()
            .listen;
        let p_sink = c
            .create_proxy("sink", "127.0.0.1:0".parse().unwrap(), &sink.to_string())
            .await
            .unwrap()
            .listen;

        let (mut d50, mut d99, mut p50, mut p99) = (vec![], vec![], vec![], vec![]);
        for _ in 0..ROUNDS {
            let d = rtts(echo).await;
            let p = rtts(p_echo).await;
            d50.push(pct(&d, 0.5).as_secs_f64() * 1e6);
            d99.push(pct(&d, 0.99).as_secs_f64() * 1e6);
            p50.push(pct(&p, 0.5).as_secs_f64() * 1e6);
            p99.push(pct(&p, 0.99).as_secs_f64() * 1e6);
        }
        let (d50, d99, p50, p99) = (median(d50), median(d99), median(p50), median(p99));
        println!("rtt {MSG} B, {RTT_SAMPLES} samples x {ROUNDS} rounds (median of rounds):");
        println!("  direct  p50 {d50:8.1} us   p99 {d99:8.1} us");
        println!("  proxied p50 {p50:8.1} us   p99 {p99:8.1} us");
        println!(
            "  added   p50 {:8.1} us   p99 {:8.1} us   (target: added p50 < 100 us)",
            p50 - d50,
            p99 - d99
        );

        let (mut dt, mut pt) = (vec![], vec![]);
        for _ in 0..BULK_ROUNDS {
            dt.push(bulk(sink).await);
            pt.push(bulk(p_sink).await);
        }
        let (dt, pt) = (median(dt), median(pt));
        println!("throughput, 100 MiB (median of {BULK_ROUNDS}):");
        println!("  direct  {dt:8.0} MiB/s");
        println!("  proxied {pt:8.0} MiB/s");
        println!("  ratio   {:8.2}   (target >= 0.50)", pt / dt);
        c.shutdown().await;
    });
}
