//! A hot channel across three cluster nodes under a connect storm (phases `pubsub` and
//! `queue`, one shared body: [`storm`]), with each node's
//! Postgres pool starved (1 connection, 20 ms acquire timeout) so storage calls of the
//! subscribe/resume window fail the way they did in `scenarios/hot-channel.toml`.
//!
//! Members connect while three senders (one per node) post; a member reconnects and
//! resumes from its last seq whenever the node refuses or closes it. Exact delivery:
//! every member receives every committed seq after its starting point exactly once, in
//! order — half of them start with `resume: {channel: 0}` (the whole channel replayed),
//! half with a plain `hello` (everything after the seq announced in `ready`).

use std::collections::BTreeMap;
use std::time::Duration;

use flowline_protocol::api::ChannelKind;
use flowline_protocol::ws::{ClientOp, ServerEvent};
use flowline_protocol::{ChannelId, PROTOCOL_VERSION, Seq};
use flowline_server::Phase;
use flowline_server::storage::{Accounts, Messages, PgStorage, Spaces};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::watch;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::cluster::Cluster;
use crate::util::Ws;

/// Checked members (plus three senders).
const MEMBERS: usize = 45;
/// Messages each sender posts.
const PER_SENDER: usize = 15;
/// The whole test must be over well within this.
const LIMIT: Duration = Duration::from_secs(40);

/// What one member saw.
struct Seen {
    /// Seqs of the channel's `message` events, in arrival order, over every connection.
    seqs: Vec<Seq>,
    /// The seq it expects to continue from (0, or the first `ready`'s announced seq).
    from: Seq,
    /// Connections it needed.
    connections: u32,
}

/// Connect to `url` and `hello`; `Some(ws, ready seq)` once `ready` arrived, `None` if
/// the node refused (error or close before `ready`).
async fn hello(url: &str, token: &str, ch: ChannelId, resume: Option<Seq>) -> Option<(Ws, Seq)> {
    let mut ws = Ws::connect(url).await;
    ws.op(&ClientOp::Hello {
        token: token.into(),
        v: PROTOCOL_VERSION,
        resume: resume
            .map(|s| BTreeMap::from([(ch, s)]))
            .unwrap_or_default(),
        subscribe_all: true,
        presence: true,
    })
    .await;
    loop {
        match timeout(Duration::from_secs(10), ws.inner.next())
            .await
            .ok()??
        {
            Ok(WsMessage::Text(t)) => match serde_json::from_str(&t).ok()? {
                ServerEvent::Ready { channels, .. } => {
                    return Some((ws, channels.get(&ch).copied().unwrap_or(0)));
                }
                ServerEvent::Presence(_) => {}
                ServerEvent::Error { .. } => return None,
                other => panic!("before ready: {other:?}"),
            },
            Ok(WsMessage::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// One member: connect to its node (the next one after a refusal), read the channel until
/// `target` is known and reached, reconnect with resume after any close.
async fn member(
    urls: Vec<String>,
    home: usize,
    token: String,
    ch: ChannelId,
    resume_all: bool,
    mut target: watch::Receiver<Option<Seq>>,
) -> Seen {
    let mut seen = Seen {
        seqs: Vec::new(),
        from: 0,
        connections: 0,
    };
    let mut started = false;
    let mut attempt = 0usize;
    loop {
        let url = &urls[(home + attempt) % urls.len()];
        attempt += 1;
        let resume = match seen.seqs.last() {
            Some(&s) => Some(s),
            None if resume_all || started => Some(seen.from),
            None => None,
        };
        let Some((mut ws, announced)) = hello(url, &token, ch, resume).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        seen.connections += 1;
        if !started {
            started = true;
            seen.from = if resume_all { 0 } else { announced };
        }
        loop {
            let done = target
                .borrow()
                .is_some_and(|t| seen.seqs.last().copied().unwrap_or(seen.from) >= t);
            if done {
                // Anything arriving now is a duplicate or beyond the target.
                let extra = ws.drain_for(Duration::from_millis(300)).await;
                seen.seqs.extend(extra.into_iter().filter_map(|e| match e {
                    ServerEvent::Message(m) if m.channel == ch => Some(m.seq),
                    _ => None,
                }));
                return seen;
            }
            let frame = tokio::select! {
                f = ws.inner.next() => f,
                _ = target.changed() => continue,
            };
            match frame {
                Some(Ok(WsMessage::Text(t))) => {
                    if let Ok(ServerEvent::Message(m)) = serde_json::from_str(&t)
                        && m.channel == ch
                    {
                        seen.seqs.push(m.seq);
                    }
                }
                Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            }
        }
    }
}

/// One sender on one node: post `PER_SENDER` messages, each after the previous one's
/// answer (ack or error), reconnecting when refused. Returns the acked seqs.
async fn sender(url: String, token: String, ch: ChannelId, tag: usize) -> Vec<Seq> {
    let mut acked = Vec::new();
    let mut next = 0;
    'connect: while next < PER_SENDER {
        let Some((mut ws, _)) = hello(&url, &token, ch, None).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        while next < PER_SENDER {
            let req_id = (tag * 1000 + next) as u64;
            let op = ClientOp::send_text(req_id, ch, format!("s{tag}-{next}"), None);
            if ws
                .inner
                .send(WsMessage::text(serde_json::to_string(&op).unwrap()))
                .await
                .is_err()
            {
                continue 'connect;
            }
            loop {
                match timeout(Duration::from_secs(10), ws.inner.next()).await {
                    Ok(Some(Ok(WsMessage::Text(t)))) => match serde_json::from_str(&t) {
                        Ok(ServerEvent::Ack { req_id: r, seq, .. }) if r == req_id => {
                            acked.push(seq);
                            break;
                        }
                        // Refused (storage): not committed; the next message goes on.
                        Ok(ServerEvent::Error {
                            req_id: Some(r), ..
                        }) if r == req_id => break,
                        _ => {}
                    },
                    Ok(Some(Ok(WsMessage::Close(_)) | Err(_)) | None) | Err(_) => {
                        next += 1;
                        continue 'connect;
                    }
                    Ok(Some(Ok(_))) => {}
                }
            }
            next += 1;
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    }
    acked
}

/// `n` users with tokens, one space with all of them, one public channel.
async fn population(storage: &PgStorage, n: usize) -> (Vec<String>, ChannelId) {
    let mut tokens = Vec::new();
    let mut ids = Vec::new();
    for i in 0..n {
        let user = storage.create_user(&format!("u{i}"), "x").await.unwrap();
        let (token, hash) = flowline_server::auth::new_token();
        storage.insert_token(user.id, hash).await.unwrap();
        tokens.push(token);
        ids.push(user.id);
    }
    let space = storage.create_space(ids[0], "g").await.unwrap();
    for &id in &ids[1..] {
        storage.join_space(space.id, id).await.unwrap();
    }
    let ch = storage
        .create_channel(space.id, "c", ChannelKind::Public, &[])
        .await
        .unwrap();
    (tokens, ch.id)
}

async fn storm(phase: Phase) {
    let cluster = Cluster::start_with(phase, 3, |c| {
        c.db_pool_size = 1;
        c.db_acquire_timeout = Duration::from_millis(20);
    })
    .await;
    // Set up through storage directly: the nodes' starved pools are for the storm.
    let (tokens, ch) = population(&cluster.db.storage().await, MEMBERS + 3).await;
    let urls: Vec<String> = (0..3).map(|i| cluster.node(i).ws.clone()).collect();
    let deadline = Instant::now() + LIMIT;

    let (target_tx, target_rx) = watch::channel(None);
    let mut members = Vec::new();
    for (i, u) in tokens[3..].iter().enumerate() {
        let (urls, token, rx) = (urls.clone(), u.clone(), target_rx.clone());
        // The storm: members arrive in three waves while the senders post.
        let delay = Duration::from_millis(250 * (i % 3) as u64);
        members.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            member(urls, i % 3, token, ch, i % 2 == 0, rx).await
        }));
    }
    let senders: Vec<_> = (0..3)
        .map(|i| tokio::spawn(sender(urls[i].clone(), tokens[i].clone(), ch, i)))
        .collect();
    let mut acked = Vec::new();
    for s in senders {
        acked.extend(timeout(LIMIT, s).await.expect("senders finish").unwrap());
    }
    // Every committed message counts, acked or not (a closed sender may miss its ack).
    let storage = cluster.db.storage().await;
    let total = storage
        .last_seqs(&[ch])
        .await
        .unwrap()
        .first()
        .map_or(0, |&(_, s)| s);
    assert!(
        total >= acked.len() as Seq && acked.len() >= 3,
        "acked {acked:?}, total {total}"
    );
    target_tx.send(Some(total)).unwrap();

    let mut reconnected = 0;
    for (i, m) in members.into_iter().enumerate() {
        let seen = tokio::time::timeout_at(deadline, m)
            .await
            .unwrap_or_else(|_| panic!("member {i} did not reach seq {total} in time"))
            .unwrap();
        let expected: Vec<Seq> = (seen.from + 1..=total).collect();
        assert_eq!(
            seen.seqs, expected,
            "member {i} (resume from {}, {} connections) must get every seq once, in order",
            seen.from, seen.connections
        );
        reconnected += u32::from(seen.connections > 1);
    }
    eprintln!("{phase}: {total} messages, {reconnected} of {MEMBERS} members reconnected");
    cluster.stop().await;
}

crate::cluster_phases!(storm, storm);
