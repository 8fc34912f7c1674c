//! A client trickling its request headers (slowloris) is disconnected once the header
//! read bound (10 s, docs/protocol.md) has passed, instead of pinning the connection.

use std::time::{Duration, Instant};

use flowline_server::Phase;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::util::start;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_headers_are_cut_off() {
    let (node, _db) = start(Phase::Single).await;
    let addr = node.http.trim_start_matches("http://").to_owned();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let started = Instant::now();
    let request =
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut closed = false;
    for b in request.iter().cycle() {
        if s.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        // A closed connection shows as EOF (or a reset) on read.
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
            Ok(Ok(_)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Err(_) => {}
        }
        if started.elapsed() > Duration::from_secs(20) {
            break;
        }
    }
    let took = started.elapsed();
    assert!(closed, "still open after {took:?}");
    assert!(
        took >= Duration::from_secs(9) && took <= Duration::from_secs(13),
        "closed after {took:?}, expected about 10 s"
    );
    node.stop().await;
}
