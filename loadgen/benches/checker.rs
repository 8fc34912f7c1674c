//! The chat checker alone on a synthetic history: 10,000 users in 1,000 channels of 10
//! members; each round every channel gets one acked message that every member but the
//! author receives (arrival order interleaved across channels), every 1,000,000th
//! delivery dropped. 1,000 rounds are 1,000,000 messages (9,000,000 receive events);
//! `-- 2` or `-- 4` makes the run 2× or 4× as long with the same users.
//!
//! The history is streamed into the store as a run's `history` lines are (one append per
//! round, spilled to bucket files in a temporary folder), then checked group by group
//! (`checker::history::check_history`, what summary.json's `correctness` comes from).
//! `-- 1 memory` keeps it in memory instead (the whole history at once, as before
//! streaming). Prints the times and the process's peak RSS (VmHWM).
//!
//! Run: `cargo bench --workspace --bench checker -- 4` (the workspace's feature set: `-p`
//! would rebuild dependencies with others)

use std::time::Instant;

use flowline_loadgen::checker::Anomaly;
use flowline_loadgen::checker::history::{MAX_GROUP, check_history};
use flowline_loadgen::checker::store::HistoryStore;
use flowline_loadgen::wire::{
    Chain, Outcome, RecipientRecord, RecvKind, RecvRecord, Resources, SendRecord,
};

const USERS: u32 = 10_000;
const MEMBERS: u32 = 10;
const MESSAGES: u32 = 1_000_000;
const DROP_EVERY: u64 = 1_000_000;

fn main() {
    // `cargo bench` passes `--bench`; the numbers and words are ours.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let times: u32 = args.iter().find_map(|a| a.parse().ok()).unwrap_or(1);
    let in_memory = args.iter().any(|a| a == "memory");
    let channels = USERS / MEMBERS;
    let rounds = MESSAGES / channels * times;
    let tmp = tempfile::tempdir().expect("a temporary folder");
    let mut store = if in_memory {
        HistoryStore::in_memory()
    } else {
        HistoryStore::spilled(&tmp.path().join("history")).expect("a spill folder")
    };
    let t0 = Instant::now();
    let mut starts = Vec::with_capacity(USERS as usize);
    for u in 0..USERS {
        let channel = i64::from(u / MEMBERS);
        starts.push(RecvRecord {
            channel,
            seq: 0,
            id: 0,
            reference: 0,
            receiver: u,
            epoch: 1,
            sender: u32::MAX,
            n: 0,
            at_ms: 0,
            kind: RecvKind::Start,
        });
    }
    store.append(Vec::new(), starts);
    let mut deliveries = 0u64;
    let mut dropped = 0u64;
    // (receiver, seq) of each dropped delivery, for the receipts.
    let mut holes: Vec<(u32, i64)> = Vec::new();
    for round in 0..rounds {
        let seq = i64::from(round) + 1;
        let at_ms = round * 60;
        let mut sends = Vec::with_capacity(channels as usize);
        let mut receives = Vec::with_capacity((channels * (MEMBERS - 1)) as usize);
        for c in 0..channels {
            let sender = c * MEMBERS + round % MEMBERS;
            let id = i64::from(round) * i64::from(channels) + i64::from(c) + 1;
            sends.push(SendRecord {
                channel: i64::from(c),
                seq,
                id,
                sender,
                n: round + 1,
                at_ms,
                outcome: Outcome::Ok,
            });
            for receiver in c * MEMBERS..(c + 1) * MEMBERS {
                if receiver == sender {
                    continue;
                }
                deliveries += 1;
                if deliveries.is_multiple_of(DROP_EVERY) {
                    dropped += 1;
                    holes.push((receiver, seq));
                    continue;
                }
                receives.push(RecvRecord {
                    channel: i64::from(c),
                    seq,
                    id,
                    reference: 0,
                    receiver,
                    epoch: 1,
                    sender,
                    n: round + 1,
                    at_ms: at_ms + 5,
                    kind: RecvKind::Message,
                });
            }
        }
        store.append(sends, receives);
    }
    // Each user's receipts (as its worker compacts them): every seq (its own echoed), but
    // the dropped ones.
    holes.sort_unstable();
    let last = i64::from(rounds);
    let recipients: Vec<RecipientRecord> = (0..USERS)
        .map(|u| {
            let mut received = Vec::new();
            let mut lo = 1;
            for &(_, s) in holes.iter().filter(|h| h.0 == u) {
                if lo < s {
                    received.push((lo, s - 1));
                }
                lo = s + 1;
            }
            if lo <= last {
                received.push((lo, last));
            }
            RecipientRecord {
                user: u,
                channel: i64::from(u / MEMBERS),
                chains: vec![Chain {
                    from: 0,
                    open: true,
                }],
                received,
                ..RecipientRecord::default()
            }
        })
        .collect();
    let (acked, n_receives) = store.counts();
    let stored_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let rep = check_history(&store, &recipients, MAX_GROUP).expect("the check");
    let check_s = t1.elapsed().as_secs_f64();
    let a = &rep.anomalies;
    let found: u64 = a.values().map(|r| r.count).sum();
    let rss = Resources::of_self().map_or(0, |r| r.peak_rss_kib);
    println!(
        "history ({}): {acked} acked messages, {n_receives} receive events, {USERS} users, \
         {times}× ({stored_s:.1} s to generate and store)",
        if in_memory { "in memory" } else { "spilled" },
    );
    println!(
        "checker: {check_s:.2} s ({:.0} ns per receive event); anomalies {found} (poll_skip {}, \
         lost {}), {dropped} deliveries dropped; legacy lost {}; peak RSS {:.0} MiB",
        check_s * 1e9 / n_receives as f64,
        a[&Anomaly::PollSkip].count,
        a[&Anomaly::Lost].count,
        rep.lost,
        rss as f64 / 1024.0,
    );
    assert_eq!(found, dropped, "every dropped delivery named once");
    assert_eq!(rep.lost, dropped, "the delivery verdict counts them lost");
}
