//! The stream checker: names every delivery anomaly ([`Anomaly`]) from the workers' send
//! outcomes and receive logs, one channel at a time and, within it, one receiver's stream
//! at a time, in arrival order.
//!
//! ```text
//! sends ──▶ acked by (channel, seq); refused / unanswered by (sender, nonce n)
//! receives ──▶ sorted by (channel, receiver), arrival order kept
//!   per channel: index seq → message (acked, seen by anyone, outcome)
//!   (and which seqs hold a second copy of one send: its nonce stored twice)
//!     per receiver: epochs (start / resume) ─▶ duplicate, replay, nonmonotonic,
//!                   inconsistent seq, g1a, causal reply, orphan edit as events arrive;
//!                   holes inside an epoch (poll skip, resume gap) and the tail of an
//!                   open subscription (lost) at the stream's end
//! ```
//!
//! Memory: one group's sorted logs (see [`StreamCheck`]; the whole history when called
//! as [`check`]) plus one channel's index and one stream's seq ranges.

use std::collections::{HashMap, HashSet};

use flowline_protocol::{ChannelId, MessageId, Seq};

use crate::anomaly::{Anomalies, Anomaly, AnomalyOffender, Tally};
use crate::receipts::{Receipts, contains};
use crate::wire::{Outcome, RecipientRecord, RecvKind, RecvRecord, SendRecord};

/// What the checker knows of one message of the channel being checked.
#[derive(Debug, Clone, Copy)]
struct Msg {
    id: MessageId,
    sender: u32,
    at_ms: u32,
    acked: bool,
    /// Its send got no answer.
    unknown: bool,
    /// Its send was refused.
    refused: bool,
    /// Some receiver got it.
    seen: bool,
    /// Already counted as `unseen`.
    unseen_noted: bool,
}

/// One subscription of a stream: from a start or resume to the next.
#[derive(Debug, Clone, Copy)]
struct Epoch {
    kind: RecvKind,
    from: Seq,
    first: Option<Seq>,
    max: Seq,
    /// When it began (ms since the run's start).
    at_ms: u32,
}

/// One channel's index.
struct Channel {
    id: ChannelId,
    msgs: HashMap<Seq, Msg>,
    /// Seqs of `msgs`, sorted.
    seqs: Vec<Seq>,
    /// Message id → seq (for reply parents).
    by_id: HashMap<MessageId, Seq>,
    /// Seqs holding a second copy of one send (its nonce already at another seq: a
    /// retried post the node stored twice).
    copies: HashSet<Seq>,
}

/// Check every stream; `recipients` tell whose subscriptions were open at the end.
pub fn check(
    sends: &[SendRecord],
    receives: Vec<RecvRecord>,
    recipients: &[RecipientRecord],
) -> Anomalies {
    let mut c = StreamCheck::new(sends, recipients);
    let acked: Vec<SendRecord> = sends
        .iter()
        .filter(|s| s.outcome == Outcome::Ok)
        .copied()
        .collect();
    c.group(acked, receives);
    c.finish()
}

/// The stream checker fed group by group: each group holds whole channels (every acked
/// send and every receive event of them, each receiver's in arrival order), so a run's
/// history need not be in memory at once. What spans groups is small: the refused and
/// unanswered sends (looked up by nonce) and whose subscriptions were open at the end.
pub struct StreamCheck {
    failed: HashMap<(u32, u32), Outcome>,
    open: HashSet<(ChannelId, u32)>,
    tally: Tally,
}

impl StreamCheck {
    /// A checker knowing the sends that were not acked (`sends` may hold acked ones too:
    /// they are skipped) and the recipients' subscriptions.
    pub fn new(sends: &[SendRecord], recipients: &[RecipientRecord]) -> Self {
        StreamCheck {
            failed: sends
                .iter()
                .filter(|s| s.outcome != Outcome::Ok)
                .map(|s| ((s.sender, s.n), s.outcome))
                .collect(),
            open: recipients
                .iter()
                .filter(|r| r.chains.last().is_some_and(|c| c.open))
                .map(|r| (r.channel, r.user))
                .collect(),
            tally: Tally::default(),
        }
    }

    /// Check the streams of one group of whole channels: its acked sends and receive
    /// events (any order across receivers; each receiver's in arrival order).
    pub fn group(&mut self, mut acked: Vec<SendRecord>, mut receives: Vec<RecvRecord>) {
        acked.sort_unstable_by_key(|s| (s.channel, s.seq));
        // Stable: each receiver's events keep their arrival order.
        receives.sort_by_key(|r| (r.channel, r.receiver));
        let mut rest = receives.as_slice();
        while let Some(first) = rest.first() {
            let channel = first.channel;
            let n = rest.partition_point(|r| r.channel == channel);
            let (events, tail) = rest.split_at(n);
            rest = tail;
            let lo = acked.partition_point(|s| s.channel < channel);
            let hi = acked.partition_point(|s| s.channel <= channel);
            let mut ch = index(channel, &acked[lo..hi], events, &self.failed);
            let mut streams = events;
            while let Some(e) = streams.first() {
                let receiver = e.receiver;
                let k = streams.partition_point(|r| r.receiver == receiver);
                let (stream, more) = streams.split_at(k);
                streams = more;
                let is_open = self.open.contains(&(channel, receiver));
                check_stream(
                    &mut ch,
                    receiver,
                    stream,
                    is_open,
                    &self.failed,
                    &mut self.tally,
                );
            }
        }
    }

    /// Every kind's report.
    pub fn finish(self) -> Anomalies {
        self.tally.finish()
    }
}

/// Index one channel's messages: acked sends, then whatever receivers got.
fn index(
    id: ChannelId,
    acked: &[SendRecord],
    events: &[RecvRecord],
    failed: &HashMap<(u32, u32), Outcome>,
) -> Channel {
    let mut msgs: HashMap<Seq, Msg> = HashMap::with_capacity(acked.len());
    for s in acked {
        msgs.entry(s.seq).or_insert(Msg {
            id: s.id,
            sender: s.sender,
            at_ms: s.at_ms,
            acked: true,
            unknown: false,
            refused: false,
            seen: false,
            unseen_noted: false,
        });
    }
    // The seq each send (sender, nonce n) was stored at, to find a send stored twice.
    let mut by_nonce: HashMap<(u32, u32), Seq> =
        acked.iter().map(|s| ((s.sender, s.n), s.seq)).collect();
    let mut copies = HashSet::new();
    for e in events.iter().filter(|e| e.kind == RecvKind::Message) {
        let outcome = failed.get(&(e.sender, e.n)).copied();
        if e.sender != u32::MAX && !msgs.contains_key(&e.seq) {
            let first = *by_nonce.entry((e.sender, e.n)).or_insert(e.seq);
            if first != e.seq {
                copies.insert(e.seq);
            }
        }
        let m = msgs.entry(e.seq).or_insert(Msg {
            id: e.id,
            sender: e.sender,
            at_ms: e.at_ms,
            acked: false,
            unknown: false,
            refused: false,
            seen: false,
            unseen_noted: false,
        });
        m.seen = true;
        if !m.acked && m.id == e.id {
            m.unknown |= outcome == Some(Outcome::Unknown);
            m.refused |= outcome == Some(Outcome::Error);
        }
    }
    let mut seqs: Vec<Seq> = msgs.keys().copied().collect();
    seqs.sort_unstable();
    let by_id = if events.iter().any(|e| e.reference != 0) {
        msgs.iter().map(|(&s, m)| (m.id, s)).collect()
    } else {
        HashMap::new()
    };
    Channel {
        id,
        msgs,
        seqs,
        by_id,
        copies,
    }
}

/// Check one receiver's stream of one channel.
fn check_stream(
    ch: &mut Channel,
    receiver: u32,
    stream: &[RecvRecord],
    open: bool,
    failed: &HashMap<(u32, u32), Outcome>,
    tally: &mut Tally,
) {
    let mut received = Receipts::default();
    let mut epoch_got = Receipts::default();
    let mut epochs: Vec<Epoch> = Vec::new();
    let mut cur: Option<Epoch> = None;
    // Start of the current subscription chain (resumes continue it).
    let mut chain_from: Seq = 0;
    // Seqs already named by a causal or orphan-edit anomaly (not counted again).
    let mut excused: Vec<Seq> = Vec::new();
    let channel = ch.id;
    for e in stream {
        let offender = |seq: Seq, message: Option<MessageId>| AnomalyOffender {
            channel,
            seq,
            message,
            receiver,
            at_ms: e.at_ms,
            subscribed_at_ms: None,
        };
        match e.kind {
            RecvKind::Start | RecvKind::Resume => {
                epochs.extend(cur.take());
                let kind = if e.kind == RecvKind::Resume && !epochs.is_empty() {
                    RecvKind::Resume
                } else {
                    chain_from = e.seq;
                    RecvKind::Start
                };
                cur = Some(Epoch {
                    kind,
                    from: e.seq,
                    first: None,
                    max: e.seq,
                    at_ms: e.at_ms,
                });
                epoch_got = Receipts::default();
            }
            RecvKind::Edit | RecvKind::Delete => {
                if e.seq > chain_from
                    && !contains(&received.ranges, e.seq)
                    && !excused.contains(&e.seq)
                {
                    tally.note(Anomaly::OrphanEdit, offender(e.seq, Some(e.id)));
                    excused.push(e.seq);
                }
            }
            RecvKind::Message => {
                let ep = cur.get_or_insert(Epoch {
                    kind: RecvKind::Start,
                    from: e.seq - 1,
                    first: None,
                    max: e.seq - 1,
                    at_ms: e.at_ms,
                });
                if let Some(m) = ch.msgs.get(&e.seq)
                    && m.id != e.id
                {
                    tally.note(Anomaly::InconsistentSeq, offender(e.seq, Some(e.id)));
                }
                if !ch.copies.is_empty() && ch.copies.contains(&e.seq) {
                    tally.note(Anomaly::Duplicate, offender(e.seq, Some(e.id)));
                }
                if failed.get(&(e.sender, e.n)) == Some(&Outcome::Error) {
                    tally.note(Anomaly::G1a, offender(e.seq, Some(e.id)));
                }
                if e.reference != 0
                    && let Some(&parent) = ch.by_id.get(&e.reference)
                    && parent > chain_from
                    && !contains(&received.ranges, parent)
                    && !excused.contains(&parent)
                {
                    tally.note(Anomaly::CausalReply, offender(e.seq, Some(e.id)));
                    excused.push(parent);
                }
                if contains(&received.ranges, e.seq) {
                    let kind = if ep.kind == RecvKind::Resume && !contains(&epoch_got.ranges, e.seq)
                    {
                        Anomaly::ResumeReplay
                    } else {
                        Anomaly::Duplicate
                    };
                    tally.note(kind, offender(e.seq, Some(e.id)));
                    epoch_got.add(e.seq);
                    continue;
                }
                if e.seq < ep.max && !excused.contains(&e.seq) {
                    tally.note(Anomaly::Nonmonotonic, offender(e.seq, Some(e.id)));
                }
                received.add(e.seq);
                epoch_got.add(e.seq);
                ep.first.get_or_insert(e.seq);
                ep.max = ep.max.max(e.seq);
            }
        }
    }
    epochs.extend(cur);
    // Holes inside each epoch: seqs of existing messages between its start and the
    // largest seq it delivered.
    for ep in &epochs {
        let lo = ch.seqs.partition_point(|&s| s <= ep.from);
        let hi = ch.seqs.partition_point(|&s| s <= ep.max);
        for i in lo..hi {
            let s = ch.seqs[i];
            if contains(&received.ranges, s) {
                continue;
            }
            let kind = if ep.kind == RecvKind::Resume && ep.first.is_some_and(|f| s < f) {
                Anomaly::ResumeGap
            } else {
                Anomaly::PollSkip
            };
            missing(ch, receiver, s, kind, ep.at_ms, &excused, tally);
        }
    }
    // The tail of a subscription that lasted to the end.
    if open && let Some(last) = epochs.last() {
        let kind = if last.kind == RecvKind::Resume && last.first.is_none() {
            Anomaly::ResumeGap
        } else {
            Anomaly::Lost
        };
        let lo = ch.seqs.partition_point(|&s| s <= last.max);
        for i in lo..ch.seqs.len() {
            let s = ch.seqs[i];
            if !contains(&received.ranges, s) {
                missing(ch, receiver, s, kind, last.at_ms, &excused, tally);
            }
        }
    }
}

/// A message `receiver` was due and never got: name the anomaly (`kind` says where it
/// was missed; `epoch_at_ms` is when the subscription it was missed in began), unless it
/// is not one.
fn missing(
    ch: &mut Channel,
    receiver: u32,
    s: Seq,
    kind: Anomaly,
    epoch_at_ms: u32,
    excused: &[Seq],
    tally: &mut Tally,
) {
    let channel = ch.id;
    let Some(m) = ch.msgs.get_mut(&s) else {
        return;
    };
    // Own messages need not be echoed; refused sends must not arrive anywhere (g1a names
    // those that did); unanswered ones delivered nowhere are honest.
    if m.sender == receiver || m.refused || excused.contains(&s) || (!m.acked && !m.seen) {
        return;
    }
    let o = AnomalyOffender {
        channel,
        seq: s,
        message: Some(m.id),
        receiver,
        at_ms: m.at_ms,
        subscribed_at_ms: None,
    };
    if m.unknown {
        tally.note(Anomaly::UnknownDeliveredPartially, o);
    } else if !m.seen {
        if !m.unseen_noted {
            m.unseen_noted = true;
            tally.note(Anomaly::Unseen, o);
        }
    } else {
        let subscribed_at_ms = Some(epoch_at_ms);
        tally.note(
            kind,
            AnomalyOffender {
                subscribed_at_ms,
                ..o
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anomaly::AnomalyReport;
    use crate::wire::Chain;

    /// Channel 1; user 0 sends seqs 1..=10 (ids 1000 + seq, nonce n = seq, acked at
    /// seq × 1000 ms); users 1 and 2 receive.
    const CH: ChannelId = 1;

    fn acked(seqs: impl IntoIterator<Item = Seq>) -> Vec<SendRecord> {
        seqs.into_iter()
            .map(|s| SendRecord {
                channel: CH,
                seq: s,
                id: 1000 + s,
                sender: 0,
                n: s as u32,
                at_ms: s as u32 * 1000,
                outcome: Outcome::Ok,
            })
            .collect()
    }

    fn failed(n: u32, outcome: Outcome) -> SendRecord {
        SendRecord {
            channel: CH,
            seq: 0,
            id: 0,
            sender: 0,
            n,
            at_ms: 500,
            outcome,
        }
    }

    /// A stream builder: events of one receiver, at_ms = 100 × position.
    struct Stream {
        receiver: u32,
        epoch: u32,
        events: Vec<RecvRecord>,
    }

    impl Stream {
        fn new(receiver: u32) -> Self {
            Stream {
                receiver,
                epoch: 0,
                events: Vec::new(),
            }
        }
        fn ev(mut self, kind: RecvKind, seq: Seq, id: MessageId, reference: MessageId) -> Self {
            let at_ms = 100 * (self.events.len() as u32 + 1);
            self.events.push(RecvRecord {
                channel: CH,
                seq,
                id,
                reference,
                receiver: self.receiver,
                epoch: self.epoch,
                sender: 0,
                n: seq as u32,
                at_ms,
                kind,
            });
            self
        }
        fn start(mut self, from: Seq) -> Self {
            self.epoch += 1;
            self.ev(RecvKind::Start, from, 0, 0)
        }
        fn resume(mut self, from: Seq) -> Self {
            self.epoch += 1;
            self.ev(RecvKind::Resume, from, 0, 0)
        }
        fn got(mut self, seqs: &[Seq]) -> Self {
            for &s in seqs {
                self = self.ev(RecvKind::Message, s, 1000 + s, 0);
            }
            self
        }
        /// A message with nonce n (its seq's default n otherwise).
        fn got_n(mut self, seq: Seq, id: MessageId, n: u32) -> Self {
            self = self.ev(RecvKind::Message, seq, id, 0);
            if let Some(e) = self.events.last_mut() {
                e.n = n;
            }
            self
        }
    }

    fn open(users: &[u32]) -> Vec<RecipientRecord> {
        users
            .iter()
            .map(|&user| RecipientRecord {
                user,
                channel: CH,
                chains: vec![Chain {
                    from: 0,
                    open: true,
                }],
                ..RecipientRecord::default()
            })
            .collect()
    }

    fn run(sends: &[SendRecord], streams: Vec<Stream>) -> Anomalies {
        let receives = streams.into_iter().flat_map(|s| s.events).collect();
        check(sends, receives, &open(&[1, 2]))
    }

    /// Exactly `kind` was found, with these (seq, message, receiver, at_ms) offenders;
    /// every other kind is zero.
    fn only(a: &Anomalies, kind: Anomaly, want: &[(Seq, Option<MessageId>, u32, u32)]) {
        for (k, r) in a {
            if *k == kind {
                let got: Vec<_> = r
                    .offenders
                    .iter()
                    .map(|o| (o.seq, o.message, o.receiver, o.at_ms))
                    .collect();
                assert_eq!(got, want, "{kind:?}");
                assert!(r.offenders.iter().all(|o| o.channel == CH));
                // Only the kinds named by where they were missed say since when.
                let since = matches!(kind, Anomaly::Lost | Anomaly::PollSkip | Anomaly::ResumeGap);
                assert!(
                    r.offenders
                        .iter()
                        .all(|o| o.subscribed_at_ms.is_some() == since),
                    "{kind:?}: {:?}",
                    r.offenders
                );
                // ... and count every offender (listed or not) by that second.
                let by_start: u64 = r.subscribed_timeline.iter().map(|&(_, n)| n).sum();
                assert_eq!(by_start, if since { r.count } else { 0 }, "{kind:?}");
                assert_eq!(r.count, want.len() as u64, "{kind:?}");
            } else {
                assert_eq!(r, &AnomalyReport::default(), "{k:?} besides {kind:?}");
            }
        }
    }

    fn all10() -> Vec<Seq> {
        (1..=10).collect()
    }

    #[test]
    fn clean_history_has_zero_of_every_kind() {
        let a = run(
            &acked(1..=10),
            vec![
                Stream::new(1).start(0).got(&all10()),
                // User 2 reconnects and resumes after 4; the echo to the author is optional.
                Stream::new(2)
                    .start(0)
                    .got(&[1, 2, 3, 4])
                    .resume(4)
                    .got(&[5, 6, 7, 8, 9, 10]),
                Stream::new(0).start(0),
            ],
        );
        assert_eq!(a.len(), Anomaly::ALL.len());
        for (k, r) in &a {
            assert_eq!(r, &AnomalyReport::default(), "{k:?}");
        }
    }

    #[test]
    fn lost() {
        let a = run(
            &acked(1..=10),
            vec![
                Stream::new(1).start(0).got(&all10()),
                Stream::new(2).start(0).got(&[1, 2, 3, 4, 5, 6, 7, 8]),
            ],
        );
        only(
            &a,
            Anomaly::Lost,
            &[(9, Some(1009), 2, 9000), (10, Some(1010), 2, 10_000)],
        );
        assert_eq!(a[&Anomaly::Lost].timeline, [(9, 1), (10, 1)]);
    }

    #[test]
    fn a_closed_subscription_is_not_due_its_tail() {
        let receives = [
            Stream::new(1).start(0).got(&all10()),
            Stream::new(2).start(0).got(&[1, 2]),
        ]
        .into_iter()
        .flat_map(|s| s.events)
        .collect();
        let a = check(&acked(1..=10), receives, &open(&[1]));
        only(&a, Anomaly::Lost, &[]);
    }

    #[test]
    fn unseen() {
        let a = run(
            &acked(1..=10),
            vec![
                Stream::new(1).start(0).got(&[1, 2, 3, 4, 5, 6, 7, 8, 9]),
                Stream::new(2).start(0).got(&[1, 2, 3, 4, 5, 6, 7, 8, 9]),
            ],
        );
        // Once per message, not per receiver.
        only(&a, Anomaly::Unseen, &[(10, Some(1010), 1, 10_000)]);
    }

    #[test]
    fn duplicate() {
        let a = run(
            &acked(1..=10),
            vec![
                Stream::new(1).start(0).got(&all10()),
                Stream::new(2)
                    .start(0)
                    .got(&[1, 2, 3, 3, 4, 5, 6, 7, 8, 9, 10]),
            ],
        );
        only(&a, Anomaly::Duplicate, &[(3, Some(1003), 2, 500)]);
    }

    #[test]
    fn a_send_stored_twice_is_a_duplicate_at_every_receiver() {
        // The send with nonce n 5 was acked as seq 5, and a retry the node did not
        // recognise stored it again as seq 11 (id 2011): both receivers get both.
        let stream = |r: u32| Stream::new(r).start(0).got(&all10()).got_n(11, 2011, 5);
        let a = run(&acked(1..=10), vec![stream(1), stream(2)]);
        only(
            &a,
            Anomaly::Duplicate,
            &[(11, Some(2011), 1, 1200), (11, Some(2011), 2, 1200)],
        );
    }

    #[test]
    fn poll_skip() {
        let a = run(
            &acked(1..=10),
            vec![
                Stream::new(1).start(0).got(&all10()),
                Stream::new(2).start(0).got(&[1, 2, 5, 6, 7, 8, 9, 10]),
            ],
        );
        only(
            &a,
            Anomaly::PollSkip,
            &[(3, Some(1003), 2, 3000), (4, Some(1004), 2, 4000)],
        );
        // Missed in the subscription that started with receiver 2's first event.
        let skip = &a[&Anomaly::PollSkip].offenders;
        assert!(
            skip.iter().all(|o| o.subscribed_at_ms == Some(100)),
            "{skip:?}"
        );
    }

    #[test]
    fn nonmonotonic() {
        let a = run(
            &acked(1..=10),
            vec![
                Stream::new(1).start(0).got(&all10()),
                Stream::new(2)
                    .start(0)
                    .got(&[1, 2, 4, 3, 5, 6, 7, 8, 9, 10]),
            ],
        );
        only(&a, Anomaly::Nonmonotonic, &[(3, Some(1003), 2, 500)]);
    }

    #[test]
    fn inconsistent_seq() {
        let a = run(
            &acked(1..=10),
            vec![
                Stream::new(1).start(0).got(&all10()),
                Stream::new(2)
                    .start(0)
                    .got(&[1, 2, 3, 4])
                    .ev(RecvKind::Message, 5, 7777, 0)
                    .got(&[6, 7, 8, 9, 10]),
            ],
        );
        only(&a, Anomaly::InconsistentSeq, &[(5, Some(7777), 2, 600)]);
    }

    #[test]
    fn g1a() {
        let mut sends = acked(1..=10);
        sends.push(failed(50, Outcome::Error));
        let a = run(
            &sends,
            vec![
                Stream::new(1).start(0).got(&all10()).got_n(11, 2000, 50),
                Stream::new(2).start(0).got(&all10()),
            ],
        );
        only(&a, Anomaly::G1a, &[(11, Some(2000), 1, 1200)]);
    }

    #[test]
    fn unknown_delivered_partially() {
        let mut sends = acked(1..=10);
        sends.push(failed(50, Outcome::Unknown));
        let a = run(
            &sends,
            vec![
                Stream::new(1).start(0).got(&all10()).got_n(11, 2000, 50),
                Stream::new(2).start(0).got(&all10()),
            ],
        );
        // Timed when first seen (user 1's receipt).
        only(
            &a,
            Anomaly::UnknownDeliveredPartially,
            &[(11, Some(2000), 2, 1200)],
        );
        // Delivered to everyone due it, or to no one: honest.
        for second in [
            Stream::new(2).start(0).got(&all10()).got_n(11, 2000, 50),
            Stream::new(2).start(0).got(&all10()),
        ] {
            let first = if second.events.len() == 12 {
                Stream::new(1).start(0).got(&all10()).got_n(11, 2000, 50)
            } else {
                Stream::new(1).start(0).got(&all10())
            };
            only(&run(&sends, vec![first, second]), Anomaly::Lost, &[]);
        }
    }

    #[test]
    fn causal_reply() {
        let a = run(
            &acked(1..=10),
            vec![
                Stream::new(1).start(0).got(&all10()),
                Stream::new(2)
                    .start(0)
                    .got(&[1, 2])
                    .ev(RecvKind::Message, 4, 1004, 1003)
                    .got(&[3, 5, 6, 7, 8, 9, 10]),
            ],
        );
        only(&a, Anomaly::CausalReply, &[(4, Some(1004), 2, 400)]);
    }

    #[test]
    fn resume_replay() {
        let a = run(
            &acked(1..=10),
            vec![
                Stream::new(1).start(0).got(&all10()),
                Stream::new(2)
                    .start(0)
                    .got(&[1, 2, 3, 4])
                    .resume(4)
                    .got(&[3, 4, 5, 6, 7, 8, 9, 10]),
            ],
        );
        only(
            &a,
            Anomaly::ResumeReplay,
            &[(3, Some(1003), 2, 700), (4, Some(1004), 2, 800)],
        );
    }

    #[test]
    fn resume_gap() {
        let a = run(
            &acked(1..=10),
            vec![
                Stream::new(1).start(0).got(&all10()),
                Stream::new(2)
                    .start(0)
                    .got(&[1, 2, 3, 4])
                    .resume(4)
                    .got(&[7, 8, 9, 10]),
            ],
        );
        only(
            &a,
            Anomaly::ResumeGap,
            &[(5, Some(1005), 2, 5000), (6, Some(1006), 2, 6000)],
        );
        // Each names when the receiver resumed (its 6th event, at 600 ms).
        let gap = &a[&Anomaly::ResumeGap].offenders;
        assert!(
            gap.iter().all(|o| o.subscribed_at_ms == Some(600)),
            "{gap:?}"
        );
        // A resume that got nothing up to the end: every later message, with the
        // resume's time (the 4th event).
        let a = run(
            &acked(1..=10),
            vec![
                Stream::new(1).start(0).got(&all10()),
                Stream::new(2).start(0).got(&[1, 2]).resume(2),
            ],
        );
        let gap = &a[&Anomaly::ResumeGap];
        assert_eq!(gap.count, 8, "3 to 10: {gap:?}");
        assert_eq!(
            gap.subscribed_timeline,
            [(0, 8)],
            "all in the resume's second"
        );
        assert!(
            gap.offenders
                .iter()
                .all(|o| o.subscribed_at_ms == Some(400) && o.receiver == 2),
            "{gap:?}"
        );
    }

    #[test]
    fn orphan_edit() {
        let a = run(
            &acked(1..=10),
            vec![
                Stream::new(1).start(0).got(&all10()),
                Stream::new(2)
                    .start(0)
                    .got(&[1, 2])
                    .ev(RecvKind::Edit, 3, 1003, 0)
                    .got(&[4, 5, 6, 7, 8, 9])
                    .ev(RecvKind::Delete, 10, 1010, 0),
            ],
        );
        only(
            &a,
            Anomaly::OrphanEdit,
            &[(3, Some(1003), 2, 400), (10, Some(1010), 2, 1100)],
        );
    }
}
