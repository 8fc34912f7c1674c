//! Rate limits of the chat actions: per token over HTTP (429, `Retry-After`,
//! `X-RateLimit-*`) and WebSocket (`rate_limited` with `retry_after_ms`) sharing one
//! bucket, per channel across tokens; a flooding client is refused while a well-behaved
//! one in the same channel keeps its delivery latency; in a cluster the buckets and the
//! idempotency keys are shared through Redis.

use std::time::{Duration, Instant};

use flowline_protocol::actions::PostMessage;
use flowline_protocol::ws::{ClientOp, ErrorCode, Message, ServerEvent};
use flowline_server::{Bucket, Phase, RateConfig};
use reqwest::Method;

use crate::cluster::Cluster;
use crate::http_actions::{Reply, call, post_text};
use crate::util::{Node, Ws, start_with};

async fn post(node: &Node, token: &str, channel: i64, body: &str, key: Option<&str>) -> Reply {
    let headers: Vec<(&str, &str)> = key.map(|k| ("Idempotency-Key", k)).into_iter().collect();
    call(
        node,
        Method::POST,
        &format!("/channels/{channel}/messages"),
        token,
        Some(&PostMessage {
            body: body.into(),
            ..Default::default()
        }),
        &headers,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_over_its_bucket_gets_429_and_rate_limited() {
    let (node, _db) = start_with(Phase::Single, |c| {
        c.rate = RateConfig {
            token: Bucket {
                per_sec: 2,
                burst: 3,
            },
            channel: Bucket::OFF,
        };
    })
    .await;
    let bot = node.user("bot").await;
    let other = node.user("other").await;
    let space = node.space(&bot, "g").await;
    node.join(&other, &space).await;
    let ch = node.channel(&bot, &space, "c", None).await.id;

    for left in (0..3).rev() {
        let r = post(&node, &bot.token, ch, "ok", None).await;
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(r.header("x-ratelimit-limit"), Some("3"));
        assert_eq!(
            r.header("x-ratelimit-remaining"),
            Some(left.to_string().as_str())
        );
        let reset: u64 = r.header("x-ratelimit-reset").unwrap().parse().unwrap();
        assert!(
            reset >= chrono::Utc::now().timestamp() as u64,
            "epoch seconds: {reset}"
        );
    }
    let r = post(&node, &bot.token, ch, "too many", None).await;
    assert_eq!(
        (r.status, r.code()),
        (429, ErrorCode::RateLimited),
        "{}",
        r.body
    );
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(r.header("x-ratelimit-scope"), Some("token"));
    // The same token over the WebSocket draws from the same bucket.
    let (mut ws, _) = Ws::hello(&node.ws, &bot.token).await;
    ws.send(1, ch, "socket").await;
    let ev = ws
        .until("error", |e| matches!(e, ServerEvent::Error { .. }))
        .await;
    let ServerEvent::Error {
        req_id,
        code,
        retry_after_ms,
        ..
    } = ev
    else {
        unreachable!()
    };
    assert_eq!((req_id, code), (Some(1), ErrorCode::RateLimited));
    let wait = retry_after_ms.expect("retry_after_ms");
    assert!((1..=500).contains(&wait), "{wait}");
    // Reads are not limited; another token has its own bucket.
    let (status, _) = node
        .get_raw(&format!("/channels/{ch}/messages"), Some(&bot.token))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        post(&node, &other.token, ch, "mine", None).await.status,
        201
    );
    // After the advertised wait, the socket may send again.
    tokio::time::sleep(Duration::from_millis(wait + 20)).await;
    ws.send(2, ch, "later").await;
    ws.until("ack", |e| matches!(e, ServerEvent::Ack { req_id: 2, .. }))
        .await;
    let page = node.metrics().await;
    assert!(
        page.lines()
            .any(|l| l.starts_with("flowline_rate_limited_total") && l.ends_with(" 2")),
        "{page}"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_bucket_is_shared_by_its_posters() {
    let (node, _db) = start_with(Phase::Single, |c| {
        c.rate = RateConfig {
            token: Bucket::OFF,
            channel: Bucket {
                per_sec: 1,
                burst: 2,
            },
        };
    })
    .await;
    let a = node.user("a").await;
    let b = node.user("b").await;
    let space = node.space(&a, "g").await;
    node.join(&b, &space).await;
    let busy = node.channel(&a, &space, "busy", None).await.id;
    let quiet = node.channel(&a, &space, "quiet", None).await.id;
    assert_eq!(post(&node, &a.token, busy, "1", None).await.status, 201);
    assert_eq!(post(&node, &b.token, busy, "2", None).await.status, 201);
    let r = post(&node, &b.token, busy, "3", None).await;
    assert_eq!(
        (r.status, r.header("x-ratelimit-scope")),
        (429, Some("channel"))
    );
    assert_eq!(
        post(&node, &b.token, quiet, "elsewhere", None).await.status,
        201
    );
    node.stop().await;
}

/// p99 of `samples`.
fn p99(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[(samples.len() * 99).div_ceil(100).saturating_sub(1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_refused_while_a_polite_user_keeps_its_latency() {
    // The defaults: 20/s per token, 200/s per channel.
    let (node, _db) = start_with(Phase::Single, |c| c.rate = RateConfig::default()).await;
    let flooder = node.user("flooder").await;
    let polite = node.user("polite").await;
    let reader = node.user("reader").await;
    let space = node.space(&polite, "g").await;
    node.join(&flooder, &space).await;
    node.join(&reader, &space).await;
    let ch = node.channel(&polite, &space, "c", None).await.id;
    let (mut reader_ws, _) = Ws::hello(&node.ws, &reader.token).await;
    let (mut polite_ws, _) = Ws::hello(&node.ws, &polite.token).await;
    let (mut flood_ws, _) = Ws::hello(&node.ws, &flooder.token).await;

    // The flood: HTTP posts from 4 tasks and a socket writing sends without pause, 2 s.
    let stop = Instant::now() + Duration::from_secs(2);
    let mut floods = Vec::new();
    for _ in 0..4 {
        let (client, url, token) = (
            node.client.clone(),
            node.url(&format!("/channels/{ch}/messages")),
            flooder.token.clone(),
        );
        floods.push(tokio::spawn(async move {
            let (mut ok, mut limited) = (0u32, 0u32);
            while Instant::now() < stop {
                let r = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&serde_json::json!({"body": "flood"}))
                    .send()
                    .await
                    .unwrap();
                match r.status().as_u16() {
                    201 => ok += 1,
                    429 => limited += 1,
                    s => panic!("flood got {s}"),
                }
            }
            (ok, limited)
        }));
    }
    let ws_flood = tokio::spawn(async move {
        let mut limited = 0u32;
        let mut req = 1_000_000u64;
        while Instant::now() < stop {
            for _ in 0..20 {
                req += 1;
                flood_ws
                    .op(&ClientOp::send_text(req, ch, "flood".into(), None))
                    .await;
            }
            for e in flood_ws.drain_for(Duration::from_millis(20)).await {
                if matches!(
                    e,
                    ServerEvent::Error {
                        code: ErrorCode::RateLimited,
                        ..
                    }
                ) {
                    limited += 1;
                }
            }
        }
        limited
    });

    // The polite user: one send every 50 ms; the reader times each delivery.
    let mut latencies = Vec::new();
    let mut req = 0;
    while Instant::now() < stop {
        req += 1;
        let nonce = format!("polite-{req}");
        let sent = Instant::now();
        polite_ws
            .op(&ClientOp::send_text(
                req,
                ch,
                "hello".into(),
                Some(nonce.clone()),
            ))
            .await;
        reader_ws
            .until("polite message", |e| matches!(e, ServerEvent::Message(m) if m.nonce.as_deref() == Some(nonce.as_str())))
            .await;
        latencies.push(sent.elapsed());
        let ack = polite_ws.until("ack", |e| matches!(e, ServerEvent::Ack { req_id, .. } | ServerEvent::Error { req_id: Some(req_id), .. } if *req_id == req)).await;
        assert!(
            matches!(ack, ServerEvent::Ack { .. }),
            "the polite user is never limited: {ack:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (mut ok, mut limited) = (0, ws_flood.await.unwrap());
    for f in floods {
        let (o, l) = f.await.unwrap();
        ok += o;
        limited += l;
    }
    // The token's bucket: a burst of 40 plus 20/s over ~2 s, HTTP and socket together.
    assert!(ok <= 40 + 2 * 20 + 10, "flood got {ok} posts through");
    assert!(limited > 100, "the flood was refused: {limited} refusals");
    let p = p99(latencies.clone());
    assert!(latencies.len() >= 20, "{} polite sends", latencies.len());
    assert!(
        p < Duration::from_millis(250),
        "polite delivery p99 {p:?} (loose bound)"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_shares_buckets_and_idempotency_keys_through_redis() {
    let cluster = Cluster::start_with(Phase::Pubsub, 2, |c| {
        c.rate = RateConfig {
            token: Bucket {
                per_sec: 1,
                burst: 4,
            },
            channel: Bucket::OFF,
        };
    })
    .await;
    let (n1, n2) = (cluster.node(0), cluster.node(1));
    let bot = n1.user("bot").await;
    let human = n1.user("human").await;
    let space = n1.space(&human, "g").await;
    n1.join(&bot, &space).await;
    let ch = n1.channel(&human, &space, "c", None).await.id;
    let (mut ws, _) = Ws::hello(&n2.ws, &human.token).await;

    // One key, tried on node 1 and retried on node 2: one message, reaching node 2's socket.
    let first = post(n1, &bot.token, ch, "once", Some("k-1")).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let retry = post(n2, &bot.token, ch, "once", Some("k-1")).await;
    assert_eq!(
        (retry.status, retry.header("idempotent-replayed")),
        (201, Some("true"))
    );
    assert_eq!(retry.json::<Message>(), first.json::<Message>());
    let ev = ws
        .until("message", |e| matches!(e, ServerEvent::Message(_)))
        .await;
    assert_eq!(ev, ServerEvent::Message(first.json()));
    // Two requests used 2 of the 4 tokens, whichever node served them.
    assert_eq!(post_text(n2, &bot.token, ch, "three").await.seq, 2);
    assert_eq!(post(n1, &bot.token, ch, "four", None).await.status, 201);
    let r = post(n2, &bot.token, ch, "five", None).await;
    assert_eq!(
        (r.status, r.code()),
        (429, ErrorCode::RateLimited),
        "{}",
        r.body
    );
    let _ = ws.drain_for(Duration::from_millis(100)).await;
    cluster.stop().await;
}
