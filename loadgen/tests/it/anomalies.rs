//! End to end: a real node behind deliberately misbehaving proxies (one per worker shard,
//! each hitting one delivery its own way), and the stream checker naming exactly what each
//! did — that kind, that (channel, seq, receiver), and nothing else.

use std::collections::HashMap;
use std::sync::Arc;

use flowline_loadgen::aggregate::{Aggregator, RunMeta};
use flowline_loadgen::checker::Anomaly;
use flowline_loadgen::plan::{self, Shard};
use flowline_loadgen::worker::{self, WorkerConfig};
use tokio_util::sync::CancellationToken;

use crate::faulty_proxy::{self, Fault};
use crate::util::{SECRET, small_scenario, start_node};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_frame_fault_on_a_real_node_is_named_exactly() {
    let faults = [Fault::Drop, Fault::Duplicate, Fault::Delay, Fault::Rewrite];
    let scenario = Arc::new(small_scenario(160, 23));
    let node = start_node().await;
    let plan = Arc::new(
        plan::provision(&scenario, &node.http, SECRET)
            .await
            .unwrap(),
    );
    let tokens: HashMap<String, u32> = plan
        .users
        .iter()
        .map(|u| (u.token.clone(), u.index))
        .collect();
    let mut proxies = Vec::new();
    for f in faults {
        proxies.push(faulty_proxy::start(node.ws.clone(), f, 40, tokens.clone()).await);
    }
    let start_at = Some(std::time::SystemTime::now());
    let mut joins = Vec::new();
    for (index, p) in proxies.iter().enumerate() {
        let cfg = WorkerConfig {
            scenario: scenario.clone(),
            plan: plan.clone(),
            shard: Shard {
                index,
                count: faults.len(),
            },
            targets: vec![p.url.clone()],
            start_at,
            threads: 1,
            metrics: None,
            out: None,
        };
        joins.push(tokio::spawn(async move {
            let mut lines = Vec::new();
            worker::run(cfg, CancellationToken::new(), |l| lines.push(l.to_string()))
                .await
                .unwrap();
            lines
        }));
    }
    let mut agg = Aggregator::new(&scenario, faults.len());
    for (w, j) in joins.into_iter().enumerate() {
        for l in j.await.unwrap() {
            agg.ingest(w, &l).unwrap();
        }
    }
    let s = agg.summarize(RunMeta::default());
    let a = &s.correctness.anomalies;
    let mut want: HashMap<Anomaly, (i64, i64, u32)> = HashMap::new();
    for (f, p) in faults.iter().zip(&proxies) {
        let hit = p.hit.lock().unwrap().expect("the fault hit a delivery");
        let kind = match f {
            Fault::Drop if hit.followed => Anomaly::PollSkip,
            Fault::Drop => Anomaly::Lost,
            Fault::Duplicate => Anomaly::Duplicate,
            Fault::Delay => {
                assert!(hit.followed, "the held frame was overtaken");
                Anomaly::Nonmonotonic
            }
            Fault::Rewrite => Anomaly::InconsistentSeq,
        };
        want.insert(kind, (hit.channel, hit.seq, hit.receiver));
    }
    for (k, r) in a {
        let got: Vec<_> = r
            .offenders
            .iter()
            .map(|o| (o.channel, o.seq, o.receiver))
            .collect();
        match want.get(k) {
            Some(w) => assert_eq!(got, [*w], "{k:?}: {r:?}"),
            None => assert_eq!(r.count, 0, "{k:?}: {r:?}"),
        }
    }
    assert_eq!(s.totals.errors, 0, "{:?}", s.totals.errors_by_kind);
}
