//! What one generic-target user received of every author (itself included: its echoes),
//! kept compact because a room of 50 gives every user 49 authors: each author's seqs as
//! sorted, disjoint, inclusive ranges, all in one flat vector of 12-byte entries (one per
//! author while nothing is lost or out of order), and duplicates and out-of-order arrivals
//! counted only for the authors that have any. A per-author map of range vectors cost
//! ~10 KiB per user; this costs ~0.6 KiB.

/// One range of an author's seqs: (author, first seq, last seq).
pub type AuthorRange = (u32, u32, u32);

/// What one recipient received of every author (see the module doc).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorReceipts {
    /// Sorted by (author, first seq); an author's ranges are disjoint and not adjacent.
    ranges: Vec<AuthorRange>,
    /// (author, duplicates, reordered) of the authors with any, sorted by author.
    anomalies: Vec<(u32, u64, u64)>,
}

impl AuthorReceipts {
    /// Note `author`'s `seq`; returns false if it was a duplicate. A seq below the highest
    /// one received of that author counts as reordered.
    pub fn add(&mut self, author: u32, seq: u32) -> bool {
        let r = &mut self.ranges;
        // The first range of this author that ends at or after `seq` (else where it goes).
        let i = r.partition_point(|&(a, _, hi)| a < author || (a == author && hi < seq));
        if let Some(&(a, lo, _)) = r.get(i)
            && a == author
        {
            if lo <= seq {
                self.note(author, 1, 0);
                return false;
            }
            // A later seq of this author came first.
            self.note(author, 0, 1);
        }
        let r = &mut self.ranges;
        // The previous range of this author ends below `seq`, so `hi + 1` cannot overflow.
        let join_prev = i > 0 && r[i - 1].0 == author && r[i - 1].2 + 1 == seq;
        let join_next = r
            .get(i)
            .is_some_and(|&(a, lo, _)| a == author && u64::from(lo) == u64::from(seq) + 1);
        match (join_prev, join_next) {
            (true, true) => {
                r[i - 1].2 = r[i].2;
                r.remove(i);
            }
            (true, false) => r[i - 1].2 = seq,
            (false, true) => r[i].1 = seq,
            (false, false) => r.insert(i, (author, seq, seq)),
        }
        true
    }

    fn note(&mut self, author: u32, duplicates: u64, reordered: u64) {
        let a = &mut self.anomalies;
        let i = a.partition_point(|x| x.0 < author);
        match a.get_mut(i) {
            Some(x) if x.0 == author => {
                x.1 += duplicates;
                x.2 += reordered;
            }
            _ => a.insert(i, (author, duplicates, reordered)),
        }
    }

    /// Whether nothing was received.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The ranges received, sorted by (author, first seq).
    pub fn ranges(&self) -> &[AuthorRange] {
        &self.ranges
    }

    /// (author, duplicates, reordered) of the authors with any, sorted by author.
    pub fn anomalies(&self) -> &[(u32, u64, u64)] {
        &self.anomalies
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn author_receipts_merge_ranges_per_author() {
        let mut r = AuthorReceipts::default();
        // Author 7 in order, author 3 with a gap then the gap filled out of order,
        // author 5 twice the same seq.
        for (a, s) in [
            (7, 1),
            (3, 1),
            (7, 2),
            (3, 2),
            (3, 5),
            (5, 4),
            (3, 3),
            (7, 3),
        ] {
            assert!(r.add(a, s), "({a}, {s})");
        }
        assert!(!r.add(5, 4));
        assert!(!r.add(3, 2));
        assert_eq!(r.ranges(), [(3, 1, 3), (3, 5, 5), (5, 4, 4), (7, 1, 3)]);
        // 3's seq 3 came after its seq 5; one duplicate each for 3 and 5.
        assert_eq!(r.anomalies(), [(3, 1, 1), (5, 1, 0)]);
        assert!(r.add(3, 4));
        assert_eq!(r.ranges(), [(3, 1, 5), (5, 4, 4), (7, 1, 3)]);
        assert_eq!(r.anomalies(), [(3, 1, 2), (5, 1, 0)]);
        // Extremes of the seq range neither overflow nor merge across authors.
        assert!(r.add(4, u32::MAX));
        assert!(r.add(4, 0));
        assert!(r.add(5, 5));
        assert_eq!(
            r.ranges(),
            [
                (3, 1, 5),
                (4, 0, 0),
                (4, u32::MAX, u32::MAX),
                (5, 4, 5),
                (7, 1, 3)
            ]
        );
        assert_eq!(r.anomalies(), [(3, 1, 2), (4, 0, 1), (5, 1, 0)]);
    }

    #[test]
    fn author_receipts_stay_one_range_per_author_in_order() {
        let mut r = AuthorReceipts::default();
        for s in 1..=100 {
            for a in (0..50).rev() {
                assert!(r.add(a, s));
            }
        }
        assert_eq!(r.ranges().len(), 50);
        assert!(r.ranges().iter().all(|&(_, lo, hi)| (lo, hi) == (1, 100)));
        assert!(r.anomalies().is_empty());
    }
}
