//! What one recipient received of one channel (chat): seqs compacted into sorted,
//! disjoint, inclusive ranges, plus duplicates and out-of-order arrivals. A user records
//! into these as frames arrive; at its end they become the records of its worker's `done`
//! line. (A generic-target user keeps all its authors in one
//! [`AuthorReceipts`](crate::generic::AuthorReceipts).)

use flowline_protocol::{ChannelId, Seq};

use crate::wire::{Chain, RecipientRecord};

/// Whether `s` lies in one of the sorted, disjoint, inclusive `ranges`.
pub fn contains(ranges: &[(Seq, Seq)], s: Seq) -> bool {
    let i = ranges.partition_point(|&(_, hi)| hi < s);
    ranges.get(i).is_some_and(|&(lo, _)| lo <= s)
}

/// Records what one recipient receives on one channel (used by the worker's user tasks).
#[derive(Debug, Clone, Default)]
pub struct Receipts {
    /// Received seqs as sorted disjoint inclusive ranges.
    pub ranges: Vec<(Seq, Seq)>,
    /// Highest seq received.
    pub max: Seq,
    /// Duplicates seen.
    pub duplicates: u64,
    /// Out-of-order arrivals seen.
    pub reordered: u64,
    /// First few duplicated seqs.
    pub dup_seqs: Vec<Seq>,
    /// First few reordered seqs.
    pub reordered_seqs: Vec<Seq>,
}

const KEEP_SEQS: usize = 10;

impl Receipts {
    /// Note seq `s`; returns false if it was a duplicate.
    pub fn add(&mut self, s: Seq) -> bool {
        // Fast path: the next seq in order.
        if let Some(last) = self.ranges.last_mut()
            && s == last.1 + 1
        {
            last.1 = s;
            self.max = s;
            return true;
        }
        let i = self.ranges.partition_point(|&(_, hi)| hi < s);
        if self.ranges.get(i).is_some_and(|&(lo, _)| lo <= s) {
            self.duplicates += 1;
            if self.dup_seqs.len() < KEEP_SEQS {
                self.dup_seqs.push(s);
            }
            return false;
        }
        if s < self.max {
            self.reordered += 1;
            if self.reordered_seqs.len() < KEEP_SEQS {
                self.reordered_seqs.push(s);
            }
        }
        self.max = self.max.max(s);
        // Insert at i, merging with neighbours.
        let join_prev = i > 0 && self.ranges[i - 1].1 + 1 == s;
        let join_next = self.ranges.get(i).is_some_and(|&(lo, _)| lo == s + 1);
        match (join_prev, join_next) {
            (true, true) => {
                self.ranges[i - 1].1 = self.ranges[i].1;
                self.ranges.remove(i);
            }
            (true, false) => self.ranges[i - 1].1 = s,
            (false, true) => self.ranges[i].0 = s,
            (false, false) => self.ranges.insert(i, (s, s)),
        }
        true
    }
}

impl Receipts {
    /// The record of a chat recipient's channel, with its subscription chains.
    pub fn into_record(self, user: u32, channel: ChannelId, chains: Vec<Chain>) -> RecipientRecord {
        RecipientRecord {
            user,
            channel,
            chains,
            received: self.ranges,
            duplicates: self.duplicates,
            reordered: self.reordered,
            dup_seqs: self.dup_seqs,
            reordered_seqs: self.reordered_seqs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_merge_ranges() {
        let mut r = Receipts::default();
        for s in [1, 2, 3, 7, 5, 6, 4, 9] {
            assert!(r.add(s));
        }
        assert!(!r.add(5));
        assert_eq!(r.ranges, [(1, 7), (9, 9)]);
        assert_eq!((r.duplicates, r.reordered), (1, 3));
        assert!(contains(&r.ranges, 4) && !contains(&r.ranges, 8) && !contains(&r.ranges, 10));
    }
}
