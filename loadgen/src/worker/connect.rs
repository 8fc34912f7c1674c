//! Opening one connection: which node a user's attempt goes to ([`target_index`]), the TCP
//! connect from a chosen source address and the WebSocket handshake (`handshake.rs`) with
//! a small read buffer.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::error::{LoadgenError, Result};
use crate::worker::handshake;

/// WebSocket read buffer per connection: tungstenite's default (128 KiB, zeroed before
/// every read) would cost ~135 KiB per connection, and its own client handshake would
/// leave a 4 KiB one (see `handshake.rs`).
const READ_BUFFER: usize = 1024;
/// Users per source address: user `i` connects from 127.0.0.(1 + i / this). One (source,
/// destination) pair has ~28k ephemeral ports; a bound source takes its port at connect
/// time (`IP_BIND_ADDRESS_NO_PORT`), so its ports are per destination too, and bound
/// sockets do not take ports away from unbound ones (the proxies' own connections).
pub const USERS_PER_SOURCE: u32 = 20_000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A user's connection.
pub(super) type Ws = WebSocketStream<TcpStream>;

/// A resolved node (or generic WebSocket service).
#[derive(Debug, Clone)]
pub(super) struct Target {
    pub(super) url: String,
    addr: SocketAddr,
    /// Extra handshake headers (generic target).
    pub(super) headers: Vec<(String, String)>,
    /// Subprotocol to ask for (generic target).
    pub(super) subprotocol: Option<String>,
}

/// Resolve a `ws://` URL once, before any user connects.
pub(super) async fn resolve(url: &str) -> Result<Target> {
    let rest = url.strip_prefix("ws://").ok_or_else(|| {
        LoadgenError::Invalid(format!("target {url:?}: only ws:// URLs are supported"))
    })?;
    let hostport = rest.split('/').next().unwrap_or_default();
    let addr = tokio::net::lookup_host(hostport)
        .await
        .map_err(|e| LoadgenError::io(format!("resolving {hostport}"), e))?
        .next()
        .ok_or_else(|| LoadgenError::Invalid(format!("target {url:?}: no address")))?;
    Ok(Target {
        url: url.to_string(),
        addr,
        headers: Vec::new(),
        subprotocol: None,
    })
}

/// Which node a user's connection attempt goes to.
///
/// The home node is a hash of the user index, not `index % nodes`: users join spaces by
/// `index % spaces`, so with `index % nodes` a whole space sits on one node whenever the
/// space and node counts share a factor, and no message of it ever crosses the cluster
/// bus. Each failed or broken attempt moves on to the next node, so the users of a killed
/// node reconnect (and resume) elsewhere.
pub fn target_index(user: u32, attempt: u32, nodes: usize) -> usize {
    if nodes <= 1 {
        return 0;
    }
    // splitmix64 finalizer: deterministic, well mixed for consecutive indices.
    let mut z = u64::from(user).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    ((z % nodes as u64) as usize + attempt as usize) % nodes
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(Some(16 << 20))
}

/// Connect `user` to `target`: TCP (from a source address of its block of users on
/// loopback) and the WebSocket handshake; the error is the kind counted.
pub(super) async fn connect(target: &Target, user: u32) -> std::result::Result<Ws, &'static str> {
    let sock = match target.addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|_| "socket")?;
    let block = user / USERS_PER_SOURCE;
    if block > 0
        && let IpAddr::V4(ip) = target.addr.ip()
        && ip.is_loopback()
    {
        let src = Ipv4Addr::new(127, 0, 0, 1 + (block % 250) as u8);
        // Without it bind(port 0) picks a port for every destination at once and marks
        // it taken for every connect() of this machine: at 100k users the unbound
        // connections (proxy → node) run out of ports.
        let _ = nix::sys::socket::setsockopt(
            &sock,
            nix::sys::socket::sockopt::IpBindAddressNoPort,
            &true,
        );
        sock.bind(SocketAddr::new(src.into(), 0))
            .map_err(|_| "bind")?;
    }
    let tcp = match timeout(CONNECT_TIMEOUT, sock.connect(target.addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(_)) => return Err("connect"),
        Err(_) => return Err("connect_timeout"),
    };
    let _ = tcp.set_nodelay(true);
    let mut req = target
        .url
        .as_str()
        .into_client_request()
        .map_err(|_| "bad_url")?;
    for (k, v) in &target.headers {
        let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) else {
            return Err("bad_header");
        };
        req.headers_mut().insert(k, v);
    }
    if let Some(p) = &target.subprotocol {
        let v = HeaderValue::from_str(p).map_err(|_| "bad_header")?;
        req.headers_mut().insert("sec-websocket-protocol", v);
    }
    match timeout(CONNECT_TIMEOUT, handshake::open(tcp, &req, ws_config())).await {
        Ok(Ok(ws)) => Ok(ws),
        Ok(Err(e)) => {
            tracing::debug!(user, "WebSocket handshake: {e}");
            Err("handshake")
        }
        Err(_) => Err("handshake_timeout"),
    }
}

#[cfg(test)]
mod tests {
    use super::target_index;

    #[test]
    fn every_space_spans_every_node() {
        // 10 spaces over 2 nodes and 15 over 3 share factors: with `index % nodes` each
        // space would sit on a single node.
        for (spaces, nodes) in [(10u32, 2usize), (15, 3), (4, 4)] {
            for space in 0..spaces {
                let mut seen = vec![false; nodes];
                for user in (space..2_000).step_by(spaces as usize) {
                    seen[target_index(user, 0, nodes)] = true;
                }
                assert!(
                    seen.iter().all(|&s| s),
                    "space {space} of {spaces} on {nodes} nodes"
                );
            }
        }
    }

    #[test]
    fn failed_attempts_move_to_the_next_node() {
        assert_eq!(target_index(7, 3, 1), 0);
        for user in 0..100 {
            let home = target_index(user, 0, 3);
            assert_eq!(target_index(user, 1, 3), (home + 1) % 3);
            assert_eq!(target_index(user, 3, 3), home);
        }
        // Users spread evenly enough over nodes.
        let mut per_node = [0u32; 3];
        for user in 0..3_000 {
            per_node[target_index(user, 0, 3)] += 1;
        }
        assert!(
            per_node.iter().all(|&n| (900..1_100).contains(&n)),
            "{per_node:?}"
        );
    }
}
