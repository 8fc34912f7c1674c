//! Per-channel sequencing of `message` events in the cluster phases ([`Sequencer`]): a
//! node delivers seq `last + 1`, drops `≤ last` (duplicates, e.g. a `queue` outbox re-sent
//! after a gap fill), and holds anything above `last + 1` until the gap closes.
//!
//! Gaps arise because two nodes publish one channel's consecutive seqs over separate
//! connections, or because an envelope was lost; the bus resolves a gap that stays open
//! ([`Sequencer::overdue_gaps`]): it reads the missing seqs from Postgres, or (`pubsub`,
//! when they may have been lost on the bus) skips them. Delivery itself is the caller's: every method takes a `deliver(seq, text)`
//! that queues one message to the local subscribers and returns how many it reached.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use dashmap::DashMap;

use flowline_protocol::{ChannelId, Seq};

/// Most messages held for one channel while a gap is open; beyond it the gap is overdue
/// at once.
const MAX_HELD: usize = 10_000;

/// Delivery state of one channel.
#[derive(Debug, Default)]
struct Sequence {
    /// Highest seq delivered here (`None`: this node has not seen the channel yet).
    last: Option<Seq>,
    /// Messages above `last + 1`, waiting for the gap to close.
    held: BTreeMap<Seq, Utf8Bytes>,
}

/// A channel whose sequence has a gap (see [`Sequencer::overdue_gaps`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// The channel.
    pub channel: ChannelId,
    /// Highest seq delivered.
    pub last: Seq,
    /// Lowest seq held; the gap is `last + 1 .. first_held`.
    pub first_held: Seq,
}

/// Sequencing state of every channel this node has seen on the bus.
#[derive(Default)]
pub(crate) struct Sequencer {
    seqs: DashMap<ChannelId, Arc<parking_lot::Mutex<Sequence>>>,
    /// Channels with an open gap, and since when.
    gapped: DashMap<ChannelId, Instant>,
}

impl Sequencer {
    /// Deliver `seq` if it is the next one (then any held successors), drop it if already
    /// delivered, hold it if a seq before it is missing. Returns the number of local
    /// queues it reached now.
    pub(crate) fn accept(
        &self,
        channel: ChannelId,
        seq: Seq,
        text: &Utf8Bytes,
        mut deliver: impl FnMut(Seq, &Utf8Bytes) -> usize,
    ) -> usize {
        let cell = self.sequence(channel);
        let mut st = cell.lock();
        match st.last {
            Some(last) if seq <= last => return 0,
            Some(last) if seq > last + 1 => {
                st.held.insert(seq, text.clone());
                self.gapped.entry(channel).or_insert_with(Instant::now);
                if st.held.len() > MAX_HELD {
                    // Make it overdue now: the bus resolves it on its next pass.
                    self.gapped
                        .insert(channel, Instant::now() - Duration::from_secs(3600));
                }
                return 0;
            }
            _ => {}
        }
        let mut n = deliver(seq, text);
        st.last = Some(seq);
        n += self.drain_held(channel, &mut st, &mut deliver);
        n
    }

    fn sequence(&self, channel: ChannelId) -> Arc<parking_lot::Mutex<Sequence>> {
        if let Some(cell) = self.seqs.get(&channel) {
            return cell.clone();
        }
        self.seqs.entry(channel).or_default().clone()
    }

    /// Deliver held messages that now follow `last` without a gap.
    fn drain_held(
        &self,
        channel: ChannelId,
        st: &mut Sequence,
        deliver: &mut impl FnMut(Seq, &Utf8Bytes) -> usize,
    ) -> usize {
        let mut n = 0;
        while let Some(entry) = st.held.first_entry() {
            let seq = *entry.key();
            let last = st.last.unwrap_or(0);
            if seq <= last {
                entry.remove();
            } else if seq == last + 1 {
                let text = entry.remove();
                n += deliver(seq, &text);
                st.last = Some(seq);
            } else {
                break;
            }
        }
        if st.held.is_empty() {
            self.gapped.remove(&channel);
        }
        n
    }

    /// Set the channel's baseline to its latest committed seq if this node has not seen
    /// the channel yet (a session subscribing read it from storage), so a message that
    /// overtakes its predecessor on the bus opens a gap instead of setting the baseline.
    pub(crate) fn note_seq(
        &self,
        channel: ChannelId,
        seq: Seq,
        mut deliver: impl FnMut(Seq, &Utf8Bytes) -> usize,
    ) {
        let cell = self.sequence(channel);
        let mut st = cell.lock();
        if st.last.is_none() {
            st.last = Some(seq);
            self.drain_held(channel, &mut st, &mut deliver);
        }
    }

    /// Channels whose gap has been open longer than `wait`.
    pub(crate) fn overdue_gaps(&self, wait: Duration) -> Vec<Gap> {
        let now = Instant::now();
        let overdue: Vec<ChannelId> = self
            .gapped
            .iter()
            .filter(|e| now.duration_since(*e.value()) >= wait)
            .map(|e| *e.key())
            .collect();
        overdue
            .into_iter()
            .filter_map(|channel| {
                let cell = self.seqs.get(&channel)?.clone();
                let st = cell.lock();
                let (&first_held, _) = st.held.first_key_value()?;
                Some(Gap {
                    channel,
                    last: st.last.unwrap_or(0),
                    first_held,
                })
            })
            .collect()
    }

    /// Give up on a channel's missing seqs: deliver everything held, in order, and return
    /// how many seqs were skipped.
    pub(crate) fn skip_gaps(
        &self,
        channel: ChannelId,
        mut deliver: impl FnMut(Seq, &Utf8Bytes) -> usize,
    ) -> u64 {
        let Some(cell) = self.seqs.get(&channel).map(|c| c.clone()) else {
            return 0;
        };
        let mut st = cell.lock();
        let mut skipped = 0;
        while let Some((&first, _)) = st.held.first_key_value() {
            let last = st.last.unwrap_or(0);
            if first > last + 1 {
                skipped += first - last - 1;
                st.last = Some(first - 1);
            }
            self.drain_held(channel, &mut st, &mut deliver);
        }
        self.gapped.remove(&channel);
        u64::try_from(skipped).unwrap_or(0)
    }
}
