//! A late append loses nothing: node1's Postgres replies reach it 2.5 s late (a relay
//! delays them), so node1 publishes seq 1 on the bus long after node2 committed and
//! published seq 2. node2 and node3 hold seq 2 behind the gap; once the gap is overdue
//! they read seq 1 from Postgres (nothing was lost on the bus: it is only late), and
//! node1's envelope, when it finally comes, is a duplicate. Before this, `pubsub` skipped
//! the gap after 1 s and seq 1 was lost for node2's and node3's members without any fault.
//!
//! The order of the two commits is forced with a lock: the test holds the channel's row
//! lock, lets node1's append queue on it, then node2's, then releases it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use flowline_server::Phase;
use sqlx::Connection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cluster::{Cluster, assert_no_more, population, read_n};
use crate::util::{DEFAULT_DATABASE_URL, Ws};

/// How late node1's Postgres replies arrive (well over `pubsub`'s 1 s gap wait).
const REPLY_DELAY: Duration = Duration::from_millis(2500);

/// A TCP relay in front of Postgres whose server → client bytes are held for `delay`
/// (client → server passes at once, so a statement commits on time and only its reply
/// is late).
struct SlowReplies {
    addr: String,
    delay_ms: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl SlowReplies {
    async fn start(target: String) -> SlowReplies {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let (delay2, stop2) = (delay_ms.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let (client, _) = tokio::select! {
                    () = stop2.cancelled() => return,
                    r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
                };
                let Ok(server) = TcpStream::connect(&target).await else {
                    continue;
                };
                tokio::spawn(relay(client, server, delay2.clone(), stop2.clone()));
            }
        });
        SlowReplies {
            addr,
            delay_ms,
            stop,
        }
    }

    fn set_delay(&self, d: Duration) {
        self.delay_ms
            .store(u64::try_from(d.as_millis()).unwrap(), Ordering::Release);
    }
}

impl Drop for SlowReplies {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Copy client → server as it comes, server → client each chunk `delay` after it arrived
/// (in order).
async fn relay(
    client: TcpStream,
    server: TcpStream,
    delay_ms: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    let (mut client_rd, mut client_wr) = client.into_split();
    let (mut server_rd, mut server_wr) = server.into_split();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let up = async move {
        let _ = tokio::io::copy(&mut client_rd, &mut server_wr).await;
    };
    let read_down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match server_rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let due =
                        Instant::now() + Duration::from_millis(delay_ms.load(Ordering::Acquire));
                    if tx.send((due, buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    };
    let write_down = async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if client_wr.write_all(&bytes).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = stop.cancelled() => {}
        _ = async { tokio::join!(up, read_down, write_down) } => {}
    }
}

/// `host:port` of a Postgres URL.
fn host_port(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest)
}

/// Backends of this test's database waiting for a lock.
async fn lock_waiters(conn: &mut sqlx::PgConnection) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .fetch_one(conn)
    .await
    .unwrap()
}

async fn until_lock_waiters(conn: &mut sqlx::PgConnection, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while lock_waiters(conn).await < n {
        assert!(
            Instant::now() < deadline,
            "{n} appends never queued on the lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn late_append_is_not_lost(phase: Phase) {
    let admin = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.into());
    let target = host_port(&admin).to_owned();
    let slow = SlowReplies::start(target.clone()).await;
    let slow_addr = slow.addr.clone();
    let cluster = Cluster::start_with(phase, 3, |c| {
        if c.node_id == "node1" {
            c.database_url = c
                .database_url
                .as_ref()
                .map(|u| u.replacen(&target, &slow_addr, 1));
        }
    })
    .await;
    let (users, ch) = population(cluster.node(0), &["a", "b", "c"]).await;
    let mut ws = Vec::new();
    for (i, u) in users.iter().enumerate() {
        ws.push(Ws::hello(&cluster.node(i).ws, &u.token).await.0);
    }

    // Hold the channel row, queue node1's append on it, then node2's.
    let mut holder = sqlx::PgConnection::connect(&cluster.db.url).await.unwrap();
    let mut watcher = sqlx::PgConnection::connect(&cluster.db.url).await.unwrap();
    let mut lock = holder.begin().await.unwrap();
    sqlx::query("SELECT id FROM channels WHERE id = $1 FOR UPDATE")
        .bind(ch)
        .execute(&mut *lock)
        .await
        .unwrap();
    slow.set_delay(REPLY_DELAY);
    ws[0].send(1, ch, "committed first, acked late").await;
    until_lock_waiters(&mut watcher, 1).await;
    ws[1].send(2, ch, "committed second, published first").await;
    until_lock_waiters(&mut watcher, 2).await;
    lock.rollback().await.unwrap();

    for (i, w) in ws.iter_mut().enumerate() {
        assert_eq!(read_n(w, 2).await, [1, 2], "member on node{}", i + 1);
    }
    slow.set_delay(Duration::ZERO);
    for (i, w) in ws.iter_mut().enumerate() {
        assert_no_more(w, Duration::from_millis(500), &format!("node{}", i + 1)).await;
    }
    for i in 0..3 {
        assert_eq!(
            cluster.metric(i, "flowline_bus_undelivered_total").await,
            0.0,
            "node{}",
            i + 1
        );
    }
    // node2 and node3 really waited for node1's seq 1 and read it from Postgres.
    for i in 1..3 {
        assert!(
            cluster.metric(i, "flowline_bus_gap_fills_total").await >= 1.0,
            "node{} filled no gap",
            i + 1
        );
    }
    cluster.stop().await;
}

crate::cluster_phases!(lossless, late_append_is_not_lost);
