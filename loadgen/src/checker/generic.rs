//! The generic target's checker (`expect = "echo"|"room"`), over the merged histories of
//! every worker: for `echo`, every frame sent in a session that lasted comes back to its
//! sender; for `room`, every member of the sender's room whose last session began
//! `join_grace` before the send and lasted to the end receives it. Receipts are looked up
//! by binary search in the (recipient, author, first seq)-sorted ranges: no map of half a
//! million pairs is built.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use crate::checker::verdict::{
    ChannelReport, CorrectnessReport, MAX_OFFENDERS, Offence, Offender, keep_offender,
};
use crate::error::Result;
use crate::generic::template::{Template, msg_id, room_key};
use crate::scenario::{Expect, WsTarget};
use crate::wire::{GenericDone, GenericRange};

/// Decide echo/room correctness over the merged histories of all workers. Offenders
/// name the room (its index among the sorted room keys) as `channel`, the author's seq as
/// `seq` and the message id as `id`.
pub fn check(t: &WsTarget, h: &GenericDone, users: u32) -> Result<CorrectnessReport> {
    let mut rep = CorrectnessReport::default();
    if t.expect == Expect::None {
        return Ok(rep);
    }
    let room_t = Template::parse(&t.room)?;
    let keys: Vec<String> = (0..users)
        .map(|u| room_key(&room_t, u, t.room_size))
        .collect();
    let mut ids: BTreeMap<&str, i64> = BTreeMap::new();
    for k in &keys {
        ids.insert(k.as_str(), 0);
    }
    for (i, v) in ids.values_mut().enumerate() {
        *v = i as i64;
    }
    let room_of = |u: u32| -> i64 { keys.get(u as usize).map_or(-1, |k| ids[k.as_str()]) };
    let mut members: HashMap<i64, Vec<u32>> = HashMap::new();
    for u in 0..users {
        members.entry(room_of(u)).or_default().push(u);
    }
    let sessions: HashMap<u32, (u64, bool)> = h
        .sessions
        .iter()
        .map(|&(u, from, open)| (u, (from, open)))
        .collect();
    // Workers send their ranges sorted; a merged history of several is sorted here.
    let received: Cow<'_, [GenericRange]> = if h.received.is_sorted() {
        Cow::Borrowed(&h.received)
    } else {
        let mut v = h.received.clone();
        v.sort_unstable();
        Cow::Owned(v)
    };
    let received = &received[..];
    let grace = t.join_grace.as_micros() as u64;
    let mut channels: BTreeMap<i64, ChannelReport> = BTreeMap::new();
    let mut lost_list = Vec::new();
    let mut other_list = Vec::new();
    rep.acked = h.sent.len() as u64;
    for &(author, seq, at) in &h.sent {
        let room = room_of(author);
        let due: Vec<u32> = match t.expect {
            Expect::Echo => vec![author],
            Expect::Room => members
                .get(&room)
                .map(|m| m.iter().copied().filter(|&u| u != author).collect())
                .unwrap_or_default(),
            Expect::None => Vec::new(),
        };
        let ch = channels.entry(room).or_default();
        for m in due {
            let need = match sessions.get(&m) {
                Some(&(from, true)) if m == author => from <= at,
                Some(&(from, true)) => from + grace <= at,
                _ => false,
            };
            if !need {
                continue;
            }
            ch.expected += 1;
            if has(received, m, author, seq) {
                rep.delivered += 1;
            } else {
                ch.lost += 1;
                keep_offender(&mut lost_list, || Offender {
                    offence: Offence::Lost,
                    channel: room,
                    seq,
                    id: Some(msg_id(author, seq as u64) as i64),
                    recipient: m,
                });
            }
        }
    }
    for &(user, author, duplicates, reordered) in &h.anomalies {
        let relevant = match t.expect {
            Expect::Echo => user == author,
            _ => user != author,
        };
        if !relevant {
            continue;
        }
        let ch = channels.entry(room_of(author)).or_default();
        ch.duplicated += duplicates;
        ch.reordered += reordered;
        if duplicates > 0 || reordered > 0 {
            keep_offender(&mut other_list, || Offender {
                offence: if duplicates > 0 {
                    Offence::Duplicated
                } else {
                    Offence::Reordered
                },
                channel: room_of(author),
                seq: last_seq(received, user, author).map_or(0, i64::from),
                id: None,
                recipient: user,
            });
        }
    }
    for ch in channels.values() {
        rep.expected += ch.expected;
        rep.lost += ch.lost;
        rep.duplicated += ch.duplicated;
        rep.reordered += ch.reordered;
    }
    channels.retain(|_, c| c.lost + c.duplicated + c.reordered > 0);
    rep.channels = channels;
    lost_list.extend(other_list);
    lost_list.truncate(MAX_OFFENDERS);
    rep.offenders = lost_list;
    Ok(rep)
}

/// Whether `recipient` received `author`'s `seq` (`ranges` sorted).
fn has(ranges: &[GenericRange], recipient: u32, author: u32, seq: i64) -> bool {
    let Ok(seq) = u32::try_from(seq) else {
        return false;
    };
    let i = ranges.partition_point(|&(u, a, _, hi)| (u, a, hi) < (recipient, author, seq));
    ranges
        .get(i)
        .is_some_and(|&(u, a, lo, _)| (u, a) == (recipient, author) && lo <= seq)
}

/// The highest seq `recipient` received of `author` (`ranges` sorted).
fn last_seq(ranges: &[GenericRange], recipient: u32, author: u32) -> Option<u32> {
    let i = ranges.partition_point(|&(u, a, _, _)| (u, a) <= (recipient, author));
    let &(u, a, _, hi) = ranges.get(i.checked_sub(1)?)?;
    ((u, a) == (recipient, author)).then_some(hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generic::AuthorReceipts;

    /// Users 0,1,2 in room r0; 3,4,5 in r1, all connected from t=0 to the end; every
    /// author sends seqs 1..=4 at 1 s; each user receives what `got(user, author, seq)`
    /// says, in seq order (users added last to first: the ranges are not sorted).
    fn room_run(got: impl Fn(u32, u32, u32) -> bool) -> GenericDone {
        let mut h = GenericDone {
            sessions: (0..6).map(|u| (u, 0, true)).collect(),
            ..GenericDone::default()
        };
        for author in 0..6u32 {
            for seq in 1..=4i64 {
                h.sent.push((author, seq, 1_000_000));
            }
        }
        for user in (0..6u32).rev() {
            let mut r = AuthorReceipts::default();
            for seq in 1..=4 {
                for author in 0..6u32 {
                    if user / 3 == author / 3 && user != author && got(user, author, seq) {
                        r.add(author, seq);
                    }
                }
            }
            h.add_user(user, &r);
        }
        h
    }

    #[test]
    fn room_check_counts_exactly_the_missing_deliveries() {
        let t = WsTarget::example(Expect::Room);
        // User 4 misses author 3's seq 2.
        let mut h = room_run(|user, author, seq| !(user == 4 && author == 3 && seq == 2));
        assert!(!h.received.is_sorted());
        let rep = check(&t, &h, 6).unwrap();
        assert_eq!(rep.expected, 6 * 2 * 4);
        assert_eq!(rep.lost, 1);
        assert_eq!(rep.delivered, rep.expected - 1);
        assert_eq!((rep.duplicated, rep.reordered), (0, 0));
        let o = &rep.offenders[0];
        assert_eq!(
            (o.recipient, o.seq, o.id),
            (4, 2, Some(msg_id(3, 2) as i64))
        );
        // Sorted as a worker sends it: the same verdict.
        h.sort();
        assert_eq!(check(&t, &h, 6).unwrap(), rep);
        // A member that joined after the send (within the grace) is not due it.
        h.sessions[4] = (4, 950_000, true);
        assert_eq!(check(&t, &h, 6).unwrap().lost, 0);
        // Everything received: nothing lost.
        let all = room_run(|_, _, _| true);
        let rep = check(&t, &all, 6).unwrap();
        assert_eq!((rep.expected, rep.delivered, rep.lost), (48, 48, 0));
    }

    #[test]
    fn room_check_catches_duplicates_and_reordering() {
        let t = WsTarget::example(Expect::Room);
        let mut h = room_run(|_, _, _| true);
        // User 1 gets author 0's seq 3 twice; user 5 gets author 4's seqs 6 then 5 (both
        // sent: nothing lost).
        let mut one = AuthorReceipts::default();
        let mut five = AuthorReceipts::default();
        for author in [0, 2] {
            for seq in 1..=4 {
                one.add(author, seq);
            }
        }
        assert!(!one.add(0, 3));
        for author in [3, 4] {
            for seq in 1..=4 {
                five.add(author, seq);
            }
        }
        five.add(4, 6);
        five.add(4, 5);
        h.sent.push((4, 5, 1_000_000));
        h.sent.push((4, 6, 1_000_000));
        h.received.retain(|r| r.0 != 1 && r.0 != 5);
        h.add_user(1, &one);
        h.add_user(5, &five);
        // User 3 receives 4's seqs 5 and 6 in order.
        h.received.retain(|r| !(r.0 == 3 && r.1 == 4));
        h.received.push((3, 4, 1, 6));
        let rep = check(&t, &h, 6).unwrap();
        assert_eq!(rep.expected, 6 * 2 * 4 + 2 * 2);
        assert_eq!(
            (rep.lost, rep.duplicated, rep.reordered),
            (0, 1, 1),
            "{rep:?}"
        );
        let o: Vec<_> = rep
            .offenders
            .iter()
            .map(|o| (o.offence, o.recipient, o.seq))
            .collect();
        assert_eq!(o, [(Offence::Duplicated, 1, 4), (Offence::Reordered, 5, 6)]);
        // Duplicated echoes do not count in a room check.
        h.anomalies.push((2, 2, 1, 0));
        assert_eq!(check(&t, &h, 6).unwrap().duplicated, 1);
    }

    #[test]
    fn echo_check_needs_own_frames_back() {
        let t = WsTarget::example(Expect::Echo);
        let mut h = GenericDone {
            sessions: vec![(0, 0, true), (1, 0, false)],
            sent: vec![(0, 1, 10), (0, 2, 20), (1, 1, 10)],
            ..GenericDone::default()
        };
        let mut r = AuthorReceipts::default();
        r.add(0, 1);
        r.add(0, 1);
        h.add_user(0, &r);
        let rep = check(&t, &h, 2).unwrap();
        // User 1's session did not last: nothing due. User 0 misses seq 2.
        assert_eq!((rep.expected, rep.lost, rep.duplicated), (2, 1, 1));
    }
}
