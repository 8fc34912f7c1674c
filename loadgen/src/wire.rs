//! The worker's report: every line a worker sends the aggregator, and the one interface
//! it sends them through. Open this file to learn what a worker reports.
//!
//! ```text
//! {"type":"tick","worker":0,"t":3,"elapsed_ms":3000,"measuring":true,"drain":false,"users":1000,
//!  "sent":120,"acked":120,"delivered":5880,"connects":0,"disconnects":0,"reconnects":0,
//!  "errors":0,"errors_by_kind":{},"hist":{"delivery":"HISTFAAAA…","ack":"…"}}
//! {"type":"done","worker":0,"totals":{…counters…},"peak_users":1000,
//!  "acked":[[channel,seq,id,author],…],
//!  "recipients":[{"user":7,"channel":3,"chains":[{"from":0,"open":true}],
//!                 "received":[[1,40]],"duplicates":0,"reordered":0,"dup_seqs":[]}],
//!  "sends":[[channel,seq,id,sender,n,at_ms,"ok"|"error"|"unknown"],…],
//!  "receives":[[channel,seq,id,reference,receiver,epoch,sender,n,at_ms,kind],…],
//!  "generic":{…},            generic WebSocket target: sent, sessions, received ranges by author
//!  "http":{…},               HTTP personas (goose): requests, status codes, latency by kind
//!  "resources":{"cpu_s":…,"peak_rss_kib":…}}
//! {"type":"history","worker":0,"t":3,"sends":[…],"receives":[…]}   streamed: see below
//! ```
//! One `tick` line per second, one `done` line at the end. A worker whose output streams
//! its history ([`Output::streams_history`]: the coordinator's, protocol 2) sends each
//! second's `sends` and `receives` in a `history` line after that second's tick, and its
//! `done` line leaves them (and `acked`, the `ok` sends) out: neither the worker nor the
//! aggregator then holds a whole run's events in one line. `hist` values are base64
//! (standard alphabet) of HdrHistogram V2 *compressed* (deflate) interval histograms in µs
//! (see [`crate::histogram`]), for the second that just ended. Counters in `tick` are
//! per-interval deltas; `totals` in `done` are whole-run sums (warm-up included).
//!
//! A worker writes its lines through [`Output`]: the coordinator's socket (worker
//! processes, see [`crate::coordinator`] and docs/coordinator.md, which also lists the
//! protocol's control messages), or a closure feeding an in-process aggregator.

use std::collections::BTreeMap;

use flowline_protocol::{ChannelId, MessageId, Seq};
use serde::{Deserialize, Serialize};

use crate::error::{LoadgenError, Result};
use crate::generic::AuthorReceipts;
use crate::histogram::{self, Percentiles, new_histogram};

/// Counters of one interval (tick) or of a whole run (done).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// `send` operations written.
    pub sent: u64,
    /// `ack`s received.
    pub acked: u64,
    /// `message` events received for messages sent by simulated users (echo to the
    /// author excluded).
    pub delivered: u64,
    /// Successful WebSocket sessions (ready received), first ones and reconnects.
    pub connects: u64,
    /// Sessions that ended other than by the worker's own close at the end.
    pub disconnects: u64,
    /// Sessions opened again after a disconnect or a churn close.
    pub reconnects: u64,
    /// `history` requests answered.
    pub history: u64,
    /// Errors of every kind.
    pub errors: u64,
    /// Chat actions the node refused for a rate limit: HTTP 429 answers (bot and flood
    /// personas; not errors) and WebSocket `rate_limited` errors (also counted as errors,
    /// `server:rate_limited`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rate_limited: u64,
    /// Errors by kind (`connect`, `hello_timeout`, `ack_timeout`, `server:<code>`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Feature operations by kind: sent (`typing`, `react`, `start_thread`,
    /// `thread_reply`, `set_presence`, `upload`, `send_attachment`) and answered
    /// (`<kind>_ok`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ops_by_kind: BTreeMap<String, u64>,
}

impl Counters {
    /// Add another set of counters.
    pub fn add(&mut self, o: &Counters) {
        self.sent += o.sent;
        self.acked += o.acked;
        self.delivered += o.delivered;
        self.connects += o.connects;
        self.disconnects += o.disconnects;
        self.reconnects += o.reconnects;
        self.history += o.history;
        self.errors += o.errors;
        self.rate_limited += o.rate_limited;
        for (k, v) in &o.errors_by_kind {
            *self.errors_by_kind.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.ops_by_kind {
            *self.ops_by_kind.entry(k.clone()).or_default() += v;
        }
    }

    /// Count one feature operation of `kind`.
    pub fn op(&mut self, kind: &str) {
        match self.ops_by_kind.get_mut(kind) {
            Some(n) => *n += 1,
            None => {
                self.ops_by_kind.insert(kind.to_string(), 1);
            }
        }
    }

    /// Count one error of `kind`.
    pub fn error(&mut self, kind: &str) {
        self.errors += 1;
        *self.errors_by_kind.entry(kind.to_string()).or_default() += 1;
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One second of a worker's measurements.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tick {
    /// Shard index of the worker.
    pub worker: usize,
    /// Interval number: this tick covers `[t-1, t)` seconds since the run's start.
    pub t: u64,
    /// Milliseconds since the run's start.
    pub elapsed_ms: u64,
    /// Whether the interval lies in the measured window (after warm-up, before the drain).
    pub measuring: bool,
    /// Whether the interval lies in the drain (no new sends; deliveries still counted in
    /// the latency histograms).
    #[serde(default)]
    pub drain: bool,
    /// Users connected (ready) at the end of the interval.
    pub users: u64,
    /// Interval counters.
    #[serde(flatten)]
    pub counters: Counters,
    /// Interval histograms by metric (`connect`, `hello`, `ack`, `delivery`), base64 V2
    /// compressed; metrics with no samples are left out.
    pub hist: BTreeMap<String, String>,
}

/// Whether a subscription window of a recipient lasted to the end of the drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    /// Seq of the channel when the subscription began (from `ready`/`subscribed`); every
    /// message with a larger seq is due while the chain lasts. Resumed sessions continue
    /// their chain.
    pub from: Seq,
    /// Connected and subscribed at the end of the drain.
    pub open: bool,
}

/// What one recipient saw of one channel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientRecord {
    /// User index (position in the plan).
    pub user: u32,
    /// Channel.
    pub channel: ChannelId,
    /// Subscription windows, oldest first.
    pub chains: Vec<Chain>,
    /// Received seqs as sorted, disjoint, inclusive ranges.
    pub received: Vec<(Seq, Seq)>,
    /// Messages received more than once.
    pub duplicates: u64,
    /// Messages received after one with a larger seq.
    pub reordered: u64,
    /// The first few duplicated seqs (for the offender list).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dup_seqs: Vec<Seq>,
    /// The first few reordered seqs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reordered_seqs: Vec<Seq>,
}

/// An acknowledged message: (channel, seq, message id, author user index).
pub type AckedMessage = (ChannelId, Seq, MessageId, u32);

/// How a chat send ended for its sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Acknowledged (`ack` with seq and id).
    Ok,
    /// Refused (`error` answering the send).
    Error,
    /// No answer: the socket died, or the ack timed out, before it came.
    Unknown,
}

/// One chat send, whatever became of it (JSON: an array, in field order). 40 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "SendTuple", into = "SendTuple")]
pub struct SendRecord {
    /// Channel written to.
    pub channel: ChannelId,
    /// Seq the ack gave (0 unless [`Outcome::Ok`]).
    pub seq: Seq,
    /// Message id the ack gave (0 unless [`Outcome::Ok`]).
    pub id: MessageId,
    /// Sender's user index.
    pub sender: u32,
    /// The sender's send counter, the `n` of its nonce `"<user>:<n>:<µs>"`.
    pub n: u32,
    /// Milliseconds since the run's start when the outcome was known.
    pub at_ms: u32,
    /// How it ended.
    pub outcome: Outcome,
}

/// What a receive event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecvKind {
    /// A fresh subscription (from `ready` without resume, or `subscribed`): `seq` is the
    /// channel's seq then; later messages are due.
    Start,
    /// A resumed subscription (`ready` after `hello` with `resume`): `seq` is the seq the
    /// user asked to resume after; exactly the later messages must follow.
    Resume,
    /// A `message` event.
    Message,
    /// A `message_edited` event (`seq`, `id` of the edited message).
    Edit,
    /// A `message_deleted` event (the message became a tombstone).
    Delete,
}

/// One event of one receiver on one channel, in arrival order (JSON: an array, in field
/// order). 56 bytes: a 1M-delivery run records 56 MB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "RecvTuple", into = "RecvTuple")]
pub struct RecvRecord {
    /// Channel.
    pub channel: ChannelId,
    /// Seq of the message (for `start`/`resume`: the subscription's starting seq).
    pub seq: Seq,
    /// Message id (0 for `start`/`resume`).
    pub id: MessageId,
    /// The message it answers (`reply_to`), 0 for none.
    pub reference: MessageId,
    /// Receiver's user index.
    pub receiver: u32,
    /// The receiver's connection number (1 for its first session).
    pub epoch: u32,
    /// Sender's user index from the message's nonce (`u32::MAX`: no simulated sender).
    pub sender: u32,
    /// The sender's send counter from the nonce.
    pub n: u32,
    /// Milliseconds since the run's start.
    pub at_ms: u32,
    /// What it is.
    pub kind: RecvKind,
}

type SendTuple = (ChannelId, Seq, MessageId, u32, u32, u32, Outcome);

impl From<SendTuple> for SendRecord {
    fn from((channel, seq, id, sender, n, at_ms, outcome): SendTuple) -> Self {
        SendRecord {
            channel,
            seq,
            id,
            sender,
            n,
            at_ms,
            outcome,
        }
    }
}

impl From<SendRecord> for SendTuple {
    fn from(r: SendRecord) -> Self {
        (r.channel, r.seq, r.id, r.sender, r.n, r.at_ms, r.outcome)
    }
}

type RecvTuple = (
    ChannelId,
    Seq,
    MessageId,
    MessageId,
    u32,
    u32,
    u32,
    u32,
    u32,
    RecvKind,
);

impl From<RecvTuple> for RecvRecord {
    fn from(
        (channel, seq, id, reference, receiver, epoch, sender, n, at_ms, kind): RecvTuple,
    ) -> Self {
        RecvRecord {
            channel,
            seq,
            id,
            reference,
            receiver,
            epoch,
            sender,
            n,
            at_ms,
            kind,
        }
    }
}

impl From<RecvRecord> for RecvTuple {
    fn from(r: RecvRecord) -> Self {
        (
            r.channel,
            r.seq,
            r.id,
            r.reference,
            r.receiver,
            r.epoch,
            r.sender,
            r.n,
            r.at_ms,
            r.kind,
        )
    }
}

/// One range of seqs a generic-target user received from one author (its own echoes:
/// `author == recipient`): (recipient, author, first seq, last seq), inclusive.
pub type GenericRange = (u32, u32, u32, u32);

/// The duplicates and out-of-order arrivals of one (recipient, author) pair that had any:
/// (recipient, author, duplicates, reordered).
pub type GenericAnomaly = (u32, u32, u64, u64);

/// A worker's generic-target history (part of its `done` line).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenericDone {
    /// Frames written: (author, seq, send time in Unix µs).
    pub sent: Vec<(u32, i64, u64)>,
    /// Each user's last session: (user, start in Unix µs, lasted to the end).
    pub sessions: Vec<(u32, u64, bool)>,
    /// What users received: each (recipient, author)'s seqs as disjoint ranges, sorted by
    /// (recipient, author, first seq) in a worker's done line (see [`GenericDone::sort`]).
    /// Flat tuples, not a record per pair: rooms of 50 give a 10k-user run half a million
    /// pairs, ~16 bytes of JSON each.
    pub received: Vec<GenericRange>,
    /// The pairs that saw duplicates or out-of-order arrivals (none, normally).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub anomalies: Vec<GenericAnomaly>,
}

impl GenericDone {
    /// Take another part's history (no copy of either part's receipts).
    pub fn append(&mut self, mut o: GenericDone) {
        self.sent.append(&mut o.sent);
        self.sessions.append(&mut o.sessions);
        self.received.append(&mut o.received);
        self.anomalies.append(&mut o.anomalies);
    }

    /// Add another worker's history.
    pub fn extend(&mut self, o: &GenericDone) {
        self.sent.extend_from_slice(&o.sent);
        self.sessions.extend_from_slice(&o.sessions);
        self.received.extend_from_slice(&o.received);
        self.anomalies.extend_from_slice(&o.anomalies);
    }

    /// Add what user `user` received (at its end).
    pub fn add_user(&mut self, user: u32, received: &AuthorReceipts) {
        self.received.extend(
            received
                .ranges()
                .iter()
                .map(|&(author, lo, hi)| (user, author, lo, hi)),
        );
        self.anomalies.extend(
            received
                .anomalies()
                .iter()
                .map(|&(author, dup, reord)| (user, author, dup, reord)),
        );
    }

    /// Sort the receipts by (recipient, author, first seq), in place, as the checker
    /// reads them.
    pub fn sort(&mut self) {
        self.received.sort_unstable();
        self.anomalies.sort_unstable();
    }
}

/// One kind of HTTP request, merged over workers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpStat {
    /// Requests made.
    pub requests: u64,
    /// 2xx answers.
    pub success: u64,
    /// Other answers and transport errors.
    pub fail: u64,
    /// Answers by status code (goose's count; string keys, as JSON has them).
    pub status_codes: BTreeMap<String, u64>,
    /// Request latency, µs (base64 HdrHistogram V2 compressed, as in tick lines).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hist: String,
    /// Percentiles of `hist` (filled in by the aggregator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<Percentiles>,
}

/// What a worker's goose attack did (part of its `done` line).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpReport {
    /// By kind (`login`, `signup`, `history`, `upload`).
    pub kinds: BTreeMap<String, HttpStat>,
    /// Goose HTML reports written (run-folder paths).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reports: Vec<String>,
    /// Goose's own totals: users started, seconds run.
    pub goose_users: u64,
    /// Seconds goose ran.
    pub goose_seconds: u64,
}

impl HttpReport {
    /// Merge another worker's report.
    pub fn merge(&mut self, o: &HttpReport) -> Result<()> {
        for (k, s) in &o.kinds {
            let e = self.kinds.entry(k.clone()).or_default();
            e.requests += s.requests;
            e.success += s.success;
            e.fail += s.fail;
            for (c, n) in &s.status_codes {
                *e.status_codes.entry(c.clone()).or_default() += n;
            }
            if !s.hist.is_empty() {
                let mut h = if e.hist.is_empty() {
                    new_histogram()
                } else {
                    histogram::decode(&e.hist)?
                };
                h.add(histogram::decode(&s.hist)?)
                    .map_err(|e| LoadgenError::Histogram(format!("merge: {e:?}")))?;
                e.hist = histogram::encode(&h)?;
            }
        }
        self.reports.extend(o.reports.iter().cloned());
        self.goose_users += o.goose_users;
        self.goose_seconds = self.goose_seconds.max(o.goose_seconds);
        Ok(())
    }

    /// Fill in the percentiles of every kind.
    pub fn finish(&mut self) {
        for s in self.kinds.values_mut() {
            if let Ok(h) = histogram::decode(&s.hist) {
                s.latency_us = Some(Percentiles::of(&h));
            }
        }
    }
}

/// Resource usage of one worker process, so a run shows the generator's own cost beside
/// the figures it measured (a generator near its CPU limit distorts latency). Read by
/// [`Resources::of_self`] and [`Resources::of_pid`] (`resources.rs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// User plus system CPU time of the whole process, seconds.
    pub cpu_s: f64,
    /// Peak resident set size (VmHWM), KiB.
    pub peak_rss_kib: u64,
}

/// The final line of a worker: totals and what the correctness checker needs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Done {
    /// Shard index of the worker.
    pub worker: usize,
    /// Whole-run counters.
    pub totals: Counters,
    /// Peak users connected at once.
    pub peak_users: u64,
    /// Every message this worker's users sent that was acked.
    pub acked: Vec<AckedMessage>,
    /// Every (recipient, channel) this worker's users subscribed to.
    pub recipients: Vec<RecipientRecord>,
    /// Every chat send, with its outcome (the anomaly checker's input).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sends: Vec<SendRecord>,
    /// Every chat subscription, message, edit and delete each user received, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub receives: Vec<RecvRecord>,
    /// Generic WebSocket target: what was sent and received (instead of `acked` and
    /// `recipients`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generic: Option<GenericDone>,
    /// HTTP personas (goose): requests by kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpReport>,
    /// What the worker process itself cost (read at its end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
}

/// One second of a worker's chat history, streamed (`history` line): the sends whose
/// outcome became known and the receive events of that second, each receiver's in
/// arrival order. A receiver's events of later seconds come in later lines.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryLine {
    /// Shard index of the worker.
    pub worker: usize,
    /// The second (as in `tick`); the last line, of events after the last tick, repeats it.
    pub t: u64,
    /// Chat sends with their outcome.
    #[serde(default)]
    pub sends: Vec<SendRecord>,
    /// Chat receive events.
    #[serde(default)]
    pub receives: Vec<RecvRecord>,
}

/// A worker stdout line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerLine {
    /// Once per second.
    Tick(Tick),
    /// Once per second with chat events, after the tick, when the output streams history.
    History(HistoryLine),
    /// Once, at the end.
    Done(Box<Done>),
}

/// Where a worker's lines go: the coordinator's socket (`CoordinatorOutput`, see
/// docs/coordinator.md), or a closure
/// ([`Lines`]: a test's vector, the standalone loadgen's in-process aggregator).
pub trait Output {
    /// Send one line (a tick, or the done line last).
    fn send(&mut self, line: &WorkerLine) -> Result<()>;

    /// The run began: the worker woke at its start instant `late` after it, `at_us` on
    /// the run's clock (Unix µs; the coordinator's clock when there is one). Only the
    /// coordinator wants it (start skew).
    fn started(&mut self, _at_us: u64, _late: std::time::Duration) -> Result<()> {
        Ok(())
    }

    /// Whether the worker sends its chat history second by second in `history` lines
    /// (true) or all of it in its `done` line (false: tools and tests that read one line).
    fn streams_history(&self) -> bool {
        false
    }
}

/// An [`Output`] handing each line as JSON text to a closure (a pipe writer, a test's
/// vector, an in-process aggregator).
pub struct Lines<F>(pub F);

impl<F: FnMut(&str)> Output for Lines<F> {
    fn send(&mut self, line: &WorkerLine) -> Result<()> {
        (self.0)(&line_text(line)?);
        Ok(())
    }
}

/// As [`Lines`], but the history is streamed in `history` lines (the standalone loadgen's
/// in-process aggregator and its stdout).
pub struct StreamedLines<F>(pub F);

impl<F: FnMut(&str)> Output for StreamedLines<F> {
    fn send(&mut self, line: &WorkerLine) -> Result<()> {
        (self.0)(&line_text(line)?);
        Ok(())
    }

    fn streams_history(&self) -> bool {
        true
    }
}

/// A line as JSON text.
pub fn line_text(line: &WorkerLine) -> Result<String> {
    let what = match line {
        WorkerLine::Tick(_) => "tick line",
        WorkerLine::History(_) => "history line",
        WorkerLine::Done(_) => "done line",
    };
    serde_json::to_string(line).map_err(|e| LoadgenError::json(what, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        let tick = WorkerLine::Tick(Tick {
            worker: 1,
            t: 2,
            users: 5,
            counters: Counters {
                sent: 3,
                ..Counters::default()
            },
            ..Tick::default()
        });
        let s = serde_json::to_string(&tick).unwrap();
        assert!(s.starts_with(r#"{"type":"tick","worker":1"#), "{s}");
        assert!(s.contains(r#""sent":3"#), "{s}");
        assert_eq!(serde_json::from_str::<WorkerLine>(&s).unwrap(), tick);
        let done = WorkerLine::Done(Box::new(Done {
            worker: 0,
            acked: vec![(1, 2, 3, 4)],
            sends: vec![SendRecord {
                channel: 1,
                seq: 2,
                id: 3,
                sender: 4,
                n: 5,
                at_ms: 6,
                outcome: Outcome::Unknown,
            }],
            receives: vec![RecvRecord {
                channel: 1,
                seq: 2,
                id: 3,
                reference: 0,
                receiver: 7,
                epoch: 1,
                sender: 4,
                n: 5,
                at_ms: 9,
                kind: RecvKind::Message,
            }],
            ..Done::default()
        }));
        let s = serde_json::to_string(&done).unwrap();
        assert!(s.contains(r#""sends":[[1,2,3,4,5,6,"unknown"]]"#), "{s}");
        assert!(
            s.contains(r#""receives":[[1,2,3,0,7,1,4,5,9,"message"]]"#),
            "{s}"
        );
        assert_eq!(serde_json::from_str::<WorkerLine>(&s).unwrap(), done);
    }
}
