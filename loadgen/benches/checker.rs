//! The stream checker alone on a synthetic history: 1,000,000 acked messages from 10,000
//! users in 1,000 channels of 10 members, every member but the author receiving each
//! (9,000,000 receive events, arrival order interleaved across channels), with every
//! 1,000,000th delivery dropped. Prints the check's wall time; measure peak RSS with
//! `/usr/bin/time -v`. Run: `cargo bench -p flowline-loadgen --bench checker`.

use std::time::Instant;

use flowline_loadgen::checker::{Anomaly, streams};
use flowline_loadgen::wire::{Chain, Outcome, RecipientRecord, RecvKind, RecvRecord, SendRecord};

const USERS: u32 = 10_000;
const MEMBERS: u32 = 10;
const MESSAGES: u32 = 1_000_000;
const DROP_EVERY: u64 = 1_000_000;

fn main() {
    let channels = USERS / MEMBERS;
    let rounds = MESSAGES / channels;
    let t0 = Instant::now();
    let mut sends = Vec::with_capacity(MESSAGES as usize);
    let mut receives = Vec::with_capacity((MESSAGES * (MEMBERS - 1) + USERS) as usize);
    let mut recipients = Vec::with_capacity(USERS as usize);
    for u in 0..USERS {
        let channel = i64::from(u / MEMBERS);
        receives.push(RecvRecord {
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
        recipients.push(RecipientRecord {
            user: u,
            channel,
            chains: vec![Chain {
                from: 0,
                open: true,
            }],
            ..RecipientRecord::default()
        });
    }
    let mut deliveries = 0u64;
    let mut dropped = 0u64;
    for round in 0..rounds {
        let seq = i64::from(round) + 1;
        let at_ms = round * 60;
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
    }
    let n_receives = receives.len();
    println!(
        "history: {} sends, {} receive events, {} users ({:.1} s to build)",
        sends.len(),
        n_receives,
        USERS,
        t0.elapsed().as_secs_f64()
    );
    let t1 = Instant::now();
    let a = streams::check(&sends, receives, &recipients);
    let secs = t1.elapsed().as_secs_f64();
    let found: u64 = a.values().map(|r| r.count).sum();
    println!(
        "checker: {secs:.2} s ({:.0} ns per receive event); anomalies {found} \
         (poll_skip {}, lost {}), {dropped} deliveries dropped",
        secs * 1e9 / n_receives as f64,
        a[&Anomaly::PollSkip].count,
        a[&Anomaly::Lost].count,
    );
    assert_eq!(found, dropped, "every dropped delivery named once");
}
