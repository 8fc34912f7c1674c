//! End to end: provision a small scenario on a real in-process node, run a worker (two
//! shards), aggregate, check correctness; and the checker counting exactly the deliveries
//! removed from a real history.

use std::sync::Arc;

use flowline_loadgen::aggregate::{Aggregator, RunMeta};
use flowline_loadgen::checker::{Anomalies, Anomaly, Offence, streams};
use flowline_loadgen::plan;
use flowline_loadgen::wire::RecvKind;
use flowline_loadgen::wire::{Done, WorkerLine};

use flowline_loadgen::scenario::Scenario;

use crate::util::{SECRET, run_workers, scenario_with, small_scenario, start_node};

/// Run every shard of the scenario in this process; returns each shard's lines.
async fn run_shards(users: u32, shards: usize) -> (Vec<Vec<String>>, Scenario) {
    run_scenario(small_scenario(users, 11), shards).await
}

async fn run_scenario(scenario: Scenario, shards: usize) -> (Vec<Vec<String>>, Scenario) {
    let users = scenario.population.users;
    let node = start_node().await;
    let scenario = Arc::new(scenario);
    let plan = Arc::new(
        plan::provision(&scenario, &node.http, SECRET)
            .await
            .unwrap(),
    );
    assert_eq!(plan.users.len(), users as usize);
    let out = run_workers(&scenario, &plan, vec![vec![node.ws.clone()]; shards], 2).await;
    drop(node);
    (out, (*scenario).clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_scenario_end_to_end_is_correct() {
    let (lines, scenario) = run_shards(300, 2).await;
    let mut agg = Aggregator::new(&scenario, 2);
    for (w, ls) in lines.iter().enumerate() {
        // warm-up 1 s + 3 s + drain 1 s: at least 5 ticks, then done.
        assert!(ls.len() >= 6, "worker {w}: {} lines", ls.len());
        assert!(ls.last().unwrap().starts_with(r#"{"type":"done""#));
        for l in ls {
            agg.ingest(w, l).unwrap();
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let s = agg.finish(dir.path(), RunMeta::default()).unwrap();
    let c = &s.correctness;
    assert_eq!(s.peak_users, 300, "{s:#?}");
    assert!(s.totals.sent > 100, "{:?}", s.totals);
    assert_eq!(s.totals.errors, 0, "{:?}", s.totals.errors_by_kind);
    assert_eq!(s.totals.acked, s.totals.sent);
    assert!(c.expected > 1000, "{c:?}");
    assert_eq!(
        (c.lost, c.duplicated, c.reordered, c.gaps),
        (0, 0, 0, 0),
        "{c:?}"
    );
    assert_eq!(c.delivered, c.expected);
    assert_no_anomaly(&c.anomalies);
    assert!(s.latency_us["delivery"].count > 1000);
    assert!(s.latency_us.contains_key("connect") || s.totals.connects == 300);
    assert!(s.passed, "{:?}", s.thresholds);
    for f in ["summary.json", "histograms.hlog", "timeline.csv"] {
        assert!(dir.path().join(f).exists(), "{f}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churning_users_resume_without_loss() {
    let churn = r#"
[[personas]]
name = "churner"
messages_per_minute = 60
reconnect_every = "1s"
"#;
    let (lines, scenario) = run_scenario(scenario_with(200, 5, churn), 1).await;
    let mut agg = Aggregator::new(&scenario, 1);
    for l in &lines[0] {
        agg.ingest(0, l).unwrap();
    }
    let s = agg.summarize(RunMeta::default());
    let c = &s.correctness;
    assert!(s.totals.reconnects > 100, "{:?}", s.totals);
    assert_eq!(s.totals.disconnects, 0, "{:?}", s.totals);
    assert!(c.expected > 500, "{c:?}");
    assert_eq!(
        (c.lost, c.duplicated, c.reordered, c.gaps),
        (0, 0, 0, 0),
        "{c:?}"
    );
    // Resumes on a real node: no replay, no gap, nothing else either.
    assert_no_anomaly(&c.anomalies);
}

/// Every kind present and zero.
fn assert_no_anomaly(a: &Anomalies) {
    assert_eq!(a.len(), Anomaly::ALL.len());
    for (k, r) in a {
        assert_eq!(r.count, 0, "{k:?}: {r:?}");
    }
}

/// Only `kind`, with exactly these (channel, seq, receiver) offenders.
fn assert_only(a: &Anomalies, kind: Anomaly, want: &[(i64, i64, u32)]) {
    for (k, r) in a {
        if *k == kind {
            let got: Vec<_> = r
                .offenders
                .iter()
                .map(|o| (o.channel, o.seq, o.receiver))
                .collect();
            assert_eq!(got, want, "{k:?}");
            assert_eq!(r.count, want.len() as u64);
        } else {
            assert_eq!(r.count, 0, "{k:?} besides {kind:?}: {r:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_checker_names_each_fault_in_a_real_history() {
    let (mut lines, _) = run_shards(120, 1).await;
    let WorkerLine::Done(done) =
        serde_json::from_str::<WorkerLine>(&lines[0].pop().unwrap()).unwrap()
    else {
        panic!("last line is not done")
    };
    assert!(done.sends.len() > 50, "{} sends", done.sends.len());
    assert!(
        done.receives.len() > 500,
        "{} receives",
        done.receives.len()
    );
    let check = |receives: Vec<_>| streams::check(&done.sends, receives, &done.recipients);
    assert_no_anomaly(&check(done.receives.clone()));
    // A delivery of another user's message with a later one in the same session of a
    // subscription open to the end.
    let open = |ch: i64, user: u32| {
        done.recipients
            .iter()
            .any(|r| r.channel == ch && r.user == user && r.chains.last().is_some_and(|c| c.open))
    };
    let i = (0..done.receives.len())
        .find(|&i| {
            let e = &done.receives[i];
            e.kind == RecvKind::Message
                && e.sender != e.receiver
                && open(e.channel, e.receiver)
                && done.receives[i + 1..].iter().any(|l| {
                    l.kind == RecvKind::Message
                        && (l.channel, l.receiver, l.epoch) == (e.channel, e.receiver, e.epoch)
                })
        })
        .expect("a delivery in the middle of a stream");
    let e = done.receives[i];
    let want = [(e.channel, e.seq, e.receiver)];
    // Dropped in the middle of a session: a poll skip.
    let mut r = done.receives.clone();
    r.remove(i);
    assert_only(&check(r), Anomaly::PollSkip, &want);
    // Delivered twice in a row: a duplicate.
    let mut r = done.receives.clone();
    r.insert(i + 1, e);
    assert_only(&check(r), Anomaly::Duplicate, &want);
    // Delivered after the receiver's next message instead: nonmonotonic.
    let mut r = done.receives.clone();
    r.remove(i);
    let next = (i..r.len())
        .find(|&j| {
            r[j].kind == RecvKind::Message
                && (r[j].channel, r[j].receiver, r[j].epoch) == (e.channel, e.receiver, e.epoch)
        })
        .unwrap();
    r.insert(next + 1, e);
    assert_only(&check(r), Anomaly::Nonmonotonic, &want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checker_counts_exactly_the_dropped_deliveries() {
    let (mut lines, scenario) = run_shards(200, 1).await;
    let done_line = lines[0].pop().unwrap();
    let WorkerLine::Done(mut done) = serde_json::from_str::<WorkerLine>(&done_line).unwrap() else {
        panic!("last line is not done")
    };
    let dropped = drop_deliveries(&mut done, 25);
    assert_eq!(dropped.len(), 25, "not enough deliveries to drop");
    let mut agg = Aggregator::new(&scenario, 1);
    for l in &lines[0] {
        agg.ingest(0, l).unwrap();
    }
    agg.ingest(0, &serde_json::to_string(&WorkerLine::Done(done)).unwrap())
        .unwrap();
    let s = agg.summarize(RunMeta::default());
    let c = &s.correctness;
    assert_eq!(c.lost, 25, "{c:?}");
    assert_eq!((c.duplicated, c.reordered), (0, 0));
    let mut lost: Vec<_> = c
        .offenders
        .iter()
        .filter(|o| o.offence == Offence::Lost)
        .map(|o| (o.recipient, o.channel, o.seq))
        .collect();
    lost.sort_unstable();
    assert_eq!(lost, dropped);
    assert!(!s.passed, "lost == 0 must fail");
}

/// Remove `n` received deliveries (from different recipients, of messages acked to
/// another user) from a real history; returns (recipient, channel, seq) removed.
fn drop_deliveries(done: &mut Done, n: usize) -> Vec<(u32, i64, i64)> {
    let mut out = Vec::new();
    for r in done.recipients.iter_mut() {
        if out.len() == n {
            break;
        }
        if !r.chains.last().is_some_and(|c| c.open) {
            continue;
        }
        let candidate = done.acked.iter().find(|&&(ch, seq, _, author)| {
            ch == r.channel
                && author != r.user
                && seq > r.chains.last().unwrap().from
                && r.received.iter().any(|&(lo, hi)| lo <= seq && seq <= hi)
        });
        let Some(&(_, seq, _, _)) = candidate else {
            continue;
        };
        let mut ranges = Vec::new();
        for &(lo, hi) in &r.received {
            if lo <= seq && seq <= hi {
                if lo < seq {
                    ranges.push((lo, seq - 1));
                }
                if seq < hi {
                    ranges.push((seq + 1, hi));
                }
            } else {
                ranges.push((lo, hi));
            }
        }
        r.received = ranges;
        out.push((r.user, r.channel, seq));
    }
    out.sort_unstable();
    out
}
