//! Leaving a space through one node stops the user's sessions on another node from
//! posting there as soon as the bus delivers the leave (a `membership` envelope), not only
//! when their remembered access runs out after `membership::RECHECK` (1 s).
//!
//! The session's access is remembered from its `hello`; the test leaves right after it and
//! sends until refused. A refusal less than `RECHECK` after the `hello` can only come from
//! the envelope. (When the machine is too slow for the leave to finish well inside that
//! window, the attempt proves nothing and is repeated.)

use std::time::{Duration, Instant};

use flowline_protocol::ws::{ErrorCode, ServerEvent};
use flowline_server::Phase;

use crate::cluster::Cluster;
use crate::util::Ws;

/// `membership::RECHECK`, as docs/protocol.md states it.
const RECHECK: Duration = Duration::from_secs(1);

async fn leave_travels_to_the_other_nodes(phase: Phase) {
    let cluster = Cluster::start_with(phase, 2, |_| {}).await;
    let (n1, n2) = (cluster.node(0), cluster.node(1));
    let owner = n1.user("owner").await;
    let member = n1.user("member").await;
    let space = n1.space(&owner, "g").await;
    let ch = n1.channel(&owner, &space, "c", None).await.id;
    let mut req_id = 0;
    for _attempt in 0..3 {
        n1.join(&member, &space).await;
        let hello_at = Instant::now();
        let (mut ws, _) = Ws::hello(&n2.ws, &member.token).await;
        let status = n1
            .client
            .post(n1.url(&format!("/spaces/{}/leave", space.id)))
            .bearer_auth(&member.token)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 204);
        if hello_at.elapsed() > RECHECK / 2 {
            continue; // too slow to tell the envelope from the recheck
        }
        // Send until refused; what is acked before is the bus's latency.
        let refused_at = loop {
            req_id += 1;
            ws.send(req_id, ch, "after leaving").await;
            let ev = ws
                .until("answer", |e| {
                    matches!(e, ServerEvent::Ack { .. } | ServerEvent::Error { .. })
                })
                .await;
            match ev {
                ServerEvent::Ack { .. } => {
                    assert!(
                        hello_at.elapsed() < 2 * RECHECK,
                        "still posting {:?} after the leave",
                        hello_at.elapsed()
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                ServerEvent::Error {
                    code, req_id: r, ..
                } => {
                    assert_eq!((code, r), (ErrorCode::Forbidden, Some(req_id)));
                    break hello_at.elapsed();
                }
                _ => unreachable!(),
            }
        };
        assert!(
            refused_at < RECHECK,
            "refused {refused_at:?} after hello: by the recheck, not by the leave's envelope"
        );
        // And it stays refused.
        req_id += 1;
        ws.send(req_id, ch, "again").await;
        let ev = ws
            .until("answer", |e| {
                matches!(e, ServerEvent::Ack { .. } | ServerEvent::Error { .. })
            })
            .await;
        assert!(
            matches!(
                ev,
                ServerEvent::Error {
                    code: ErrorCode::Forbidden,
                    ..
                }
            ),
            "{ev:?}"
        );
        cluster.stop().await;
        return;
    }
    panic!(
        "three attempts took longer than {:?} from hello to leave",
        RECHECK / 2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub() {
    leave_travels_to_the_other_nodes(Phase::Pubsub).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue() {
    leave_travels_to_the_other_nodes(Phase::Queue).await;
}
