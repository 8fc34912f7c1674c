//! Postgres outage: a `send` that cannot be committed is answered `unavailable` (never
//! acked), `/readyz` turns 503, the session stays open, and service resumes with the
//! database.

use flowline_protocol::ws::{ErrorCode, ServerEvent};
use flowline_server::Phase;
use sqlx::Connection;

use crate::util::{DEFAULT_DATABASE_URL, Ws, start};

async fn set_db_reachable(db_name: &str, on: bool) {
    let admin = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.into());
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    sqlx::query(&format!("ALTER DATABASE {db_name} ALLOW_CONNECTIONS {on}"))
        .execute(&mut conn)
        .await
        .unwrap();
    if !on {
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
            .bind(db_name)
            .execute(&mut conn)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_is_unavailable_not_acked() {
    let (node, db) = start(Phase::Postgres).await;
    let db = db.unwrap();
    let a = node.user("a").await;
    let space = node.space(&a, "g").await;
    let ch = node.channel(&a, &space, "c", None).await;
    let (mut ws, _) = Ws::hello(&node.ws, &a.token).await;
    ws.send(1, ch.id, "before").await;
    let mut got_ack = false;
    while !got_ack {
        got_ack = matches!(ws.next().await.unwrap(), ServerEvent::Ack { seq: 1, .. });
    }

    let name = db.url.rsplit('/').next().unwrap().to_owned();
    set_db_reachable(&name, false).await;
    ws.send(2, ch.id, "during").await;
    let ev = tokio::time::timeout(std::time::Duration::from_secs(15), ws.next())
        .await
        .expect("answered within the pool timeout")
        .unwrap();
    assert!(
        matches!(
            ev,
            ServerEvent::Error {
                code: ErrorCode::Unavailable,
                req_id: Some(2),
                ..
            }
        ),
        "{ev:?}"
    );
    let ready = node
        .client
        .get(format!("{}/readyz", node.http))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);

    set_db_reachable(&name, true).await;
    ws.send(3, ch.id, "after").await;
    let mut seqs = Vec::new();
    loop {
        match ws.next().await.unwrap() {
            ServerEvent::Message(m) => seqs.push(m.seq),
            ServerEvent::Ack { req_id: 3, seq, .. } => {
                assert_eq!(seq, 2, "the failed send consumed no seq");
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        seqs,
        [2],
        "the retried message is delivered with the next seq"
    );
    node.stop().await;
    drop(db);
}
