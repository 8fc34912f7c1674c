//! End to end: a worker streaming its history (`history` lines once a second, as to a
//! coordinator) on a real node, into an aggregator that spills it to the run folder: the
//! same verdict as the same events in one `done` line, and a delivery taken out of a
//! history line named exactly.

use std::sync::{Arc, Mutex};

use flowline_loadgen::aggregate::{Aggregator, RunMeta, Summary};
use flowline_loadgen::checker::Anomaly;
use flowline_loadgen::plan::{self, Shard};
use flowline_loadgen::scenario::Scenario;
use flowline_loadgen::wire::{HistoryLine, RecvKind, StreamedLines, WorkerLine};
use flowline_loadgen::worker::{self, WorkerConfig};
use tokio_util::sync::CancellationToken;

use crate::util::{SECRET, small_scenario, start_node};

/// One streaming worker (one shard, two threads) of `scenario`; its lines.
async fn run_streamed(scenario: Scenario) -> Vec<String> {
    let node = start_node().await;
    let scenario = Arc::new(scenario);
    let plan = Arc::new(
        plan::provision(&scenario, &node.http, SECRET)
            .await
            .unwrap(),
    );
    let cfg = WorkerConfig {
        scenario,
        plan,
        shard: Shard { index: 0, count: 1 },
        targets: vec![node.ws.clone()],
        start_at: Some(std::time::SystemTime::now()),
        clock_offset_us: 0,
        threads: 2,
        metrics: None,
        out: None,
    };
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let out = StreamedLines(move |l: &str| sink.lock().unwrap().push(l.to_string()));
    worker::run_to(cfg, CancellationToken::new(), out)
        .await
        .unwrap();
    lines.lock().unwrap().clone()
}

fn summarize(scenario: &Scenario, lines: &[String], spill: Option<&std::path::Path>) -> Summary {
    let mut agg = Aggregator::new(scenario, 1);
    if let Some(dir) = spill {
        agg.spill_to(dir).unwrap();
    }
    for l in lines {
        agg.ingest(0, l).unwrap();
    }
    agg.summarize(RunMeta::default())
}

fn parse(line: &str) -> WorkerLine {
    serde_json::from_str(line).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_history_is_checked_like_one_done_line() {
    let scenario = small_scenario(120, 29);
    let lines = run_streamed(scenario.clone()).await;
    let histories: Vec<HistoryLine> = lines
        .iter()
        .filter_map(|l| match parse(l) {
            WorkerLine::History(h) => Some(h),
            _ => None,
        })
        .collect();
    assert!(histories.len() >= 3, "{} history lines", histories.len());
    let WorkerLine::Done(done) = parse(lines.last().unwrap()) else {
        panic!("the last line is not done");
    };
    assert!(done.sends.is_empty() && done.receives.is_empty() && done.acked.is_empty());
    assert!(!done.recipients.is_empty());

    // The same events in the done line, as a worker that does not stream sends them.
    let mut whole = *done.clone();
    for h in &histories {
        whole.sends.extend_from_slice(&h.sends);
        whole.receives.extend_from_slice(&h.receives);
    }
    assert!(whole.sends.len() > 50 && whole.receives.len() > 500);
    let mut one_line: Vec<String> = lines
        .iter()
        .filter(|l| l.starts_with(r#"{"type":"tick""#))
        .cloned()
        .collect();
    one_line.push(serde_json::to_string(&WorkerLine::Done(Box::new(whole))).unwrap());

    let tmp = tempfile::tempdir().unwrap();
    let spilled = summarize(&scenario, &lines, Some(&tmp.path().join("history")));
    assert!(!tmp.path().join("history").exists(), "removed once checked");
    let c = &spilled.correctness;
    assert!(c.expected > 500, "{c:?}");
    assert!(c.is_clean(), "{c:?}");
    for (k, r) in &c.anomalies {
        assert_eq!(r.count, 0, "{k:?}: {r:?}");
    }
    assert_eq!(c.anomalies.len(), Anomaly::ALL.len());
    assert_eq!(summarize(&scenario, &lines, None).correctness, *c);
    assert_eq!(summarize(&scenario, &one_line, None).correctness, *c);

    // A delivery taken out of its history line, with a later one of the same receiver's
    // session after it: a poll skip, that one, and nothing else.
    let open = |ch: i64, user: u32| {
        done.recipients
            .iter()
            .any(|r| r.channel == ch && r.user == user && r.chains.last().is_some_and(|c| c.open))
    };
    let all: Vec<_> = histories.iter().flat_map(|h| h.receives.iter()).collect();
    let i = (0..all.len())
        .find(|&i| {
            let e = all[i];
            e.kind == RecvKind::Message
                && e.sender != e.receiver
                && open(e.channel, e.receiver)
                && all[i + 1..].iter().any(|l| {
                    l.kind == RecvKind::Message
                        && (l.channel, l.receiver, l.epoch) == (e.channel, e.receiver, e.epoch)
                })
        })
        .expect("a delivery in the middle of a stream");
    let e = *all[i];
    let mut cut = lines.clone();
    let line = cut
        .iter_mut()
        .find(|l| match parse(l) {
            WorkerLine::History(h) => h.receives.contains(&e),
            _ => false,
        })
        .unwrap();
    let WorkerLine::History(mut h) = parse(line) else {
        unreachable!()
    };
    let at = h.receives.iter().position(|x| *x == e).unwrap();
    h.receives.remove(at);
    *line = serde_json::to_string(&WorkerLine::History(h)).unwrap();
    let s = summarize(&scenario, &cut, Some(&tmp.path().join("history")));
    for (k, r) in &s.correctness.anomalies {
        if *k == Anomaly::PollSkip {
            let got: Vec<_> = r
                .offenders
                .iter()
                .map(|o| (o.channel, o.seq, o.receiver))
                .collect();
            assert_eq!(got, [(e.channel, e.seq, e.receiver)]);
            assert_eq!(r.count, 1);
        } else {
            assert_eq!(r.count, 0, "{k:?} besides poll_skip: {r:?}");
        }
    }
}
