//! The anomaly kinds the stream checker names (`summary.json` `correctness.anomalies`),
//! and what it reports of each: a count, the first offenders and a per-second timeline.
//! docs/scenarios.md ("Anomalies") defines each with an example.

use std::collections::BTreeMap;

use flowline_protocol::{ChannelId, MessageId, Seq};
use serde::{Deserialize, Serialize};

/// Most offenders listed per anomaly kind.
pub const MAX_ANOMALY_OFFENDERS: usize = 20;

/// One kind of delivery anomaly. Each missing or offending delivery is counted under
/// exactly one kind (the first that applies, in this order for missing ones:
/// `unknown_delivered_partially`, `unseen`, then where it was missed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Anomaly {
    /// An acked message someone received never reached a receiver whose subscription was
    /// open at the end, after the last message it got.
    Lost,
    /// An acked message that was due somewhere reached no receiver at all (once per message).
    Unseen,
    /// A message received twice within one subscription.
    Duplicate,
    /// A receiver got seqs on both sides of an existing message within one subscription
    /// and never got that message.
    PollSkip,
    /// A message received after one with a larger seq in the same subscription.
    Nonmonotonic,
    /// A receiver got a different message at a seq than the ack (or the first receiver) had.
    InconsistentSeq,
    /// A message whose send was refused (`error`) was delivered.
    G1a,
    /// A send without an answer (socket died first) reached some receivers due it but
    /// not all (it must reach all or none).
    UnknownDeliveredPartially,
    /// A reply arrived before its parent (same channel), which the receiver was due.
    CausalReply,
    /// After a resume, a message received before the resume came again.
    ResumeReplay,
    /// After a resume, messages between the resume point and the first one delivered
    /// never came.
    ResumeGap,
    /// An edit or delete arrived for a message the receiver was due and did not have.
    OrphanEdit,
}

impl Anomaly {
    /// Every kind, in report order.
    pub const ALL: [Anomaly; 12] = [
        Anomaly::Lost,
        Anomaly::Unseen,
        Anomaly::Duplicate,
        Anomaly::PollSkip,
        Anomaly::Nonmonotonic,
        Anomaly::InconsistentSeq,
        Anomaly::G1a,
        Anomaly::UnknownDeliveredPartially,
        Anomaly::CausalReply,
        Anomaly::ResumeReplay,
        Anomaly::ResumeGap,
        Anomaly::OrphanEdit,
    ];

    /// The name in `summary.json` and in thresholds (`anomalies.<name>`).
    pub fn name(self) -> &'static str {
        match self {
            Anomaly::Lost => "lost",
            Anomaly::Unseen => "unseen",
            Anomaly::Duplicate => "duplicate",
            Anomaly::PollSkip => "poll_skip",
            Anomaly::Nonmonotonic => "nonmonotonic",
            Anomaly::InconsistentSeq => "inconsistent_seq",
            Anomaly::G1a => "g1a",
            Anomaly::UnknownDeliveredPartially => "unknown_delivered_partially",
            Anomaly::CausalReply => "causal_reply",
            Anomaly::ResumeReplay => "resume_replay",
            Anomaly::ResumeGap => "resume_gap",
            Anomaly::OrphanEdit => "orphan_edit",
        }
    }

    /// The kind named `name`.
    pub fn from_name(name: &str) -> Option<Anomaly> {
        Anomaly::ALL.into_iter().find(|a| a.name() == name)
    }
}

/// One offending delivery (or, for `unseen`, message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnomalyOffender {
    /// Channel.
    pub channel: ChannelId,
    /// Seq in the channel.
    pub seq: Seq,
    /// Message id, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<MessageId>,
    /// Receiver's user index.
    pub receiver: u32,
    /// Milliseconds since the run's start: when it was received, or (for a missing
    /// message) when its send was answered or it was first seen.
    pub at_ms: u32,
    /// `lost`, `poll_skip` and `resume_gap` only: when the subscription (or resume) the
    /// message was missed in began, i.e. its `ready`/`subscribed` arrived, in ms since
    /// the run's start. A resume just before the run's end whose replay was still on its
    /// way stands apart from a subscription that missed messages for a long time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribed_at_ms: Option<u32>,
}

/// What the checker found of one kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnomalyReport {
    /// How many.
    pub count: u64,
    /// The first [`MAX_ANOMALY_OFFENDERS`].
    pub offenders: Vec<AnomalyOffender>,
    /// `[second since the run's start, count]`, seconds with none left out.
    pub timeline: Vec<(u32, u64)>,
    /// `lost`, `poll_skip` and `resume_gap` only: `[second the subscription or resume it
    /// was missed in began, count]` over every offender, not only the listed ones (e.g.
    /// all of a collapsed run's `resume_gap` in its last seconds: resumes whose replay
    /// the end overtook).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscribed_timeline: Vec<(u32, u64)>,
}

/// Every kind's report, keyed by kind (all kinds present, zero or not).
pub type Anomalies = BTreeMap<Anomaly, AnomalyReport>;

/// Collects anomalies as the checker finds them.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    reports: BTreeMap<Anomaly, Counting>,
}

/// One kind's report while it is being counted.
#[derive(Debug, Default)]
struct Counting {
    report: AnomalyReport,
    /// Per second of `at_ms`.
    secs: BTreeMap<u32, u64>,
    /// Per second of `subscribed_at_ms`.
    subscribed: BTreeMap<u32, u64>,
}

impl Tally {
    /// Note one anomaly.
    pub(crate) fn note(&mut self, kind: Anomaly, o: AnomalyOffender) {
        let c = self.reports.entry(kind).or_default();
        c.report.count += 1;
        *c.secs.entry(o.at_ms / 1000).or_default() += 1;
        if let Some(ms) = o.subscribed_at_ms {
            *c.subscribed.entry(ms / 1000).or_default() += 1;
        }
        if c.report.offenders.len() < MAX_ANOMALY_OFFENDERS {
            c.report.offenders.push(o);
        }
    }

    /// The report, with every kind present.
    pub(crate) fn finish(mut self) -> Anomalies {
        Anomaly::ALL
            .into_iter()
            .map(|k| {
                let c = self.reports.remove(&k).unwrap_or_default();
                let mut r = c.report;
                r.timeline = c.secs.into_iter().collect();
                r.subscribed_timeline = c.subscribed.into_iter().collect();
                (k, r)
            })
            .collect()
    }
}

/// Zero of every kind (what a generic target or a clean run reports).
pub fn none() -> Anomalies {
    Tally::default().finish()
}
