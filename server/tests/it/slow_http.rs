//! A client trickling its request (slowloris) is cut off at the configured bounds
//! (`--header-read-timeout-ms`, `--body-read-timeout-ms`; docs/protocol.md) instead of
//! pinning the connection: headers at 1 byte/s lose the connection without an answer, a
//! body at 1 byte/s is refused (400 `bad_request`, nothing stored).

use std::time::{Duration, Instant};

use flowline_server::Phase;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::util::start_with;

/// The bounds the tests configure (short, so the tests take seconds).
const HEADER_BOUND: Duration = Duration::from_secs(2);
const BODY_BOUND: Duration = Duration::from_secs(3);

/// Write `bytes` one per second (cycling) until the node answers or closes; returns what
/// it sent back and when that happened (or panics after `give_up`).
async fn trickle(s: &mut TcpStream, bytes: &[u8], give_up: Duration) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut got = Vec::new();
    for b in bytes.iter().cycle() {
        if s.write_all(&[*b]).await.is_err() {
            return (got, started.elapsed());
        }
        // An answer or a closed connection (EOF, or a reset) shows on read.
        let mut buf = [0u8; 1024];
        match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (got, started.elapsed()),
            Ok(Ok(n)) => {
                got.extend_from_slice(&buf[..n]);
                let took = started.elapsed();
                // The rest of the answer, then the close.
                let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut got)).await;
                return (got, took);
            }
            Err(_) => {}
        }
        assert!(
            started.elapsed() < give_up,
            "still open after {give_up:?}, nothing answered"
        );
    }
    unreachable!("the cycle never ends")
}

fn within(took: Duration, bound: Duration) {
    assert!(
        took >= bound - Duration::from_millis(500) && took <= bound + Duration::from_secs(2),
        "cut off after {took:?}, the bound is {bound:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_headers_are_cut_off() {
    let (node, _db) = start_with(Phase::Single, |c| c.header_read_timeout = HEADER_BOUND).await;
    let addr = node.http.trim_start_matches("http://").to_owned();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let request =
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let (got, took) = trickle(&mut s, request, Duration::from_secs(15)).await;
    within(took, HEADER_BOUND);
    // Without an answer: a 408 would be written into a request that never ended.
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_body_is_refused() {
    let (node, _db) = start_with(Phase::Single, |c| c.body_read_timeout = BODY_BOUND).await;
    let addr = node.http.trim_start_matches("http://").to_owned();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let body = br#"{"username":"slowpoke","password":"hunter22"}"#;
    let head = format!(
        "POST /api/v1/auth/signup HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len() + 100
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let (got, took) = trickle(&mut s, body, Duration::from_secs(15)).await;
    within(took, BODY_BOUND);
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains(r#""code":"bad_request""#), "{text}");
    // Nothing was applied: the name is still free.
    let creds = serde_json::json!({"username": "slowpoke", "password": "hunter22"});
    let _: serde_json::Value = node.post("/auth/signup", None, &creds, 201).await;
    node.stop().await;
}

#[test]
fn defaults_are_ten_and_thirty_seconds() {
    let c = flowline_server::Config::new("n", Phase::Single);
    assert_eq!(c.header_read_timeout, Duration::from_secs(10));
    assert_eq!(c.body_read_timeout, Duration::from_secs(30));
}
