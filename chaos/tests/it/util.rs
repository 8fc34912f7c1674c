//! Shared test helpers: small upstream servers, an in-process API server, a tolerance check.

use std::net::SocketAddr;
use std::time::Duration;

use flowline_chaos::Controller;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Timing tests hold this shared, CPU-heavy tests exclusively, so a bulk transfer never
/// starves a latency measurement running beside it on a small machine.
pub static CPU: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Assert `actual` is within `pct` percent of `expected` (toxiproxy's AssertDeltaTime).
#[track_caller]
pub fn assert_within(what: &str, actual: Duration, expected: Duration, pct: f64) {
    let a = actual.as_secs_f64();
    let e = expected.as_secs_f64();
    let delta = (a - e).abs() / e * 100.0;
    assert!(
        delta <= pct,
        "{what}: {actual:?} is {delta:.1}% away from {expected:?} (allowed {pct}%)"
    );
}

/// The median of some durations.
pub fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// An echo server on 127.0.0.1:0; returns its address.
pub async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// A server that writes `n` bytes (a repeating pattern) to each client, then closes.
pub async fn source_server(n: usize) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let data: bytes::Bytes = (0..n).map(|i| (i % 251) as u8).collect();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let data = data.clone();
            tokio::spawn(async move {
                let _ = s.write_all(&data).await;
                let _ = s.shutdown().await;
                // Keep the socket until the client is done, so close is the client's.
                let mut sink = [0u8; 1024];
                while matches!(s.read(&mut sink).await, Ok(k) if k > 0) {}
            });
        }
    });
    addr
}

/// A server that greets each client with `hello` and forwards what it receives to the
/// returned channel.
pub async fn greeter_server() -> (SocketAddr, mpsc::UnboundedReceiver<Vec<u8>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = s.write_all(b"hello").await;
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// Send `msg` and read the same number of bytes back; returns the round-trip time.
pub async fn round_trip(s: &mut TcpStream, msg: &[u8]) -> Duration {
    let t = tokio::time::Instant::now();
    s.write_all(msg).await.unwrap();
    let mut buf = vec![0u8; msg.len()];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(buf, msg);
    t.elapsed()
}

/// Read until EOF (or an error); returns the bytes read and the error, if any.
pub async fn read_to_end(s: &mut TcpStream) -> (Vec<u8>, Option<std::io::Error>) {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        match s.read(&mut buf).await {
            Ok(0) => return (out, None),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => return (out, Some(e)),
        }
    }
}

/// A proxy named `name` on 127.0.0.1:0 to `upstream`; returns its listen address.
pub async fn proxy(c: &Controller, name: &str, upstream: SocketAddr) -> SocketAddr {
    c.create_proxy(name, "127.0.0.1:0".parse().unwrap(), &upstream.to_string())
        .await
        .unwrap()
        .listen
}

/// The chaos API served in-process on its own runtime (so blocking clients such as
/// `toxiproxy_rust` can be used from the test thread).
pub struct ApiServer {
    /// Where the API listens.
    pub addr: SocketAddr,
    /// The controller behind it.
    pub controller: Controller,
    shutdown: CancellationToken,
    runtime: Option<tokio::runtime::Runtime>,
}

impl ApiServer {
    /// Start on 127.0.0.1:0.
    pub fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let controller = Controller::new();
        let shutdown = CancellationToken::new();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        runtime.spawn(flowline_chaos::serve_api(
            controller.clone(),
            listener,
            shutdown.clone(),
        ));
        ApiServer {
            addr,
            controller,
            shutdown,
            runtime: Some(runtime),
        }
    }

    /// Run a future on the server's runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.as_ref().unwrap().block_on(f)
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.controller.remove_all();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}
