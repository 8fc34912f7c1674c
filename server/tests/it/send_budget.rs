//! A write's membership recheck (`membership::RECHECK`: the access a session remembered is
//! asked again after 1 s) draws from the message path's own pool: a session keeps posting
//! while the node's `other` pool is held by a stuck connect.
//!
//! The node's `other` pool has one connection. The test locks the `tokens` table, so the
//! next `hello` (its token lookup) holds that connection until the lock is released; a
//! session that said `hello` before then sends after its remembered access went stale.
//! Had the recheck asked the `other` pool, the send would wait for the acquire timeout and
//! be refused `unavailable`.

use std::time::Duration;

use flowline_protocol::ws::ServerEvent;
use flowline_server::Phase;
use sqlx::Connection;

use crate::util::{Ws, start_with};

/// `membership::RECHECK`.
const RECHECK: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_recheck_does_not_wait_for_the_other_pool() {
    let (node, db) = start_with(Phase::Postgres, |c| {
        c.db_pool_size = 1;
        c.db_acquire_timeout = Duration::from_millis(500);
    })
    .await;
    let db = db.expect("phase postgres has a database");
    let owner = node.user("owner").await;
    let space = node.space(&owner, "g").await;
    let ch = node.channel(&owner, &space, "c", None).await.id;
    let (mut ws, _) = Ws::hello(&node.ws, &owner.token).await;
    let answer = |e: &ServerEvent| matches!(e, ServerEvent::Ack { .. } | ServerEvent::Error { .. });
    // A first send warms what a send reads once per channel (its thread link).
    ws.send(1, ch, "warm").await;
    let first = ws.until("answer", answer).await;
    assert!(matches!(first, ServerEvent::Ack { .. }), "{first:?}");

    let mut lock = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut lock).await.unwrap();
    sqlx::query("LOCK TABLE tokens IN ACCESS EXCLUSIVE MODE")
        .execute(&mut lock)
        .await
        .unwrap();
    let (url, token) = (node.ws.clone(), owner.token.clone());
    let stuck = tokio::spawn(async move { Ws::hello(&url, &token).await });
    // The remembered access goes stale while the stuck hello holds the only connection.
    tokio::time::sleep(RECHECK + Duration::from_millis(300)).await;
    assert!(
        !stuck.is_finished(),
        "the second hello should wait for the lock"
    );
    ws.send(2, ch, "still posting").await;
    let second = ws.until("answer", answer).await;
    assert!(
        matches!(second, ServerEvent::Ack { req_id: 2, .. }),
        "a send behind a stuck connect: {second:?}"
    );

    sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
    let (_ws2, ready) = stuck.await.unwrap();
    assert!(matches!(ready, ServerEvent::Ready { .. }), "{ready:?}");
    node.stop().await;
}
