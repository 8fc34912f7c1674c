//! End to end: a real node behind deliberately misbehaving proxies (one per worker shard,
//! each hitting one delivery its own way), and the stream checker naming exactly what each
//! did — that kind, that (channel, seq, receiver), and nothing else.

use flowline_loadgen::plan::Plan;
use flowline_loadgen::scenario::Scenario;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use flowline_loadgen::aggregate::Summary;
use flowline_loadgen::checker::Anomaly;
use flowline_loadgen::plan;

use crate::faulty_proxy::{self, Fault, Proxy, SendFault, SendFaults};
use crate::util::{SECRET, run_workers, scenario_with, small_scenario, start_node, summarize};

/// Provision `scenario` on a fresh node, start one proxy per shard with `proxies`, run the
/// shards through them and summarize.
async fn run_through<F, Fut>(scenario: Scenario, shards: usize, proxies: F) -> (Summary, Vec<Proxy>)
where
    F: Fn(usize, String, HashMap<String, u32>) -> Fut,
    Fut: std::future::Future<Output = Proxy>,
{
    let scenario = Arc::new(scenario);
    let node = start_node().await;
    let plan: Arc<Plan> = Arc::new(
        plan::provision(&scenario, &node.http, SECRET)
            .await
            .unwrap(),
    );
    let tokens: HashMap<String, u32> = plan
        .users
        .iter()
        .map(|u| (u.token.clone(), u.index))
        .collect();
    let mut ps = Vec::new();
    for i in 0..shards {
        ps.push(proxies(i, node.ws.clone(), tokens.clone()).await);
    }
    let targets = ps.iter().map(|p| vec![p.url.clone()]).collect();
    let lines = run_workers(&scenario, &plan, targets, 1).await;
    (summarize(&scenario, &lines), ps)
}

pub(crate) fn offenders(s: &Summary, kind: Anomaly) -> Vec<(i64, i64, u32)> {
    let mut v: Vec<_> = s.correctness.anomalies[&kind]
        .offenders
        .iter()
        .map(|o| (o.channel, o.seq, o.receiver))
        .collect();
    v.sort_unstable();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_frame_fault_on_a_real_node_is_named_exactly() {
    let faults = [
        Fault::Drop,
        Fault::Duplicate,
        Fault::Delay,
        Fault::Rewrite,
        Fault::ReplyFirst,
        Fault::EditLost,
    ];
    let (s, proxies) = run_through(small_scenario(180, 23), faults.len(), |i, up, tokens| {
        faulty_proxy::start(up, faults[i], 40, tokens)
    })
    .await;
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
            Fault::ReplyFirst => {
                assert!(hit.followed, "a reply went first");
                Anomaly::CausalReply
            }
            Fault::EditLost => {
                assert!(hit.followed, "the edit was delivered");
                Anomaly::OrphanEdit
            }
            Fault::ReplayOnResume | Fault::GapOnResume => unreachable!("not in this run"),
        };
        want.insert(kind, (hit.channel, hit.seq, hit.receiver));
    }
    for (k, r) in &s.correctness.anomalies {
        match want.get(k) {
            Some(w) => assert_eq!(offenders(&s, *k), [*w], "{k:?}: {r:?}"),
            None => assert_eq!(r.count, 0, "{k:?}: {r:?}"),
        }
    }
    assert_eq!(s.totals.errors, 0, "{:?}", s.totals.errors_by_kind);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_send_fault_on_a_real_node_is_named_exactly() {
    let faults = [SendFault::Refuse, SendFault::Vanish, SendFault::Unanswered];
    let shared = Arc::new(Mutex::new(SendFaults::default()));
    let (s, _proxies) = run_through(small_scenario(120, 29), faults.len(), |i, up, tokens| {
        faulty_proxy::start_send(up, faults[i], 20, tokens, shared.clone())
    })
    .await;
    let hits = shared.lock().unwrap().hits.clone();
    let of = |f: SendFault| {
        let mut v: Vec<_> = hits
            .iter()
            .filter(|h| h.0 == f)
            .map(|h| (h.1, h.2, h.3))
            .collect();
        v.sort_unstable();
        v
    };
    let a = &s.correctness.anomalies;
    // The refused send was delivered: g1a at every receiver that got it.
    let refused = of(SendFault::Refuse);
    assert!(!refused.is_empty(), "the refused send was delivered");
    assert_eq!(offenders(&s, Anomaly::G1a), refused);
    // The vanished message: unseen, once.
    let vanished = of(SendFault::Vanish);
    assert!(!vanished.is_empty(), "the vanished send had receivers");
    assert_eq!(a[&Anomaly::Unseen].count, 1, "{:?}", a[&Anomaly::Unseen]);
    let o = &a[&Anomaly::Unseen].offenders[0];
    assert_eq!((o.channel, o.seq), (vanished[0].0, vanished[0].1));
    // The unanswered send reached all but one receiver.
    let partial = of(SendFault::Unanswered);
    assert_eq!(partial.len(), 1, "{hits:?}");
    assert_eq!(offenders(&s, Anomaly::UnknownDeliveredPartially), partial);
    for (k, r) in a {
        if ![
            Anomaly::G1a,
            Anomaly::Unseen,
            Anomaly::UnknownDeliveredPartially,
        ]
        .contains(k)
        {
            assert_eq!(r.count, 0, "{k:?}: {r:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_resume_fault_on_a_real_node_is_named_exactly() {
    let churn = r#"
[[personas]]
name = "churner"
messages_per_minute = 60
reconnect_every = "1s"
"#;
    let faults = [Fault::ReplayOnResume, Fault::GapOnResume];
    let (s, proxies) = run_through(
        scenario_with(120, 31, churn),
        faults.len(),
        |i, up, tokens| faulty_proxy::start(up, faults[i], 5, tokens),
    )
    .await;
    assert!(s.totals.reconnects > 20, "{:?}", s.totals);
    let mut want: HashMap<Anomaly, (i64, i64, u32)> = HashMap::new();
    for (f, p) in faults.iter().zip(&proxies) {
        let hit = p
            .hit
            .lock()
            .unwrap()
            .expect("the fault hit a resumed connection");
        let kind = match f {
            Fault::ReplayOnResume => Anomaly::ResumeReplay,
            _ => {
                assert!(hit.followed, "a later message of the channel came: {hit:?}");
                Anomaly::ResumeGap
            }
        };
        want.insert(kind, (hit.channel, hit.seq, hit.receiver));
    }
    for (k, r) in &s.correctness.anomalies {
        match want.get(k) {
            Some(w) => assert_eq!(offenders(&s, *k), [*w], "{k:?}: {r:?}"),
            None => assert_eq!(r.count, 0, "{k:?}: {r:?}"),
        }
    }
}
