//! A port into one host for the harness itself: a listener on the machine's loopback
//! whose connections are opened from inside the host's namespace. The run's network has
//! no route out, so this is how the harness (provisioning, health checks) talks to a node
//! without giving the hosts a way to reach anything.
//!
//! ```text
//!  harness ──▶ 127.0.0.1:<port> ──copy──▶ socket made inside the host ──▶ <addr> on the bridge
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::network::Host;
use crate::error::{Error, Result};

/// How long a connection into the host may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A running forward; dropping it stops accepting (open connections finish).
#[derive(Debug)]
pub struct Forward {
    local: SocketAddr,
    stop: CancellationToken,
}

impl Forward {
    /// Forward `127.0.0.1:<free port>` to `target` as seen from inside `host`.
    pub async fn start(host: Host, target: SocketAddr) -> Result<Forward> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let local = listener.local_addr()?;
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            loop {
                let (mut inbound, _) = tokio::select! {
                    () = token.cancelled() => return,
                    r = listener.accept() => match r {
                        Ok(c) => c,
                        Err(_) => continue,
                    },
                };
                let host = host.clone();
                tokio::spawn(async move {
                    match connect_inside(host, target).await {
                        Ok(mut outbound) => {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                        Err(e) => tracing::debug!(error = %e, "kernel: forward to {target} failed"),
                    }
                });
            }
        });
        Ok(Forward { local, stop })
    }

    /// Where the harness connects.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A TCP connection to `target` opened from inside `host`'s namespace.
pub async fn connect_inside(host: Host, target: SocketAddr) -> Result<TcpStream> {
    let std = tokio::task::spawn_blocking(move || {
        host.enter(|| std::net::TcpStream::connect_timeout(&target, CONNECT_TIMEOUT))
    })
    .await
    .map_err(|e| Error::Network {
        reason: format!("connecting to {target} panicked: {e}"),
    })???;
    std.set_nonblocking(true)?;
    Ok(TcpStream::from_std(std)?)
}
