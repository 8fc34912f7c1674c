//! The checker's verdict as `summary.json` holds it (`correctness`): totals, the channels
//! with a problem, and the first offenders.

use std::collections::BTreeMap;

use flowline_protocol::{ChannelId, MessageId, Seq};
use serde::{Deserialize, Serialize};

use crate::anomaly::Anomalies;

/// Most offenders listed in the report.
pub const MAX_OFFENDERS: usize = 100;

/// List one more offender in `list` unless it already holds [`MAX_OFFENDERS`] (the offender
/// is only built when it is kept).
pub fn keep_offender(list: &mut Vec<Offender>, offender: impl FnOnce() -> Offender) {
    if list.len() < MAX_OFFENDERS {
        list.push(offender());
    }
}

/// What went wrong with one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Offence {
    /// Due and never received.
    Lost,
    /// Received more than once.
    Duplicated,
    /// Received after a message with a larger seq.
    Reordered,
    /// A seq missing between received ones.
    Gap,
}

/// One offending delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offender {
    /// What went wrong.
    pub offence: Offence,
    /// Channel id.
    pub channel: ChannelId,
    /// Seq in the channel.
    pub seq: Seq,
    /// Message id, when the message was acked to one of the simulated users.
    pub id: Option<MessageId>,
    /// Recipient user index.
    pub recipient: u32,
}

/// Counts of one channel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelReport {
    /// Due deliveries.
    pub expected: u64,
    /// Due and never received.
    pub lost: u64,
    /// Received twice or more.
    pub duplicated: u64,
    /// Received out of order.
    pub reordered: u64,
    /// Seqs missing between received ones.
    pub gaps: u64,
}

impl ChannelReport {
    pub(crate) fn is_clean(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.reordered == 0 && self.gaps == 0
    }
}

/// The checker's verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorrectnessReport {
    /// Acked messages considered.
    pub acked: u64,
    /// Due deliveries (acked message × due recipient).
    pub expected: u64,
    /// Due deliveries that arrived.
    pub delivered: u64,
    /// Due deliveries that never arrived.
    pub lost: u64,
    /// Deliveries received more than once.
    pub duplicated: u64,
    /// Deliveries received out of order.
    pub reordered: u64,
    /// Seqs missing between received ones.
    pub gaps: u64,
    /// Channels with at least one problem.
    pub channels: BTreeMap<ChannelId, ChannelReport>,
    /// The first offenders (lost first).
    pub offenders: Vec<Offender>,
    /// Every anomaly kind the stream checker names (`streams.rs`), each with its count,
    /// first offenders and timeline; all kinds present.
    #[serde(default)]
    pub anomalies: Anomalies,
}

impl CorrectnessReport {
    /// No loss, duplicate, reordering or gap.
    pub fn is_clean(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.reordered == 0 && self.gaps == 0
    }
}
