//! The worker's stdout lines: one `tick` JSON line per second and a final `done` line.
//!
//! ```text
//! {"type":"tick","worker":0,"t":3,"elapsed_ms":3000,"measuring":true,"drain":false,"users":1000,
//!  "sent":120,"acked":120,"delivered":5880,"connects":0,"disconnects":0,"reconnects":0,
//!  "errors":0,"errors_by_kind":{},"hist":{"delivery":"HISTFAAAA…","ack":"…"}}
//! {"type":"done","worker":0,"totals":{…counters…},"acked":[[channel,seq,id,author],…],
//!  "recipients":[{"user":7,"channel":3,"chains":[{"from":0,"open":true}],
//!                 "received":[[1,40]],"duplicates":0,"reordered":0,"dup_seqs":[]}]}
//! ```
//! `hist` values are base64 (standard alphabet) of HdrHistogram V2 *compressed* (deflate)
//! interval histograms in µs, for the second that just ended. Counters in `tick` are
//! per-interval deltas; `totals` in `done` are whole-run sums (warm-up included).

use std::collections::BTreeMap;

use flowline_protocol::{ChannelId, MessageId, Seq};
use serde::{Deserialize, Serialize};

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
    /// Generic WebSocket target: what was sent and received (instead of `acked` and
    /// `recipients`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generic: Option<crate::generic::GenericDone>,
    /// HTTP personas (goose): requests by kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<crate::httpload::HttpReport>,
    /// What the worker process itself cost (read at its end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
}

/// Resource usage of one worker process, so a run shows the generator's own cost beside
/// the figures it measured (a generator near its CPU limit distorts latency).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// User plus system CPU time of the whole process, seconds.
    pub cpu_s: f64,
    /// Peak resident set size (VmHWM), KiB.
    pub peak_rss_kib: u64,
}

impl Resources {
    /// This process's usage so far; `None` where the OS does not tell (not Linux).
    pub fn of_self() -> Option<Resources> {
        use nix::sys::resource::{UsageWho, getrusage};
        let usage = getrusage(UsageWho::RUSAGE_SELF).ok()?;
        let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        Some(Resources {
            cpu_s: secs(usage.user_time()) + secs(usage.system_time()),
            peak_rss_kib: parse_vm_hwm(&status)?,
        })
    }
}

impl Resources {
    /// Usage of another process so far, from `/proc/<pid>/{stat,status}`; `None` if it is
    /// gone or the OS does not tell.
    pub fn of_pid(pid: u32) -> Option<Resources> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .filter(|&t| t > 0)? as f64;
        Some(Resources {
            cpu_s: parse_stat_ticks(&stat)? as f64 / ticks,
            peak_rss_kib: parse_vm_hwm(&status)?,
        })
    }
}

/// utime + stime (clock ticks) of a `/proc/<pid>/stat` line. The command name is in
/// parentheses and may hold spaces or parentheses itself: fields count from the last `)`.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The `VmHWM:  1234 kB` line of `/proc/<pid>/status`, in KiB.
fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A worker stdout line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerLine {
    /// Once per second.
    Tick(Tick),
    /// Once, at the end.
    Done(Box<Done>),
}

/// The fields of a server frame the worker's hot path needs; everything else (the body,
/// `ready`'s channel map) is skipped without being copied.
#[derive(Debug, Deserialize)]
pub struct Peek<'a> {
    /// The event's `type`.
    #[serde(rename = "type", borrow)]
    pub kind: &'a str,
    /// `message`/`ack`: channel.
    #[serde(default)]
    pub channel: Option<ChannelId>,
    /// `message`/`ack`: seq in the channel.
    #[serde(default)]
    pub seq: Option<Seq>,
    /// `message`/`ack`: message id.
    #[serde(default)]
    pub id: Option<MessageId>,
    /// `ack`/`error`: request id.
    #[serde(default)]
    pub req_id: Option<u64>,
    /// `message`: the sender's nonce.
    #[serde(default, borrow)]
    pub nonce: Option<&'a str>,
    /// `error`: code.
    #[serde(default)]
    pub code: Option<flowline_protocol::ws::ErrorCode>,
}

/// Nonce carried by every `send`: `"<user>:<n>:<unix µs>"`. The time is the intended send
/// time (open model) or the actual one (closed), so a recipient in any worker process on
/// this machine measures send→delivery with the same clock.
pub fn nonce(user: u32, n: u64, unix_us: u64) -> String {
    format!("{user}:{n}:{unix_us}")
}

/// Parse a nonce made by [`nonce`]: (user, n, unix µs).
pub fn parse_nonce(s: &str) -> Option<(u32, u64, u64)> {
    let mut it = s.splitn(3, ':');
    let user = it.next()?.parse().ok()?;
    let n = it.next()?.parse().ok()?;
    let t = it.next()?.parse().ok()?;
    Some((user, n, t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peek_reads_a_message_frame() {
        let ev = flowline_protocol::ws::ServerEvent::Message(flowline_protocol::ws::Message {
            channel: 3,
            seq: 9,
            id: 77,
            author: 5,
            body: "with \"escapes\" and ünïcode".into(),
            nonce: Some(nonce(4, 2, 123)),
            created_at: 1,
            ..Default::default()
        });
        let text = serde_json::to_string(&ev).unwrap();
        let p: Peek<'_> = serde_json::from_str(&text).unwrap();
        assert_eq!(
            (p.kind, p.channel, p.seq, p.id),
            ("message", Some(3), Some(9), Some(77))
        );
        assert_eq!(p.nonce.and_then(parse_nonce), Some((4, 2, 123)));
    }

    #[test]
    fn nonce_round_trip() {
        let n = nonce(17, 3, 1_700_000_000_123_456);
        assert_eq!(parse_nonce(&n), Some((17, 3, 1_700_000_000_123_456)));
        assert_eq!(parse_nonce("x:1:2"), None);
        assert_eq!(parse_nonce("1:2"), None);
    }

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
            ..Done::default()
        }));
        let s = serde_json::to_string(&done).unwrap();
        assert_eq!(serde_json::from_str::<WorkerLine>(&s).unwrap(), done);
    }

    #[test]
    fn own_resources_are_read() {
        assert_eq!(
            parse_vm_hwm("Name:\tx\nVmHWM:\t   20480 kB\nVmRSS: 1 kB\n"),
            Some(20480)
        );
        assert_eq!(parse_vm_hwm("VmRSS: 1 kB\n"), None);
        // Burn a little CPU and hold some memory: both show.
        let v: Vec<u64> = (0..2_000_000).collect();
        let sum: u64 = v.iter().copied().map(std::hint::black_box).sum();
        assert!(sum > 0);
        let r = Resources::of_self().expect("Linux tells a process its usage");
        assert!(r.cpu_s > 0.0, "{r:?}");
        assert!(r.peak_rss_kib >= 2_000_000 * 8 / 1024, "{r:?}");
        let p = Resources::of_pid(std::process::id()).expect("our own /proc entry");
        assert!(p.peak_rss_kib >= r.peak_rss_kib, "{p:?} vs {r:?}");
        assert!(p.cpu_s > 0.0 && p.cpu_s <= r.cpu_s + 1.0, "{p:?} vs {r:?}");
        assert_eq!(Resources::of_pid(u32::MAX), None);
        let stat = "42 (a) b) c) S 1 2 3 4 5 6 7 8 9 10 250 30 0 0";
        assert_eq!(parse_stat_ticks(stat), Some(280));
        assert_eq!(parse_stat_ticks("42 (x) S 1"), None);
    }
}
