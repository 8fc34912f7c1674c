//! WebSocket protocol violations are answered with their RFC 6455 close code
//! (docs/protocol.md, close codes): 1002 for broken framing, 1007 for text that is not
//! UTF-8 (1009 for a message over the size limit: `refusals.rs`). The frames are written
//! raw over TCP (a WebSocket client library refuses to produce them).

use std::time::Duration;

use flowline_protocol::ws::close;
use flowline_server::Phase;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::util::start;

/// Open a WebSocket by hand: the upgrade request, then the 101 answer read to its end.
async fn upgrade(http: &str) -> TcpStream {
    let addr = http.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).await.unwrap();
        assert_eq!(
            n,
            1,
            "upgrade answer cut: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s
}

/// One frame: `first` is the FIN/RSV/opcode byte; masked unless `masked` is false.
fn frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut f = vec![first];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => f.push(mask_bit | n as u8),
        n => {
            f.push(mask_bit | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    if masked {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        f.extend_from_slice(payload);
    }
    f
}

/// Read the node's frames until its close frame; its code (panics on EOF without one).
async fn close_code(s: &mut TcpStream) -> u16 {
    let read = async {
        loop {
            let mut hdr = [0u8; 2];
            s.read_exact(&mut hdr)
                .await
                .expect("a close frame before EOF");
            let len = match hdr[1] & 0x7f {
                126 => {
                    let mut l = [0u8; 2];
                    s.read_exact(&mut l).await.unwrap();
                    u16::from_be_bytes(l) as usize
                }
                127 => {
                    let mut l = [0u8; 8];
                    s.read_exact(&mut l).await.unwrap();
                    u64::from_be_bytes(l) as usize
                }
                n => n as usize,
            };
            let mut payload = vec![0u8; len];
            s.read_exact(&mut payload).await.unwrap();
            if hdr[0] & 0x0f == 0x8 {
                assert!(payload.len() >= 2, "close frame without a code");
                return u16::from_be_bytes([payload[0], payload[1]]);
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("close frame within 5 s")
}

#[tokio::test]
async fn violations_close_with_rfc_codes() {
    let (node, _db) = start(Phase::Single).await;
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "stray continuation",
            frame(0x80, b"x", true),
            close::WS_PROTOCOL_VIOLATION,
        ),
        (
            "unmasked frame",
            frame(0x81, b"{}", false),
            close::WS_PROTOCOL_VIOLATION,
        ),
        (
            "reserved data opcode",
            frame(0x83, b"x", true),
            close::WS_PROTOCOL_VIOLATION,
        ),
        (
            "reserved control opcode",
            frame(0x8b, b"", true),
            close::WS_PROTOCOL_VIOLATION,
        ),
        (
            "RSV1 without an extension",
            frame(0xc1, b"{}", true),
            close::WS_PROTOCOL_VIOLATION,
        ),
        (
            "ping over 125 bytes",
            frame(0x89, &[b'p'; 200], true),
            close::WS_PROTOCOL_VIOLATION,
        ),
        (
            "fragmented ping",
            frame(0x09, b"p", true),
            close::WS_PROTOCOL_VIOLATION,
        ),
        (
            "text that is not UTF-8",
            frame(0x81, &[b'"', 0xff, 0xfe, b'"'], true),
            close::INVALID_PAYLOAD,
        ),
        (
            "text fragments that are not UTF-8",
            [
                frame(0x01, &[b'"', 0xc3], true),
                frame(0x80, &[0x28, b'"'], true),
            ]
            .concat(),
            close::INVALID_PAYLOAD,
        ),
    ];
    for (what, bytes, want) in cases {
        let mut s = upgrade(&node.http).await;
        s.write_all(&bytes).await.unwrap();
        let got = close_code(&mut s).await;
        assert_eq!(got, want, "{what}");
    }
    node.stop().await;
}
