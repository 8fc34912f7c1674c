//! [`Appends`]: group commit of message appends. Every append waits in one queue; each of
//! the `send` pool's connections has a worker that takes every append queued (up to
//! [`MAX_BATCH`]) and commits them with ONE statement, however many channels they go to.
//!
//! ```text
//!  append_message ─► queue ─► worker (one per send connection): take all queued
//!                                  ─► lock their channels' rows in id order
//!                                  ─► bump each channel's last_seq by its count
//!                                  ─► insert the messages, numbered in queue order
//!                                  ─► answer each append with its (seq, id)
//! ```
//!
//! Why: an append used to hold a connection for one round trip, so a node's appends per
//! second were at most `send pool size / round trip`. On a loaded machine a round trip
//! costs 40 ms or more (the 100k run: ~4 connections per node, most sends refused after
//! waiting out the acquire timeout while Postgres sat idle). Batched, the same connections
//! carry as many appends as arrive. With nothing queued an append starts at once, so an
//! idle node adds no wait; a batch whose statement fails (a bad attachment, a deadlock
//! with another node) is committed by halves on the same connection, down to the bad
//! append, which alone fails.
//!
//! Ordering and gaplessness are those of one append: the statement locks the channels'
//! rows (`FOR UPDATE`, ascending id, so two batches sharing channels cannot deadlock on
//! each other), numbers each channel's messages after its `last_seq` in the order they
//! were queued, and commits all of it at once. A queued append that waited longer than
//! the pool's acquire timeout fails as a pool timeout did (`unavailable`).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use metrics::{Counter, Histogram};
use sqlx::PgConnection;
use sqlx::postgres::PgPool;
use tokio::sync::{Mutex, mpsc, oneshot};

use flowline_protocol::{MessageId, Seq};

use super::rows::message_kind_str;
use crate::error::StorageError;
use crate::storage::contract::{NewMessage, Result};

/// Appends committed by one statement at most.
pub const MAX_BATCH: usize = 256;

/// The batch statement: `$1..$13` the messages' columns (one array element per append, in
/// queue order), `$14..$16` their attachments (append's position in the batch from 1,
/// attachment id, position in the message). Returns (position, seq, id) of every append
/// whose channel exists.
const APPEND_BATCH: &str = "
WITH input AS (
    SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::bigint[],
                         $6::text[], $7::bigint[], $8::bigint[], $9::text[], $10::bigint[],
                         $11::bigint[], $12::bigint[], $13::bigint[])
        WITH ORDINALITY AS i(channel_id, author_id, body, nonce, created_at, kind, reply_to,
                             quote_id, quote_excerpt, fwd_channel, fwd_id, fwd_author,
                             fwd_created, ord)
),
locked AS MATERIALIZED (
    SELECT id, last_seq FROM channels
    WHERE id IN (SELECT channel_id FROM input) ORDER BY id FOR UPDATE
),
counts AS MATERIALIZED (
    SELECT l.id, l.last_seq AS base, count(*) AS n, max(i.created_at) AS at
    FROM locked l JOIN input i ON i.channel_id = l.id
    GROUP BY l.id, l.last_seq
),
bumped AS (
    UPDATE channels c SET last_seq = k.base + k.n, last_message_at = k.at
    FROM counts k WHERE c.id = k.id
    RETURNING c.id
),
numbered AS MATERIALIZED (
    SELECT i.*, k.base + row_number() OVER (PARTITION BY i.channel_id ORDER BY i.ord) AS seq
    FROM input i JOIN counts k ON k.id = i.channel_id
),
ins AS (
    INSERT INTO messages (channel_id, seq, author_id, body, nonce, created_at, kind, reply_to,
                          quote_id, quote_excerpt, fwd_channel, fwd_id, fwd_author, fwd_created)
    SELECT channel_id, seq, author_id, body, nonce, created_at, kind, reply_to, quote_id,
           quote_excerpt, fwd_channel, fwd_id, fwd_author, fwd_created
    FROM numbered
    RETURNING channel_id, seq, id
),
att AS (
    INSERT INTO message_attachments (message_id, attachment_id, position)
    SELECT ins.id, a.attachment_id, a.position
    FROM UNNEST($14::bigint[], $15::bigint[], $16::int[]) AS a(ord, attachment_id, position)
    JOIN numbered n ON n.ord = a.ord
    JOIN ins ON ins.channel_id = n.channel_id AND ins.seq = n.seq
)
SELECT n.ord, ins.seq, ins.id
FROM numbered n JOIN ins ON ins.channel_id = n.channel_id AND ins.seq = n.seq
";

/// One queued append.
struct Job {
    msg: NewMessage,
    queued: Instant,
    reply: oneshot::Sender<Answer>,
}

/// An append's message handed back, with its (seq, id) or why it was not stored.
type Answer = (NewMessage, Result<(Seq, MessageId)>);

impl Job {
    fn answer(self, result: Result<(Seq, MessageId)>) {
        // The appender gave up waiting (its session ended): nobody to tell.
        let _ = self.reply.send((self.msg, result));
    }
}

/// The queue of a storage's appends and its workers (see the module doc).
pub struct Appends {
    pool: PgPool,
    /// Longest wait in the queue before an append fails (the pool's acquire timeout).
    max_wait: Duration,
    /// Records each append's wait for a connection (`flowline_db_pool_wait_seconds{pool="send"}`).
    wait: Option<Histogram>,
    /// Counts the statements that committed appends (`flowline_db_append_statements_total`).
    statements: Option<Counter>,
    /// The queue, created (and the workers spawned) on the first append, so a storage can
    /// be built outside a runtime.
    queue: OnceLock<mpsc::UnboundedSender<Job>>,
}

impl Appends {
    /// Appends over `pool`, one worker per connection it may open.
    pub fn new(
        pool: PgPool,
        max_wait: Duration,
        wait: Option<Histogram>,
        statements: Option<Counter>,
    ) -> Self {
        Self {
            pool,
            max_wait,
            wait,
            statements,
            queue: OnceLock::new(),
        }
    }

    /// Append `msg` with its channel's next seq; durable when this returns. Hands `msg`
    /// back with its seq and id.
    pub async fn append(self: &Arc<Self>, msg: NewMessage) -> Result<(NewMessage, Seq, MessageId)> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            msg,
            queued: Instant::now(),
            reply,
        };
        self.queue()
            .send(job)
            .map_err(|_| StorageError::Database(sqlx::Error::PoolClosed))?;
        let (msg, result) = answer
            .await
            .map_err(|_| StorageError::Database(sqlx::Error::PoolClosed))?;
        let (seq, id) = result?;
        Ok((msg, seq, id))
    }

    fn queue(self: &Arc<Self>) -> &mpsc::UnboundedSender<Job> {
        self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            let rx = Arc::new(Mutex::new(rx));
            let workers = self.pool.options().get_max_connections().max(1);
            for _ in 0..workers {
                // The workers hold the pool and the receiver, not `self`: when the last
                // sender (this queue) is dropped with the storage, they end.
                let worker = Worker {
                    pool: self.pool.clone(),
                    max_wait: self.max_wait,
                    wait: self.wait.clone(),
                    statements: self.statements.clone(),
                    rx: rx.clone(),
                };
                tokio::spawn(worker.run());
            }
            tx
        })
    }
}

/// One worker: takes every queued append and commits them together.
struct Worker {
    pool: PgPool,
    max_wait: Duration,
    wait: Option<Histogram>,
    statements: Option<Counter>,
    rx: Arc<Mutex<mpsc::UnboundedReceiver<Job>>>,
}

impl Worker {
    async fn run(self) {
        loop {
            let jobs = {
                let mut rx = self.rx.lock().await;
                let Some(first) = rx.recv().await else {
                    return;
                };
                let mut jobs = vec![first];
                while jobs.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(job) => jobs.push(job),
                        Err(_) => break,
                    }
                }
                jobs
            };
            self.commit(jobs).await;
        }
    }

    /// Commit `jobs` (those that did not wait too long) and answer each.
    async fn commit(&self, jobs: Vec<Job>) {
        let (stale, jobs): (Vec<Job>, Vec<Job>) = jobs
            .into_iter()
            .partition(|j| j.queued.elapsed() > self.max_wait);
        for job in stale {
            job.answer(Err(StorageError::Database(sqlx::Error::PoolTimedOut)));
        }
        if jobs.is_empty() {
            return;
        }
        let conn = self.pool.acquire().await;
        if let Some(h) = &self.wait {
            for job in &jobs {
                h.record(job.queued.elapsed().as_secs_f64());
            }
        }
        let mut conn = match conn {
            Ok(c) => c,
            Err(e) => {
                let e = StorageError::Database(e);
                for job in jobs {
                    job.answer(Err(e.copy()));
                }
                return;
            }
        };
        self.commit_halving(&mut conn, jobs).await;
    }

    /// Commit `jobs` with one statement; if it fails (then nothing of it was committed),
    /// commit each half in turn the same way, down to the one append that cannot be
    /// stored: one bad append in a batch of 256 costs ~16 statements, not 256, and the
    /// others keep their queue order.
    fn commit_halving<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        mut jobs: Vec<Job>,
    ) -> BoxFuture<'a, ()> {
        async move {
            let msgs: Vec<&NewMessage> = jobs.iter().map(|j| &j.msg).collect();
            let batch = insert(&mut *conn, &msgs).await;
            match batch {
                Ok(rows) => {
                    if let Some(c) = &self.statements {
                        c.increment(1);
                    }
                    for (job, row) in jobs.into_iter().zip(rows) {
                        job.answer(row.ok_or(StorageError::NotFound("channel")));
                    }
                }
                Err(e) if jobs.len() == 1 => {
                    if let Some(job) = jobs.pop() {
                        job.answer(Err(StorageError::Database(e)));
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, appends = jobs.len(), "a batch of appends failed; committing it by halves");
                    let second = jobs.split_off(jobs.len() / 2);
                    self.commit_halving(conn, jobs).await;
                    self.commit_halving(conn, second).await;
                }
            }
        }
        .boxed()
    }
}

/// Insert `msgs` with one statement; the (seq, id) of each, in order (`None`: its channel
/// does not exist).
async fn insert(
    conn: &mut PgConnection,
    msgs: &[&NewMessage],
) -> std::result::Result<Vec<Option<(Seq, MessageId)>>, sqlx::Error> {
    let mut att_ord: Vec<i64> = Vec::new();
    let mut att_id: Vec<i64> = Vec::new();
    let mut att_pos: Vec<i32> = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        for (pos, a) in m.attachments.iter().enumerate() {
            att_ord.push(i as i64 + 1);
            att_id.push(a.id);
            att_pos.push(i32::try_from(pos + 1).unwrap_or(i32::MAX));
        }
    }
    let fwd = |f: fn(&flowline_protocol::ws::Origin) -> i64| -> Vec<Option<i64>> {
        msgs.iter()
            .map(|m| m.forwarded_from.as_ref().map(f))
            .collect()
    };
    let rows: Vec<(i64, i64, i64)> = sqlx::query_as(APPEND_BATCH)
        .bind(msgs.iter().map(|m| m.channel).collect::<Vec<_>>())
        .bind(msgs.iter().map(|m| m.author).collect::<Vec<_>>())
        .bind(msgs.iter().map(|m| m.body.as_str()).collect::<Vec<_>>())
        .bind(msgs.iter().map(|m| m.nonce.as_deref()).collect::<Vec<_>>())
        .bind(msgs.iter().map(|m| m.created_at).collect::<Vec<_>>())
        .bind(
            msgs.iter()
                .map(|m| message_kind_str(m.kind))
                .collect::<Vec<_>>(),
        )
        .bind(msgs.iter().map(|m| m.reply_to).collect::<Vec<_>>())
        .bind(
            msgs.iter()
                .map(|m| m.quote.as_ref().map(|q| q.id))
                .collect::<Vec<_>>(),
        )
        .bind(
            msgs.iter()
                .map(|m| m.quote.as_ref().map(|q| q.excerpt.as_str()))
                .collect::<Vec<_>>(),
        )
        .bind(fwd(|o| o.channel))
        .bind(fwd(|o| o.id))
        .bind(fwd(|o| o.author))
        .bind(fwd(|o| o.created_at))
        .bind(&att_ord)
        .bind(&att_id)
        .bind(&att_pos)
        .fetch_all(&mut *conn)
        .await?;
    let mut out = vec![None; msgs.len()];
    for (ord, seq, id) in rows {
        if let Some(slot) = usize::try_from(ord - 1).ok().and_then(|i| out.get_mut(i)) {
            *slot = Some((seq, id));
        }
    }
    Ok(out)
}
