//! Delivery guarantees: resume without gap or duplicate, slow consumers cut off while
//! others keep receiving, and 50 concurrent senders into one channel.

use std::collections::BTreeMap;
use std::time::Duration;

use flowline_protocol::ws::{ClientOp, ServerEvent, close};
use flowline_server::Phase;

use crate::util::{Node, Ws, start, test_config};

fn hello(token: &str, resume: BTreeMap<i64, i64>, subscribe_all: bool) -> ClientOp {
    ClientOp::Hello {
        token: token.into(),
        v: flowline_protocol::PROTOCOL_VERSION,
        resume,
        subscribe_all,
        presence: true,
    }
}

/// Read `message` events of `channel` until `until` seq, skipping acks.
async fn read_seqs(ws: &mut Ws, channel: i64, until: i64) -> Vec<i64> {
    let mut seqs = Vec::new();
    while seqs.last().copied().unwrap_or(0) < until {
        match ws.next().await.unwrap() {
            ServerEvent::Message(m) if m.channel == channel => seqs.push(m.seq),
            ServerEvent::Ack { .. } => {}
            other => panic!("unexpected {other:?} after seqs {seqs:?}"),
        }
    }
    seqs
}

async fn resume_replays_exactly_the_missed_messages(phase: Phase) {
    let (node, _db) = start(phase).await;
    let a = node.user("a").await;
    let b = node.user("b").await;
    let space = node.space(&a, "g").await;
    node.join(&b, &space).await;
    let ch = node.channel(&a, &space, "c", None).await;
    let other = node.channel(&a, &space, "d", None).await;

    let (mut sender, _) = Ws::hello(&node.ws, &b.token).await;
    let (mut reader, _) = Ws::hello(&node.ws, &a.token).await;
    for i in 1..=3 {
        sender.send(i, ch.id, &format!("m{i}")).await;
    }
    assert_eq!(read_seqs(&mut reader, ch.id, 3).await, [1, 2, 3]);
    drop(reader); // connection lost

    for i in 4..=7 {
        sender.send(i, ch.id, &format!("m{i}")).await;
    }
    sender.send(50, other.id, "elsewhere").await;
    // Wait until the sender saw them all (acks + its own deliveries), so they are durable.
    let mut acks = 0;
    while acks < 8 {
        if let ServerEvent::Ack { .. } = sender.next().await.unwrap() {
            acks += 1;
        }
    }

    let mut back = Ws::connect(&node.ws).await;
    back.op(&hello(&a.token, [(ch.id, 3)].into(), false)).await;
    match back.next().await.unwrap() {
        ServerEvent::Ready { channels, .. } => {
            assert_eq!(
                channels,
                BTreeMap::from([(ch.id, 7)]),
                "only the resumed channel"
            );
        }
        other => panic!("{other:?}"),
    }
    let replayed: Vec<(i64, String)> = {
        let mut v = Vec::new();
        while v.len() < 4 {
            let ServerEvent::Message(m) = back.next().await.unwrap() else {
                panic!()
            };
            v.push((m.seq, m.body));
        }
        v
    };
    assert_eq!(
        replayed,
        (4..=7).map(|i| (i, format!("m{i}"))).collect::<Vec<_>>()
    );
    // Then live, no gap, no duplicate.
    sender.send(8, ch.id, "m8").await;
    let ServerEvent::Message(m) = back.next().await.unwrap() else {
        panic!()
    };
    assert_eq!(m.seq, 8);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), back.next())
            .await
            .is_err(),
        "nothing more"
    );

    // Resume while messages keep coming: the seqs seen are exactly last+1.. with no gap
    // or duplicate across the replay/live boundary.
    drop(back);
    let sending = tokio::spawn({
        let ws_url = node.ws.clone();
        let token = b.token.clone();
        let channel = ch.id;
        async move {
            let mut s = Ws::connect(&ws_url).await;
            s.op(&hello(&token, BTreeMap::new(), false)).await;
            s.next().await.unwrap();
            for i in 0..150u64 {
                s.send(1000 + i, channel, "burst").await;
                s.next().await.unwrap(); // ack
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut again = Ws::connect(&node.ws).await;
    again.op(&hello(&a.token, [(ch.id, 5)].into(), true)).await;
    let ServerEvent::Ready { .. } = again.next().await.unwrap() else {
        panic!()
    };
    sending.await.unwrap();
    let last = 8 + 150;
    let seqs = read_seqs(&mut again, ch.id, last).await;
    assert_eq!(seqs, (6..=last).collect::<Vec<_>>());
    node.stop().await;
}
crate::both_phases!(resume_replays_exactly_the_missed_messages);

async fn fifty_concurrent_senders_gapless_same_order(phase: Phase) {
    let (node, _db) = start(phase).await;
    let owner = node.user("owner").await;
    let space = node.space(&owner, "g").await;
    let ch = node.channel(&owner, &space, "c", None).await;
    let mut users = Vec::new();
    for i in 0..50 {
        let u = node.user(&format!("s{i}")).await;
        node.join(&u, &space).await;
        users.push(u);
    }
    const PER: u64 = 10;
    let total = 50 * PER as i64;
    // Connect everyone first, so every member is subscribed before the first send.
    let mut sockets = Vec::new();
    for u in users.iter().chain([&owner]) {
        sockets.push(Ws::hello(&node.ws, &u.token).await.0);
    }
    let observer = sockets.pop().unwrap();
    let mut tasks = Vec::new();
    for (i, mut ws) in sockets.into_iter().enumerate() {
        let channel = ch.id;
        tasks.push(tokio::spawn(async move {
            for k in 0..PER {
                ws.send(k, channel, &format!("{i}:{k}")).await;
            }
            let (mut order, mut acks) = (Vec::new(), 0);
            while order.len() < total as usize || acks < PER {
                match ws.next().await.unwrap() {
                    ServerEvent::Message(m) => order.push((m.seq, m.id, m.body)),
                    ServerEvent::Ack { .. } => acks += 1,
                    other => panic!("{other:?}"),
                }
            }
            order
        }));
    }
    let mut observer = observer;
    let mut expected = Vec::new();
    while expected.len() < total as usize {
        let ServerEvent::Message(m) = observer.next().await.unwrap() else {
            panic!()
        };
        expected.push((m.seq, m.id, m.body));
    }
    assert_eq!(
        expected.iter().map(|m| m.0).collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>()
    );
    // Each sender's own messages appear in the order it sent them.
    for i in 0..50 {
        let mine: Vec<&String> = expected
            .iter()
            .map(|m| &m.2)
            .filter(|b| b.starts_with(&format!("{i}:")))
            .collect();
        let want: Vec<String> = (0..PER).map(|k| format!("{i}:{k}")).collect();
        assert_eq!(mine, want.iter().collect::<Vec<_>>());
    }
    for t in tasks {
        assert_eq!(
            t.await.unwrap(),
            expected,
            "every member sees the same order"
        );
    }
    node.stop().await;
}
crate::both_phases!(fifty_concurrent_senders_gapless_same_order);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_cut_off_while_others_keep_receiving() {
    let mut config = test_config(Phase::Single);
    config.limits.outbound_queue = 16;
    let node = Node::start(config).await;
    let a = node.user("a").await;
    let space = node.space(&a, "g").await;
    let ch = node.channel(&a, &space, "c", None).await;
    let slow_user = node.user("slow").await;
    let fast_user = node.user("fast").await;
    node.join(&slow_user, &space).await;
    node.join(&fast_user, &space).await;

    let (mut slow, _) = Ws::hello(&node.ws, &slow_user.token).await;
    let (mut fast, _) = Ws::hello(&node.ws, &fast_user.token).await;
    let mut sender = Ws::connect(&node.ws).await;
    sender.op(&hello(&a.token, BTreeMap::new(), false)).await;
    sender.next().await.unwrap();

    const N: i64 = 2500;
    let body = "x".repeat(4000);
    let fast_task = tokio::spawn(async move { read_seqs(&mut fast, ch.id, N).await });
    for i in 0..N as u64 {
        sender.send(i, ch.id, &body).await;
        assert!(matches!(
            sender.next().await.unwrap(),
            ServerEvent::Ack { .. }
        ));
    }
    // The fast reader got everything, in order.
    assert_eq!(fast_task.await.unwrap(), (1..=N).collect::<Vec<_>>());
    let metrics = node.metrics().await;
    assert!(
        metrics.lines().any(
            |l| l.starts_with("flowline_slow_consumer_disconnects_total") && l.ends_with(" 1")
        ),
        "{metrics}"
    );
    // The slow reader gets a prefix of the channel, then close 4008.
    let (code, events) = slow.close_code().await;
    assert_eq!(code, close::SLOW_CONSUMER);
    let seqs: Vec<i64> = events
        .iter()
        .filter_map(|e| match e {
            ServerEvent::Message(m) => Some(m.seq),
            _ => None,
        })
        .collect();
    assert!(seqs.len() < N as usize);
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "what it got is gapless"
    );
    node.stop().await;
}

/// Resume values outside a channel's seqs: a negative one is refused (`bad_request`), one
/// above the latest seq is clamped to it; either way live messages keep coming.
async fn resume_values_out_of_range(phase: Phase) {
    let (node, _db) = start(phase).await;
    let a = node.user("a").await;
    let space = node.space(&a, "g").await;
    let ch = node.channel(&a, &space, "c", None).await.id;
    let (mut sender, _) = Ws::hello(&node.ws, &a.token).await;
    for i in 0..3 {
        sender.send(i, ch, "old").await;
        sender
            .until("ack", |e| matches!(e, ServerEvent::Ack { .. }))
            .await;
    }

    // Far above the latest seq (3): nothing replayed, live messages delivered.
    let mut high = Ws::connect(&node.ws).await;
    high.op(&hello(&a.token, BTreeMap::from([(ch, i64::MAX)]), false))
        .await;
    let ready = high.next().await.unwrap();
    assert!(matches!(ready, ServerEvent::Ready { .. }), "{ready:?}");
    // Negative: refused with bad_request, never replayed from seq 1.
    let mut low = Ws::connect(&node.ws).await;
    low.op(&hello(&a.token, BTreeMap::from([(ch, -1)]), false))
        .await;
    let ready = low.next().await.unwrap();
    let ServerEvent::Ready { channels, .. } = ready else {
        panic!("{ready:?}")
    };
    assert!(!channels.contains_key(&ch), "not resumed: {channels:?}");
    match low.next().await.unwrap() {
        ServerEvent::Error { code, .. } => {
            assert_eq!(code, flowline_protocol::ws::ErrorCode::BadRequest)
        }
        other => panic!("expected bad_request, got {other:?}"),
    }

    sender.send(9, ch, "live").await;
    match high.next().await.unwrap() {
        ServerEvent::Message(m) => assert_eq!((m.seq, m.body.as_str()), (4, "live")),
        other => panic!("expected the live message, got {other:?}"),
    }
    let rest = low.drain_for(Duration::from_millis(300)).await;
    assert!(
        !rest.iter().any(|e| matches!(e, ServerEvent::Message(_))),
        "nothing replayed or delivered to the refused resume: {rest:?}"
    );
    node.stop().await;
}
crate::both_phases!(resume_values_out_of_range);
