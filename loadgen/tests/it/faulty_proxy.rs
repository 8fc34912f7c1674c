//! A deliberately misbehaving WebSocket proxy in front of a real node, for the anomaly
//! tests: it forwards every frame verbatim both ways except
//! * one server→client `message` frame, the `k`-th delivery (over the whole proxy) of
//!   another user's message, which it drops, duplicates, holds back past the next message
//!   of its channel (as is, or with that one turned into a reply to it), drops it and
//!   edits it later, or gives a wrong message id ([`Fault`]); or, on the `k`-th resumed
//!   connection, replays an old message or drops the first new one; or
//! * the `k`-th `send` through it ([`SendFault`]): its ack turned into an error, or its
//!   deliveries dropped everywhere, or its ack swallowed and the sender's socket cut while
//!   one delivery is dropped. Send faults are shared by every proxy of a test (deliveries
//!   go through all of them).
//!
//! It records what it did so a test knows the exact offenders.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

/// What to do to the chosen frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Never deliver it.
    Drop,
    /// Deliver it twice in a row.
    Duplicate,
    /// Deliver it right after the next `message` of its channel.
    Delay,
    /// Deliver it with another message id.
    Rewrite,
    /// Hold it back, and deliver the next message of its channel first as a reply to it.
    ReplyFirst,
    /// Drop it, and after the next message of its channel deliver an edit of it.
    EditLost,
    /// On the `k`-th resumed connection, right after `ready`, deliver again the first
    /// message the user got on its previous connection.
    ReplayOnResume,
    /// On the `k`-th resumed connection, drop the first message of a busy channel it
    /// delivers after `ready`.
    GapOnResume,
}

impl Fault {
    fn on_resume(self) -> bool {
        matches!(self, Fault::ReplayOnResume | Fault::GapOnResume)
    }
}

/// What to do to the `k`-th send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SendFault {
    /// Answer it with an `error` instead of its ack; deliver it anyway.
    Refuse,
    /// Deliver it to nobody (the sender's echo included); ack it.
    Vanish,
    /// Swallow its ack and cut the sender's socket; drop its first delivery to another user.
    Unanswered,
}

/// Send faults of a test, shared by its proxies.
#[derive(Debug, Default)]
pub struct SendFaults {
    /// Targeted sends by nonce.
    targets: HashMap<String, SendFault>,
    /// Every delivery a send fault touched: (fault, channel, seq, receiver); delivered
    /// for `Refuse`, dropped otherwise.
    pub hits: Vec<(SendFault, i64, i64, u32)>,
}

/// The frame the fault hit: (channel, seq, receiver user index), and whether a later
/// message of its channel reached the same connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub channel: i64,
    pub seq: i64,
    pub receiver: u32,
    pub followed: bool,
}

/// A running proxy (its tasks end with the test's runtime).
pub struct Proxy {
    /// `ws://127.0.0.1:port/ws`.
    pub url: String,
    /// What the fault hit, once it did.
    pub hit: Arc<Mutex<Option<Hit>>>,
}

/// Start a proxy to `upstream` (a node's `ws://…/ws`); `users` maps session tokens to
/// user indexes.
pub async fn start(upstream: String, fault: Fault, k: u64, users: HashMap<String, u32>) -> Proxy {
    start_with(upstream, Some(fault), None, k, users, Default::default()).await
}

/// A proxy with a send fault at the `k`-th send, sharing `faults` with other proxies.
pub async fn start_send(
    upstream: String,
    fault: SendFault,
    k: u64,
    users: HashMap<String, u32>,
    faults: Arc<Mutex<SendFaults>>,
) -> Proxy {
    start_with(upstream, None, Some(fault), k, users, faults).await
}

async fn start_with(
    upstream: String,
    fault: Option<Fault>,
    send_fault: Option<SendFault>,
    k: u64,
    users: HashMap<String, u32>,
    faults: Arc<Mutex<SendFaults>>,
) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hit: Arc<Mutex<Option<Hit>>> = Arc::new(Mutex::new(None));
    let counter = Arc::new(AtomicU64::new(0));
    let sends = Arc::new(AtomicU64::new(0));
    let resumes = Arc::new(AtomicU64::new(0));
    // Each user's first delivered message on its latest connection.
    type First = (i64, i64, Message);
    let firsts: Arc<Mutex<HashMap<u32, First>>> = Arc::default();
    let users = Arc::new(users);
    let h = hit.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (upstream, h, counter, users) =
                (upstream.clone(), h.clone(), counter.clone(), users.clone());
            let (sends, faults) = (sends.clone(), faults.clone());
            let faults2 = faults.clone();
            let (resumes, firsts) = (resumes.clone(), firsts.clone());
            tokio::spawn(async move {
                let Ok(down) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                let Ok((up, _)) = tokio_tungstenite::connect_async(upstream.as_str()).await else {
                    return;
                };
                let (mut up_tx, mut up_rx) = up.split();
                let (mut down_tx, mut down_rx) = down.split();
                let me: Arc<Mutex<Option<u32>>> = Arc::new(Mutex::new(None));
                let me2 = me.clone();
                // This connection's targeted send: (req_id, fault).
                let target: Arc<Mutex<Option<(u64, SendFault)>>> = Arc::new(Mutex::new(None));
                let target2 = target.clone();
                // The hello's `resume`: channel → last seq the user has.
                let resumed: Arc<Mutex<HashMap<i64, i64>>> = Arc::default();
                let resumed2 = resumed.clone();
                let to_node = async move {
                    while let Some(Ok(m)) = down_rx.next().await {
                        if let Message::Text(t) = &m
                            && let Ok(v) = serde_json::from_str::<Value>(t.as_str())
                        {
                            if v["type"] == "hello"
                                && let Some(u) = v["token"].as_str().and_then(|t| users.get(t))
                            {
                                *me2.lock().unwrap() = Some(*u);
                                if let Some(m) = v["resume"].as_object() {
                                    *resumed2.lock().unwrap() = m
                                        .iter()
                                        .filter_map(|(c, s)| Some((c.parse().ok()?, s.as_i64()?)))
                                        .collect();
                                }
                            }
                            if v["type"] == "send"
                                && let Some(f) = send_fault
                                && sends.fetch_add(1, Ordering::SeqCst) + 1 == k
                                && let (Some(nonce), Some(req)) =
                                    (v["nonce"].as_str(), v["req_id"].as_u64())
                            {
                                faults2.lock().unwrap().targets.insert(nonce.to_string(), f);
                                *target2.lock().unwrap() = Some((req, f));
                            }
                        }
                        if up_tx.send(m).await.is_err() {
                            break;
                        }
                    }
                    let _ = up_tx.close().await;
                };
                let to_client = async move {
                    // The held-back frame of `Fault::Delay`, with its channel.
                    let mut held: Option<(i64, Message)> = None;
                    let mut hit_here: Option<i64> = None;
                    let mut first_kept = false;
                    // `Fault::EditLost`: the edit to deliver after the next message.
                    let mut edit: Option<Message> = None;
                    let mut drop_next = false;
                    // Channels this connection has delivered a message of.
                    let mut seen: std::collections::HashSet<i64> = Default::default();
                    while let Some(Ok(m)) = up_rx.next().await {
                        let mut out = vec![m.clone()];
                        if let Message::Text(t) = &m
                            && let Ok(v) = serde_json::from_str::<Value>(t.as_str())
                        {
                            let receiver = *me.lock().unwrap();
                            let mine = *target.lock().unwrap();
                            if v["type"] == "ack"
                                && let Some((req, f)) = mine
                                && v["req_id"].as_u64() == Some(req)
                            {
                                match f {
                                    SendFault::Refuse => {
                                        out = vec![Message::text(
                                            serde_json::json!({"type": "error", "req_id": req,
                                                "code": "forbidden", "message": "refused by the test"})
                                            .to_string(),
                                        )];
                                    }
                                    // Cut the socket without a close frame.
                                    SendFault::Unanswered => return,
                                    SendFault::Vanish => {}
                                }
                            }
                            if v["type"] == "message"
                                && let Some(nonce) = v["nonce"].as_str()
                                && let Some(r) = receiver
                            {
                                let mut sf = faults.lock().unwrap();
                                if let Some(&f) = sf.targets.get(nonce) {
                                    let author =
                                        nonce.split(':').next().and_then(|a| a.parse::<u32>().ok());
                                    let hit = (
                                        f,
                                        v["channel"].as_i64().unwrap_or(0),
                                        v["seq"].as_i64().unwrap_or(0),
                                        r,
                                    );
                                    let touched = match f {
                                        SendFault::Refuse => true,
                                        SendFault::Vanish => {
                                            out.clear();
                                            true
                                        }
                                        SendFault::Unanswered => {
                                            let first = author != Some(r)
                                                && !sf.hits.iter().any(|h| h.0 == f);
                                            if first {
                                                out.clear();
                                            }
                                            first
                                        }
                                    };
                                    if touched {
                                        sf.hits.push(hit);
                                    }
                                }
                            }
                        }
                        if let Message::Text(t) = &m
                            && let Some(f) = fault.filter(|f| f.on_resume())
                            && !resumed.lock().unwrap().is_empty()
                            && t.as_str().contains(r#""type":"ready""#)
                            && let Some(r) = *me.lock().unwrap()
                            // The k-th resumed connection, or a later one while the
                            // fault has not hit yet.
                            && resumes.fetch_add(1, Ordering::SeqCst) + 1 >= k
                            && h.lock().unwrap().is_none()
                        {
                            // Only a message the user says it has (its resume point is at
                            // or past it): a closing user stops reading.
                            let has = resumed.lock().unwrap().clone();
                            let old = firsts
                                .lock()
                                .unwrap()
                                .get(&r)
                                .filter(|f| has.get(&f.0).is_some_and(|&s| s >= f.1))
                                .cloned();
                            match (f, old) {
                                (Fault::ReplayOnResume, Some((channel, seq, frame))) => {
                                    *h.lock().unwrap() = Some(Hit {
                                        channel,
                                        seq,
                                        receiver: r,
                                        followed: false,
                                    });
                                    out.push(frame);
                                }
                                // Nothing to replay: the next resumed connection tries.
                                (Fault::ReplayOnResume, None) => {}
                                _ => drop_next = true,
                            }
                        }
                        if let Message::Text(t) = &m
                            && let Ok(mut v) = serde_json::from_str::<Value>(t.as_str())
                            && v["type"] == "message"
                        {
                            let channel = v["channel"].as_i64().unwrap_or(0);
                            let seq = v["seq"].as_i64().unwrap_or(0);
                            let author = v["nonce"]
                                .as_str()
                                .and_then(|n| n.split(':').next())
                                .and_then(|a| a.parse::<u32>().ok());
                            let receiver = *me.lock().unwrap();
                            if hit_here == Some(channel) {
                                if let Some(x) = h.lock().unwrap().as_mut() {
                                    x.followed = true;
                                }
                                hit_here = None;
                                if fault == Some(Fault::ReplyFirst)
                                    && let Some((_, parent)) = &held
                                    && let Message::Text(pt) = parent
                                    && let Ok(pv) = serde_json::from_str::<Value>(pt.as_str())
                                {
                                    v["kind"] = Value::from("reply");
                                    v["reply_to"] = pv["id"].clone();
                                    out = vec![Message::text(v.to_string())];
                                    if let Some(x) = h.lock().unwrap().as_mut() {
                                        // The offender is the reply.
                                        x.seq = seq;
                                    }
                                }
                                if let Some((_, f)) = held.take() {
                                    out.push(f);
                                }
                                if let Some(e) = edit.take() {
                                    out.push(e);
                                }
                            }
                            if let Some(r) = receiver
                                && author.is_some_and(|a| a != r)
                                && !first_kept
                            {
                                first_kept = true;
                                firsts.lock().unwrap().insert(r, (channel, seq, m.clone()));
                            }
                            // The connection's first message of a busy channel (seq 10 or
                            // more, so that a later one comes and makes the gap visible).
                            let first_of_channel = seen.insert(channel);
                            if drop_next
                                && first_of_channel
                                && seq >= 10
                                && let Some(r) = receiver
                                && author.is_some_and(|a| a != r)
                                && h.lock().unwrap().is_none()
                            {
                                drop_next = false;
                                *h.lock().unwrap() = Some(Hit {
                                    channel,
                                    seq,
                                    receiver: r,
                                    followed: false,
                                });
                                hit_here = Some(channel);
                                out.clear();
                            }
                            if let Some(fault) = fault.filter(|f| !f.on_resume())
                                && let Some(r) = receiver
                                && author.is_some_and(|a| a != r)
                                && counter.fetch_add(1, Ordering::SeqCst) + 1 == k
                            {
                                *h.lock().unwrap() = Some(Hit {
                                    channel,
                                    seq,
                                    receiver: r,
                                    followed: false,
                                });
                                hit_here = Some(channel);
                                out = match fault {
                                    Fault::Drop => vec![],
                                    Fault::Duplicate => vec![m.clone(), m.clone()],
                                    Fault::Delay | Fault::ReplyFirst => {
                                        held = Some((channel, m.clone()));
                                        vec![]
                                    }
                                    Fault::EditLost => {
                                        edit = Some(Message::text(
                                            serde_json::json!({"type": "message_edited",
                                                "channel": channel, "id": v["id"], "seq": seq,
                                                "body": "edited", "edited_at": 1})
                                            .to_string(),
                                        ));
                                        vec![]
                                    }
                                    Fault::Rewrite => {
                                        v["id"] = Value::from(987_654_321i64);
                                        vec![Message::text(v.to_string())]
                                    }
                                    Fault::ReplayOnResume | Fault::GapOnResume => out,
                                };
                            }
                        }
                        for f in out {
                            if down_tx.send(f).await.is_err() {
                                return;
                            }
                        }
                    }
                    if let Some((_, f)) = held.take() {
                        let _ = down_tx.send(f).await;
                    }
                    let _ = down_tx.close().await;
                };
                tokio::select! {
                    _ = to_node => {}
                    _ = to_client => {}
                }
            });
        }
    });
    Proxy {
        url: format!("ws://{addr}/ws"),
        hit,
    }
}
