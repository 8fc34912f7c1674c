//! End to end: the chaos proxy's frame toxics, scheduled as a scenario's `[[faults]]`, in
//! front of a real node — one proxy per worker shard, each with one toxic — and the
//! stream checker naming exactly what each toxic did: that kind, at the receivers of
//! that shard, for that (channel, seq), and nothing else.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use flowline_chaos::schedule::{Links, Schedule, Targets};
use flowline_chaos::{Controller, EventLog};
use flowline_loadgen::checker::Anomaly;
use flowline_loadgen::plan::{self, Plan, PlanChannel};
use serde_json::Value;

use crate::anomalies::offenders;
use crate::util::{SECRET, run_workers, scenario_with, small_scenario, start_node, summarize};

const USERS: u32 = 120;
const SEED: u64 = 37;
/// Shard i goes through proxy `shard<i>`; shards 0..=5 have one toxic each, shard 6 none,
/// and one more toxic acts on all of them.
/// Odd, so that every space's channels (members of space k: users ≡ k mod 2) have
/// members in every shard.
const SHARDS: usize = 7;
/// The seq the toxics pick (all users are connected long before it).
const SEQ: i64 = 30;
/// `frame_corrupt`'s seq (its anomaly has the same kind as `frame_drop`'s).
const CORRUPT_SEQ: i64 = 40;

fn shard_of(user: u32) -> usize {
    user as usize % SHARDS
}

/// Members of `c` that run in shard `s`.
fn receivers(c: &PlanChannel, s: usize) -> Vec<u32> {
    c.members
        .iter()
        .copied()
        .filter(|&u| shard_of(u) == s)
        .collect()
}

/// Every message of channel `c` as the node stored it: seq → author's user index (asked
/// of the node as one of the channel's members, independently of the checker).
async fn authors(http: &str, plan: &Plan, c: i64) -> BTreeMap<i64, u32> {
    let member = plan.users.iter().find(|u| u.channels.contains(&c)).unwrap();
    let index: HashMap<i64, u32> = plan.users.iter().map(|u| (u.id, u.index)).collect();
    let mut out = BTreeMap::new();
    loop {
        let after = out.keys().next_back().copied().unwrap_or(0);
        let url = format!("{http}/api/v1/channels/{c}/messages?after={after}&limit=200");
        let page: Vec<Value> = reqwest::Client::new()
            .get(url)
            .bearer_auth(&member.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if page.is_empty() {
            return out;
        }
        for m in page {
            let author = m["author"].as_i64().unwrap();
            out.insert(m["seq"].as_i64().unwrap(), index[&author]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_frame_toxic_causes_exactly_the_anomaly_the_checker_names() {
    let node = start_node().await;
    let plan = Arc::new(
        plan::provision(&small_scenario(USERS, SEED), &node.http, SECRET)
            .await
            .unwrap(),
    );
    let rooms: Vec<&PlanChannel> = plan.channels.iter().filter(|c| !c.dm).collect();
    // A channel with receivers in shards 0..5, and another with receivers in shard 5.
    let c = rooms
        .iter()
        .find(|c| (0..5).all(|s| !receivers(c, s).is_empty()))
        .expect("a channel with members in shards 0..5");
    let c2 = rooms
        .iter()
        .find(|x| x.id != c.id && !receivers(x, 5).is_empty())
        .expect("a second channel");
    let c3 = rooms
        .iter()
        .find(|x| x.id != c.id && x.id != c2.id)
        .expect("a third channel");
    let (ch, ch2, ch3) = (c.id, c2.id, c3.id);
    let from_seq: Vec<String> = (SEQ..SEQ + 3000).map(|s| s.to_string()).collect();
    let faults = format!(
        r#"
[[faults]]
at = "0s"
kind = "frame_drop"
target = "shard0"
match = {{ "/type" = "message", "/channel" = {ch}, "/seq" = {SEQ} }}

[[faults]]
at = "0s"
kind = "frame_duplicate"
target = "shard1"
match = {{ "/type" = "message", "/channel" = {ch}, "/seq" = {SEQ} }}

[[faults]]
at = "0s"
kind = "frame_reorder"
target = "shard2"
nth = 1
match = {{ "/type" = "message", "/channel" = {ch}, "/seq" = [{SEQ}, {next}] }}

[[faults]]
at = "0s"
kind = "frame_corrupt"
target = "shard3"
match = {{ "/type" = "message", "/channel" = {ch}, "/seq" = {CORRUPT_SEQ} }}

[[faults]]
at = "0s"
kind = "frame_delay"
target = "shard4"
delay = "300ms"
match = {{ "/type" = "message", "/channel" = {ch}, "/seq" = {SEQ} }}

[[faults]]
at = "0s"
kind = "frame_drop"
target = "shard5"
match = {{ "/type" = "message", "/channel" = {ch2}, "/seq" = [{from}] }}

[[faults]]
at = "0s"
kind = "frame_drop"
target = "shard*"
match = {{ "/type" = "message", "/channel" = {ch3}, "/seq" = {SEQ} }}
"#,
        next = SEQ + 1,
        from = from_seq.join(", "),
    );
    // The same population (same plan), now with the faults: parsed and validated as a
    // scenario file is.
    let scenario = Arc::new(scenario_with(USERS, SEED, &faults));
    assert_eq!(scenario.faults.len(), 7);

    let chaos = Controller::new();
    let upstream = node.http.trim_start_matches("http://").to_string();
    let mut targets = Vec::new();
    for s in 0..SHARDS {
        let info = chaos
            .create_proxy(
                &format!("shard{s}"),
                "127.0.0.1:0".parse().unwrap(),
                &upstream,
            )
            .await
            .unwrap();
        targets.push(vec![format!("ws://{}/ws", info.listen)]);
    }
    let dir = tempfile::tempdir().unwrap();
    let events =
        EventLog::create(&dir.path().join("events.jsonl"), std::time::Instant::now()).unwrap();
    let schedule = Schedule::new(
        scenario.faults.clone(),
        Targets::new(Links::Local(chaos.clone())),
        events,
    )
    .unwrap()
    .run(tokio::time::Instant::now());
    // Injected before any user connects.
    let injected = || {
        chaos
            .list()
            .iter()
            .all(|p| p.toxics.len() == 1 + usize::from(p.name != "shard6"))
    };
    for _ in 0..100 {
        if injected() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(injected());

    let lines = run_workers(&scenario, &plan, targets, 1).await;
    schedule.shutdown().await.unwrap();
    let s = summarize(&scenario, &lines);

    let by = authors(&node.http, &plan, ch).await;
    let by2 = authors(&node.http, &plan, ch2).await;
    // Receivers in `shard` of message `seq` of `chan`; `due`: leave out its author (its own
    // messages are never due to it, so a missing one is no anomaly).
    let at = |seq: i64, shard: usize, chan: &PlanChannel, due: bool| -> Vec<(i64, i64, u32)> {
        let author = if chan.id == ch { by[&seq] } else { by2[&seq] };
        receivers(chan, shard)
            .into_iter()
            .filter(|&r| !due || r != author)
            .map(|r| (chan.id, seq, r))
            .collect()
    };
    let a = &s.correctness.anomalies;
    // frame_drop of one message, and frame_corrupt of another: a hole at each receiver.
    let mut skip = at(SEQ, 0, c, true);
    skip.extend(at(CORRUPT_SEQ, 3, c, true));
    skip.sort_unstable();
    assert!(!skip.is_empty());
    assert_eq!(
        offenders(&s, Anomaly::PollSkip),
        skip,
        "{:?}",
        a[&Anomaly::PollSkip]
    );
    // Received twice, or after the next one: the author sees it too.
    assert_eq!(offenders(&s, Anomaly::Duplicate), at(SEQ, 1, c, false));
    assert_eq!(offenders(&s, Anomaly::Nonmonotonic), at(SEQ, 2, c, false));
    // The corrupt frame is no JSON: each of its receivers (author included) says so.
    let bad = receivers(c, 3).len() as u64;
    assert_eq!(
        s.totals.errors_by_kind.get("bad_frame").copied(),
        Some(bad),
        "{:?}",
        s.totals.errors_by_kind
    );
    assert_eq!(s.totals.errors, bad);
    // Everything from SEQ on in c2 never reached shard 5: lost, each (seq, receiver).
    let lost_want: Vec<(i64, i64, u32)> = by2
        .range(SEQ..)
        .flat_map(|(&seq, _)| at(seq, 5, c2, true))
        .collect();
    let lost = &a[&Anomaly::Lost];
    assert!(lost_want.len() > 20, "{}", lost_want.len());
    assert_eq!(lost.count, lost_want.len() as u64, "{lost:?}");
    for o in &lost.offenders {
        assert!(
            lost_want.contains(&(o.channel, o.seq, o.receiver)),
            "{o:?} not lost"
        );
    }
    // Dropped at every proxy: delivered to nobody, `unseen` once.
    let unseen = &a[&Anomaly::Unseen];
    assert_eq!(unseen.count, 1, "{unseen:?}");
    assert_eq!(
        (unseen.offenders[0].channel, unseen.offenders[0].seq),
        (ch3, SEQ)
    );
    // frame_delay keeps order: no anomaly of its own. Nothing else anywhere.
    let named = [
        Anomaly::Unseen,
        Anomaly::PollSkip,
        Anomaly::Duplicate,
        Anomaly::Nonmonotonic,
        Anomaly::Lost,
    ];
    for (k, r) in a {
        if !named.contains(k) {
            assert_eq!(r.count, 0, "{k:?}: {r:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_run_through_the_proxy_reports_zero_of_every_kind() {
    let node = start_node().await;
    let scenario = Arc::new(small_scenario(60, 41));
    let plan = Arc::new(
        plan::provision(&scenario, &node.http, SECRET)
            .await
            .unwrap(),
    );
    let chaos = Controller::new();
    let upstream = node.http.trim_start_matches("http://").to_string();
    let info = chaos
        .create_proxy("clean", "127.0.0.1:0".parse().unwrap(), &upstream)
        .await
        .unwrap();
    // A frame toxic that selects nothing still has the framer hold every message whole.
    chaos
        .add_toxic(
            "clean",
            flowline_chaos::ToxicSpec::from_create_json(
                br#"{"type":"frame_drop","attributes":{"match":{"/type":"no such type"}}}"#,
            )
            .unwrap(),
        )
        .unwrap();
    let via = format!("ws://{}/ws", info.listen);
    let lines = run_workers(&scenario, &plan, vec![vec![via.clone()], vec![via]], 1).await;
    let s = summarize(&scenario, &lines);
    assert!(s.totals.delivered > 1000, "{:?}", s.totals);
    for (k, r) in &s.correctness.anomalies {
        assert_eq!(r.count, 0, "{k:?}: {r:?}");
    }
    assert_eq!(s.totals.errors, 0, "{:?}", s.totals.errors_by_kind);
}
