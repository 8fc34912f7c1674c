//! One node's concurrent appends to one channel (cluster phases): the hub no longer holds
//! the channel's lock across an append there, so twelve senders on node1 commit in
//! whatever order Postgres grants the channel row, publish out of seq order at times,
//! and every member on every node still gets every seq once, in order.

use std::time::Duration;

use flowline_protocol::ws::ServerEvent;
use flowline_server::Phase;

use crate::cluster::{Cluster, assert_no_more, population, read_n};
use crate::util::Ws;

const SENDERS: usize = 12;
const PER_SENDER: u64 = 10;

async fn concurrent_appends_stay_in_order(phase: Phase) {
    let cluster = Cluster::start(phase, 3).await;
    let names: Vec<String> = (0..SENDERS)
        .map(|i| format!("s{i}"))
        .chain((1..=3).map(|i| format!("member{i}")))
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let (users, ch) = population(cluster.node(0), &names).await;
    let mut members = Vec::new();
    for (i, u) in users[SENDERS..].iter().enumerate() {
        members.push(Ws::hello(&cluster.node(i).ws, &u.token).await.0);
    }
    let mut senders = Vec::new();
    for (i, u) in users[..SENDERS].iter().enumerate() {
        let (mut ws, _) = Ws::hello(&cluster.node(0).ws, &u.token).await;
        senders.push(tokio::spawn(async move {
            for k in 0..PER_SENDER {
                ws.send(k, ch, &format!("{i}:{k}")).await;
            }
            let mut acks = 0;
            while acks < PER_SENDER {
                if let ServerEvent::Ack { .. } = ws.next().await.unwrap() {
                    acks += 1;
                }
            }
            ws
        }));
    }
    let total = (SENDERS as u64 * PER_SENDER) as usize;
    let expected: Vec<i64> = (1..=total as i64).collect();
    for (i, w) in members.iter_mut().enumerate() {
        assert_eq!(read_n(w, total).await, expected, "member on node{}", i + 1);
    }
    for s in senders {
        s.await.unwrap();
    }
    for (i, w) in members.iter_mut().enumerate() {
        assert_no_more(w, Duration::from_millis(300), &format!("node{}", i + 1)).await;
    }
    for i in 0..3 {
        assert_eq!(
            cluster.metric(i, "flowline_bus_undelivered_total").await,
            0.0,
            "node{}",
            i + 1
        );
    }
    cluster.stop().await;
}

crate::cluster_phases!(in_order, concurrent_appends_stay_in_order);
