//! The happy path: sign up → log in → space → channel → two users exchange messages.

use flowline_protocol::ws::{ClientOp, ServerEvent};
use flowline_server::Phase;

use crate::util::{Node, Ws, test_config};

#[tokio::test]
async fn two_users_exchange_messages_in_order() {
    let node = Node::start(test_config(Phase::Single)).await;
    let alice = node.user("alice").await;
    let bob = node.user("bob").await;
    let space = node.space(&alice, "guild").await;
    node.join(&bob, &space).await;
    let general = node.channel(&alice, &space, "general", None).await;

    let (mut a, ready) = Ws::hello(&node.ws, &alice.token).await;
    match ready {
        ServerEvent::Ready {
            user_id, channels, ..
        } => {
            assert_eq!(user_id, alice.user.id);
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
    for ws in [&mut a, &mut b] {
        let mut seqs = Vec::new();
        let mut acks = 0;
        while seqs.len() < 10 || acks < 5 {
            match ws.next().await.unwrap() {
                ServerEvent::Message(m) => {
                    assert_eq!(m.channel, general.id);
                    seqs.push(m.seq);
                }
                ServerEvent::Ack { .. } => acks += 1,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
    }
    // History agrees.
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

    let metrics = node
        .client
        .get(format!("{}/metrics", node.http))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("flowline_messages_in_total"), "{metrics}");
    assert!(metrics.contains("flowline_deliveries_total"), "{metrics}");

    node.stop().await;
    let (code, _) = a.close_code().await;
    assert_eq!(code, 1001);
}
