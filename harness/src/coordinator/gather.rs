//! Gathering the workers: accept connections until every shard has said a hello that
//! matches the run (version, build, scenario hash, seed, shard count), or the deadline
//! passes. A mismatched hello is refused and fails the run; a connection that never says
//! hello is dropped; a second hello for a shard is refused and the first one kept.

use std::net::SocketAddr;
use std::time::Duration;

use flowline_loadgen::coordinator::message::{
    FromWorker, Hello, MAX_HANDSHAKE_LINE, PROTOCOL_VERSION, ToWorker, read_line, to_line,
    write_line,
};
use tokio::io::BufReader;
use tokio::net::TcpListener;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Expect;
use super::error::CoordinatorError;

/// How long a new connection has to say hello before it is dropped.
const HELLO_WAIT: Duration = Duration::from_secs(10);

/// A worker that said an acceptable hello.
pub(crate) struct Conn {
    pub(crate) hello: Hello,
    pub(crate) peer: SocketAddr,
    pub(crate) reader: BufReader<OwnedReadHalf>,
    pub(crate) writer: OwnedWriteHalf,
}

impl Conn {
    /// `host (addr)` or `addr`, for messages.
    pub(crate) fn who(&self) -> String {
        match &self.hello.host {
            Some(h) => format!("{h}, {}", self.peer),
            None => self.peer.to_string(),
        }
    }

    pub(crate) async fn send(&mut self, m: &ToWorker) -> std::io::Result<()> {
        write_line(&mut self.writer, &to_line(m)).await
    }
}

/// Every shard's connection, in shard order.
pub(crate) async fn gather(
    listener: &TcpListener,
    expect: &Expect,
) -> Result<Vec<Conn>, CoordinatorError> {
    let deadline = Instant::now() + expect.timeout;
    let (hello_tx, mut hello_rx) = mpsc::channel::<Conn>(expect.shards.max(1) * 2);
    let mut conns: Vec<Option<Conn>> = (0..expect.shards).map(|_| None).collect();
    let mut waiting = expect.shards;
    while waiting > 0 {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = accepted.map_err(CoordinatorError::Accept)?;
                let _ = stream.set_nodelay(true);
                let tx = hello_tx.clone();
                tokio::spawn(async move {
                    let (r, writer) = stream.into_split();
                    let mut reader = BufReader::new(r);
                    match read_hello(&mut reader).await {
                        Ok(hello) => {
                            let _ = tx.send(Conn { hello, peer, reader, writer }).await;
                        }
                        Err(why) => tracing::warn!("coordinator: {peer} dropped: {why}"),
                    }
                });
            }
            Some(mut conn) = hello_rx.recv() => {
                if let Err(reason) = check(&conn.hello, expect) {
                    let _ = conn.send(&ToWorker::Refused { reason: reason.clone() }).await;
                    return Err(CoordinatorError::Refused {
                        shard: conn.hello.shard,
                        peer: conn.who(),
                        reason,
                    });
                }
                let shard = conn.hello.shard;
                if let Some(first) = &conns[shard] {
                    let reason = format!("shard {shard} is already connected from {}", first.who());
                    tracing::warn!("coordinator: {} refused: {reason}", conn.who());
                    let _ = conn.send(&ToWorker::Refused { reason }).await;
                    continue;
                }
                waiting -= 1;
                tracing::info!(
                    "coordinator: shard {shard} said hello from {} ({waiting} to go)",
                    conn.who()
                );
                let welcome = ToWorker::Welcome { version: PROTOCOL_VERSION, waiting_for: waiting };
                if let Err(e) = conn.send(&welcome).await {
                    return Err(CoordinatorError::Lost {
                        shard,
                        peer: conn.who(),
                        reason: format!("writing the welcome: {e}"),
                    });
                }
                conns[shard] = Some(conn);
            }
            _ = tokio::time::sleep_until(deadline) => {
                let missing = conns
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.is_none())
                    .map(|(i, _)| i)
                    .collect();
                return Err(CoordinatorError::Missing {
                    missing,
                    shards: expect.shards,
                    timeout: expect.timeout,
                });
            }
        }
    }
    Ok(conns.into_iter().flatten().collect())
}

async fn read_hello(reader: &mut BufReader<OwnedReadHalf>) -> Result<Hello, String> {
    let line = tokio::time::timeout(HELLO_WAIT, read_line(reader, MAX_HANDSHAKE_LINE))
        .await
        .map_err(|_| format!("no hello within {HELLO_WAIT:?}"))?
        .map_err(|e| e.to_string())?
        .ok_or("closed before its hello")?;
    match serde_json::from_str::<FromWorker>(&line) {
        Ok(FromWorker::Hello(h)) => Ok(h),
        Ok(_) => Err("its first line is not a hello".into()),
        Err(e) => Err(format!("its first line is not a hello: {e}")),
    }
}

/// Whether a hello fits the run; why not, naming both values.
pub(crate) fn check(h: &Hello, e: &Expect) -> Result<(), String> {
    if h.version != PROTOCOL_VERSION {
        return Err(format!(
            "protocol version {} differs from the coordinator's {PROTOCOL_VERSION}",
            h.version
        ));
    }
    if h.build != e.build {
        return Err(format!(
            "build {:?} differs from the coordinator's {:?}",
            h.build, e.build
        ));
    }
    if h.shards != e.shards {
        return Err(format!(
            "{} shards, the run has {} (--shard I/{})",
            h.shards, e.shards, e.shards
        ));
    }
    if h.shard >= e.shards {
        return Err(format!("shard {} is not below {}", h.shard, e.shards));
    }
    if h.seed != e.seed {
        return Err(format!("seed {} differs from the run's {}", h.seed, e.seed));
    }
    if h.scenario_hash != e.scenario_hash {
        return Err(format!(
            "scenario hash {} differs from the run's {} (another scenario file or overrides)",
            h.scenario_hash, e.scenario_hash
        ));
    }
    Ok(())
}
