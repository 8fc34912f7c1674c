//! The chat checker over a whole run's history as the store hands it out: the delivery
//! verdict ([`chat`](super::chat)) and the named anomalies ([`streams`](super::streams)),
//! one group of whole channels at a time, so the check holds one group, not the run.

use crate::checker::chat::ChatCheck;
use crate::checker::store::HistoryStore;
use crate::checker::streams::StreamCheck;
use crate::checker::verdict::CorrectnessReport;
use crate::error::Result;
use crate::wire::{AckedMessage, RecipientRecord};

/// Most receive events a group holds (unless one channel has more): 56 bytes each, plus
/// half that again while sorting: ~22 MB.
pub const MAX_GROUP: usize = 1 << 18;

/// Check a chat run: every acked message against the recipients' receipts, and every
/// (channel, receiver) stream for anomalies.
pub fn check_history(
    store: &HistoryStore,
    recipients: &[RecipientRecord],
    max_group: usize,
) -> Result<CorrectnessReport> {
    let mut chat = ChatCheck::default();
    let mut streams = StreamCheck::new(store.failed(), recipients);
    store.for_each_group(max_group, |g| {
        let acked: Vec<AckedMessage> = g
            .acked
            .iter()
            .map(|s| (s.channel, s.seq, s.id, s.sender))
            .collect();
        chat.add(&acked, recipients.iter().filter(|r| g.holds(r.channel)));
        streams.group(g.acked, g.receives);
    })?;
    let mut rep = chat.finish();
    rep.anomalies = streams.finish();
    Ok(rep)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::anomaly::Anomaly;
    use crate::checker::{chat, streams};
    use crate::wire::{Chain, Outcome, RecvKind, RecvRecord, SendRecord};

    const CHANNELS: i64 = 40;
    const SEQS: i64 = 30;

    /// Members of channel `c`: five of 60 users, each user in several channels.
    fn members(c: i64) -> Vec<u32> {
        (0..5).map(|k| ((c * 3 + k * 11) % 60) as u32).collect()
    }

    fn ev(c: i64, seq: i64, receiver: u32, kind: RecvKind) -> RecvRecord {
        let m = members(c);
        RecvRecord {
            channel: c,
            seq,
            id: if kind == RecvKind::Start {
                0
            } else {
                c * 1000 + seq
            },
            reference: 0,
            receiver,
            epoch: 1,
            sender: m[(seq % 5) as usize],
            n: (c * 100 + seq) as u32,
            at_ms: (seq * 100 + c) as u32,
            kind,
        }
    }

    /// 40 channels × 30 acked messages, every member receiving every other member's in
    /// order (interleaved across channels), with faults of several kinds here and there.
    fn history() -> (Vec<SendRecord>, Vec<RecvRecord>, Vec<RecipientRecord>) {
        let mut sends = Vec::new();
        let mut receives = Vec::new();
        for c in 0..CHANNELS {
            for &u in &members(c) {
                receives.push(ev(c, 0, u, RecvKind::Start));
            }
        }
        for seq in 1..=SEQS {
            for c in 0..CHANNELS {
                let m = members(c);
                let e = ev(c, seq, 0, RecvKind::Message);
                sends.push(SendRecord {
                    channel: c,
                    seq,
                    id: e.id,
                    sender: e.sender,
                    n: e.n,
                    at_ms: e.at_ms,
                    outcome: Outcome::Ok,
                });
                for (k, &u) in m.iter().enumerate() {
                    if u == e.sender {
                        continue;
                    }
                    let r = RecvRecord { receiver: u, ..e };
                    match (c, seq, k) {
                        // A poll skip, a lost tail, a duplicate, a reordering.
                        (3, 10, 1) | (8, 29..=30, 0) => continue,
                        (5, 7, 3) => receives.extend([r, r]),
                        (20, 14, 3) => {}
                        (20, 15, 3) => {
                            receives.push(r);
                            receives.push(RecvRecord {
                                seq: 14,
                                id: c * 1000 + 14,
                                ..r
                            });
                        }
                        _ => receives.push(r),
                    }
                }
            }
        }
        // A refused send delivered (g1a), an unanswered one delivered to one of four.
        for (c, outcome, to) in [(11, Outcome::Error, 1), (13, Outcome::Unknown, 2)] {
            let m = members(c);
            sends.push(SendRecord {
                channel: c,
                seq: 0,
                id: 0,
                sender: m[0],
                n: 9999,
                at_ms: 3500,
                outcome,
            });
            receives.push(RecvRecord {
                id: c * 1000 + 31,
                sender: m[0],
                n: 9999,
                receiver: m[to],
                ..ev(c, 31, 0, RecvKind::Message)
            });
        }
        let mut recipients = Vec::new();
        for c in 0..CHANNELS {
            for (k, &u) in members(c).iter().enumerate() {
                let mut rec = crate::receipts::Receipts::default();
                for e in receives
                    .iter()
                    .filter(|e| e.channel == c && e.receiver == u && e.kind == RecvKind::Message)
                {
                    rec.add(e.seq);
                }
                // One subscription closed before the end.
                let open = !(c == 30 && k == 4);
                recipients.push(rec.into_record(u, c, vec![Chain { from: 0, open }]));
            }
        }
        (sends, receives, recipients)
    }

    /// The report with every offender list sorted (groups change the order found).
    fn sorted(mut r: CorrectnessReport) -> CorrectnessReport {
        r.offenders
            .sort_by_key(|o| (o.channel, o.seq, o.recipient, format!("{:?}", o.offence)));
        for a in r.anomalies.values_mut() {
            a.offenders
                .sort_by_key(|o| (o.channel, o.seq, o.receiver, o.at_ms));
        }
        r
    }

    #[test]
    fn groups_of_whole_channels_check_like_the_whole_history() {
        let (sends, receives, recipients) = history();
        // The checkers called on the whole history at once.
        let acked: Vec<_> = sends
            .iter()
            .filter(|s| s.outcome == Outcome::Ok)
            .map(|s| (s.channel, s.seq, s.id, s.sender))
            .collect();
        let mut whole = chat::check(&acked, &recipients);
        whole.anomalies = streams::check(&sends, receives.clone(), &recipients);
        let counts: BTreeMap<Anomaly, u64> =
            whole.anomalies.iter().map(|(k, r)| (*k, r.count)).collect();
        for k in [
            Anomaly::PollSkip,
            Anomaly::Lost,
            Anomaly::Duplicate,
            Anomaly::Nonmonotonic,
            Anomaly::G1a,
            Anomaly::UnknownDeliveredPartially,
        ] {
            assert!(counts[&k] > 0, "{k:?} not caused: {counts:?}");
        }
        assert!(whole.lost > 0 && whole.duplicated > 0 && whole.reordered > 0);

        let mut mem = HistoryStore::in_memory();
        mem.append(sends.clone(), receives.clone());
        assert_eq!(check_history(&mem, &recipients, MAX_GROUP).unwrap(), whole);

        // Spilled in line-sized batches, read back in groups small enough to split.
        let dir = tempfile::tempdir().unwrap();
        let spill_dir = dir.path().join("history");
        let mut store = HistoryStore::spilled(&spill_dir).unwrap();
        let (mut s, mut r) = (sends.as_slice(), receives.as_slice());
        while !s.is_empty() || !r.is_empty() {
            let (a, b) = (s.len().min(37), r.len().min(101));
            store.append(s[..a].to_vec(), r[..b].to_vec());
            (s, r) = (&s[a..], &r[b..]);
        }
        let mut groups = 0;
        let mut held: BTreeMap<i64, u32> = BTreeMap::new();
        store
            .for_each_group(8, |g| {
                groups += 1;
                for c in 0..CHANNELS {
                    if g.holds(c) {
                        *held.entry(c).or_default() += 1;
                    }
                }
                assert!(g.receives.iter().all(|e| g.holds(e.channel)));
                assert!(g.acked.iter().all(|s| g.holds(s.channel)));
            })
            .unwrap();
        assert!(
            groups > 64,
            "the buckets over 8 events split: {groups} groups"
        );
        assert!(
            held.values().all(|&n| n == 1),
            "each channel in one group: {held:?}"
        );
        assert_eq!(held.len(), CHANNELS as usize);
        for max_group in [8, MAX_GROUP] {
            let got = check_history(&store, &recipients, max_group).unwrap();
            assert_eq!(sorted(got), sorted(whole.clone()), "max_group {max_group}");
        }
        drop(store);
        assert!(!spill_dir.exists(), "the spill folder goes with the store");
    }
}
