//! The generic target's checker (`expect = "echo"|"room"`), over the merged histories of
//! every worker: for `echo`, every frame sent in a session that lasted comes back to its
//! sender; for `room`, every member of the sender's room whose last session began
//! `join_grace` before the send and lasted to the end receives it.

use std::collections::{BTreeMap, HashMap};

use crate::checker::verdict::{ChannelReport, CorrectnessReport, MAX_OFFENDERS, Offence, Offender};
use crate::error::Result;
use crate::generic::template::{Template, msg_id, room_key};
use crate::receipts::contains;
use crate::scenario::{Expect, WsTarget};
use crate::wire::{GenericDone, GenericReceipt};

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
    let received: HashMap<(u32, u32), &GenericReceipt> =
        h.received.iter().map(|r| ((r.user, r.author), r)).collect();
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
            if received
                .get(&(m, author))
                .is_some_and(|r| contains(&r.received, seq))
            {
                rep.delivered += 1;
            } else {
                ch.lost += 1;
                if lost_list.len() < MAX_OFFENDERS {
                    lost_list.push(Offender {
                        offence: Offence::Lost,
                        channel: room,
                        seq,
                        id: Some(msg_id(author, seq as u64) as i64),
                        recipient: m,
                    });
                }
            }
        }
    }
    for r in &h.received {
        let relevant = match t.expect {
            Expect::Echo => r.user == r.author,
            _ => r.user != r.author,
        };
        if !relevant {
            continue;
        }
        let ch = channels.entry(room_of(r.author)).or_default();
        ch.duplicated += r.duplicates;
        ch.reordered += r.reordered;
        if (r.duplicates > 0 || r.reordered > 0) && other_list.len() < MAX_OFFENDERS {
            other_list.push(Offender {
                offence: if r.duplicates > 0 {
                    Offence::Duplicated
                } else {
                    Offence::Reordered
                },
                channel: room_of(r.author),
                seq: r.received.last().map_or(0, |x| x.1),
                id: None,
                recipient: r.user,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receipts::Receipts;

    #[test]
    fn room_check_counts_exactly_the_missing_deliveries() {
        let t = WsTarget::example(Expect::Room);
        // Users 0,1,2 in room r0; 3,4,5 in r1. All connected from t=0 to the end.
        let mut h = GenericDone {
            sessions: (0..6).map(|u| (u, 0, true)).collect(),
            ..GenericDone::default()
        };
        for author in 0..6u32 {
            for seq in 1..=4i64 {
                h.sent.push((author, seq, 1_000_000));
            }
        }
        for user in 0..6u32 {
            for author in 0..6u32 {
                if user / 3 != author / 3 || user == author {
                    continue;
                }
                let mut r = Receipts::default();
                for seq in 1..=4 {
                    // User 4 misses author 3's seq 2.
                    if !(user == 4 && author == 3 && seq == 2) {
                        r.add(seq);
                    }
                }
                h.received.push(r.into_generic(user, author));
            }
        }
        let rep = check(&t, &h, 6).unwrap();
        assert_eq!(rep.expected, 6 * 2 * 4);
        assert_eq!(rep.lost, 1);
        assert_eq!(rep.delivered, rep.expected - 1);
        let o = &rep.offenders[0];
        assert_eq!(
            (o.recipient, o.seq, o.id),
            (4, 2, Some(msg_id(3, 2) as i64))
        );
        // A member that joined after the send (within the grace) is not due it.
        h.sessions[4] = (4, 950_000, true);
        assert_eq!(check(&t, &h, 6).unwrap().lost, 0);
    }

    #[test]
    fn echo_check_needs_own_frames_back() {
        let t = WsTarget::example(Expect::Echo);
        let mut h = GenericDone {
            sessions: vec![(0, 0, true), (1, 0, false)],
            sent: vec![(0, 1, 10), (0, 2, 20), (1, 1, 10)],
            ..GenericDone::default()
        };
        let mut r = Receipts::default();
        r.add(1);
        r.add(1);
        h.received.push(r.into_generic(0, 0));
        let rep = check(&t, &h, 2).unwrap();
        // User 1's session did not last: nothing due. User 0 misses seq 2.
        assert_eq!((rep.expected, rep.lost, rep.duplicated), (2, 1, 1));
    }
}
