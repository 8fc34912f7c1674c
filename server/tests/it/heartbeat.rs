//! Heartbeat: a peer silent for 2 × heartbeat is closed (4009) at that moment, ±1 s —
//! not at the next ping tick after it.

use std::time::{Duration, Instant};

use flowline_protocol::ws::ClientOp;
use flowline_server::Phase;

use crate::util::{Ws, start_with};

/// Heartbeat timeouts counted so far by the node.
async fn timeouts(node: &crate::util::Node) -> u64 {
    node.metrics()
        .await
        .lines()
        .filter(|l| l.starts_with("flowline_heartbeat_timeouts_total"))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_is_closed_after_twice_the_heartbeat() {
    let heartbeat = Duration::from_millis(1500);
    let (node, _db) = start_with(Phase::Single, |c| c.heartbeat = heartbeat).await;
    let user = node.user("u").await;
    // The peer's last frame is a `ping` op 200 ms after `hello` (off the node's ping
    // ticks); it never reads again, so it never answers a ping.
    let (mut silent, _) = Ws::hello(&node.ws, &user.token).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    silent
        .op(&ClientOp::Ping {
            req_id: None,
            ts: None,
        })
        .await;
    let t0 = Instant::now();
    while timeouts(&node).await == 0 {
        assert!(
            t0.elapsed() < heartbeat * 4,
            "no heartbeat timeout within 4 × heartbeat"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let took = t0.elapsed();
    assert!(
        took + Duration::from_millis(100) >= heartbeat * 2
            && took <= heartbeat * 2 + Duration::from_secs(1),
        "closed after {took:?}, documented: 2 × {heartbeat:?} ± 1 s"
    );
    node.stop().await;
}
