//! Tests of the aggregator (`aggregate.rs`): merging ticks, marks, the summary.

use super::*;
use crate::recorder::Recorder;
use crate::wire::{Chain, RecipientRecord};

fn scenario() -> Scenario {
    Scenario::parse(
        "t",
        "[run]\nname = \"agg\"\nduration = \"2s\"\nseed = 1\n[population]\nusers = 4\n[[thresholds]]\nexpr = \"delivery.p99 < 10ms\"\n[[thresholds]]\nexpr = \"lost == 0\"\n",
    )
    .unwrap()
}

fn tick_line(worker: usize, t: u64, measuring: bool, delivery_us: &[u64]) -> String {
    let mut r = Recorder::default();
    for &us in delivery_us {
        r.record(Metric::Delivery, us);
    }
    r.counters.delivered = delivery_us.len() as u64;
    r.counters.sent = 1;
    let tick = Tick {
        worker,
        t,
        elapsed_ms: t * 1000,
        measuring,
        drain: false,
        users: 2,
        counters: r.counters.clone(),
        hist: r.encode_hists().unwrap(),
    };
    serde_json::to_string(&WorkerLine::Tick(tick)).unwrap()
}

fn done_line(worker: usize, lose: bool) -> String {
    let done = Done {
        worker,
        peak_users: 2,
        acked: if worker == 0 {
            vec![(1, 1, 11, 0), (1, 2, 12, 0)]
        } else {
            vec![]
        },
        recipients: if worker == 1 {
            vec![RecipientRecord {
                user: 1,
                channel: 1,
                chains: vec![Chain {
                    from: 0,
                    open: true,
                }],
                received: if lose { vec![(1, 1)] } else { vec![(1, 2)] },
                ..RecipientRecord::default()
            }]
        } else {
            vec![]
        },
        ..Done::default()
    };
    serde_json::to_string(&WorkerLine::Done(Box::new(done))).unwrap()
}

#[test]
fn merges_workers_and_writes_files() {
    let mut a = Aggregator::new(&scenario(), 2);
    a.ingest(0, "some log noise").unwrap();
    a.ingest(0, r#"{"event":"listening"}"#).unwrap();
    a.ingest(0, &tick_line(0, 1, false, &[50_000])).unwrap();
    a.ingest(1, &tick_line(1, 1, false, &[])).unwrap();
    a.ingest(0, &tick_line(0, 2, true, &[1000, 2000])).unwrap();
    a.ingest(1, &tick_line(1, 2, true, &[3000])).unwrap();
    let p = a.progress();
    assert_eq!((p.users, p.deliveries_per_s, p.sends_per_s), (4, 3, 2));
    assert!(p.to_string().contains("users      4"), "{p}");
    a.ingest(0, &done_line(0, false)).unwrap();
    a.ingest(1, &done_line(1, false)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = a.finish(dir.path(), RunMeta::default()).unwrap();
    // The warm-up second (50 ms) is outside the measured window.
    assert_eq!(s.latency_us["delivery"].count, 3);
    assert!(s.latency_us["delivery"].max < 4000);
    assert_eq!(s.measured.delivered, 3);
    assert_eq!((s.correctness.expected, s.correctness.lost), (2, 0));
    assert!(s.passed, "{s:?}");
    let hlog = std::fs::read_to_string(dir.path().join("histograms.hlog")).unwrap();
    assert!(hlog.contains("Tag=delivery,"), "{hlog}");
    let csv = std::fs::read_to_string(dir.path().join("timeline.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3);
    let back: Summary =
        serde_json::from_slice(&std::fs::read(dir.path().join("summary.json")).unwrap()).unwrap();
    assert_eq!(
        (back.passed, &back.correctness, &back.measured),
        (s.passed, &s.correctness, &s.measured)
    );
}

#[test]
fn workers_cost_is_summed_and_divided_by_users_and_deliveries() {
    let mut a = Aggregator::new(&scenario(), 2);
    a.ingest(0, &tick_line(0, 1, false, &[])).unwrap();
    a.ingest(1, &tick_line(1, 1, false, &[])).unwrap();
    a.ingest(0, &tick_line(0, 2, true, &[1000, 2000])).unwrap();
    a.ingest(1, &tick_line(1, 2, true, &[3000, 4000])).unwrap();
    let s = a.summarize(RunMeta::default());
    assert_eq!(s.loadgen, None, "no worker told its usage yet");
    for w in 0..2 {
        let mut d: WorkerLine = serde_json::from_str(&done_line(w, false)).unwrap();
        if let WorkerLine::Done(d) = &mut d {
            d.totals.delivered = 2;
            d.resources = Some(crate::wire::Resources {
                cpu_s: 0.5 + w as f64,
                peak_rss_kib: 100,
            });
        }
        a.ingest(w, &serde_json::to_string(&d).unwrap()).unwrap();
    }
    let s = a.summarize(RunMeta::default());
    let c = s.loadgen.expect("both workers told");
    assert_eq!((c.workers, c.peak_rss_kib), (2, 200));
    assert!((c.cpu_s - 2.0).abs() < 1e-9, "{c:?}");
    // 2 users per worker at the peak (second 1), 4 deliveries in all.
    assert_eq!((s.peak_users, s.peak_users_at_s), (4, Some(1)));
    assert!((c.rss_kib_per_user - 50.0).abs() < 1e-9, "{c:?}");
    assert!((c.cpu_us_per_delivery - 500_000.0).abs() < 1e-6, "{c:?}");
}

#[test]
fn connect_time_is_the_first_second_at_the_sampled_peak() {
    // Each worker's threads peaked at different moments: the done lines add up to more
    // users than any one second saw, and the time everybody was connected is still known.
    let mut a = Aggregator::new(&scenario(), 2);
    for t in 1..=3 {
        a.ingest(0, &tick_line(0, t, t > 1, &[])).unwrap();
        a.ingest(1, &tick_line(1, t, t > 1, &[])).unwrap();
    }
    for w in 0..2 {
        let mut d: WorkerLine = serde_json::from_str(&done_line(w, false)).unwrap();
        if let WorkerLine::Done(d) = &mut d {
            d.peak_users = 3;
        }
        a.ingest(w, &serde_json::to_string(&d).unwrap()).unwrap();
    }
    let s = a.summarize(RunMeta::default());
    assert_eq!((s.peak_users, s.peak_users_at_s), (6, Some(1)));
}

#[test]
fn hlog_round_trips_through_the_reader() {
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    let mut a = Aggregator::new(&scenario(), 1);
    a.ingest(0, &tick_line(0, 1, true, &[100, 200])).unwrap();
    a.ingest(0, &tick_line(0, 2, true, &[300])).unwrap();
    let log = a.hlog().unwrap();
    let mut counts = Vec::new();
    for e in IntervalLogIterator::new(&log) {
        if let LogEntry::Interval(h) = e.unwrap() {
            assert_eq!(h.tag().unwrap().as_str(), "delivery");
            let bytes = base64::Engine::decode(
                &base64::engine::general_purpose::STANDARD,
                h.encoded_histogram(),
            )
            .unwrap();
            let hist: Histogram<u64> = hdrhistogram::serialization::Deserializer::new()
                .deserialize(&mut bytes.as_slice())
                .unwrap();
            counts.push(hist.len());
        }
    }
    assert_eq!(counts, [2, 1]);
}

/// Deterministic samples over the whole histogram range (clamped ends included).
fn samples(seed: u64, n: usize) -> Vec<u64> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // Log-spread: 1 µs .. ~2^27 µs (beyond 60 s, clamped).
            let bits = (x >> 59) as u32 + 1;
            (x >> 11) % (1u64 << bits.min(27))
        })
        .collect()
}

fn counts(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

#[test]
fn merged_workers_equal_one_histogram_of_all_samples() {
    const WORKERS: usize = 4;
    const SECONDS: u64 = 3;
    let mut a = Aggregator::new(&scenario(), WORKERS);
    let mut whole = histogram::new_histogram();
    let mut per_second: Vec<Histogram<u64>> = Vec::new();
    for t in 1..=SECONDS {
        let mut one = histogram::new_histogram();
        // Shards report out of order, as pipes and sockets deliver them.
        for w in (0..WORKERS).rev() {
            let xs = samples(t * 100 + w as u64, 500 + 300 * w);
            for &us in &xs {
                histogram::record(&mut one, us);
            }
            a.ingest(w, &tick_line(w, t, true, &xs)).unwrap();
        }
        whole.add(&one).unwrap();
        per_second.push(one);
    }
    for (i, one) in per_second.iter().enumerate() {
        // Every shard reported: the second is sealed (compressed), and still exact.
        let iv = &a.intervals[&(i as u64 + 1)];
        assert!(iv.open.is_none());
        let merged = iv.hist(Metric::Delivery).unwrap();
        assert_eq!(merged.len(), one.len());
        assert_eq!(counts(&merged), counts(one), "second {}", i + 1);
    }
    let dir = tempfile::tempdir().unwrap();
    let s = a.finish(dir.path(), RunMeta::default()).unwrap();
    assert_eq!(s.latency_us["delivery"], Percentiles::of(&whole));
    assert!(s.ticks.is_complete(), "{:?}", s.ticks);
    assert_eq!(s.ticks.seconds, SECONDS);
    // timeline.csv's per-second percentiles are those of the single histograms.
    let csv = std::fs::read_to_string(dir.path().join("timeline.csv")).unwrap();
    for (row, one) in csv.lines().skip(1).zip(&per_second) {
        let cells: Vec<&str> = row.split(',').collect();
        assert_eq!(cells[10], one.value_at_quantile(0.5).to_string(), "{row}");
        assert_eq!(cells[11], one.value_at_quantile(0.99).to_string(), "{row}");
    }
}

#[test]
fn missing_late_and_repeated_ticks_are_marked() {
    let mut a = Aggregator::new(&scenario(), 3);
    for t in 1..=8 {
        a.ingest(0, &tick_line(0, t, true, &[1000])).unwrap();
        if t != 3 && t != 4 {
            a.ingest(1, &tick_line(1, t, true, &[1000])).unwrap();
        }
        // Shard 2 dies after second 5 (no done line).
        if t <= 5 {
            a.ingest(2, &tick_line(2, t, true, &[1000])).unwrap();
        }
    }
    // Shard 1's second 3 comes long after (merged, marked late); second 4 never.
    a.ingest(1, &tick_line(1, 3, true, &[7000])).unwrap();
    // Shard 0 repeats second 8: not merged twice.
    a.ingest(0, &tick_line(0, 8, true, &[9_000_000])).unwrap();
    a.ingest(0, &done_line(0, false)).unwrap();
    a.ingest(1, &done_line(1, false)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = a.finish(dir.path(), RunMeta::default()).unwrap();
    let shard = |shard: usize, seconds: &[u64]| ShardSeconds {
        shard,
        seconds: seconds.to_vec(),
    };
    assert_eq!(s.ticks.seconds, 8);
    assert_eq!(s.ticks.late, [shard(1, &[3])]);
    assert_eq!(s.ticks.missing, [shard(1, &[4]), shard(2, &[6, 7, 8])]);
    assert_eq!(s.ticks.duplicate, [shard(0, &[8])]);
    // The late tick's sample counts, the repeated one's does not.
    let d = &s.latency_us["delivery"];
    assert_eq!(d.count, 8 + 7 + 5);
    assert!(d.max < 8000, "{d:?}");
    assert!(!s.passed);
    for p in [
        "no tick from shard 1: second 4 (its samples are missing)",
        "no tick from shard 2: seconds 6-8 (its samples are missing)",
        "repeated tick from shard 0: second 8 (only the first one was merged)",
    ] {
        assert!(s.problems.iter().any(|x| x == p), "{p}: {:?}", s.problems);
    }
    let back: Summary =
        serde_json::from_slice(&std::fs::read(dir.path().join("summary.json")).unwrap()).unwrap();
    assert_eq!(back.ticks, s.ticks);
    // A tick after its shard's done line is late too.
    a.ingest(0, &tick_line(0, 9, true, &[])).unwrap();
    assert_eq!(a.ticks().late[0], shard(0, &[9]));
    assert_eq!(
        shard(2, &[1, 2, 3, 5, 7, 8]).to_string(),
        "shard 2: seconds 1-3, 5, 7-8"
    );
}

#[test]
fn loss_and_missing_workers_fail_the_run() {
    let mut a = Aggregator::new(&scenario(), 2);
    a.ingest(0, &tick_line(0, 1, true, &[1000])).unwrap();
    a.ingest(0, &done_line(0, true)).unwrap();
    a.ingest(1, &done_line(1, true)).unwrap();
    let s = a.summarize(RunMeta::default());
    assert_eq!(s.correctness.lost, 1);
    assert!(!s.passed);
    assert!(!s.thresholds[1].passed);

    let mut a = Aggregator::new(&scenario(), 2);
    a.ingest(0, &tick_line(0, 1, true, &[1000])).unwrap();
    a.ingest(0, &done_line(0, false)).unwrap();
    let s = a.summarize(RunMeta::default());
    assert!(!s.passed);
    assert_eq!(
        s.problems,
        [
            "worker 1 did not finish (no done line)",
            "no tick from shard 1: second 1 (its samples are missing)"
        ]
    );
    // `lost` is unknown without worker 1's history, so its threshold fails.
    assert_eq!(s.thresholds[1].actual, None);
    assert!(a.ingest(5, &done_line(0, false)).is_err());
    assert!(a.ingest(0, r#"{"type":"tick","t":"x"}"#).is_err());
}
