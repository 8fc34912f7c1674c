//! The chat checker: decides from the workers' `done` lines whether every acknowledged
//! message reached every member that was due to receive it.
//!
//! A recipient is *due* a message of channel `c` with seq `s` when its last subscription
//! chain on `c` began at a seq `< s` (from `ready`/`subscribed`, continued across resumed
//! reconnects) and was still open when the drain ended. The author itself is never due its
//! own message (the echo is optional). Senders and recipients may live in different
//! worker processes: the checker only needs the merged lists.
//!
//! Reports lost (due, never received), duplicated (received twice), reordered (received
//! after a larger seq) and gaps (seqs missing between received ranges of an open chain,
//! acked or not), per channel, plus the first [`MAX_OFFENDERS`] offenders.

use std::collections::{BTreeMap, HashMap};

use flowline_protocol::{ChannelId, MessageId, Seq};

use crate::checker::verdict::{
    ChannelReport, CorrectnessReport, MAX_OFFENDERS, Offence, Offender, keep_offender,
};
use crate::receipts::contains;
use crate::wire::{AckedMessage, RecipientRecord};

/// Check merged histories.
pub fn check(acked: &[AckedMessage], recipients: &[RecipientRecord]) -> CorrectnessReport {
    let mut c = ChatCheck::default();
    c.add(acked, recipients.iter());
    c.finish()
}

/// The chat checker fed group by group, each group holding whole channels: their acked
/// messages and their recipients (a recipient of a channel with no acked message still
/// counts its duplicates). Offenders are listed in the order the groups came.
#[derive(Debug, Default)]
pub struct ChatCheck {
    rep: CorrectnessReport,
    channels: BTreeMap<ChannelId, ChannelReport>,
    lost_list: Vec<Offender>,
    other_list: Vec<Offender>,
}

impl ChatCheck {
    /// Check one group.
    pub fn add<'a>(
        &mut self,
        acked: &[AckedMessage],
        recipients: impl Iterator<Item = &'a RecipientRecord>,
    ) {
        let mut by_channel: HashMap<ChannelId, Vec<(Seq, MessageId, u32)>> = HashMap::new();
        for &(c, s, id, author) in acked {
            by_channel.entry(c).or_default().push((s, id, author));
        }
        for v in by_channel.values_mut() {
            v.sort_unstable();
            v.dedup_by_key(|m| m.0);
        }
        let rep = &mut self.rep;
        rep.acked += by_channel.values().map(|v| v.len() as u64).sum::<u64>();
        let channels = &mut self.channels;
        let lost_list = &mut self.lost_list;
        let other_list = &mut self.other_list;
        let empty = Vec::new();
        for r in recipients {
            let msgs = by_channel.get(&r.channel).unwrap_or(&empty);
            let id_of = |s: Seq| {
                msgs.binary_search_by_key(&s, |m| m.0)
                    .ok()
                    .map(|i| (msgs[i].1, msgs[i].2))
            };
            let ch = channels.entry(r.channel).or_default();
            let open_from = r.chains.last().filter(|c| c.open).map(|c| c.from);
            if let Some(from) = open_from {
                let start = msgs.partition_point(|m| m.0 <= from);
                for &(s, id, author) in &msgs[start..] {
                    if author == r.user {
                        continue;
                    }
                    ch.expected += 1;
                    if contains(&r.received, s) {
                        rep.delivered += 1;
                    } else {
                        ch.lost += 1;
                        keep_offender(lost_list, || Offender {
                            offence: Offence::Lost,
                            channel: r.channel,
                            seq: s,
                            id: Some(id),
                            recipient: r.user,
                        });
                    }
                }
                for w in r.received.windows(2) {
                    for s in (w[0].1 + 1).max(from + 1)..w[1].0 {
                        // The author's own messages need not be echoed back to it.
                        if id_of(s).is_some_and(|(_, a)| a == r.user) {
                            continue;
                        }
                        ch.gaps += 1;
                        keep_offender(other_list, || Offender {
                            offence: Offence::Gap,
                            channel: r.channel,
                            seq: s,
                            id: id_of(s).map(|x| x.0),
                            recipient: r.user,
                        });
                    }
                }
            }
            ch.duplicated += r.duplicates;
            ch.reordered += r.reordered;
            for (offence, seqs) in [
                (Offence::Duplicated, &r.dup_seqs),
                (Offence::Reordered, &r.reordered_seqs),
            ] {
                for &s in seqs {
                    keep_offender(other_list, || Offender {
                        offence,
                        channel: r.channel,
                        seq: s,
                        id: id_of(s).map(|x| x.0),
                        recipient: r.user,
                    });
                }
            }
        }
    }

    /// The verdict (its `anomalies` empty: the stream checker fills them).
    pub fn finish(self) -> CorrectnessReport {
        let ChatCheck {
            mut rep,
            mut channels,
            mut lost_list,
            other_list,
        } = self;
        for ch in channels.values() {
            rep.expected += ch.expected;
            rep.lost += ch.lost;
            rep.duplicated += ch.duplicated;
            rep.reordered += ch.reordered;
            rep.gaps += ch.gaps;
        }
        channels.retain(|_, c| !c.is_clean());
        rep.channels = channels;
        lost_list.extend(other_list);
        lost_list.truncate(MAX_OFFENDERS);
        rep.offenders = lost_list;
        rep
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receipts::Receipts;
    use crate::wire::Chain;

    fn rec(user: u32, channel: ChannelId, from: Seq, open: bool, got: &[Seq]) -> RecipientRecord {
        let mut r = Receipts::default();
        for &s in got {
            r.add(s);
        }
        r.into_record(user, channel, vec![Chain { from, open }])
    }

    fn acked(
        channel: ChannelId,
        seqs: impl Iterator<Item = Seq>,
        author: u32,
    ) -> Vec<AckedMessage> {
        seqs.map(|s| (channel, s, 1000 + s, author)).collect()
    }

    #[test]
    fn clean_history() {
        let a = acked(1, 1..=10, 0);
        let r = check(
            &a,
            &[
                rec(1, 1, 0, true, &(1..=10).collect::<Vec<_>>()),
                rec(0, 1, 0, true, &[]),
            ],
        );
        assert!(r.is_clean(), "{r:?}");
        // The author (user 0) is not due its own messages.
        assert_eq!((r.acked, r.expected, r.delivered), (10, 10, 10));
    }

    #[test]
    fn lost_messages_are_counted_and_listed() {
        let a = acked(1, 1..=10, 0);
        let got: Vec<Seq> = (1..=10).filter(|s| *s != 4 && *s != 10).collect();
        let r = check(&a, &[rec(2, 1, 0, true, &got)]);
        assert_eq!(r.lost, 2);
        assert_eq!(r.gaps, 1); // 4 lies between received ranges; 10 is a lost tail
        assert_eq!(r.channels[&1].lost, 2);
        let lost: Vec<_> = r
            .offenders
            .iter()
            .filter(|o| o.offence == Offence::Lost)
            .map(|o| (o.seq, o.id, o.recipient))
            .collect();
        assert_eq!(lost, [(4, Some(1004), 2), (10, Some(1010), 2)]);
    }

    #[test]
    fn only_messages_after_subscription_and_open_windows_are_due() {
        let a = acked(1, 1..=10, 0);
        // Subscribed at seq 6: 7..=10 due.
        let r = check(&a, &[rec(2, 1, 6, true, &[7, 8, 9, 10])]);
        assert!(r.is_clean() && r.expected == 4, "{r:?}");
        // Disconnected before the end without resuming: nothing due.
        let r = check(&a, &[rec(2, 1, 0, false, &[1, 2])]);
        assert!(r.is_clean() && r.expected == 0, "{r:?}");
    }

    #[test]
    fn duplicates_and_reordering() {
        let a = acked(1, 1..=5, 0);
        let r = check(&a, &[rec(2, 1, 0, true, &[1, 2, 2, 4, 3, 5, 5])]);
        assert_eq!((r.lost, r.duplicated, r.reordered, r.gaps), (0, 2, 1, 0));
        let kinds: Vec<_> = r.offenders.iter().map(|o| (o.offence, o.seq)).collect();
        assert_eq!(
            kinds,
            [
                (Offence::Duplicated, 2),
                (Offence::Duplicated, 5),
                (Offence::Reordered, 3)
            ]
        );
    }

    #[test]
    fn gaps_count_unacked_missing_seqs_but_not_own_messages() {
        // Seq 3 was never acked (its sender disconnected); 4 is the recipient's own.
        let mut a = acked(1, [1, 2, 5].into_iter(), 0);
        a.push((1, 4, 1004, 2));
        let r = check(&a, &[rec(2, 1, 0, true, &[1, 2, 5])]);
        assert_eq!((r.lost, r.gaps), (0, 1));
        assert_eq!(r.offenders[0].seq, 3);
        assert_eq!(r.offenders[0].id, None);
    }

    #[test]
    fn offenders_are_capped() {
        let a = acked(1, 1..=500, 0);
        let r = check(&a, &[rec(2, 1, 0, true, &[])]);
        assert_eq!(r.lost, 500);
        assert_eq!(r.offenders.len(), MAX_OFFENDERS);
    }
}
