//! Cluster phases `pubsub` and `queue`: three real nodes (each on its own runtime, so one
//! can be crashed by dropping it) sharing a fresh Postgres database and a real Redis under
//! a unique cluster id; a TCP relay between a node and Redis can be cut and healed.
//! Assertions count deliveries exactly.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use flowline_protocol::api::Session;
use flowline_protocol::ws::{ClientOp, ServerEvent};
use flowline_server::{Config, Phase};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::util::{Node, TestDb, Ws, test_config};

/// Redis used when `REDIS_URL` is unset.
const DEFAULT_REDIS: &str = "127.0.0.1:6379";

fn redis_addr() -> String {
    std::env::var("REDIS_URL")
        .ok()
        .and_then(|u| {
            u.strip_prefix("redis://")
                .map(|s| s.trim_end_matches('/').to_owned())
        })
        .unwrap_or_else(|| DEFAULT_REDIS.into())
}

/// A TCP relay in front of Redis that can be cut (every connection closed, new ones
/// refused by closing them at once) and healed.
struct Relay {
    addr: String,
    up: Arc<AtomicBool>,
    generation: Arc<parking_lot::Mutex<CancellationToken>>,
    stop: CancellationToken,
}

impl Relay {
    async fn start(target: String) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let up = Arc::new(AtomicBool::new(true));
        let generation = Arc::new(parking_lot::Mutex::new(CancellationToken::new()));
        let stop = CancellationToken::new();
        let (up2, gen2, stop2) = (up.clone(), generation.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let (mut client, _) = tokio::select! {
                    () = stop2.cancelled() => return,
                    r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
                };
                if !up2.load(Ordering::Acquire) {
                    continue; // dropped: the connection closes at once
                }
                let cut = gen2.lock().clone();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        () = cut.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    }
                });
            }
        });
        Relay {
            addr,
            up,
            generation,
            stop,
        }
    }

    fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    fn cut(&self) {
        self.up.store(false, Ordering::Release);
        let mut g = self.generation.lock();
        g.cancel();
        *g = CancellationToken::new();
    }

    fn heal(&self) {
        self.up.store(true, Ordering::Release);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.cancel();
        self.generation.lock().cancel();
    }
}

/// One node on its own thread and runtime: `stop` shuts it down gracefully, `crash`
/// drops its runtime (every task and socket gone at once, nothing cleaned up).
struct Member {
    node: Node,
    kill: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Member {
    async fn start(config: Config) -> Member {
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<()>();
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
            let _ = addr_tx.send(listener.local_addr().unwrap());
            let outcome = rt.block_on(async move {
                tokio::select! {
                    r = flowline_server::run(config, listener, token) => Some(r),
                    _ = kill_rx => None,
                }
            });
            match outcome {
                Some(r) => {
                    let _ = done_tx.send(r);
                }
                None => rt.shutdown_background(),
            }
        });
        let addr = addr_rx.await.unwrap();
        let task = tokio::spawn(async move { done_rx.await.unwrap_or(Ok(())) });
        let mut node = Node::at(addr, shutdown, task);
        node.wait_ready(Duration::from_secs(10)).await;
        Member {
            node,
            kill: Some(kill_tx),
            thread: Some(thread),
        }
    }

    /// Kill the node: drop its runtime without any shutdown.
    fn crash(&mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }

    async fn stop(mut self) {
        self.kill = None;
        self.node.shutdown.cancel();
        if let Some(t) = self.thread.take() {
            tokio::task::spawn_blocking(move || t.join().unwrap())
                .await
                .unwrap();
        }
    }

    /// Sum of a metric's samples on this node.
    async fn metric(&self, name: &str) -> f64 {
        metric(&self.node.metrics().await, name)
    }
}

/// Sum of the samples of `name` (any labels) in a Prometheus page.
fn metric(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Three nodes of one phase sharing a fresh database and a unique Redis prefix; node i
/// reaches Redis through relay i.
pub(crate) struct Cluster {
    nodes: Vec<Member>,
    relays: Vec<Relay>,
    cluster_id: String,
    pub(crate) db: TestDb,
}

impl Cluster {
    pub(crate) async fn start(phase: Phase, n: usize) -> Cluster {
        Self::start_with(phase, n, |_| {}).await
    }

    /// [`start`](Self::start) with every node's config adjusted by `adjust`.
    pub(crate) async fn start_with(
        phase: Phase,
        n: usize,
        adjust: impl Fn(&mut Config),
    ) -> Cluster {
        let db = TestDb::new().await;
        let cluster_id = format!("test-{}-{:016x}", std::process::id(), rand::random::<u64>());
        let mut relays = Vec::new();
        let mut nodes = Vec::new();
        for i in 1..=n {
            let relay = Relay::start(redis_addr()).await;
            let mut config = test_config(phase);
            config.node_id = format!("node{i}");
            config.database_url = Some(db.url.clone());
            config.redis_url = Some(relay.url());
            config.cluster_id = Some(cluster_id.clone());
            config.presence_ttl = Duration::from_millis(900);
            adjust(&mut config);
            nodes.push(Member::start(config).await);
            relays.push(relay);
        }
        Cluster {
            nodes,
            relays,
            cluster_id,
            db,
        }
    }

    pub(crate) fn node(&self, i: usize) -> &Node {
        &self.nodes[i].node
    }

    /// Sum of a metric's samples on node `i` (0-based).
    pub(crate) async fn metric(&self, i: usize, name: &str) -> f64 {
        self.nodes[i].metric(name).await
    }

    /// A Redis connection straight to the server (not through a relay).
    async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(format!("redis://{}", redis_addr()))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "Redis is not reachable at {} ({e}); start redis-server or set REDIS_URL",
                    redis_addr()
                )
            })
    }

    /// A bus handle of this cluster (not started) to ask the presence registry.
    async fn observer(&self) -> Arc<flowline_server::bus::Bus> {
        let mut config = test_config(Phase::Pubsub);
        config.node_id = "observer".into();
        config.redis_url = Some(format!("redis://{}", redis_addr()));
        config.cluster_id = Some(self.cluster_id.clone());
        let metrics = Arc::new(flowline_server::metrics::Metrics::new("observer"));
        flowline_server::bus::Bus::connect(&config, metrics)
            .await
            .unwrap()
    }

    pub(crate) async fn stop(self) {
        let mut redis = self.redis().await;
        for m in self.nodes {
            if m.thread.is_some() {
                m.stop().await;
            }
        }
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("flowline:{}:*", self.cluster_id))
            .query_async(&mut redis)
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut redis)
                .await
                .unwrap();
        }
        drop(self.relays);
        drop(self.db);
    }
}

/// Users `names`, one space owned by the first with everyone in it, and one channel.
pub(crate) async fn population(node: &Node, names: &[&str]) -> (Vec<Session>, i64) {
    let mut users = Vec::new();
    for n in names {
        users.push(node.user(n).await);
    }
    let space = node.space(&users[0], "g").await;
    for u in &users[1..] {
        node.join(u, &space).await;
    }
    let ch = node.channel(&users[0], &space, "c", None).await;
    (users, ch.id)
}

/// Read `message` events until `n` arrived (acks skipped); returns their seqs.
pub(crate) async fn read_n(ws: &mut Ws, n: usize) -> Vec<i64> {
    let mut seqs = Vec::new();
    while seqs.len() < n {
        match ws.next().await {
            Ok(ServerEvent::Message(m)) => seqs.push(m.seq),
            Ok(ServerEvent::Ack { .. }) => {}
            Ok(other) => panic!("unexpected {other:?} after {seqs:?}"),
            Err(e) => panic!("{e} after {seqs:?}"),
        }
    }
    seqs
}

/// Assert that no `message` event arrives for `quiet` (acks are skipped).
pub(crate) async fn assert_no_more(ws: &mut Ws, quiet: Duration, who: &str) {
    let deadline = tokio::time::Instant::now() + quiet;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return,
            Ok(Ok(ServerEvent::Ack { .. })) => {}
            Ok(other) => panic!("{who}: unexpected extra event {other:?}"),
        }
    }
}

/// Wait until every ack of `n` sends arrived (so the messages are committed); the seqs
/// of `message` events read meanwhile are appended to `seen`. Returns the acked seqs.
async fn acks(ws: &mut Ws, n: usize, seen: &mut Vec<i64>) -> Vec<i64> {
    let mut seqs = Vec::new();
    while seqs.len() < n {
        match ws.next().await.unwrap() {
            ServerEvent::Ack { seq, .. } => seqs.push(seq),
            ServerEvent::Message(m) => seen.push(m.seq),
            other => panic!("unexpected {other:?}"),
        }
    }
    seqs
}

/// Poll `f` until it holds (or panic after `limit`).
async fn eventually<F, Fut>(limit: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

fn hello_resume(token: &str, resume: BTreeMap<i64, i64>) -> ClientOp {
    ClientOp::Hello {
        token: token.into(),
        v: flowline_protocol::PROTOCOL_VERSION,
        resume,
        subscribe_all: true,
        presence: true,
    }
}

/// Senders on two nodes interleave into one channel; every member on every node gets
/// every seq once, in order.
async fn fanout_reaches_every_node_in_seq_order(phase: Phase) {
    let cluster = Cluster::start(phase, 3).await;
    let (users, ch) = population(cluster.node(0), &["a", "b", "c"]).await;
    let mut ws = Vec::new();
    for (i, u) in users.iter().enumerate() {
        ws.push(Ws::hello(&cluster.node(i).ws, &u.token).await.0);
    }
    // 40 from a (node1) and 40 from b (node2), interleaved without waiting for acks.
    for i in 0..40 {
        ws[0].send(i, ch, &format!("a{i}")).await;
        ws[1].send(100 + i, ch, &format!("b{i}")).await;
    }
    let expected: Vec<i64> = (1..=80).collect();
    for (i, w) in ws.iter_mut().enumerate() {
        assert_eq!(read_n(w, 80).await, expected, "member on node{}", i + 1);
    }
    for (i, w) in ws.iter_mut().enumerate() {
        assert_no_more(w, Duration::from_millis(400), &format!("node{}", i + 1)).await;
    }
    let published: Vec<f64> = futures_util::future::join_all(
        cluster
            .nodes
            .iter()
            .map(|m| m.metric("flowline_bus_published_total")),
    )
    .await;
    // Each node also published one `presence` event: its member coming online; node1
    // also the 3 `membership` envelopes of the setup (a created the space, b and c joined).
    assert_eq!(published, [44.0, 41.0, 1.0]);
    for m in &cluster.nodes {
        assert_eq!(m.metric("flowline_bus_undelivered_total").await, 0.0);
    }
    // node3 received every envelope of the other two: 80 messages, 2 presence events and
    // 3 membership changes.
    assert_eq!(
        cluster.nodes[2].metric("flowline_bus_received_total").await,
        85.0
    );
    assert!(
        cluster.nodes[2]
            .metric("flowline_bus_lag_seconds_count")
            .await
            >= 80.0
    );
    cluster.stop().await;
}

crate::cluster_phases!(fanout, fanout_reaches_every_node_in_seq_order);

/// Cut node2 from Redis, send from node1 (seqs 1-3) and node2 (seq 4), heal, send again
/// (seq 5). Returns what each member received.
async fn redis_cut(phase: Phase) -> (Cluster, Vec<Vec<i64>>) {
    let cluster = Cluster::start(phase, 3).await;
    let (users, ch) = population(cluster.node(0), &["a", "b", "c"]).await;
    let mut ws = Vec::new();
    for (i, u) in users.iter().enumerate() {
        ws.push(Ws::hello(&cluster.node(i).ws, &u.token).await.0);
    }
    let mut got = vec![Vec::new(), Vec::new(), Vec::new()];
    cluster.relays[1].cut();
    for i in 1..=3 {
        ws[0].send(i, ch, &format!("during{i}")).await;
    }
    assert_eq!(acks(&mut ws[0], 3, &mut got[0]).await, [1, 2, 3]);
    ws[1].send(4, ch, "from the cut node").await;
    assert_eq!(
        acks(&mut ws[1], 1, &mut got[1]).await,
        [4],
        "node2 keeps serving its clients"
    );
    // Long enough for node2 to notice (its pings fail) and for gaps to resolve.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.relays[1].heal();
    let node2 = &cluster.nodes[1];
    eventually(
        Duration::from_secs(8),
        "node2 reconnected (subscriber/reader, publisher)",
        || async { node2.metric("flowline_bus_reconnects_total").await >= 2.0 },
    )
    .await;
    if phase == Phase::Pubsub {
        // The publisher and the presence registry may be back before the subscriber (the
        // publisher's beacons reconnect it at once): seq 5 must not pass before it is.
        let redis = cluster.redis().await;
        let bus = format!("flowline:{}:bus", cluster.cluster_id);
        eventually(Duration::from_secs(8), "node2 subscribed again", || {
            let (mut redis, bus) = (redis.clone(), bus.clone());
            async move {
                let subs: Vec<(String, u64)> = redis::cmd("PUBSUB")
                    .arg("NUMSUB")
                    .arg(&bus)
                    .query_async(&mut redis)
                    .await
                    .unwrap();
                subs.first().is_some_and(|(_, n)| *n == 3)
            }
        })
        .await;
    }
    ws[0].send(5, ch, "after").await;
    assert_eq!(acks(&mut ws[0], 1, &mut got[0]).await, [5]);
    for (w, seqs) in ws.iter_mut().zip(&mut got) {
        while seqs.last() != Some(&5) {
            match tokio::time::timeout(Duration::from_secs(3), w.next()).await {
                Ok(Ok(ServerEvent::Message(m))) => seqs.push(m.seq),
                Ok(Ok(ServerEvent::Ack { .. })) => {}
                other => panic!("{other:?} after {seqs:?}"),
            }
        }
        assert_no_more(w, Duration::from_millis(500), "member").await;
    }
    (cluster, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_loses_what_a_cut_node_missed_and_recovers() {
    let (cluster, got) = redis_cut(Phase::Pubsub).await;
    assert_eq!(got[0], [1, 2, 3, 5], "node1 never got node2's seq 4");
    assert_eq!(got[1], [4, 5], "node2 missed 1-3 while cut, then recovered");
    assert_eq!(got[2], [1, 2, 3, 5]);
    let undelivered: Vec<f64> = futures_util::future::join_all(
        cluster
            .nodes
            .iter()
            .map(|m| m.metric("flowline_bus_undelivered_total")),
    )
    .await;
    // node2: 3 seqs missed + 1 it could not publish; node1/node3: seq 4 missed.
    assert_eq!(undelivered, [1.0, 4.0, 1.0]);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_delivers_everything_once_after_a_redis_cut() {
    let (cluster, got) = redis_cut(Phase::Queue).await;
    for (i, seqs) in got.iter().enumerate() {
        assert_eq!(seqs, &[1, 2, 3, 4, 5], "member on node{}", i + 1);
    }
    for m in &cluster.nodes {
        assert_eq!(m.metric("flowline_bus_undelivered_total").await, 0.0);
    }
    cluster.stop().await;
}

/// node2 crashes: the others keep serving, its user goes offline in the registry, and
/// a client moved to node3 resumes from its last seq with no gap and no duplicate.
async fn crashed_node_is_survived(phase: Phase) {
    let mut cluster = Cluster::start(phase, 3).await;
    let (users, ch) = population(cluster.node(0), &["a", "b", "c"]).await;
    let ids: Vec<i64> = users.iter().map(|u| u.user.id).collect();
    let mut wa = Ws::hello(&cluster.node(0).ws, &users[0].token).await.0;
    let mut wb = Ws::hello(&cluster.node(1).ws, &users[1].token).await.0;
    let mut wc = Ws::hello(&cluster.node(2).ws, &users[2].token).await.0;
    let observer = cluster.observer().await;
    eventually(Duration::from_secs(5), "all three online", || async {
        observer.online_users(&ids).await.unwrap() == ids
    })
    .await;
    assert_eq!(observer.user_nodes(ids[1]).await.unwrap(), ["node2"]);

    for i in 1..=3 {
        wa.send(i, ch, &format!("m{i}")).await;
    }
    assert_eq!(read_n(&mut wb, 3).await, [1, 2, 3]);
    cluster.nodes[1].crash();
    assert!(wb.next().await.is_err(), "node2's socket is gone");

    for i in 4..=6 {
        wa.send(i, ch, &format!("m{i}")).await;
    }
    assert_eq!(read_n(&mut wa, 6).await, [1, 2, 3, 4, 5, 6]);
    assert_eq!(read_n(&mut wc, 6).await, [1, 2, 3, 4, 5, 6]);
    eventually(
        Duration::from_secs(5),
        "b offline after node2's TTL",
        || async { observer.online_users(&ids).await.unwrap() == [ids[0], ids[2]] },
    )
    .await;

    // b moves to node3 and resumes from seq 3.
    let mut moved = Ws::connect(&cluster.node(2).ws).await;
    moved
        .op(&hello_resume(&users[1].token, [(ch, 3)].into()))
        .await;
    assert!(matches!(
        moved.next().await.unwrap(),
        ServerEvent::Ready { .. }
    ));
    assert_eq!(read_n(&mut moved, 3).await, [4, 5, 6], "replayed, no gap");
    wa.send(7, ch, "m7").await;
    assert_eq!(read_n(&mut moved, 1).await, [7], "live again");
    assert_no_more(&mut moved, Duration::from_millis(400), "moved client").await;
    assert_eq!(read_n(&mut wc, 1).await, [7]);
    eventually(
        Duration::from_secs(5),
        "b online again via node3",
        || async { observer.user_nodes(ids[1]).await.unwrap() == ["node3"] },
    )
    .await;
    cluster.stop().await;
}

crate::cluster_phases!(crash, crashed_node_is_survived);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_is_a_clear_startup_error() {
    let db = TestDb::new().await;
    let mut config = test_config(Phase::Queue);
    config.database_url = Some(db.url.clone());
    config.redis_url = Some("redis://127.0.0.1:1".into());
    config.cluster_id = Some("unreachable".into());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = flowline_server::run(config, listener, CancellationToken::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("Redis at redis://127.0.0.1:1"), "{err}");
}
