//! The client side of the WebSocket opening handshake (RFC 6455 §4.1), done here rather
//! than by tungstenite so a connection's read buffer is the small one asked for:
//! tungstenite's client handshake reads the answer into a 4 KiB buffer and hands that
//! buffer on as the connection's read buffer for good, 4 KiB per connection whatever
//! `read_buffer_size` says (a third of a simulated user's memory).
//!
//! ```text
//! request (tungstenite's `IntoClientRequest`: Host, Upgrade, Key, … + extra headers)
//!   ──▶ GET line and headers written ──▶ answer read in small pieces up to its blank line
//!   ──▶ 101, `Upgrade: websocket`, `Connection: upgrade`, the key's accept value, the
//!       subprotocol asked for (if any) ──▶ WebSocketStream with the bytes read past it
//! ```

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::http::Request;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

/// Longest answer head accepted (a server's 101 is a few hundred bytes).
const MAX_HEAD: usize = 16 * 1024;
/// Bytes read per call while waiting for the answer's head.
const READ_PIECE: usize = 512;

/// Why an answer does not complete the handshake (counted as `handshake`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum Refused {
    /// Not `HTTP/1.1 101`.
    #[error("answered with status {0}")]
    Status(String),
    /// A header the handshake needs is missing or wrong.
    #[error("header {0} missing or wrong")]
    Header(&'static str),
    /// Not HTTP at all, a head over [`MAX_HEAD`], or the connection went.
    #[error("no HTTP answer")]
    Malformed,
}

/// The request as HTTP/1.1 text (its `Host`, `Upgrade`, `Sec-WebSocket-Key`, … headers
/// come with it).
pub(super) fn request_text(req: &Request<()>) -> String {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut text = format!("GET {path} HTTP/1.1\r\n");
    for (name, value) in req.headers() {
        text.push_str(name.as_str());
        text.push_str(": ");
        text.push_str(&String::from_utf8_lossy(value.as_bytes()));
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    text
}

/// Check an answer's head (up to and without its blank line) against the request's key
/// and the subprotocol asked for.
pub(super) fn check_answer(
    head: &str,
    key: &str,
    subprotocol: Option<&str>,
) -> Result<(), Refused> {
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let mut parts = status.splitn(3, ' ');
    match (parts.next(), parts.next()) {
        (Some("HTTP/1.1"), Some("101")) => {}
        (Some(v), Some(code)) if v.starts_with("HTTP/") => {
            return Err(Refused::Status(code.to_string()));
        }
        _ => return Err(Refused::Malformed),
    }
    let (mut upgrade, mut connection, mut accept, mut protocol) = (false, false, None, None);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(Refused::Malformed);
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "upgrade" => upgrade = value.eq_ignore_ascii_case("websocket"),
            "connection" => {
                connection = value
                    .split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
            }
            "sec-websocket-accept" => accept = Some(value),
            "sec-websocket-protocol" => protocol = Some(value),
            _ => {}
        }
    }
    if !upgrade {
        return Err(Refused::Header("upgrade"));
    }
    if !connection {
        return Err(Refused::Header("connection"));
    }
    if accept != Some(derive_accept_key(key.as_bytes()).as_str()) {
        return Err(Refused::Header("sec-websocket-accept"));
    }
    // The server picks one of the subprotocols asked for, or none may come back.
    match (subprotocol, protocol) {
        (None, None) => Ok(()),
        (Some(asked), Some(got)) if asked.split(',').any(|p| p.trim() == got) => Ok(()),
        _ => Err(Refused::Header("sec-websocket-protocol")),
    }
}

/// Run the handshake of `req` on `tcp`: the connection, with `config` and whatever the
/// server sent after its answer.
pub(super) async fn open(
    mut tcp: TcpStream,
    req: &Request<()>,
    config: WebSocketConfig,
) -> Result<WebSocketStream<TcpStream>, Refused> {
    let key = req
        .headers()
        .get("sec-websocket-key")
        .and_then(|k| k.to_str().ok())
        .ok_or(Refused::Header("sec-websocket-key"))?;
    let subprotocol = req
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|p| p.to_str().ok());
    tcp.write_all(request_text(req).as_bytes())
        .await
        .map_err(|_| Refused::Malformed)?;
    let mut buf: Vec<u8> = Vec::with_capacity(READ_PIECE);
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() >= MAX_HEAD {
            return Err(Refused::Malformed);
        }
        let mut piece = [0u8; READ_PIECE];
        match tcp.read(&mut piece).await {
            Ok(0) | Err(_) => return Err(Refused::Malformed),
            Ok(n) => buf.extend_from_slice(&piece[..n]),
        }
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| Refused::Malformed)?;
    check_answer(head, key, subprotocol)?;
    let rest = buf.split_off(end + 4);
    drop(buf);
    Ok(if rest.is_empty() {
        WebSocketStream::from_raw_socket(tcp, Role::Client, Some(config)).await
    } else {
        // Frames the server sent right after its answer (an exact-size vector: it grows
        // to the configured buffer, not to the head's).
        WebSocketStream::from_partially_read(tcp, rest, Role::Client, Some(config)).await
    })
}

#[cfg(test)]
mod tests {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    /// RFC 6455 §1.3's example answer to `KEY`.
    const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    fn answer(extra: &str) -> String {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {ACCEPT}{extra}"
        )
    }

    #[test]
    fn handshake_answers_are_checked_like_rfc_6455_says() {
        assert_eq!(derive_accept_key(KEY.as_bytes()), ACCEPT);
        assert_eq!(check_answer(&answer(""), KEY, None), Ok(()));
        // Header names and the upgrade token in any case, `Connection` a token list.
        let loose = format!(
            "HTTP/1.1 101 OK\r\nupgrade: WebSocket\r\nconnection: keep-alive, upgrade\r\n\
             sec-websocket-accept: {ACCEPT}"
        );
        assert_eq!(check_answer(&loose, KEY, None), Ok(()));
        assert_eq!(
            check_answer("HTTP/1.1 403 Forbidden\r\nContent-Length: 0", KEY, None),
            Err(Refused::Status("403".into()))
        );
        assert_eq!(
            check_answer(&answer("").replace(ACCEPT, "bm9wZQ=="), KEY, None),
            Err(Refused::Header("sec-websocket-accept"))
        );
        assert_eq!(
            check_answer(&answer("").replace("Upgrade: websocket\r\n", ""), KEY, None),
            Err(Refused::Header("upgrade"))
        );
        assert_eq!(
            check_answer(
                &answer("").replace("Connection: Upgrade", "Connection: close"),
                KEY,
                None
            ),
            Err(Refused::Header("connection"))
        );
        assert_eq!(
            check_answer("SSH-2.0-OpenSSH", KEY, None),
            Err(Refused::Malformed)
        );
        assert_eq!(
            check_answer(&format!("{}\r\nno colon", answer("")), KEY, None),
            Err(Refused::Malformed)
        );
        // Subprotocols: the one asked for (of a list) back, nothing unasked, none missing.
        let chat = answer("\r\nSec-WebSocket-Protocol: chat");
        assert_eq!(check_answer(&chat, KEY, Some("superchat, chat")), Ok(()));
        assert_eq!(
            check_answer(&chat, KEY, None),
            Err(Refused::Header("sec-websocket-protocol"))
        );
        assert_eq!(
            check_answer(&answer(""), KEY, Some("chat")),
            Err(Refused::Header("sec-websocket-protocol"))
        );
    }

    #[test]
    fn handshake_request_carries_path_query_and_headers() {
        let mut req = "ws://127.0.0.1:9/ws?x=1".into_client_request().unwrap();
        req.headers_mut().insert("x-test", "1".parse().unwrap());
        let text = request_text(&req);
        assert!(text.starts_with("GET /ws?x=1 HTTP/1.1\r\n"), "{text}");
        for h in [
            "host: 127.0.0.1:9\r\n",
            "upgrade: websocket\r\n",
            "sec-websocket-version: 13\r\n",
            "x-test: 1\r\n",
        ] {
            assert!(text.to_ascii_lowercase().contains(h), "{h} in {text}");
        }
        assert!(text.contains("sec-websocket-key: "), "{text}");
        assert!(text.ends_with("\r\n\r\n"));
    }
}
