//! The happy path: sign up → log in → space → channel → two users exchange messages;
//! DMs; log out; graceful shutdown.

use flowline_protocol::api::{Channel, ChannelKind, OpenDm};
use flowline_protocol::ws::{ClientOp, ServerEvent, close};
use flowline_server::Phase;

use crate::util::{Ws, start};

async fn two_users_exchange_messages_in_order(phase: Phase) {
    let (node, _db) = start(phase).await;
    let alice = node.user("alice").await;
    let bob = node.user("bob").await;
    let space = node.space(&alice, "guild").await;
    node.join(&bob, &space).await;
    let general = node.channel(&alice, &space, "general", None).await;

    let (mut a, ready) = Ws::hello(&node.ws, &alice.token).await;
    match ready {
        ServerEvent::Ready {
            user_id,
            channels,
            node_id,
            ..
        } => {
            assert_eq!(user_id, alice.user.id);
            assert_eq!(node_id, "node1");
            assert_eq!(channels.get(&general.id), Some(&0));
        }
        other => panic!("{other:?}"),
    }
    let (mut b, _) = Ws::hello(&node.ws, &bob.token).await;

    for i in 1..=5u64 {
        a.send(i, general.id, &format!("hi {i}")).await;
        b.send(100 + i, general.id, &format!("yo {i}")).await;
    }
    // Each side sees its 5 acks and all 10 messages, in the same seq order 1..=10.
    let mut orders = Vec::new();
    for ws in [&mut a, &mut b] {
        let mut got = Vec::new();
        let mut acks = 0;
        while got.len() < 10 || acks < 5 {
            match ws.next().await.unwrap() {
                ServerEvent::Message(m) => {
                    assert_eq!(m.channel, general.id);
                    got.push((m.seq, m.body, m.nonce));
                }
                ServerEvent::Ack { seq, channel, .. } => {
                    assert_eq!(channel, general.id);
                    assert!((1..=10).contains(&seq));
                    acks += 1;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            got.iter().map(|m| m.0).collect::<Vec<_>>(),
            (1..=10).collect::<Vec<_>>()
        );
        orders.push(got);
    }
    assert_eq!(
        orders[0], orders[1],
        "both see the same messages in the same order"
    );
    // Alice's own messages keep their relative order.
    let mine: Vec<&str> = orders[0]
        .iter()
        .map(|m| m.1.as_str())
        .filter(|b| b.starts_with("hi"))
        .collect();
    assert_eq!(mine, ["hi 1", "hi 2", "hi 3", "hi 4", "hi 5"]);

    // History over WebSocket and HTTP agrees.
    a.op(&ClientOp::History {
        req_id: 9,
        channel: general.id,
        before: None,
        after: Some(7),
        limit: None,
    })
    .await;
    match a.next().await.unwrap() {
        ServerEvent::History {
            req_id, messages, ..
        } => {
            assert_eq!(req_id, 9);
            assert_eq!(
                messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
                [8, 9, 10]
            );
        }
        other => panic!("{other:?}"),
    }
    let (status, body) = node
        .get_raw(
            &format!("/channels/{}/messages?limit=2", general.id),
            Some(&bob.token),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let msgs: Vec<flowline_protocol::ws::Message> = serde_json::from_str(&body).unwrap();
    assert_eq!(msgs.iter().map(|m| m.seq).collect::<Vec<_>>(), [9, 10]);
    let (status, body) = node
        .get_raw(&format!("/spaces/{}/channels", space.id), Some(&bob.token))
        .await;
    assert_eq!(status, 200);
    let chans: Vec<Channel> = serde_json::from_str(&body).unwrap();
    assert_eq!(chans[0].last_seq, 10);

    a.op(&ClientOp::Ping {
        req_id: Some(3),
        ts: Some(42),
    })
    .await;
    assert_eq!(
        a.next().await.unwrap(),
        ServerEvent::Pong {
            req_id: Some(3),
            ts: Some(42)
        }
    );

    let metrics = node.metrics().await;
    for name in [
        "flowline_messages_in_total",
        "flowline_deliveries_total",
        "flowline_connections",
    ] {
        assert!(metrics.contains(name), "{name} missing from {metrics}");
    }
    node.stop().await;
    assert_eq!(a.close_code().await.0, close::GOING_AWAY);
    assert_eq!(b.close_code().await.0, close::GOING_AWAY);
}
crate::both_phases!(two_users_exchange_messages_in_order);

async fn direct_messages(phase: Phase) {
    let (node, _db) = start(phase).await;
    let a = node.user("a").await;
    let b = node.user("b").await;
    let c = node.user("c").await;
    let dm: Channel = node
        .post("/dms", Some(&a.token), &OpenDm { user_id: b.user.id }, 201)
        .await;
    assert_eq!(dm.kind, ChannelKind::Dm);
    let again: Channel = node
        .post("/dms", Some(&b.token), &OpenDm { user_id: a.user.id }, 200)
        .await;
    assert_eq!(again.id, dm.id, "opening a DM is idempotent and symmetric");
    let _: serde_json::Value = node
        .post("/dms", Some(&a.token), &OpenDm { user_id: a.user.id }, 400)
        .await;
    let _: serde_json::Value = node
        .post("/dms", Some(&a.token), &OpenDm { user_id: 987_654 }, 404)
        .await;

    let (mut wb, ready) = Ws::hello(&node.ws, &b.token).await;
    let ServerEvent::Ready { channels, .. } = ready else {
        panic!()
    };
    assert!(channels.contains_key(&dm.id));
    let (mut wc, ready) = Ws::hello(&node.ws, &c.token).await;
    let ServerEvent::Ready { channels, .. } = ready else {
        panic!()
    };
    assert!(!channels.contains_key(&dm.id));
    let (mut wa, _) = Ws::hello(&node.ws, &a.token).await;
    wa.send(1, dm.id, "psst").await;
    let ServerEvent::Message(m) = wb.next().await.unwrap() else {
        panic!()
    };
    assert_eq!((m.body.as_str(), m.author, m.seq), ("psst", a.user.id, 1));
    // c is not part of it: cannot send, read or subscribe.
    wc.send(2, dm.id, "me too").await;
    assert!(matches!(
        wc.next().await.unwrap(),
        ServerEvent::Error {
            code: flowline_protocol::ws::ErrorCode::Forbidden,
            req_id: Some(2),
            ..
        }
    ));
    let (status, _) = node
        .get_raw(&format!("/channels/{}/messages", dm.id), Some(&c.token))
        .await;
    assert_eq!(status, 403);
    node.stop().await;
}
crate::both_phases!(direct_messages);

async fn logout_revokes_token_and_closes_sessions(phase: Phase) {
    let (node, _db) = start(phase).await;
    let a = node.user("a").await;
    let (mut ws, _) = Ws::hello(&node.ws, &a.token).await;
    let resp = node
        .client
        .post(node.url("/auth/logout"))
        .bearer_auth(&a.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(ws.close_code().await.0, close::LOGGED_OUT);
    let (status, _) = node.get_raw("/users/me", Some(&a.token)).await;
    assert_eq!(status, 401);
    node.stop().await;
}
crate::both_phases!(logout_revokes_token_and_closes_sessions);
