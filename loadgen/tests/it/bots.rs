//! HTTP bots and flooders (`http = "bot"`, `http = "flood"`) beside WebSocket users,
//! against a real node: the bots' posts reach every WebSocket member of their channel
//! exactly once (retries with the same `Idempotency-Key` post nothing), and a flooder is
//! refused with 429s, counted as `rate_limited` second by second, while the WebSocket
//! users' delivery latency stays low — and keeps its rate over the limit when every
//! request is slow (a latency toxic between it and the node).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use flowline_loadgen::aggregate::Summary;
use flowline_loadgen::plan::{self, Plan};
use flowline_loadgen::scenario::{HttpKind, Scenario};
use flowline_loadgen::wire::{Done, Outcome, RecvKind, WorkerLine};

use flowline_chaos::Controller;
use flowline_server::config::{Bucket, RateConfig};

use crate::util::{SECRET, run_workers, scenario_with, start_node_with, summarize};

/// Per-token bucket of the flood test's node: small, so that a flood is refused from its
/// first second even when a loaded machine slows the flooder down.
const TOKEN: Bucket = Bucket {
    per_sec: 10,
    burst: 10,
};

/// Run `scenario` as one in-process worker against a fresh node (token bucket `token`):
/// its plan, summary and done line.
async fn run(scenario: Scenario, token: Bucket) -> (Plan, Summary, Done) {
    run_via(scenario, token, None).await
}

/// [`run`], the worker's traffic (HTTP and WebSocket) going through a chaos proxy that
/// delays every client → node chunk by `latency_ms`, when given.
async fn run_via(
    scenario: Scenario,
    token: Bucket,
    latency_ms: Option<u64>,
) -> (Plan, Summary, Done) {
    let node = start_node_with(|c| c.rate.token = token).await;
    let scenario = Arc::new(scenario);
    let plan = Arc::new(
        plan::provision(&scenario, &node.http, SECRET)
            .await
            .unwrap(),
    );
    let chaos = Controller::new();
    let target = match latency_ms {
        None => node.ws.clone(),
        Some(ms) => {
            let upstream = node.http.trim_start_matches("http://").to_string();
            let info = chaos
                .create_proxy("slow", "127.0.0.1:0".parse().unwrap(), &upstream)
                .await
                .unwrap();
            let toxic = format!(
                r#"{{"type":"latency","stream":"upstream","attributes":{{"latency":{ms}}}}}"#
            );
            chaos
                .add_toxic(
                    "slow",
                    flowline_chaos::ToxicSpec::from_create_json(toxic.as_bytes()).unwrap(),
                )
                .unwrap();
            format!("ws://{}/ws", info.listen)
        }
    };
    let lines = run_workers(&scenario, &plan, vec![vec![target]], 2).await;
    drop(chaos);
    drop(node);
    let summary = summarize(&scenario, &lines);
    let done = lines[0]
        .iter()
        .find_map(|l| match serde_json::from_str::<WorkerLine>(l) {
            Ok(WorkerLine::Done(d)) => Some(*d),
            _ => None,
        })
        .expect("a done line");
    (Arc::unwrap_or_clone(plan), summary, done)
}

/// Users of the plan whose persona has `http = kind`.
fn users_of(s: &Scenario, plan: &Plan, kind: HttpKind) -> BTreeSet<u32> {
    plan.users
        .iter()
        .filter(|u| s.personas[u.persona as usize].http == Some(kind))
        .map(|u| u.index)
        .collect()
}

fn op(s: &Summary, k: &str) -> u64 {
    s.totals.ops_by_kind.get(k).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bot_posts_reach_every_websocket_member_once_and_retries_post_nothing() {
    let personas = r#"
[[personas]]
name = "bot"
weight = 0.25
http = "bot"
requests_per_minute = 600
retry_share = 0.5
body_bytes = { dist = "fixed", value = 60 }
"#;
    let scenario = scenario_with(40, 21, personas);
    let (plan, s, done) = run(scenario.clone(), RateConfig::TOKEN).await;
    let bots = users_of(&scenario, &plan, HttpKind::Bot);
    assert!(bots.len() >= 2, "the seed gives too few bots: {bots:?}");

    // Every bot action was answered as it should be, nothing refused or rate limited.
    let errors: Vec<_> = s
        .totals
        .errors_by_kind
        .keys()
        .filter(|k| k.starts_with("http:"))
        .collect();
    assert!(errors.is_empty(), "{:?}", s.totals.errors_by_kind);
    assert_eq!(s.rate_limited, None, "{:?}", s.rate_limited);
    for k in ["bot_post", "bot_edit", "bot_react", "bot_retry"] {
        assert!(op(&s, k) > 0, "no {k}: {:?}", s.totals.ops_by_kind);
    }
    assert_eq!(op(&s, "bot_post_ok"), op(&s, "bot_post"));
    assert_eq!(op(&s, "bot_edit_ok"), op(&s, "bot_edit"));
    assert_eq!(op(&s, "bot_react_ok"), op(&s, "bot_react"));
    // Every retry was answered with the first post (same id and seq, replayed).
    assert_eq!(op(&s, "bot_retry_replayed"), op(&s, "bot_retry"));
    // Half the posts were retried (retry_share = 0.5), give or take one per bot.
    let (posts, retries) = (op(&s, "bot_post"), op(&s, "bot_retry"));
    assert!(retries * 2 >= posts && retries * 2 <= posts + 2 * bots.len() as u64);
    let http = s.http.as_ref().expect("an http report");
    let post = &http.kinds["bot_post"];
    assert_eq!(post.requests, posts, "{post:?}");
    assert_eq!(post.status_codes.get("201"), Some(&posts), "{post:?}");
    assert_eq!(
        http.kinds["bot_retry"].status_codes.get("201"),
        Some(&retries)
    );

    // The bots' posts are recorded like WebSocket sends: all stored.
    let bot_sends: Vec<_> = done
        .sends
        .iter()
        .filter(|r| bots.contains(&r.sender))
        .collect();
    assert_eq!(bot_sends.len() as u64, posts);
    assert!(
        bot_sends
            .iter()
            .all(|r| r.outcome == Outcome::Ok && r.seq > 0)
    );
    let bot_acked: BTreeSet<(i64, i64)> = done
        .acked
        .iter()
        .filter(|a| bots.contains(&a.3))
        .map(|a| (a.0, a.1))
        .collect();
    assert_eq!(bot_acked.len() as u64, posts, "a post acked twice");

    // Each reached every WebSocket member of its channel exactly once, and no other
    // message carried a bot's nonce (a retry stored twice would).
    let mut got: HashMap<(i64, i64, u32), u32> = HashMap::new();
    let mut bot_seqs = BTreeSet::new();
    let mut edits = 0;
    for r in &done.receives {
        match r.kind {
            RecvKind::Message if bots.contains(&r.sender) => {
                *got.entry((r.channel, r.seq, r.receiver)).or_default() += 1;
                bot_seqs.insert((r.channel, r.seq));
            }
            RecvKind::Edit if bot_acked.contains(&(r.channel, r.seq)) => edits += 1,
            _ => {}
        }
    }
    assert!(
        bot_seqs.is_subset(&bot_acked),
        "a message with a bot's nonce that was not its stored post: {:?}",
        bot_seqs.difference(&bot_acked).collect::<Vec<_>>()
    );
    assert!(edits > 0, "no edit of a bot post reached anyone");
    // Every WebSocket member subscribed to the end is due the posts after its
    // subscription began (the bots start posting while the humans still connect).
    let http_users: BTreeSet<u32> = plan
        .users
        .iter()
        .filter(|u| scenario.personas[u.persona as usize].http.is_some())
        .map(|u| u.index)
        .collect();
    let open_from: HashMap<(i64, u32), i64> = done
        .recipients
        .iter()
        .filter_map(|r| {
            let last = r.chains.last().filter(|c| c.open)?;
            Some(((r.channel, r.user), last.from))
        })
        .collect();
    let members: BTreeMap<i64, Vec<u32>> = plan
        .channels
        .iter()
        .map(|c| (c.id, c.members.clone()))
        .collect();
    let mut deliveries = 0;
    for &(channel, seq) in &bot_acked {
        for &m in members[&channel].iter().filter(|m| !http_users.contains(m)) {
            let from = open_from.get(&(channel, m)).copied();
            assert!(
                from.is_some(),
                "user {m} was not subscribed to {channel} at the end"
            );
            if from.is_some_and(|f| f < seq) {
                assert_eq!(
                    got.get(&(channel, seq, m)).copied(),
                    Some(1),
                    "channel {channel} seq {seq} at user {m}"
                );
                deliveries += 1;
            }
        }
    }
    assert!(deliveries > 50, "{deliveries}");

    // The checker agrees: nothing lost, duplicated or misordered, bots included.
    let c = &s.correctness;
    assert_eq!(
        (c.lost, c.duplicated, c.reordered, c.gaps),
        (0, 0, 0, 0),
        "{c:?}"
    );
    for (kind, r) in &c.anomalies {
        assert_eq!(r.count, 0, "{kind:?}: {r:?}");
    }
    assert!(c.expected >= deliveries, "{c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_rate_limited_each_second_while_the_others_keep_their_latency() {
    let personas = r#"
[[personas]]
name = "flooder"
weight = 0.08
http = "flood"
requests_per_minute = 3000
"#;
    let scenario = scenario_with(40, 5, personas);
    let (plan, s, done) = run(scenario.clone(), TOKEN).await;
    let flooders = users_of(&scenario, &plan, HttpKind::Flood);
    assert!(!flooders.is_empty(), "the seed gives no flooder");

    // The node refused the flood over its token bucket (10/s, bursts of 10).
    let rl = s.rate_limited.as_ref().expect("rate-limited answers");
    let refused = op(&s, "flood_post") - op(&s, "flood_post_ok");
    assert!(refused > 0 && rl.count == refused, "{rl:?} vs {refused}");
    assert_eq!(s.totals.rate_limited, rl.count);
    let flood = &s.http.as_ref().expect("an http report").kinds["flood_post"];
    assert_eq!(flood.status_codes.get("429"), Some(&rl.count), "{flood:?}");
    // Every measured second had refusals, and the flood got at most the bucket through.
    let measured: Vec<u64> = (2..=4).collect();
    for t in &measured {
        assert!(
            rl.timeline.iter().any(|&(s, n)| s == *t && n > 0),
            "no refusal in second {t}: {rl:?}"
        );
    }
    assert!(rl.per_s > 10.0, "{rl:?}");
    let secs = (scenario.warmup + scenario.duration).as_secs() + 1;
    let allowed = flooders.len() as u64 * (TOKEN.burst as u64 + TOKEN.per_sec as u64 * secs);
    assert!(
        op(&s, "flood_post_ok") <= allowed,
        "{:?}",
        s.totals.ops_by_kind
    );
    // Refused posts are recorded as refused sends; none reached anyone (g1a), and the
    // stored ones reached everybody.
    let refused_sends = done
        .sends
        .iter()
        .filter(|r| flooders.contains(&r.sender) && r.outcome == Outcome::Error)
        .count() as u64;
    assert_eq!(refused_sends, refused);
    let c = &s.correctness;
    for (kind, r) in &c.anomalies {
        assert_eq!(r.count, 0, "{kind:?}: {r:?}");
    }
    assert_eq!((c.lost, c.duplicated, c.gaps), (0, 0, 0), "{c:?}");

    // The WebSocket users were not limited, and their deliveries stayed fast: a loose
    // bound, measured here over the whole run (flood deliveries included).
    assert_eq!(
        s.totals.errors_by_kind.get("server:rate_limited"),
        None,
        "{:?}",
        s.totals.errors_by_kind
    );
    assert_eq!(s.totals.acked, s.totals.sent);
    let delivery = &s.latency_us["delivery"];
    eprintln!(
        "flood: {} refused ({:.0}/s), {} stored; delivery p50 {} µs p99 {} µs",
        rl.count,
        rl.per_s,
        op(&s, "flood_post_ok"),
        delivery.p50,
        delivery.p99
    );
    assert!(delivery.p99 < 1_000_000, "{delivery:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooder_keeps_its_rate_over_the_limit_when_every_request_is_slow() {
    // 150 ms on the way to the node: one post at a time would make fewer than 7 a
    // second, under the node's 10 a second; the flooder asks for 50.
    const LATENCY_MS: u64 = 150;
    let personas = r#"
[[personas]]
name = "flooder"
weight = 0.08
http = "flood"
requests_per_minute = 3000
"#;
    let scenario = scenario_with(40, 5, personas);
    let (plan, s, done) = run_via(scenario.clone(), TOKEN, Some(LATENCY_MS)).await;
    let flooder_set = users_of(&scenario, &plan, HttpKind::Flood);
    let flooders = flooder_set.len() as u64;
    assert!(flooders > 0, "the seed gives no flooder");

    let flood = &s.http.as_ref().expect("an http report").kinds["flood_post"];
    let lat = flood.latency_us.as_ref().expect("flood latency");
    assert!(
        lat.p50 >= LATENCY_MS * 1000,
        "requests were not slow: {lat:?}"
    );
    // Posts a second per flooder, over the whole time it ran (a lower bound of its rate).
    let secs = (scenario.warmup + scenario.duration).as_secs_f64();
    let rate = flood.requests as f64 / flooders as f64 / secs;
    let one_at_a_time = 1e6 / lat.p50 as f64;
    eprintln!(
        "slow flood: {} requests by {flooders} flooder(s), {rate:.1}/s each (one at a time: \
         at most {one_at_a_time:.1}/s), p50 {} µs, {} refused",
        flood.requests,
        lat.p50,
        flood.status_codes.get("429").copied().unwrap_or(0)
    );
    assert!(
        rate > TOKEN.per_sec as f64 && rate > 2.0 * one_at_a_time,
        "{rate:.1}/s per flooder: {flood:?}"
    );
    // So the node refused it, and every refusal is counted once, everywhere.
    let rl = s.rate_limited.as_ref().expect("rate-limited answers");
    assert!(rl.count > 0);
    assert_eq!(flood.status_codes.get("429"), Some(&rl.count), "{flood:?}");
    assert_eq!(op(&s, "flood_post"), flood.requests);
    assert_eq!(
        op(&s, "flood_post") - op(&s, "flood_post_ok"),
        rl.count,
        "{:?}",
        s.totals.ops_by_kind
    );
    assert_eq!(flood.requests, flood.success + flood.fail);
    // Each post is recorded once, numbered 1, 2, … per flooder, with its outcome.
    let mut by_sender: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for r in done
        .sends
        .iter()
        .filter(|r| flooder_set.contains(&r.sender))
    {
        by_sender.entry(r.sender).or_default().push(r.n);
        assert_eq!(r.outcome == Outcome::Ok, r.seq > 0, "{r:?}");
    }
    let recorded: u64 = by_sender.values().map(|v| v.len() as u64).sum();
    assert_eq!(recorded, flood.requests);
    for (sender, mut ns) in by_sender {
        ns.sort_unstable();
        let want: Vec<u32> = (1..=ns.len() as u32).collect();
        assert_eq!(ns, want, "posts of flooder {sender}");
    }
    let c = &s.correctness;
    for (kind, r) in &c.anomalies {
        assert_eq!(r.count, 0, "{kind:?}: {r:?}");
    }
    assert_eq!((c.lost, c.duplicated, c.gaps), (0, 0, 0), "{c:?}");
}
