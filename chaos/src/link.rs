//! The data plane of one proxied connection: two directions, each a reader and a writer
//! joined by a bounded queue of chunks, with the direction's toxic chain in the writer.
//!
//! ```text
//!            upstream direction (toxics with stream = "upstream")
//!  client ──► reader ──[chunk queue]──► writer: chain (toxic 1 → toxic 2 → …) ──► upstream
//!         ◄── writer: chain (…) ◄──[chunk queue]── reader ◄──
//!            downstream direction (toxics with stream = "downstream")
//!
//!  reader:  readable → read(4..256 KiB) → Chunk { data, due: arrival time } → queue (1024 chunks)
//!           bulk stream, no toxic, queue empty → splice(2) socket → pipe → socket instead
//!  writer:  chain.process(chunk) → pieces with later `due` → sleep until due → write
//!           toxics changed (watch) → chain.refresh; a pending wait is cut short (flush)
//!           chain.deadline() reached → close (timeout) or reset (reset_peer)
//!           queue ended (EOF) → write what toxics hold → sleep chain.eof_delay() (slow_close)
//!           → shutdown(write)
//!  downstream chain: framer (HTTP upgrade, then RFC 6455 frames) → toxics; frame toxics
//!           get whole WebSocket messages (see `toxic::framer`)
//! ```
//!
//! The reader stamps arrival times and keeps reading while the writer sleeps, so a latency
//! toxic delays each chunk from its arrival, not from when the writer got to it. Both
//! directions run inside the connection's one task (`join!`) on the sockets' borrowed
//! halves (`TcpStream::split`), which keeps the no-toxic path free of cross-task hand-offs. For bulk transfers without
//! toxics the reader moves bytes kernel-side with `splice(2)` (no copy through user space);
//! it only does so while its direction has no toxic and nothing is queued, so bytes are
//! never reordered, and the pipe is created lazily on the first large read so the many
//! small chat connections cost no extra descriptors. Reads go through tokio's `AsyncRead`
//! on the socket's read half, which takes a short read as proof the socket is drained, so
//! a chat message costs one `read` and one `write`, not a second `read` that finds nothing
//! (a bare `try_read` keeps the socket marked readable until a read fails). A downstream
//! direction splices only once its framer knows the connection is no WebSocket (`bypass`):
//! frame boundaries must be followed from the first byte for a frame toxic added later to
//! find them. Cutting the connection (proxy disabled or removed, `limit_data`, `timeout`,
//! `reset_peer`) drops both sockets; a reset first sets `SO_LINGER` to zero so the kernel
//! sends RST.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use bytes::BytesMut;
use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
use nix::sys::socket::{Shutdown, shutdown};
use tokio::io::{AsyncReadExt, Interest};
use tokio::net::TcpStream;
use tokio::net::tcp::ReadHalf;
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::toxic::{Chain, Chunk, ToxicSpec, Verdict};

/// Chunks queued between a reader and its writer (Toxiproxy's latency buffer size).
const QUEUE_CHUNKS: usize = 1024;
/// Largest read.
const READ_SIZE: usize = 256 * 1024;
/// Smallest read (and the first one).
const MIN_READ: usize = 4 * 1024;
/// A read at least this large marks a bulk stream, worth a splice pipe.
const BULK_READ: usize = 16 * 1024;
/// Requested pipe capacity for splicing.
const PIPE_SIZE: usize = 1024 * 1024;

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
    if cancel.is_cancelled() {
        return; // accepted just as the proxy was disabled
    }
    // Biased: once cut, no byte may pass, however ready the other branches are.
    let connect = tokio::select! {
        biased;
        () = cancel.cancelled() => return,
        r = TcpStream::connect(&upstream) => r,
    };
    let mut server = match connect {
        Ok(s) => s,
        Err(e) => {
            // Debug, not warn: while a node is killed every reconnect attempt lands here.
            tracing::debug!(%upstream, error = %e, "chaos: cannot connect upstream; closing client");
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
        let (client_r, client_w) = client.split();
        let (server_r, server_w) = server.split();
        let up = direction(
            client_r,
            server_w.as_ref(),
            cfg.up_toxics,
            &cfg.up_counters,
            &ctl,
            false,
        );
        let down = direction(
            server_r,
            client_w.as_ref(),
            cfg.down_toxics,
            &cfg.down_counters,
            &ctl,
            true,
        );
        tokio::select! {
            biased;
            () = ctl.cut.cancelled() => {}
            _ = async { tokio::join!(up, down) } => {}
        }
    }
    if ctl.reset.load(Ordering::SeqCst) {
        let _ = client.set_zero_linger();
        let _ = server.set_zero_linger();
    }
}

/// One direction: a reader and a writer joined by a queue.
async fn direction(
    src: ReadHalf<'_>,
    dst: &TcpStream,
    toxics: watch::Receiver<Arc<Vec<ToxicSpec>>>,
    counters: &DirCounters,
    ctl: &ConnCtl,
    downstream: bool,
) {
    let (tx, rx) = mpsc::channel(QUEUE_CHUNKS);
    let queued = AtomicUsize::new(0);
    let drained = Notify::new();
    let chain = if downstream {
        Chain::downstream()
    } else {
        Chain::default()
    };
    let bypass = AtomicBool::new(chain.may_bypass());
    let reader = Reader {
        bypass: &bypass,
        drained: &drained,
        src,
        dst,
        toxics: toxics.clone(),
        counters,
        ctl,
        queued: &queued,
        pipe: None,
        splice_ok: true,
    };
    tokio::join!(
        reader.run(tx),
        write_side(
            dst,
            rx,
            Writer {
                chain,
                toxics,
                counters,
                ctl,
                queued: &queued,
                drained: &drained,
                bypass: &bypass,
            }
        )
    );
}

/// Read what is there into a fresh buffer of `want` bytes. The buffer is allocated only
/// once the socket is readable, so an idle connection holds no read buffer at all.
async fn read_chunk(s: &mut ReadHalf<'_>, want: usize) -> io::Result<BytesMut> {
    s.readable().await?;
    let mut buf = BytesMut::with_capacity(want);
    // Through `AsyncRead`: a read shorter than the buffer marks the socket drained.
    s.read_buf(&mut buf).await?;
    Ok(buf)
}

async fn write_all(s: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        s.writable().await?;
        match s.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn shutdown_write(s: &TcpStream) {
    let _ = shutdown(s.as_raw_fd(), Shutdown::Write);
}

/// The two ends of a splice pipe.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    fn new() -> io::Result<Self> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        // A bigger pipe moves more per syscall; the default (64 KiB) still works.
        let _ = fcntl(&write, FcntlArg::F_SETPIPE_SZ(PIPE_SIZE as i32));
        Ok(Pipe { read, write })
    }
}

struct Reader<'a> {
    src: ReadHalf<'a>,
    dst: &'a TcpStream,
    toxics: watch::Receiver<Arc<Vec<ToxicSpec>>>,
    counters: &'a DirCounters,
    ctl: &'a ConnCtl,
    /// Chunks sent to the writer and not yet written.
    queued: &'a AtomicUsize,
    /// Signalled by the writer when `queued` drops to zero.
    drained: &'a Notify,
    /// The writer's chain lets bytes bypass it (no WebSocket framing to follow).
    bypass: &'a AtomicBool,
    pipe: Option<Pipe>,
    splice_ok: bool,
}

/// What one splice round did.
enum Spliced {
    Moved,
    Eof,
    /// Not possible now (toxics appeared) or at all (unsupported): use the copy path.
    NotNow,
}

impl Reader<'_> {
    /// The stream is bulk and toxic-free: splice, once the writer has caught up.
    fn wants_splice(&self) -> bool {
        self.pipe.is_some() && self.toxics.borrow().is_empty() && self.bypass.load(Ordering::SeqCst)
    }

    async fn run(mut self, tx: mpsc::Sender<Chunk>) {
        // Read size adapts: small for chat-sized messages, growing while reads fill it.
        let mut want = MIN_READ;
        loop {
            if self.wants_splice() {
                if self.queued.load(Ordering::SeqCst) > 0 {
                    // Splicing now would overtake queued bytes.
                    self.drained.notified().await;
                    continue;
                }
                match self.splice_round().await {
                    Ok(Spliced::Moved) => continue,
                    Ok(Spliced::Eof) => return,
                    Ok(Spliced::NotNow) => {}
                    Err(_) => {
                        self.ctl.end(Verdict::Close);
                        return;
                    }
                }
            }
            match read_chunk(&mut self.src, want).await {
                Ok(buf) if buf.is_empty() => return, // EOF: dropping `tx` tells the writer
                Ok(buf) => {
                    let n = buf.len();
                    want = if n == want {
                        (want * 2).min(READ_SIZE)
                    } else {
                        (n.next_power_of_two() * 2).clamp(MIN_READ, want)
                    };
                    self.counters
                        .received
                        .fetch_add(n as u64, Ordering::Relaxed);
                    if n >= BULK_READ && self.pipe.is_none() && self.splice_ok {
                        match Pipe::new() {
                            Ok(p) => self.pipe = Some(p),
                            Err(_) => self.splice_ok = false, // e.g. out of descriptors
                        }
                    }
                    let chunk = Chunk::plain(buf.freeze(), Instant::now());
                    self.queued.fetch_add(1, Ordering::SeqCst);
                    if tx.send(chunk).await.is_err() {
                        return; // writer gone: the connection is ending
                    }
                }
                Err(_) => {
                    self.ctl.end(Verdict::Close);
                    return;
                }
            }
        }
    }

    /// Move what the source has to the destination through the pipe.
    async fn splice_round(&mut self) -> io::Result<Spliced> {
        let Some(pipe) = &self.pipe else {
            return Ok(Spliced::NotNow);
        };
        let flags = SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE;
        let src: &TcpStream = self.src.as_ref();
        let n = loop {
            src.readable().await?;
            // A toxic may have been added while waiting: its bytes go the copy path.
            if !self.toxics.borrow().is_empty() {
                return Ok(Spliced::NotNow);
            }
            let r = src.try_io(Interest::READABLE, || {
                splice(src, None, &pipe.write, None, PIPE_SIZE, flags).map_err(io::Error::from)
            });
            match r {
                Ok(0) => return Ok(Spliced::Eof),
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => {
                    self.splice_ok = false;
                    self.pipe = None;
                    return Ok(Spliced::NotNow);
                }
                Err(e) => return Err(e),
            }
        };
        self.counters
            .received
            .fetch_add(n as u64, Ordering::Relaxed);
        let mut left = n;
        while left > 0 {
            self.dst.writable().await?;
            let r = self.dst.try_io(Interest::WRITABLE, || {
                splice(&pipe.read, None, self.dst, None, left, flags).map_err(io::Error::from)
            });
            match r {
                Ok(k) => {
                    left -= k;
                    self.counters.sent.fetch_add(k as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(Spliced::Moved)
    }
}

/// What the writer of a direction works with.
struct Writer<'a> {
    chain: Chain,
    toxics: watch::Receiver<Arc<Vec<ToxicSpec>>>,
    counters: &'a DirCounters,
    ctl: &'a ConnCtl,
    queued: &'a AtomicUsize,
    drained: &'a Notify,
    bypass: &'a AtomicBool,
}

/// Write chunks that need no more toxics (released by the chain); false when the write failed.
async fn write_released(dst: &TcpStream, chunks: Vec<Chunk>, counters: &DirCounters) -> bool {
    for c in chunks {
        if write_all(dst, &c.data).await.is_err() {
            return false;
        }
        counters
            .sent
            .fetch_add(c.data.len() as u64, Ordering::Relaxed);
    }
    true
}

async fn write_side(dst: &TcpStream, mut rx: mpsc::Receiver<Chunk>, w: Writer<'_>) {
    let Writer {
        mut chain,
        mut toxics,
        counters,
        ctl,
        queued,
        drained,
        bypass,
    } = w;
    let released = chain.refresh(&toxics.borrow_and_update(), Instant::now());
    debug_assert!(released.is_empty());
    let mut out = Vec::new();
    let mut toxics_alive = true;
    loop {
        let deadline = chain.deadline();
        let msg = tokio::select! {
            biased;
            changed = toxics.changed(), if toxics_alive => {
                match changed {
                    Ok(()) => {
                        let released = chain.refresh(&toxics.borrow_and_update(), Instant::now());
                        if !write_released(dst, released, counters).await {
                            ctl.end(Verdict::Close);
                            return;
                        }
                    }
                    Err(_) => toxics_alive = false, // proxy removed; the cut follows
                }
                continue;
            }
            () = sleep_until(deadline.map_or_else(Instant::now, |d| d.0)), if deadline.is_some() => {
                if let Some((_, verdict)) = deadline {
                    if verdict == Verdict::Close {
                        shutdown_write(dst);
                    }
                    ctl.end(verdict);
                }
                return;
            }
            msg = rx.recv() => msg,
        };
        let Some(chunk) = msg else {
            // End of stream from the source: what toxics hold goes out, maybe linger
            // (slow_close), then half-close.
            let held = chain.drain_all(Instant::now());
            if !write_released(dst, held, counters).await {
                ctl.end(Verdict::Close);
                return;
            }
            let delay = chain.eof_delay();
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            shutdown_write(dst);
            return;
        };
        if chain.is_idle() {
            chain.observe(&chunk);
            bypass.store(chain.may_bypass(), Ordering::SeqCst);
            let n = chunk.data.len() as u64;
            if write_all(dst, &chunk.data).await.is_err() {
                ctl.end(Verdict::Close);
                return;
            }
            counters.sent.fetch_add(n, Ordering::Relaxed);
            if queued.fetch_sub(1, Ordering::SeqCst) == 1 {
                drained.notify_one();
            }
            continue;
        }
        let verdict = chain.process(chunk, Instant::now(), &mut out);
        bypass.store(chain.may_bypass(), Ordering::SeqCst);
        let mut flush = false;
        for piece in out.drain(..) {
            if !flush && piece.due > Instant::now() {
                tokio::select! {
                    () = sleep_until(piece.due) => {}
                    // Toxics changed while waiting (e.g. healed): deliver what is held now.
                    _ = toxics.changed(), if toxics_alive => flush = true,
                }
            }
            if write_all(dst, &piece.data).await.is_err() {
                ctl.end(Verdict::Close);
                return;
            }
            counters
                .sent
                .fetch_add(piece.data.len() as u64, Ordering::Relaxed);
        }
        if queued.fetch_sub(1, Ordering::SeqCst) == 1 {
            drained.notify_one();
        }
        if flush {
            // Mark the change as unseen again so the loop refreshes the chain.
            toxics.mark_changed();
        }
        match verdict {
            Verdict::Pass => {}
            Verdict::Close => {
                shutdown_write(dst);
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
