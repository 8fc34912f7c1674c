//! The worker's side of the coordinator protocol: connect (retrying while the coordinator
//! comes up), say hello, answer the clock pings, wait for `start`, then send every line
//! through [`CoordinatorOutput`], the socket's [`Output`].
//!
//! ```text
//! connect ─▶ hello ─▶ welcome | refused (error: exit 2)
//!          ◀─ ping ×k ─▶ pong ×k ─▶ start {t0, clock_offset_us} ─▶ Start
//! run: Output::send ──unbounded mpsc──▶ writer task ──▶ socket (ticks, started, done)
//!      reader task ◀── socket: stop ─▶ cancel (users close, done follows);
//!                              end of stream before done ─▶ cancel, run fails
//! finish: close the channel ─▶ writer flushes, half-closes ─▶ reader sees the end
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::coordinator::message::{
    FromWorker, Hello, MAX_HANDSHAKE_LINE, PROTOCOL_VERSION, ToWorker, read_line, to_line,
    unix_us_now, write_line,
};
use crate::error::{LoadgenError, Result};
use crate::wire::{Output, WorkerLine};

/// How long to wait for the final end of stream after `done` (the coordinator closes its
/// side once it has read everything).
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// A connection to the coordinator, before the start.
pub struct Link {
    addr: String,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

/// The coordinator's `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    /// Start instant, Unix ms on the coordinator's clock.
    pub t0: u64,
    /// This worker's clock minus the coordinator's, µs.
    pub clock_offset_us: i64,
}

impl Start {
    /// The start instant on this machine's clock (`t0 + clock_offset_us`).
    pub fn local_start(&self) -> SystemTime {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_millis(self.t0);
        let off = Duration::from_micros(self.clock_offset_us.unsigned_abs());
        if self.clock_offset_us >= 0 {
            t0 + off
        } else {
            t0.checked_sub(off).unwrap_or(t0)
        }
    }
}

impl Link {
    /// Connect to `addr` (`host:port`), retrying every 200 ms for up to `wait` (in
    /// Kubernetes a worker pod may start before the coordinator's Service answers).
    pub async fn connect(addr: &str, wait: Duration) -> Result<Link> {
        let until = Instant::now() + wait;
        loop {
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    let (r, w) = s.into_split();
                    return Ok(Link {
                        addr: addr.to_string(),
                        reader: BufReader::new(r),
                        writer: w,
                    });
                }
                Err(e) if Instant::now() >= until => {
                    return Err(coord_err(
                        addr,
                        format!("cannot connect within {wait:?}: {e}"),
                    ));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Say hello and wait (at most `wait`) for the start, answering pings meanwhile. A
    /// refusal, a stop or the connection's end is an error naming the reason.
    pub async fn handshake(&mut self, hello: &Hello, wait: Duration) -> Result<Start> {
        let addr = self.addr.clone();
        let io = |e: std::io::Error| coord_err(&addr, e.to_string());
        write_line(
            &mut self.writer,
            &to_line(&FromWorker::Hello(hello.clone())),
        )
        .await
        .map_err(io)?;
        let until = tokio::time::Instant::now() + wait;
        loop {
            let line =
                tokio::time::timeout_at(until, read_line(&mut self.reader, MAX_HANDSHAKE_LINE))
                    .await
                    .map_err(|_| {
                        coord_err(&addr, format!("no start within {wait:?} of the hello"))
                    })?
                    .map_err(io)?
                    .ok_or_else(|| {
                        coord_err(
                            &addr,
                            "the coordinator closed the connection before the start".into(),
                        )
                    })?;
            let msg = match serde_json::from_str::<ToWorker>(&line) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!("coordinator: unreadable line ignored: {e}");
                    continue;
                }
            };
            match msg {
                ToWorker::Welcome {
                    version,
                    waiting_for,
                } => {
                    if version != PROTOCOL_VERSION {
                        return Err(coord_err(
                            &addr,
                            format!(
                                "protocol version {version}, this worker speaks {PROTOCOL_VERSION}"
                            ),
                        ));
                    }
                    tracing::info!(
                        "coordinator {addr}: accepted; waiting for {waiting_for} more worker(s)"
                    );
                }
                ToWorker::Refused { reason } => {
                    return Err(coord_err(&addr, format!("refused this worker: {reason}")));
                }
                ToWorker::Ping { id, sent_us } => {
                    let pong = FromWorker::Pong {
                        id,
                        sent_us,
                        worker_us: unix_us_now(),
                    };
                    write_line(&mut self.writer, &to_line(&pong))
                        .await
                        .map_err(io)?;
                }
                ToWorker::Start {
                    t0,
                    clock_offset_us,
                } => {
                    tracing::info!(
                        "coordinator {addr}: start at {t0} (Unix ms), clock offset {clock_offset_us} µs"
                    );
                    return Ok(Start {
                        t0,
                        clock_offset_us,
                    });
                }
                ToWorker::Stop { reason } => {
                    return Err(coord_err(
                        &addr,
                        format!("the run was stopped before it started: {reason}"),
                    ));
                }
            }
        }
    }

    /// Hand the connection to two tasks: a writer fed by the returned [`Output`], and a
    /// reader that cancels `cancel` on `stop` or when the coordinator goes away.
    pub fn into_output(self, cancel: CancellationToken) -> (CoordinatorOutput, Finish) {
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let done_sent = Arc::new(AtomicBool::new(false));
        let lost = Arc::new(AtomicBool::new(false));
        let Link {
            addr,
            mut reader,
            mut writer,
        } = self;
        let writer_cancel = cancel.clone();
        // Unbounded: a worker sends one tick a second and one done line; a coordinator
        // slower than that for long is gone, and the writer's error ends the run.
        let writer_task = tokio::spawn(async move {
            while let Some(line) = rx.recv().await {
                if let Err(e) = write_line(&mut writer, &line).await {
                    writer_cancel.cancel();
                    return Err(e);
                }
            }
            writer.shutdown().await
        });
        let reader_task = {
            let (addr, done_sent, lost) = (addr.clone(), done_sent.clone(), lost.clone());
            tokio::spawn(async move {
                loop {
                    match read_line(&mut reader, MAX_HANDSHAKE_LINE).await {
                        Ok(Some(line)) => match serde_json::from_str::<ToWorker>(&line) {
                            Ok(ToWorker::Stop { reason }) => {
                                tracing::warn!("coordinator {addr}: stop: {reason}");
                                cancel.cancel();
                            }
                            Ok(_) => {}
                            Err(e) => tracing::warn!("coordinator: unreadable line: {e}"),
                        },
                        end => {
                            if !done_sent.load(Ordering::SeqCst) {
                                let why = match end {
                                    Err(e) => e.to_string(),
                                    _ => "closed".into(),
                                };
                                tracing::error!(
                                    "coordinator {addr}: connection lost mid-run ({why}); stopping"
                                );
                                lost.store(true, Ordering::SeqCst);
                                cancel.cancel();
                            }
                            return;
                        }
                    }
                }
            })
        };
        (
            CoordinatorOutput {
                addr: addr.clone(),
                tx,
                done_sent: done_sent.clone(),
            },
            Finish {
                addr,
                writer: writer_task,
                reader: reader_task,
                lost,
            },
        )
    }
}

fn coord_err(addr: &str, message: String) -> LoadgenError {
    LoadgenError::Coordinator {
        addr: addr.to_string(),
        message,
    }
}

/// The socket as the worker engine's [`Output`].
pub struct CoordinatorOutput {
    addr: String,
    tx: mpsc::UnboundedSender<String>,
    done_sent: Arc<AtomicBool>,
}

impl CoordinatorOutput {
    fn push(&self, text: String) -> Result<()> {
        self.tx
            .send(text)
            .map_err(|_| coord_err(&self.addr, "the connection is closed".into()))
    }
}

impl Output for CoordinatorOutput {
    fn send(&mut self, line: &WorkerLine) -> Result<()> {
        let text = serde_json::to_string(line).map_err(|e| LoadgenError::json("a line", e))?;
        if matches!(line, WorkerLine::Done(_)) {
            self.done_sent.store(true, Ordering::SeqCst);
        }
        self.push(text)
    }

    fn started(&mut self, at_us: u64, late: Duration) -> Result<()> {
        self.push(to_line(&FromWorker::Started {
            at_us,
            late_us: late.as_micros() as u64,
        }))
    }

    /// Protocol 2: the history goes second by second in `history` lines.
    fn streams_history(&self) -> bool {
        true
    }
}

/// The end of a worker's connection: see [`Finish::finish`].
pub struct Finish {
    addr: String,
    writer: JoinHandle<std::io::Result<()>>,
    reader: JoinHandle<()>,
    lost: Arc<AtomicBool>,
}

impl Finish {
    /// Once the run returned: flush every line, half-close, and wait for the coordinator
    /// to close its side. An error if the coordinator went away before the done line.
    /// The output must be gone (dropped when the run returned) or this waits for ever.
    pub async fn finish(self) -> Result<()> {
        let written = self.writer.await;
        let _ = tokio::time::timeout(CLOSE_WAIT, self.reader).await;
        if self.lost.load(Ordering::SeqCst) {
            return Err(coord_err(
                &self.addr,
                "the connection ended before this worker's done line".into(),
            ));
        }
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(coord_err(&self.addr, format!("sending lines: {e}"))),
            Err(e) => Err(coord_err(
                &self.addr,
                format!("the writer task failed: {e}"),
            )),
        }
    }
}
