//! The data plane of one proxied connection: two directions, each a reader and a writer
//! joined by a bounded queue of chunks, with the direction's toxic chain in the writer.
//!
//! ```text
//!            upstream direction (toxics with stream = "upstream")
//!  client ──► reader ──[chunk queue]──► writer: chain (toxic 1 → toxic 2 → …) ──► upstream
//!         ◄── writer: chain (…) ◄──[chunk queue]── reader ◄──
//!            downstream direction (toxics with stream = "downstream")
//!
//!  reader:  read(64 KiB) → Chunk { data, due: arrival time } → queue (1024 chunks)
//!  writer:  chain.process(chunk) → pieces with later `due` → sleep until due → write_all
//!           toxics changed (watch) → chain.refresh; a pending wait is cut short (flush)
//!           chain.deadline() reached → close (timeout) or reset (reset_peer)
//!           queue ended (EOF) → sleep chain.eof_delay() (slow_close) → shutdown(write)
//! ```
//!
//! The reader stamps arrival times and keeps reading while the writer sleeps, so a latency
//! toxic delays each chunk from its arrival, not from when the writer got to it. Both
//! directions and both halves run inside the connection's one task (`join!`), which keeps
//! the no-toxic path free of cross-task hand-offs. Cutting the connection (proxy disabled
//! or removed, `limit_data`, `timeout`, `reset_peer`) drops both sockets; a reset first sets
//! `SO_LINGER` to zero so the kernel sends RST.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::toxic::{Chain, Chunk, ToxicSpec, Verdict};

/// Chunks queued between a reader and its writer (Toxiproxy's latency buffer size).
const QUEUE_CHUNKS: usize = 1024;
/// Read buffer size.
const READ_SIZE: usize = 64 * 1024;

/// Byte counters of one direction of a proxy (shared by its connections).
#[derive(Debug, Default)]
pub(crate) struct DirCounters {
    /// Bytes read from the source.
    pub received: AtomicU64,
    /// Bytes written to the destination.
    pub sent: AtomicU64,
}

/// What a connection needs from its proxy.
#[derive(Debug, Clone)]
pub(crate) struct LinkConfig {
    /// Toxics of the upstream direction.
    pub up_toxics: watch::Receiver<Arc<Vec<ToxicSpec>>>,
    /// Toxics of the downstream direction.
    pub down_toxics: watch::Receiver<Arc<Vec<ToxicSpec>>>,
    /// Counters of the upstream direction.
    pub up_counters: Arc<DirCounters>,
    /// Counters of the downstream direction.
    pub down_counters: Arc<DirCounters>,
}

/// How the connection is to end, decided by a direction.
#[derive(Debug, Default)]
struct ConnCtl {
    cut: CancellationToken,
    reset: AtomicBool,
}

impl ConnCtl {
    fn end(&self, verdict: Verdict) {
        if verdict == Verdict::Reset {
            self.reset.store(true, Ordering::SeqCst);
        }
        self.cut.cancel();
    }
}

/// Proxy one accepted client connection to `upstream` until either side closes or
/// `cancel` fires (proxy disabled/removed).
pub(crate) async fn run_connection(
    mut client: TcpStream,
    upstream: String,
    cfg: LinkConfig,
    cancel: CancellationToken,
) {
    let connect = tokio::select! {
        r = TcpStream::connect(&upstream) => r,
        () = cancel.cancelled() => return,
    };
    let mut server = match connect {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%upstream, error = %e, "chaos: cannot connect upstream; closing client");
            return;
        }
    };
    // Small messages must not wait for Nagle: the proxy adds no latency of its own.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let ctl = ConnCtl {
        cut: cancel.child_token(),
        reset: AtomicBool::new(false),
    };
    {
        let (cr, cw) = client.split();
        let (sr, sw) = server.split();
        let up = direction(cr, sw, cfg.up_toxics, &cfg.up_counters, &ctl);
        let down = direction(sr, cw, cfg.down_toxics, &cfg.down_counters, &ctl);
        tokio::select! {
            _ = async { tokio::join!(up, down) } => {}
            () = ctl.cut.cancelled() => {}
        }
    }
    if ctl.reset.load(Ordering::SeqCst) {
        let _ = client.set_zero_linger();
        let _ = server.set_zero_linger();
    }
}

/// One direction: a reader and a writer joined by a queue.
async fn direction<R, W>(
    src: R,
    dst: W,
    toxics: watch::Receiver<Arc<Vec<ToxicSpec>>>,
    counters: &DirCounters,
    ctl: &ConnCtl,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (tx, rx) = mpsc::channel(QUEUE_CHUNKS);
    tokio::join!(
        read_side(src, tx, counters, ctl),
        write_side(dst, rx, toxics, counters, ctl)
    );
}

async fn read_side<R: AsyncRead + Unpin>(
    mut src: R,
    tx: mpsc::Sender<Chunk>,
    counters: &DirCounters,
    ctl: &ConnCtl,
) {
    let mut buf = BytesMut::with_capacity(READ_SIZE);
    loop {
        if buf.capacity() < READ_SIZE / 4 {
            buf.reserve(READ_SIZE);
        }
        match src.read_buf(&mut buf).await {
            Ok(0) => return, // EOF: dropping `tx` tells the writer
            Ok(n) => {
                counters.received.fetch_add(n as u64, Ordering::Relaxed);
                let chunk = Chunk {
                    data: buf.split().freeze(),
                    due: Instant::now(),
                };
                if tx.send(chunk).await.is_err() {
                    return; // writer gone: the connection is ending
                }
            }
            Err(_) => {
                ctl.end(Verdict::Close);
                return;
            }
        }
    }
}

async fn write_side<W: AsyncWrite + Unpin>(
    mut dst: W,
    mut rx: mpsc::Receiver<Chunk>,
    mut toxics: watch::Receiver<Arc<Vec<ToxicSpec>>>,
    counters: &DirCounters,
    ctl: &ConnCtl,
) {
    let mut chain = Chain::default();
    chain.refresh(&toxics.borrow_and_update(), Instant::now());
    let mut out = Vec::new();
    let mut toxics_alive = true;
    loop {
        let deadline = chain.deadline();
        let msg = tokio::select! {
            biased;
            changed = toxics.changed(), if toxics_alive => {
                match changed {
                    Ok(()) => chain.refresh(&toxics.borrow_and_update(), Instant::now()),
                    Err(_) => toxics_alive = false, // proxy removed; the cut follows
                }
                continue;
            }
            () = sleep_until(deadline.map_or_else(Instant::now, |d| d.0)), if deadline.is_some() => {
                if let Some((_, verdict)) = deadline {
                    if verdict == Verdict::Close {
                        let _ = dst.shutdown().await;
                    }
                    ctl.end(verdict);
                }
                return;
            }
            msg = rx.recv() => msg,
        };
        let Some(chunk) = msg else {
            // End of stream from the source: maybe linger (slow_close), then half-close.
            let delay = chain.eof_delay();
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let _ = dst.shutdown().await;
            return;
        };
        if chain.is_idle() {
            let n = chunk.data.len() as u64;
            if dst.write_all(&chunk.data).await.is_err() {
                ctl.end(Verdict::Close);
                return;
            }
            counters.sent.fetch_add(n, Ordering::Relaxed);
            continue;
        }
        let verdict = chain.process(chunk, Instant::now(), &mut out);
        let mut flush = false;
        for piece in out.drain(..) {
            if !flush && piece.due > Instant::now() {
                tokio::select! {
                    () = sleep_until(piece.due) => {}
                    // Toxics changed while waiting (e.g. healed): deliver what is held now.
                    _ = toxics.changed(), if toxics_alive => flush = true,
                }
            }
            if dst.write_all(&piece.data).await.is_err() {
                ctl.end(Verdict::Close);
                return;
            }
            counters
                .sent
                .fetch_add(piece.data.len() as u64, Ordering::Relaxed);
        }
        if flush {
            // Mark the change as unseen again so the loop refreshes the chain.
            toxics.mark_changed();
        }
        match verdict {
            Verdict::Pass => {}
            Verdict::Close => {
                let _ = dst.shutdown().await;
                ctl.end(Verdict::Close);
                return;
            }
            Verdict::Reset => {
                ctl.end(Verdict::Reset);
                return;
            }
        }
    }
}
